#!/usr/bin/env bash
# slurm_job.sh MICS_TRAIN SOURCE_DIR
#
# Runs jobscripts/mics-train.sbatch through a real Slurm: a private munged, slurmctld and
# two slurmd "nodes" (n1, n2) on this host, everything under a fresh temporary folder on
# ports derived from this shell's pid, so parallel runs and a system Slurm do not clash.
# Submits 2 nodes x 2 tasks of the tiny preset with --hierarchical and partition size 4
# (the group spans both nodes), polls squeue, reads the exit code from scontrol, and
# checks the step lines and the metrics CSV. Whatever happens, the trap stops every
# daemon and job process it started and removes the folder. Needs root (the daemons
# switch users) and the slurm-wlm and munge packages (scripts/install-deps.sh); missing
# ones are a failure, not a skip. Every wait is bounded.
set -euo pipefail
train=$1
src=$2
fail() { echo "slurm_job: FAIL: $*" >&2; exit 1; }

for tool in munged mungekey slurmctld slurmd sbatch squeue sinfo scontrol scancel; do
  command -v "$tool" >/dev/null 2>&1 ||
    fail "$tool not found; install slurm-wlm and munge (bash scripts/install-deps.sh)"
done
[ "$(id -u)" -eq 0 ] || fail "needs root: slurmd starts job steps as the submitting user"
[ -x "$train" ] || fail "$train is not an executable"

D=$(mktemp -d /tmp/mics-slurm.XXXXXX)
job=
# Every process started here carries this marker in its environment (daemons, job steps
# and ranks inherit it), so cleanup finds exactly them by pid and nothing else.
marker="MICS_SLURM_TEST_DIR=$D"

