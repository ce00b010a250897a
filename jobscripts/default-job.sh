#!/usr/bin/env bash
# The default job: MiCS training of a small byte-level GPT on the corpus that
# scripts/make-corpus.sh builds from the licence texts every Debian system ships.
# 4 ranks posing as 2 nodes of 2; partition groups of 4 span both "nodes" and use the
# hierarchical all-gather and reduce-scatter. Prints one line per 10 steps and a summary;
# the metrics land in build/default-job.csv. Extra arguments go to mics-train.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
[ -f build/data/corpus/corpus_train.bin ] || bash scripts/make-corpus.sh build/data/corpus
mpirun -q -np 4 --bind-to none build/bin/mics-train --config inputs/runs/default.cfg \
  --metrics build/default-job.csv "$@"
