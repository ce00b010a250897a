# shellcheck shell=bash
# cluster.sh: sourced by the Slurm tests. Starts a private Slurm (munged, slurmctld and
# two slurmd "nodes" n1, n2 on this host) under a fresh temporary folder on ports derived
# from the caller's pid, so parallel runs and a system Slurm do not clash, and stops
# everything it started on exit. Every process it starts carries a marker in its
# environment (daemons, job steps and ranks inherit it), so cleanup finds exactly them by
# pid and nothing else. Needs root (slurmd starts job steps as the submitting user) and the
# slurm-wlm and munge packages (scripts/install-deps.sh); missing ones are a failure.
#
#   source cluster.sh NAME        # NAME prefixes every message ("NAME: FAIL: ...")
#   cluster_start [GPUS]          # GPUS > 0: each node also offers that many (fake) GPUs
#   submit ARGS...                # sbatch --parsable ARGS, job id in $job
#   wait_job ID SECONDS           # until the job has left the queue
#   job_field ID FIELD            # a field of scontrol show job (JobState, ExitCode, ...)
#   $D (the folder), $marker, fail MESSAGE, rank_wrapper TRAIN (prints a wrapper path)

test_name=${1:?source cluster.sh NAME}
fail() { echo "$test_name: FAIL: $*" >&2; exit 1; }

for tool in munged mungekey slurmctld slurmd sbatch squeue sinfo scontrol scancel; do
  command -v "$tool" >/dev/null 2>&1 ||
    fail "$tool not found; install slurm-wlm and munge (bash scripts/install-deps.sh)"
done
[ "$(id -u)" -eq 0 ] || fail "needs root: slurmd starts job steps as the submitting user"

D=$(mktemp -d /tmp/mics-slurm.XXXXXX)
job=
marker="MICS_SLURM_TEST_DIR=$D"

marked_pids() {  # one grep over every process's environment (a loop is seconds here)
  grep -lzxF "$marker" /proc/[0-9]*/environ 2>/dev/null |
    sed -n 's#^/proc/\([0-9]*\)/environ$#\1#p' | grep -vx "$$" || true
}

