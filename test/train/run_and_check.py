#!/usr/bin/env python3
"""run_and_check.py [checks] -- COMMAND...

Runs COMMAND (mics-train under mpirun) as a user would and checks what it leaves behind:
exit code 0 within the time limit, the lines it prints, and the --metrics CSV (header,
one row per step, the layout columns, a falling loss). Prints one line per failed check
and exits 1 if any failed, so that ctest shows why.
"""
import argparse
import csv
import os
import re
import subprocess
import sys


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--timeout", type=float, default=120)
    ap.add_argument("--stdout-regex", action="append", default=[],
                    help="a regex that must match the output (re.S: '.' spans lines)")
    ap.add_argument("--stdout-count", action="append", default=[],
                    help="REGEX=N: the regex must match exactly N lines")
    ap.add_argument("--csv", help="the --metrics file; removed before the run")
    ap.add_argument("--jsonl", help="the --metrics-jsonl file; removed before the run")
    ap.add_argument("--steps", type=int, help="rows expected: steps 1..N in order")
    ap.add_argument("--columns", default="", help="comma-separated columns the header must have")
    ap.add_argument("--layout", default="", help="col=value,...: every row must have these values")
    ap.add_argument("--loss-drop", type=float,
                    help="last row's loss must be below the first row's by at least this")
    ap.add_argument("--final-val-loss", action="store_true",
                    help="the last row must carry a finite val_loss")
    ap.add_argument("command", nargs=argparse.REMAINDER)
    a = ap.parse_args()
    cmd = a.command[1:] if a.command[:1] == ["--"] else a.command
    if not cmd:
        ap.error("no command after --")

    for path in (a.csv, a.jsonl):
        if path and os.path.exists(path):
            os.remove(path)

    failures = []
    try:
        proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              timeout=a.timeout, text=True, errors="replace")
        out, rc = proc.stdout, proc.returncode
    except subprocess.TimeoutExpired as e:
        out = e.stdout.decode() if isinstance(e.stdout, bytes) else (e.stdout or "")
        print(out)
        print(f"run_and_check: FAILED: command hung (killed after {a.timeout:g} s)")
        return 1
    print(out, end="")

    if rc != 0:
        failures.append(f"exit code {rc}, expected 0")
    for rx in a.stdout_regex:
        if not re.search(rx, out, re.S):
            failures.append(f"no output matches /{rx}/")
    for spec in a.stdout_count:
        rx, n = spec.rsplit("=", 1)
        got = sum(1 for line in out.splitlines() if re.search(rx, line))
        if got != int(n):
            failures.append(f"/{rx}/ matches {got} lines, expected {n}")

    if a.csv:
        failures += check_csv(a)
    if a.jsonl and a.steps is not None:
        try:
            with open(a.jsonl) as f:
                lines = [line for line in f if line.strip()]
            if len(lines) != a.steps:
                failures.append(f"{a.jsonl}: {len(lines)} lines, expected {a.steps}")
        except OSError as e:
            failures.append(f"cannot read {a.jsonl}: {e}")

    for f in failures:
        print(f"run_and_check: FAILED: {f}")
    if not failures:
        print("run_and_check: ok")
    return 1 if failures else 0


def check_csv(a):
    failures = []
    try:
        with open(a.csv, newline="") as f:
            rows = list(csv.DictReader(f))
            header = rows[0].keys() if rows else []
    except OSError as e:
        return [f"cannot read {a.csv}: {e}"]
    if not rows:
        return [f"{a.csv}: no rows"]
    need = [c for c in a.columns.split(",") if c]
    missing = [c for c in need if c not in header]
    if missing:
        failures.append(f"{a.csv}: header lacks {', '.join(missing)} (has {', '.join(header)})")
    if a.steps is not None:
        steps = [r.get("step") for r in rows]
        want = [str(i) for i in range(1, a.steps + 1)]
        if steps != want:
            failures.append(f"{a.csv}: steps {steps}, expected 1..{a.steps} one row each")
    for pair in [p for p in a.layout.split(",") if p]:
        col, val = pair.split("=", 1)
        bad = sorted({r.get(col) for r in rows if r.get(col) != val}, key=str)
        if bad:
            failures.append(f"{a.csv}: column {col} is {bad}, expected {val}")
    try:
        losses = [float(r["loss"]) for r in rows]
        if any(x != x for x in losses):
            failures.append(f"{a.csv}: a loss is NaN")
        if a.loss_drop is not None and not losses[-1] < losses[0] - a.loss_drop:
            failures.append(f"{a.csv}: loss {losses[0]:.4f} -> {losses[-1]:.4f} "
                            f"did not fall by {a.loss_drop}")
        print(f"run_and_check: {len(rows)} rows, loss {losses[0]:.4f} -> {losses[-1]:.4f}")
    except (KeyError, ValueError) as e:
        failures.append(f"{a.csv}: unreadable loss column ({e})")
    if a.final_val_loss:
        v = rows[-1].get("val_loss", "")
        try:
            ok = float(v) == float(v)
        except ValueError:
            ok = False
        if not ok:
            failures.append(f"{a.csv}: last row has no val_loss ('{v}')")
    return failures


if __name__ == "__main__":
    sys.exit(main())
