#!/bin/sh
# Builds the local test image tend's Docker tests use (no registry is reachable): a rootfs made
# of busybox-static plus a few applet symlinks, imported as tend-test/busybox:latest.
# Idempotent and fast when the image already exists. Needs a running dockerd and busybox-static.
set -eu

IMAGE="${TEND_TEST_IMAGE:-tend-test/busybox:latest}"
BUSYBOX="${BUSYBOX:-/bin/busybox}"

if docker image inspect "$IMAGE" >/dev/null 2>&1; then
    exit 0
fi

if ! "$BUSYBOX" --list >/dev/null 2>&1; then
    echo "docker-test-image: $BUSYBOX is not a working busybox (install busybox-static)" >&2
    exit 1
fi

ROOT="$(mktemp -d)"
trap 'rm -rf "$ROOT"' EXIT INT TERM

mkdir -p "$ROOT/bin" "$ROOT/tmp" "$ROOT/etc" "$ROOT/proc" "$ROOT/sys" "$ROOT/dev"
chmod 1777 "$ROOT/tmp"
cp "$BUSYBOX" "$ROOT/bin/busybox"
for applet in sh echo sleep cat true false id hostname env ls ps dd head wc kill ip; do
    ln -s busybox "$ROOT/bin/$applet"
done
printf 'root:x:0:0:root:/:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n' > "$ROOT/etc/passwd"
printf 'root:x:0:\nnogroup:x:65534:\n' > "$ROOT/etc/group"

tar -C "$ROOT" -c . | docker import \
    --change 'ENV PATH=/bin' \
    --message 'tend test image: busybox-static' \
    - "$IMAGE" >/dev/null
echo "docker-test-image: built $IMAGE"
