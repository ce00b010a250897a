#!/bin/bash
# gpu_check_plumbing SOURCE_DIR BUILD_DIR WORK_DIR (ctest; see CMakeLists.txt):
# 1. gpu-prepare.sh --from-build BUILD_DIR packs the suite's own CUDA programs;
# 2. gpu-check.sh --no-gpu on that bundle: exit 0, the "no GPU" line, every step PASS (or
#    SKIPPED for the CUDA test program), at most 8 plain files in its results folder;
# 2b. where a mount namespace is permitted (root), the bundled mpirun runs 2 ranks with
#    this machine's Open MPI, PMIx, HDF5, OpenBLAS and Boost hidden, as on the GPU machine;
# 3. the check's step runners (scripts/gpu-lib.sh) on the CPU backend from the bundle:
#    metrics parsed into the table, losses of 2 ranks compared with 1, an NCCL failure
#    retried and then run with --comm mpi, a step past the budget not run;
# 4. the same bundle without libhdf5 must fail, naming the library.
set -uo pipefail
SRC=$1 BUILD=$2 W=$3
rm -rf "$W"; mkdir -p "$W"
die() { echo "gpu_check_plumbing: $*" >&2; exit 1; }
# grep -c reads to the end: grep -q would exit at the first match, and under pipefail the
# SIGPIPE that tar then gets fails the test at random (it did in CI).
archive_has() { tar -tzf "$1" | grep -c -- "$2" > /dev/null; }

bash "$SRC/scripts/gpu-prepare.sh" --from-build "$BUILD" --out "$W/gpu" > "$W/prepare.log" 2>&1 ||
  { tail -20 "$W/prepare.log"; die "gpu-prepare.sh failed (log $W/prepare.log)"; }
tail -3 "$W/prepare.log"
[ -s "$W/gpu/bundle.tgz" ] || die "gpu-prepare.sh left no bundle.tgz"

OUT=$W/out bash "$SRC/scripts/gpu-check.sh" --no-gpu --gpu-dir "$W/gpu" --budget 300 > "$W/check.log" 2>&1
rc=$?
cat "$W/check.log"
[ "$rc" -eq 0 ] || die "gpu-check.sh --no-gpu exited $rc (expected 0)"
grep -q '^gpu-check: no GPU (--no-gpu): plumbing checked' "$W/check.log" || die "no 'no GPU' line"
n=$(find "$W/out" -mindepth 1 | wc -l)
nf=$(find "$W/out" -mindepth 1 -type f | wc -l)
[ "$n" -le 8 ] && [ "$n" -eq "$nf" ] || die "$W/out holds $n entries ($nf files): the device tool returns 8 plain files at most"
for f in summary.txt runs.csv logs.tgz; do [ -s "$W/out/$f" ] || die "$f missing from the results"; done
bad=$(awk -F, 'NR>1 && $9!="PASS" && !($1=="test_device_cuda-without-gpu" && $9=="SKIPPED")' "$W/out/runs.csv")
[ -z "$bad" ] || die "steps not passed: $bad"
archive_has "$W/out/logs.tgz" 'plumbing-mpirun-np2.log' || die "logs.tgz lacks the mpirun log"
grep -q 'SKIPPED: no CUDA device' "$W/check.log" "$W/out/summary.txt" ||
  tar -xzOf "$W/out/logs.tgz" ./test_device_cuda-without-gpu.log | grep -c 'SKIPPED' > /dev/null ||
  die "test_device_cuda did not say it skipped"

# The bundle alone, with the system's copies of what it carries hidden.
mkdir -p "$W/broken/x" "$W/broken/gpu"
tar -xzf "$W/gpu/bundle.tgz" -C "$W/broken/x"   # unpacked once: run here, then broken below
if unshare -m true 2>/dev/null; then
  mkdir -p "$W/iso/empty"
  MICS_BUNDLE_DIR=$W/broken/x W=$W SRC=$SRC timeout 180 unshare -m sh -c '
    L=/usr/lib/x86_64-linux-gnu
    for d in $L/openmpi $L/pmix2 /etc/openmpi /usr/share/openmpi; do
      [ -d "$d" ] && { mount --bind "$W/iso/empty" "$d" || exit 9; }
    done
    for f in $L/libmpi.so.40 $L/libopen-pal.so.40 $L/libopen-rte.so.40 $L/libhdf5_openmpi.so.103 \
             $L/libopenblas.so.0 $L/libboost_program_options.so.1.74.0 /usr/bin/orted /usr/bin/orterun; do
      [ -e "$f" ] && { mount --bind /dev/null "$(readlink -f "$f")" || exit 8; }
    done
    sh "$SRC/scripts/gpu-run-in-bundle.sh" mpirun -np 2 --bind-to none mics-train \
      --model "$SRC/inputs/models/tiny.cfg" --backend cpu --threads 1 --data synthetic --steps 3 \
      --global-batch 4 --micro-batch 1' > "$W/isolated.log" 2>&1 ||
    { tail -20 "$W/isolated.log"; die "the bundle does not run with the system's MPI/HDF5/OpenBLAS/Boost hidden"; }
  grep -q 'step *3/3' "$W/isolated.log" || { tail -20 "$W/isolated.log"; die "isolated run did not reach step 3"; }
  echo "gpu_check_plumbing: the bundled mpirun ran 2 ranks with the system's MPI, PMIx, HDF5, OpenBLAS and Boost hidden"
  rm -rf "$W/iso"
