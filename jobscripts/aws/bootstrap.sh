#!/usr/bin/env bash
# bootstrap.sh --role head|compute [--shared DIR] [--repo URL] [--ref REF]
#
# ParallelCluster OnNodeConfigured action for mics (jobscripts/aws/cluster.yaml; upload
# this file to the S3 bucket the YAML names). Runs as root on every node once the node has
# joined the cluster; ParallelCluster passes the Args from the YAML. Written for the
# ParallelCluster Ubuntu 24.04 image, which already has Slurm, Open MPI
# (/opt/amazon/openmpi), the EFA software (libfabric in /opt/amazon/efa), the NVIDIA driver
# and CUDA (/usr/local/cuda). What this script adds:
#   every node   Ubuntu packages: a C++20 compiler, CMake, Boost (program_options, test),
#                OpenBLAS, zlib, hwloc; NCCL (libnccl2, libnccl-dev from NVIDIA's CUDA
#                apt repository) where the image has none.
#   GPU nodes    NCCL's EFA plugin (aws-ofi-nccl) in /opt/amazon/ofi-nccl, built from its
#                release tarball only when the image does not ship it.
#   head node    once, on the shared file system: parallel HDF5 built against the image's
#                Open MPI (DIR/mics/deps/hdf5; Ubuntu's libhdf5-openmpi is built against
#                Ubuntu's own Open MPI, a second MPI), a checkout of mics (DIR/mics/src)
#                and its build with CUDA for A100 (sm_80, p4d) and H100 (sm_90, p5) in
#                DIR/mics/src/build. The head node needs no GPU for that.
# Idempotent: each piece is checked first and skipped when present (a rerun takes
# seconds), so it is safe on every boot and on nodes that join later. Everything goes to
# /var/log/mics-bootstrap.log; a failure is one line "bootstrap.sh: error: ..." naming
# the missing piece (also the last line of that log), and a non-zero exit, which makes
# ParallelCluster report the node (or the cluster, for the head node) as failed.
# Environment overrides: MICS_REPO, MICS_REF, MICS_HDF5_VERSION, MICS_OFI_NCCL_VERSION,
# MICS_BOOTSTRAP_LOG (the log file).
set -euo pipefail

log=${MICS_BOOTSTRAP_LOG:-/var/log/mics-bootstrap.log}
role=
shared=/fsx
repo=${MICS_REPO:-https://github.com/CHANGE-ME/mics.git}   # CHANGE: your mics repository
ref=${MICS_REF:-main}
hdf5_version=${MICS_HDF5_VERSION:-1.14.5}
ofi_version=${MICS_OFI_NCCL_VERSION:-1.13.2}
ompi=/opt/amazon/openmpi
cuda=/usr/local/cuda

# The error line goes to the log and to the stderr ParallelCluster captures (fd 3, saved
# before the log takes over stdout and stderr).
exec 3>&2
fail() {
  echo "bootstrap.sh: error: $*" >> "$log"
  echo "bootstrap.sh: error: $*" >&3
  exit 1
}
step() { echo "bootstrap.sh: $(date -u +%H:%M:%S) $*"; }

while [ $# -gt 0 ]; do
  case $1 in
    --role) role=${2:-}; shift 2 ;;
    --shared) shared=${2:-}; shift 2 ;;
    --repo) repo=${2:-}; shift 2 ;;
    --ref) ref=${2:-}; shift 2 ;;
    *) fail "unknown argument '$1' (usage: bootstrap.sh --role head|compute [--shared DIR] [--repo URL] [--ref REF])" ;;
  esac
done
case $role in head|compute) ;; *) fail "--role must be head or compute (got '$role')" ;; esac
[ "$(id -u)" -eq 0 ] || fail "must run as root (ParallelCluster runs custom actions as root)"
exec >>"$log" 2>&1
step "start: role $role, shared $shared"

check_image() {
  local id="" version=""
  # shellcheck source=/dev/null
  [ -f /etc/os-release ] && { id=$(. /etc/os-release; echo "$ID"); version=$(. /etc/os-release; echo "$VERSION_ID"); }
  [ "$id $version" = "ubuntu 24.04" ] ||
    fail "this script is for Ubuntu 24.04 (ParallelCluster Os: ubuntu2404); this node runs '$id $version'"
  [ -x "$ompi/bin/mpicc" ] || fail "Open MPI not found in $ompi; use a ParallelCluster image (it ships Amazon's Open MPI)"
  [ -x "$cuda/bin/nvcc" ] || fail "CUDA not found in $cuda; use a ParallelCluster image with CUDA, or install the CUDA toolkit"
  mountpoint -q "$shared" || fail "$shared is not mounted; check SharedStorage in cluster.yaml"
}

# apt_install PACKAGE...: only the missing ones; retries once (apt locks at boot).
apt_install() {
  local p missing=()
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  step "apt-get install ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  for _ in 1 2; do
    apt-get update -qq && apt-get install -y -qq --no-install-recommends "${missing[@]}" && return 0
    sleep 30
  done
  return 1
}

install_packages() {
  apt_install build-essential cmake pkg-config zlib1g-dev libhwloc-dev curl git \
    libboost-program-options-dev libboost-test-dev libopenblas-dev ||
    fail "apt-get could not install the build packages (no route to the Ubuntu mirrors? the subnet needs NAT)"
}

