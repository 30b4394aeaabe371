#!/usr/bin/env python3
"""Totals of a Nsight Compute per-kernel CSV (scripts/gpu-profile.sh), by phase.

A decode step of a G-layer model launches the paged decode attention kernel once
per layer: a step is taken as the launches from one run of G such launches to the
next (head, sampling and the next embedding included). Vision forwards are the
launches between decoder steps whose attention is not the paged kernel and whose
count repeats; everything else is reported as "other".

Usage: python3 tools/bench/ncu_summary.py kernels.csv [--layers 34] [--top 25]
"""

import argparse
import csv
import statistics
import sys
from collections import defaultdict

DECODE_ATTENTION = "paged_decode_"


def read_launches(path):
    """[(name, grid, block, nanoseconds)] in launch order."""
    with open(path, newline="") as f:
        lines = [line for line in f if not line.startswith("==")]
    rows = list(csv.reader(lines))
    header_at = next(i for i, r in enumerate(rows) if r and r[0] == "ID")
    header = rows[header_at]
    col = {name: i for i, name in enumerate(header)}
    out = []
    for r in rows[header_at + 1 :]:
        if len(r) != len(header) or not r[0].isdigit():
            continue
        value = r[col["gpu__time_duration.sum"]].replace(",", "")
        try:
            ns = float(value)
        except ValueError:
            continue
        out.append((r[col["Kernel Name"]], r[col["Grid Size"]], r[col["Block Size"]], ns))
    return out


def decode_steps(launches, layers):
    """[(start, end)] launch index ranges of whole decode steps."""
    attn = [i for i, l in enumerate(launches) if l[0].startswith(DECODE_ATTENTION)]
    firsts = [attn[k] for k in range(0, len(attn) - len(attn) % layers, layers)]
    spans = list(zip(firsts, firsts[1:]))
    if not spans:
        return []
    usual = statistics.median(e - s for s, e in spans)
    # A span holding a prefill (or a vision forward) launches far more kernels.
    return [(s, e) for s, e in spans if e - s <= usual * 1.05]


def short(name, width=90):
    name = name.split("(")[0]
    return name if len(name) <= width else name[: width - 3] + "..."


def table(title, launches, steps, top):
    by = defaultdict(lambda: [0, 0.0])
    for name, grid, block, ns in launches:
        key = short(name)
        by[key][0] += 1
        by[key][1] += ns
    total = sum(v[1] for v in by.values())
    print(f"\n## {title}: {total / steps / 1e3:.1f} us per step, {len(launches) / steps:.0f} launches per step")
    print(f"{'us/step':>9} {'share':>6} {'launches/step':>13}  kernel")
    for key, (n, ns) in sorted(by.items(), key=lambda kv: -kv[1][1])[:top]:
        print(f"{ns / steps / 1e3:9.1f} {ns / total:6.1%} {n / steps:13.1f}  {key}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("csv")
    ap.add_argument("--layers", type=int, default=34)
    ap.add_argument("--top", type=int, default=25)
    args = ap.parse_args()
    launches = read_launches(args.csv)
    if not launches:
        sys.exit("no kernel rows in the file")
    print(f"{len(launches)} launches, {sum(l[3] for l in launches) / 1e6:.1f} ms of kernel time in all")
    steps = decode_steps(launches, args.layers)
    in_steps = set()
    for s, e in steps:
        in_steps.update(range(s, e))
    if steps:
        table("decode steps (batch 1)", [launches[i] for i in sorted(in_steps)], len(steps), args.top)
    rest = [l for i, l in enumerate(launches) if i not in in_steps]
    table("everything else (weights drawn, prefills, vision forwards)", rest, 1, args.top)


if __name__ == "__main__":
    main()
