#!/usr/bin/env bash
# reliability.sh BIN_DIR SOURCE_DIR SCENARIO NP
# mics-train under mpirun with one fault at a time (issue 11): every scenario checks the
# exit code, the one line a user sees, the time it took, and that no rank or MPI abort
# banner is left behind. Exits 77 (skip) where the machine cannot stage the fault.
#   data_missing    rank 1 alone has no --data (a node-local path): one line naming rank 1
#   val_missing     rank 1 alone lacks the _val.bin file: one line, not a hang at the end
#   unreadable      rank 1 alone gets a token file with a broken header
#   auto_unequal    rank 1 reports less memory: every rank uses the p of the smallest
#   auto_too_small  rank 1 reports too little memory for any p: one line everywhere
#   usr1_resume     SIGUSR1 to mpirun: exit 75 with the checkpoint line; --resume latest
#                   continues bit for bit, the metrics file continues (no lost rows)
#   term_twice      SIGTERM to every rank, again during the save: exit 75, sound checkpoint
#   int_no_dir      SIGINT to every rank without --checkpoint-dir: exit 75, nothing saved
#   stall           SIGSTOP on one rank: the others end within --comm-timeout, one line
#                   naming the wait, no orphan process
#   nan             --lr 1e30: skipped steps in the log and CSV, exit 1 after
#                   --max-bad-steps naming the last good checkpoint; no NaN checkpoint
#   disk_full       a 2nd save on a full tmpfs: one line, no temp file, latest and step 1 intact
#   read_only       the same folder remounted read-only
#   write_fails     one rank's write fails (test seam): same line everywhere, nothing left
#   foreign_folder  a fresh run into another run's folder is refused at start-up; with
#                   --overwrite-checkpoints it takes over; --resume keeps the run id
#   metrics_truncate resuming from an earlier step drops later metric rows, then appends
#   other_model     resuming into another variant or size is refused naming the difference
#   absurd          layers/hidden/vocab/seq/micro-batch beyond any memory: one line with bytes
set -u
bin=$1 src=$2 scenario=$3 np=$4
work=$(mktemp -d /tmp/mics-rel-XXXXXX)
# Run through a link inside $work, so that this job's ranks can be found by their command line.
mkdir -p "$work/bin"
ln -s "$bin/mics_train_faults" "$work/bin/mics_train_faults"
faults=$work/bin/mics_train_faults
mnt=""
cleanup() {
  [ -n "$mnt" ] && umount "$mnt" 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT
fail() { echo "reliability $scenario np$np: FAIL: $*"; [ -f "$work/out" ] && sed 's/^/  out: /' "$work/out"; exit 1; }
ok() { echo "reliability $scenario np$np: ok: $*"; exit 0; }

MPI=(mpirun -q --bind-to none)
TINY=(--model "$src/inputs/models/tiny.cfg" --global-batch "$((np * 2))" --seed 7 --log-every 1)

# Seconds (with milliseconds) since a `date +%s%N` stamp, without bc.
seconds_since() {
  local ms=$(( ($(date +%s%N) - $1) / 1000000 ))
  printf '%d.%03d' $((ms / 1000)) $((ms % 1000))
}
# run SECONDS CMD...: runs with a time limit, output in $work/out, sets rc and took (s).
run() {
  local limit=$1; shift
  local t0; t0=$(date +%s%N)
  timeout "$limit" "$@" >"$work/out" 2>&1; rc=$?
  took=$(seconds_since "$t0")
  [ $rc -eq 124 ] && fail "hung (killed after $limit s)"
}
expect_line() { grep -Eq -- "$1" "$work/out" || fail "no line matches /$1/"; }
no_crash() {
  grep -Eiq 'MPI_ABORT|segmentation fault|core dumped|terminate called|Signal:|exited on signal' "$work/out" \
    && fail "output shows a crash or an MPI abort"
  return 0
}
within() { [ "${took%.*}" -lt "$1" ] || fail "took $took s, more than $1 s"; }
no_ranks_left() {
  sleep 1
  pgrep -f "^$faults" >/dev/null && { pkill -9 -f "^$faults"; fail "ranks were left running"; }
  return 0
}
# One argument list for rank 1, another for the rest (MPMD).
rank1_differs() {  # the arrays common (every rank), bad (rank 1) and good (the others)
  local others=()
  [ "$np" -gt 2 ] && others=(: -np "$((np - 2))" "$faults" "${common[@]}" "${good[@]}")
  run 60 "${MPI[@]}" -np 1 "$faults" "${common[@]}" "${good[@]}" : -np 1 "$faults" "${common[@]}" "${bad[@]}" "${others[@]}"
}
corpus() {  # a byte-level corpus: $work/c/corpus_{train,val}.bin
  "$bin/mics-data" convert --input /usr/share/common-licenses/GPL-3 --output-prefix "$work/c/corpus" >/dev/null \
    || fail "mics-data convert failed"
}
# rank_pids: the mics_train_faults processes of this job.
rank_pids() { pgrep -f "^$faults"; }
wait_for_line() {  # wait_for_line REGEX FILE SECONDS
  for _ in $(seq 1 $(($3 * 10))); do grep -Eq -- "$1" "$2" 2>/dev/null && return 0; sleep 0.1; done
  return 1
}
# loss_columns FILE: "step loss" per row, for exact comparison.
loss_columns() { cut -d, -f1,2 "$1"; }
verify_all() {  # every checkpoint file in DIR verifies
  for f in "$1"/step_*.h5; do "$bin/mics-ckpt" verify "$f" >/dev/null 2>&1 || fail "$f does not verify"; done
}
small_tmpfs() {  # small_tmpfs SIZE: a tmpfs at $work/t, or skip
  mnt=$work/t
  mkdir -p "$mnt"
  mount -t tmpfs -o size="$1" tmpfs "$mnt" 2>/dev/null || { mnt=""; echo "cannot mount a tmpfs here: skipped"; exit 77; }
}

case $scenario in
data_missing)
  common=("${TINY[@]}" --steps 3 --vocab 256)
  corpus
  good=(--data "$work/c/corpus") bad=(--data "$work/node-local/corpus")
  rank1_differs
  [ $rc -eq 1 ] || fail "exit $rc, expected 1"
  expect_line "^mics-train: error: rank 1 \(host [^)]+\): --data $work/node-local/corpus: no $work/node-local/corpus_train.bin"
  [ "$(grep -c 'error' "$work/out")" = 1 ] || fail "not exactly one error line"
  no_crash; within 10; no_ranks_left; ok "one line in $took s" ;;
