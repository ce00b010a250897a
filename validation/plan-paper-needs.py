#!/usr/bin/env python3
"""plan-paper-needs.py [BUILD_DIR | MICS_PLAN]: an ANALYSIS, not a prediction. For the two
ZeRO-3 rows of validation/plan-paper.py that the model does not meet (100B GPT, p4d, 16 and
64 nodes, DeepSpeed 0.5.6), it asks what each candidate missing fact would have to be for
the rows to be met, holding everything else at plan-paper.py's assumptions and its one
fitted factor:
  1. how much of the ZeRO-3 step is per-collective latency (latencies set to ~0);
  2. the network ring-step latency (inter_latency_us) that would give row 5's 62 TFLOPS;
  3. the loss of achieved EFA bandwidth per doubling of the nodes a ring spans that would
     give row 4's 72% weak scaling;
  4. the ZeRO-3 rows at micro-batch 2 (the MiCS rows staying at 4);
  5. the BERT ratio (row 6) with latencies ~0.
Nothing here changes the model or the main table (validation/PLANNER.md says which values
are cited and which one is fitted)."""
import importlib.util
import os

here = os.path.dirname(os.path.abspath(__file__))
spec = importlib.util.spec_from_file_location("plan_paper", os.path.join(here, "plan-paper.py"))
pp = importlib.util.module_from_spec(spec)
spec.loader.exec_module(pp)

TINY_US = 1e-6  # the cluster files' latencies must be positive; this is ~0


def variant(name, eff, **keys):
    """A copy of inputs/clusters/NAME.cfg with the fitted efficiency and KEYS replaced."""
    keys = dict(keys, compute_efficiency=eff)
    tag = "-".join(f"{k}{v}" for k, v in sorted(keys.items()))
    path = os.path.join(pp.tmp, f"{name}-{tag}.cfg")
    with open(os.path.join(pp.clusters, name + ".cfg")) as src, open(path, "w") as out:
        for line in src:
            key = line.split("=")[0].strip()
            out.write(f"{key} = {keys[key]}\n" if key in keys else line)
    return path


def zero3(cl, micro=None):
    """(TFLOPS at 16 nodes, TFLOPS at 64 nodes, weak scaling %) of the 100B ZeRO-3 rows."""
    r = pp.rows("gpt3-100b", cl, "16,64", "--strategy", "zero3", micro=micro)
    return (float(r["16"]["hw_tflops_per_gpu"]), float(r["64"]["hw_tflops_per_gpu"]),
            100 * float(r["64"]["weak_scaling_efficiency"]))


def bisect(f, lo, hi, target, rising):
    """The x in [lo, hi] where f(x) = target; f monotone (rising or falling in x)."""
    for _ in range(24):
        mid = (lo + hi) / 2
        if (f(mid) < target) == rising:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2


def show(label, z):
    print(f"| {label} | {z[0]:.1f} | {z[1]:.1f} ({100 * (z[1] / 62 - 1):+.1f}%) | {z[2]:.1f}% ({z[2] - 72:+.1f} points) |")


def main():
    eff = pp.fit_efficiency()
    p4d = lambda **k: variant("p4d.24xlarge", eff, **k)
    print(f"compute_efficiency (fitted to row 1, unchanged): {eff:.4f}\n")
    print("| ZeRO-3, 100B, p4d (analysis) | TFLOPS 16 nodes | TFLOPS 64 nodes (paper 62) | weak scaling (paper 72%) |")
    print("|---|---|---|---|")
    show("the model as cited (main table)", zero3(p4d()))
    no_lat = dict(inter_latency_us=TINY_US, intra_latency_us=TINY_US, base_latency_us=TINY_US)
    show("every collective latency ~0", zero3(p4d(**no_lat)))
    lat = bisect(lambda x: zero3(p4d(inter_latency_us=x))[1], 14, 2000, 62, rising=False)
    show(f"network ring step {lat:.0f} us (cited: 14) for row 5", zero3(p4d(inter_latency_us=lat)))
    per = bisect(lambda x: zero3(p4d(inter_efficiency_per_doubling=x))[2], 0.3, 0.85, 72, rising=True)
    show(f"busbw x{per:.3f} per doubling (cited: 0.85) for row 4", zero3(p4d(inter_efficiency_per_doubling=per)))
    show("ZeRO-3 micro-batch 2 (accumulation 4), MiCS rows at 4", zero3(p4d(), micro=2))
    p3dn = variant("p3dn.24xlarge", eff)
    print("\nrow 6, MiCS / best fitting ZeRO by nodes: as cited " +
          ", ".join(f"{n}: {r:.2f}x" for n, r in pp.bert_rows(p3dn).items()) + "; every latency ~0 " +
          ", ".join(f"{n}: {r:.2f}x" for n, r in pp.bert_rows(variant("p3dn.24xlarge", eff, **no_lat)).items()))


if __name__ == "__main__":
    main()
