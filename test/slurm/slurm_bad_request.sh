#!/usr/bin/env bash
# slurm_bad_request.sh MICS_TRAIN SOURCE_DIR
#
# Requests that cannot work fail with one clear line and start no rank. On a private
# two-node Slurm (cluster.sh) whose nodes have 4 CPUs and 2 (fake) GPUs each:
#   in the job log, from the job scripts, before any launcher runs:
#     - more ranks per node than GPUs (mics-train-gpu.sbatch, 4 tasks per node, 2 GPUs);
#     - a partition size that does not fit the node shape (MICS_PARTITION_SIZE=3 and
#       --partition-size 8 on 2 nodes of 2);
#   from sbatch, at submission (Slurm refuses, no job exists):
#     - a partition that does not exist (-p nosuch), and no partition when the cluster
#       has no default one.
# Each job must end FAILED with exit code 1 and a log of exactly one "error:" line;
# each refused submission must name the problem and leave no job.
set -euo pipefail
train=$1
src=$2
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=test/slurm/cluster.sh
source "$here/cluster.sh" slurm_bad_request
[ -x "$train" ] || fail "$train is not an executable"
cluster_start 2
# The ranks should never start; if a regression lets them, they start cleanly.
env_common="ALL,MICS_HOME=$src,MICS_TRAIN=$(rank_wrapper "$train")"

# bad_job PATTERN SBATCH_ARGS...: the job fails at once with one line matching PATTERN.
bad_job() {
  local pattern=$1 out state exitcode lines
  shift
  submit -J bad "$@"
  wait_job "$job" 60
  state=$(job_field "$job" JobState)
  exitcode=$(job_field "$job" ExitCode)
  out=$D/submit/bad-$job.out
  [ -f "$out" ] || fail "job $job left no log"
  lines=$(wc -l < "$out")
  echo "slurm_bad_request: job $job $state $exitcode: $(cat "$out")"
  if [ "$state" != FAILED ] || [ "$exitcode" != 1:0 ]; then
    fail "job $job ended $state $exitcode, expected FAILED 1:0"
  fi
  [ "$lines" = 1 ] || fail "job $job's log has $lines lines, expected one: $(cat "$out")"
  grep -Eq "^mics-train(-gpu)?\.sbatch: error: $pattern" "$out" || fail "job $job's line does not say '$pattern'"
  [ ! -e "$D/submit/runs/bad-$job/metrics.csv" ] || fail "job $job started training"
  job=
}

# bad_submit PATTERN SBATCH_ARGS...: sbatch refuses with a line matching PATTERN (sbatch's
# own words: it prints its "error:" line and then "Batch job submission failed: ...").
bad_submit() {
  local pattern=$1 err rc=0
  shift
  err=$(cd "$D/submit" && env "$marker" sbatch --parsable -J refused "$@" 2>&1) || rc=$?
  echo "slurm_bad_request: sbatch $*: rc $rc: $err"
  [ "$rc" -ne 0 ] || fail "sbatch accepted $* (job $err)"
  grep -Eqi "$pattern" <<<"$err" || fail "sbatch's line does not say '$pattern'"
  [ -z "$(squeue -h -n refused)" ] || fail "a refused submission left a job"
}

gpu=$src/jobscripts/mics-train-gpu.sbatch
cpu=$src/jobscripts/mics-train.sbatch
bad_job "4 ranks per node but 2 GPUs per node: one rank per GPU; submit with --ntasks-per-node=2" \
  -N 2 --ntasks-per-node=4 --gpus-per-node=2 --cpus-per-task=1 --export="$env_common" \
  "$gpu" --model "$src/inputs/models/tiny.cfg" --data synthetic --steps 2
bad_job "partition size 3 does not fit 4 ranks on 2 nodes of 2 \(valid: 1,2,4\)" \
  -N 2 --ntasks-per-node=2 --export="$env_common,MICS_PARTITION_SIZE=3" \
  "$cpu" --model "$src/inputs/models/tiny.cfg" --data synthetic --steps 2
bad_job "partition size 8 does not fit 4 ranks on 2 nodes of 2 \(valid: 1,2,4\)" \
  -N 2 --ntasks-per-node=2 --gpus-per-node=2 --cpus-per-task=1 --export="$env_common" \
  "$gpu" --model "$src/inputs/models/tiny.cfg" --data synthetic --steps 2 --partition-size 8

bad_submit "invalid partition" -p nosuch -N 1 "$cpu"
scontrol update PartitionName=debug Default=NO || fail "could not unset the default partition"
bad_submit "no partition specified" -N 1 "$cpu"
scontrol update PartitionName=debug Default=YES || fail "could not restore the default partition"

no_job_processes
echo "slurm_bad_request: PASS"
