#!/usr/bin/env bash
# bench-idle-wait.sh [REPEATS]: does Open MPI's mpi_yield_when_idle keep idle ranks off
# the cores? 8 emulated nodes of 2 ranks (scripts/emu-cluster.sh, 200 Mbit/s), mics p=2
# under the compute model (the ranks sleep through their kernels, so any CPU they use is
# spent waiting in MPI), run with yield_when_idle 1 and 0, interleaved (1 0 0 1 1 0 ...).
# Prints per run: median step ms over steps 2..4, wall s, CPU s of the whole job (user +
# sys of every process: bash's time of emu-cluster.sh and its waited-for children), and the load.
set -euo pipefail
cd "$(dirname "$0")/../.."
source scripts/env.sh
repeats=${1:-2}
out=$(mktemp -d /tmp/idle-wait.XXXXXX)
trap 'rm -rf "$out"' EXIT
printf "%-6s %-7s %12s %8s %8s %6s\n" yield repeat step_ms wall_s cpu_s load
for r in $(seq "$repeats"); do
  order="1 0"; [ $((r % 2)) = 0 ] && order="0 1"
  for y in $order; do
    TIMEFORMAT="%R %U %S"
    { time OMPI_MCA_mpi_yield_when_idle=$y scripts/emu-cluster.sh --nodes 8 --ranks-per-node 2 --rate 200mbit --mpirun-arg -q -- \
      build/bin/mics-train --model inputs/models/char-gpt.cfg --seq 128 --ranks-per-node 2 \
      --global-batch 1024 --micro-batch 16 --steps 4 --strategy mics --partition-size 2 \
      --backend emulated --emulated-tflops 0.624 --metrics "$out/m.csv" > "$out/log" 2>&1; } 2> "$out/time"
    step=$(tail -n +3 "$out/m.csv" | cut -d, -f6 | sort -g | sed -n 2p)
    read -r wall user sys < "$out/time"
    printf "%-6s %-7s %12.1f %8.1f %8.1f %6s\n" "$y" "$r" "$step" "$wall" "$(awk -v u="$user" -v s="$sys" 'BEGIN { print u + s }')" \
      "$(cut -d' ' -f1 /proc/loadavg)"
  done
done
