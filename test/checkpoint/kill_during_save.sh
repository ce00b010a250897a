#!/usr/bin/env bash
# kill_during_save.sh TOOL MPIEXEC DIR
# A job killed (SIGKILL, mpirun and every rank) while its save is between writing the
# data and renaming the file must leave the previous checkpoint intact, `latest` on it,
# and its temporary file ignored; the next save of the same step must then succeed.
set -u
tool=$1 mpiexec=$2 dir=$3
fail() { echo "kill_during_save: FAIL: $*"; [ -f "$dir.log" ] && sed 's/^/  log: /' "$dir.log"; exit 1; }
rm -rf "$dir" "$dir.pids" "$dir.log"

"$mpiexec" -n 4 --bind-to none "$tool" write "$dir" 1 1 || fail "first save failed"
[ "$(cat "$dir/latest")" = step_00000001.h5 ] || fail "latest does not name step 1"

MICS_CKPT_TEST_PAUSE_AFTER_WRITE=60 setsid "$mpiexec" -n 4 --bind-to none "$tool" write "$dir" 2 1 \
  >"$dir.log" 2>&1 &
job=$!
for _ in $(seq 1 300); do
  grep -q "pausing" "$dir.log" 2>/dev/null && break
  sleep 0.1
done
grep -q "pausing" "$dir.log" || { kill -9 -- -"$job" 2>/dev/null; fail "the save never reached its pause"; }
[ -f "$dir/step_00000002.h5.tmp" ] || fail "no temporary file during the save"
# SIGKILL: no handler runs, no destructor, no MPI_Finalize.
kill -9 -- -"$job" 2>/dev/null
for f in "$dir.pids"/rank*; do kill -9 "$(cat "$f")" 2>/dev/null; done
wait "$job" 2>/dev/null
# A killed rank may linger briefly (or as a zombie) until it is reaped.
alive() { [ -r /proc/"$1"/stat ] && ! grep -Eq '^[0-9]+ \(.*\) Z' /proc/"$1"/stat; }
for f in "$dir.pids"/rank*; do
  for _ in $(seq 1 100); do alive "$(cat "$f")" || break; sleep 0.1; done
  alive "$(cat "$f")" && fail "rank $(basename "$f") survived SIGKILL"
done

[ -f "$dir/step_00000002.h5" ] && fail "the killed save produced a final checkpoint"
[ "$(cat "$dir/latest")" = step_00000001.h5 ] || fail "latest moved away from step 1"
"$mpiexec" -n 2 --bind-to none "$tool" read "$dir" | grep -q "read step 1 " || fail "the previous checkpoint does not load"
"$mpiexec" -n 1 "$tool" verify "$dir" || fail "the previous checkpoint does not verify"

"$mpiexec" -n 4 --bind-to none "$tool" write "$dir" 2 1 || fail "the save after the kill failed"
[ ! -f "$dir/step_00000002.h5.tmp" ] || fail "the stale temporary file was left behind"
[ "$(cat "$dir/latest")" = step_00000002.h5 ] || fail "latest does not name step 2"
"$mpiexec" -n 3 --bind-to none "$tool" read "$dir" | grep -q "read step 2 " || fail "step 2 does not load"
rm -rf "$dir" "$dir.pids" "$dir.log"
echo "kill_during_save: ok"