val_missing)
  common=("${TINY[@]}" --steps 3 --vocab 256)
  corpus
  mkdir -p "$work/d"
  ln -s "$work/c/corpus_train.bin" "$work/d/corpus_train.bin"
  good=(--data "$work/c/corpus") bad=(--data "$work/d/corpus")
  rank1_differs
  [ $rc -eq 1 ] || fail "exit $rc, expected 1"
  expect_line "^mics-train: error: rank 1 \(host [^)]+\): --data $work/d/corpus: no validation file"
  no_crash; within 10; no_ranks_left; ok "one line in $took s" ;;
unreadable)
  common=("${TINY[@]}" --steps 3 --vocab 256)
  corpus
  mkdir -p "$work/d"
  head -c 4096 /dev/urandom >"$work/d/corpus_train.bin"
  good=(--data "$work/c/corpus") bad=(--data "$work/d/corpus")
  rank1_differs
  [ $rc -eq 1 ] || fail "exit $rc, expected 1"
  expect_line "^mics-train: error: rank 1 \(host [^)]+\): .*$work/d/corpus_train.bin"
  no_crash; within 10; no_ranks_left; ok "one line in $took s" ;;
auto_unequal)
  # 8 layers of width 32: the planner's memory per rank (states plus the engine's gather and
  # gradient slots) fits 1.6-2.4 MB at p = 2 and not at p = 1. Rank 1 reports 1.8 MB, the
  # others 1 GiB: every rank must take rank 1's p = 2.
  MICS_FAULT_MEMORY=1:1800000 run 60 "${MPI[@]}" -np "$np" "$faults" "${TINY[@]}" --layers 8 --hidden 32 --steps 2 \
    --ranks-per-node 1 --partition-size auto --memory-per-rank 1 --metrics "$work/m.csv"
  [ $rc -eq 0 ] || fail "exit $rc, expected 0"
  expect_line "p chosen by auto for 0.00168 GiB per rank \(the smallest over ranks\)"
  p=$(python3 -c "import csv; print(sorted({r['p'] for r in csv.DictReader(open('$work/m.csv'))}))")
  [ "$p" = "['2']" ] || fail "p = $p, expected ['2'] (from the smallest memory)"
  no_ranks_left; ok "every rank chose p = 2 from the smallest memory" ;;
