#!/usr/bin/env bash
# The privileged cgroup and container suites on a cgroup-v2-only kernel, in a throwaway VM.
#
# Debian's stock kernel (the package linux-image-amd64 depends on; downloaded and unpacked into
# $TEND_VM_CACHE, never installed) boots under qemu with TCG into a small initramfs: busybox, the
# test binaries, `tend`, their shared libraries (from ldd), mkfs.btrfs and the veth, bridge, loop
# and btrfs modules (loaded with insmod in dependency order). /init mounts cgroup2 alone at
# /sys/fs/cgroup with +memory +pids +cpu +io enabled and runs, as root with
# TEND_REQUIRE_PRIVILEGED=1:
#   tests/cgroup_real.rs       the cgroup driver on v2: memory.max + memory.swap.max, cpu.max,
#                              pids.max, drift seen, PSI stats, OOM kills from memory.events,
#                              cgroup.kill + cgroup.events, a group deleted from outside
#   tests/container_native.rs  native containers with limits, limits rewritten behind tend's back
#                              put back, a deleted cgroup rebuilt, OOM kill reported, kill ->
#                              restart, crash-loop backoff, daemon kill -9 + orphan cgroup sweep
# then a leak check: no tend cgroup may be left anywhere under /sys/fs/cgroup/tend.
# Results come back on the serial console (qemu's stdout, also in $TEND_VM_LOG); the VM's own
# last line is "vm-test: N passed, N failed". Exits non-zero when a test failed, the leak check
# found something, or the VM did not report within $TEND_VM_TIMEOUT seconds.
#
# Environment:
#   TEND_VM_TIMEOUT    seconds the VM may run (default 600)
#   TEND_VM_CACHE      where the kernel package is kept (default /var/cache/tend-vm)
#   TEND_VM_LOG        console log file (default $TEND_VM_CACHE/console.log)
#   TEND_VM_FAILPOINTS failpoint lines (name=action) for every daemon in the VM, e.g.
#                      'cgroup.v2.write=error(broken on purpose)' to prove the suite fails
#   TEND_VM_BENCH=1    also run `tend bench container $TEND_VM_BENCH_ARGS` (default
#                      --single 10 --bulk 50 --kills 10) and print its figures
# `deploy/vm-test.sh --fetch-kernel` only downloads and unpacks the kernel (deploy/setup-host.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" != 0 ]; then exec sudo -E "$0" "$@"; fi

cache=${TEND_VM_CACHE:-/var/cache/tend-vm}
log=${TEND_VM_LOG:-$cache/console.log}
timeout_s=${TEND_VM_TIMEOUT:-600}
mkdir -p "$cache"
say() { echo "vm-test: $*" >&2; }

# --- the kernel: Debian's current 6.1 image package, unpacked once into the cache -------------
kernel_pkg() { apt-cache depends linux-image-amd64 2>/dev/null | awk '/Depends: linux-image-[0-9]/ {print $2; exit}'; }
pkg=$(kernel_pkg)
[ -n "$pkg" ] || { apt-get update -qq && pkg=$(kernel_pkg); }
[ -n "$pkg" ] || { say "apt-cache knows no linux-image-amd64 (run apt-get update)"; exit 1; }
kdir=$cache/$pkg
if ! ls "$kdir"/boot/vmlinuz-* >/dev/null 2>&1; then
  say "downloading $pkg into $cache"
  (cd "$cache" && rm -f "${pkg}"_*.deb && apt-get download -o APT::Sandbox::User=root "$pkg" >/dev/null)
  rm -rf "$kdir.tmp" && dpkg-deb -x "$cache/${pkg}"_*.deb "$kdir.tmp" && mv "$kdir.tmp" "$kdir"
  rm -f "$cache/${pkg}"_*.deb
