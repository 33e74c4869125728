#!/usr/bin/env python3
"""Draws the federated robustness and privacy figures of docs/federated.md from `mpipe fed` logs.

usage: tools/fed_svg.py robust LOGDIR OUT.svg [TITLE]   bars: final test accuracy per split,
                                                       attack, rule
       tools/fed_svg.py dp LOGDIR OUT.svg [TITLE]       test accuracy against epsilon, one point
                                                       per sigma
       tools/fed_svg.py curves LOGDIR OUT.svg [TITLE]   test accuracy per round, one line per run

LOGDIR holds each run's stderr as NAME.err. robust reads SPLIT_ATTACK_RULE.err with SPLIT in
iid|dirichlet, ATTACK in clean|signflip|scale, RULE in avg|median|trimmed|krum; dp reads
dp_SIGMA.err (and dp_0.err, no noise); curves reads every NAME.err in name order and labels its
line NAME (a leading "N_" that orders them dropped, underscores shown as spaces). robust and dp
use the last `round N/R ... test_acc A` line and, for dp, that line's `epsilon E`; each split's
label gives its clean run's round count; curves uses every round line.
Python 3 standard library only.
"""
import math
import os
import re
import sys

ROUND = re.compile(r"^round (\d+)/(\d+) .* test_acc ([0-9.]+)")
EPS = re.compile(r" epsilon ([0-9.]+)")


def last_round(path):
    """(round, test_acc, epsilon or None) of the last round line, or None."""
    found = None
    with open(path) as f:
        for line in f:
            m = ROUND.match(line)
            if m:
                e = EPS.search(line)
                found = (int(m.group(1)), float(m.group(3)), float(e.group(1)) if e else None)
    return found


def rounds(path):
    """[(round, test_acc)] of every round line."""
    with open(path) as f:
        return [(int(m.group(1)), float(m.group(3))) for m in map(ROUND.match, f) if m]


def svg_header(w, h):
    return [f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" '
            'font-family="sans-serif" font-size="12">', f'<rect width="{w}" height="{h}" fill="white"/>']


