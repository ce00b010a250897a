# shellcheck shell=bash
# Shared by scripts/gpu-check.sh and scripts/gpu-triage.sh (sourced, not run): the
# bundle's set-up on the GPU machine, the step runners with their time budget, and the
# packing of results into at most a handful of files (the device tool returns at most 8
# files from $OUT, no more than two folders deep).
#
# Globals the caller sets before gl_init: ROOT (repository root), GPU_DIR (the .gpu folder
# gpu-prepare.sh filled), BUDGET (seconds for the whole command), PREFIX (file-name prefix
# of the results: "" for the check, "triage-" for the triage).

# --- results and budget ----------------------------------------------------------------------
gl_init() {
  T0=$(date +%s)
  RES=${OUT:-$GPU_DIR/results}
  mkdir -p "$RES"
  rm -f "$RES/${PREFIX}summary.txt" "$RES/${PREFIX}logs.tgz" "$RES/${PREFIX}runs.csv" \
        "$RES/${PREFIX}observed-errors.txt"
  SUMMARY=$RES/${PREFIX}summary.txt
  WORK=$(mktemp -d "${TMPDIR:-/tmp}/mics-gpu-work.XXXXXX")
  BUNDLE=$(mktemp -d "${TMPDIR:-/tmp}/mics-gpu-bundle.XXXXXX")
  FAILED=0
  ROWS=()
  WRAP=()
  echo "run,ranks,comm,steps,last_loss,tflops_per_rank,mfu,seconds,status" > "$WORK/runs.csv"
  trap gl_exit EXIT
}
gl_exit() {
  gl_pack
  rm -rf "$BUNDLE" "$WORK"
}
elapsed() { echo $(( $(date +%s) - T0 )); }
left() { echo $(( BUDGET - $(elapsed) )); }
note() { echo "${TAG:-gpu-check}: $*" | tee -a "$SUMMARY"; }
fail() { note "FAIL: $*"; FAILED=1; }
# Everything under WORK (logs, metrics CSVs) as one archive, plus the run table and the
# observed kernel errors as small files of their own. Called after every step, so a
# command cut short still leaves what had run.
gl_pack() {
  [ -d "$WORK" ] || return 0
  grep -h '^observed-error' "$WORK"/*.log 2>/dev/null > "$RES/${PREFIX}observed-errors.txt" || true
  [ -s "$RES/${PREFIX}observed-errors.txt" ] || rm -f "$RES/${PREFIX}observed-errors.txt"
  cp "$WORK/runs.csv" "$RES/${PREFIX}runs.csv"
  local part=$RES/.${PREFIX}logs.tgz.part
  # Exit status 1 only means a file changed while it was read (a late writer): the
  # archive is still whole, and a missing archive would lose every log.
  tar -C "$WORK" -czf "$part" . 2>/dev/null
  [ $? -le 1 ] || return 0
  # The device tool returns files of 16 MiB at most: keep each log's first and last
  # 20000 lines when the whole does not fit (a sanitizer may write a great deal).
  if [ "$(stat -c %s "$part")" -gt $((15 * 1024 * 1024)) ]; then
    local cut f
    cut=$(mktemp -d "${TMPDIR:-/tmp}/mics-gpu-cut.XXXXXX")
    for f in "$WORK"/*; do
      { head -n 20000 "$f"; echo "... (cut to fit the 16 MiB limit) ..."; tail -n 20000 "$f"; } > "$cut/$(basename "$f")"
    done
    tar -C "$cut" -czf "$part" . 2>/dev/null
    rm -rf "$cut"
  fi
  mv -f "$part" "$RES/${PREFIX}logs.tgz"
}
# row NAME RANKS COMM STEPS LOSS TFLOPS MFU SECONDS STATUS: one line of the table, kept at
# once in the summary and the CSV.
row() {
  ROWS+=("$1|$2|$3|$4|$5|$6|$7|$8|$9")
  echo "$1,$2,$3,$4,$5,$6,$7,$8,$9" >> "$WORK/runs.csv"
  note "[$(printf '%4s' "$(elapsed)")s] $1: $9 (${8}s)"
  gl_pack
}
# tmo_for MAX: the timeout for a step that may take MAX seconds, cut to what is left of the
# budget less 10 s for packing; 0 when under 15 s would be left (the step is not run).
tmo_for() {
  local l=$(( $(left) - 10 ))
  [ "$l" -ge 15 ] || { echo 0; return; }
  [ "$1" -le "$l" ] && echo "$1" || echo "$l"
}
status_of() {  # status_of RC TIMEOUT
  case $1 in
    0) echo PASS ;; 77) echo SKIPPED ;; 124|137) echo "TIMEOUT(${2}s)" ;; *) echo "FAIL(rc=$1)" ;;
  esac
}

# --- the bundle and CUDA's libraries ----------------------------------------------------------
# find_lib NAME [FIRST_DIR]: the folder holding shared library NAME: FIRST_DIR when it has
# it, then the loader's cache, the usual CUDA folders and Python packages (NCCL and
# cuBLAS may come with PyTorch), then anywhere on this file system (30 s at most).
find_lib() {
  local f d py
  [ -n "${2:-}" ] && [ -e "$2/$1" ] && { echo "$2"; return; }
  f=$(ldconfig -p 2>/dev/null | awk -v n="$1" '$1==n{print $NF; exit}')
  [ -n "$f" ] && { dirname "$f"; return; }
  py=$(python3 -c 'import site; print(" ".join(site.getsitepackages()+[site.getusersitepackages()]))' 2>/dev/null)
  # Trailing slashes make find enter folders that are symbolic links (cuda/lib64).
  for d in /usr/local/cuda/lib64/ /usr/local/cuda/lib/ /usr/local/cuda/targets/x86_64-linux/lib/ \
           /usr/local/cuda-*/lib*/ /usr/local/cuda-*/targets/x86_64-linux/lib/ \
           /usr/lib/x86_64-linux-gnu/ /usr/lib64/ $py /usr/local/lib/ /opt/; do
    [ -d "$d" ] || continue
    f=$(find "$d" -name "$1" 2>/dev/null | head -n 1)
    [ -n "$f" ] && { dirname "$f"; return; }
  done
  f=$(timeout 30 find / -xdev -name "$1" 2>/dev/null | head -n 1)
  [ -n "$f" ] && dirname "$f"
}

