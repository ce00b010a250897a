#!/usr/bin/env bash
# emu-cluster.sh --nodes N --ranks-per-node G [--rate 200mbit|1gbit|none] [--mtu BYTES]
#                [--counters FILE.csv] [--mpirun-arg ARG ...] -- PROGRAM ARGS...
#
# Runs PROGRAM under mpirun on N emulated nodes of G ranks each, on this one machine, over
# real TCP sockets and shaped links:
#   - a "switch" network namespace with a bridge, and per node a namespace with its own
#     hostname (unshare --uts) and one veth (eth0) whose other end is a bridge port;
#     addresses from one private /24 claimed for this invocation only;
#   - every node's link shaped in both directions with tc tbf at --rate (egress on the
#     node's eth0, the node's ingress on its switch port). This kernel has no netem, so
#     there is bandwidth only: no latency, no loss;
#   - links carry jumbo frames (--mtu, default 9000), as EC2 instances do inside a VPC
#     (MTU 9001): at 1500 bytes the kernel's per-packet work (veth, bridge, tbf, TCP)
#     took 41% of this 2-core machine's CPU at 8 nodes x 200 Mbit/s, and 4% at 9000
#     (validation/SCALING.md);
#   - mpirun -np N*G runs inside node 1 and reaches the other nodes through a launch agent
#     (plm_rsh_agent) that enters their namespaces; Open MPI talks TCP between nodes and
#     shared memory inside a node;
#   - --counters FILE.csv: `node,tx_bytes,rx_bytes`, each node's eth0 byte-counter deltas
#     over the run (what really crossed its link, Ethernet/IP/TCP headers included).
# Exits with PROGRAM's status. Whatever happens (failure, Ctrl-C, TERM) the trap kills the
# processes in the namespaces it made and deletes them (that removes veths and bridge).
# The namespaces have no link to the host's network, so no traffic ever leaves them.
# Needs root, iproute2 (ip, tc), util-linux (unshare, flock) and Open MPI.
set -euo pipefail

me=emu-cluster
die() { echo "$me: error: $*" >&2; exit 2; }

usage() {
  sed -n '2,3p' "$0" | sed 's/^# \{0,1\}//'
}

nodes='' rpn='' rate=none mtu=9000 counters='' mpirun_args=()
while [ $# -gt 0 ]; do
  case $1 in
    --nodes) nodes=${2:-}; shift 2 || die "--nodes needs a value" ;;
    --ranks-per-node) rpn=${2:-}; shift 2 || die "--ranks-per-node needs a value" ;;
    --rate) rate=${2:-}; shift 2 || die "--rate needs a value (e.g. 200mbit, 1gbit, none)" ;;
    --mtu) mtu=${2:-}; shift 2 || die "--mtu needs a value (bytes, 576 to 65000)" ;;
    --counters) counters=${2:-}; shift 2 || die "--counters needs a file name" ;;
    --mpirun-arg) [ $# -ge 2 ] || die "--mpirun-arg needs a value"; mpirun_args+=("$2"); shift 2 ;;
    -h|--help) usage; exit 0 ;;
    --) shift; break ;;
    *) die "unknown option '$1'; usage: $(usage | head -n 1)" ;;
  esac
