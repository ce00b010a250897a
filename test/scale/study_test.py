#!/usr/bin/python3
"""mics-scale end to end: study_test.py MICS_SCALE STUDY OUTDIR [--target slurm]

Runs STUDY (inputs/studies/ci-emulated.cfg: 2 nodes of 2 ranks, zero3, mics p=2 and
mics p=4 hierarchical, real compute) and checks DIR/report.csv: one row per
configuration, every column the issue lists present, the measured ones numeric; final
losses equal across strategies (the engine's equivalence, to 1e-5 relative); the PNG
plots valid images; report.md written; on the emulated target the wire-byte columns
numeric and no namespace of ours left in `ip netns list`. Then runs the same command
again: every run must be skipped as finished and the report rewritten."""
import csv
import glob
import os
import re
import shutil
import struct
import subprocess
import sys

scale, study, out = sys.argv[1:4]
extra = sys.argv[4:]
target = extra[1] if extra[:1] == ["--target"] else "emulated"


def fail(msg, text=""):
    print(f"study_test: FAIL ({target}): {msg}")
    if text:
        print(text[-4000:])
    sys.exit(1)


def run():
    cmd = [scale, "run", study, "--out", out] + extra
    print(" ".join(cmd), flush=True)
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=240)
    except subprocess.TimeoutExpired:
        fail("mics-scale did not finish within 240 s")
    print(r.stdout[-3000:], r.stderr[-2000:], flush=True)
    if r.returncode != 0:
        fail(f"mics-scale exited with {r.returncode}", r.stdout + r.stderr)
    return r.stdout


def png_size(path):
    with open(path, "rb") as f:
        head = f.read(24)
    if head[:8] != b"\x89PNG\r\n\x1a\n" or head[12:16] != b"IHDR":
        fail(f"{path} is not a PNG file")
    return struct.unpack(">II", head[16:24])


def leftover_namespaces():
    """Our namespaces whose owning emu-cluster.sh is gone (live ones belong to runs of
    other users of the machine)."""
    names = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    left = []
    for ns in re.findall(r"^(micsemu(\d+)-\S+)", names, re.M):
        if not os.path.exists(f"/proc/{ns[1]}"):
            left.append(ns[0])
    return left


shutil.rmtree(out, ignore_errors=True)
log = run()
rows = list(csv.DictReader(open(os.path.join(out, "report.csv"))))
if len(rows) != 3:
    fail(f"expected 3 configurations in report.csv, got {len(rows)}")
numeric = ["nodes", "ranks", "ranks_per_node", "partition_size", "repeats", "step_ms_median",
           "step_ms_min", "step_ms_max", "tokens_per_s", "tokens_per_s_per_rank",
           "tflops_per_rank", "weak_scaling_efficiency", "speedup_vs_zero3", "exposed_comm_ms",
           "engine_world_bytes_step", "engine_partition_bytes_step",
           "engine_replication_bytes_step", "final_loss"]
text = ["strategy", "hierarchical", "link", "compute"]
present_only = ["predicted_step_ms", "engine_inter_bytes_step", "engine_intra_bytes_step"]
if target == "emulated":
    numeric += ["wire_tx_bytes_per_node_step", "wire_rx_bytes_busiest_node_step",
                "predicted_wire_bytes_per_node_step"]
else:
    present_only += ["wire_tx_bytes_per_node_step", "wire_rx_bytes_busiest_node_step"]
for col in numeric + text + present_only:
    if col not in rows[0]:
        fail(f"report.csv has no column {col}")
for r in rows:
    if r["status"] != "ok":
        fail(f"configuration {r['strategy']} p={r['partition_size']} failed: {r['last_error']}")
    for col in numeric:
        try:
            float(r[col])
        except ValueError:
            fail(f"{r['strategy']} p={r['partition_size']}: {col} = {r[col]!r} is not a number")
    for col in text:
        if not r[col]:
            fail(f"{col} is empty")
    if target == "emulated" and float(r["wire_tx_bytes_per_node_step"]) <= 0:
        fail(f"{r['strategy']}: no bytes crossed the link")
for log_path in glob.glob(os.path.join(out, "runs", "*", "rep0", "log.txt")):
    if "on 4 ranks (2 nodes of 2)" not in open(log_path).read():
        fail(f"{log_path}: mics-train did not run 4 ranks on 2 nodes")
hier = [r for r in rows if r["hierarchical"] == "true"]
if not hier or float(hier[0]["engine_inter_bytes_step"] or 0) <= 0:
    fail("the hierarchical configuration moved no bytes through its inter-node group")
losses = [float(r["final_loss"]) for r in rows]
if max(losses) - min(losses) > 1e-5 * abs(losses[0]):
    fail(f"final losses differ across strategies: {losses}")
for png in ("efficiency.png", "throughput.png") + (("wire_bytes.png",) if target == "emulated" else ()):
    w, h = png_size(os.path.join(out, png))
    if w < 100 or h < 100:
        fail(f"{png} is only {w}x{h}")
md = open(os.path.join(out, "report.md")).read()
if "| nodes |" not in md or "load average" not in md:
    fail("report.md lacks the table or the load average")
if target == "emulated" and leftover_namespaces():
    fail(f"namespaces left behind: {leftover_namespaces()}")

again = run()
if not re.search(r"mics-scale: (\d+) runs, \1 already finished, 0 to run", again):
    fail("a second run with the same --out did not skip every finished run", again)
if not os.path.exists(os.path.join(out, "report.csv")):
    fail("the second run did not rewrite the report")
print(f"study_test: final losses {losses}")
print(f"study_test: PASS ({target})")