# Unpacks the bundle, puts CUDA's libraries on LD_LIBRARY_PATH, and checks that every
# program resolves every library inside the bundle, among CUDA's, or in glibc. Sets RUN.
setup_bundle() {
  [ -f "$GPU_DIR/bundle.tgz" ] || {
    fail "$GPU_DIR/bundle.tgz missing: run scripts/gpu-prepare.sh on the build machine and carry .gpu"
    return 1; }
  tar -xzf "$GPU_DIR/bundle.tgz" -C "$BUNDLE" || { fail "cannot unpack $GPU_DIR/bundle.tgz"; return 1; }
  export MICS_BUNDLE_DIR=$BUNDLE
  RUN="sh $ROOT/scripts/gpu-run-in-bundle.sh"
  local cublas lt nccl cudart dirs="" d lib
  cublas=$(find_lib libcublas.so.13)
  # cuBLASLt must match cuBLAS: take the one beside it first.
  lt=$(find_lib libcublasLt.so.13 "$cublas")
  nccl=$(find_lib libnccl.so.2)
  cudart=$(find_lib libcudart.so.13 "$cublas")
  for lib in libcublas.so.13:$cublas libcublasLt.so.13:$lt libnccl.so.2:$nccl libcudart.so.13:$cudart; do
    d=${lib#*:}
    if [ -z "$d" ]; then fail "${lib%%:*} not found on this machine"; continue; fi
    case ":$dirs:" in *":$d:"*) ;; *) dirs=${dirs:+$dirs:}$d ;; esac
  done
  CUDA_DIRS=$dirs
  export LD_LIBRARY_PATH=$dirs${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
  note "CUDA libraries from: ${dirs:-none} (cuBLAS $cublas, cuBLASLt $lt, NCCL $nccl, cudart $cudart)"
  # A C++ runtime older than the build machine's shows as a missing symbol version: then
  # use the one shipped in lib-fallback/.
  if $RUN mics-train --help > "$WORK/loadcheck.log" 2>&1; then :
  elif grep -qE "GLIBC_[0-9.]+' not found" "$WORK/loadcheck.log"; then
    fail "this machine's glibc is older than the build machine's ($(grep -m1 -oE "GLIBC_[0-9.]+' not found" "$WORK/loadcheck.log")): prepare the bundle on an older system"
  elif grep -qE 'GLIBCXX|CXXABI|GCC_[0-9]' "$WORK/loadcheck.log"; then
    export LD_LIBRARY_PATH=$BUNDLE/lib-fallback:$LD_LIBRARY_PATH
    note "using the shipped libstdc++ (this machine's is older than the build machine's)"
  fi
  closure_check
}

