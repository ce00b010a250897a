#!/usr/bin/env bash
# expect_fail.sh REGEX -- COMMAND...
# Passes when COMMAND exits non-zero within 120 s (no hang), prints a line matching REGEX,
# and shows none of the signs of a crash or of a raw MPI abort.
set -u
regex=$1; shift
[ "$1" = "--" ] && shift
out=$(timeout 120 "$@" 2>&1); rc=$?
fail() { echo "expect_fail: $1"; echo "--- command: $*"; echo "--- output:"; echo "$out"; exit 1; }
[ $rc -eq 0 ] && fail "command succeeded, expected a non-zero exit"
[ $rc -eq 124 ] && fail "command hung (killed after 120 s)"
echo "$out" | grep -Eq -- "$regex" || fail "no line matches /$regex/"
echo "$out" | grep -Eiq 'MPI_ABORT|segmentation fault|core dumped|terminate called|Signal:|exited on signal' \
  && fail "output shows a crash or an MPI abort"
echo "ok (rc=$rc): $(echo "$out" | grep -E -- "$regex" | head -n 1)"
