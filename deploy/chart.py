#!/usr/bin/env python3
"""Draws apply->Ready latency per kind against peers as an SVG, from docs/bench-latency.json.

Standard library only. Usage: deploy/chart.py [docs/bench-latency.json] [docs/latency.svg]
Bars are p50, whiskers reach p99; the x axis is logarithmic (milliseconds).
"""
import json
import math
import sys
from pathlib import Path

root = Path(__file__).resolve().parent.parent
src = Path(sys.argv[1]) if len(sys.argv) > 1 else root / "docs" / "bench-latency.json"
out = Path(sys.argv[2]) if len(sys.argv) > 2 else root / "docs" / "latency.svg"
data = json.loads(src.read_text())
rows = [(r, "tend") for r in data["tend"]] + [(r, "peer") for r in data["peers"]]

W, left, right, top, row_h = 900, 260, 170, 60, 34
H = top + row_h * len(rows) + 70
lo, hi = 1.0, 1000.0  # ms, log scale
for r, _ in rows:
    hi = max(hi, r["p99"] * 1.2)
span = math.log10(hi) - math.log10(lo)


def x(ms):
    ms = max(ms, lo)
    return left + (W - left - right) * (math.log10(ms) - math.log10(lo)) / span


def esc(s):
    return s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


svg = [
    f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" '
    f'font-family="sans-serif" font-size="13">',
    f'<rect width="{W}" height="{H}" fill="white"/>',
    f'<text x="{W / 2}" y="24" text-anchor="middle" font-size="16" font-weight="bold">'
    f'{esc(data["title"])}</text>',
    f'<text x="{W / 2}" y="42" text-anchor="middle" fill="#555">{esc(data["subtitle"])}</text>',
]
decade = lo
while decade <= hi:
    for m in (1, 2, 5):
        v = decade * m
        if v > hi:
            break
        gx = x(v)
        svg.append(f'<line x1="{gx:.1f}" y1="{top - 6}" x2="{gx:.1f}" '
                   f'y2="{H - 50}" stroke="#ddd"/>')
        label = f"{v:g} ms" if v < 1000 else f"{v / 1000:g} s"
        svg.append(f'<text x="{gx:.1f}" y="{H - 34}" text-anchor="middle" fill="#555">'
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
               f'p50 {r["p50"]:g} / p99 {r["p99"]:g} ms</text>')
svg.append(f'<text x="{left}" y="{H - 12}" fill="#555">bars: p50, whiskers: p99 (log scale). '
           f'blue: tend, red: peers. Source: {esc(src.name)}</text>')
svg.append("</svg>")
out.write_text("\n".join(svg) + "\n")
print(f"wrote {out}")
