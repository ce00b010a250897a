#!/usr/bin/env bash
# The collective benchmark of issue 2: all-gather, reduce-scatter and all-reduce over the
# MiCS groups of 8 ranks posing as 2 nodes of 4, partition group = both nodes, flat and
# hierarchical. Usage: validation/bench-collectives.sh [BUILD_DIR] [OUT_DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
build=${1:-build}
out=${2:-validation/out}
mkdir -p "$out"
source scripts/env.sh
cmd=(mpirun -np 8 --bind-to none "$build/bin/mics-bench" --ranks-per-node 4 --partition-size 8 --hierarchical
     --csv "$out/collectives-np8.csv")
{
  echo "# command: ${cmd[*]}"
  echo "# machine: $(nproc) cores, $(lscpu | sed -n 's/^Model name: *//p'), $(date -u +%Y-%m-%dT%H:%MZ), load $(cut -d' ' -f1-3 /proc/loadavg)"
  "${cmd[@]}"
} | tee "$out/collectives-np8.txt"
