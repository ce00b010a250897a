#!/bin/bash
# The second command after a failed GPU check: reruns ONE step of it with
# CUDA_LAUNCH_BLOCKING=1 (a failing kernel reports at its own launch), NCCL_DEBUG=INFO, and
# under compute-sanitizer (memcheck) when the machine has it, packing its output like the
# check (triage-summary.txt, triage-runs.csv, triage-logs.tgz; see docs/GPU.md):
#   bash scripts/gpu-triage.sh STEP [--budget SECONDS] [--no-sanitizer] [-- PROGRAM_ARGS...]
# STEP is a row of the check's table (test_device_cuda, gpt-1.3b, staged-w2, ...; --list
# shows them). PROGRAM_ARGS go to the program, e.g. one Boost test case:
#   bash scripts/gpu-triage.sh test_device_cuda -- --run_test=cuda_backend/attention_shapes
# Training runs are cut to 3 steps (compute-sanitizer slows kernels 10-100x).
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT" || exit 2
GPU_DIR=$ROOT/.gpu; BUDGET=240; SANITIZE=1; PREFIX=triage-; TAG=gpu-triage; STEP=""; ARGS=()
. "$ROOT/scripts/gpu-lib.sh"
. "$ROOT/scripts/gpu-steps.sh"
while [ $# -gt 0 ]; do
  case $1 in
    --budget) BUDGET=$2; shift 2 ;;
    --no-sanitizer) SANITIZE=0; shift ;;
    --gpu-dir) GPU_DIR=$(cd "$2" && pwd); shift 2 ;;
    --list) echo "${CHECK_STEPS[*]}"; exit 0 ;;
    -h|--help) sed -n '2,12p' "$0"; exit 0 ;;
    --) shift; ARGS=("$@"); break ;;
    -*) echo "gpu-triage: unknown option '$1' (use STEP [--budget S] [--no-sanitizer] [-- ARGS])" >&2; exit 2 ;;
    *) [ -z "$STEP" ] || { echo "gpu-triage: one step at a time ('$STEP' and '$1' given)" >&2; exit 2; }
       STEP=$1; shift ;;
  esac
done
[ -n "$STEP" ] || { echo "gpu-triage: name the step to rerun; steps: ${CHECK_STEPS[*]}" >&2; exit 2; }
case " ${CHECK_STEPS[*]} " in *" $STEP "*) ;; *)
  echo "gpu-triage: no step named '$STEP'; steps: ${CHECK_STEPS[*]}" >&2; exit 2 ;; esac

gl_init
export CUDA_LAUNCH_BLOCKING=1 NCCL_DEBUG=INFO NCCL_DEBUG_SUBSYS=INIT,ENV,NET
GPU_NAME=$(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null | head -n 1)
note "triage of $STEP: date $(date -u +%Y-%m-%dT%H:%M:%SZ), GPU: ${GPU_NAME:-none}, commit $(cat "$GPU_DIR/commit" 2>/dev/null || echo ?), budget ${BUDGET}s"
nvidia-smi > "$WORK/nvidia-smi.txt" 2>&1 || true
setup_bundle || { print_table; exit 1; }
link_source_dir
have_gpu || { note "no GPU: no CUDA device is visible to the programs; nothing to triage"; exit 2; }

SAN=""
if [ "$SANITIZE" = 1 ]; then
  SAN=$(command -v compute-sanitizer || ls /usr/local/cuda*/bin/compute-sanitizer /usr/local/cuda*/compute-sanitizer/compute-sanitizer 2>/dev/null | head -n 1)
fi
if [ -n "$SAN" ]; then
  # One log per process (%p), kept in the archive; a memory error fails the run.
  WRAP=("$SAN" --tool memcheck --error-exitcode 99 --log-file "$WORK/$STEP.sanitizer.%p.log")
  note "under $SAN (memcheck), CUDA_LAUNCH_BLOCKING=1, NCCL_DEBUG=INFO"
else
  note "compute-sanitizer not found (or --no-sanitizer): CUDA_LAUNCH_BLOCKING=1 and NCCL_DEBUG=INFO only"
fi
TRIAGE_STEPS=3
EXTRA_ARGS=("${ARGS[@]}")
gpu_step "$STEP"
grep -h -m5 -E 'ERROR SUMMARY|Invalid|out of bounds|error' "$WORK/$STEP".sanitizer.*.log 2>/dev/null |
  sed 's/^/  sanitizer: /' | tee -a "$SUMMARY"
print_table
[ "$FAILED" -eq 0 ] && note "$STEP passed under triage" || note "$STEP failed under triage (logs in ${PREFIX}logs.tgz)"
[ "$FAILED" -eq 0 ]