auto_too_small)
  MICS_FAULT_MEMORY=1:1000 run 60 "${MPI[@]}" -np "$np" "$faults" "${TINY[@]}" --steps 2 --partition-size auto \
    --memory-per-rank 1
  [ $rc -eq 1 ] || fail "exit $rc, expected 1"
  expect_line "^mics-train: error: --partition-size auto: the model's states need .* GiB per rank even when sharded over all $np ranks"
  [ "$(grep -c 'error' "$work/out")" = 1 ] || fail "not exactly one error line"
  no_crash; within 10; no_ranks_left; ok "one line in $took s" ;;
usr1_resume)
  common=("${TINY[@]}" --decay-steps 400 --checkpoint-dir "$work/ck" --metrics "$work/run.csv")
  "${MPI[@]}" -np "$np" "$faults" "${common[@]}" --steps 400 >"$work/out" 2>&1 &
  job=$!
  wait_for_line "^step +3/" "$work/out" 60 || { kill -9 $job; fail "no step 3"; }
  kill -USR1 $job
  wait $job; rc=$?
  [ $rc -eq 75 ] || fail "exit $rc, expected 75"
  expect_line "^mics-train: stopped by SIGUSR1 at step [0-9]+; saved $work/ck/step_[0-9]{8}\.h5; resume with --resume latest$"
  n=$(sed -nE 's/^mics-train: stopped by SIGUSR1 at step ([0-9]+);.*/\1/p' "$work/out")
  [ "$n" -lt 400 ] || fail "the run was not stopped early"
  verify_all "$work/ck"
  run 120 "${MPI[@]}" -np "$np" "$faults" "${common[@]}" --steps $((n + 4)) --resume latest
  [ $rc -eq 0 ] || fail "resume exited $rc"
  run 120 "${MPI[@]}" -np "$np" "$faults" "${TINY[@]}" --decay-steps 400 --steps $((n + 4)) --metrics "$work/ref.csv"
  [ $rc -eq 0 ] || fail "reference exited $rc"
  diff <(loss_columns "$work/run.csv") <(loss_columns "$work/ref.csv") >/dev/null \
    || fail "stopped + resumed losses differ from the uninterrupted run: $(diff <(loss_columns "$work/run.csv") <(loss_columns "$work/ref.csv") | head -4)"
  no_ranks_left; ok "stopped at step $n, resumed to $((n + 4)), losses bitwise equal, metrics continuous" ;;
