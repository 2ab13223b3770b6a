#!/usr/bin/env bash
# The whole test suite: formatting, lints, then every unit, integration and privileged test,
# every fuzz target for a bounded time, and the cgroup v2 suite in a VM (deploy/vm-test.sh).
# Ends with one line: "tend: N passed, N failed" (the host's and the VM's tests together).
# Privileged tests must run (TEND_REQUIRE_PRIVILEGED=1 turns a skip into a failure).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" != 0 ]; then exec sudo -E "$0" "$@"; fi
deploy/setup-host.sh
cargo fmt --all --check
cargo clippy --workspace --all-targets -- -D warnings
export TEND_REQUIRE_PRIVILEGED=1
summary=$(mktemp)
vm=$(mktemp)
trap 'rm -f "$summary" "$vm"' EXIT
# tend cgroups present before the run: whatever is new afterwards leaked from a test.
tend_cgroups() { find /sys/fs/cgroup -mindepth 2 -maxdepth 3 -type d -path '*/tend/*' 2>/dev/null | sort; }
before=$(tend_cgroups)
set +e
cargo nextest run --workspace --no-fail-fast --failure-output final 2>&1 | tee "$summary"
nextest_rc=${PIPESTATUS[0]}
set -e
leaked=$(comm -13 <(echo "$before") <(tend_cgroups))
# Every fuzz target for a bounded time (FUZZ_SECONDS each, default 20).
deploy/fuzz.sh
# The cgroup and container suites again on a cgroup-v2-only kernel (qemu, TCG).
set +e
deploy/vm-test.sh 2>&1 | tee "$vm"
vm_rc=${PIPESTATUS[0]}
set -e
# nextest's summary: "Summary [ 45s] 230 tests run: 230 passed, 0 skipped" (or "... N failed").
line=$(grep -E "^\s*Summary \[" "$summary" | tail -1)
passed=$(echo "$line" | grep -oE "[0-9]+ passed" | grep -oE "[0-9]+" || echo 0)
failed=$(echo "$line" | grep -oE "[0-9]+ failed" | grep -oE "[0-9]+" || echo 0)
[ "$nextest_rc" = 0 ] || [ "$failed" != 0 ] || failed=1
if [ -n "$leaked" ]; then
  echo "leak check: tend cgroups left by the test run:"
  echo "$leaked"
  failed=$((failed + 1))
else
  echo "leak check: no tend cgroup left by the test run"
fi
vm_line=$(grep -E "^vm-test: [0-9]+ passed, [0-9]+ failed$" "$vm" | tail -1)
vm_passed=$(echo "$vm_line" | sed -nE 's/^vm-test: ([0-9]+) passed.*/\1/p')
vm_failed=$(echo "$vm_line" | sed -nE 's/.* ([0-9]+) failed$/\1/p')
[ -n "$vm_line" ] || { vm_passed=0; vm_failed=1; }
[ "$vm_rc" = 0 ] || [ "$vm_failed" != 0 ] || vm_failed=1
if [ "${TEND_SKIP_KUBECTL:-}" = 1 ] && ! command -v kubectl >/dev/null; then
  echo "SKIPPED: kubectl_drives_tend (kubectl is not installed and TEND_SKIP_KUBECTL=1)"
fi
# The failing tests' own output again, last, so it is in the tail a CI log keeps (nextest printed
# it before fuzzing and the VM's console pushed it up).
if [ "$failed" != 0 ]; then
  echo "=== output of the failing host tests (from nextest's final report) ==="
  start=$(grep -nE "^\s+(stdout|stderr) ───" "$summary" | head -1 | cut -d: -f1)
  if [ -n "$start" ]; then
    tail -n +"$start" "$summary" | grep -vE "^\s+(PASS|SLOW|START) \[" | tail -150
  fi
fi
echo "host: ${passed} passed, ${failed} failed"
echo "vm-cgroup-v2: ${vm_passed} passed, ${vm_failed} failed"
echo "tend: $((passed + vm_passed)) passed, $((failed + vm_failed)) failed"
[ $((failed + vm_failed)) = 0 ]
