#!/usr/bin/env bash
# The model benchmark of issue 3: forward+backward of a GPT-2-small-like stack (12 layers,
# hidden 768, 12 heads, seq 256, vocab 50257, micro-batch 4) in f32 on the CPU backend with
# 2 threads, against the sgemm rate of the same backend and threads, measured between the
# timed steps. Usage: validation/bench-model.sh [BUILD_DIR] [OUT_DIR] [extra bench options]
#
# OMP_WAIT_POLICY=passive: the other jobs on these cores preempt our threads, and OpenMP
# threads that spin at a barrier then burn the time slices their preempted partner needs
# (measured: 36% of the sgemm rate spinning vs 78% passive at load 5). libgomp reads the
# policy only at start-up, hence the variable here rather than a call in the code.
set -euo pipefail
cd "$(dirname "$0")/.."
build=${1:-build}
out=${2:-validation/out}
shift $(( $# < 2 ? $# : 2 ))
mkdir -p "$out"
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-passive}
cmd=("$build/bin/mics-bench-model" --threads 2 --layers 12 --hidden 768 --heads 12 --seq 256
     --vocab 50257 --batch 4 --iters 3 --warmup 1 --profile "$@")
{
  echo "# command: OMP_WAIT_POLICY=$OMP_WAIT_POLICY ${cmd[*]}"
  echo "# machine: $(nproc) cores, $(lscpu | sed -n 's/^Model name: *//p'), $(date -u +%Y-%m-%dT%H:%MZ), load $(cut -d' ' -f1-3 /proc/loadavg)"
  "${cmd[@]}"
} | tee "$out/bench-model.txt"
