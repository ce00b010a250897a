#!/usr/bin/env bash
# slurm_requeue.sh MICS_TRAIN SOURCE_DIR timelimit|scancel|cancel [LAUNCHER]
# (LAUNCHER overrides each mode's MICS_LAUNCHER, for trying the other one by hand)
#
# A job stopped by Slurm continues where it stopped and ends as an uninterrupted run would.
# On a private two-node Slurm (cluster.sh), 4 ranks (2 nodes x 2, mics p=4 hierarchical,
# tiny model) train through a job script:
#   timelimit  jobscripts/mics-train.sbatch (mpirun) with a one-minute time limit and
#              --signal=B:USR1@50: Slurm signals the script, the ranks checkpoint, the
#              script requeues the job, the next start resumes (as often as it takes);
#   scancel    jobscripts/mics-train-gpu.sbatch (srun, on fake GPUs, --backend cpu)
#              stopped with `scancel --signal=USR1 JOB` after a few steps: requeued, resumed;
#   cancel     jobscripts/mics-train.sbatch (srun) cancelled with plain `scancel JOB`
#              (SIGTERM): it saves and stays cancelled; a new job with MICS_RUN_DIR set to
#              the first job's run folder finishes the run.
# Checks: the job ends COMPLETED (after at least one requeue, or in the second job); the
# log has mics-train's "stopped by SIG... at step N; saved ..." line and the script's
# requeue/resume lines; the run folder's metrics.csv holds every step once, and its step
# and loss columns equal, to the last digit, those of the same training run uninterrupted
# with mpirun outside Slurm; no process is left when the job has ended.
set -euo pipefail
train=$1
src=$2
mode=$3
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=test/slurm/cluster.sh
source "$here/cluster.sh" "slurm_requeue_$mode"
[ -x "$train" ] || fail "$train is not an executable"
# shellcheck source=scripts/env.sh
source "$src/scripts/env.sh"

gpus=0
[ "$mode" = scancel ] && gpus=2
cluster_start "$gpus"
wrapper=$(rank_wrapper "$train")
common=(--model "$src/inputs/models/tiny.cfg" --data synthetic --global-batch 8 --micro-batch 1
        --hierarchical --threads 1 --log-every 100)

# reference STEPS CSV: the same training, uninterrupted, without Slurm. Prints seconds.
# Marked like the cluster's processes, so that the cleanup stops it if the test fails.
reference() {
  local t0
  t0=$(date +%s.%N)
  env "$marker" mpirun -np 4 --bind-to none "$train" "${common[@]}" --steps "$1" --ranks-per-node 2 \
    --partition-size 4 --metrics "$2" > "$D/reference.log" 2>&1 ||
    { tail -n 5 "$D/reference.log" >&2; fail "the uninterrupted reference run failed"; }
  echo "$(date +%s.%N) - $t0" | bc
}

# submit_train [EXPORTS]: the training job through $script; sets job, out, run.
submit_train() {
  submit -J requeue -N 2 --ntasks-per-node=2 "${slurm_args[@]}" \
    --export="ALL,MICS_LAUNCHER=$launcher,MICS_HOME=$src,MICS_TRAIN=$wrapper,MICS_PARTITION_SIZE=4${1:+,$1}" \
    "$script" "${common[@]}" --steps "$steps"
  out=$D/submit/requeue-$job.out
  run=${run:-$D/submit/runs/requeue-$job}
  echo "$test_name: submitted job $job"
}

# stop_after ROWS SCANCEL_ARGS...: once metrics.csv has ROWS rows, scancel the job.
stop_after() {
  local rows=$1
  shift
  for _ in $(seq 300); do   # 60 s for the first rows of metrics
    [ -f "$run/metrics.csv" ] && [ "$(wc -l < "$run/metrics.csv")" -gt "$rows" ] && break
    sleep 0.2
  done
  [ -f "$run/metrics.csv" ] || fail "job $job wrote no metrics within 60 s"
  scancel "$@" "$job" || fail "scancel $* $job failed"
  echo "$test_name: scancel $* after $(( $(wc -l < "$run/metrics.csv") - 1 )) steps"
}

# ended JOB STATE: the job is in STATE with the exit code that goes with it; prints its log.
ended() {
  local state exitcode
  state=$(job_field "$1" JobState)
  exitcode=$(job_field "$1" ExitCode)
  echo "$test_name: job $1 $state, exit code $exitcode, ${restarts:-0} restarts, $(( $(date +%s) - t0 )) s"
  grep -v '^step ' "$D/submit/requeue-$1.out" || true
  [ "$state" = "$2" ] || fail "job $1 ended $state (exit code $exitcode), expected $2"
  if [ "$2" = COMPLETED ] && [ "$exitcode" != 0:0 ]; then fail "job $1 exit code $exitcode"; fi
}

