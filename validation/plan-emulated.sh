#!/usr/bin/env bash
# plan-emulated.sh [BUILD_DIR] — issue 12's check of mics-plan against this machine.
# 1. mics-bench on NP ranks posing as nodes of RPN (loopback: Open MPI shared memory),
#    partition groups of 2 and of 4 (hierarchical), -> bench CSVs;
# 2. mics-train, interleaved repeats, for ddp, zero3, mics p=2 and mics p=4 hierarchical;
# 3. mics-plan calibrate: links from the bench CSVs, compute efficiency from the ddp runs
#    only, written to OUT/emulated-fitted.cfg;
# 4. mics-plan's prediction of each layout with that file, beside the measured median step
#    time (repeats after the first step), and the error. The layouts other than ddp are
#    predictions: nothing was fitted to them.
# Environment: NP (4), RPN (2), STEPS (6), REPEAT (2), GLOBAL_BATCH (8), MICRO_BATCH (1),
# MODEL_ARGS (char-gpt widened to hidden 256, seq 128), OUT (validation/out/plan), MEASURE (1).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
build="${1:-build}"
for b in mics-train mics-bench mics-plan; do
  [ -x "$build/bin/$b" ] || { echo "plan-emulated.sh: error: $build/bin/$b not found; build first" >&2; exit 1; }
done
source scripts/env.sh
NP=${NP:-4} RPN=${RPN:-2} STEPS=${STEPS:-6} REPEAT=${REPEAT:-2}
GLOBAL_BATCH=${GLOBAL_BATCH:-8} MICRO_BATCH=${MICRO_BATCH:-1}
MODEL_ARGS=${MODEL_ARGS:---model inputs/models/char-gpt.cfg --hidden 256 --heads 4 --seq 128}
OUT=${OUT:-validation/out/plan}
mkdir -p "$OUT"
echo "# plan-emulated: $NP ranks, $RPN per node, $(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) cores, load before: $(cut -d' ' -f1-3 /proc/loadavg)"
mpi() { mpirun -q -np "$NP" --bind-to none "$@"; }
runs=("ddp|--strategy ddp" "zero3|--strategy zero3" "mics-p2|--strategy mics --partition-size 2"
      "mics-p4-hier|--strategy mics --partition-size 4 --hierarchical")
# MEASURE=0 reuses OUT's measurements and only calibrates and predicts again.
if [ "${MEASURE:-1}" = 1 ]; then
for p in 2 4; do
  hier=""; [ "$p" -gt "$RPN" ] && hier=--hierarchical
  mpi "$build/bin/mics-bench" --ranks-per-node "$RPN" --partition-size "$p" $hier -b 64K -e 4M -f 4 \
      --csv "$OUT/bench-p$p.csv" > "$OUT/bench-p$p.log"
done
echo "# bench done, load: $(cut -d' ' -f1-3 /proc/loadavg)"
for rep in $(seq 1 "$REPEAT"); do
  for run in "${runs[@]}"; do
    IFS='|' read -r name args <<<"$run"
    # shellcheck disable=SC2086
    mpi "$build/bin/mics-train" $MODEL_ARGS --data synthetic --ranks-per-node "$RPN" \
        --global-batch "$GLOBAL_BATCH" --micro-batch "$MICRO_BATCH" --steps "$STEPS" --log-every 1000 \
        --metrics "$OUT/train-$name-r$rep.csv" $args > "$OUT/train-$name-r$rep.log" 2>&1
    echo "# $name repeat $rep done, load: $(cut -d' ' -f1-3 /proc/loadavg)"
  done
done
fi
trains=()
for rep in $(seq 1 "$REPEAT"); do trains+=(--train "$OUT/train-ddp-r$rep.csv"); done
# shellcheck disable=SC2086
"$build/bin/mics-plan" calibrate --cluster inputs/clusters/emulated.cfg --bench "$OUT/bench-p2.csv" \
    --bench "$OUT/bench-p4.csv" "${trains[@]}" $MODEL_ARGS --global-batch "$GLOBAL_BATCH" \
    --micro-batch "$MICRO_BATCH" --output "$OUT/emulated-fitted.cfg" | tee "$OUT/calibrate.txt"
echo
printf '%-14s %12s %12s %9s\n' layout measured_ms predicted_ms error
for run in "${runs[@]}"; do
  IFS='|' read -r name args <<<"$run"
  # shellcheck disable=SC2086
  "$build/bin/mics-plan" $MODEL_ARGS --cluster "$OUT/emulated-fitted.cfg" --nodes $((NP / RPN)) \
      --global-batch "$GLOBAL_BATCH" --micro-batch "$MICRO_BATCH" --recompute false $args \
      --csv "$OUT/predict-$name.csv" > /dev/null
  python3 - "$OUT" "$name" "$REPEAT" <<'PY'
import csv, statistics, sys
out, name, rep = sys.argv[1], sys.argv[2], int(sys.argv[3])
ms = []
for r in range(1, rep + 1):
    rows = list(csv.DictReader(open(f"{out}/train-{name}-r{r}.csv")))[1:]
    ms += [float(x["step_ms"]) for x in rows]
pred = float(next(csv.DictReader(open(f"{out}/predict-{name}.csv")))["step_ms"])
med = statistics.median(ms)
print(f"{name:<14} {med:12.1f} {pred:12.1f} {100 * (pred / med - 1):+8.1f}%   (min {min(ms):.1f}, max {max(ms):.1f}, {len(ms)} steps)")
PY
done
echo "# load after: $(cut -d' ' -f1-3 /proc/loadavg)"
