#!/usr/bin/env bash
# wire_bytes_test.sh EMU_CLUSTER MICS_BENCH [NODES]
#
# What the MPI collectives put on real links: NODES (default 2) emulated nodes of 2 ranks
# (scripts/emu-cluster.sh: network namespaces, veth links, Open MPI over TCP), one
# partition group over all of them, and every node's interface byte counters, for
# all-gather, reduce-scatter and all-reduce, flat and hierarchical. Each case runs twice
# (1 and 1+K timed iterations of one message size M) and uses the difference, which
# removes start-up and the benchmark's own checks. A first pair of runs with one rank per
# node (a 2-rank ring: each rank sends exactly M/2 per iteration, as the PMPI test
# verifies) measures the header overhead (Ethernet/IP/TCP and Open MPI's own) per payload
# byte. Then for every node, tx and rx divided by that overhead must be within 10% of
#   flat ring in node order:   (p-1)/p M  (all-reduce with --flat-all-reduce 2(p-1)/p M)
#   two-step hierarchical:     (p-g)/p M  (all-reduce 2(p-g)/p M)
#   flat all-reduce, which runs two-level (hierarchical_ring: the group has g >= 2 ranks
#   on each node): 2(N-1)/N M = 2(p-g)/p M for N = p/g nodes
# and no node may carry more than 10% above the mean. Needs root (namespaces); prints
# SKIP and exits 77 where they cannot be made.
set -euo pipefail
emu=$1 bench=$2 nodes=${3:-2}
g=2 p=$((2 * nodes)) size=1M K=8
M=$((1 << 20))
work=$(mktemp -d /tmp/mics-wire.XXXXXX)
trap 'rm -rf "$work"' EXIT

if [ "$(id -u)" -ne 0 ] || ! unshare --uts true 2>/dev/null || ! command -v ip >/dev/null; then
  echo "SKIP: needs root, network namespaces and iproute2"; exit 77
fi

# run NAME NODES RPN ITERS BENCH-ARGS...: the counters file $work/NAME-ITERS.csv
run() {
  local name=$1 n=$2 rpn=$3 iters=$4; shift 4
  "$emu" --nodes "$n" --ranks-per-node "$rpn" --rate none --counters "$work/$name-$iters.csv" -- \
    "$bench" --ranks-per-node "$rpn" -b $size -e $size -n "$iters" -w 0 "$@" > "$work/$name-$iters.log" 2>&1 ||
    { echo "FAIL: $name ($iters iterations) did not run:"; cat "$work/$name-$iters.log"; exit 1; }
  grep -q "Wrong elements in all lines: 0 OK" "$work/$name-$iters.log" ||
    { echo "FAIL: $name: wrong results"; cat "$work/$name-$iters.log"; exit 1; }
}

# delta NAME: "node tx rx" lines, the difference of the two runs
delta() {
  join -t, <(tail -n +2 "$work/$1-1.csv" | sort) <(tail -n +2 "$work/$1-$((1 + K)).csv" | sort) |
    awk -F, '{ print $1, $4 - $2, $5 - $3 }' | sort -n
}

pair_case() {  # pair_case NAME BENCH-ARGS...
  local name=$1; shift
  run "$name" "$nodes" $g 1 "$@"
  run "$name" "$nodes" $g $((1 + K)) "$@"
}

# Header overhead: 2 nodes of 1 rank, a 2-rank all-gather ring, M/2 per rank per iteration.
run calib 2 1 1 --partition-size 2 --ops all_gather --groups partition
run calib 2 1 $((1 + K)) --partition-size 2 --ops all_gather --groups partition
overhead=$(delta calib | awk -v pay=$((K * M / 2)) '{ s += $2 + $3; n += 2 } END { printf "%.5f", s / n / pay }')
echo "header overhead: $overhead wire bytes per payload byte (2-rank ring, $K x $((M / 2)) B)"

fail=0
for op in all_gather reduce_scatter all_reduce; do
  algos="flat hierarchical"
  [ $op = all_reduce ] && algos="flat hierarchical flatring"
  for algo in $algos; do
    name=$op-$algo
    extra=()
    [ $algo = hierarchical ] && extra=(--hierarchical)
    [ $algo = flatring ] && extra=(--flat-all-reduce)
    pair_case "$name" --partition-size $p --ops $op --groups partition "${extra[@]}"
    if [ $op = all_reduce ] && [ $algo != hierarchical ]; then
      want=ring
      [ $algo = flat ] && want=hierarchical_ring
      grep -Eq "all_reduce +partition +$want " "$work/$name-1.log" ||
        { echo "FAIL: $name: the all-reduce did not run $want"; cat "$work/$name-1.log"; exit 1; }
    fi
    # Payload per node per iteration, in units of M, times K iterations.
    if [ $algo = flat ] && [ $op != all_reduce ] || [ $algo = flatring ]; then num=$((p - 1)); else num=$((p - g)); fi
    [ $op = all_reduce ] && num=$((2 * num))
    expect=$((K * M * num / p))
    verdict=$(delta "$name" | awk -v e=$expect -v o="$overhead" -v name="$name" '
      { tx[NR] = $2 / o; rx[NR] = $3 / o; s += tx[NR]; n = NR }
      END {
        mean = s / n; bad = 0; line = ""
        for (i = 1; i <= n; ++i) {
          line = line sprintf(" node%d tx %.3f rx %.3f", i, tx[i] / e, rx[i] / e)
          if (tx[i] < 0.9 * e || tx[i] > 1.1 * e || rx[i] < 0.9 * e || rx[i] > 1.1 * e) bad = 1
          if (tx[i] > 1.1 * mean || rx[i] > 1.1 * mean) bad = 1
        }
        printf "%s %s: payload/formula%s\n", bad ? "FAIL" : "ok  ", name, line
      }')
    echo "$verdict"
    case $verdict in FAIL*) fail=1 ;; esac
  done
done
exit $fail
