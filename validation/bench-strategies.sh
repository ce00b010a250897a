#!/usr/bin/env bash
# bench-strategies.sh [BUILD_DIR] — issue 4's strategy comparison: one model on 8 ranks
# posing as 4 nodes of 2, trained for a few steps under ddp, zero2, zero3, mics p=2 and
# mics p=4 hierarchical, each with --metrics. Writes validation/out/strategies.csv and
# prints a table: mean step time, model TFLOPS per rank, bytes each rank sends per step in
# each communication group, exposed communication, and the model states per rank from
# the run's summary. Means skip the first SKIP steps (warm-up: first touches, first
# gathers). Self-check: every strategy must reach the same final loss as ddp (the
# engine's layouts are exact up to summation order), else the script exits 1.
#
# Environment: STEPS (default 16), SKIP (2), NP (8), RPN (2), GLOBAL_BATCH (16),
# MODEL_ARGS (default: char-gpt widened to hidden 256, seq 128; ~3.3 M parameters),
# OUT (validation/out).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
build="${1:-build}"
train="$build/bin/mics-train"
[ -x "$train" ] || { echo "bench-strategies.sh: error: $train not found; build first or pass BUILD_DIR" >&2; exit 1; }
source scripts/env.sh
STEPS=${STEPS:-16}
SKIP=${SKIP:-2}
NP=${NP:-8}
RPN=${RPN:-2}
GLOBAL_BATCH=${GLOBAL_BATCH:-16}
MODEL_ARGS=${MODEL_ARGS:---model inputs/models/char-gpt.cfg --hidden 256 --heads 4 --seq 128}
OUT=${OUT:-validation/out}
mkdir -p "$OUT"

# name|arguments
runs=(
  "ddp|--strategy ddp"
  "zero2|--strategy zero2"
  "zero3|--strategy zero3"
  "mics-p2|--strategy mics --partition-size 2"
  "mics-p4-hier|--strategy mics --partition-size 4 --hierarchical"
)

echo "# bench-strategies: $NP ranks, $RPN per node, $STEPS steps (means skip $SKIP), global batch $GLOBAL_BATCH"
echo "# model: $MODEL_ARGS; data: synthetic"
echo "# $(date -u '+%Y-%m-%d %H:%M UTC'); $(nproc) cores; load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
files=()
for run in "${runs[@]}"; do
  name=${run%%|*}
  args=${run#*|}
  csv="$OUT/strategies-$name.csv"
  log="$OUT/strategies-$name.log"
  # shellcheck disable=SC2086
  if ! mpirun -q -np "$NP" --bind-to none "$train" $MODEL_ARGS --data synthetic \
       --ranks-per-node "$RPN" --global-batch "$GLOBAL_BATCH" --steps "$STEPS" \
       --log-every 1000 --metrics "$csv" $args >"$log" 2>&1; then
    echo "bench-strategies.sh: error: the $name run failed; see $log" >&2
    tail -n 3 "$log" >&2
    exit 1
  fi
  files+=("$name=$csv=$log")
done
echo "# load average after: $(cut -d' ' -f1-3 /proc/loadavg)"

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

rows = []
for spec in runs:
    name, csv_path, log_path = spec.split("=", 2)
    with open(csv_path, newline="") as f:
        recs = list(csv.DictReader(f))
    timed = recs[skip:] if len(recs) > skip else recs
    log = open(log_path).read()
    m = re.search(r"model states per rank: (.+)", log)
    row = {
        "run": name,
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
    rows.append(row)

cols = (["strategy", "p", "hierarchical", "W", "g", "steps_timed", "mean_step_ms", "tflops_per_rank",
         "exposed_comm_ms"] + [g + "_bytes_per_step" for g in groups] +
        ["total_bytes_per_step", "model_states_per_rank", "final_loss"])
with open(out_path, "w", newline="") as f:
    w = csv.writer(f)
    w.writerow(cols)
    for r in rows:
        w.writerow([f"{r[c]:.6g}" if isinstance(r[c], float) else r[c] for c in cols])

hdr = ("| strategy | p | hier | step ms | TFLOPS/rank | exposed comm ms | partition B/step | "
       "replication B/step | inter B/step | intra B/step | model states/rank | final loss |")
print(hdr)
print("|" + "---|" * (hdr.count("|") - 1))
for r in rows:
    print(f"| {r['strategy']} | {r['p']} | {r['hierarchical']} | {r['mean_step_ms']:.1f} | "
          f"{r['tflops_per_rank']:.4f} | {r['exposed_comm_ms']:.1f} | "
          f"{human(r['partition_bytes_per_step'])} | {human(r['replication_bytes_per_step'])} | "
          f"{human(r['inter_bytes_per_step'])} | {human(r['intra_bytes_per_step'])} | "
          f"{r['model_states_per_rank']} | {r['final_loss']:.5f} |")
print(f"(bytes: sent per rank per step within each group, as counted by the groups; "
      f"means over steps {skip + 1}..{skip + rows[0]['steps_timed']}; written to {out_path})")

ref = rows[0]["final_loss"]
wrong = [r["run"] for r in rows if abs(r["final_loss"] - ref) > 1e-4 * max(1.0, abs(ref))]
print(f"# final losses equal to ddp's within 1e-4: {'yes' if not wrong else 'NO: ' + ', '.join(wrong)}")
sys.exit(1 if wrong else 0)
EOF
