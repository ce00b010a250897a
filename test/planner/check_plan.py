#!/usr/bin/env python3
"""check_plan.py MICS_PLAN SOURCE_DIR WORK_DIR: mics-plan's good runs as a user makes them."""
import csv
import os
import subprocess
import sys

plan, src, work = sys.argv[1:4]
models, clusters = os.path.join(src, "inputs/models"), os.path.join(src, "inputs/clusters")
failures = []


def run(*args):
    p = subprocess.run([plan, *args], capture_output=True, text=True, timeout=100)
    return p.returncode, p.stdout + p.stderr


def check(cond, what):
    print(("ok   " if cond else "FAIL ") + what)
    if not cond:
        failures.append(what)


# 1. The model description mics-plan always printed.
rc, out = run("--model", f"{models}/gpt3-175b.cfg", "--partition-size", "64")
check(rc == 0 and "per rank at p = 64" in out and "FLOPs/token" in out, "model description at p = 64")

# 2. The README's example: one row per strategy, p, hierarchical choice and node count.
plan_csv = os.path.join(work, "plan.csv")
rc, out = run("--model", f"{models}/gpt3-100b.cfg", "--cluster", f"{clusters}/p4d.24xlarge.cfg",
              "--nodes", "16,32,64", "--csv", plan_csv)
check(rc == 0, "gpt3-100b on p4d at 16,32,64 nodes exits 0")
rows = list(csv.DictReader(open(plan_csv))) if os.path.exists(plan_csv) else []
need = ["strategy", "partition_size", "hierarchical", "nodes", "gpus", "step_ms", "tokens_per_s", "tflops_per_gpu",
        "mfu", "memory_gib_per_gpu", "fits", "weak_scaling_efficiency"]
check(rows and all(c in rows[0] for c in need), "CSV has the required columns")
keys = {(r["strategy"], r["partition_size"], r["hierarchical"], r["nodes"]) for r in rows}
check(len(keys) == len(rows), "one row per strategy, partition size, hierarchical choice and node count")
check({r["nodes"] for r in rows} == {"16", "32", "64"}, "rows for every node count")
check({r["strategy"] for r in rows} == {"ddp", "zero2", "zero3", "mics"}, "rows for every strategy")
check(all(float(r["step_ms"]) > 0 and r["fits"] in ("0", "1") for r in rows), "step times positive, fits 0/1")
check(sum(r["recommended"] == "1" for r in rows) >= 1 and "recommendation" in out, "a recommendation")

# 2b. --baseline deepspeed-0.5.6: zero rows say so in the CSV's baseline column, and are slower.
ds_csv = os.path.join(work, "plan-ds.csv")
rc, out = run("--model", f"{models}/gpt3-100b.cfg", "--cluster", f"{clusters}/p4d.24xlarge.cfg",
              "--nodes", "16,64", "--baseline", "deepspeed-0.5.6", "--micro-batch", "2", "--recompute", "true",
              "--csv", ds_csv)
ds = list(csv.DictReader(open(ds_csv))) if os.path.exists(ds_csv) else []
check(rc == 0 and ds and all(r["baseline"] == ("deepspeed-0.5.6" if r["strategy"] in ("zero2", "zero3") else "engine")
                             for r in ds), "--baseline deepspeed-0.5.6 marks the zero2/zero3 rows in the CSV")
check(all(r["baseline"] == "engine" for r in rows), "the default baseline is this engine's")
z = {r["nodes"]: float(r["weak_scaling_efficiency"]) for r in ds if r["strategy"] == "zero3"}
check(z.get("64", 1) < 0.9, "DeepSpeed 0.5.6's ZeRO-3 loses weak-scaling efficiency from 16 to 64 nodes")

# 3. One layout, as the scaling study asks for it.
one_csv = os.path.join(work, "one.csv")
rc, out = run("--model", f"{models}/char-gpt.cfg", "--cluster", f"{clusters}/emulated.cfg", "--nodes", "2,4",
              "--strategy", "mics", "--partition-size", "4", "--hierarchical", "--ranks-per-node", "2",
              "--global-batch", "16", "--micro-batch", "1", "--seq", "32", "--csv", one_csv)
rows = list(csv.DictReader(open(one_csv))) if rc == 0 else []
check(rc == 0 and len(rows) == 2, "one layout at two node counts: two rows")
check(all(r["strategy"] == "mics" and r["partition_size"] == "4" and r["hierarchical"] == "1" for r in rows),
      "the rows are the layout asked for")
check(all(r["micro_batch"] == "1" and r["global_batch"] == "16" for r in rows), "batch as asked")

