#!/usr/bin/env bash
# slurm_study.sh MICS_SCALE STUDY_TEST STUDY OUTDIR
#
# The CI study through `mics-scale run --target slurm` on a private two-node Slurm that
# this script starts and stops (munged, slurmctld, slurmd n1 and n2 on this host, all
# under a fresh folder: test/slurm/cluster.sh, shared with the Slurm job-script tests).
# mics-scale is started outside any allocation, so it asks salloc for one and runs each
# configuration as a job step (srun --mpi=pmix) inside it; study_test.py checks the
# report. Needs root and slurm-wlm/munge (scripts/install-deps.sh): missing ones fail.
set -euo pipefail
scale=$1 check=$2 study=$(realpath "$3") out=$4
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=test/slurm/cluster.sh
source "$here/../slurm/cluster.sh" slurm_study
for tool in salloc srun; do
  command -v "$tool" >/dev/null 2>&1 || fail "$tool not found; install slurm-wlm (bash scripts/install-deps.sh)"
done
cluster_start 0
rank=$(rank_wrapper "$(dirname "$scale")/mics-train")
env "$marker" MICS_TRAIN="$rank" timeout 200 "$check" "$scale" "$study" "$out" --target slurm

# The batch form: jobscripts/mics-scale.sbatch in one allocation, into a fresh folder.
src=$(cd "$here/../.." && pwd)
export MICS_HOME=$src MICS_TRAIN=$rank   # sbatch hands the environment to the job
submit -N 2 --ntasks-per-node=2 --time=5 "$src/jobscripts/mics-scale.sbatch" "$study" --out "$D/batch-out"
wait_job "$job" 90
if [ "$(job_field "$job" JobState)" != COMPLETED ] || [ "$(job_field "$job" ExitCode)" != 0:0 ]; then
  cat "$D/submit/mics-scale-$job.out" 2>/dev/null
  fail "study job $job: $(job_field "$job" JobState)"
fi
rows=$(( $(wc -l < "$D/batch-out/report.csv") - 1 ))
[ "$rows" = 3 ] || fail "the batch study wrote $rows report rows, expected 3"
echo "slurm_study: PASS (salloc and sbatch)"
