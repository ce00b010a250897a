#!/usr/bin/env bash
# README command 1: install, build, and run the default job.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
bash scripts/build.sh
source scripts/env.sh
bash jobscripts/default-job.sh
