#!/usr/bin/env bash
# README command 2: install, build, and run the whole test suite through ctest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
bash scripts/build.sh
source scripts/env.sh
cd build && ctest --output-on-failure -j "$(nproc)" "$@"
