#!/usr/bin/env bash
# bench-vs-pytorch-ranks.sh [BUILD_DIR]: mics against PyTorch on 4 ranks of 2 emulated
# nodes (issue 14), side by side on the same machine, model, batch and thread count.
#
# Three pairs, each run in turn as mics-train and as the PyTorch worker
# (validation/bench_vs_pytorch_ranks.py, the GPT of validation/torch_gpt.py):
#   ddp    mics --strategy ddp                      vs DistributedDataParallel
#   zero3  mics --strategy zero3                    vs FSDP2 fully_shard, 1-D mesh of 4
#   mics2  mics --strategy mics --partition-size 2  vs FSDP2 hybrid, (replicate 2, shard 2)
# and, on request (PAIRS), ddpflat: mics --strategy ddp --hierarchical-all-reduce false
# (one flat ring over the 4 ranks instead of the two-level all-reduce) vs DDP; with
# PAIRS="ddp ddpflat" SIDES=mics it is an interleaved A/B of mics's two all-reduces.
# Both sides are launched the same way: scripts/emu-cluster.sh starts 2 nodes (network
# namespaces) of 2 ranks under one mpirun, so both cross the same shaped links between the
# nodes (PyTorch's gloo meets at node 1's address). Model: char-gpt at 4 x 256, 4 heads,
# seq 128, vocab 256 (3.26 M parameters; both sides print their count and the script
# checks they agree); random/synthetic tokens; f32; AdamW with gradient clipping at 1.0.
#
# Method: REPEAT rounds; in each, the pairs in an order rotated by one per round, and
# within a pair mics and PyTorch alternating which goes first. A run's figure is the
# median of its rank 0 step times after WARMUP steps; a pair's is the median over rounds
# [min-max]. The 1-minute load average is read before and after every run. Each round
# runs under $WRAP when set (e.g. WRAP=mics-quiet: one lock per round).
#
# PyTorch comes from validation/torch-venv.sh: a venv installed from PyPI on first use
# (several GB), reused afterwards; nothing here installs it into the system or runs in CI.
# Needs root (network namespaces), iproute2, Open MPI and a CPU build of mics.
#
# Environment: RATE (1gbit), STEPS (8), WARMUP (3), REPEAT (3), GLOBAL_BATCH (8),
# MICRO_BATCH (1), THREADS (1), PAIRS ("ddp zero3 mics2"), SIDES ("mics torch"; one of
# them alone runs only that side), BUSY (0: background busy
# loops at nice 0 kept running through each round, the loaded condition), LABEL (quiet,
# or busyN; names the condition in the outputs), OUT (validation/out/vs-pytorch-ranks),
# WRAP (empty).
# Outputs: OUT/LABEL-runs.csv (every run), OUT/LABEL-summary.csv, and a markdown table
# on stdout (also in OUT/LABEL-table.md).
set -euo pipefail

me=bench-vs-pytorch-ranks
die() { echo "$me: error: $*" >&2; exit 2; }
root=$(cd "$(dirname "$0")/.." && pwd)
round='' venv=''
if [ "${1:-}" = --round ]; then   # one round, started by this script under $WRAP
  [ $# -eq 4 ] || die "--round VENV ROUND BUILD_DIR"
  venv=$2 round=$3
  shift 3
fi
build=$(cd "${1:-$root/build}" 2>/dev/null && pwd) || die "build directory '${1:-build}' not found"
train=$build/bin/mics-train
[ -x "$train" ] || die "$train not found (build mics first)"

RATE=${RATE:-1gbit} STEPS=${STEPS:-8} WARMUP=${WARMUP:-3} REPEAT=${REPEAT:-3}
GLOBAL_BATCH=${GLOBAL_BATCH:-8} MICRO_BATCH=${MICRO_BATCH:-1} THREADS=${THREADS:-1}
PAIRS=${PAIRS:-ddp zero3 mics2} SIDES=${SIDES:-mics torch} BUSY=${BUSY:-0} WRAP=${WRAP:-}
if [ "$BUSY" -gt 0 ]; then LABEL=${LABEL:-busy$BUSY}; else LABEL=${LABEL:-quiet}; fi
OUT=${OUT:-$root/validation/out/vs-pytorch-ranks}
export RATE STEPS WARMUP REPEAT GLOBAL_BATCH MICRO_BATCH THREADS PAIRS SIDES BUSY LABEL OUT
case $SIDES in "mics torch" | "torch mics" | mics | torch) ;; *) die "SIDES must be 'mics torch', mics or torch" ;; esac
[ "$WARMUP" -lt "$STEPS" ] || die "WARMUP ($WARMUP) must be below STEPS ($STEPS)"
NODES=2 RPN=2
shape=(--layers 4 --hidden 256 --heads 4 --seq 128 --vocab 256)

load1() { cut -d' ' -f1 /proc/loadavg; }

mics_args() {  # mics_args PAIR: mics-train's strategy options
  case $1 in
    ddp) echo --strategy ddp ;;
    ddpflat) echo --strategy ddp --hierarchical-all-reduce false ;;
    zero3) echo --strategy zero3 ;;
    mics2) echo --strategy mics --partition-size 2 ;;
    *) die "unknown pair '$1' (ddp, ddpflat, zero3, mics2)" ;;
  esac
}
torch_layout() {
  case $1 in ddp | ddpflat) echo ddp ;; zero3) echo fsdp ;; mics2) echo hsdp ;; esac
}

