#!/usr/bin/env python3
"""Draws mpipe's GPT training against the PyTorch peer's (README, docs/language-models.md).

usage: tools/gpt_curve_svg.py METRICS.jsonl PEER.log OUT.svg [TITLE]

METRICS.jsonl is `mpipe train models/gpt.mp ... --eval-every K --metrics METRICS.jsonl` (steps
1..N, each with its batch's loss; every K steps a val_loss). PEER.log is the stdout of
../shared/peers/torch_gpt.py (a `step S loss L` line every 50 steps, S from 0, and a RESULT line
with the final val_loss). Peer step S is mpipe step S + 1 (the same learning rate). The figure
has both training-loss curves at the peer's steps (one batch each, so noisy), mpipe's validation
loss every K steps, and the peer's final validation loss (the peer evaluates only at the end).
Python 3 standard library only.
"""
import json
import re
import sys


def read_mpipe(path):
    train, val = {}, {}
    with open(path) as f:
        for line in f:
            d = json.loads(line)
            if "val_loss" in d:
                val[d["step"]] = d["val_loss"]
            elif "loss" in d:
                train[d["step"]] = d["loss"]
    return train, val


def read_peer(path):
    train, final = {}, None
    with open(path) as f:
        for line in f:
            m = re.match(r"step (\d+) loss ([0-9.]+)", line)
            if m:
                train[int(m.group(1)) + 1] = float(m.group(2))
            m = re.search(r"steps=(\d+) .*val_loss=([0-9.]+)", line)
            if m:
                final = (int(m.group(1)), float(m.group(2)))
    return train, final


def main():
    if len(sys.argv) < 4:
        sys.exit(__doc__)
    m_train, m_val = read_mpipe(sys.argv[1])
    p_train, p_final = read_peer(sys.argv[2])
    title = sys.argv[4] if len(sys.argv) > 4 else "models/gpt.mp against the PyTorch peer"
    steps = sorted(s for s in p_train if s in m_train and s > 1)
    if not steps or not p_final:
        sys.exit("gpt_curve_svg: no common steps or no peer RESULT line")
    W, H, L, R, T, B = 640, 380, 60, 20, 40, 60
    xmax = max(max(steps), max(m_val or [0]), p_final[0])
    ys = [m_train[s] for s in steps] + [p_train[s] for s in steps] + list(m_val.values())
    ys.append(p_final[1])
    lo, hi = min(ys) * 0.95, max(ys) * 1.02
    x = lambda s: L + (W - L - R) * s / xmax
    y = lambda v: H - B - (H - B - T) * (v - lo) / (hi - lo)
    o = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" '
         'font-family="sans-serif" font-size="11">',
         '<rect width="100%" height="100%" fill="#fff"/>',
         f'<text x="{L}" y="20" font-size="13" font-weight="bold">{title}</text>']
    for k in range(6):
        v = lo + (hi - lo) * k / 5
        o.append(f'<line x1="{L}" x2="{W - R}" y1="{y(v):.1f}" y2="{y(v):.1f}" stroke="#ddd"/>'
                 f'<text x="{L - 6}" y="{y(v) + 4:.1f}" text-anchor="end">{v:.2f}</text>')
    for k in range(6):
        s = xmax * k / 5
        o.append(f'<text x="{x(s):.1f}" y="{H - B + 16}" text-anchor="middle">{s:.0f}</text>')
    o.append(f'<text x="{(L + W - R) / 2}" y="{H - B + 32}" text-anchor="middle">'
             'optimizer step</text>')
    o.append(f'<text x="14" y="{(T + H - B) / 2}" transform="rotate(-90 14 {(T + H - B) / 2})" '
             'text-anchor="middle">loss (nats/token)</text>')

    def line(points, colour, dash="", width=1.5):
        pts = " ".join(f"{x(s):.1f},{y(v):.1f}" for s, v in points)
        d = f' stroke-dasharray="{dash}"' if dash else ""
        o.append(f'<polyline points="{pts}" fill="none" stroke="{colour}" '
                 f'stroke-width="{width}"{d}/>')

    line([(s, m_train[s]) for s in steps], "#1f77b4", "4,3", 1)
    line([(s, p_train[s]) for s in steps], "#d62728", "4,3", 1)
    line(sorted(m_val.items()), "#1f77b4", "", 2.5)
    for s, v in sorted(m_val.items()):
        o.append(f'<circle cx="{x(s):.1f}" cy="{y(v):.1f}" r="3" fill="#1f77b4"/>')
    o.append(f'<rect x="{x(p_final[0]) - 4:.1f}" y="{y(p_final[1]) - 4:.1f}" width="8" '
             'height="8" fill="#d62728"/>')
    last = max(m_val) if m_val else None
    legend = [("#1f77b4", "", f"mpipe validation loss"
               + (f" ({m_val[last]:.4f} at {last})" if last else "")),
              ("#d62728", "", f"peer validation loss ({p_final[1]:.4f} at {p_final[0]}, "
               "evaluated only at the end)"),
              ("#1f77b4", "4,3", "mpipe training loss (one batch)"),
              ("#d62728", "4,3", "peer training loss (one batch)")]
    for i, (c, dash, text) in enumerate(legend):
        yy = T + 14 + 16 * i
        d = f' stroke-dasharray="{dash}"' if dash else ' stroke-width="2.5"'
        o.append(f'<line x1="{W - R - 330}" x2="{W - R - 306}" y1="{yy - 4}" y2="{yy - 4}" '
                 f'stroke="{c}"{d}/><text x="{W - R - 300}" y="{yy}">{text}</text>')
    o.append("</svg>")
    with open(sys.argv[3], "w") as f:
        f.write("\n".join(o) + "\n")


if __name__ == "__main__":
    main()
