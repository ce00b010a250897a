#!/usr/bin/env python3
"""plan-paper.py [--check PLANNER.md] [BUILD_DIR | MICS_PLAN]: mics-plan's predictions against the MiCS
paper's figures (issue 12). One compute-efficiency factor is fitted, to the 175B / 16 p4de
figure; every other row is a prediction with that factor and the clusters' cited numbers
(inputs/clusters/*.cfg). ZeRO rows replay DeepSpeed 0.5.6's schedule (the paper's
baseline) unless BASELINE=engine.
Environment: BATCH_PER_GPU (8), MICRO (4), RECOMPUTE (true), BASELINE (deepspeed-0.5.6),
BERT_BATCH_PER_GPU (BATCH_PER_GPU: the BERT row only).
Prints a markdown table (validation/PLANNER.md holds a copy). With --check FILE it
prints nothing but compares each row's goal status (met / not met) and prediction with
the table in FILE, and exits 1 when they differ: the documented table cannot rot."""
import csv
import os
import re
import subprocess
import sys
import tempfile

args = sys.argv[1:]
check_file = None
if args[:1] == ["--check"]:
    check_file, args = args[1], args[2:]
root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
build = args[0] if args else os.path.join(root, "build")
plan = build if os.path.isfile(build) else os.path.join(build, "bin", "mics-plan")
models, clusters = os.path.join(root, "inputs/models"), os.path.join(root, "inputs/clusters")
tmp = tempfile.mkdtemp(prefix="plan-paper-")
# Assumptions shared by every row (the paper does not state all of them):
BATCH_PER_GPU = int(os.environ.get("BATCH_PER_GPU", "8"))
MICRO = int(os.environ.get("MICRO", "4"))
RECOMPUTE = os.environ.get("RECOMPUTE", "true")
BASELINE = os.environ.get("BASELINE", "deepspeed-0.5.6")
BERT_BATCH_PER_GPU = int(os.environ.get("BERT_BATCH_PER_GPU", str(BATCH_PER_GPU)))
WEAK_POINTS, TFLOPS_SHARE = 5.0, 0.15  # the goals


def cluster(name, eff):
    path = os.path.join(tmp, f"{name}-{eff:.6f}.cfg")
    with open(os.path.join(clusters, name + ".cfg")) as src, open(path, "w") as out:
        for line in src:
            out.write(f"compute_efficiency = {eff}\n" if line.startswith("compute_efficiency") else line)
    return path


def rows(model, cl, nodes, *layout, micro=None, batch=None):
    out = os.path.join(tmp, "rows.csv")
    if os.path.exists(out):
        os.remove(out)
    subprocess.run([plan, "--model", os.path.join(models, model + ".cfg"), "--cluster", cl, "--nodes", nodes,
                    "--batch-per-gpu", str(batch or BATCH_PER_GPU), "--micro-batch", str(micro or MICRO),
                    "--recompute", RECOMPUTE, "--baseline", BASELINE, *layout, "--csv", out],
                   capture_output=True, text=True, timeout=300)
    return {r["nodes"]: r for r in csv.DictReader(open(out))}


MICS128 = ("--strategy", "mics", "--partition-size", "128", "--hierarchical")


def mics175(eff):
    return rows("gpt3-175b", cluster("p4de.24xlarge", eff), "16", *MICS128)["16"]


def fit_efficiency():
    """The one fitted factor: 175B, seq 2048, 16 p4de, MiCS: 169 TFLOPS per GPU."""
    lo, hi = 0.05, 1.0
    for _ in range(30):
        mid = (lo + hi) / 2
        if float(mics175(mid)["hw_tflops_per_gpu"]) < 169:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2


def status(ok):
    return "met" if ok else "not met"


def tflops_row(name, paper, r, layout, lower_bound=False):
    pred = float(r["hw_tflops_per_gpu"])
    diff = pred / paper - 1
    ok = abs(diff) <= TFLOPS_SHARE or (lower_bound and pred >= paper)
    return [name, (">" if lower_bound else "") + f"{paper:g}", f"{pred:.1f} (model {float(r['tflops_per_gpu']):.1f})",
            f"{100 * diff:+.1f}%", status(ok), layout]


def weak_row(name, paper, r, layout):
    pred = 100 * float(r["weak_scaling_efficiency"])
    return [name, f"{paper:g}%", f"{pred:.1f}%", f"{pred - paper:+.1f} points",
            status(abs(pred - paper) <= WEAK_POINTS), layout]


def bert_rows(p3dn):
    """MiCS p = 8 against the better fitting one of ZeRO-2 and ZeRO-3 at 2 to 16 p3dn nodes."""
    ratios = {}
    for n in ("2", "4", "8", "16"):
        m = rows("bert-10b", p3dn, n, "--strategy", "mics", "--partition-size", "8", batch=BERT_BATCH_PER_GPU)[n]
        # The better ZeRO that fits (ZeRO-2's replicated fp16 parameters do not at small
        # node counts); both when neither fits.
        zs = [rows("bert-10b", p3dn, n, "--strategy", s, batch=BERT_BATCH_PER_GPU)[n] for s in ("zero2", "zero3")]
        z = max(float(r["tokens_per_s"]) for r in ([r for r in zs if r["fits"] == "1"] or zs))
        ratios[n] = float(m["tokens_per_s"]) / z
    return ratios


