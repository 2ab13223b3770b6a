#!/usr/bin/env bash
# Runs the benches behind the latency chart with --json and writes what they printed, with the
# commands and the machine, to docs/bench-latency.json; then draws docs/latency.svg from it
# (deploy/chart.py). Nothing in either file is typed by hand. Needs root and a release build
# (cargo build --release); takes a few minutes. Sizes can be changed through the variables below.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
tend=${TEND:-${CARGO_TARGET_DIR:-$root/target}/release/tend}
out=${1:-$root/docs/bench-latency.json}
[ -x "$tend" ] || { echo "bench-figures: no $tend (cargo build --release)" >&2; exit 1; }

benches=(
  "sandbox ${SANDBOX_ARGS:---latency 100 --burst 1000 --copy-burst 50}"
  "network ${NETWORK_ARGS:---latency 100 --count 100 --repairs 20}"
  "container ${CONTAINER_ARGS:---single 30 --bulk 100 --kills 20}"
)
runs=$(mktemp)
trap 'rm -f "$runs" "$runs.out"' EXIT
load=$(cut -d' ' -f1-3 /proc/loadavg)
for b in "${benches[@]}"; do
  echo "bench-figures: tend bench $b --json" >&2
  # shellcheck disable=SC2086 # the arguments are meant to split
  "$tend" bench $b --json >"$runs.out"
  python3 -c 'import json, sys
print(json.dumps({"command": "tend bench " + sys.argv[1] + " --json",
                  "figures": [json.loads(l) for l in open(sys.argv[2]) if l.strip()]}))' \
    "$b" "$runs.out" >>"$runs"
done

python3 - "$runs" "$out" "$load" <<'EOF'
import json, os, platform, sys, time
runs = [json.loads(l) for l in open(sys.argv[1])]
doc = {
    "generated_by": "deploy/bench-figures.sh",
    "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    "machine": f"{os.cpu_count()} CPUs, Linux {platform.release()}, load average {sys.argv[3]} at start",
    "runs": runs,
}
with open(sys.argv[2], "w") as f:
    json.dump(doc, f, indent=1, ensure_ascii=False)
    f.write("\n")
print(f"bench-figures: wrote {sys.argv[2]}", file=sys.stderr)
EOF
python3 "$root/deploy/chart.py" "$out" "$(dirname "$out")/latency.svg"
