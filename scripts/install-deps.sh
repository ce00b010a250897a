#!/usr/bin/env bash
# Installs what mics needs on Debian 12, as root. Idempotent: when every package is
# already present it only checks and returns (well under a second).
set -euo pipefail

packages=(
  build-essential cmake pkg-config
  openmpi-bin libopenmpi-dev              # MPI (bootstrap and CPU data path)
  libhdf5-openmpi-dev hdf5-tools          # parallel HDF5 checkpoints, h5dump
  libboost-program-options-dev libboost-test-dev
  libopenblas-dev                         # BLAS for the CPU backend
  python3-h5py python3-matplotlib         # checkpoint interoperability test, plots
  slurm-wlm munge                         # the Slurm job-script test (test/slurm)
  shellcheck python3-venv                 # job-script lint; venv for the ParallelCluster schema test (test/aws)
  iproute2                                # emulated nodes: ip netns, tc tbf (scripts/emu-cluster.sh)
)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done

if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "install-deps: missing packages (${missing[*]}); run this script as root, or install them with apt-get" >&2
    exit 1
  fi
  echo "install-deps: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

# The CUDA toolkit (nvcc, cuBLAS, NCCL) is not a Debian package here; it is used when
# present and the build goes CPU-only when it is not.
if ! command -v nvcc >/dev/null 2>&1 && [ -x /usr/local/cuda/bin/nvcc ]; then
  echo "install-deps: note: nvcc is in /usr/local/cuda/bin but not on PATH; the build adds it"
fi