install_nccl() {
  [ -f /usr/include/nccl.h ] || [ -f "$cuda/include/nccl.h" ] && return 0
  if ! apt_install libnccl2 libnccl-dev; then
    # NVIDIA's CUDA repository, for images that do not have it configured.
    step "adding NVIDIA's CUDA apt repository for NCCL"
    local deb=/tmp/cuda-keyring.deb
    if ! { curl -fsSL -o "$deb" https://developer.download.nvidia.com/compute/cuda/repos/ubuntu2404/x86_64/cuda-keyring_1.1-1_all.deb &&
           dpkg -i "$deb" && apt_install libnccl2 libnccl-dev; }; then
      fail "NCCL (libnccl2, libnccl-dev) not installed: neither the image's apt sources nor NVIDIA's CUDA repository provided it"
    fi
  fi
}

# NCCL reaches EFA only through this plugin; without it NCCL uses TCP sockets, an order of
# magnitude slower between p4d/p5 nodes.
install_ofi_nccl() {
  local prefix=/opt/amazon/ofi-nccl src
  compgen -G "$prefix/lib*/libnccl-net*.so" >/dev/null && return 0
  [ -d /opt/amazon/efa ] || fail "the EFA software (/opt/amazon/efa) is missing; aws-ofi-nccl needs its libfabric"
  step "building aws-ofi-nccl $ofi_version (the image has none)"
  src=$(mktemp -d)
  curl -fsSL "https://github.com/aws/aws-ofi-nccl/releases/download/v$ofi_version/aws-ofi-nccl-$ofi_version.tar.gz" |
    tar -xz -C "$src" --strip-components=1 ||
    fail "could not download aws-ofi-nccl $ofi_version (set MICS_OFI_NCCL_VERSION to a release that exists)"
  (cd "$src" && ./configure --prefix="$prefix" --with-libfabric=/opt/amazon/efa --with-cuda="$cuda" \
     --with-mpi="$ompi" --disable-tests && make -j "$(nproc)" && make install) ||
    fail "aws-ofi-nccl $ofi_version did not build; see $log"
  rm -rf "$src"
}

# build_hdf5 PREFIX: parallel HDF5 against the image's Open MPI, once.
build_hdf5() {
  local prefix=$1 src
  [ -f "$prefix/.mics-built" ] && return 0
  step "building parallel HDF5 $hdf5_version into $prefix (about 10 minutes, once)"
  src=$(mktemp -d)
  curl -fsSL "https://github.com/HDFGroup/hdf5/releases/download/hdf5_$hdf5_version/hdf5-$hdf5_version.tar.gz" |
    tar -xz -C "$src" --strip-components=1 ||
    fail "could not download HDF5 $hdf5_version (set MICS_HDF5_VERSION to a release that exists)"
  (cd "$src" && CC=$ompi/bin/mpicc ./configure --prefix="$prefix" --enable-parallel \
     --enable-build-mode=production --disable-fortran --disable-cxx --disable-tests &&
   make -j "$(nproc)" && make install) || fail "parallel HDF5 $hdf5_version did not build; see $log"
  touch "$prefix/.mics-built"
  rm -rf "$src"
}

# build_mics ROOT: the checkout and its build on the shared file system, once per commit.
build_mics() {
  local root=$1 head
  if [ ! -d "$root/src/.git" ]; then
    step "cloning $repo ($ref) into $root/src"
    git clone --quiet "$repo" "$root/src" || fail "git clone $repo failed (set --repo or MICS_REPO to your mics repository)"
  fi
  if ! { git -C "$root/src" fetch --quiet origin "$ref" && git -C "$root/src" checkout --quiet FETCH_HEAD; }; then
    fail "could not check out $ref from $repo"
  fi
  head=$(git -C "$root/src" rev-parse HEAD)
  if [ "$(cat "$root/src/build/.mics-built" 2>/dev/null)" = "$head" ]; then
    step "mics $head already built"
    return 0
  fi
  step "building mics $head"
  PATH=$cuda/bin:$ompi/bin:$PATH cmake -S "$root/src" -B "$root/src/build" -DCMAKE_BUILD_TYPE=Release \
    -DMICS_ENABLE_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES="80;90" -DMICS_BUILD_TESTS=OFF \
    -DMPI_C_COMPILER="$ompi/bin/mpicc" -DMPI_CXX_COMPILER="$ompi/bin/mpicxx" \
    -DHDF5_ROOT="$root/deps/hdf5" -DHDF5_PREFER_PARALLEL=TRUE ||
    fail "cmake could not configure mics; see $log"
  PATH=$cuda/bin:$ompi/bin:$PATH cmake --build "$root/src/build" -j "$(nproc)" ||
    fail "mics did not build; see $log"
  echo "$head" > "$root/src/build/.mics-built"
  step "built $root/src/build/bin/mics-train"
}

check_image
install_packages
install_nccl
if [ "$role" = compute ] && [ -e /dev/nvidia0 ]; then install_ofi_nccl; fi
if [ "$role" = head ]; then
  mkdir -p "$shared/mics/deps"
  # One builder at a time, even if a second head-node action or a manual rerun overlaps:
  # mkdir is atomic on Lustre and NFS alike.
  lock=$shared/mics/.bootstrap-lock
  for _ in $(seq 360); do mkdir "$lock" 2>/dev/null && break; sleep 10; done
  [ -d "$lock" ] || fail "$lock held for an hour; remove it if no bootstrap is running"
  trap 'rmdir "$lock" 2>/dev/null || true' EXIT
  build_hdf5 "$shared/mics/deps/hdf5"
  build_mics "$shared/mics"
fi
# Every node finds the shared HDF5 (and the plugin) at run time without LD_LIBRARY_PATH.
echo "$shared/mics/deps/hdf5/lib" > /etc/ld.so.conf.d/mics.conf
[ -d /opt/amazon/ofi-nccl/lib ] && echo /opt/amazon/ofi-nccl/lib >> /etc/ld.so.conf.d/mics.conf
ldconfig
step "done"
