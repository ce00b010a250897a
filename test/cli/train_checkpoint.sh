#!/usr/bin/env bash
# train_checkpoint.sh BIN_DIR SOURCE_DIR SCENARIO
# End-to-end checkpoint scenarios of mics-train on the tiny preset, on the CPU backend:
#   resume   a run stopped at step 10 and resumed to 20 in the same layout gives the
#            same losses and the same final weights, bit for bit, as an uninterrupted run;
#   reshard  the step-10 checkpoint of a 4-rank mics p=2 run continues on 2 ranks (zero3),
#            8 ranks (mics p=4 hierarchical, 4 per node) and 1 rank (ddp), with losses
#            within 1e-5 relative of the uninterrupted run;
#   kill     a job killed during its step-10 save leaves the step-5 checkpoint intact and
#            `latest` on it, and resuming from it reaches the uninterrupted losses.
# The schedule is fixed by --decay-steps 20, so stopping early does not change it.
set -u
bin=$1 src=$2 scenario=$3
work=$(mktemp -d /tmp/mics-ckpt-XXXXXX)
trap 'rm -rf "$work"' EXIT
fail() { echo "train_checkpoint $scenario: FAIL: $*"; exit 1; }

train() {  # train NP ARGS...
  local np=$1; shift
  timeout 300 mpirun -q -np "$np" --bind-to none "$bin/mics-train" --model "$src/inputs/models/tiny.cfg" \
    --data synthetic --global-batch 8 --lr 3e-3 --warmup 3 --decay-steps 20 --seed 7 "$@" \
    >>"$work/log" 2>&1 || { cat "$work/log"; fail "mics-train $* exited non-zero"; }
}

# compare_losses A.csv B.csv TOL: rows of B (by step) against the same steps of A.
compare_losses() {
  python3 - "$1" "$2" "$3" <<'PY' || fail "losses differ ($1 vs $2)"
import csv, sys
a = {r["step"]: r for r in csv.DictReader(open(sys.argv[1]))}
b = list(csv.DictReader(open(sys.argv[2])))
tol = float(sys.argv[3])
assert b, "no rows"
for r in b:
    x, y = float(a[r["step"]]["loss"]), float(r["loss"])
    if tol == 0:
        ok = a[r["step"]]["loss"] == r["loss"] and a[r["step"]]["grad_norm"] == r["grad_norm"]
    else:
        ok = abs(x - y) <= tol * abs(x)
    print(f"step {r['step']}: {x:.9g} vs {y:.9g}", "ok" if ok else "DIFFERENT")
    if not ok: sys.exit(1)
PY
}

layout=(--ranks-per-node 2 --strategy mics --partition-size 2)
train 4 "${layout[@]}" --steps 20 --metrics "$work/full.csv" --checkpoint-dir "$work/full"

case "$scenario" in
resume)
  train 4 "${layout[@]}" --steps 10 --checkpoint-dir "$work/part"
  train 4 "${layout[@]}" --steps 20 --checkpoint-dir "$work/part" --resume latest --metrics "$work/resumed.csv"
  grep -q "resumed from .*step_00000010.h5 at step 10" "$work/log" || fail "no resume message"
  compare_losses "$work/full.csv" "$work/resumed.csv" 0
  "$bin/mics-ckpt" export "$work/full/step_00000020.h5" --output "$work/full.safetensors" >/dev/null || fail "export"
  "$bin/mics-ckpt" export "$work/part/step_00000020.h5" --output "$work/part.safetensors" >/dev/null || fail "export"
  cmp "$work/full.safetensors" "$work/part.safetensors" || fail "final weights differ"
  ;;
reshard)
  train 4 "${layout[@]}" --steps 10 --checkpoint-dir "$work/part"
  ck="$work/part/step_00000010.h5"
  train 2 --ranks-per-node 1 --strategy zero3 --steps 20 --resume "$ck" --metrics "$work/zero3.csv"
  compare_losses "$work/full.csv" "$work/zero3.csv" 1e-5
  train 8 --ranks-per-node 4 --strategy mics --partition-size 4 --hierarchical --steps 20 --resume "$ck" \
    --metrics "$work/mics8.csv"
  compare_losses "$work/full.csv" "$work/mics8.csv" 1e-5
  train 1 --strategy ddp --steps 20 --resume "$ck" --metrics "$work/ddp1.csv"
  compare_losses "$work/full.csv" "$work/ddp1.csv" 1e-5
  ;;
kill)
  train 4 "${layout[@]}" --steps 5 --checkpoint-dir "$work/k"
  MICS_FAULT_PAUSE_AFTER_WRITE=60 OMPI_MCA_orte_abort_on_non_zero_status=0 setsid \
    mpirun -q -np 4 --bind-to none "$bin/mics_train_faults" --model "$src/inputs/models/tiny.cfg" --data synthetic \
    --global-batch 8 --lr 3e-3 --warmup 3 --decay-steps 20 --seed 7 "${layout[@]}" --steps 20 \
    --checkpoint-dir "$work/k" --checkpoint-every 5 --resume latest >"$work/killed.log" 2>&1 &
  job=$!
  for _ in $(seq 1 600); do grep -q "pausing" "$work/killed.log" 2>/dev/null && break; sleep 0.1; done
  grep -q "pausing" "$work/killed.log" || { kill -9 -- -"$job"; cat "$work/killed.log"; fail "the save never paused"; }
  [ -f "$work/k/step_00000010.h5.tmp" ] || fail "no temporary file during the step-10 save"
  kill -9 -- -"$job" 2>/dev/null
  pkill -9 -f "mics_train_faults .*$work/k" 2>/dev/null
  wait "$job" 2>/dev/null
  sleep 0.5
  [ -f "$work/k/step_00000010.h5" ] && fail "the killed save left a step-10 checkpoint"
  [ "$(head -n 1 "$work/k/latest")" = step_00000005.h5 ] || fail "latest moved away from step 5"
  "$bin/mics-ckpt" verify "$work/k" >/dev/null || fail "the step-5 checkpoint does not verify"
  train 4 "${layout[@]}" --steps 20 --checkpoint-dir "$work/k" --resume latest --metrics "$work/after.csv"
  compare_losses "$work/full.csv" "$work/after.csv" 0
  ;;
*) fail "unknown scenario" ;;
esac
echo "train_checkpoint $scenario: ok"
