#!/bin/bash
# Prepares the GPU check on THIS machine (nvcc and Debian's MPI/HDF5/Boost/OpenBLAS, no GPU
# needed): builds Release with CUDA for Hopper into build-gpu/, and packs the programs with
# the runtime they need into .gpu/ (git-ignored), which the GPU machine receives with the
# working tree (the device tool's `carry: [".gpu"]`). Then run scripts/gpu-check.sh there.
# See docs/GPU.md.
#   scripts/gpu-prepare.sh [--arch LIST] [--jobs N]
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
ARCH=90; JOBS=2
while [ $# -gt 0 ]; do
  case $1 in
    --arch) ARCH=$2; shift 2 ;;
    --jobs) JOBS=$2; shift 2 ;;
    *) echo "gpu-prepare: unknown option '$1' (use --arch LIST, --jobs N)" >&2; exit 2 ;;
  esac
done
export PATH=/usr/local/cuda/bin:$PATH
command -v nvcc >/dev/null || { echo "gpu-prepare: nvcc not found (CUDA toolkit needed to build)" >&2; exit 1; }
BUNDLER=$ROOT/../shared/gpu/make-mpi-bundle.sh
[ -x "$BUNDLER" ] || [ -f "$BUNDLER" ] || { echo "gpu-prepare: $BUNDLER not found" >&2; exit 1; }

B=build-gpu
mkdir -p "$B"
cmake -S . -B "$B" -DCMAKE_BUILD_TYPE=Release -DMICS_ENABLE_CUDA=ON \
      -DCMAKE_CUDA_ARCHITECTURES="$ARCH" -DMICS_BUILD_TESTS=ON >"$B/configure.log" 2>&1 ||
  { tail -20 "$B/configure.log"; echo "gpu-prepare: cmake configure failed" >&2; exit 1; }

# What the check runs: the device tests and mics-train (when the app exists yet).
TARGETS="test_device_kernels test_device_cuda test_staged_collectives test_model_transformer"
HAVE_TRAIN=0
cmake --build "$B" --target help > "$B/targets.txt" 2>&1 || true
if grep -q '^\.\.\. mics-train$' "$B/targets.txt"; then
  TARGETS="$TARGETS mics-train"; HAVE_TRAIN=1
else
  echo "gpu-prepare: warning: no mics-train target yet; bundling the tests only" >&2
fi
# shellcheck disable=SC2086
cmake --build "$B" -j"$JOBS" --target $TARGETS

mkdir -p .gpu
grep -qx '/.gpu/' .git/info/exclude 2>/dev/null || echo '/.gpu/' >> .git/info/exclude
rm -f .gpu/bundle.tgz .gpu/extra-libs.tgz
PROGS="$B/bin/test_device_kernels $B/bin/test_device_cuda $B/bin/test_staged_collectives $B/bin/test_model_transformer"
[ "$HAVE_TRAIN" = 1 ] && PROGS="$PROGS $B/bin/mics-train"
# shellcheck disable=SC2086
sh "$BUNDLER" --tgz .gpu/bundle.tgz $PROGS | tail -3
cp "$ROOT/../shared/gpu/run-in-bundle.sh" .gpu/
chmod +x .gpu/run-in-bundle.sh

# Libraries the MPI bundle does not carry but our programs need: Boost.Test for the test
# programs, GCC's OpenMP runtime for the CPU backend; and, in lib-fallback/, this
# machine's libstdc++/libgcc_s for a GPU machine whose own are older (gpu-check.sh uses
# them only then). CUDA's own libraries stay behind: the GPU machine has its own.
X=$(mktemp -d); trap 'rm -rf "$X"' EXIT
mkdir -p "$X/lib" "$X/lib-fallback"
for prog in $PROGS; do
  ldd "$prog" | awk '/=> \//{print $3}' | grep -E 'libboost_(unit_test|prg_exec)|libgomp' || true
done | sort -u | while read -r lib; do cp -L "$lib" "$X/lib/"; done
for prog in $PROGS; do
  ldd "$prog" | awk '/=> \//{print $3}' | grep -E 'libstdc\+\+|libgcc_s' || true
done | sort -u | while read -r lib; do cp -L "$lib" "$X/lib-fallback/"; done
tar -C "$X" -czf .gpu/extra-libs.tgz lib lib-fallback
echo "$HAVE_TRAIN" > .gpu/have-train
git rev-parse --short HEAD > .gpu/commit 2>/dev/null || true
# test_model_transformer reads presets from this absolute path (MICS_SOURCE_DIR).
echo "$ROOT" > .gpu/source-dir

size=$(du -cb .gpu/bundle.tgz .gpu/extra-libs.tgz .gpu/run-in-bundle.sh | tail -1 | cut -f1)
limit=$((60 * 1024 * 1024))
echo "gpu-prepare: .gpu/ holds $((size / 1024 / 1024)) MiB (limit 60 MiB): $(ls .gpu | tr '\n' ' ')"
[ "$size" -lt "$limit" ] || { echo "gpu-prepare: bundle too large ($size bytes > $limit)" >&2; exit 1; }
echo "gpu-prepare: ready. On the GPU machine: bash scripts/gpu-check.sh"
