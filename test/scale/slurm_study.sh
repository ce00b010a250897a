#!/usr/bin/env bash
# slurm_study.sh MICS_SCALE STUDY_TEST STUDY OUTDIR
#
# The CI study through `mics-scale run --target slurm` on a private two-node Slurm that
# this script starts and stops (munged, slurmctld, slurmd n1 and n2 on this host, all
# under a fresh folder, ports derived from the pid, as test/slurm/slurm_job.sh does).
# mics-scale is started outside any allocation, so it asks salloc for one and runs each
# configuration as a job step (srun --mpi=pmix) inside it; study_test.py checks the
# report. Needs root and slurm-wlm/munge (scripts/install-deps.sh): missing ones fail.
set -euo pipefail
scale=$1 check=$2 study=$(realpath "$3") out=$4
fail() { echo "slurm_study: FAIL: $*" >&2; exit 1; }
for tool in munged mungekey slurmctld slurmd salloc srun sinfo scontrol; do
  command -v "$tool" >/dev/null 2>&1 || fail "$tool not found; install slurm-wlm and munge (bash scripts/install-deps.sh)"
done
[ "$(id -u)" -eq 0 ] || fail "needs root: slurmd starts job steps as the submitting user"

D=$(mktemp -d /tmp/mics-scale-slurm.XXXXXX)
marker="MICS_SCALE_SLURM_DIR=$D"
marked_pids() {
  local e p
  for e in /proc/[0-9]*/environ; do
    p=${e#/proc/}; p=${p%/environ}
    [ "$p" = $$ ] && continue
    grep -qzxF "$marker" "$e" 2>/dev/null && echo "$p"
  done
}
cleanup() {
  local rc=$? munged_pid="" pids
  set +e
  timeout 10 scontrol shutdown >/dev/null 2>&1
  [ -f "$D/munge/munged.pid" ] && munged_pid=$(cat "$D/munge/munged.pid")
  for _ in $(seq 50); do
    pids=$(marked_pids | grep -vx "${munged_pid:-none}")
    [ -z "$pids" ] && break
    sleep 0.1
  done
  [ -n "$munged_pid" ] && kill "$munged_pid" 2>/dev/null
  sleep 0.3
  pids=$(marked_pids)
  # shellcheck disable=SC2086  # one word per pid
  [ -n "$pids" ] && kill -9 $pids 2>/dev/null
  if [ "$rc" -ne 0 ]; then
    for f in "$D"/log/*.log; do [ -f "$f" ] && { echo "---- $f"; tail -n 15 "$f"; }; done
  fi
  rm -rf "$D"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

base=$(( 20000 + ($$ % 9000) * 4 + 2 ))
for _ in $(seq 20); do
  busy=0
  for port in $base $((base + 1)) $((base + 2)); do
    ss -Htln "sport = :$port" 2>/dev/null | grep -q . && busy=1
  done
  [ "$busy" = 0 ] && break
  base=$(( base + 4 ))
done
mkdir -p "$D"/{munge,state,log,spool/n1,spool/n2,tmp/n1,tmp/n2,shm/n1,shm/n2}
chmod 755 "$D" "$D/munge"
cat > "$D/slurm.conf" <<CONF
ClusterName=micsscale
SlurmctldHost=localhost
SlurmctldPort=$base
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$D/munge/munge.socket
StateSaveLocation=$D/state
SlurmdSpoolDir=$D/spool/%n
SlurmctldPidFile=$D/slurmctld.pid
SlurmdPidFile=$D/slurmd.%n.pid
SlurmctldLogFile=$D/log/slurmctld.log
SlurmdLogFile=$D/log/slurmd.%n.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SwitchType=switch/none
MpiDefault=none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
ReturnToService=2
SlurmdParameters=config_overrides
TmpFS=$D/tmp/%n
NodeName=n1 NodeHostname=localhost NodeAddr=127.0.0.1 Port=$((base + 1)) CPUs=4 RealMemory=2000 State=UNKNOWN
NodeName=n2 NodeHostname=localhost NodeAddr=127.0.0.1 Port=$((base + 2)) CPUs=4 RealMemory=2000 State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
CONF
export SLURM_CONF=$D/slurm.conf
env "$marker" mungekey -c -k "$D/munge/munge.key"
env "$marker" munged --key-file="$D/munge/munge.key" --socket="$D/munge/munge.socket" \
  --pid-file="$D/munge/munged.pid" --log-file="$D/munge/munged.log" \
  --seed-file="$D/munge/munged.seed" || fail "munged did not start"
env "$marker" slurmctld -f "$SLURM_CONF" || fail "slurmctld did not start"
env "$marker" slurmd -f "$SLURM_CONF" -N n1 || fail "slurmd n1 did not start"
env "$marker" slurmd -f "$SLURM_CONF" -N n2 || fail "slurmd n2 did not start"
ok=0
for _ in $(seq 150); do
  [ "$(sinfo -h -o %t 2>/dev/null | sort -u)" = idle ] && { ok=1; break; }
  sleep 0.2
done
[ "$ok" = 1 ] || fail "nodes not idle after 30 s"

# The two fake nodes share one host name: give each node's ranks their own
# shared-memory folder (Open MPI's vader segment names would collide).
cat > "$D/rank.sh" <<WRAP
#!/bin/sh
export OMPI_MCA_btl_vader_backing_directory=$D/shm/\$SLURMD_NODENAME
exec "$(dirname "$scale")/mics-train" "\$@"
WRAP
chmod +x "$D/rank.sh"
env "$marker" MICS_TRAIN="$D/rank.sh" timeout 200 "$check" "$scale" "$study" "$out" --target slurm

# The batch form: jobscripts/mics-scale.sbatch in one allocation, into a fresh folder.
src=$(cd "$(dirname "$0")/../.." && pwd)
mkdir -p "$D/submit"
cd "$D/submit"
job=$(env "$marker" MICS_HOME="$src" MICS_TRAIN="$D/rank.sh" \
  sbatch --parsable -N 2 --ntasks-per-node=2 --time=5 "$src/jobscripts/mics-scale.sbatch" \
    "$study" --out "$D/batch-out") || fail "sbatch refused the study job"
job=${job%%;*}
for _ in $(seq 450); do   # 90 s
  [ -z "$(squeue -h -j "$job" 2>/dev/null)" ] && break
  sleep 0.2
done
info=$(scontrol show job "$job")
grep -q "JobState=COMPLETED" <<<"$info" && grep -q " ExitCode=0:0" <<<"$info" ||
  { cat "$D/submit/mics-scale-$job.out" 2>/dev/null; fail "study job $job: $(grep -o 'JobState=[A-Z]*' <<<"$info")"; }
rows=$(( $(wc -l < "$D/batch-out/report.csv") - 1 ))
[ "$rows" = 3 ] || fail "the batch study wrote $rows report rows, expected 3"
echo "slurm_study: PASS (salloc and sbatch)"
