# shellcheck shell=bash
# mics-job.sh: what every mics Slurm job script does around mics-train, sourced by
# jobscripts/mics-train.sbatch (CPU) and jobscripts/mics-train-gpu.sbatch (GPUs):
#   - one run folder per job, runs/<job name>-<job id>/, holding checkpoints/ and
#     metrics.csv (MICS_RUN_DIR names another one, e.g. to continue an earlier job);
#   - the layout mics-train is given (--ranks-per-node, --partition-size) from the
#     allocation, checked before any rank starts: a request that cannot work is one
#     "error:" line in the job log and exit status 1;
#   - resume: when the run's checkpoint folder holds a checkpoint (a requeued start,
#     SLURM_RESTART_COUNT > 0, or a rerun into MICS_RUN_DIR), --resume latest is added, so
#     training continues from it and mics-train appends to metrics.csv (a --checkpoint-dir
#     from the arguments counts only on a requeued start or with MICS_RUN_DIR);
#   - signals: SIGUSR1 (what `#SBATCH --signal=B:USR1@T` sends T seconds before the time
#     limit, or `scancel --signal=USR1 --batch`), SIGTERM and SIGINT are forwarded to the
#     ranks; mics-train then saves a checkpoint at the next step boundary and exits with
#     status 75. After SIGUSR1 the script requeues its own job (scontrol requeue), which
#     starts again from that checkpoint; after SIGTERM (scancel, preemption) it does not:
#     a cancelled job stays cancelled, a preempted one is requeued by Slurm itself.
# The caller sets $job_script (its name, for messages) and calls, in order:
#   mics_job_init; mics_job_layout RANKS_PER_NODE "$@"; mics_job_run_dir "$@";
#   mics_job_launch PROGRAM... (the launcher and its options, then the program).
# Results: the array $mics_extra (options added to mics-train's), $run_dir, $metrics.

# Exit status mics-train uses for "stopped by a signal, checkpoint saved" (EX_TEMPFAIL).
readonly MICS_STOPPED=75
: "${job_script:=mics-job}"

mics_fail() { echo "$job_script: error: $*" >&2; exit 1; }
mics_note() { echo "$job_script: $*"; }

has_opt() {  # has_opt NAME ARGS...: whether --NAME or --NAME=... is among ARGS
  local name=$1 a; shift
  for a in "$@"; do
    case $a in --"$name"|--"$name"=*) return 0 ;; esac
  done
  return 1
}
opt_value() {  # opt_value NAME ARGS...: the value of --NAME V or --NAME=V, if given
  local name=$1; shift
  while [ $# -gt 0 ]; do
    case $1 in
      --"$name"=*) echo "${1#*=}"; return ;;
      --"$name") echo "${2:-}"; return ;;
    esac
    shift
  done
}

# mics_job_init: the checkout, the program, the environment. Sets submit_dir, mics_home,
# train.
mics_job_init() {
  : "${SLURM_JOB_ID:?run this script with sbatch (or inside salloc)}"
  submit_dir=${SLURM_SUBMIT_DIR:-$PWD}
  cd "$submit_dir" || mics_fail "cannot enter the submit directory $submit_dir"
  # sbatch runs a copy of the script from Slurm's spool folder, so $0 does not locate the
  # checkout; the submit directory (or MICS_HOME) does.
  mics_home=${MICS_HOME:-$submit_dir}
  train=${MICS_TRAIN:-$mics_home/build/bin/mics-train}
  [ -x "$train" ] ||
    mics_fail "$train not found; build first (bash scripts/build.sh) or set MICS_HOME to the checkout"
  # Lets Open MPI run as root (containers, test machines) and sets passive OpenMP waits.
  # shellcheck source=/dev/null
  source "$mics_home/scripts/env.sh"
  mics_extra=()
}

# mics_job_layout RANKS_PER_NODE ARGS...: adds --ranks-per-node and --partition-size
# unless ARGS give them, and refuses a partition size that does not fit the node shape.
# RANKS_PER_NODE is 0 when the allocation is not uniform (mics then detects nodes).
mics_job_layout() {
  local rpn=$1 world=${SLURM_NTASKS:?} strategy p
  shift
  if has_opt ranks-per-node "$@"; then
    rpn=$(opt_value ranks-per-node "$@")
  else
    mics_extra+=(--ranks-per-node "$rpn")
  fi
  strategy=$(opt_value strategy "$@")
  [ -z "$strategy" ] || [ "$strategy" = mics ] || return 0
  if has_opt partition-size "$@"; then
    p=$(opt_value partition-size "$@")
  else
    # One node per partition group: parameter gathers stay on the node's fast links and
    # only the once-per-step replication all-reduce crosses nodes. Without a known layout,
    # mics picks the smallest node-aligned p whose model states fit memory.
    p=${MICS_PARTITION_SIZE:-$rpn}
    [ "$p" = 0 ] && p=auto
    mics_extra+=(--partition-size "$p")
  fi
  [ "$p" = auto ] || [ "$rpn" = 0 ] || mics_check_partition "$p" "$world" "$rpn"
}

