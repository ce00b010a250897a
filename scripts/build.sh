#!/usr/bin/env bash
# Configures and builds mics in ./build (Release). Extra arguments go to cmake's
# configure step, e.g. -DMICS_ENABLE_CUDA=OFF.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x /usr/local/cuda/bin/nvcc ] && export PATH=/usr/local/cuda/bin:$PATH
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release "$@" >/dev/null
cmake --build build -j "$(nproc)"
