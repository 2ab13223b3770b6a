#!/usr/bin/env bash
# Runs `tend bench container --single 10 --bulk 50 --kills 10` inside the cgroup v2 VM (deploy/vm-test.sh with
# TEND_VM_BENCH=1, the suites run first) and writes its output, as printed, into
# docs/benchmarks.md between the "vm-bench" markers. The VM emulates the CPU (TCG): the figures
# only compare v2 steps with each other, never with the host's.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" != 0 ]; then exec sudo -E "$0" "$@"; fi
log=$(mktemp)
trap 'rm -f "$log"' EXIT
TEND_VM_BENCH=1 TEND_VM_TIMEOUT=${TEND_VM_TIMEOUT:-1500} TEND_VM_LOG="$log" deploy/vm-test.sh |
  grep -E '^vm-test: [0-9]+ passed' || true
grep -q '^bench: ' "$log" || { echo "vm-bench: the VM printed no bench output (log: $log)" >&2; exit 1; }
python3 - "$log" docs/benchmarks.md <<'PY'
import re, sys
log, doc = sys.argv[1], sys.argv[2]
lines = open(log).read().splitlines()
kernel = next((l.split("vm: kernel ", 1)[1].split(";")[0] for l in lines if "vm: kernel " in l), "?")
command = next((l.split("=== ", 1)[1] for l in lines if l.startswith("vm: === tend bench")), "?")
bench = [l[len("bench: "):] for l in lines if l.startswith("bench: ")]
block = (
    "<!-- vm-bench:start (written by deploy/vm-bench.sh from the VM's output) -->\n"
    f"`{command}` on Debian kernel {kernel}, cgroup v2 only, **under TCG emulation** (qemu, 2\n"
    "vCPUs, no KVM), debug build: compare these figures with each other only, not with the host's.\n\n```\n"
    + "\n".join(bench) + "\n```\n<!-- vm-bench:end -->"
)
text = open(doc).read()
pat = re.compile(r"<!-- vm-bench:start.*?<!-- vm-bench:end -->", re.S)
if not pat.search(text):
    sys.exit("docs/benchmarks.md has no vm-bench markers")
open(doc, "w").write(pat.sub(lambda _: block, text))
PY
echo "vm-bench: docs/benchmarks.md updated"