cluster_cleanup() {
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
    echo "$test_name: killing leftover processes $pids" >&2
    # shellcheck disable=SC2086  # one word per pid
    kill -9 $pids 2>/dev/null
  fi
  if [ "$rc" -ne 0 ]; then
    for f in "$D"/log/*.log "$D"/submit/*.out; do
      [ -f "$f" ] && { echo "---- $f (last 30 lines)"; tail -n 30 "$f"; }
    done
  fi
  rm -rf "$D"
  exit "$rc"
}
trap cluster_cleanup EXIT
trap 'exit 130' INT TERM

cluster_start() {
  local gpus=${1:-0} i base busy port gres="" ok=0 t0
  # Three free TCP ports (slurmctld, n1, n2) from the pid, below Linux's ephemeral range
  # (32768 and up) so that no outgoing connection holds one; step past ports in use.
  base=$(( 20000 + ($$ % 3000) * 4 ))
  for _ in $(seq 20); do
    busy=0
    for port in $base $((base + 1)) $((base + 2)); do
      ss -Htan "sport = :$port" 2>/dev/null | grep -q . && busy=1
    done
    [ "$busy" = 0 ] && break
    base=$(( base + 4 ))
  done
  mkdir -p "$D/munge" "$D/state" "$D/log" "$D/spool/n1" "$D/spool/n2" "$D/tmp/n1" "$D/tmp/n2" \
           "$D/submit" "$D/shm/n1" "$D/shm/n2"
  chmod 755 "$D" "$D/munge"
  if [ "$gpus" -gt 0 ]; then
    # GPUs Slurm only counts (no device files): enough for --gpus-per-node requests and
    # the job script's checks; the ranks then run on the CPU backend.
    gres="Gres=gpu:$gpus"
    mkdir -p "$D/dev"
    for (( i = 0; i < gpus; i++ )); do : > "$D/dev/fakegpu$i"; done
    printf 'AutoDetect=off\nName=gpu File=%s/dev/fakegpu[0-%s]\n' "$D" $(( gpus - 1 )) > "$D/gres.conf"
  fi
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
${gres:+GresTypes=gpu}
NodeName=n1 NodeHostname=localhost NodeAddr=127.0.0.1 Port=$((base + 1)) CPUs=4 RealMemory=2000 $gres State=UNKNOWN
NodeName=n2 NodeHostname=localhost NodeAddr=127.0.0.1 Port=$((base + 2)) CPUs=4 RealMemory=2000 $gres State=UNKNOWN
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
  for _ in $(seq 150); do   # 30 s
    [ "$(sinfo -h -o %t 2>/dev/null | sort -u)" = idle ] && { ok=1; break; }
    sleep 0.2
  done
  [ "$ok" = 1 ] || fail "nodes not idle after 30 s: $(sinfo -h -N -o '%N %t' 2>&1 | tr '\n' ' ')"
  echo "$test_name: cluster up (ports $base-$((base + 2))) in $(echo "$(date +%s.%N) - $t0" | bc) s"
}

# rank_wrapper TRAIN: a program that runs TRAIN with its own shared-memory folder per
# fake node. The two fake nodes share one hostname, so Open MPI's shared-memory (vader)
# segment files of local rank 0 on n1 and n2 would otherwise have the same name.
rank_wrapper() {
  cat > "$D/rank.sh" <<WRAP
#!/bin/sh
export OMPI_MCA_btl_vader_backing_directory=$D/shm/\$SLURMD_NODENAME
exec "$1" "\$@"
WRAP
  chmod +x "$D/rank.sh"
  echo "$D/rank.sh"
}

# submit ARGS...: sbatch from $D/submit with the marker in the job's environment.
submit() {
  job=$(cd "$D/submit" && env "$marker" sbatch --parsable "$@") || fail "sbatch refused: $*"
  job=${job%%;*}
}

# wait_job ID SECONDS: poll (sbatch --wait polls slowly) until the job has left the queue.
wait_job() {
  local deadline=$(( SECONDS + $2 ))
  while [ "$SECONDS" -lt "$deadline" ]; do
    [ -z "$(squeue -h -j "$1" 2>/dev/null)" ] && return 0
    sleep 0.2
  done
  fail "job $1 still queued or running after $2 s: $(squeue -h -j "$1" -o '%T %r' 2>&1)"
}

# job_field ID FIELD: accounting is off, so the controller's record is where it lives.
job_field() {
  scontrol show job "$1" 2>/dev/null | tr ' ' '\n' | sed -n "s/^$2=//p" | head -n 1
}

# wait_job_requeued ID SECONDS [UPDATE...]: like wait_job, for a job that requeues itself.
# Slurm holds a requeued job for about two minutes before it may start again; the test
# lifts that hold (StartTime=now), and applies the scontrol UPDATE fields (e.g.
# TimeLimit=5) to the pending job, so that a restart is not minutes of idle waiting.
# Sets $restarts.
wait_job_requeued() {
  local id=$1 deadline=$(( SECONDS + $2 )) seen=0 state last='' settled=0 since=
  shift 2
  restarts=0
  while [ "$SECONDS" -lt "$deadline" ]; do
    state=$(job_field "$id" JobState)
    restarts=$(job_field "$id" Restarts)
    [ "$state" != "$last" ] && echo "$test_name: job $id $state (restarts ${restarts:-0})"
    last=$state
    case $state in
      PENDING)
        # Not at once: slurmd refuses to start a job whose credential it revoked within
        # the same second ("Job credential revoked"), which fails the job; the hold is
        # there for that, and 3 s of it are enough here.
        if [ "${restarts:-0}" -gt "$seen" ]; then
          [ -z "$since" ] && since=$SECONDS
          if [ $(( SECONDS - since )) -ge 3 ]; then
            seen=$restarts since=
            scontrol update JobId="$id" StartTime=now "$@" >/dev/null 2>&1 || true
          fi
        fi ;;
      # A requeue passes through an end state for a moment: an end state counts once it
      # has held for a second with the same restart count.
      COMPLETED|FAILED|CANCELLED|TIMEOUT|NODE_FAIL|OUT_OF_MEMORY|BOOT_FAIL|DEADLINE)
        settled=$(( settled + 1 ))
        [ "$settled" -ge 5 ] && return 0
        sleep 0.2; continue ;;
    esac
    settled=0
    sleep 0.2
  done
  fail "job $id still queued or running after $2 s: $(squeue -h -j "$id" -o '%T %r' 2>&1)"
}

# no_job_processes: after the jobs ended, nothing but the daemons may be left (no rank,
# no launcher, no step daemon); waits up to 10 s for them to go.
no_job_processes() {
  local p left
  for _ in $(seq 50); do
    left=
    for p in $(marked_pids); do
      case $(cat "/proc/$p/comm" 2>/dev/null) in
        munged|slurmctld|slurmscriptd|slurmd|"") ;;
        *) left="$left $p($(cat "/proc/$p/comm" 2>/dev/null))" ;;
      esac
    done
    [ -z "$left" ] && return 0
    sleep 0.2
  done
  fail "processes left running after the job:$left"
}