else
  echo "gpu_check_plumbing: no mount namespace here (unshare -m refused): isolated run not made"
fi

# The step runners, as the GPU check uses them, on tiny CPU runs.
(
  ROOT=$SRC GPU_DIR=$W/gpu BUDGET=240 PREFIX=steps- OUT=$W/steps
  . "$SRC/scripts/gpu-lib.sh"
  gl_init
  setup_bundle
  tiny=(--model "$SRC/inputs/models/tiny.cfg" --backend cpu --threads 1 --data synthetic --strategy mics
        --global-batch 8 --micro-batch 1 --steps 8 --lr 3e-3 --warmup 1)
  train w1 1 60 mpi "${tiny[@]}" --partition-size 1
  train w2 2 60 mpi "${tiny[@]}" --partition-size 2
  train nccl-retry 1 60 nccl "${tiny[@]}" --partition-size 1   # refused on the CPU: NCCL fails
  compare_losses w1 w2
  loss_falls w1
  BUDGET=$(elapsed)
  train late 1 60 mpi "${tiny[@]}"
  print_table
) > "$W/steps.log" 2>&1
cat "$W/steps.log"
csv=$W/steps/steps-runs.csv
row_of() { awk -F, -v n="$1" '$1==n' "$csv"; }
row_of w1 | grep -qE '^w1,1,mpi,8,[0-9.]+,[0-9.e+-]+,-,[0-9]+,PASS$' || die "w1 row wrong: $(row_of w1)"
row_of w2 | grep -qE '^w2,2,mpi,8,[0-9.]+,.*,PASS$' || die "w2 row wrong: $(row_of w2)"
row_of nccl-retry | grep -q ',mpi(nccl-failed),8,.*,PASS$' || die "NCCL failure not retried then run with mpi: $(row_of nccl-retry)"
grep -q 'retrying with NCCL_SOCKET_IFNAME=lo NCCL_CUMEM_ENABLE=0' "$W/steps.log" || die "no NCCL retry line"
grep -q 'w2 vs w1: 8 steps compared' "$W/steps.log" || die "losses of w2 and w1 not compared"
grep -q 'w1: loss fell' "$W/steps.log" || die "w1's loss did not fall"
row_of late | grep -q 'NOT RUN(budget)$' || die "a step past the budget ran: $(row_of late)"
archive_has "$W/steps/steps-logs.tgz" 'w2.csv' || die "the metrics CSVs are not in the archive"

# The triage: an unknown step is refused with the list; without a GPU it stops with its
# one line, leaving its files beside the check's.
bash "$SRC/scripts/gpu-triage.sh" nosuch-step > "$W/triage-bad.log" 2>&1
rc=$?
[ "$rc" -eq 2 ] && grep -q "no step named 'nosuch-step'; steps: test_device_kernels" "$W/triage-bad.log" ||
  die "gpu-triage.sh nosuch-step: exit $rc, $(cat "$W/triage-bad.log")"
OUT=$W/triage bash "$SRC/scripts/gpu-triage.sh" test_device_cuda --gpu-dir "$W/gpu" > "$W/triage.log" 2>&1
rc=$?
cat "$W/triage.log"
[ "$rc" -eq 2 ] && grep -q '^gpu-triage: no GPU: no CUDA device is visible to the programs; nothing to triage' "$W/triage.log" ||
  die "gpu-triage.sh without a GPU: exit $rc (expected 2 and the 'no GPU' line)"
for f in triage-summary.txt triage-logs.tgz; do [ -s "$W/triage/$f" ] || die "triage left no $f"; done

# A bundle that lacks a library the programs load must not pass.
rm -f "$W"/broken/x/lib/libhdf5*
tar -C "$W/broken/x" -cf - . | gzip -1 > "$W/broken/gpu/bundle.tgz"
cp "$W/gpu/commit" "$W/gpu/source-dir" "$W/broken/gpu/"
OUT=$W/broken/out bash "$SRC/scripts/gpu-check.sh" --no-gpu --gpu-dir "$W/broken/gpu" --budget 120 > "$W/broken.log" 2>&1
rc=$?
[ "$rc" -eq 1 ] || { cat "$W/broken.log"; die "a bundle without libhdf5 gave exit $rc (expected 1)"; }
grep -q 'FAIL: .*libhdf5' "$W/broken/out/summary.txt" || { cat "$W/broken.log"; die "the failure does not name libhdf5"; }
echo "gpu_check_plumbing: passed (bundle $(du -k "$W/gpu/bundle.tgz" | cut -f1) KiB; a bundle without libhdf5 fails naming it)"
rm -rf "$W/broken/x"