cleanup() {
  local rc=$?
  set +e
  if [ -n "$job" ]; then scancel "$job" >/dev/null 2>&1; fi
  timeout 10 scontrol shutdown >/dev/null 2>&1
  # slurmctld and slurmd save state and close their ports on shutdown; munged keeps
  # running until asked, and goes last since the Slurm daemons talk to it on the way out.
  local munged_pid="" pids
  [ -f "$D/munge/munged.pid" ] && munged_pid=$(cat "$D/munge/munged.pid")
  for _ in $(seq 50); do
    pids=$(marked_pids | grep -vx "${munged_pid:-none}")
    [ -z "$pids" ] && break
    sleep 0.1
  done
  [ -n "$munged_pid" ] && kill "$munged_pid" 2>/dev/null
  for _ in $(seq 20); do
    [ -z "$(marked_pids)" ] && break
    sleep 0.1
  done
  pids=$(marked_pids)
  if [ -n "$pids" ]; then
    echo "slurm_job: killing leftover processes $pids" >&2
    # shellcheck disable=SC2086  # one word per pid
    kill -9 $pids 2>/dev/null
  fi
  if [ "$rc" -ne 0 ]; then
    for f in "$D"/log/*.log "$D"/submit/*.out; do
      [ -f "$f" ] && { echo "---- $f (last 20 lines)"; tail -n 20 "$f"; }
    done
  fi
  rm -rf "$D"
  exit "$rc"
}
marked_pids() {
  local e p
  for e in /proc/[0-9]*/environ; do
    p=${e#/proc/}; p=${p%/environ}
    [ "$p" = $$ ] && continue
    grep -qzxF "$marker" "$e" 2>/dev/null && echo "$p"
  done
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Three free TCP ports (slurmctld, n1, n2) from the pid; step forward past ports in use.
base=$(( 20000 + ($$ % 9000) * 4 ))
for _ in $(seq 20); do
  busy=0
  for port in $base $((base + 1)) $((base + 2)); do
    ss -Htln "sport = :$port" 2>/dev/null | grep -q . && busy=1
  done
  [ "$busy" = 0 ] && break
  base=$(( base + 4 ))
done

mkdir -p "$D/munge" "$D/state" "$D/log" "$D/spool/n1" "$D/spool/n2" "$D/tmp/n1" "$D/tmp/n2" \
         "$D/submit" "$D/shm/n1" "$D/shm/n2"
chmod 755 "$D" "$D/munge"
cat > "$D/slurm.conf" <<CONF
ClusterName=micstest
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
# Clients and daemons find this cluster (and not a system one) through SLURM_CONF.
export SLURM_CONF=$D/slurm.conf

t0=$(date +%s.%N)
env "$marker" mungekey -c -k "$D/munge/munge.key"
env "$marker" munged --key-file="$D/munge/munge.key" --socket="$D/munge/munge.socket" \
  --pid-file="$D/munge/munged.pid" --log-file="$D/munge/munged.log" \
  --seed-file="$D/munge/munged.seed" || fail "munged did not start"
env "$marker" slurmctld -f "$SLURM_CONF" || fail "slurmctld did not start"
env "$marker" slurmd -f "$SLURM_CONF" -N n1 || fail "slurmd n1 did not start"
env "$marker" slurmd -f "$SLURM_CONF" -N n2 || fail "slurmd n2 did not start"

ok=0
for _ in $(seq 150); do   # 30 s
  [ "$(sinfo -h -o %t 2>/dev/null | sort -u)" = idle ] && { ok=1; break; }
  sleep 0.2
done
[ "$ok" = 1 ] || fail "nodes not idle after 30 s: $(sinfo -h -N -o '%N %t' 2>&1 | tr '\n' ' ')"
echo "slurm_job: cluster up (ports $base-$((base + 2))) in $(echo "$(date +%s.%N) - $t0" | bc) s"

# Two fake nodes share one hostname, so Open MPI's shared-memory (vader) segment files
# of local rank 0 on n1 and n2 would have the same name: each node gets its own folder.
cat > "$D/rank.sh" <<WRAP
#!/bin/sh
export OMPI_MCA_btl_vader_backing_directory=$D/shm/\$SLURMD_NODENAME
exec "$train" "\$@"
WRAP
chmod +x "$D/rank.sh"

cd "$D/submit"
steps=4
# run_job LAUNCHER: one job through the script with MICS_LAUNCHER=LAUNCHER, checked.
run_job() {
  local launcher=$1 t1 info state exitcode out csv nsteps rows done_=0
  t1=$(date +%s.%N)
  job=$(env "$marker" MICS_HOME="$src" MICS_TRAIN="$D/rank.sh" MICS_PARTITION_SIZE=4 \
    MICS_LAUNCHER="$launcher" \
    sbatch --parsable -N 2 --ntasks-per-node=2 --time=5 "$src/jobscripts/mics-train.sbatch" \
      --model "$src/inputs/models/tiny.cfg" --data synthetic --steps $steps \
      --global-batch 8 --micro-batch 1 --hierarchical) || fail "sbatch refused the job"
  job=${job%%;*}
  echo "slurm_job: submitted job $job ($launcher)"
  # 90 s: with 30 s for start-up, both jobs time out here well before ctest's 300 s, so
  # the trap (not a SIGKILL from ctest) always gets to stop the daemons.
  for _ in $(seq 450); do   # 90 s
    [ -z "$(squeue -h -j "$job" 2>/dev/null)" ] && { done_=1; break; }
    sleep 0.2
  done
  [ "$done_" = 1 ] || fail "job $job still queued or running after 90 s: $(squeue -h -j "$job" 2>&1)"
  # Accounting is off, so the controller's record is where the exit code lives.
  info=$(scontrol show job "$job") || fail "scontrol show job $job failed"
  state=$(sed -n 's/.*JobState=\([A-Z_]*\).*/\1/p' <<<"$info" | head -n 1)
  exitcode=$(sed -n 's/.*[^a-zA-Z]ExitCode=\([0-9:]*\).*/\1/p' <<<"$info" | head -n 1)
  echo "slurm_job: job $job $state, exit code $exitcode, $(echo "$(date +%s.%N) - $t1" | bc) s after submission"

  out=$D/submit/mics-train-$job.out
  csv=$D/submit/mics-train-$job.csv
  [ -f "$out" ] || fail "no job output $out"
  cat "$out"
  if [ "$state" != COMPLETED ] || [ "$exitcode" != 0:0 ]; then
    fail "job $job ended $state with exit code $exitcode"
  fi
  grep -q "4 ranks on 2 nodes .*, $launcher:" "$out" || fail "the job did not see 4 ranks on 2 nodes through $launcher"
  grep -q "on 4 ranks (2 nodes of 2), strategy mics, p=4, replication 1, hierarchical on" "$out" ||
    fail "mics-train did not run 2 nodes of 2 with one hierarchical partition group of 4"
  nsteps=$(grep -c "^step .*/$steps | loss" "$out" || true)
  [ "$nsteps" = "$steps" ] || fail "expected $steps step lines in $out, found $nsteps"
  [ -f "$csv" ] || fail "no metrics $csv"
  rows=$(( $(wc -l < "$csv") - 1 ))
  [ "$rows" = "$steps" ] || fail "expected $steps rows in $csv, found $rows"
  grep -q "^step," "$csv" || fail "$csv has no header line"
  job=
  echo "slurm_job: $launcher ok ($steps step lines, $rows metrics rows)"
}
run_job mpirun
run_job srun
echo "slurm_job: PASS"
