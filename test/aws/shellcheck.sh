#!/usr/bin/env bash
# Usage: test/aws/shellcheck.sh SOURCE_DIR. Every shell script of the job scripts, the AWS set-up, the
# dependency installer and the Slurm and AWS tests passes shellcheck (warnings included),
# following the files they source. shellcheck comes from scripts/install-deps.sh.
set -euo pipefail
cd "$1"
command -v shellcheck >/dev/null ||
  { echo "shellcheck.sh: FAIL: shellcheck not found; install it (bash scripts/install-deps.sh)" >&2; exit 1; }
shopt -s nullglob
files=(jobscripts/*.sh jobscripts/*.sbatch jobscripts/lib/*.sh jobscripts/aws/*.sh
       scripts/install-deps.sh test/slurm/*.sh test/aws/*.sh)
[ ${#files[@]} -ge 10 ] || { echo "shellcheck.sh: FAIL: only ${#files[@]} scripts found under $1" >&2; exit 1; }
shellcheck -x "${files[@]}"
echo "shellcheck.sh: ${#files[@]} scripts clean: ${files[*]}"
