#!/usr/bin/env bash
# bench-strategies.sh [BUILD_DIR] — issue 4's strategy comparison: one model on 8 ranks
# posing as 4 nodes of 2, trained for a few steps under ddp, zero2, zero3, mics p=2 and
# mics p=4 hierarchical, each with --metrics. Writes validation/out/strategies.csv and
# prints a table: mean step time, model TFLOPS per rank, bytes each rank sends per step in
# each communication group, exposed communication, and the model states per rank from
# the run's summary. Means skip the first SKIP steps (warm-up: first touches, first
# gathers). Limit measured in the same run: the same global batch in one process on all
# cores, without communication. Self-check: every strategy must reach that process's final
# loss (the layouts are exact up to summation order), else the script exits 1.
#
# Environment: STEPS (default 12), REPEAT (3), SKIP (2), NP (8), RPN (2), GLOBAL_BATCH (16),
# MICRO_BATCH (1: two micro-steps per optimizer step on 8 ranks),
# MODEL_ARGS (default: char-gpt widened to hidden 256, seq 128; ~3.3 M parameters),
# OUT (validation/out).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
build="${1:-build}"
train="$build/bin/mics-train"
[ -x "$train" ] || { echo "bench-strategies.sh: error: $train not found; build first or pass BUILD_DIR" >&2; exit 1; }
source scripts/env.sh
STEPS=${STEPS:-12}
SKIP=${SKIP:-2}
NP=${NP:-8}
RPN=${RPN:-2}
GLOBAL_BATCH=${GLOBAL_BATCH:-16}
MICRO_BATCH=${MICRO_BATCH:-1}
REPEAT=${REPEAT:-3}
MODEL_ARGS=${MODEL_ARGS:---model inputs/models/char-gpt.cfg --hidden 256 --heads 4 --seq 128}
OUT=${OUT:-validation/out}
mkdir -p "$OUT"

# name|ranks|ranks per node|arguments. The first run is the limit the others are measured
# against: the same global batch in one process using every core, as one micro-batch (the
# largest GEMMs), with no communication: the fastest this machine takes that step.
runs=(
  "limit-1-process|1|1|--strategy ddp --threads $(nproc) --micro-batch $GLOBAL_BATCH"
  "ddp|$NP|$RPN|--strategy ddp --micro-batch $MICRO_BATCH"
  "zero2|$NP|$RPN|--strategy zero2 --micro-batch $MICRO_BATCH"
  "zero3|$NP|$RPN|--strategy zero3 --micro-batch $MICRO_BATCH"
  "mics-p2|$NP|$RPN|--strategy mics --partition-size 2 --micro-batch $MICRO_BATCH"
  "mics-p4-hier|$NP|$RPN|--strategy mics --partition-size 4 --hierarchical --micro-batch $MICRO_BATCH"
)

echo "# bench-strategies: $NP ranks, $RPN per node, $REPEAT x $STEPS steps (means skip $SKIP), global batch $GLOBAL_BATCH, micro-batch $MICRO_BATCH"
echo "# model: $MODEL_ARGS; data: synthetic"
echo "# $(date -u '+%Y-%m-%d %H:%M UTC'); $(nproc) cores; load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
# Repeats go round-robin, so that load from other jobs on the shared cores falls on every
# strategy alike; the table reports the median repeat of each figure.
files=()
for rep in $(seq 1 "$REPEAT"); do
  for run in "${runs[@]}"; do
    IFS='|' read -r name np rpn args <<<"$run"
    csv="$OUT/strategies-$name-r$rep.csv"
    log="$OUT/strategies-$name-r$rep.log"
    # shellcheck disable=SC2086
    if ! mpirun -q -np "$np" --bind-to none "$train" $MODEL_ARGS --data synthetic \
         --ranks-per-node "$rpn" --global-batch "$GLOBAL_BATCH" --steps "$STEPS" \
         --log-every 1000 --metrics "$csv" $args >"$log" 2>&1; then
      echo "bench-strategies.sh: error: the $name run failed; see $log" >&2
      tail -n 3 "$log" >&2
      exit 1
    fi
    files+=("$name=$csv=$log")
  done
  echo "# repeat $rep done; load average: $(cut -d' ' -f1-3 /proc/loadavg)"
done

python3 - "$OUT/strategies.csv" "$SKIP" "${files[@]}" <<'EOF'
import csv, re, sys

out_path, skip, runs = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
groups = ["partition", "replication", "inter", "intra", "world"]

def mean(xs):
    return sum(xs) / len(xs) if xs else float("nan")

def human(b):
    for unit in ["B", "KiB", "MiB", "GiB"]:
        if abs(b) < 1024 or unit == "GiB":
            return f"{b:.0f} {unit}" if unit == "B" else f"{b:.2f} {unit}"
        b /= 1024

