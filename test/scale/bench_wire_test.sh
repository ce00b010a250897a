#!/usr/bin/env bash
# bench_wire_test.sh EMU_CLUSTER MICS_BENCH
#
# The scaling study's wire-byte check (issue 9): on the study's emulated nodes (2 of 2
# ranks, 200 Mbit/s), mics-bench running only the hierarchical all-gather of the
# partition group (p = 4 over both nodes) must put (p-g)/p of the gathered bytes on each
# node's link, within 10%, once the header overhead is taken off. Runs of 1 and 1+K
# iterations are differenced (start-up and checks cancel); the overhead is measured the
# same way on a 2-rank ring (2 nodes of 1 rank, M/2 payload per rank per iteration).
# Needs mics-bench --ops/--groups: without them (before branch comm is merged) the test
# says so and exits 77 (ctest: skipped); with them it runs and fails on a byte gap.
set -euo pipefail
emu=$1 bench=$2
if ! "$bench" --help 2>&1 | grep -c -- '--ops' > /dev/null; then  # -c: no SIGPIPE under pipefail
  echo "NOT RUN: $bench has no --ops/--groups yet, so it cannot run the hierarchical all-gather alone"
  exit 77
fi
K=6 M=$((1 << 20)) p=4 g=2
work=$(mktemp -d /tmp/mics-bench-wire.XXXXXX)
trap 'rm -rf "$work"' EXIT

run() {  # run NAME NODES RPN ITERS ARGS...: counters in $work/NAME-ITERS.csv
  local name=$1 n=$2 rpn=$3 iters=$4; shift 4
  "$emu" --nodes "$n" --ranks-per-node "$rpn" --rate 200mbit --counters "$work/$name-$iters.csv" -- \
    "$bench" --ranks-per-node "$rpn" -b 1M -e 1M -n "$iters" -w 0 --ops all_gather --groups partition "$@" \
    > "$work/$name.log" 2>&1 || { echo "FAIL: $name did not run:"; cat "$work/$name.log"; exit 1; }
}
# tx+rx per node, run of 1+K iterations minus run of 1, as "node tx rx" lines.
delta() {
  paste -d, <(tail -n +2 "$work/$1-1.csv") <(tail -n +2 "$work/$1-$((K + 1)).csv") |
    awk -F, '{ print $1, $5 - $2, $6 - $3 }'
}
for it in 1 $((K + 1)); do run calib 2 1 "$it" --partition-size 2; done
overhead=$(delta calib | awk -v pay=$((K * M / 2)) '{ s += $2 + $3; n += 2 } END { printf "%.5f", s / n / pay }')
for it in 1 $((K + 1)); do run hier 2 $g "$it" --partition-size $p --hierarchical; done
expect=$((K * M * (p - g) / p))
echo "header overhead $overhead; expected payload per node $expect B over $K all-gathers of $M B"
delta hier | awk -v e=$expect -v o="$overhead" '
  { tx = $2 / o / e; rx = $3 / o / e; printf "node %d: tx %.3f rx %.3f of (p-g)/p x gathered\n", $1, tx, rx
    if (tx < 0.9 || tx > 1.1 || rx < 0.9 || rx > 1.1) bad = 1 }
  END { if (bad) { print "FAIL: a node is more than 10% off (p-g)/p x the gathered bytes"; exit 1 }
        print "bench_wire_test: PASS" }'
