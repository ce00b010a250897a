#!/usr/bin/env bash
# slurm_job.sh MICS_TRAIN SOURCE_DIR
#
# Runs jobscripts/mics-train.sbatch through a real Slurm (cluster.sh: a private munged,
# slurmctld and two slurmd "nodes" on this host). Submits 2 nodes x 2 tasks of the tiny
# preset with --hierarchical and partition size 4 (the group spans both nodes), once with
# mpirun and once with srun, and checks the step lines, the run folder
# (runs/<job name>-<job id>/metrics.csv) and --cpus-per-task reaching --threads. Whatever
# happens, the trap stops every daemon and job process it started and removes the folder.
set -euo pipefail
train=$1
src=$2
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=test/slurm/cluster.sh
source "$here/cluster.sh" slurm_job
[ -x "$train" ] || fail "$train is not an executable"
cluster_start 0
wrapper=$(rank_wrapper "$train")

steps=4
# run_job LAUNCHER: one job through the script with MICS_LAUNCHER=LAUNCHER, checked.
run_job() {
  local launcher=$1 t1 state exitcode out csv nsteps rows
  t1=$(date +%s.%N)
  submit -N 2 --ntasks-per-node=2 --cpus-per-task=2 --time=5 \
    --export="ALL,MICS_HOME=$src,MICS_TRAIN=$wrapper,MICS_PARTITION_SIZE=4,MICS_LAUNCHER=$launcher" \
    "$src/jobscripts/mics-train.sbatch" \
    --model "$src/inputs/models/tiny.cfg" --data synthetic --steps $steps \
    --global-batch 8 --micro-batch 1 --hierarchical
  echo "slurm_job: submitted job $job ($launcher)"
  # 90 s: with 30 s for start-up, both jobs time out here well before ctest's 300 s, so
  # the trap (not a SIGKILL from ctest) always gets to stop the daemons.
  wait_job "$job" 90
  state=$(job_field "$job" JobState)
  exitcode=$(job_field "$job" ExitCode)
  echo "slurm_job: job $job $state, exit code $exitcode, $(echo "$(date +%s.%N) - $t1" | bc) s after submission"

  out=$D/submit/mics-train-$job.out
  csv=$D/submit/runs/mics-train-$job/metrics.csv
  [ -f "$out" ] || fail "no job output $out"
  cat "$out"
  if [ "$state" != COMPLETED ] || [ "$exitcode" != 0:0 ]; then
    fail "job $job ended $state with exit code $exitcode"
  fi
  grep -q "4 ranks on 2 nodes .*, $launcher: .*--threads 2 " "$out" ||
    fail "the job did not see 4 ranks on 2 nodes through $launcher with --threads 2 from --cpus-per-task"
  grep -q "on 4 ranks (2 nodes of 2), strategy mics, p=4, replication 1, hierarchical on" "$out" ||
    fail "mics-train did not run 2 nodes of 2 with one hierarchical partition group of 4"
  nsteps=$(grep -c "^step .*/$steps | loss" "$out" || true)
  [ "$nsteps" = "$steps" ] || fail "expected $steps step lines in $out, found $nsteps"
  [ -f "$csv" ] || fail "no metrics $csv"
  rows=$(( $(wc -l < "$csv") - 1 ))
  [ "$rows" = "$steps" ] || fail "expected $steps rows in $csv, found $rows"
  grep -q "^step," "$csv" || fail "$csv has no header line"
  echo "slurm_job: $launcher ok ($steps step lines, $rows metrics rows)"
}
run_job mpirun
run_job srun
no_job_processes
job=
echo "slurm_job: PASS"
