#!/usr/bin/env sh
# skip_if_gpu.sh COMMAND... — runs COMMAND, or exits 77 (ctest's skip code here) when a
# GPU is visible, for tests of what mics-train says on machines without one.
if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L 2>/dev/null | grep -q '^GPU'; then
  echo "a GPU is visible: skipped"
  exit 77
fi
exec "$@"