# Every program's libraries resolve inside the bundle, among CUDA's folders, or are glibc /
# the C++ runtime; anything else (or "not found") is named.
closure_check() {
  local p bad ok=1
  command -v ldd >/dev/null || { note "no ldd on this machine: library check skipped"; return 0; }
  for p in "$BUNDLE"/bin/*; do
    bad=$($RUN ldd "$p" 2>&1 | awk -v b="$BUNDLE/" -v c=":$CUDA_DIRS:" '
      /=>/ { name=$1; path=$3
        if (path == "not") { print name " not found"; next }
        if (index(path, b) == 1) next
        dir=path; sub(/\/[^\/]*$/, "", dir)
        if (index(c, ":" dir ":") > 0) next
        if (name ~ /^(libc|libm|libdl|librt|libpthread|libresolv|libutil|libstdc\+\+|libgcc_s|libcuda)\.so/) next
        print name " from " path " (outside the bundle)" }')
    if [ -n "$bad" ]; then fail "$(basename "$p"): $(echo "$bad" | tr '\n' ';')"; ok=0; fi
  done
  [ "$ok" = 1 ] && note "every library of $(ls "$BUNDLE/bin" | wc -l) programs resolves (bundle, CUDA, glibc)"
  return 0
}

# The model test reads its presets from the source path it was built in: make that path
# lead here when it does not exist on this machine.
link_source_dir() {
  local src
  src=$(cat "$GPU_DIR/source-dir" 2>/dev/null || true)
  if [ -n "$src" ] && [ "$src" != "$ROOT" ] && [ ! -e "$src" ]; then
    mkdir -p "$(dirname "$src")" 2>/dev/null && ln -s "$ROOT" "$src" 2>/dev/null ||
      note "cannot link $src to $ROOT: test_model_transformer may not find its presets"
  fi
}

have_gpu() { $RUN test_staged_collectives --gpu-probe >/dev/null 2>&1; }

# --- step runners ---------------------------------------------------------------------------
# run_prog NAME MAX PROG ARGS...: one process (under WRAP, e.g. compute-sanitizer), one row.
run_prog() {
  local name=$1 max=$2 prog=$3 tmo s rc; shift 3
  tmo=$(tmo_for "$max")
  [ "$tmo" -gt 0 ] || { fail "$name not run: budget spent"; row "$name" 1 - - - - - 0 "NOT RUN(budget)"; return; }
  [ -x "$BUNDLE/bin/$prog" ] || { fail "$prog is not in the bundle"; row "$name" 1 - - - - - 0 MISSING; return; }
  s=$(date +%s)
  timeout -k 5 "$tmo" $RUN "${WRAP[@]}" "$prog" "$@" > "$WORK/$name.log" 2>&1
  rc=$?
  if [ "$rc" -ne 0 ] && ! { [ "$rc" -eq 77 ] && [ "${ALLOW_SKIP:-0}" = 1 ]; }; then
    fail "$name: $(grep -m1 -iE 'error|fail|skipped' "$WORK/$name.log" || tail -n 1 "$WORK/$name.log") (log $name.log)"
  fi
  row "$name" 1 - - - - - $(( $(date +%s) - s )) "$(status_of $rc "$tmo")"
}
# run_mpi NAME RANKS MAX PROG ARGS...: the same under the bundle's mpirun.
run_mpi() {
  local name=$1 n=$2 max=$3 prog=$4 tmo s rc; shift 4
  tmo=$(tmo_for "$max")
  [ "$tmo" -gt 0 ] || { fail "$name not run: budget spent"; row "$name" "$n" - - - - - 0 "NOT RUN(budget)"; return; }
  s=$(date +%s)
  timeout -k 5 "$tmo" $RUN mpirun -np "$n" --bind-to none "${WRAP[@]}" "$prog" "$@" > "$WORK/$name.log" 2>&1
  rc=$?
  [ "$rc" -eq 0 ] || fail "$name: $(grep -m1 -iE 'error|fail' "$WORK/$name.log" || tail -n 1 "$WORK/$name.log") (log $name.log)"
  row "$name" "$n" - - - - - $(( $(date +%s) - s )) "$(status_of $rc "$tmo")"
}

# csv_mean FILE COLUMN FROM_STEP / csv_last FILE COLUMN: from a --metrics CSV.
csv_mean() {
  awk -F, -v col="$2" -v from="$3" 'NR==1{for(i=1;i<=NF;i++) if($i==col) c=i; next}
    c && $1>=from && $c!="" {s+=$c; n++} END{if(n) printf "%.4g", s/n; else printf "-"}' "$1"
}
csv_last() {
  awk -F, -v col="$2" 'NR==1{for(i=1;i<=NF;i++) if($i==col) c=i; next} c{v=$c} END{printf "%s", v==""?"-":v}' "$1"
}
nccl_failed() { grep -qiE 'nccl' "$1" && grep -qiE 'error|fail|abort' "$1"; }

# train_once LOG CSV RANKS TMO ARGS...: one mics-train run (mpirun when RANKS > 1).
train_once() {
  local log=$1 csv=$2 n=$3 tmo=$4; shift 4
  rm -f "$csv"
  if [ "$n" -gt 1 ]; then
    timeout -k 5 "$tmo" $RUN mpirun -np "$n" --bind-to none "${WRAP[@]}" mics-train "$@" --metrics "$csv" > "$log" 2>&1
  else
    timeout -k 5 "$tmo" $RUN "${WRAP[@]}" mics-train "$@" --metrics "$csv" > "$log" 2>&1
  fi
}
# train NAME RANKS MAX COMM ARGS...: mics-train with --comm COMM. An NCCL failure is retried
# once on the loopback interface without cuMem, then with --comm mpi; the row says which
# ran.
train() {
  local name=$1 n=$2 max=$3 comm=$4 tmo s rc ran csv log; shift 4
  csv=$WORK/$name.csv log=$WORK/$name.log
  tmo=$(tmo_for "$max")
  [ "$tmo" -gt 0 ] || { fail "$name not run: budget spent"; row "$name" "$n" "$comm" - - - - 0 "NOT RUN(budget)"; return; }
  s=$(date +%s)
  ran=$comm
  train_once "$log" "$csv" "$n" "$tmo" "$@" --comm "$comm"
  rc=$?
  if [ "$rc" -ne 0 ] && [ "$rc" -ne 124 ] && [ "$comm" = nccl ] && nccl_failed "$log"; then
    note "$name: NCCL failed ($(grep -iE 'error|fail' "$log" | grep -m1 -i nccl)); retrying with NCCL_SOCKET_IFNAME=lo NCCL_CUMEM_ENABLE=0"
    tmo=$(tmo_for "$max")
    NCCL_SOCKET_IFNAME=lo NCCL_CUMEM_ENABLE=0 train_once "$WORK/$name.retry.log" "$csv" "$n" "$tmo" "$@" --comm nccl
    rc=$?; ran="nccl(lo,cumem-off)"; log=$WORK/$name.retry.log
    if [ "$rc" -ne 0 ] && [ "$rc" -ne 124 ] && nccl_failed "$log"; then
      note "$name: NCCL failed again; running with --comm mpi (host-staged) instead"
      tmo=$(tmo_for "$max")
      train_once "$WORK/$name.mpi.log" "$csv" "$n" "$tmo" "$@" --comm mpi
      rc=$?; ran="mpi(nccl-failed)"; log=$WORK/$name.mpi.log
    fi
  fi
  [ "$rc" -eq 0 ] || fail "$name: $(grep -m1 -iE 'error' "$log" || tail -n 1 "$log") (log $(basename "$log"))"
  local steps=- loss=- tf=- mfu=-
  if [ -s "$csv" ]; then
    steps=$(csv_last "$csv" step); loss=$(csv_last "$csv" loss)
    tf=$(csv_mean "$csv" tflops_per_rank 3); mfu=$(csv_mean "$csv" mfu 3)
    [ "$mfu" = "-" ] || mfu=$(awk -v m="$mfu" 'BEGIN{printf "%.1f%%", 100*m}')
  fi
  row "$name" "$n" "$ran" "$steps" "$loss" "$tf" "$mfu" $(( $(date +%s) - s )) "$(status_of $rc "$tmo")"
}

# compare_losses REF OTHER NAME: the layouts see the same global batch, so their losses
# must agree up to bf16 rounding of differently ordered sums (1% relative per step).
compare_losses() {
  local ref=$WORK/$1.csv c=$WORK/$2.csv v n worst
  [ -s "$ref" ] && [ -s "$c" ] || { fail "$2 vs $1: no losses to compare"; return; }
  v=$(awk -F, 'FNR==1{for(i=1;i<=NF;i++) if($i=="loss") c=i; next}
    FILENAME==ARGV[1]{a[$1]=$c; next}
    ($1 in a){n++; d=$c-a[$1]; if(d<0)d=-d; r=d/(a[$1]<0?-a[$1]:a[$1]); if(r>m)m=r}
    END{printf "%d %.3g", n, m}' "$ref" "$c")
  n=${v% *}; worst=${v#* }
  note "$2 vs $1: $n steps compared, worst relative loss difference $worst (bound 0.01)"
  if [ "$n" -lt 5 ] || awk -v w="$worst" 'BEGIN{exit !(w > 0.01)}'; then
    fail "$2 loss differs from $1 (worst $worst over $n steps, bound 0.01)"
  fi
}
loss_falls() {
  local f=$WORK/$1.csv a b
  [ -s "$f" ] || return 0
  a=$(awk -F, 'NR==1{for(i=1;i<=NF;i++) if($i=="loss") c=i; next} NR==2{print $c}' "$f")
  b=$(csv_last "$f" loss)
  awk -v a="$a" -v b="$b" 'BEGIN{exit !(b < a)}' && note "$1: loss fell from $a to $b" ||
    fail "$1: loss did not fall ($a -> $b)"
}

print_table() {
  {
    echo
    echo "GPU: ${GPU_NAME:-unknown}   date: $(date -u +%F)   total: $(elapsed)s of a ${BUDGET}s budget"
    printf '%-30s %5s %-18s %5s %9s %11s %6s %5s  %s\n' run ranks comm steps last_loss TFLOPS/rank MFU secs status
    local r a b c d e f g h i
    for r in "${ROWS[@]}"; do
      IFS='|' read -r a b c d e f g h i <<< "$r"
      printf '%-30s %5s %-18s %5s %9s %11s %6s %5s  %s\n' "$a" "$b" "$c" "$d" "$e" "$f" "$g" "$h" "$i"
    done
    echo "(TFLOPS/rank and MFU: means over steps >= 3, MFU against the card's dense bf16 peak)"
  } | tee -a "$SUMMARY"
}
