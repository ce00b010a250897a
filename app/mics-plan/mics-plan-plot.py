#!/usr/bin/env python3
"""mics-plan-plot.py PLAN.csv OUT.png: weak-scaling efficiency and TFLOPS per GPU against
nodes, one line per strategy (for each, the partition size and hierarchical choice that
is fastest at the largest node count among the layouts that fit). Run by mics-plan --plot."""
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
    best = {}
    for k, rs in lines.items():
        top = max(int(r["nodes"]) for r in rs)
        speed = max(float(r["tokens_per_s"]) for r in rs if int(r["nodes"]) == top)
        s = k[0]
        if s not in best or (top, speed) > best[s][0]:
            best[s] = ((top, speed), k)
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 4))
    for s, (_, k) in sorted(best.items()):
        rs = sorted(lines[k], key=lambda r: int(r["nodes"]))
        label = s + (" p=%s" % k[1] if k[1] else "") + (" hier" if k[2] == "1" else "")
        n = [int(r["nodes"]) for r in rs]
        a.plot(n, [100 * float(r["weak_scaling_efficiency"]) for r in rs], "o-", label=label)
        b.plot(n, [float(r["tflops_per_gpu"]) for r in rs], "o-", label=label)
    a.set(xlabel="nodes", ylabel="weak-scaling efficiency (%)", xscale="log")
    b.set(xlabel="nodes", ylabel="TFLOPS per GPU (predicted)", xscale="log")
    for ax in (a, b):
        ax.grid(True, alpha=0.3)
    a.legend(fontsize=8)
    fig.suptitle("mics-plan prediction (a model's estimate, not a measurement)")
    fig.tight_layout()
    fig.savefig(out, dpi=100)


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit("usage: mics-plan-plot.py PLAN.csv OUT.png")
    main(sys.argv[1], sys.argv[2])
