#!/usr/bin/env python3
"""Draws apply->Running/Ready latency of tend against its peers as an SVG, from the figures
deploy/bench-figures.sh wrote to docs/bench-latency.json (what `tend bench ... --json` printed).

Standard library only. Usage: deploy/chart.py [docs/bench-latency.json] [docs/latency.svg]
Bars are p50, whiskers reach p99; the x axis is logarithmic (milliseconds). Each row is labelled
with the figure's own name; peers that were not measured are listed under the chart.
"""
import json
import math
import sys
from pathlib import Path

root = Path(__file__).resolve().parent.parent
src = Path(sys.argv[1]) if len(sys.argv) > 1 else root / "docs" / "bench-latency.json"
out = Path(sys.argv[2]) if len(sys.argv) > 2 else root / "docs" / "latency.svg"
data = json.loads(src.read_text())

# tend's apply -> Ready/Running figures, then the container bench's peers.
TEND = ("sandbox apply -> Ready", "attachment, one at a time", "apply -> Running (1 container)")
rows, skipped = [], []
for run in data["runs"]:
    for f in run["figures"]:
        name = f["figure"]
        if "skipped" in f:
            skipped.append(f"{name}: {f['skipped']}")
        elif "p50_us" not in f:
            continue
        elif name.startswith(TEND):
            rows.append(({"label": name, "p50": f["p50_us"] / 1e3, "p99": f["p99_us"] / 1e3}, "tend"))
        elif f["bench"] == "container" and " run -d" in name:
            rows.append(({"label": name, "p50": f["p50_us"] / 1e3, "p99": f["p99_us"] / 1e3}, "peer"))
rows = [r for r in rows if r[1] == "tend"] + [r for r in rows if r[1] == "peer"]
title = "apply → Running/Ready latency, tend and its peers (ms, log scale)"
subtitle = f"{data['machine']}; {data['date']}"

W, left, right, top, row_h = 1080, 420, 170, 60, 34
H = top + row_h * len(rows) + 70 + 18 * len(skipped)
lo, hi = 1.0, 1000.0  # ms, log scale
for r, _ in rows:
    hi = max(hi, r["p99"] * 1.2)
span = math.log10(hi) - math.log10(lo)


def x(ms):
    ms = max(ms, lo)
    return left + (W - left - right) * (math.log10(ms) - math.log10(lo)) / span


def ms(v):
    return f"{v:.3g}" if v < 1000 else f"{v:,.0f}"


def esc(s):
    return s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


svg = [
    f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" '
    f'font-family="sans-serif" font-size="13">',
    f'<rect width="{W}" height="{H}" fill="white"/>',
    f'<text x="{W / 2}" y="24" text-anchor="middle" font-size="16" font-weight="bold">'
    f'{esc(title)}</text>',
    f'<text x="{W / 2}" y="42" text-anchor="middle" fill="#555">{esc(subtitle)}</text>',
]
decade = lo
while decade <= hi:
    for m in (1, 2, 5):
        v = decade * m
        if v > hi:
            break
        gx = x(v)
        svg.append(f'<line x1="{gx:.1f}" y1="{top - 6}" x2="{gx:.1f}" '
                   f'y2="{top + row_h * len(rows)}" stroke="#ddd"/>')
        label = f"{v:g} ms" if v < 1000 else f"{v / 1000:g} s"
        svg.append(f'<text x="{gx:.1f}" y="{top + row_h * len(rows) + 16}" text-anchor="middle" fill="#555">'
                   f'{label}</text>')
    decade *= 10
for i, (r, who) in enumerate(rows):
    y = top + i * row_h
    color = "#2f6fb0" if who == "tend" else "#c0504d"
    svg.append(f'<text x="{left - 10}" y="{y + 18}" text-anchor="end">{esc(r["label"])}</text>')
    svg.append(f'<rect x="{left}" y="{y + 6}" width="{x(r["p50"]) - left:.1f}" height="18" '
               f'fill="{color}"/>')
    svg.append(f'<line x1="{x(r["p50"]):.1f}" y1="{y + 15}" x2="{x(r["p99"]):.1f}" '
               f'y2="{y + 15}" stroke="{color}" stroke-width="2"/>')
    svg.append(f'<line x1="{x(r["p99"]):.1f}" y1="{y + 8}" x2="{x(r["p99"]):.1f}" '
               f'y2="{y + 22}" stroke="{color}" stroke-width="2"/>')
    svg.append(f'<text x="{x(r["p99"]) + 6:.1f}" y="{y + 19}" fill="#333">'
               f'p50 {ms(r["p50"])} / p99 {ms(r["p99"])} ms</text>')
foot = top + row_h * len(rows) + 40
svg.append(f'<text x="20" y="{foot}" fill="#555">bars: p50, whiskers: p99 (log scale). '
           f'blue: tend, red: peers. Source: {esc(src.name)} (deploy/bench-figures.sh)</text>')
for i, s in enumerate(skipped):
    svg.append(f'<text x="20" y="{foot + 18 * (i + 1)}" fill="#555">not measured: {esc(s[:150])}</text>')
svg.append("</svg>")
out.write_text("\n".join(svg) + "\n")
print(f"wrote {out}")
