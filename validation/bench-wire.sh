#!/usr/bin/env bash
# bench-wire.sh AFTER_BUILD BEFORE_BUILD — issue 10's record: ZeRO-3 and MiCS (p=4,
# hierarchical) on 4 emulated nodes of 2 ranks (scripts/emu-cluster.sh: namespaces, veth
# links shaped with tbf, Open MPI over TCP), prefetch on and off, at 200 Mbit/s and
# 1 Gbit/s, with the mics-train of two builds (before: libnbc's non-blocking collectives;
# after: the ring collectives with a progress thread).
#   - wire bytes per step: every node's eth0 tx/rx, the difference of a 2-step and a
#     STEPS-step run (removes start-up), unshaped (bytes do not depend on the rate);
#   - step time: median over the timed steps (the first is left out) of each run, runs
#     interleaved round-robin over REPEAT rounds with the order rotated each round; the
#     table gives the median over rounds and min-max.
# Environment: STEPS (5), REPEAT (2), MODEL_ARGS, OUT (validation/out/wire).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
after=${1:?after build dir} before=${2:?before build dir}
source scripts/env.sh
STEPS=${STEPS:-5} REPEAT=${REPEAT:-2}
MODEL_ARGS=${MODEL_ARGS:---model inputs/models/char-gpt.cfg --hidden 256 --heads 4 --seq 128}
OUT=${OUT:-validation/out/wire}
mkdir -p "$OUT"
emu=scripts/emu-cluster.sh
common="--data synthetic --ranks-per-node 2 --global-batch 8 --micro-batch 1 --threads 1 --log-every 1000"
strategies=("zero3|--strategy zero3" "mics4h|--strategy mics --partition-size 4 --hierarchical true")

run() {  # run BUILD STRATEGY_ARGS PREFETCH RATE STEPS TAG
  local b=$1 sargs=$2 pf=$3 rate=$4 steps=$5 tag=$6
  # shellcheck disable=SC2086
  "$emu" --nodes 4 --ranks-per-node 2 --rate "$rate" --counters "$OUT/$tag.wire.csv" -- \
    "$b/bin/mics-train" $MODEL_ARGS $common $sargs --prefetch "$pf" --steps "$steps" \
    --metrics "$OUT/$tag.csv" > "$OUT/$tag.log" 2>&1 || { echo "run $tag failed:"; tail -5 "$OUT/$tag.log"; exit 1; }
}

echo "# bench-wire: $(date -u '+%Y-%m-%d %H:%M UTC'); $(nproc) cores; load before: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "# model: $MODEL_ARGS; $common; 8 ranks = 4 emulated nodes x 2"
# Wire bytes (load-independent).
for build in after before; do
  b=$after; [ $build = before ] && b=$before
  for s in "${strategies[@]}"; do
    IFS='|' read -r sname sargs <<<"$s"
    for steps in 2 "$STEPS"; do run "$b" "$sargs" true none "$steps" "bytes-$build-$sname-$steps"; done
  done
done
# Step times, interleaved.
configs=()
for rate in 200mbit 1gbit; do
  for s in "${strategies[@]}"; do
    for pf in true false; do
      for build in after before; do configs+=("$build|$s|$pf|$rate"); done
    done
  done
done
n=${#configs[@]}
for rep in $(seq 1 "$REPEAT"); do
  for i in $(seq 0 $((n - 1))); do
    IFS='|' read -r build sname sargs pf rate <<<"${configs[$(((i + rep * 3) % n))]}"
    b=$after; [ $build = before ] && b=$before
    run "$b" "$sargs" "$pf" "$rate" "$STEPS" "time-$build-$sname-$pf-$rate-r$rep"
  done
done
echo "# load after: $(cut -d' ' -f1-3 /proc/loadavg)"
python3 validation/bench-wire-report.py "$OUT" "$STEPS" "$REPEAT"
