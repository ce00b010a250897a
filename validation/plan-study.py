#!/usr/bin/env python3
"""plan-study.py STUDY REPORT_CSV [BUILD_DIR]: mics-plan's predictions beside a scaling
study's measured step times.

STUDY is the study file the runs came from (inputs/studies/*.cfg, with a `cluster` key),
REPORT_CSV the `report.csv` that `mics-scale run` wrote for it. The predictions come
from mics-scale's own code (app/mics-scale/report.py, plan_predictions: the options it
passes to mics-plan are the study's batch, micro-batch, ranks per node, model overrides,
types and schedule), so they are what a report's `predicted_step_ms` column would hold.
Prints a markdown table (layout, nodes, measured, predicted, predicted / measured) and
how many rows are within 25% of the measurement."""
import csv
import os
import sys
import tempfile

root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(root, "app", "mics-scale"))
import report  # noqa: E402
from study import load  # noqa: E402

WITHIN = 0.25


def label(r):
    if r["strategy"] != "mics":
        return r["strategy"]
    return f"mics p={r['partition_size']}" + (" hier" if r["hierarchical"] == "true" else "")


def main(argv):
    if len(argv) < 2:
        sys.exit(__doc__)
    study = load(argv[0], root)
    if not study.cluster:
        sys.exit(f"plan-study.py: {argv[0]} names no cluster file")
    build = argv[2] if len(argv) > 2 else os.path.join(root, "build")
    preds, note = report.plan_predictions(study, os.path.join(build, "bin"), tempfile.mkdtemp(prefix="plan-study-"))
    rows = list(csv.DictReader(open(argv[1])))
    out = [f"| layout | nodes | measured ms (median) | predicted ms | predicted / measured |", "|---|---|---|---|---|"]
    within = total = 0
    for r in rows:
        p, n, w = int(r["partition_size"]), int(r["nodes"]), int(r["ranks"])
        hier = r["hierarchical"] == "true"
        pred = preds.get((r["strategy"], p, hier, n))
        if pred is None and r["strategy"] == "mics" and p == w:
            pred = preds.get(("zero3", p, hier, n))  # mics over the whole world is zero3
        meas = float(r["step_ms_median"]) if r.get("step_ms_median") else None
        ratio = pred / meas if pred and meas else None
        if ratio is not None:
            total += 1
            within += abs(ratio - 1) <= WITHIN
        out.append(f"| {label(r)} | {n} | {meas:.0f} | " if meas else f"| {label(r)} | {n} | (no run) | ")
        out[-1] += (f"{pred:.0f} | " if pred else "(none) | ") + (f"{ratio:.2f} |" if ratio else " |")
    print("\n".join(out))
    print(f"\n{within} of {total} rows within {WITHIN:.0%} of the measurement; {note}")


if __name__ == "__main__":
    main(sys.argv[1:])
