#!/usr/bin/env bash
# emu_cluster_test.sh EMU_CLUSTER PROBE
#
# scripts/emu-cluster.sh end to end: 2 nodes of 2 ranks on a 200 Mbit/s shaped link run
# the probe (1 MiB all-gather per rank, checked); each node must have its own host name
# and a shared-memory communicator of 2, the counters file one row per node with at
# least the bytes the all-gather must send off the node, and no namespace of the run may
# remain. Then a failing program (status must come back), a program killed by TERM
# (cleanup must be prompt), and bad options (one line, non-zero exit).
set -uo pipefail
emu=$1
probe=$2
D=$(mktemp -d /tmp/emu-cluster-test.XXXXXX)
trap 'rm -rf "$D"' EXIT
fail() { echo "emu_cluster_test: FAIL: $*" >&2; exit 1; }

# run_emu ARGS...: runs the script in the background so its pid (part of every namespace
# name it makes) is known; sets rc and pid.
run_emu() {
  "$emu" "$@" > "$D/out" 2> "$D/err" &
  pid=$!
  wait "$pid"
  rc=$?
}
leftovers() { ip netns list | awk '{ print $1 }' | grep "^micsemu$1-" || true; }

run_emu --nodes 2 --ranks-per-node 2 --rate 200mbit --counters "$D/c.csv" -- "$probe"
cat "$D/out" "$D/err"
[ "$rc" = 0 ] || fail "2 nodes x 2 ranks: exit status $rc"
[ "$(grep -c ', 0 wrong bytes' "$D/out")" = 4 ] || fail "expected 4 ranks with 0 wrong bytes"
[ "$(grep -c ', 2 ranks on this node' "$D/out")" = 4 ] || fail "every rank must see 2 ranks on its node"
hosts=$(sed -n 's/.* of [0-9]* on \([^,]*\),.*/\1/p' "$D/out" | sort -u | wc -l)
[ "$hosts" = 2 ] || fail "expected 2 distinct host names, saw $hosts"
grep -q 'setpgid' "$D/err" && fail "the setpgid warning was not filtered"
[ -z "$(leftovers "$pid")" ] || fail "namespaces left: $(leftovers "$pid")"
cat "$D/c.csv"
[ "$(head -n 1 "$D/c.csv")" = node,tx_bytes,rx_bytes ] || fail "counters header"
[ "$(wc -l < "$D/c.csv")" = 3 ] || fail "expected one counters row per node"
# Each node's 2 ranks send their 1 MiB to the 2 ranks of the other node: >= 4 MiB each way.
awk -F, -v min=$((4 << 20)) 'NR > 1 && ($2 < min || $3 < min) { bad = 1 } END { exit bad }' \
  "$D/c.csv" || fail "a node's counters show less than the 4 MiB the all-gather must move"

run_emu --nodes 2 --ranks-per-node 1 -- "$probe" --fail 3
[ "$rc" = 3 ] || fail "a program exiting with 3 gave status $rc"
[ -z "$(leftovers "$pid")" ] || fail "namespaces left after a failing program: $(leftovers "$pid")"

"$emu" --nodes 2 --ranks-per-node 1 -- sleep 60 > /dev/null 2>&1 &
pid=$!
for _ in $(seq 100); do [ -n "$(leftovers "$pid")" ] && break; sleep 0.1; done
sleep 1
t0=$(date +%s)
kill -TERM "$pid"
wait "$pid"
rc=$?
[ $(( $(date +%s) - t0 )) -le 10 ] || fail "cleanup after TERM took more than 10 s"
[ "$rc" = 143 ] || fail "TERM gave status $rc, expected 143"
[ -z "$(leftovers "$pid")" ] || fail "namespaces left after TERM: $(leftovers "$pid")"

out=$("$emu" --nodes 0 --ranks-per-node 2 -- true 2>&1); rc=$?
[ "$rc" != 0 ] && [ "$(echo "$out" | wc -l)" = 1 ] && [[ $out == *"--nodes '0'"* ]] ||
  fail "--nodes 0: expected one line and a non-zero exit, got $rc: $out"
out=$("$emu" --nodes 2 --ranks-per-node 2 --rate fast -- true 2>&1); rc=$?
[ "$rc" != 0 ] && [[ $out == *"--rate 'fast'"* ]] || fail "--rate fast: got $rc: $out"
echo "emu_cluster_test: PASS"
