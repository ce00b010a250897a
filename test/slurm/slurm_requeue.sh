#!/usr/bin/env bash
# slurm_requeue.sh MICS_TRAIN SOURCE_DIR timelimit|scancel
#
# A job stopped by Slurm continues where it stopped and ends as an uninterrupted run would.
# On a private two-node Slurm (cluster.sh), 4 ranks (2 nodes x 2, mics p=4 hierarchical,
# tiny model) train through a job script:
#   timelimit  jobscripts/mics-train.sbatch (mpirun) with a one-minute time limit and
#              --signal=B:USR1@50: Slurm signals the script, the ranks checkpoint, the
#              script requeues the job, the next start resumes (as often as it takes);
#   scancel    jobscripts/mics-train-gpu.sbatch (srun, on fake GPUs, --backend cpu)
#              stopped with `scancel --signal=USR1 JOB` after a few steps.
# Checks: the job ends COMPLETED after at least one requeue; the log has mics-train's
# "stopped by SIGUSR1 ... saved" line and the script's requeue and resume lines; the run
# folder's metrics.csv holds every step once, and its step and loss columns equal, to the
# last digit, those of the same training run uninterrupted with mpirun outside Slurm; no
# process is left when the job has ended.
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
reference() {
  local t0
  t0=$(date +%s.%N)
  mpirun -np 4 --bind-to none "$train" "${common[@]}" --steps "$1" --ranks-per-node 2 \
    --partition-size 4 --metrics "$2" > "$D/reference.log" 2>&1 ||
    { tail -n 5 "$D/reference.log"; fail "the uninterrupted reference run failed"; }
  echo "$(date +%s.%N) - $t0" | bc
}

if [ "$mode" = timelimit ]; then
  # Slurm checks time limits on a periodic tick (about 30 s), so the signal comes 10-40 s
  # into each start; the run is sized to about 45 s of training from a short timing run,
  # so the first start is always signalled and later ones may be.
  t=$(reference 300 "$D/calibrate.csv")
  steps=$(echo "s = 45 * 300 / $t; if (s < 600) s = 600; if (s > 30000) s = 30000; s / 1" | bc)
  echo "$test_name: 300 steps took $t s; training $steps steps"
  script=$src/jobscripts/mics-train.sbatch
  slurm_args=(--time=1 --signal=B:USR1@50)
  launcher=mpirun
else
  steps=400
  script=$src/jobscripts/mics-train-gpu.sbatch
  slurm_args=(--time=5 --gpus-per-node=2 --cpus-per-task=1)
  launcher=srun
  common+=(--backend cpu)
fi
t=$(reference "$steps" "$D/reference.csv")
echo "$test_name: uninterrupted reference: $steps steps in $t s"

t0=$(date +%s)
submit -J requeue -N 2 --ntasks-per-node=2 "${slurm_args[@]}" \
  --export="ALL,MICS_LAUNCHER=$launcher,MICS_HOME=$src,MICS_TRAIN=$wrapper,MICS_PARTITION_SIZE=4" \
  "$script" "${common[@]}" --steps "$steps"
out=$D/submit/requeue-$job.out
run=$D/submit/runs/requeue-$job
echo "$test_name: submitted job $job"
if [ "$mode" = scancel ]; then
  for _ in $(seq 300); do   # 60 s for the first rows of metrics
    [ -f "$run/metrics.csv" ] && [ "$(wc -l < "$run/metrics.csv")" -gt 20 ] && break
    sleep 0.2
  done
  [ -f "$run/metrics.csv" ] || fail "job $job wrote no metrics within 60 s"
  scancel --signal=USR1 "$job" || fail "scancel --signal=USR1 $job failed"
  echo "$test_name: sent SIGUSR1 with scancel after $(( $(wc -l < "$run/metrics.csv") - 1 )) steps"
fi
wait_job_requeued "$job" 150
state=$(job_field "$job" JobState)
exitcode=$(job_field "$job" ExitCode)
echo "$test_name: job $job $state, exit code $exitcode, $restarts restarts, $(( $(date +%s) - t0 )) s"
cat "$out"
if [ "$state" != COMPLETED ] || [ "$exitcode" != 0:0 ]; then
  fail "job $job ended $state with exit code $exitcode"
fi
[ "${restarts:-0}" -ge 1 ] || fail "job $job was never requeued (the run finished before any signal)"
grep -q "^mics-train: stopped by SIGUSR1 at step [0-9]*; saved $run/checkpoints/step_[0-9]*\.h5; resume with --resume latest" "$out" ||
  fail "no 'mics-train: stopped by SIGUSR1 at step N; saved ...' line in the log"
grep -q "requeueing job $job" "$out" || fail "the script did not requeue the job"
grep -q "start 2 of job $job: resuming from $run/checkpoints" "$out" || fail "the requeued start did not resume"
[ "$(grep -c -- '--resume latest' "$out")" -ge 1 ] || fail "no start passed --resume latest"

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