done
[ $# -gt 0 ] || die "no program given after --; usage: $(usage | head -n 1)"
if ! [[ $nodes =~ ^[1-9][0-9]*$ ]] || [ "$nodes" -gt 64 ]; then
  die "--nodes '$nodes' must be a whole number from 1 to 64"
fi
[[ $rpn =~ ^[1-9][0-9]*$ ]] || die "--ranks-per-node '$rpn' must be a whole number of at least 1"
[[ $rate == none || $rate =~ ^[0-9]+(\.[0-9]+)?(kbit|mbit|gbit)$ ]] ||
  die "--rate '$rate' must be none or a tc rate such as 200mbit or 1gbit"
if ! [[ $mtu =~ ^[0-9]+$ ]] || [ "$mtu" -lt 576 ] || [ "$mtu" -gt 65000 ]; then
  die "--mtu '$mtu' must be a whole number of bytes from 576 to 65000"
fi
if [ -n "$counters" ]; then
  : > "$counters" 2>/dev/null || die "cannot write --counters file '$counters'"
fi

# Refuse early, with one line, where the emulation cannot work.
[ "$(id -u)" -eq 0 ] || die "must run as root (creates network namespaces)"
for tool in ip tc unshare flock mpirun; do
  command -v "$tool" >/dev/null 2>&1 || die "$tool not found (iproute2, util-linux, openmpi-bin)"
done
unshare --uts true 2>/dev/null || die "UTS namespaces are unavailable here (unshare --uts failed)"

prefix=micsemu$$
sw=$prefix-sw
node_ns() { echo "$prefix-n$1"; }
work=$(mktemp -d "/tmp/$prefix.XXXXXX")
claims=/run/mics-emu-cluster
claim=
made=()
program=

# shellcheck disable=SC2317  # reached through the trap
cleanup() {
  local rc=$? ns pids
  set +e
  trap - EXIT INT TERM
  [ -n "$program" ] && kill -TERM "$program" 2>/dev/null
  # Kill whatever still runs inside our namespaces (ranks, orteds), then delete them;
  # deleting a namespace destroys its veth ends, and the switch's bridge with it.
  for ns in "${made[@]}"; do
    pids=$(ip netns pids "$ns" 2>/dev/null)
    # shellcheck disable=SC2086  # one word per pid
    [ -n "$pids" ] && kill -TERM $pids 2>/dev/null
  done
  for _ in $(seq 30); do
    pids=
    for ns in "${made[@]}"; do pids+=$(ip netns pids "$ns" 2>/dev/null); done
    [ -z "$pids" ] && break
    sleep 0.1
  done
  for ns in "${made[@]}"; do
    pids=$(ip netns pids "$ns" 2>/dev/null)
    # shellcheck disable=SC2086
    [ -n "$pids" ] && kill -KILL $pids 2>/dev/null
    ip netns del "$ns" 2>/dev/null || echo "$me: warning: could not delete namespace $ns" >&2
  done
  [ -n "$claim" ] && rm -f "$claim"
  rm -rf "$work"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# Claim a /24 no other invocation holds (a claim is a file holding its owner's pid; one
# whose owner is gone is free again) and that no interface of this host uses.
claim_subnet() {
  local x f owner
  mkdir -p "$claims"
  exec 9>"$claims/.lock"
  flock -w 30 9 || die "could not lock $claims/.lock within 30 s"
  for x in $(seq 0 255); do
    f=$claims/10.213.$x
    if [ -f "$f" ]; then
      owner=$(cat "$f" 2>/dev/null || true)
      [ -n "$owner" ] && kill -0 "$owner" 2>/dev/null && continue
    fi
    ip -4 -o addr show 2>/dev/null | grep -c " 10\.213\.$x\." > /dev/null && continue  # -c: no SIGPIPE under pipefail
    echo $$ > "$f"
    claim=$f
    subnet=10.213.$x
    break
  done
  sweep_stale
  exec 9>&-
  [ -n "$claim" ] || die "no free /24 in 10.213.0.0/16 (256 emulated clusters running?)"
}
# Namespaces of an invocation that was killed outright (SIGKILL leaves no trap to run):
# their owner's pid is in the name; delete them once that process is gone.
sweep_stale() {
  local ns owner
  for ns in $(ip netns list 2>/dev/null | awk '{ print $1 }'); do
    [[ $ns =~ ^micsemu([0-9]+)-(sw|n[0-9]+)$ ]] || continue
    owner=${BASH_REMATCH[1]}
    kill -0 "$owner" 2>/dev/null && continue
    ip netns pids "$ns" 2>/dev/null | xargs -r kill -KILL 2>/dev/null
    ip netns del "$ns" 2>/dev/null && echo "$me: removed namespace $ns left by a killed run" >&2
  done
}
claim_subnet

add_ns() {
  ip netns add "$1" 2>/dev/null ||
    die "cannot create network namespace $1 (ip netns add failed: namespaces unavailable?)"
  made+=("$1")
  ip -n "$1" link set lo up
}

# The bucket holds 64 KiB: one TCP segmentation-offload packet passes whole (a smaller
# bucket makes tbf split it in software), and a burst lasts 2.6 ms at 200 Mbit/s.
shape() {  # shape NS DEV: tbf at $rate on DEV's egress
  [ "$rate" = none ] && return 0
  ip netns exec "$1" tc qdisc add dev "$2" root tbf rate "$rate" burst 64kb latency 50ms ||
    die "tc tbf on $2 in $1 failed (sch_tbf unavailable?)"
}

add_ns "$sw"
ip -n "$sw" link add br0 type bridge
ip -n "$sw" link set br0 up
for i in $(seq "$nodes"); do
  ns=$(node_ns "$i")
  add_ns "$ns"
  # Both ends are created straight inside their namespaces: nothing appears on the host.
  ip link add eth0 netns "$ns" type veth peer name "p$i" netns "$sw"
  ip -n "$sw" link set "p$i" mtu "$mtu"
  ip -n "$ns" link set eth0 mtu "$mtu"
  ip -n "$sw" link set "p$i" master br0
  ip -n "$sw" link set "p$i" up
  ip -n "$ns" addr add "$subnet.$i/24" dev eth0
  ip -n "$ns" link set eth0 up
  shape "$ns" eth0     # what the node sends
  shape "$sw" "p$i"    # what the node receives
  echo "$subnet.$i slots=$rpn" >> "$work/hostfile"
done

# The launch agent: Open MPI calls it as `AGENT [options] HOST COMMAND...` like ssh;
# it enters HOST's namespace with that node's hostname and runs COMMAND through sh,
# as a remote shell would.
cat > "$work/agent" <<AGENT
#!/bin/sh
while [ \$# -gt 0 ]; do
  case \$1 in -*) shift ;; *) break ;; esac
done
host=\$1; shift
i=\${host##*.}
exec ip netns exec "$prefix-n\$i" unshare --uts sh -c "hostname $prefix-n\$i; \$*"
AGENT
chmod +x "$work/agent"

read_counters() {  # read_counters FILE: one `node tx rx` line per node
  local i ns d
  : > "$1"
  for i in $(seq "$nodes"); do
    ns=$(node_ns "$i")
    d=/sys/class/net/eth0/statistics
    ip netns exec "$ns" sh -c "echo $i \$(cat $d/tx_bytes) \$(cat $d/rx_bytes)" >> "$1"
  done
}

# Wait until every node's eth0 is up (veths come up asynchronously).
for i in $(seq "$nodes"); do
  for _ in $(seq 50); do
    ip -n "$(node_ns "$i")" -o link show eth0 | grep -q 'state UP' && break
    sleep 0.1
  done
done

# All nodes share this host's cores: the same settings as every other local run (root,
# passive OpenMP waits, yielding MPI waits), whoever called this script. mics-scale runs
# it without them otherwise; measured at 8 nodes: 3% slower steps (BENCHMARKS.md).
# shellcheck disable=SC1091  # scripts/env.sh, beside this script
source "$(dirname "$0")/env.sh"
# shellcheck disable=SC2054  # the commas belong to Open MPI's option values
mpirun_cmd=(mpirun -np $((nodes * rpn)) --hostfile "$work/hostfile" --bind-to none
  --mca plm_rsh_agent "$work/agent"
  --mca pml ob1 --mca btl self,vader,tcp
  --mca btl_tcp_if_include "$subnet.0/24" --mca oob_tcp_if_include "$subnet.0/24"
  --mca osc ^ucx --mca mtl ^ofi,psm,psm2
  "${mpirun_args[@]}" "$@")

# stderr goes through a filter that drops Open MPI's harmless setpgid warning (one per
# run with a custom agent); stdout is passed through untouched.
run_program() {
  set +e   # grep -v fails when it drops every line; PIPESTATUS still holds mpirun's status
  {
    # shellcheck disable=SC2016  # $0 and $@ belong to the inner shell
    ip netns exec "$(node_ns 1)" unshare --uts sh -c 'hostname "$0"; exec "$@"' \
      "$(node_ns 1)" "${mpirun_cmd[@]}" 2>&1 1>&3 3>&- |
      grep --line-buffered -v 'plm:rsh: Warning: setpgid' >&2
    exit "${PIPESTATUS[0]}"
  } 3>&1
}

read_counters "$work/before"
# In the background and waited for: bash runs a trap for TERM only once the foreground
# command ends, but interrupts `wait` at once, so a timeout's TERM cleans up promptly.
run_program &
program=$!
set +e
wait "$program"
status=$?
set -e
program=
read_counters "$work/after"

if ! [[ $mtu =~ ^[0-9]+$ ]] || [ "$mtu" -lt 576 ] || [ "$mtu" -gt 65000 ]; then
  die "--mtu '$mtu' must be a whole number of bytes from 576 to 65000"
fi
if [ -n "$counters" ]; then
  echo "node,tx_bytes,rx_bytes" > "$counters"
  # Both files list the nodes in the same order, one line each.
  paste -d ' ' "$work/before" "$work/after" |
    awk '{ printf "%d,%d,%d\n", $1, $5 - $2, $6 - $3 }' >> "$counters"
fi
exit "$status"
