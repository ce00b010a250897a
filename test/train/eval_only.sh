#!/usr/bin/env bash
# eval_only.sh MPIEXEC TRAIN MODEL OUT
# Trains the tiny model for 4 steps (4 ranks, mics p=2) with a checkpoint at the end, then
# checks --eval-only on other layouts (1 rank ddp, 2 ranks zero3, 4 ranks mics p=4
# hierarchical): each prints the same validation loss as the training run's last step,
# leaves the checkpoint folder as it was and creates no --metrics file; --eval-output
# appends one JSON line. Then a resume at --steps says that there is nothing to do.
set -u
mpiexec=$1 train=$2 model=$3 out=$4
# A high learning rate moves the loss well away from the untrained one (ln 32) in 4 steps.
run() { local np=$1; shift; timeout 120 "$mpiexec" -q --bind-to none -np "$np" "$train" --model "$model" --global-batch 8 --lr 3e-2 --min-lr 3e-3 --warmup 1 "$@" 2>&1; }
fail() { echo "eval_only: FAIL: $*"; exit 1; }
rm -rf "$out"; mkdir -p "$out"
log=$(run 4 --ranks-per-node 2 --partition-size 2 --steps 4 --checkpoint-dir "$out/ck") || fail "training: $log"
val=$(echo "$log" | sed -n 's/^  final val loss: //p')
[ -n "$val" ] || fail "no final val loss in: $log"
before=$(ls -l --time-style=full-iso "$out/ck")
for layout in "1 --strategy ddp" "2 --strategy zero3" "4 --ranks-per-node 2 --partition-size 4 --hierarchical"; do
  set -- $layout
  res=$(run "$@" --steps 4 --resume "$out/ck" --eval-only --checkpoint-dir "$out/ck" --metrics "$out/m.csv" \
        --eval-output "$out/eval.jsonl") || fail "eval-only ($layout): $res"
  got=$(echo "$res" | sed -n 's/.*eval-only: .* val loss \([0-9.]*\), perplexity.*/\1/p')
  [ -n "$got" ] || fail "no eval-only line ($layout): $res"
  python3 -c "import sys; sys.exit(abs($got - $val) > 1e-4)" || fail "val loss $got ($layout) != training's $val"
  echo "eval_only: $layout: val loss $got (training run: $val)"
done
[ "$(ls -l --time-style=full-iso "$out/ck")" = "$before" ] || fail "the checkpoint folder changed"
[ ! -e "$out/m.csv" ] || fail "--eval-only wrote the --metrics file"
[ "$(wc -l < "$out/eval.jsonl")" = 3 ] || fail "--eval-output: expected 3 lines"
grep -q '"step": 4, "val_loss": ' "$out/eval.jsonl" || fail "--eval-output: no step/val_loss"
res=$(run 2 --steps 4 --resume "$out/ck" --checkpoint-dir "$out/ck") || fail "resume at --steps: $res"
echo "$res" | grep -q "nothing to do: .*step_00000004.h5 is at step 4 and --steps is 4; raise --steps" \
  || fail "no nothing-to-do line: $res"
[ "$(ls -l --time-style=full-iso "$out/ck")" = "$before" ] || fail "a finished resume changed the checkpoint folder"
echo "eval_only: ok"
