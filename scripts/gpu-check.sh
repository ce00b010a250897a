#!/bin/bash
# The GPU check: one command on a machine with one H100/H200, CUDA 13's libraries and no
# MPI, HDF5, Boost or OpenBLAS, after scripts/gpu-prepare.sh has filled .gpu/ on the build
# machine (docs/GPU.md). From the repository root:
#   bash scripts/gpu-check.sh [--budget SECONDS] [--no-gpu] [--gpu-dir DIR]
# Within the budget (default 390 s, every step and timeout counted), most informative
# first:
#   set-up: unpack the bundle, find the machine's cuBLAS (cuBLASLt beside it), NCCL and
#           cudart, check that every program resolves every library;
#   1. test_device_kernels and test_device_cuda: every kernel against f64 and against the
#      CPU backend at real shapes (each bf16 error printed: observed-errors.txt);
#   2. mics-train on the GPU, bf16, sequence 1024: GPT-2 124M and the 1.3B GPT (MFU);
#   3. MiCS on 1, 2 and 4 ranks sharing the GPU through the host-staged path (--comm mpi):
#      the 2- and 4-rank losses against the 1-rank run;
#   4. test_model_transformer, test_comm_nccl at 1 rank, test_staged_collectives at 2 and
#      4 ranks;
#   5. the fused attention (MICS_ATTENTION=flash) and --recompute runs.
# An NCCL start-up failure is retried once with NCCL_SOCKET_IFNAME=lo NCCL_CUMEM_ENABLE=0,
# then the run falls back to --comm mpi; the table says which ran.
# Results go to $OUT when set (the device tool), else DIR/results: summary.txt (written
# as the check goes), runs.csv, observed-errors.txt and logs.tgz (every log and metrics
# CSV), re-packed after every step: at most 4 files, none in a folder.
# Without a GPU (or with --no-gpu) it checks the plumbing (bundle, libraries, the bundled
# mpirun with 2 ranks on the CPU backend, each program loads), then stops with one
# "no GPU" line: exit 0 with --no-gpu, 2 when a GPU was expected. Exit 1 when anything failed.
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT" || exit 2
GPU_DIR=$ROOT/.gpu; BUDGET=390; NO_GPU=0; PREFIX=""
while [ $# -gt 0 ]; do
  case $1 in
    --budget) BUDGET=$2; shift 2 ;;
    --no-gpu) NO_GPU=1; shift ;;
    --gpu-dir) GPU_DIR=$(cd "$2" && pwd); shift 2 ;;
    -h|--help) sed -n '2,26p' "$0"; exit 0 ;;
    *) echo "gpu-check: unknown option '$1' (use --budget SECONDS, --no-gpu, --gpu-dir DIR)" >&2; exit 2 ;;
  esac
done
# shellcheck source=scripts/gpu-lib.sh
. "$ROOT/scripts/gpu-lib.sh"
gl_init
export NCCL_DEBUG=${NCCL_DEBUG:-WARN}

GPU_NAME=$(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null | head -n 1)
note "date $(date -u +%Y-%m-%dT%H:%M:%SZ), GPU: ${GPU_NAME:-none (nvidia-smi failed)}, commit $(cat "$GPU_DIR/commit" 2>/dev/null || echo ?), budget ${BUDGET}s"
if ! setup_bundle; then print_table; exit 1; fi
link_source_dir

if [ "$NO_GPU" = 1 ] || ! have_gpu; then
  # Everything that needs no device: each program loads and starts, the bundled mpirun
  # runs two ranks.
  ALLOW_SKIP=1
  for t in test_device_kernels test_device_cuda test_staged_collectives test_model_transformer test_comm_nccl; do
    run_prog "load-$t" 30 "$t" --list_content
  done
  run_prog load-mics-train 30 mics-train --help
  run_mpi plumbing-mpirun-np2 2 60 mics-train --model inputs/models/tiny.cfg --backend cpu \
          --threads 1 --data synthetic --steps 3 --global-batch 4 --micro-batch 1
  run_prog test_device_cuda-without-gpu 30 test_device_cuda
  print_table
  if [ "$FAILED" -ne 0 ]; then echo "gpu-check: FAILED before reaching the GPU steps (see $RES)"; exit 1; fi
  if [ "$NO_GPU" = 1 ]; then
    note "no GPU (--no-gpu): plumbing checked, every GPU step left out"; exit 0
  fi
  note "no GPU: no CUDA device is visible to the programs (cudaGetDeviceCount); plumbing checked, GPU steps not run"
  exit 2
fi

# shellcheck source=scripts/gpu-steps.sh
. "$ROOT/scripts/gpu-steps.sh"
for s in "${CHECK_STEPS[@]}"; do gpu_step "$s"; done
compare_losses staged-w1 staged-w2
compare_losses staged-w1 staged-w4
loss_falls staged-w1
print_table
if [ "$FAILED" -ne 0 ]; then echo "gpu-check: FAILED (details above and in $RES)"; exit 1; fi
note "all passed in $(elapsed)s"