script=$src/jobscripts/mics-train.sbatch
launcher=srun
steps=400
case $mode in
  timelimit)
    # Slurm checks time limits on a periodic tick (about 30 s), so the signal comes 10-40
    # s into a start. The run is sized to 40 s of training alone from a short timing run,
    # and the reference runs beside the job (below), which roughly halves the speed of
    # both, so the first start is always signalled; the requeued start gets a longer
    # limit (wait_job_requeued) so that the run then finishes instead of being stopped
    # again every half minute.
    t=$(reference 300 "$D/calibrate.csv")
    steps=$(echo "s = 40 * 300 / $t; if (s < 600) s = 600; if (s > 30000) s = 30000; s / 1" | bc)
    echo "$test_name: 300 steps took $t s; training $steps steps"
    slurm_args=(--time=1 --signal=B:USR1@50)
    launcher=mpirun ;;
  scancel)
    script=$src/jobscripts/mics-train-gpu.sbatch
    slurm_args=(--time=5 --gpus-per-node=2 --cpus-per-task=1)
    common+=(--backend cpu) ;;
  cancel)
    slurm_args=(--time=5) ;;
  *) fail "mode $mode is not timelimit, scancel or cancel" ;;
esac
launcher=${4:-$launcher}
if [ "$mode" = timelimit ]; then
  reference "$steps" "$D/reference.csv" > "$D/reference.time" &
  ref_pid=$!
else
  t=$(reference "$steps" "$D/reference.csv")
  echo "$test_name: uninterrupted reference: $steps steps in $t s"
fi

t0=$(date +%s)
run=
submit_train
sig=USR1
case $mode in
  timelimit)
    wait_job_requeued "$job" 240 TimeLimit=5 ;;
  scancel)
    stop_after 20 --signal=USR1
    wait_job_requeued "$job" 240 ;;
  cancel)
    sig=TERM
    stop_after 20
    wait_job "$job" 60
    ended "$job" CANCELLED
    grep -q "stopped by SIGTERM with a checkpoint in $run; not requeueing" "$out" ||
      fail "the script did not report the cancelled job's checkpoint"
    first_out=$out
    submit_train "MICS_RUN_DIR=$run"
    wait_job_requeued "$job" 240 ;;
esac
ended "$job" COMPLETED
if [ "$mode" = cancel ]; then   # both jobs' logs, checked below as one
  cat "$first_out" "$out" > "$D/both.out"
  out=$D/both.out
fi
if [ "$mode" != cancel ]; then
  [ "${restarts:-0}" -ge 1 ] || fail "job $job was never requeued (the run finished before any signal)"
  grep -q "requeueing job $job" "$out" || fail "the script did not requeue the job"
  grep -q "start 2 of job $job: resuming from $run/checkpoints" "$out" || fail "the requeued start did not resume"
else
  grep -q "start 1 of job $job: resuming from $run/checkpoints" "$out" || fail "the new job did not resume the run folder"
fi
grep -q "^mics-train: stopped by SIG$sig at step [0-9]*; saved $run/checkpoints/step_[0-9]*\.h5; resume with --resume latest" "$out" ||
  fail "no 'mics-train: stopped by SIG$sig at step N; saved ...' line in the log"

if [ -n "${ref_pid:-}" ]; then
  wait "$ref_pid" || fail "the uninterrupted reference run failed"
  echo "$test_name: uninterrupted reference (beside the job): $steps steps in $(cat "$D/reference.time") s"
fi
# Every step once, in order, and the losses of the uninterrupted run to the last digit.
cut -d, -f1,2 "$D/reference.csv" > "$D/reference.loss"
cut -d, -f1,2 "$run/metrics.csv" > "$D/job.loss"
if ! cmp -s "$D/reference.loss" "$D/job.loss"; then
  diff "$D/reference.loss" "$D/job.loss" | head -n 10
  fail "step and loss columns of $run/metrics.csv differ from the uninterrupted run's"
fi
echo "$test_name: $steps steps, final loss $(tail -n 1 "$D/job.loss" | cut -d, -f2) = uninterrupted run's"
no_job_processes
job=
echo "$test_name: PASS"