# mics_check_partition P W RPN: the rule mics-train applies (p divides W and is a multiple
# or a divisor of the ranks per node), checked here so that a wrong request fails in one
# line before Slurm starts any rank.
mics_check_partition() {
  local p=$1 world=$2 rpn=$3 d valid=()
  for (( d = 1; d <= world; d++ )); do
    (( world % d == 0 )) || continue
    if (( d >= rpn ? d % rpn == 0 : rpn % d == 0 )); then valid+=("$d"); fi
  done
  case " ${valid[*]} " in *" $p "*) return 0 ;; esac
  local IFS=,
  mics_fail "partition size $p does not fit $world ranks on $((world / rpn)) nodes of $rpn (valid: ${valid[*]}); set MICS_PARTITION_SIZE or --partition-size to one of them"
}

# mics_job_run_dir ARGS...: the run folder, its checkpoint folder and metrics file, and
# --resume latest when there is something to resume from.
mics_job_run_dir() {
  local runs=${MICS_RUNS_DIR:-$submit_dir/runs} ckpt
  run_dir=${MICS_RUN_DIR:-$runs/${SLURM_JOB_NAME:-mics}-$SLURM_JOB_ID}
  mkdir -p "$run_dir" || mics_fail "cannot create the run folder $run_dir"
  if has_opt checkpoint-dir "$@"; then
    ckpt=$(opt_value checkpoint-dir "$@")
  else
    ckpt=$run_dir/checkpoints
    mics_extra+=(--checkpoint-dir "$ckpt")
  fi
  if has_opt metrics "$@"; then
    metrics=$(opt_value metrics "$@")
  else
    metrics=$run_dir/metrics.csv
    mics_extra+=(--metrics "$metrics")
  fi
  local restarts=${SLURM_RESTART_COUNT:-0} ours=0
  # A folder the arguments name may hold another run's checkpoints: on a first start
  # mics-train decides (it refuses a fresh run into it); the job's own folder, a requeued
  # start or MICS_RUN_DIR mean "continue this run".
  if ! has_opt checkpoint-dir "$@" || [ "$restarts" -gt 0 ] || [ -n "${MICS_RUN_DIR:-}" ]; then ours=1; fi
  if [ "$ours" = 1 ] && ! has_opt resume "$@" &&
     { [ -f "$ckpt/latest" ] || compgen -G "$ckpt/step_*.h5" >/dev/null; }; then
    mics_extra+=(--resume latest)
    mics_note "start $((restarts + 1)) of job $SLURM_JOB_ID: resuming from $ckpt ($(head -n 1 "$ckpt/latest" 2>/dev/null || echo 'highest step'))"
  elif [ "$restarts" -gt 0 ]; then
    mics_note "start $((restarts + 1)) of job $SLURM_JOB_ID: no checkpoint in $ckpt yet, starting from step 0"
  fi
}

# mics_job_launch COMMAND...: runs the launcher in the background so that this shell can
# take the signals Slurm sends it, forwards each to the launcher (mpirun and srun both
# pass SIGUSR1 and SIGTERM on to the ranks), and acts on the ranks' exit status.
mics_job_launch() {
  local rc=0 got=
  "$@" &
  local child=$!
  # shellcheck disable=SC2064  # the child's pid is fixed now
  for sig in USR1 TERM INT; do
    trap "got=\${got:-$sig}; mics_forward $sig $child" "$sig"
  done
  # wait returns early (status > 128) each time a trapped signal arrives; the ranks are
  # still saving then, so wait again until the launcher itself has exited.
  while :; do
    rc=0
    wait "$child" || rc=$?
    kill -0 "$child" 2>/dev/null || break
  done
  trap - USR1 TERM INT
  mics_job_finish "$rc" "$got"
}

mics_forward() {
  mics_note "got SIG$1; forwarding it to the ranks (they save a checkpoint at the next step boundary)"
  kill -s "$1" "$2" 2>/dev/null || true
}

# mics_job_finish RC SIGNAL: requeue after a checkpointed stop caused by SIGUSR1 (time
# limit or a user's request), up to MICS_MAX_RESTARTS starts; otherwise pass RC on.
mics_job_finish() {
  local rc=$1 sig=$2 restarts=${SLURM_RESTART_COUNT:-0} max=${MICS_MAX_RESTARTS:-20}
  if [ "$rc" -ne "$MICS_STOPPED" ]; then
    [ "$rc" -eq 0 ] && mics_note "finished; metrics in $metrics, checkpoints in $run_dir"
    return "$rc"
  fi
  if [ "$sig" = TERM ] || [ "$sig" = INT ]; then
    mics_note "stopped by SIG$sig with a checkpoint in $run_dir; not requeueing (a preempted job is requeued by Slurm; after scancel resubmit with MICS_RUN_DIR=$run_dir to continue)"
    return "$rc"
  fi
  if [ "$restarts" -ge "$max" ]; then
    mics_note "stopped with a checkpoint after $((restarts + 1)) starts (MICS_MAX_RESTARTS=$max); resubmit with MICS_RUN_DIR=$run_dir to continue"
    return "$rc"
  fi
  mics_note "stopped with a checkpoint; requeueing job $SLURM_JOB_ID (start $((restarts + 2)) resumes from it)"
  scontrol requeue "$SLURM_JOB_ID" ||
    { mics_note "scontrol requeue failed; resubmit with MICS_RUN_DIR=$run_dir to continue"; return "$rc"; }
  return 0
}
