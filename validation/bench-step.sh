#!/usr/bin/env bash
# The CPU training step, before against after (issue 14): runs A B A B ... of one
# measurement on two builds and prints one line per run, so that both builds see the same
# minutes of machine load. Run it under mics-quiet on the shared VM.
#
#   bash validation/bench-step.sh model|train BEFORE_BUILD AFTER_BUILD [SEQ] [BATCH] [THREADS] [ROUNDS]
#
# model: mics-bench-model on GPT-2 small (12 x 768, vocab 50257): fwd+bwd and +optimizer
#        as fractions of the same-run sgemm rate (PROFILE=1 adds the per-kernel table).
# train: a 1-rank mics-train --strategy ddp step (forward, backward, clipping, AdamW), 4
#        steps, the median step_ms of steps 2-4 and its exposed communication; the sgemm
#        limit is taken by a 1-layer mics-bench-model of the same build right before.
set -euo pipefail
cd "$(dirname "$0")/.."
mode=$1 before=$2 after=$3 seq=${4:-256} batch=${5:-4} threads=${6:-2} rounds=${7:-2}
export OMP_WAIT_POLICY=passive
out=validation/out
mkdir -p "$out"
load() { cut -d' ' -f1 /proc/loadavg; }

bench_model() {  # build layers -> the bench's output
  "$1/bin/mics-bench-model" --threads "$threads" --layers "$2" --hidden 768 --heads 12 --seq "$seq" \
    --vocab 50257 --batch "$batch" --iters 1 --warmup 1 ${PROFILE:+--profile}
}

run_model() {  # label build
  local l0 txt
  l0=$(load)
  txt=$(bench_model "$2" 12)
  echo "$txt" > "$out/bench-step-model-$1-$seq-$batch-$threads.txt"
  echo "$txt" | awk -v lab="$1" -v l0="$l0" -v l1="$(load)" '
    /^[0-9.]+ +[0-9.]+ +[0-9.]+/ && !fb { fb=1; step=$3; gf=$6; lim=$7; frac=$8 }
    /^\+optimizer/ { full=$3; ffrac=$7; opt=$9 }
    END { printf "%-6s load %s->%s  sgemm %s GF/s  fwd+bwd %s ms %s  +optimizer %s ms %s %s\n",
                 lab, l0, l1, lim, step, frac, full, ffrac, opt }'
  if [ -n "${PROFILE:-}" ]; then echo "$txt" | sed -n '/^kernel (one step)/,$p'; fi
}

run_train() {  # label build
  local l0 lim csv="$out/bench-step-train-$1.csv"
  l0=$(load)
  lim=$(bench_model "$2" 1 | awk '/^sgemm shape/ {s=1; next} s && NF==0 {s=0} s {if ($NF>m) m=$NF} END {print m}')
  rm -f "$csv"
  "$2/bin/mics-train" --strategy ddp --model inputs/models/gpt2-124m.cfg --seq "$seq" \
    --global-batch "$batch" --micro-batch "$batch" --threads "$threads" --data synthetic \
    --steps 4 --metrics "$csv" > /dev/null
  awk -F, -v lab="$1" -v l0="$l0" -v l1="$(load)" -v lim="$lim" '
    NR==1 { for (i=1;i<=NF;i++) col[$i]=i; next }
    $col["step"] >= 2 { n++; ms[n]=$col["step_ms"]; tf[n]=$col["tflops_per_rank"]; ex+=$col["exposed_comm_ms"] }
    END { for (i=1;i<=n;i++) for (j=i+1;j<=n;j++) if (ms[j]<ms[i]) { t=ms[i]; ms[i]=ms[j]; ms[j]=t; t=tf[i]; tf[i]=tf[j]; tf[j]=t }
          m=int((n+1)/2); printf "%-6s load %s->%s  sgemm %.1f GF/s  step %.0f ms (min %.0f max %.0f)  model %.1f GF/s  %.1f%%  exposed comm %.1f ms/step\n",
          lab, l0, l1, lim, ms[m], ms[1], ms[n], tf[m]*1000, 100*tf[m]*1000/lim, ex/n }' "$csv"
}

echo "# bench-step $mode: seq $seq, batch $batch, $threads threads, $(nproc) cores, $(lscpu | sed -n 's/^Model name: *//p'), $(date -u +%Y-%m-%dT%H:%MZ)"
for ((r = 1; r <= rounds; ++r)); do
  "run_$mode" before "$before"
  "run_$mode" after "$after"
done