emu() {  # emu BASE PROGRAM...: PROGRAM on the emulated nodes; its output into BASE.log
  local log=$1.log
  shift
  # OMP_NUM_THREADS travels to every rank: PyTorch's intra-op pool and any OpenMP in
  # mics stay at THREADS. gloo's warning that no resolver knows the namespaces'
  # hostnames is dropped.
  bash "$root/scripts/emu-cluster.sh" --nodes "$NODES" --ranks-per-node "$RPN" \
    --rate "$RATE" --mpirun-arg -q --mpirun-arg -x --mpirun-arg "OMP_NUM_THREADS=$THREADS" \
    -- "$@" 2>&1 | { grep -v 'hostname of the client socket cannot be retrieved' || true; } \
    > "$log"
}

# run_one ROUND PAIR SIDE ORDER: one run; appends a line to the runs CSV.
run_one() {
  local round=$1 pair=$2 side=$3 order=$4 base l0 l1 steps params
  base=$OUT/$LABEL-r$round-$pair-$side
  l0=$(load1)
  if [ "$side" = mics ]; then
    # shellcheck disable=SC2046  # one word per option
    emu "$base" "$train" --model "$root/inputs/models/char-gpt.cfg" "${shape[@]}" \
      $(mics_args "$pair") --ranks-per-node "$RPN" --threads "$THREADS" \
      --global-batch "$GLOBAL_BATCH" --micro-batch "$MICRO_BATCH" --steps "$STEPS" \
      --metrics "$base.csv" || die "mics $pair failed; see $base.log"
    params=$(sed -n 's/.* \([0-9]*\) parameters,.*/\1/p' "$base.log" | head -n 1)
  else
    emu "$base" "$venv/bin/python" "$root/validation/bench_vs_pytorch_ranks.py" \
      --layout "$(torch_layout "$pair")" "${shape[@]}" --threads "$THREADS" \
      --ranks-per-node "$RPN" --global-batch "$GLOBAL_BATCH" --micro-batch "$MICRO_BATCH" \
      --steps "$STEPS" --out "$base.csv" || die "torch $pair failed; see $base.log"
    params=$(sed -n 's/.*parameters \([0-9]*\).*/\1/p' "$base.log" | head -n 1)
  fi
  l1=$(load1)
  steps=$(python3 "$root/validation/bench_vs_pytorch_ranks_report.py" median "$base.csv" "$WARMUP")
  echo "$LABEL,$round,$pair,$side,$order,$l0,$l1,$params,$steps" >> "$OUT/$LABEL-runs.csv"
  echo "$me: round $round $pair $side: $steps ms (median,min,max,n,exposed comm)," \
    "load $l0 -> $l1" >&2
}

# The background load of a loaded run: BUSY shell loops at nice 0, each wanting a whole
# core, started with the round and ended (by their pids) with it.
busy=()
start_busy() {
  local i
  for ((i = 0; i < BUSY; i++)); do
    nice -n 0 bash -c 'while :; do :; done' &
    busy+=("$!")
  done
  trap stop_busy EXIT
}
# shellcheck disable=SC2317  # also reached through the trap
stop_busy() {
  local pid
  for pid in "${busy[@]}"; do kill "$pid" 2>/dev/null || true; done
  busy=()
}

# run_round ROUND: every pair once, in the order rotated by ROUND, sides alternating.
run_round() {
  local round=$1 pairs i n pair first second
  start_busy
  read -r -a pairs <<< "$PAIRS"
  read -r -a sides <<< "$SIDES"
  n=${#pairs[@]}
  for ((i = 0; i < n; i++)); do
    pair=${pairs[$(((i + round) % n))]}
    if [ ${#sides[@]} -eq 1 ]; then
      run_one "$round" "$pair" "${sides[0]}" 1
      continue
    fi
    if (((round + i) % 2)); then first=torch second=mics; else first=mics second=torch; fi
    run_one "$round" "$pair" "$first" 1
    run_one "$round" "$pair" "$second" 2
  done
  stop_busy
}

if [ -n "$round" ]; then
  run_round "$round"
  exit 0
fi
[ "$(id -u)" -eq 0 ] || die "must run as root (scripts/emu-cluster.sh makes namespaces)"
venv=$(bash "$root/validation/torch-venv.sh")
mkdir -p "$OUT"
header=label,round,pair,side,order,load_start,load_end,parameters
echo "$header,median_ms,min_ms,max_ms,steps,exposed_ms" > "$OUT/$LABEL-runs.csv"
echo "$me: $NODES nodes x $RPN ranks, links shaped at $RATE (the limit between nodes)," \
  "global batch $GLOBAL_BATCH, micro-batch $MICRO_BATCH, $THREADS thread(s) per rank," \
  "$STEPS steps ($WARMUP warm-up), $REPEAT rounds, $BUSY busy loop(s);" \
  "load $(cut -d' ' -f1-3 /proc/loadavg)" >&2
for ((r = 1; r <= REPEAT; r++)); do
  # shellcheck disable=SC2086  # WRAP is a command and its arguments
  $WRAP bash "$0" --round "$venv" "$r" "$build"
done
echo "$me: load at the end $(cut -d' ' -f1-3 /proc/loadavg)" >&2
python3 "$root/validation/bench_vs_pytorch_ranks_report.py" summary "$OUT/$LABEL-runs.csv" \
  "$OUT/$LABEL-summary.csv" "$RATE" | tee "$OUT/$LABEL-table.md"
