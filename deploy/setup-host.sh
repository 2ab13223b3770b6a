#!/usr/bin/env bash
# Installs and starts what tend and its tests need on a Debian 12 host. Idempotent: a second
# run is fast. Needs root (re-runs itself with sudo when not root). Used by .ci/run,
# deploy/test.sh and deploy/quickstart.sh.
set -euo pipefail
if [ "$(id -u)" != 0 ]; then exec sudo -E "$0" "$@"; fi

# podman, crun and runc are the peers `tend bench container` measures beside tend;
# qemu-system-x86, cpio and binutils (strip) are for the cgroup v2 VM suite (deploy/vm-test.sh);
# systemd gives systemd-analyze, which checks deploy/tend.service; docker-registry (the CNCF
# distribution registry) and apache2-utils (htpasswd) are the real registry the image tests pull from;
# chromium (headless) loads the daemon's web view /ui in tests/ui.rs.
packages=(btrfs-progs libbtrfsutil-dev libclang-dev docker.io iproute2 busybox-static pkg-config python3
  nftables podman crun runc qemu-system-x86 cpio binutils systemd docker-registry apache2-utils chromium)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup-host: installing ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi
# The image tests start their own registry per test on a free loopback port; the package's
# service (port 5000) is not wanted.
if command -v systemctl >/dev/null && systemctl is-enabled docker-registry >/dev/null 2>&1; then
  systemctl disable --now docker-registry >/dev/null 2>&1 || true
fi

# btrfs and loop devices for the embedded snapshot backend.
modprobe btrfs 2>/dev/null || true
modprobe loop 2>/dev/null || true

# dockerd for the docker runtime and its tests: start it if nothing answers on the socket.
if ! docker info >/dev/null 2>&1; then
  echo "setup-host: starting dockerd"
  nohup dockerd >/var/log/tend-dockerd.log 2>&1 &
  for _ in $(seq 1 60); do
    docker info >/dev/null 2>&1 && break
    sleep 1
  done
  docker info >/dev/null 2>&1 || { echo "setup-host: dockerd did not start; see /var/log/tend-dockerd.log" >&2; exit 1; }
fi

# Docker sets the iptables FORWARD policy to DROP, and in nftables a drop in any table is final:
# tend's own table cannot let traffic through it. As the operator, allow (in DOCKER-USER, the
# chain Docker keeps for its users) traffic between tend's bridges and the published-port
# (DNATed) traffic to and from them. See docs/ports.md.
if iptables -L DOCKER-USER -n >/dev/null 2>&1; then
  for rule in "-i tnd-+ -o tnd-+ -j ACCEPT" \
              "-o tnd-+ -m conntrack --ctstate DNAT -j ACCEPT" \
              "-i tnd-+ -m conntrack --ctstate DNAT -j ACCEPT"; do
    # shellcheck disable=SC2086
    iptables -C DOCKER-USER $rule 2>/dev/null || iptables -I DOCKER-USER $rule
  done
fi

# cargo-fuzz for deploy/fuzz.sh (runs on stable with RUSTC_BOOTSTRAP=1).
if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "setup-host: installing cargo-fuzz"
  cargo install cargo-fuzz --locked
fi

# cargo-nextest runs the test suite (deploy/test.sh).
if ! cargo nextest --version >/dev/null 2>&1; then
  echo "setup-host: installing cargo-nextest"
  cargo install cargo-nextest --locked
fi

# The Debian kernel the VM suite boots (downloaded and unpacked into a cache, never installed).
here=$(cd "$(dirname "$0")" && pwd)
"$here/vm-test.sh" --fetch-kernel

# kubectl is not in Debian: the kubectl test needs one installed by hand (see docs/operations.md).
command -v kubectl >/dev/null 2>&1 ||
  echo "setup-host: kubectl is not installed; the kubectl test will fail unless TEND_SKIP_KUBECTL=1 (see docs/operations.md)"

# The local test image (no registry is reachable).
if [ -x "$here/docker-test-image.sh" ]; then
  "$here/docker-test-image.sh"
fi
echo "setup-host: ready"
