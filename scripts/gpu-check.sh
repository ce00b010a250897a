#!/bin/bash
# The GPU check: one command, under 5 minutes, on a machine with one H100/H200, CUDA 13
# libraries, and no MPI, HDF5, Boost, OpenBLAS or network. Run from the repository root
# after scripts/gpu-prepare.sh has filled .gpu/ on the build machine (see docs/GPU.md):
#   bash scripts/gpu-check.sh
# 1. unpacks the runtime bundle and finds the machine's NCCL/cuBLAS/cudart;
# 2. runs the device tests (every kernel on CUDA against float64 references and against
#    the CPU backend), the model test (whole GPT/BERT passes on CUDA against the CPU's
#    f64), and the staged-collectives test at 2 and 4 ranks on the one GPU;
# 3. benchmarks mics-train on one GPU: GPT-2 124M and a 1.3B GPT at sequence 1024, bf16;
# 4. runs MiCS on 1, 2 and 4 ranks sharing the GPU through the host-staged path
#    (--comm mpi) and checks the 2- and 4-rank losses against the 1-rank run;
# 5. prints a table; exits non-zero if anything failed.
# Results (logs, CSVs, summary) go to $OUT when set (the device tool), else .gpu/results.
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
RES=${OUT:-$ROOT/.gpu/results}
mkdir -p "$RES"
T0=$(date +%s)
FAILED=0
ROWS=()
note() { echo "gpu-check: $*" | tee -a "$RES/summary.txt"; }
fail() { note "FAIL: $*"; FAILED=1; }
elapsed() { echo $(( $(date +%s) - T0 )); }

# --- 1. runtime -------------------------------------------------------------------------
[ -f .gpu/bundle.tgz ] && [ -f .gpu/run-in-bundle.sh ] ||
  { echo "gpu-check: .gpu/bundle.tgz missing: run scripts/gpu-prepare.sh on the build machine and carry .gpu" >&2; exit 2; }
export MPI_BUNDLE_DIR=${TMPDIR:-/tmp}/mics-gpu-bundle-$$
mkdir -p "$MPI_BUNDLE_DIR"
tar -xzf .gpu/bundle.tgz -C "$MPI_BUNDLE_DIR" || { echo "gpu-check: cannot unpack .gpu/bundle.tgz" >&2; exit 2; }
cp .gpu/run-in-bundle.sh "$MPI_BUNDLE_DIR/"
if [ -f .gpu/extra-libs.tgz ]; then tar -xzf .gpu/extra-libs.tgz -C "$MPI_BUNDLE_DIR"; fi
RUN="sh $MPI_BUNDLE_DIR/run-in-bundle.sh"

# CUDA's libraries are the machine's own (too large to ship). Look in the usual places
# first, then anywhere (NCCL may live inside a Python package).
find_lib() {
  local f d
  f=$(ldconfig -p 2>/dev/null | awk -v n="$1" '$1==n{print $NF; exit}')
  [ -n "$f" ] && { dirname "$f"; return; }
  local py
  py=$(python3 -c 'import site,sys; print(" ".join(site.getsitepackages()+[site.getusersitepackages()]))' 2>/dev/null)
  # Trailing slashes make find follow folders that are symbolic links (cuda/lib64).
  for d in /usr/local/cuda/lib64/ /usr/local/cuda/targets/x86_64-linux/lib/ /usr/local/cuda-*/lib*/ \
           /usr/local/cuda-*/targets/x86_64-linux/lib/ /usr/lib/x86_64-linux-gnu/ /usr/lib64/ \
           $py /usr/local/lib/ /opt/; do
    [ -d "$d" ] || continue
    f=$(find "$d" -name "$1" 2>/dev/null | head -n 1)
    [ -n "$f" ] && { dirname "$f"; return; }
  done
  f=$(timeout 60 find / -xdev -name "$1" 2>/dev/null | head -n 1)
  [ -n "$f" ] && dirname "$f"
}
LIBS=""
for lib in libnccl.so.2 libcublas.so.13 libcublasLt.so.13 libcudart.so.13; do
  d=$(find_lib "$lib")
  if [ -z "$d" ]; then fail "$lib not found on this machine"; continue; fi
  case ":$LIBS:" in *":$d:"*) ;; *) LIBS=${LIBS:+$LIBS:}$d ;; esac
