#!/usr/bin/env bash
# torch-venv.sh: prints the path of a Python virtual environment with PyTorch and numpy,
# creating it on first use and reusing it afterwards ($MICS_TORCH_VENV, default
# ~/.cache/mics/torch-venv; several GB, since PyPI's torch wheel pulls its CUDA
# libraries). Only the benchmarks against PyTorch use it; the test suite never does.
# Usage: venv=$(bash validation/torch-venv.sh)
set -euo pipefail
venv=${MICS_TORCH_VENV:-$HOME/.cache/mics/torch-venv}
mkdir -p "$(dirname "$venv")"
exec 9>"$venv.lock"
flock 9   # two benchmarks started together must not install into one folder at once
if ! "$venv/bin/python" -c "import torch, numpy" 2>/dev/null; then
  echo "torch-venv: creating $venv (torch, numpy from PyPI; a few minutes, once)" >&2
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --upgrade pip >&2
  "$venv/bin/pip" install --quiet torch numpy >&2
fi
echo "$venv"