fi
vmlinuz=$(ls "$kdir"/boot/vmlinuz-* | head -1)
[ "${1:-}" = --fetch-kernel ] && exit 0
kver=${vmlinuz##*/vmlinuz-}
moddir=$kdir/lib/modules/$kver/kernel

# --- the binaries, built on the host ------------------------------------------------------------
suites=(cgroup_real container_native)
say "building ${suites[*]} and tend"
args=()
for s in "${suites[@]}"; do args+=(--test "$s"); done
# One JSON line per artifact: the test executables and the `tend` binary they run
# (CARGO_BIN_EXE_tend, an absolute path compiled into them).
mapfile -t exes < <(cargo test -p tend --no-run --message-format=json "${args[@]}" 2>/dev/null |
  python3 -c '
import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("executable"):
        kinds = m["target"]["kind"]
        if "test" in kinds or m["target"]["name"] == "tend" and "bin" in kinds:
            print(m["target"]["name"] + " " + m["executable"])
')
[ ${#exes[@]} -gt ${#suites[@]} ] || { say "the build gave no binaries: cargo test -p tend --no-run ${args[*]}"; exit 1; }

# --- the initramfs --------------------------------------------------------------------------------
root=$(mktemp -d /tmp/tend-vm-root.XXXXXX)
initrd=$(mktemp /tmp/tend-vm-initrd.XXXXXX)
trap 'rm -rf "$root" "$initrd"' EXIT
mkdir -p "$root"/{bin,sbin,etc,proc,sys,dev,tmp,run,root,t,var/lib,modules}
cp /bin/busybox "$root/bin/busybox"
copy_with_libs() { # FILE [DEST]: a stripped copy at DEST (default: the same path), and its libraries
  local src=$1 dst=${2:-$1}
  mkdir -p "$root$(dirname "$dst")"
  strip --strip-debug -o "$root$dst" "$src" 2>/dev/null || cp "$src" "$root$dst"
  ldd "$src" 2>/dev/null | grep -oE '/[^ ]+' | while read -r lib; do
    [ -e "$root$lib" ] && continue
    mkdir -p "$root$(dirname "$lib")"
    cp -L "$lib" "$root$lib"
  done
}
for e in "${exes[@]}"; do
  name=${e%% *} path=${e#* }
  case " ${suites[*]} " in
    *" $name "*) copy_with_libs "$path" "/t/$name" ;;
    *) copy_with_libs "$path" ;; # tend, at the path the tests were compiled with
  esac
  [ "$name" = tend ] && tend_path=$path
done
copy_with_libs "$(command -v mkfs.btrfs)" /sbin/mkfs.btrfs

# Modules and their dependencies (the `depends=` field of each module's .modinfo section), in
# load order.
order=()
add_module() {
  local m=$1 f dep
  case " ${order[*]} " in *" $m "*) return ;; esac
  f=$(find "$moddir" -name "$m.ko" | head -1)
  [ -n "$f" ] || { say "module $m not in $pkg"; exit 1; }
  for dep in $(tr '\0' '\n' <"$f" | grep -a '^depends=' | head -1 | cut -d= -f2 | tr ',' ' '); do
    add_module "$dep"
  done
  cp "$f" "$root/modules/$m.ko"
  order+=("$m")
}
for m in veth bridge loop crc32c_generic btrfs; do add_module "$m"; done
printf '%s\n' "${order[@]}" >"$root/modules/order"

if [ -n "${TEND_VM_FAILPOINTS:-}" ]; then
  printf '%s\n' "$TEND_VM_FAILPOINTS" >"$root/etc/tend-failpoints"
  say "failpoints for every daemon in the VM: $TEND_VM_FAILPOINTS"
fi
bench=${TEND_VM_BENCH:-0}
# 200 containers in bulk and 50 kills (the defaults) take most of an hour under TCG.
bench_args=${TEND_VM_BENCH_ARGS:---single 10 --bulk 50 --kills 10}

cat >"$root/init" <<INIT
#!/bin/busybox sh
# The initramfs root cannot be pivot_root'ed away from (the shim's rootfs containers need that),
# so the first thing is to move everything onto a tmpfs and make that the root.
if [ ! -e /.switched ]; then
  /bin/busybox mkdir -p /newroot && /bin/busybox mount -t tmpfs -o size=90% tmpfs /newroot
  for d in /*; do
    case \$d in /newroot) ;; *) /bin/busybox cp -a \$d /newroot/ ;; esac
  done
  /bin/busybox touch /newroot/.switched
  exec /bin/busybox switch_root /newroot /init
fi
/bin/busybox --install -s /bin
echo
export PATH=/bin:/sbin:/usr/bin:/usr/sbin HOME=/root TMPDIR=/tmp TEND_REQUIRE_PRIVILEGED=1
# TCG emulates every instruction: waits for a positive signal get 4 times their bound.
export TEND_TEST_TIME_SCALE=4
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs dev /dev
mkdir -p /dev/pts /dev/shm && mount -t devpts devpts /dev/pts
mount -t tmpfs tmpfs /tmp
mount -t tmpfs tmpfs /run
mkdir -p /run/netns
mount -t cgroup2 none /sys/fs/cgroup
echo "+memory +pids +cpu +io" > /sys/fs/cgroup/cgroup.subtree_control
for m in \$(cat /modules/order); do insmod /modules/\$m.ko || echo "vm: insmod \$m failed"; done
ip link set lo up
[ -f /etc/tend-failpoints ] && export TEND_FAILPOINTS=/etc/tend-failpoints
echo "vm: kernel \$(uname -r); \$(grep cgroup /proc/mounts | cut -d' ' -f1-3)"
echo "vm: cgroup2 controllers: \$(cat /sys/fs/cgroup/cgroup.controllers); enabled: \$(cat /sys/fs/cgroup/cgroup.subtree_control)"
passed=0; failed=0
for t in /t/*; do
  echo "vm: === \${t##*/}"
  start=\$(date +%s)
  \$t --test-threads=2 > /tmp/out 2>&1
  rc=\$?
  cat /tmp/out
  line=\$(grep '^test result:' /tmp/out | tail -1)
  p=\$(echo "\$line" | sed -n 's/.* \([0-9]*\) passed.*/\1/p'); f=\$(echo "\$line" | sed -n 's/.* \([0-9]*\) failed.*/\1/p')
  if [ -z "\$p" ]; then p=0; f=1; echo "vm: \${t##*/} ended without a result (exit \$rc)"; fi
  [ "\$rc" != 0 ] && [ "\$f" = 0 ] && f=1
  passed=\$((passed + p)); failed=\$((failed + f))
  echo "vm: \${t##*/}: \$p passed, \$f failed in \$((\$(date +%s) - start)) s"
done
left=\$(find /sys/fs/cgroup/tend -mindepth 1 -maxdepth 1 -type d 2>/dev/null)
if [ -n "\$left" ]; then
  echo "vm: leak check: tend cgroups left:"; echo "\$left"; failed=\$((failed + 1))
else
  echo "vm: leak check: no tend cgroup left"; passed=\$((passed + 1))
fi
if [ "$bench" = 1 ]; then
  echo "vm: === tend bench container $bench_args"
  mkdir -p /var/lib/bench && cd /var/lib/bench
  $tend_path bench container $bench_args 2>/tmp/bench.log | sed 's/^/bench: /'
  echo "vm: bench log (stderr):"; grep -v 'unreachable runtime on delete' /tmp/bench.log | tail -20
  cd /
fi
echo "vm-test: \$passed passed, \$failed failed"
poweroff -f
INIT
chmod +x "$root/init"
(cd "$root" && find . | cpio -o -H newc --quiet | gzip -1) >"$initrd"
say "initramfs $(du -h "$initrd" | cut -f1); booting $kver under qemu (TCG), at most ${timeout_s} s"

# --- the VM ---------------------------------------------------------------------------------------
t0=$(date +%s)
set +e
timeout --signal=KILL "$timeout_s" qemu-system-x86_64 -accel tcg -m 3072 -smp 2 \
  -kernel "$vmlinuz" -initrd "$initrd" \
  -append "console=ttyS0 quiet panic=-1 psi=1" \
  -nographic -no-reboot -monitor none </dev/null 2>&1 | sed -u 's/\r$//' | tee "$log"
set -e
took=$(($(date +%s) - t0))
summary=$(grep -E '^vm-test: [0-9]+ passed, [0-9]+ failed$' "$log" | tail -1)
if [ -z "$summary" ]; then
  say "the VM gave no summary within ${timeout_s} s (ran ${took} s); console log: $log"
  echo "vm-test: 0 passed, 1 failed"
  exit 1
fi
say "VM ran ${took} s; console log: $log"
echo "$summary"
failed=$(echo "$summary" | sed -E 's/.* ([0-9]+) failed$/\1/')
[ "$failed" = 0 ]
