#!/usr/bin/env python3
"""mics-plan-plot.py PLAN.csv OUT.png: weak-scaling efficiency (throughput per GPU against
the line's fewest nodes) and TFLOPS per GPU against nodes, one line per strategy (for
each, the partition size and hierarchical choice that is fastest at the largest node
count among the layouts that fit, preferring lines that cover more node counts). Run by
mics-plan --plot."""
import csv
import sys

import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def main(src, out):
    rows = [r for r in csv.DictReader(open(src)) if r["fits"] == "1"]
    if not rows:
        sys.exit("mics-plan-plot: no layout in %s fits" % src)
    def key(r):  # zero2/zero3 keep p = W, so they are one line each
        p = r["partition_size"] if r["strategy"] == "mics" else ""
        return (r["strategy"], p, r["hierarchical"])
    lines = {}
    for r in rows:
        lines.setdefault(key(r), []).append(r)
    # Per strategy, the line with the most node counts, then the fastest at its largest.
    best = {}
    for k, rs in lines.items():
        top = max(int(r["nodes"]) for r in rs)
        speed = max(float(r["tokens_per_s"]) for r in rs if int(r["nodes"]) == top)
        rank = (len({r["nodes"] for r in rs}), top, speed)
        if k[0] not in best or rank > best[k[0]][0]:
            best[k[0]] = (rank, k)
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 4))
    for s, (_, k) in sorted(best.items()):
        rs = sorted(lines[k], key=lambda r: int(r["nodes"]))
        label = s + (" p=%s" % k[1] if k[1] else "") + (" hier" if k[2] == "1" else "")
        n = [int(r["nodes"]) for r in rs]
        # Throughput per GPU against the line's first point (the micro-batch that fits may
        # change along the line; the CSV's column compares equal choices only).
        per_gpu = [float(r["tokens_per_s"]) / int(r["gpus"]) for r in rs]
        a.plot(n, [100 * x / per_gpu[0] for x in per_gpu], "o-", label=label)
        b.plot(n, [float(r["tflops_per_gpu"]) for r in rs], "o-", label=label)
    nodes = sorted({int(r["nodes"]) for r in rows})
    a.set(xlabel="nodes", ylabel="throughput per GPU vs. fewest nodes (%)", xscale="log")
    b.set(xlabel="nodes", ylabel="model TFLOPS per GPU (predicted)", xscale="log")
    for ax in (a, b):
        ax.grid(True, alpha=0.3)
        ax.set_xticks(nodes)
        ax.set_xticklabels([str(x) for x in nodes])
        ax.minorticks_off()
    a.legend(fontsize=8)
    fig.suptitle("mics-plan prediction (a model's estimate, not a measurement)")
    fig.tight_layout()
    fig.savefig(out, dpi=100)


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit("usage: mics-plan-plot.py PLAN.csv OUT.png")
    main(sys.argv[1], sys.argv[2])