def one(csv_path, log_path):
    with open(csv_path, newline="") as f:
        recs = list(csv.DictReader(f))
    timed = recs[skip:] if len(recs) > skip else recs
    log = open(log_path).read()
    m = re.search(r"model states per rank: (.+)", log)
    row = {
        "strategy": recs[0]["strategy"],
        "p": int(recs[0]["p"]),
        "hierarchical": recs[0]["hierarchical"],
        "W": int(recs[0]["W"]),
        "g": int(recs[0]["g"]),
        "steps_timed": len(timed),
        "mean_step_ms": mean([float(r["step_ms"]) for r in timed]),
        "tflops_per_rank": mean([float(r["tflops_per_rank"]) for r in timed]),
        "exposed_comm_ms": mean([float(r["exposed_comm_ms"]) for r in timed]),
        "model_states_per_rank": m.group(1).strip() if m else "",
        "final_loss": float(recs[-1]["loss"]),
    }
    total = 0.0
    for gname in groups:
        col = gname + "_bytes"
        v = mean([float(r[col]) for r in timed]) if col in recs[0] else 0.0
        row[gname + "_bytes_per_step"] = v
        total += v
    row["total_bytes_per_step"] = total
    return row

by_name = {}
for spec in runs:
    name, csv_path, log_path = spec.split("=", 2)
    by_name.setdefault(name, []).append(one(csv_path, log_path))

def median(xs):
    xs = sorted(xs)
    n = len(xs)
    return xs[n // 2] if n % 2 else 0.5 * (xs[n // 2 - 1] + xs[n // 2])

rows = []
for name, reps in by_name.items():
    row = dict(reps[0])
    row["run"] = name
    row["repeats"] = len(reps)
    for k, v in reps[0].items():
        if isinstance(v, float) and k != "final_loss":
            row[k] = median([r[k] for r in reps])
    row["step_ms_min"] = min(r["mean_step_ms"] for r in reps)
    row["step_ms_max"] = max(r["mean_step_ms"] for r in reps)
    row["final_loss"] = max(reps, key=lambda r: abs(r["final_loss"] - reps[0]["final_loss"]))["final_loss"]
    row["final_losses"] = [r["final_loss"] for r in reps]
    rows.append(row)

cols = (["run", "strategy", "p", "hierarchical", "W", "g", "repeats", "steps_timed", "mean_step_ms",
         "step_ms_min", "step_ms_max", "tflops_per_rank",
         "exposed_comm_ms"] + [g + "_bytes_per_step" for g in groups] +
        ["total_bytes_per_step", "model_states_per_rank", "final_loss"])
with open(out_path, "w", newline="") as f:
    w = csv.writer(f)
    w.writerow(cols)
    for r in rows:
        w.writerow([(f"{r[c]:.0f}" if c.endswith("_bytes_per_step") else f"{r[c]:.6g}")
                    if isinstance(r[c], float) else r[c] for c in cols])

hdr = ("| run | W | p | hier | step ms (min-max) | TFLOPS/rank | exposed comm ms | partition B/step | "
       "replication B/step | inter B/step | intra B/step | model states/rank | final loss | limit/step |")
print(hdr)
print("|" + "---|" * (hdr.count("|") - 1))
limit_ms = rows[0]["mean_step_ms"]
for r in rows:
    print(f"| {r['run']} | {r['W']} | {r['p']} | {r['hierarchical']} | {r['mean_step_ms']:.1f} "
          f"({r['step_ms_min']:.0f}-{r['step_ms_max']:.0f}) | "
          f"{r['tflops_per_rank']:.4f} | {r['exposed_comm_ms']:.1f} | "
          f"{human(r['partition_bytes_per_step'])} | {human(r['replication_bytes_per_step'])} | "
          f"{human(r['inter_bytes_per_step'])} | {human(r['intra_bytes_per_step'])} | "
          f"{r['model_states_per_rank']} | {r['final_loss']:.5f} | "
          f"{100 * limit_ms / r['mean_step_ms']:.0f}% |")
print("(limit/step: the 1-process step time over this run's; the 1-process run's TFLOPS/rank is "
      "the whole machine's)")
print(f"(medians of {rows[0]['repeats']} round-robin repeats; bytes: sent per rank per step within each group, "
      f"as counted by the groups; means over steps {skip + 1}..{skip + rows[0]['steps_timed']}; written to {out_path})")

ref = rows[0]["final_loss"]
wrong = [r["run"] for r in rows
         if any(abs(x - ref) > 1e-4 * max(1.0, abs(ref)) for x in r["final_losses"])]
print(f"# final losses equal to the single process's within 1e-4: {'yes' if not wrong else 'NO: ' + ', '.join(wrong)}")
sys.exit(1 if wrong else 0)
EOF
