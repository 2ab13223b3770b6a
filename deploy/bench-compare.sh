#!/usr/bin/env bash
# Before/after on one machine: runs `tend bench container` of two or more tend binaries in turn
# (ROUNDS times each, A B C A B C …, so load drifts hit all alike) and writes the median of each
# figure into docs/benchmarks.md between the `bench-compare` markers. Nothing is typed by hand.
# Usage: deploy/bench-compare.sh [--rounds N] BIN LABEL BIN LABEL [BIN LABEL …] [-- BENCH ARGS…]
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" != 0 ]; then exec sudo -E "$0" "$@"; fi
rounds=3
if [ "${1:-}" = --rounds ]; then rounds=$2; shift 2; fi
bins=() labels=()
while [ $# -gt 0 ] && [ "$1" != -- ]; do
  [ $# -ge 2 ] || { echo "bench-compare: $1 has no label" >&2; exit 2; }
  bins+=("$1") labels+=("$2"); shift 2
done
[ "${1:-}" = -- ] && shift
[ ${#bins[@]} -ge 2 ] || { echo "usage: $0 [--rounds N] BIN LABEL BIN LABEL [BIN LABEL …] [-- BENCH ARGS…]" >&2; exit 2; }
args=("$@")
[ ${#args[@]} -gt 0 ] || args=(--single 30 --bulk 100 --kills 20)
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
for r in $(seq 1 "$rounds"); do
  for i in "${!bins[@]}"; do
    echo "bench-compare: round $r, ${labels[$i]}" >&2
    (cd /tmp && "${bins[$i]}" bench container "${args[@]}") >"$out/$i.$r.txt" 2>&1
  done
done
python3 - "$out" "$rounds" "${args[*]}" "${labels[@]}" <<'EOF'
import re, statistics, sys, pathlib
out, rounds, args, labels = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4:]
def figures(text):
    setup, got = None, {}
    for line in text.splitlines():
        if line.startswith("tend bench container ("):
            setup = "full setup" if "Sandbox" in line else "host filesystem"
            continue
        # Both output formats: the old one in µs, the current one in ms with the setup named.
        ms = lambda v, unit: float(v) / 1000 if unit == "µs" else float(v)
        m = re.match(r"(apply -> Running \(1 container\)|kill -9 -> restarted)[^=]*?n=\d+\s+p50=\s*([\d.]+)(µs|ms)\s+p99=\s*([\d.]+)(µs|ms)", line)
        if m and setup:
            got[(setup, m.group(1), "p50")] = ms(m.group(2), m.group(3))
            got[(setup, m.group(1), "p99")] = ms(m.group(4), m.group(5))
        m = re.match(r"apply of many -> all Running.*= ([\d.]+)(?: containers)?/s", line)
        if m and setup:
            got[(setup, "apply of many", "per s")] = float(m.group(1))
    return got
runs = [[figures(pathlib.Path(out, f"{i}.{r}.txt").read_text()) for r in range(1, rounds + 1)] for i in range(len(labels))]
keys = sorted({k for s in runs for f in s for k in f})
rows = [f"`tend bench container {args}`, {rounds} runs of each binary, in turn; the median of each figure (ms, or containers/s):", "",
        "| setup | figure | " + " | ".join(labels) + " |", "|---|---|" + "---|" * len(labels)]
for k in keys:
    vals = []
    for s in runs:
        xs = [f[k] for f in s if k in f]
        vals.append(f"{statistics.median(xs):.1f}" if xs else "–")
    rows.append(f"| {k[0]} | {k[1]} {k[2]} | " + " | ".join(vals) + " |")
block = "\n".join(rows)
print(block)
doc = pathlib.Path("docs/benchmarks.md")
text = doc.read_text()
begin, end = "<!-- bench-compare:begin -->", "<!-- bench-compare:end -->"
if begin in text:
    text = text[: text.index(begin) + len(begin)] + "\n" + block + "\n" + text[text.index(end):]
else:
    text += f"\n## Before and after the architecture change — `deploy/bench-compare.sh`\n\n{begin}\n{block}\n{end}\n"
doc.write_text(text)
EOF
