#!/usr/bin/env bash
# Runs one `tend bench NAME ARGS… --json` and writes its figures as a table into
# docs/benchmarks.md between `<!-- bench:NAME:begin -->` and `<!-- bench:NAME:end -->` (added at
# the end when missing), with the command, the binary's commit and the load average. Nothing in
# the table is typed by hand. Needs root and a release build (or TEND=path/to/tend, with
# COMMIT=the commit it was built from).
# Usage: deploy/bench-table.sh NAME [ARGS…]
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
if [ "$(id -u)" != 0 ]; then exec sudo -E "$0" "$@"; fi
tend=${TEND:-${CARGO_TARGET_DIR:-$root/target}/release/tend}
[ -x "$tend" ] || { echo "bench-table: no $tend (cargo build --release)" >&2; exit 1; }
name=$1; shift
out=$(mktemp)
trap 'rm -f "$out"' EXIT
load=$(cut -d' ' -f1-3 /proc/loadavg)
(cd /tmp && "$tend" bench "$name" "$@" --json) >"$out"
python3 - "$out" "$root/docs/benchmarks.md" "$name" "$*" "$load" "${COMMIT:-$(git -C "$root" rev-parse --short HEAD)}" <<'PY'
import json, pathlib, sys
out, doc, name, args, load, commit = sys.argv[1:7]
rows = ["| figure | n | p50 | p99 | value |", "|---|---|---|---|---|"]
def ms(us): return f"{us / 1000:.2f} ms" if us >= 1000 else f"{us:.1f} µs"
for line in open(out):
    if not line.strip():
        continue
    f = json.loads(line)
    if "p50_us" in f:
        rows.append(f"| {f['figure']} | {f['n']} | {ms(f['p50_us'])} | {ms(f['p99_us'])} | |")
    elif "per_second" in f:
        rows.append(f"| {f['figure']} | {f['n']} | | | {f['per_second']:.1f}/s ({f['total_ms']:.0f} ms) |")
    elif "value" in f:
        rows.append(f"| {f['figure']} | | | | {f['value']:.3f} {f['unit']} |")
    else:
        rows.append(f"| {f['figure']} | | | | skipped: {f.get('skipped', '')} |")
block = (f"`tend bench {name} {args}` (tree at {commit}; load average at the start {load}):\n\n"
         + "\n".join(rows))
begin, end = f"<!-- bench:{name}:begin -->", f"<!-- bench:{name}:end -->"
text = pathlib.Path(doc).read_text()
if begin in text:
    text = text[: text.index(begin) + len(begin)] + "\n" + block + "\n" + text[text.index(end):]
else:
    text += f"\n{begin}\n{block}\n{end}\n"
pathlib.Path(doc).write_text(text)
print(block)
PY