# 3b. The p4d-achieved scaling study's layouts on its emulated cluster file, with the
# options mics-scale passes (app/mics-scale/report.py, plan_args); hop 2 overlapped or not.
def study_rows(overlap):
    path = os.path.join(work, f"study-{overlap}.csv")
    rc, _ = run("--model", f"{models}/char-gpt.cfg", "--cluster", f"{clusters}/emulated-p4d-achieved-200mbit.cfg",
                "--nodes", "2,4,8", "--ranks-per-node", "2", "--batch-per-gpu", "2048", "--micro-batch", "16",
                "--seq", "128", "--compute-dtype", "bf16", "--grad-reduce-dtype", "bf16", "--recompute", "false",
                "--overlap-grad-sync", overlap, "--csv", path)
    rows = list(csv.DictReader(open(path))) if rc == 0 and os.path.exists(path) else []
    return {(r["strategy"], int(r["partition_size"]), r["hierarchical"] == "1", int(r["nodes"])): r for r in rows}


on, off = study_rows("true"), study_rows("false")
study = [(s, p, h, n) for n in (2, 4, 8)
         for s, p, h in (("ddp", 1, False), ("zero2", 2 * n, False), ("zero3", 2 * n, False), ("mics", 2, False),
                         ("mics" if n > 2 else "zero3", 4, True))]
check(all(k in on for k in study), "every layout of the p4d-achieved study is predicted at 2, 4 and 8 nodes")
check(all(on[k]["accumulation"] == "128" for k in study if k in on), "128 micro-steps of 16 per step")
hop2 = [k for k in study if k[0] in ("ddp", "mics") and k in on and k in off]
check(hop2 and all(float(on[k]["replication_exposed_ms"]) < float(off[k]["replication_exposed_ms"]) and
                   float(on[k]["step_ms"]) <= float(off[k]["step_ms"]) for k in hop2),
      "--overlap-grad-sync true hides part of hop 2 (ddp, mics) and is never slower")

# 3c. ddp on 2 nodes of 2 ranks: hop 2 runs two-level by default, as mics-train does; with
# --hierarchical-all-reduce false one flat ring, whose node links carry 1.5 M against 1 M.
def ddp_repl_ms(two_level):
    path = os.path.join(work, f"ddp-{two_level}.csv")
    rc, out = run("--model", f"{models}/char-gpt.cfg", "--cluster", f"{clusters}/emulated.cfg", "--nodes", "2",
                  "--ranks-per-node", "2", "--strategy", "ddp", "--micro-batch", "1", "--seq", "32",
                  "--hierarchical-all-reduce", two_level, "--csv", path)
    rows = list(csv.DictReader(open(path))) if rc == 0 and os.path.exists(path) else []
    said = ("all-reduces across nodes two-level" if two_level == "true" else "all-reduces one flat ring") in out
    return (float(rows[0]["replication_comm_ms"]) if len(rows) == 1 else None), said


(two, said_two), (flat, said_flat) = ddp_repl_ms("true"), ddp_repl_ms("false")
check(said_two and said_flat, "the header says which all-reduce the rows assume")
check(two is not None and flat is not None and flat > two,
      "--hierarchical-all-reduce false predicts the flat ring's slower hop 2 for ddp across nodes")

# 4. --plot, where Debian's matplotlib is importable.
if subprocess.run(["/usr/bin/python3", "-c", "import matplotlib"], capture_output=True).returncode == 0:
    png = os.path.join(work, "plan.png")
    rc, out = run("--model", f"{models}/gpt2-1.5b.cfg", "--cluster", f"{clusters}/p4de.24xlarge.cfg",
                  "--nodes", "1-4", "--plot", png)
    check(rc == 0 and open(png, "rb").read(8) == b"\x89PNG\r\n\x1a\n", "--plot writes a PNG")
else:
    print("skip --plot (no matplotlib)")

# 5. calibrate: timings made with known links, a training run, the fitted file read back.
bench = os.path.join(work, "bench.csv")
with open(bench, "w") as f:
    f.write("collective,group,algo,group_size,size_bytes,count,type,time_us,algbw_GBps,busbw_GBps,wrong\n")
    for op, factor in (("all_gather", 0.75), ("reduce_scatter", 0.75), ("all_reduce", 1.5)):
        for group, n in (("partition", 4), ("world", 4)):
            for size in (65536, 1048576, 4194304):
                us = 1e6 * (3 * 20e-6 + factor * size / 2e9)
                f.write(f"{op},{group},flat,{n},{size},{size // 4},f32,{us},0,0,0\n")
metrics = os.path.join(work, "train.csv")
with open(metrics, "w") as f:
    f.write("step,step_ms,W,g,p,strategy,hierarchical,grad_sync\n")
    for s in range(1, 6):
        f.write(f"{s},{900 + s},4,2,1,ddp,0,two-hop\n")
fitted = os.path.join(work, "fitted.cfg")
rc, out = run("calibrate", "--cluster", f"{clusters}/emulated.cfg", "--bench", bench, "--train", metrics,
              "--model", f"{models}/char-gpt.cfg", "--global-batch", "8", "--output", fitted)
check(rc == 0 and "error" in out and "measured_ms" in out, "calibrate prints the error per measurement")
rc, out = run("--model", f"{models}/char-gpt.cfg", "--cluster", fitted, "--nodes", "2")
check(rc == 0, "the fitted cluster file is read back by the prediction mode")

sys.exit(1 if failures else 0)
