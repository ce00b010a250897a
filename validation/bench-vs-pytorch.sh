#!/usr/bin/env bash
# mics against PyTorch on one process (issue 14): the whole CPU training step of GPT-2
# small (12 layers, hidden 768, 12 heads, vocab 50257; forward, backward, global-norm
# clipping, AdamW) on the same machine, thread count, model and tokens per step, for
#   mics     build/bin/mics-train on one rank (--strategy ddp --data synthetic), run with
#            OMP_WAIT_POLICY=passive as validation/bench-model.sh explains; its per-step
#            step_ms from --metrics, the first step of each run left out;
#   eager    PyTorch eager with torch.optim.AdamW(fused=True) and clip_grad_norm_;
#   compile  torch.compile(model) with the same optimizer (compile and warm-up untimed);
# against the limit measured in the same minutes: mics-bench-model --sgemm-only, the CPU
# backend's f32 GEMM rate on the model's own GEMM shapes at the same thread count, right
# before and right after the mics run, the higher of the two (the CSV keeps both).
# The three are interleaved (rotating the order each repeat); per repeat each system's
# median step, then the median over repeats with min-max; ratios PyTorch / mics time pair
# the runs of one repeat (> 1: mics faster); fraction = model FLOPs (docs/DESIGN.md section
# 6, f = 3) / step time / sgemm rate. The load average is printed at start and end.
#
# PyTorch is installed on demand from PyPI into a virtual environment that is reused
# (validation/torch-venv.sh; several GB the first time). Never part of the test suite.
#
# Usage: validation/bench-vs-pytorch.sh [BUILD_DIR]      (default build)
# Environment knobs:
#   SHAPES   "SEQxBATCH ..." (default "256x4 1024x1": 1024 tokens per step in both)
#   THREADS  "2 1" thread counts (default)
#   REPEATS  interleaved repeats (default 3; 0 only compiles, to fill the inductor cache)
#   STEPS    timed steps per system per repeat (default 3)
#   CSV      rows appended here (default validation/out/bench-vs-pytorch.csv)
#   DTYPE    f32 (default) or bf16: mics --compute-dtype bf16 against PyTorch's bf16 autocast,
#            the limit then the CPU backend's bf16 GEMM rate (its fastest path here: AMX
#            tiles, AVX-512 BF16 or portable loops; the table says which)
# Timing needs a quiet machine: on a shared one, wrap each call (e.g. one shape and one
# thread count) in whatever pauses the other jobs.
set -euo pipefail
cd "$(dirname "$0")/.."
build=${1:-build}
shapes=${SHAPES:-256x4 1024x1}
threads=${THREADS:-2 1}
csv=${CSV:-validation/out/bench-vs-pytorch.csv}
for bin in mics-train mics-bench-model; do
  [[ -x $build/bin/$bin ]] || { echo "bench-vs-pytorch: $build/bin/$bin not built" >&2; exit 1; }
done
mkdir -p "$(dirname "$csv")"
venv=$(bash validation/torch-venv.sh)
cpu=$(lscpu | sed -n 's/^Model name: *//p')
avx512=$(grep -q avx512f /proc/cpuinfo && echo yes || echo no)
echo "# machine: $(nproc) cores, $cpu, AVX-512 $avx512; $(date -u +%Y-%m-%dT%H:%MZ); load $(cut -d' ' -f1-3 /proc/loadavg)"
echo "# mics $(git rev-parse --short HEAD 2>/dev/null || echo '?'), build $build; PyTorch $("$venv/bin/python" -c 'import torch; print(torch.__version__)')"
# Which kernels mics multiplies with here: OpenBLAS for f32 (a machine may pin its core),
# and the CPU backend's bf16 path (amx, avx512-bf16 or portable).
bf16_path=$("$build/bin/mics-bench-model" --sgemm-only --compute-dtype bf16 --layers 1 --hidden 64 \
  --heads 1 --seq 8 --vocab 64 --batch 1 --iters 1 2>/dev/null | sed -n 's/^# bf16 GEMM path: //p')
echo "# mics GEMMs: f32 OpenBLAS (OPENBLAS_CORETYPE ${OPENBLAS_CORETYPE:-unset}), bf16 path ${bf16_path:-?}"
first_row=$(( $( [[ -f $csv ]] && wc -l < "$csv" || echo 1) ))
for shape in $shapes; do
  for n in $threads; do
    "$venv/bin/python" validation/bench_vs_pytorch.py --seq "${shape%x*}" --batch "${shape#*x}" \
      --threads "$n" --repeats "${REPEATS:-3}" --steps "${STEPS:-3}" --dtype "${DTYPE:-f32}" \
      --mics-train "$build/bin/mics-train" --bench-model "$build/bin/mics-bench-model" --csv "$csv"
  done
done
echo "# this call's rows ($csv):"
if [[ -f $csv ]]; then
  { head -n 1 "$csv"; tail -n "+$(( first_row > 1 ? first_row + 1 : 2 ))" "$csv"; } > "$csv.last"
  "$venv/bin/python" validation/bench_vs_pytorch.py --table "$csv.last"
fi
