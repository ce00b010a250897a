#!/usr/bin/env bash
# pcluster_venv.sh DIR
#
# Makes DIR a Python virtual environment holding aws-parallelcluster 3.x from PyPI (the
# package whose schema `pcluster create-cluster` validates a cluster file with), unless
# DIR already holds one: the first run installs (minutes; size and time measured in
# docs/AWS.md), later runs only check and return. Prints DIR/bin/python on success.
# Uses Debian's python3 (python3-venv, scripts/install-deps.sh) so that the result does
# not depend on which interpreter a shim puts first on PATH.
set -euo pipefail
dir=${1:?usage: pcluster_venv.sh DIR}
py=/usr/bin/python3
[ -x "$py" ] || py=$(command -v python3 || true)
[ -n "$py" ] || { echo "pcluster_venv: error: no python3; install python3-venv (bash scripts/install-deps.sh)" >&2; exit 1; }

ready=$dir/.mics-pcluster-ready
usable() { [ -f "$ready" ] && "$dir/bin/python" -c 'import pcluster.schemas.cluster_schema' 2>/dev/null; }
if usable; then echo "$dir/bin/python"; exit 0; fi

mkdir -p "$(dirname "$dir")"
# Two tests may ask at once (ctest -j): the second waits for the first's install.
exec 9>"$dir.lock"
flock 9
if usable; then echo "$dir/bin/python"; exit 0; fi
# A half-made folder from an interrupted run is replaced, never patched.
rm -rf "$dir"
"$py" -m venv "$dir" >&2 ||
  { echo "pcluster_venv: error: '$py -m venv' failed; install python3-venv (bash scripts/install-deps.sh)" >&2; exit 1; }
t0=$(date +%s)
# --no-input: never wait for a prompt. 3.x only: the schema module path is 3.x's.
if ! "$dir/bin/pip" install --quiet --no-input 'aws-parallelcluster>=3,<4' >&2; then
  echo "pcluster_venv: error: pip could not install aws-parallelcluster 3.x from PyPI (network?); see the lines above" >&2
  exit 1
fi
size=$(du -sm "$dir" | cut -f1)
version=$("$dir/bin/python" -c 'import importlib.metadata as m; print(m.version("aws-parallelcluster"))')
echo "pcluster_venv: installed aws-parallelcluster $version in $(( $(date +%s) - t0 )) s, venv $size MiB" >&2
touch "$ready"
echo "$dir/bin/python"
