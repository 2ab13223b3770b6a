#!/bin/sh
# Builds the local test image tend's Docker tests use (no registry is reachable): a rootfs made
# of busybox-static plus a few applet symlinks, imported as tend-test/busybox:latest.
# Idempotent and fast when the image already exists. Needs a running dockerd and busybox-static.
set -eu

IMAGE="${TEND_TEST_IMAGE:-tend-test/busybox:latest}"
BUSYBOX="${BUSYBOX:-/bin/busybox}"
# Bump when the rootfs below changes, so existing hosts rebuild instead of keeping a stale image.
VERSION=2

have="$(docker image inspect -f '{{index .Config.Labels "dev.tend.test-image"}}' "$IMAGE" 2>/dev/null || true)"
if [ "$have" = "$VERSION" ]; then
    exit 0
fi
old="$(docker image inspect -f '{{.Id}}' "$IMAGE" 2>/dev/null || true)"

if ! "$BUSYBOX" --list >/dev/null 2>&1; then
    echo "docker-test-image: $BUSYBOX is not a working busybox (install busybox-static)" >&2
    exit 1
fi

ROOT="$(mktemp -d)"
trap 'rm -rf "$ROOT"' EXIT INT TERM

mkdir -p "$ROOT/bin" "$ROOT/tmp" "$ROOT/etc" "$ROOT/proc" "$ROOT/sys" "$ROOT/dev"
chmod 1777 "$ROOT/tmp"
cp "$BUSYBOX" "$ROOT/bin/busybox"
for applet in sh echo sleep cat true false id hostname env ls ps dd head wc kill ip ping; do
    ln -s busybox "$ROOT/bin/$applet"
done
printf 'root:x:0:0:root:/:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n' > "$ROOT/etc/passwd"
printf 'root:x:0:\nnogroup:x:65534:\n' > "$ROOT/etc/group"

tar -C "$ROOT" -c . | docker import \
    --change 'ENV PATH=/bin' \
    --change "LABEL dev.tend.test-image=$VERSION" \
    --message 'tend test image: busybox-static' \
    - "$IMAGE" >/dev/null
# The previous version is now untagged: drop it unless a container still uses it.
[ -n "$old" ] && docker rmi "$old" >/dev/null 2>&1 || true
echo "docker-test-image: built $IMAGE"