done
export LD_LIBRARY_PATH=$MPI_BUNDLE_DIR/lib${LIBS:+:$LIBS}${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
# A C++ runtime older than the build machine's shows as a missing symbol version; then use
# the one shipped in lib-fallback/.
if ! $RUN test_device_kernels --list_content > "$RES/loadcheck.log" 2>&1 &&
   grep -qE 'GLIBCXX|CXXABI|GCC_[0-9]' "$RES/loadcheck.log"; then
  export LD_LIBRARY_PATH=$MPI_BUNDLE_DIR/lib-fallback:$LD_LIBRARY_PATH
  note "using the shipped libstdc++ (this machine's is older than the build machine's)"
fi
GPU=$(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null | head -n 1)
note "date $(date -u +%Y-%m-%dT%H:%M:%SZ), GPU: ${GPU:-unknown (nvidia-smi failed)}, commit $(cat .gpu/commit 2>/dev/null || echo ?)"
note "CUDA libraries from: ${LIBS:-none}"
for prog in test_device_kernels test_device_cuda test_staged_collectives test_model_transformer mics-train; do
  [ -x "$MPI_BUNDLE_DIR/bin/$prog" ] || continue
  missing=$(LD_LIBRARY_PATH=$MPI_BUNDLE_DIR/usr/lib/x86_64-linux-gnu:$MPI_BUNDLE_DIR/usr/lib/x86_64-linux-gnu/pmix2/lib:$LD_LIBRARY_PATH \
            ldd "$MPI_BUNDLE_DIR/bin/$prog" | grep 'not found')
  [ -z "$missing" ] || { fail "$prog cannot load: $(echo "$missing" | tr -s ' \n' ' ')"; }
done

# --- 2. device tests ----------------------------------------------------------------------
# The model test reads its presets from the source path it was built in: make that path
# lead here when it does not exist on this machine.
SRC=$(cat .gpu/source-dir 2>/dev/null || true)
if [ -n "$SRC" ] && [ "$SRC" != "$ROOT" ] && [ ! -e "$SRC" ]; then
  mkdir -p "$(dirname "$SRC")" 2>/dev/null && ln -s "$ROOT" "$SRC" 2>/dev/null ||
    note "cannot link $SRC to $ROOT: test_model_transformer may not find its presets"
fi
for t in test_device_kernels test_device_cuda test_model_transformer; do
  if [ ! -x "$MPI_BUNDLE_DIR/bin/$t" ]; then fail "$t not in the bundle"; ROWS+=("$t|1|-|-|-|-|-|MISSING"); continue; fi
  s=$(date +%s)
  extra=()
  # The model's f64 finite-difference check runs on the CPU only: not this script's job.
  [ "$t" = test_model_transformer ] && extra=('--run_test=!model_transformer/gradient_check_f64_both_variants')
  timeout 120 $RUN "$t" --color_output=no --report_level=short "${extra[@]}" > "$RES/$t.log" 2>&1
  rc=$?
  tail -n 3 "$RES/$t.log"
  st=PASS
  if [ $rc -eq 77 ]; then st=SKIPPED; fail "$t skipped: no GPU visible to the program";
  elif [ $rc -ne 0 ]; then st="FAIL(rc=$rc)"; fail "$t (see $RES/$t.log)"; fi
  ROWS+=("$t|1|-|-|-|-|$(( $(date +%s) - s ))s|$st")
done

# StagedCollectives alone: 2 and 4 ranks sharing the GPU through pinned host buffers.
for n in 2 4; do
  t=test_staged_collectives
  if [ ! -x "$MPI_BUNDLE_DIR/bin/$t" ]; then fail "$t not in the bundle"; ROWS+=("${t}_np$n|$n|-|-|-|-|-|MISSING"); continue; fi
  s=$(date +%s)
  if ! $RUN "$t" --gpu-probe; then
    fail "$t skipped: no GPU visible"; ROWS+=("${t}_np$n|$n|-|-|-|-|0s|SKIPPED"); continue
  fi
  timeout 90 $RUN mpirun -np "$n" --oversubscribe --bind-to none "$t" --color_output=no \
    > "$RES/${t}_np$n.log" 2>&1
  rc=$?
  st=PASS
  if [ $rc -ne 0 ]; then st="FAIL(rc=$rc)"; fail "$t at $n ranks (see $RES/${t}_np$n.log)"; fi
  ROWS+=("${t}_np$n|$n|-|-|-|-|$(( $(date +%s) - s ))s|$st")
done

# --- 3/4. mics-train ------------------------------------------------------------------------
# csv_stat FILE COLUMN FROM_STEP: mean of COLUMN over rows with step >= FROM_STEP.
csv_stat() {
  awk -F, -v col="$2" -v from="$3" 'NR==1{for(i=1;i<=NF;i++) if($i==col) c=i; next}
    c && $1>=from && $c!="" {s+=$c; n++} END{if(n) printf "%.4g", s/n; else printf "-"}' "$1"
}
csv_last() {
  awk -F, -v col="$2" 'NR==1{for(i=1;i<=NF;i++) if($i==col) c=i; next} c{v=$c} END{printf "%s", v==""?"-":v}' "$1"
}
# train NAME RANKS TIMEOUT ARGS...: runs mics-train (mpirun when RANKS > 1), one table row.
train() {
  local name=$1 ranks=$2 tmo=$3; shift 3
  local csv=$RES/$name.csv log=$RES/$name.log s rc st left
  # Keep the whole check inside its 5 minutes: later runs get what is left of 290 s.
  left=$(( 290 - $(elapsed) ))
  if [ "$left" -lt 15 ]; then
    fail "$name not run: the 5-minute budget is spent"; ROWS+=("$name|$ranks|-|-|-|-|0s|NOT RUN"); return
  fi
  [ "$tmo" -le "$left" ] || tmo=$left
  s=$(date +%s)
  if [ "$ranks" -gt 1 ]; then
    timeout "$tmo" $RUN mpirun -np "$ranks" --oversubscribe --bind-to none \
      mics-train "$@" --metrics "$csv" > "$log" 2>&1
  else
    timeout "$tmo" $RUN mics-train "$@" --metrics "$csv" > "$log" 2>&1
  fi
  rc=$?
  st=PASS
  if [ $rc -eq 124 ]; then st=TIMEOUT; fail "$name ran past ${tmo}s (see $log)";
  elif [ $rc -ne 0 ]; then st="FAIL(rc=$rc)"; fail "$name: $(grep -m1 -i 'error' "$log" || tail -n 1 "$log")"; fi
  if [ ! -s "$csv" ]; then
    ROWS+=("$name|$ranks|-|-|-|-|$(( $(date +%s) - s ))s|$st")
    return
  fi
  local tf mfu loss
  tf=$(csv_stat "$csv" tflops_per_rank 3)
  mfu=$(csv_stat "$csv" mfu 3)
  [ "$mfu" = "-" ] || mfu=$(awk -v m="$mfu" 'BEGIN{printf "%.1f%%", 100*m}')
  loss=$(csv_last "$csv" loss)
  ROWS+=("$name|$ranks|$(csv_last "$csv" step)|$loss|$tf|$mfu|$(( $(date +%s) - s ))s|$st")
}

if [ ! -x "$MPI_BUNDLE_DIR/bin/mics-train" ]; then
  fail "mics-train is not in the bundle (it did not exist when gpu-prepare.sh ran)"
else
  COMMON=(--backend cuda --compute-dtype bf16 --strategy mics --seq 1024 --data synthetic)
  # One GPU, NCCL with one rank (no traffic): the compute speed of the engine.
  train gpt2-124m 1 90 --model inputs/models/gpt2-124m.cfg "${COMMON[@]}" --comm nccl \
        --partition-size 1 --micro-batch 16 --global-batch 16 --steps 12
  train gpt-1.3b 1 150 --model inputs/models/gpt-1.3b.cfg "${COMMON[@]}" --comm nccl \
        --partition-size 1 --micro-batch 8 --global-batch 8 --steps 8
  # Several ranks sharing the GPU through the host-staged path, same global batch.
  for r in 1 2 4; do
    p=$r; [ "$r" -eq 4 ] && p=2   # 4 ranks: two partition groups of 2, replicated
    train "staged-w$r" "$r" 120 --model inputs/models/gpt2-124m.cfg "${COMMON[@]}" --comm mpi \
          --partition-size "$p" --micro-batch 2 --global-batch 8 --steps 10 --lr 6e-4 --warmup 2
  done
  # The fused attention kernels (MICS_ATTENTION=flash, not yet the default), and
  # activation recomputation; last, so that a slow run only cuts these.
  MICS_ATTENTION=flash train gpt2-124m-flash 1 60 --model inputs/models/gpt2-124m.cfg "${COMMON[@]}" \
        --comm nccl --partition-size 1 --micro-batch 16 --global-batch 16 --steps 12
  MICS_ATTENTION=flash train gpt-1.3b-flash 1 90 --model inputs/models/gpt-1.3b.cfg "${COMMON[@]}" \
        --comm nccl --partition-size 1 --micro-batch 8 --global-batch 8 --steps 8
  $RUN mics-train --help > "$RES/mics-train-help.txt" 2>&1 || true
  if grep -q -- '--recompute' "$RES/mics-train-help.txt"; then
    train gpt-1.3b-recompute 1 90 --model inputs/models/gpt-1.3b.cfg "${COMMON[@]}" --comm nccl \
          --partition-size 1 --micro-batch 8 --global-batch 8 --steps 5 --recompute
  else
    note "mics-train has no --recompute option: recomputation run not made"
    ROWS+=("gpt-1.3b-recompute|1|-|-|-|-|0s|NOT RUN")
  fi
  # The layouts see the same global batch: losses must agree up to bf16 rounding of
  # differently ordered reductions (1% relative per step), and fall.
  ref=$RES/staged-w1.csv
  for r in 2 4; do
    c=$RES/staged-w$r.csv
    [ -s "$ref" ] && [ -s "$c" ] || { fail "staged W=$r: no loss to compare"; continue; }
    verdict=$(awk -F, 'FNR==1{for(i=1;i<=NF;i++) if($i=="loss") c=i; next}
      FILENAME==ARGV[1]{a[$1]=$c; next}
      ($1 in a){n++; d=$c-a[$1]; if(d<0)d=-d; r=d/(a[$1]<0?-a[$1]:a[$1]); if(r>m)m=r}
      END{printf "%d %.3g", n, m}' "$ref" "$c")
    n=${verdict% *}; worst=${verdict#* }
    note "staged W=$r vs W=1: $n steps compared, worst relative loss difference $worst"
    if [ "$n" -lt 5 ] || awk -v w="$worst" 'BEGIN{exit !(w > 0.01)}'; then
      fail "staged W=$r loss differs from W=1 (worst $worst over $n steps, bound 0.01)"
    fi
  done
  if [ -s "$ref" ]; then
    first=$(awk -F, 'NR==1{for(i=1;i<=NF;i++) if($i=="loss") c=i; next} NR==2{print $c}' "$ref")
    last=$(csv_last "$ref" loss)
    awk -v a="$first" -v b="$last" 'BEGIN{exit !(b < a)}' || fail "staged W=1 loss did not fall ($first -> $last)"
  fi
fi

# --- 5. table -------------------------------------------------------------------------------
{
  echo
  echo "GPU: ${GPU:-unknown}   date: $(date -u +%F)   total: $(elapsed)s"
  printf '%-28s %5s %5s %10s %12s %7s %7s  %s\n' run ranks steps last_loss TFLOPS/rank MFU time status
  for row in "${ROWS[@]}"; do
    IFS='|' read -r a b c d e f g h <<< "$row"
    printf '%-28s %5s %5s %10s %12s %7s %7s  %s\n' "$a" "$b" "$c" "$d" "$e" "$f" "$g" "$h"
  done
  echo "(TFLOPS/rank and MFU: mean over steps >= 3; MFU against the card's dense bf16 peak)"
} | tee -a "$RES/summary.txt"
rm -rf "$MPI_BUNDLE_DIR"
if [ "$FAILED" -ne 0 ]; then echo "gpu-check: FAILED (details above and in $RES)"; exit 1; fi
echo "gpu-check: all passed in $(elapsed)s"