term_twice)
  MICS_FAULT_PAUSE_AFTER_WRITE=3 "${MPI[@]}" -np "$np" "$faults" "${TINY[@]}" --steps 400 --checkpoint-dir "$work/ck" \
    >"$work/out" 2>&1 &
  job=$!
  wait_for_line "^step +3/" "$work/out" 60 || { kill -9 $job; fail "no step 3"; }
  kill -TERM $(rank_pids)
  wait_for_line "pausing" "$work/out" 30 || { kill -9 $job; fail "the save never paused"; }
  kill -TERM $(rank_pids)  # the second signal, during the save
  wait $job; rc=$?
  [ $rc -eq 75 ] || fail "exit $rc, expected 75"
  expect_line "^mics-train: stopped by SIGTERM at step [0-9]+; saved $work/ck/step_[0-9]{8}\.h5"
  f=$(sed -nE 's/.*; saved ([^;]+);.*/\1/p' "$work/out")
  [ "$(head -n 1 "$work/ck/latest")" = "$(basename "$f")" ] || fail "latest does not name $f"
  ls "$work/ck"/*.tmp >/dev/null 2>&1 && fail "a temporary file was left"
  verify_all "$work/ck"
  no_ranks_left; ok "saved $(basename "$f") through a second SIGTERM" ;;
int_no_dir)
  "${MPI[@]}" -np "$np" "$faults" "${TINY[@]}" --steps 400 >"$work/out" 2>&1 &
  job=$!
  wait_for_line "^step +3/" "$work/out" 60 || { kill -9 $job; fail "no step 3"; }
  kill -INT $(rank_pids)
  wait $job; rc=$?
  [ $rc -eq 75 ] || fail "exit $rc, expected 75"
  expect_line "^mics-train: stopped by SIGINT at step [0-9]+; nothing was saved \(no --checkpoint-dir\)$"
  no_ranks_left; ok "clean stop" ;;
stall)
  timeout 60 "${MPI[@]}" -np "$np" "$faults" "${TINY[@]}" --steps 100000 --comm-timeout 3 >"$work/out" 2>&1 &
  job=$!
  wait_for_line "^step +1/" "$work/out" 60 || { kill -9 $job; fail "no step 1"; }
  victim=$(rank_pids | sed -n 2p)
  t0=$(date +%s%N)
  kill -STOP "$victim"
  wait $job; rc=$?
  took=$(seconds_since "$t0")
  [ $rc -eq 124 ] && { kill -9 "$victim"; fail "hung (killed after 60 s)"; }
  [ $rc -ne 0 ] || fail "exit 0 with a stalled rank"
  [ "${took%.*}" -lt 50 ] || fail "took $took s"
  expect_line "^mics-train: error on rank [0-9]+ \(host [^)]+\): no progress for [0-9]+ s in .+; a peer is stalled or gone \(see --comm-timeout\)$"
  no_crash
  gone() { ! kill -0 "$1" 2>/dev/null || grep -Eq '^[0-9]+ \(.*\) Z' /proc/"$1"/stat 2>/dev/null; }
  for _ in $(seq 1 100); do gone "$victim" && break; sleep 0.1; done
  gone "$victim" || { kill -9 "$victim"; fail "the stopped rank was left behind"; }
  no_ranks_left; ok "ended $took s after SIGSTOP: $(grep -m1 'no progress' "$work/out")" ;;
nan)
  run 60 "${MPI[@]}" -np "$np" "$faults" "${TINY[@]}" --steps 50 --lr 1e30 --warmup 0 --max-bad-steps 3 \
    --checkpoint-dir "$work/ck" --checkpoint-every 1 --metrics "$work/m.csv"
  [ $rc -eq 1 ] || fail "exit $rc, expected 1"
  expect_line "SKIPPED: non-finite, no update"
  expect_line "^mics-train: error: 3 steps in a row \(to step [0-9]+\) had a non-finite loss or gradient norm and were skipped \(--max-bad-steps 3\); the last good checkpoint is $work/ck/step_[0-9]{8}\.h5"
  [ "$(grep -c ',1$' "$work/m.csv")" = 3 ] || fail "the CSV does not mark 3 skipped steps"
  verify_all "$work/ck"
  no_crash; no_ranks_left; ok "stopped after 3 skipped steps" ;;
disk_full|read_only)
  small_tmpfs 600k
  common=("${TINY[@]}" --checkpoint-dir "$mnt/ck" --checkpoint-every 1)
  run 60 "${MPI[@]}" -np "$np" "$faults" "${common[@]}" --steps 1
  [ $rc -eq 0 ] || fail "the first save failed (exit $rc)"
  if [ "$scenario" = disk_full ]; then
    head -c 100000000 /dev/zero >"$mnt/filler" 2>/dev/null  # stops when the disk is full
  else
    mount -o remount,ro "$mnt" || { echo "cannot remount read-only: skipped"; exit 77; }
  fi
  run 60 "${MPI[@]}" -np "$np" "$faults" "${common[@]}" --steps 3 --resume latest
  [ $rc -eq 1 ] || fail "exit $rc, expected 1"
  expect_line "^mics-train: error: .*$mnt/ck"
  [ "$(grep -c 'error' "$work/out")" = 1 ] || fail "not exactly one error line"
  ls "$mnt/ck"/*.tmp >/dev/null 2>&1 && fail "a temporary file was left"
  [ "$(head -n 1 "$mnt/ck/latest")" = step_00000001.h5 ] || fail "latest moved"
  [ "$scenario" = disk_full ] && rm -f "$mnt/filler"
  "$bin/mics-ckpt" verify "$mnt/ck/step_00000001.h5" >/dev/null 2>&1 || fail "step 1 does not verify"
  no_crash; no_ranks_left; ok "$(grep -m1 error "$work/out")" ;;
write_fails)
  MICS_FAULT_FAIL_WRITE_RANK=$((np - 1)) run 60 "${MPI[@]}" -np "$np" "$faults" "${TINY[@]}" --steps 2 \
    --checkpoint-dir "$work/ck"
  [ $rc -eq 1 ] || fail "exit $rc, expected 1"
  expect_line "^mics-train: error: (rank $((np - 1)) \(host [^)]+\): )?$work/ck/step_00000002.h5.tmp: injected write failure"
  [ -z "$(ls -A "$work/ck")" ] || fail "files were left: $(ls "$work/ck")"
  no_crash; no_ranks_left; ok "one line" ;;
foreign_folder)
  run 60 "${MPI[@]}" -np "$np" "$faults" "${TINY[@]}" --steps 2 --checkpoint-dir "$work/ck"
  [ $rc -eq 0 ] || fail "first run exited $rc"
  id=$(sed -n 's/^run_id //p' "$work/ck/latest")
  run 60 "${MPI[@]}" -np "$np" "$faults" "${TINY[@]}" --steps 2 --checkpoint-dir "$work/ck"
  [ $rc -eq 1 ] || fail "a fresh run into the folder exited $rc, expected 1"
  expect_line "^mics-train: error: --checkpoint-dir $work/ck holds checkpoints of another run \(step_00000002.h5\)"
  grep -q "^step " "$work/out" && fail "it trained before refusing"
  run 60 "${MPI[@]}" -np "$np" "$faults" "${TINY[@]}" --steps 4 --checkpoint-dir "$work/ck" --resume latest \
    --checkpoint-every 1 --keep-last 2
  [ $rc -eq 0 ] || fail "resuming the folder's run exited $rc"
  [ "$(sed -n 's/^run_id //p' "$work/ck/latest")" = "$id" ] || fail "the resumed run changed the run id"
  expect_line "^mics-train: --keep-last 2: removed $work/ck/step_00000002.h5$"
  run 60 "${MPI[@]}" -np "$np" "$faults" "${TINY[@]}" --steps 1 --checkpoint-dir "$work/ck" --overwrite-checkpoints
  [ $rc -eq 0 ] || fail "--overwrite-checkpoints exited $rc"
  expect_line "^mics-train: --overwrite-checkpoints: removed $work/ck/step_00000004.h5 \(run $id\)"
  [ "$(ls "$work/ck" | tr '\n' ' ')" = "latest step_00000001.h5 " ] || fail "left: $(ls "$work/ck")"
  no_crash; no_ranks_left; ok "refused, resumed with the same id, taken over" ;;
metrics_truncate)
  common=("${TINY[@]}" --decay-steps 20 --checkpoint-dir "$work/ck" --checkpoint-every 3 --metrics "$work/run.csv"
          --metrics-jsonl "$work/run.jsonl")
  run 60 "${MPI[@]}" -np "$np" "$faults" "${common[@]}" --steps 5
  [ $rc -eq 0 ] || fail "first run exited $rc"
  run 60 "${MPI[@]}" -np "$np" "$faults" "${common[@]}" --steps 8 --resume "$work/ck/step_00000003.h5"
  [ $rc -eq 0 ] || fail "resume exited $rc"
  expect_line "dropped 2 CSV and 2 JSON rows past step 3"
  run 60 "${MPI[@]}" -np "$np" "$faults" "${TINY[@]}" --decay-steps 20 --steps 8 --metrics "$work/ref.csv"
  diff <(loss_columns "$work/run.csv") <(loss_columns "$work/ref.csv") >/dev/null || fail "rows differ from one run of 8 steps"
  [ "$(wc -l <"$work/run.jsonl")" = 8 ] || fail "the JSON lines are not steps 1..8"
  no_ranks_left; ok "rows 1..8 once each" ;;
other_model)
  run 60 "${MPI[@]}" -np "$np" "$faults" "${TINY[@]}" --steps 1 --checkpoint-dir "$work/ck"
  [ $rc -eq 0 ] || fail "first run exited $rc"
  run 60 "${MPI[@]}" -np "$np" "$faults" "${TINY[@]}" --steps 2 --checkpoint-dir "$work/ck" --resume latest --variant bert
  [ $rc -eq 1 ] || fail "exit $rc, expected 1"
  expect_line "^mics-train: error: --resume: $work/ck/step_00000001.h5 holds another model \(variant gpt in the checkpoint, bert now\)"
  run 60 "${MPI[@]}" -np "$np" "$faults" "${TINY[@]}" --steps 2 --checkpoint-dir "$work/ck" --resume latest --seq 16
  [ $rc -eq 1 ] || fail "exit $rc, expected 1"
  expect_line "holds another model \(seq 8 in the checkpoint, 16 now\)"
  no_crash; no_ranks_left; ok "refused" ;;
absurd)
  for size in "--layers 1000000000000" "--hidden 1000000000 --heads 1" "--vocab 2000000000" "--seq 1000000000" \
              "--micro-batch 100000000 --global-batch $((np * 100000000))"; do
    # shellcheck disable=SC2086
    run 60 "${MPI[@]}" -np "$np" "$faults" --model "$src/inputs/models/tiny.cfg" --steps 1 $size
    [ $rc -eq 1 ] || fail "$size: exit $rc, expected 1"
    expect_line "^mics-train: error: the model \(.*\) would need at least [0-9.e+]+ bytes \([0-9.e+]+ [KMGTPE]iB\) per rank"
    [ "$(grep -c 'error' "$work/out")" = 1 ] || fail "$size: not exactly one error line"
    no_crash
  done
  no_ranks_left; ok "five sizes refused" ;;
*) fail "unknown scenario" ;;
esac
