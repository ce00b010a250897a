#!/usr/bin/python3
"""predicted_step_ms from mics-plan: plan_match_test.py APP_DIR

mics-scale calls `mics-plan --model M --cluster C --nodes N ... --csv F` once per node
count and takes step_ms from the row whose strategy, partition_size, hierarchical and nodes
match the configuration; the options carry the runs' batch, micro-batch, ranks per node,
model overrides, types and schedule (checked below). Checked against stand-in mics-plan programs: one that writes
such a CSV (values must land in the right rows, unmatched configurations stay empty),
and one that refuses --cluster (every prediction empty, and the note names the reason)."""
import os
import sys
import tempfile

sys.path.insert(0, sys.argv[1])
import report  # noqa: E402
from study import Strategy, Study  # noqa: E402

work = tempfile.mkdtemp(prefix="plan-match-")


def stub(body):
    d = tempfile.mkdtemp(dir=work)
    path = os.path.join(d, "mics-plan")
    with open(path, "w") as f:
        f.write("#!/bin/sh\n" + body)
    os.chmod(path, 0o755)
    return d


def fail(msg):
    print(f"plan_match_test: FAIL: {msg}")
    sys.exit(1)


cluster = os.path.join(work, "cluster.cfg")
open(cluster, "w").write("nodes = 8\n")
study = Study(path="s.cfg", name="s", model="m.cfg", nodes=[2, 4], ranks_per_node=2,
              strategies=[Strategy("zero3"), Strategy("mics", 2), Strategy("mics", 4, True)],
              batch_per_rank=2, cluster=cluster)
writes = stub('''while [ $# -gt 0 ]; do case $1 in --nodes) n=$2; shift;; --csv) out=$2; shift;; esac; shift; done
{ echo "strategy,partition_size,hierarchical,nodes,gpus,step_ms,mem_gib"
  echo "zero3,$((2 * n)),false,$n,$((2 * n)),$((100 * n)).5,1"
  echo "mics,2,false,$n,$((2 * n)),$((10 * n)),1"
  echo "mics,4,false,$n,$((2 * n)),999,1"
  echo "mics,2,false,$n,$((8 * n)),5,1"; } > "$out"
''')
preds, note = report.plan_predictions(study, writes, work)
want = {("zero3", 4, False, 2): 200.5, ("mics", 2, False, 2): 20.0, ("mics", 4, False, 2): 999.0,
        ("zero3", 8, False, 4): 400.5, ("mics", 2, False, 4): 40.0, ("mics", 4, False, 4): 999.0}
if preds != want:
    fail(f"parsed {preds}, expected {want}")
if preds.get(("mics", 4, True, 2)) is not None:
    fail("a hierarchical configuration matched a flat row")
if "mics-plan" not in note:
    fail(f"note does not credit mics-plan: {note}")
refuses = stub('echo "mics-plan: error: unrecognised option \'--cluster\'" >&2; exit 1\n')
preds, note = report.plan_predictions(study, refuses, work)
if preds or "unrecognised option '--cluster'" not in note:
    fail(f"a mics-plan without --cluster gave {preds} / note {note!r}")
study.cluster = ""
preds, note = report.plan_predictions(study, writes, work)
if preds or "no cluster file" not in note:
    fail(f"a study without a cluster file gave {preds} / {note!r}")

# The options mics-plan gets: the study's batch, micro-batch and ranks per node, and the
# model, types and schedule the runs used (train-args, else mics-train's defaults).
study = Study(path="s.cfg", name="s", model="m.cfg", nodes=[2], ranks_per_node=2,
              strategies=[Strategy("ddp")], batch_per_rank=2048, micro_batch=16, cluster=cluster,
              train_args=["--seq", "128", "--compute-dtype", "bf16", "--grad-reduce-dtype=bf16", "--lr", "1e-3"])


def options(args):
    out, i = {}, 0
    while i < len(args):
        out[args[i]] = args[i + 1]
        i += 2
    return out


got = options(report.plan_args(study, 4))
want = {"--model": "m.cfg", "--cluster": cluster, "--nodes": "4", "--ranks-per-node": "2",
        "--micro-batch": "16", "--batch-per-gpu": "2048", "--seq": "128", "--compute-dtype": "bf16",
        "--grad-reduce-dtype": "bf16", "--grad-sync": "two-hop", "--overlap-grad-sync": "true",
        "--prefetch": "true", "--recompute": "false", "--hierarchical-all-reduce": "true"}
if got != want:
    fail(f"plan_args gave {got}, expected {want}")
study.train_args = ["--overlap-grad-sync", "false", "--recompute", "--grad-sync=every-micro-step",
                    "--hierarchical-all-reduce", "false"]
got = options(report.plan_args(study, 2))
if (got["--overlap-grad-sync"], got["--recompute"], got["--grad-sync"], got["--compute-dtype"],
        got["--grad-reduce-dtype"], got["--hierarchical-all-reduce"]) != (
        "false", "true", "every-micro-step", "f32", "f32", "false"):
    fail(f"plan_args did not follow train-args / mics-train's defaults: {got}")
print("plan_match_test: PASS")
