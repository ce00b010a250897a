# shellcheck shell=bash
# The GPU check's steps by name (sourced by gpu-check.sh and gpu-triage.sh after
# gpu-lib.sh). CHECK_STEPS is the order of the check, most informative first; each step's
# first number is its longest expected time, cut to what is left of the budget.
# TRIAGE_STEPS, when set, shortens the training runs (gpu-triage.sh); EXTRA_ARGS are
# appended to the program's arguments (e.g. --run_test=... for a Boost test program).
CHECK_STEPS=(test_device_kernels test_device_cuda gpt2-124m gpt-1.3b staged-w1 staged-w2 staged-w4
             test_model_transformer test_comm_nccl_np1 test_staged_collectives_np2 test_staged_collectives_np4
             gpt2-124m-flash gpt-1.3b-flash gpt-1.3b-recompute)
EXTRA_ARGS=()
BOOST_ARGS=(--color_output=no --report_level=short)
GPU_RUN=(--backend cuda --compute-dtype bf16 --strategy mics --seq 1024 --data synthetic)
steps_or() { echo "${TRIAGE_STEPS:-$1}"; }

gpu_step() {
  local M124=inputs/models/gpt2-124m.cfg M13=inputs/models/gpt-1.3b.cfg
  case $1 in
    test_device_kernels) run_prog "$1" 90 test_device_kernels "${BOOST_ARGS[@]}" "${EXTRA_ARGS[@]}" ;;
    test_device_cuda) run_prog "$1" 150 test_device_cuda "${BOOST_ARGS[@]}" "${EXTRA_ARGS[@]}" ;;
    # The f64 finite-difference check runs on the CPU only: not this check's business.
    test_model_transformer)
      run_prog "$1" 90 test_model_transformer "${BOOST_ARGS[@]}" \
        '--run_test=!model_transformer/gradient_check_f64_both_variants' "${EXTRA_ARGS[@]}" ;;
    # One rank: NcclCollectives' group-of-one paths, without a compute stream (so with
    # the device-synchronising fallback); two GPUs would be needed for NCCL itself.
    test_comm_nccl_np1) run_mpi "$1" 1 60 test_comm_nccl --color_output=no "${EXTRA_ARGS[@]}" ;;
    test_staged_collectives_np2|test_staged_collectives_np4)
      run_mpi "$1" "${1##*_np}" 60 test_staged_collectives --color_output=no "${EXTRA_ARGS[@]}" ;;
    # One GPU, one rank: the compute speed of the engine (no communication at all).
    gpt2-124m) train "$1" 1 90 nccl --model $M124 "${GPU_RUN[@]}" --partition-size 1 \
                 --micro-batch 16 --global-batch 16 --steps "$(steps_or 12)" "${EXTRA_ARGS[@]}" ;;
    gpt-1.3b) train "$1" 1 120 nccl --model $M13 "${GPU_RUN[@]}" --partition-size 1 \
                --micro-batch 8 --global-batch 8 --steps "$(steps_or 8)" "${EXTRA_ARGS[@]}" ;;
    # Ranks sharing the GPU through pinned host buffers, one global batch: 4 ranks are two
    # partition groups of 2, replicated.
    staged-w1|staged-w2|staged-w4)
      local r=${1#staged-w} p
      p=$r; [ "$r" = 4 ] && p=2
      train "$1" "$r" 75 mpi --model $M124 "${GPU_RUN[@]}" --partition-size "$p" --micro-batch 2 \
        --global-batch 8 --steps "$(steps_or 10)" --lr 6e-4 --warmup 2 "${EXTRA_ARGS[@]}" ;;
    gpt2-124m-flash)
      MICS_ATTENTION=flash train "$1" 1 60 nccl --model $M124 "${GPU_RUN[@]}" --partition-size 1 \
        --micro-batch 16 --global-batch 16 --steps "$(steps_or 12)" "${EXTRA_ARGS[@]}" ;;
    gpt-1.3b-flash)
      MICS_ATTENTION=flash train "$1" 1 90 nccl --model $M13 "${GPU_RUN[@]}" --partition-size 1 \
        --micro-batch 8 --global-batch 8 --steps "$(steps_or 8)" "${EXTRA_ARGS[@]}" ;;
    gpt-1.3b-recompute)
      train "$1" 1 90 nccl --model $M13 "${GPU_RUN[@]}" --partition-size 1 --micro-batch 8 \
        --global-batch 8 --steps "$(steps_or 5)" --recompute "${EXTRA_ARGS[@]}" ;;
    *) echo "gpu: no step named '$1'; steps: ${CHECK_STEPS[*]}" >&2; return 2 ;;
  esac
}
