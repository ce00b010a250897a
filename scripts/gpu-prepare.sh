#!/bin/bash
# Prepares the GPU check on THIS machine (nvcc and Debian's MPI/HDF5/Boost/OpenBLAS; no GPU
# needed): builds Release with CUDA into build-gpu/ and packs the programs the check runs,
# with their runtime, into .gpu/bundle.tgz (scripts/gpu-bundle.sh). .gpu/ is git-ignored
# and reaches the GPU machine with the working tree (the device tool's carry: [".gpu"]);
# there, run scripts/gpu-check.sh. Needs nothing outside this checkout. See docs/GPU.md.
#   scripts/gpu-prepare.sh [--arch LIST] [--jobs N] [--from-build DIR] [--out DIR]
# --from-build DIR takes the programs of an existing CUDA build instead of building
# build-gpu/ (the CPU-machine test uses the suite's own build); --out DIR writes there
# instead of .gpu/.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
ARCH=90; JOBS=2; FROM=""; DEST=$ROOT/.gpu
while [ $# -gt 0 ]; do
  case $1 in
    --arch) ARCH=$2; shift 2 ;;
    --jobs) JOBS=$2; shift 2 ;;
    --from-build) FROM=$(cd "$2" && pwd); shift 2 ;;
    --out) mkdir -p "$2"; DEST=$(cd "$2" && pwd); shift 2 ;;
    -h|--help) sed -n '2,11p' "$0"; exit 0 ;;
    *) echo "gpu-prepare: unknown option '$1' (use --arch LIST, --jobs N, --from-build DIR, --out DIR)" >&2; exit 2 ;;
  esac
done
PROGRAMS="test_device_kernels test_device_cuda test_staged_collectives test_model_transformer test_comm_nccl mics-train"
T0=$(date +%s)

if [ -n "$FROM" ]; then
  B=$FROM
  grep -q '^MICS_ENABLE_CUDA:BOOL=ON' "$B/CMakeCache.txt" 2>/dev/null ||
    { echo "gpu-prepare: $B is not a build with MICS_ENABLE_CUDA=ON" >&2; exit 1; }
else
  export PATH=/usr/local/cuda/bin:$PATH
  command -v nvcc >/dev/null || { echo "gpu-prepare: nvcc not found (the CUDA toolkit is needed to build)" >&2; exit 1; }
  B=$ROOT/build-gpu
  launch=()
  if command -v ccache >/dev/null; then
    launch=(-DCMAKE_CXX_COMPILER_LAUNCHER=ccache -DCMAKE_CUDA_COMPILER_LAUNCHER=ccache)
    # Relative paths in the cache keys: build/ and build-gpu/ share compiled objects.
    export CCACHE_BASEDIR=${CCACHE_BASEDIR:-$ROOT}
  fi
  mkdir -p "$B"
  cmake -S . -B "$B" -DCMAKE_BUILD_TYPE=Release -DMICS_ENABLE_CUDA=ON \
        -DCMAKE_CUDA_ARCHITECTURES="$ARCH" -DMICS_BUILD_TESTS=ON "${launch[@]}" > "$B/configure.log" 2>&1 ||
    { tail -20 "$B/configure.log"; echo "gpu-prepare: cmake configure failed (log $B/configure.log)" >&2; exit 1; }
  # shellcheck disable=SC2086
  cmake --build "$B" -j"$JOBS" --target $PROGRAMS
fi
progs=()
for p in $PROGRAMS; do
  [ -x "$B/bin/$p" ] || { echo "gpu-prepare: $B/bin/$p was not built" >&2; exit 1; }
  progs+=("$B/bin/$p")
done

mkdir -p "$DEST"  # .gpu/ is in .gitignore
rm -f "$DEST/bundle.tgz"
bash "$ROOT/scripts/gpu-bundle.sh" --out "$DEST/bundle.tgz" "${progs[@]}"
git -C "$ROOT" rev-parse --short HEAD > "$DEST/commit" 2>/dev/null || echo unknown > "$DEST/commit"
# test_model_transformer reads its presets from the source folder it was built from.
src=$(sed -n 's/^CMAKE_HOME_DIRECTORY:INTERNAL=//p' "$B/CMakeCache.txt")
echo "${src:-$ROOT}" > "$DEST/source-dir"

size=$(du -cb "$DEST"/bundle.tgz | tail -1 | cut -f1)
limit=$((60 * 1024 * 1024))
echo "gpu-prepare: $DEST holds $((size / 1024 / 1024)) MiB (limit 60 MiB, the device tool carries 64 MiB): $(ls "$DEST" | tr '\n' ' ')"
[ "$size" -lt "$limit" ] || { echo "gpu-prepare: bundle too large ($size bytes > $limit)" >&2; exit 1; }
echo "gpu-prepare: ready in $(( $(date +%s) - T0 ))s. On the GPU machine: bash scripts/gpu-check.sh"
