#!/usr/bin/env bash
# The default job: for now the collective benchmark over the real group layout on 4 ranks
# (2 emulated nodes of 2). Replaced by the default training run once mics-train exists.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
mpirun -np 4 --bind-to none build/bin/mics-bench --ranks-per-node 2 --partition-size 4 --hierarchical -b 1K -e 1M -f 4
