#!/usr/bin/env python3
"""mics-train under the compute model: emulated_train_test.py MPIRUN... -- TRAIN RANKS OUTDIR

Runs the tiny GPT for 8 steps at RANKS ranks (2 emulated nodes' worth with
--ranks-per-node) with --backend emulated at a rate slow enough that the modelled
compute dominates each step (about 0.14 s per step), and checks:
- exit status 0, one step line per step, each saying the loss was not computed;
- the metrics CSV's loss/val_loss/grad_norm cells say "n/a (emulated compute)";
- the step time follows the model: the MFU the run reports (model FLOPs over the
  emulated rate) lies in [0.2, 1.1] as a median over steps 2..8 (above 1 would mean
  kernels took less than their modelled time; far below, that something else dominates);
- the summary says the final loss was not computed.
The bounds are wide on purpose (a loaded machine wakes sleepers late)."""
import csv
import statistics
import subprocess
import sys

sep = sys.argv.index("--")
mpirun, (train, ranks, out) = sys.argv[1:sep], sys.argv[sep + 1:]
model = sys.argv[0].rsplit("/", 3)[0] + "/inputs/models/tiny.cfg"
STEPS = 8
TFLOPS = 1e-5


def fail(msg, text=""):
    print(f"emulated_train_test: FAIL ({ranks} ranks): {msg}")
    if text:
        print(text[-3000:])
    sys.exit(1)


csv_path = f"{out}/emulated_np{ranks}.csv"
cmd = mpirun + ["-np", ranks, train, "--model", model, "--steps", str(STEPS),
                "--global-batch", "8", "--ranks-per-node", "2", "--strategy", "mics",
                "--partition-size", "2", "--backend", "emulated",
                "--emulated-tflops", str(TFLOPS), "--metrics", csv_path]
print(" ".join(cmd))
try:
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=100)
except subprocess.TimeoutExpired:
    fail("timed out after 100 s")
log = run.stdout + run.stderr
print(log[-2000:])
if run.returncode != 0:
    fail(f"exit status {run.returncode}", log)
steps = [l for l in run.stdout.splitlines() if l.startswith("step ")]
if len(steps) != STEPS:
    fail(f"expected {STEPS} step lines, got {len(steps)}", log)
if not all("loss n/a (emulated compute)" in l for l in steps):
    fail("a step line does not say the loss was not computed", log)
if "final loss: not computed (emulated compute)" not in run.stdout:
    fail("the summary does not say the final loss was not computed", log)
if "backend emulated(1e-05 TFLOPS)" not in run.stdout:
    fail("the run banner does not name the emulated backend", log)
rows = list(csv.DictReader(open(csv_path)))
if len(rows) != STEPS:
    fail(f"expected {STEPS} metrics rows, got {len(rows)}")
for r in rows:
    for key in ("loss", "val_loss", "grad_norm"):
        if r[key] != "n/a (emulated compute)":
            fail(f"metrics step {r['step']}: {key} = {r[key]!r}, expected 'n/a (emulated compute)'")
mfu = statistics.median(float(r["mfu"]) for r in rows[1:])
step_ms = statistics.median(float(r["step_ms"]) for r in rows[1:])
print(f"emulated_train_test: {ranks} ranks: median step {step_ms:.1f} ms, MFU {mfu:.3f} of the emulated rate")
if not 0.2 <= mfu <= 1.1:
    fail(f"median MFU {mfu:.3f} outside [0.2, 1.1]: the step time does not follow the compute model")
print("emulated_train_test: PASS")