def robust(logdir, out, title=None):
    splits = [("iid", "iid"), ("dirichlet", "Dirichlet 0.5")]
    attacks = [("signflip", "2 x signflip"), ("scale", "2 x scale:10")]
    rules = [("avg", "FedAvg (size)", "#d62728"), ("median", "median", "#1f77b4"),
             ("trimmed", "trimmed:0.25", "#2ca02c"), ("krum", "krum:2", "#9467bd")]
    W, H, left, top, bottom = 820, 420, 60, 40, 80
    ph = H - top - bottom
    y = lambda a: top + ph * (1 - a)
    s = svg_header(W, H)
    for k in range(0, 11, 2):
        a = k / 10
        s.append(f'<line x1="{left}" y1="{y(a):.1f}" x2="{W - 20}" y2="{y(a):.1f}" stroke="#ddd"/>')
        s.append(f'<text x="{left - 6}" y="{y(a) + 4:.1f}" text-anchor="end">{a:.1f}</text>')
    title = title or "Final test accuracy, models/mlp.mp, 8 clients (2 attacking)"
    s.append(f'<text x="{left}" y="20" font-size="14">{title}</text>')
    group_w = (W - 20 - left) / len(splits)
    bar = 24
    for gi, (split, split_name) in enumerate(splits):
        x0 = left + gi * group_w + 20
        clean = os.path.join(logdir, f"{split}_clean_avg.err")
        c = last_round(clean) if os.path.exists(clean) else None
        x = x0
        if c:
            s.append(f'<rect x="{x:.1f}" y="{y(c[1]):.1f}" width="{bar}" height="{y(0) - y(c[1]):.1f}" '
                     'fill="#7f7f7f"/>')
            s.append(f'<text x="{x + bar / 2:.1f}" y="{y(c[1]) - 4:.1f}" text-anchor="middle" '
                     f'font-size="9">{c[1]:.3f}</text>')
            s.append(f'<line x1="{x0:.1f}" y1="{y(c[1]):.1f}" x2="{x0 + group_w - 40:.1f}" '
                     f'y2="{y(c[1]):.1f}" stroke="#7f7f7f" stroke-dasharray="4,3"/>')
            s.append(f'<text x="{x + bar / 2:.1f}" y="{y(0) + 14:.1f}" text-anchor="middle" '
                     'font-size="10">clean</text>')
        x += bar + 14
        for attack, attack_name in attacks:
            xa = x
            for rule, _, color in rules:
                p = os.path.join(logdir, f"{split}_{attack}_{rule}.err")
                r = last_round(p) if os.path.exists(p) else None
                if r:
                    s.append(f'<rect x="{x:.1f}" y="{y(r[1]):.1f}" width="{bar}" '
                             f'height="{y(0) - y(r[1]):.1f}" fill="{color}"/>')
                    s.append(f'<text x="{x + bar / 2:.1f}" y="{y(r[1]) - 4:.1f}" text-anchor="middle" '
                             f'font-size="9">{r[1]:.3f}</text>')
                x += bar + 2
            s.append(f'<text x="{(xa + x) / 2:.1f}" y="{y(0) + 14:.1f}" text-anchor="middle" '
                     f'font-size="10">{attack_name}</text>')
            x += 12
        if c:
            split_name += f" ({c[0]} rounds)"
        s.append(f'<text x="{x0 + (x - x0) / 2:.1f}" y="{y(0) + 32:.1f}" text-anchor="middle" '
                 f'font-size="13">{split_name}</text>')
    lx = left
    for _, name, color in [("clean", "no attack, FedAvg", "#7f7f7f")] + rules:
        s.append(f'<rect x="{lx}" y="{H - 26}" width="12" height="12" fill="{color}"/>')
        s.append(f'<text x="{lx + 16}" y="{H - 16}">{name}</text>')
        lx += 150
    s.append("</svg>")
    with open(out, "w") as f:
        f.write("\n".join(s) + "\n")


def dp(logdir, out, title=None):
    pts = []
    for name in sorted(os.listdir(logdir)):
        m = re.match(r"dp_([0-9.]+)\.err$", name)
        if m:
            r = last_round(os.path.join(logdir, name))
            if r:
                pts.append((float(m.group(1)), r[1], r[2]))
    if not pts:
        sys.exit("no dp_SIGMA.err logs in " + logdir)
    W, H, left, top, bottom = 760, 380, 70, 40, 60
    pw, ph = W - left - 30, H - top - bottom
    noisy = [p for p in pts if p[2] is not None]
    lo = math.floor(math.log10(min(p[2] for p in noisy))) if noisy else 0
    hi = math.ceil(math.log10(max(p[2] for p in noisy))) if noisy else 1
    hi = max(hi, lo + 1)
    x = lambda e: left + pw * (math.log10(e) - lo) / (hi - lo)
    y = lambda a: top + ph * (1 - a)
    s = svg_header(W, H)
    title = title or "DP-FedAvg: final test accuracy against epsilon"
    s.append(f'<text x="{left}" y="20" font-size="14">{title}</text>')
    for k in range(0, 11, 2):
        a = k / 10
        s.append(f'<line x1="{left}" y1="{y(a):.1f}" x2="{left + pw}" y2="{y(a):.1f}" stroke="#ddd"/>')
        s.append(f'<text x="{left - 6}" y="{y(a) + 4:.1f}" text-anchor="end">{a:.1f}</text>')
    for d in range(lo, hi + 1):
        s.append(f'<line x1="{x(10 ** d):.1f}" y1="{top}" x2="{x(10 ** d):.1f}" y2="{top + ph}" '
                 'stroke="#eee"/>')
        s.append(f'<text x="{x(10 ** d):.1f}" y="{top + ph + 16}" text-anchor="middle">1e{d}</text>')
    s.append(f'<text x="{left + pw / 2}" y="{H - 12}" text-anchor="middle">epsilon (log scale)</text>')
    for sigma, acc, eps in pts:
        if eps is None:
            s.append(f'<line x1="{left}" y1="{y(acc):.1f}" x2="{left + pw}" y2="{y(acc):.1f}" '
                     'stroke="#7f7f7f" stroke-dasharray="4,3"/>')
            s.append(f'<text x="{left + 4}" y="{y(acc) - 5:.1f}">no noise (clipping only) '
                     f'{acc:.3f}</text>')
            continue
        s.append(f'<circle cx="{x(eps):.1f}" cy="{y(acc):.1f}" r="5" fill="#1f77b4"/>')
        near_right = x(eps) > left + pw - 130  # the label goes left of a point near the edge
        s.append(f'<text x="{x(eps) + (-8 if near_right else 8):.1f}" y="{y(acc) + 4:.1f}" '
                 f'text-anchor="{"end" if near_right else "start"}">sigma {sigma:g}: {acc:.3f}</text>')
    s.append("</svg>")
    with open(out, "w") as f:
        f.write("\n".join(s) + "\n")


