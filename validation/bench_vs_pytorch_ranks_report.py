"""Figures of validation/bench-vs-pytorch-ranks.sh (standard library only: runs outside
the PyTorch venv).

  median STEPS.csv WARMUP     one run's step times after WARMUP steps: median,min,max,n,
                              exposed (mics's --metrics columns step_ms and
                              exposed_comm_ms, or the worker's ms and nothing)
  summary RUNS.csv OUT.csv RATE
                              per pair: the median over rounds of each side's run medians
                              [min-max], the ratio torch / mics of those medians and of
                              each round's own pair, the load averages seen; a markdown
                              table on stdout, the same figures in OUT.csv
"""
import csv
import statistics
import sys

PAIRS = {
    "ddp": ("mics ddp", "PyTorch DDP"),
    "ddpflat": ("mics ddp (flat ring all-reduce)", "PyTorch DDP"),
    "zero3": ("mics zero3", "FSDP2 fully_shard (1-D mesh of 4)"),
    "mics2": ("mics p=2", "FSDP2 hybrid (2 x 2 mesh)"),
}


def run_median(path, warmup):
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    col = "step_ms" if rows and "step_ms" in rows[0] else "ms"
    timed = [r for r in rows if int(r["step"]) > warmup]
    if not timed:
        raise SystemExit(f"{path}: no steps after the {warmup} warm-up steps")
    ms = [float(r[col]) for r in timed]
    # mics also says how much of a step waited on communication; PyTorch does not.
    exposed = (f"{statistics.median(float(r['exposed_comm_ms']) for r in timed):.1f}"
               if "exposed_comm_ms" in timed[0] else "")
    print(f"{statistics.median(ms):.1f},{min(ms):.1f},{max(ms):.1f},{len(ms)},{exposed}")


def spread(values, fmt="{:.0f}"):
    return (fmt.format(statistics.median(values)) + " [" + fmt.format(min(values)) + "-" +
            fmt.format(max(values)) + "]")


def summary(runs_path, out_path, rate):
    with open(runs_path, newline="") as f:
        runs = list(csv.DictReader(f))
    label = runs[0]["label"] if runs else "?"
    order = [p for p in PAIRS if any(r["pair"] == p for r in runs)]
    lines = [f"Links between the 2 nodes: {rate} (the limit); condition: {label}.", "",
             "| pair | mics ms | mics exposed comm ms | torch ms | torch / mics (of medians) | "
             "per round | load (1 min) | parameters mics / torch |",
             "|---|---|---|---|---:|---|---|---|"]
    rows = []
    for pair in order:
        side = {s: [r for r in runs if r["pair"] == pair and r["side"] == s]
                for s in ("mics", "torch")}
        med = {s: [float(r["median_ms"]) for r in side[s]] for s in side}
        if not med["mics"] or not med["torch"]:
            if med["mics"]:  # a mics-only run (SIDES=mics): its figures alone
                exposed = [float(r["exposed_ms"]) for r in side["mics"]]
                loads = [float(r[k]) for r in side["mics"] for k in ("load_start", "load_end")]
                lines.append(f"| {PAIRS[pair][0]} | {spread(med['mics'])} | {spread(exposed)} | - | - | - | "
                             f"{min(loads):.1f}-{max(loads):.1f} | - |")
            continue
        by_round = {s: {r["round"]: float(r["median_ms"]) for r in side[s]} for s in side}
        paired = [by_round["torch"][k] / by_round["mics"][k]
                  for k in by_round["mics"] if k in by_round["torch"]]
        ratio = statistics.median(med["torch"]) / statistics.median(med["mics"])
        exposed = [float(r["exposed_ms"]) for r in side["mics"]]
        loads = [float(r[k]) for s in side for r in side[s] for k in ("load_start", "load_end")]
        params = {s: sorted({r["parameters"] for r in side[s]}) for s in side}
        same = "" if params["mics"] == params["torch"] else " (DIFFER)"
        lines.append(
            f"| {PAIRS[pair][0]} vs {PAIRS[pair][1]} | {spread(med['mics'])} | "
            f"{spread(exposed)} | {spread(med['torch'])} | {ratio:.2f} | "
            f"{spread(paired, '{:.2f}')} | "
            f"{min(loads):.1f}-{max(loads):.1f} | {'/'.join(params['mics'])} / "
            f"{'/'.join(params['torch'])}{same} |")
        rows.append([label, rate, pair, statistics.median(med["mics"]), min(med["mics"]),
                     max(med["mics"]), statistics.median(exposed),
                     statistics.median(med["torch"]), min(med["torch"]), max(med["torch"]),
                     f"{ratio:.3f}", f"{min(paired):.3f}", f"{max(paired):.3f}",
                     min(loads), max(loads), len(paired)])
    with open(out_path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["label", "rate", "pair", "mics_ms", "mics_min", "mics_max",
                    "mics_exposed_comm_ms", "torch_ms",
                    "torch_min", "torch_max", "torch_over_mics", "round_ratio_min",
                    "round_ratio_max", "load_min", "load_max", "rounds"])
        w.writerows(rows)
    print("\n".join(lines))


def main():
    if len(sys.argv) == 4 and sys.argv[1] == "median":
        run_median(sys.argv[2], int(sys.argv[3]))
    elif len(sys.argv) == 5 and sys.argv[1] == "summary":
        summary(sys.argv[2], sys.argv[3], sys.argv[4])
    else:
        raise SystemExit(__doc__)


if __name__ == "__main__":
    main()