def table():
    eff = fit_efficiency()
    fit = mics175(eff)
    p4d, p3dn = cluster("p4d.24xlarge", eff), cluster("p3dn.24xlarge", eff)
    m100 = rows("gpt3-100b", p4d, "16,64", *MICS128)
    z100 = rows("gpt3-100b", p4d, "16,64", "--strategy", "zero3")
    zb = f"zero3 flat (p = W), {BASELINE}"
    out = [["175B, seq 2048, 16 p4de: MiCS TFLOPS/GPU (**fitted**)", "169",
            f"{float(fit['hw_tflops_per_gpu']):.1f} (model {float(fit['tflops_per_gpu']):.1f})", "fitted", "fitted",
            "mics p=128 hier"],
           tflops_row("100B, 64 p4d: MiCS TFLOPS/GPU", 170, m100["64"], "mics p=128 hier", lower_bound=True),
           weak_row("100B, p4d, 128 -> 512 GPUs: MiCS weak scaling", 99.4, m100["64"], "mics p=128 hier"),
           weak_row("100B, p4d, 128 -> 512 GPUs: ZeRO-3 weak scaling", 72, z100["64"], zb),
           tflops_row("100B, 64 p4d: ZeRO-3 TFLOPS/GPU", 62, z100["64"], zb)]
    ratios = bert_rows(p3dn)
    best = max(ratios, key=ratios.get)
    out.append(["BERT-10B on p3dn: MiCS / best of ZeRO-2, ZeRO-3 throughput", "up to 2.82x",
                f"{ratios[best]:.2f}x at {best} nodes (" + ", ".join(f"{n}: {ratios[n]:.2f}x" for n in ratios) + ")",
                f"{100 * (ratios[best] / 2.82 - 1):+.1f}%", status(abs(ratios[best] / 2.82 - 1) <= TFLOPS_SHARE),
                f"mics p=8 (one node) vs zero2/zero3 {BASELINE}, seq 512, batch {BERT_BATCH_PER_GPU}/GPU"])
    extra = (f"ZeRO-3 at 64 nodes: exposed communication {float(z100['64']['partition_exposed_ms']) / 1e3:.1f} s of a "
             f"{float(z100['64']['step_ms']) / 1e3:.1f} s step; at 16 nodes {float(z100['16']['hw_tflops_per_gpu']):.1f} "
             f"TFLOPS/GPU. MiCS p=128 at 64 nodes: {float(m100['64']['partition_exposed_ms']) / 1e3:.1f} s exposed of "
             f"{float(m100['64']['step_ms']) / 1e3:.1f} s.")
    return eff, out, extra


def check(path, out):
    """Each documented row: same goal status, prediction within 2% (or 1 point)."""
    doc = {}
    for line in open(path):
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 7 and cells[0].isdigit() and cells[0] not in doc:
            doc[cells[0]] = cells
    bad = []
    for i, row in enumerate(out, 1):
        d = doc.get(str(i))
        if d is None:
            bad.append(f"row {i} ({row[0]}) is not in {path}")
            continue
        if d[5] != row[4]:
            bad.append(f"row {i}: {path} says '{d[5]}', the model now gives '{row[4]}' ({row[2]})")
        num = lambda s: float(re.match(r"[-+]?[0-9.]+", s).group(0))
        a, b = num(d[3]), num(row[2])
        if abs(a - b) > max(0.02 * abs(a), 1.0 if "%" in row[2] else 0.0):
            bad.append(f"row {i}: {path} says {d[3]}, the model now gives {row[2]}")
    for b in bad:
        print("FAIL " + b)
    print(f"{len(out) - len(bad)} of {len(out)} rows as documented" if not bad else "the table in the doc is stale")
    return not bad


def main():
    eff, out, extra = table()
    if check_file:
        sys.exit(0 if check(check_file, out) else 1)
    common = (f"batch {BATCH_PER_GPU}/GPU, micro-batch {MICRO}, recomputation {'on' if RECOMPUTE == 'true' else 'off'}, "
              f"bf16 gradient reduce (engine)")
    print(f"compute_efficiency fitted to row 1: {eff:.4f} of dense peak (FLOPs with recomputation); {common}\n")
    print("| # | figure (paper) | paper | prediction | difference | goal | layout |")
    print("|---|---|---|---|---|---|---|")
    for i, r in enumerate(out, 1):
        print(f"| {i} | " + " | ".join(r) + " |")
    print("\n" + extra)


if __name__ == "__main__":
    main()