def curves(logdir, out, title=None):
    runs = [(re.sub(r"^\d+_", "", n[:-4]).replace("_", " "), rounds(os.path.join(logdir, n)))
            for n in sorted(os.listdir(logdir)) if n.endswith(".err")]
    runs = [(name, pts) for name, pts in runs if pts]
    if not runs:
        sys.exit("no NAME.err logs with round lines in " + logdir)
    colors = ["#d62728", "#1f77b4", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#7f7f7f"]
    last = max(p[-1][0] for _, p in runs)
    lo = math.floor(min(a for _, p in runs for _, a in p) * 10) / 10
    hi = math.ceil(max(a for _, p in runs for _, a in p) * 10) / 10
    W, H, left, top, bottom, legend = 820, 400, 60, 40, 50, 190
    pw, ph = W - left - legend, H - top - bottom
    x = lambda r: left + pw * (r - 1) / max(last - 1, 1)
    y = lambda a: top + ph * (hi - a) / (hi - lo)
    s = svg_header(W, H)
    title = title or "Test accuracy per round"
    s.append(f'<text x="{left}" y="20" font-size="14">{title}</text>')
    for k in range(int(round(lo * 20)), int(round(hi * 20)) + 1):
        a = k / 20
        s.append(f'<line x1="{left}" y1="{y(a):.1f}" x2="{left + pw}" y2="{y(a):.1f}" '
                 'stroke="#ddd"/>')
        s.append(f'<text x="{left - 6}" y="{y(a) + 4:.1f}" text-anchor="end">{a:.2f}</text>')
    for r in range(5, last + 1, 5):
        s.append(f'<text x="{x(r):.1f}" y="{top + ph + 16}" text-anchor="middle">{r}</text>')
    s.append(f'<text x="{left + pw / 2}" y="{H - 10}" text-anchor="middle">round</text>')
    for i, (name, pts) in enumerate(runs):
        c = colors[i % len(colors)]
        path = " ".join(f"{x(r):.1f},{y(a):.1f}" for r, a in pts)
        s.append(f'<polyline points="{path}" fill="none" stroke="{c}" stroke-width="1.6"/>')
        ly = top + 10 + 20 * i
        s.append(f'<line x1="{left + pw + 15}" y1="{ly}" x2="{left + pw + 35}" y2="{ly}" '
                 f'stroke="{c}" stroke-width="2"/>')
        s.append(f'<text x="{left + pw + 40}" y="{ly + 4}">{name}: {pts[-1][1]:.4f}</text>')
    s.append("</svg>")
    with open(out, "w") as f:
        f.write("\n".join(s) + "\n")


if __name__ == "__main__":
    kinds = {"robust": robust, "dp": dp, "curves": curves}
    if len(sys.argv) not in (4, 5) or sys.argv[1] not in kinds:
        sys.exit(__doc__)
    kinds[sys.argv[1]](*sys.argv[2:])
