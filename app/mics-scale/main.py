"""mics-scale: run a scaling study and report it (see the README's "Scaling studies")."""
import argparse
import datetime
import os
import signal
import sys
import time

import report
import runner
from study import StudyError, load

USAGE = """mics-scale run STUDY --out DIR [--target emulated|slurm|hostfile] [--hostfile FILE]
                 [--retry-failed]

Runs every configuration of STUDY (a `key = value` file; see inputs/studies/) with
mics-train, interleaving strategies, and writes DIR/report.csv, DIR/report.md and PNG
plots. Re-running with the same --out skips the runs already finished (--retry-failed
runs the failed ones again). Targets: emulated (this machine: network namespaces with
shaped links, scripts/emu-cluster.sh; needs root), slurm (job steps inside the current
allocation; outside one, mics-scale asks salloc for one), hostfile (mpirun over the
first N hosts of --hostfile)."""


def parse_args(argv):
    ap = argparse.ArgumentParser(prog="mics-scale", usage=USAGE, add_help=True)
    ap.add_argument("command", choices=["run"])
    ap.add_argument("study")
    ap.add_argument("--out", required=True)
    ap.add_argument("--target", default="emulated", choices=["emulated", "slurm", "hostfile"])
    ap.add_argument("--hostfile", default="")
    ap.add_argument("--retry-failed", action="store_true")
    return ap.parse_args(argv)


def make_target(args, study, source_dir):
    if args.target == "emulated":
        return runner.EmulatedTarget(source_dir, study)
    if args.target == "slurm":
        return runner.SlurmTarget(study)
    return runner.HostfileTarget(args.hostfile, study)


def in_salloc(args, study):
    """Outside an allocation, --target slurm re-runs this command under salloc (one
    allocation for the whole study, each run a job step inside it)."""
    cmd = ["salloc", "-N", str(max(study.nodes)), f"--ntasks-per-node={study.ranks_per_node}",
           "--job-name=mics-scale"] + [sys.executable, os.path.abspath(sys.argv[0])] + sys.argv[1:]
    print("mics-scale: asking Slurm for an allocation: " + " ".join(cmd[:4]), flush=True)
    os.execvp("salloc", cmd)


def prepare_out(out, study):
    os.makedirs(out, exist_ok=True)
    saved = os.path.join(out, "study.cfg")
    if os.path.exists(saved):
        with open(saved) as f:
            if f.read() != study.text:
                raise StudyError(f"--out {out} holds the results of a different study "
                                 f"({saved}); choose another --out")
    else:
        with open(saved, "w") as f:
            f.write(study.text)


def duration(seconds):
    s = int(round(seconds))
    return f"{s}s" if s < 60 else f"{s // 60}m{s % 60:02d}s" if s < 3600 else f"{s // 3600}h{s % 3600 // 60:02d}m"


def run_all(runs, target, bin_dir, retry_failed):
    todo = []
    for r in runs:
        s = r.status()
        if s is None or (retry_failed and s["state"] != "ok"):
            todo.append(r)
    print(f"mics-scale: {len(runs)} runs, {len(runs) - len(todo)} already finished, "
          f"{len(todo)} to run on target {target.name}", flush=True)
    t0 = time.time()
    for i, r in enumerate(todo, 1):
        s = runner.execute(r, target, bin_dir)
        done = time.time() - t0
        eta = done / i * (len(todo) - i)
        what = f"{s['state']}"
        if s["state"] == "ok" and r.steps:
            ms = runner.summarise(r)["step_ms"]
            what += f", {ms:.1f} ms/step" if ms is not None else ""
        elif s["state"] != "ok":
            what += f" (exit {s['rc']}): {s['last_line']}"
        print(f"mics-scale: [{i}/{len(todo)}] {r.describe()}: {what} ({s['wall_s']:.1f} s, "
              f"load {s['load']:.1f}) | ETA {duration(eta)}", flush=True)


def print_version(bin_dir):
    """The same version lines as the C++ tools (they come from mics-train's build)."""
    import subprocess
    out = subprocess.run([os.path.join(bin_dir, "mics-train"), "--version"], capture_output=True,
                         text=True, check=False).stdout
    print(out.replace("mics-train", "mics-scale", 1), end="")


def main(source_dir, bin_dir, argv):
    if "--version" in argv:
        print_version(bin_dir)
        return 0
    args = parse_args(argv)
    try:
        study = load(args.study, source_dir)
        if args.target == "slurm" and "SLURM_JOB_ID" not in os.environ:
            in_salloc(args, study)
        target = make_target(args, study, source_dir)
        prepare_out(args.out, study)
    except StudyError as e:
        print(f"mics-scale: error: {e}", file=sys.stderr)
        return 2
    started = f"{datetime.datetime.utcnow():%Y-%m-%d %H:%M}"
    load_start = os.getloadavg()[0]
    runs = runner.schedule(study, args.out, target.baselines)
    # TERM (a batch system's time limit, kill) stops the current run cleanly like Ctrl-C;
    # INT is restored in case a background launch left it ignored.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        run_all(runs, target, bin_dir, args.retry_failed)
    except KeyboardInterrupt:
        print("mics-scale: interrupted; finished runs are kept, run again to continue", file=sys.stderr)
        return 130
    rows, plan_note = report.aggregate(study, runs, bin_dir, args.out)
    report.write_csv(rows, os.path.join(args.out, "report.csv"))
    pngs = report.plot(rows, args.out)
    notes = [plan_note]
    if not target.baselines:
        notes.append(f"wire bytes: no interface counters on target {target.name}; columns left empty")
    report.write_markdown(study, target, rows, runs, notes, os.path.join(args.out, "report.md"),
                          load_start, started)
    failed = sum(1 for r in rows if r["status"] != "ok")
    print(f"mics-scale: wrote {args.out}/report.csv, report.md, {', '.join(pngs)}"
          + (f"; {failed} configuration(s) with failed runs" if failed else ""), flush=True)
    return 1 if failed else 0
