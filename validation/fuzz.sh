#!/usr/bin/env bash
# validation/fuzz.sh [SECONDS_PER_TARGET] [OUT_DIR]
# Builds the libFuzzer targets in validation/fuzz/ with clang (-fsanitize=fuzzer,address,
# undefined) straight from the library sources they exercise, and runs each for a fixed
# CPU budget (default 60 s, one process) from a small seed corpus of real files:
#   fuzz_token_file           token-file header reader and shard loader (lib/data)
#   fuzz_config               model preset and mics-train --config parsers
#   fuzz_checkpoint_manifest  checkpoint layout record, packed manifest and metadata
# Prints, per target, the executions, coverage and whether it found anything; crash
# inputs are kept in OUT_DIR (default build-fuzz/). Not part of CI (it needs minutes).
set -u
budget=${1:-60}
root=$(cd "$(dirname "$0")/.." && pwd)
out=${2:-$root/build-fuzz}
CXX=${CXX_FUZZ:-clang++-14}
command -v "$CXX" >/dev/null || { echo "fuzz.sh: $CXX not found (apt-get install clang-14)"; exit 1; }
mkdir -p "$out"
flags=(-std=c++20 -g -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined
       -I"$root/include" -I"$root/lib/checkpoint" $(mpicxx --showme:compile) -I/usr/include/hdf5/openmpi)
libs=($(mpicxx --showme:link) -lboost_program_options -L/usr/lib/x86_64-linux-gnu/hdf5/openmpi -lhdf5)

declare -A sources=(
  [fuzz_token_file]="lib/data/token_file.cpp lib/data/dataset.cpp lib/core/check.cpp"
  [fuzz_config]="lib/model/config.cpp lib/train/options.cpp lib/engine/train_config.cpp lib/device/registry.cpp validation/fuzz/dtype_stub.cpp"
  [fuzz_checkpoint_manifest]="lib/checkpoint/manifest.cpp lib/checkpoint/h5.cpp lib/core/check.cpp lib/core/agree.cpp lib/core/watchdog.cpp"
)

seed() {  # seed TARGET DIR: real files to start from
  mkdir -p "$2"
  case $1 in
    fuzz_token_file)
      python3 - "$2" <<'PY'
import struct, sys
d = sys.argv[1]
for n, toks in (("empty", []), ("small", [1, 2, 3, 250, 7])):
    hdr = [20240520, 1, len(toks)] + [0] * 253
    open(f"{d}/{n}.bin", "wb").write(struct.pack("<256i", *hdr) + struct.pack(f"<{len(toks)}H", *toks))
PY
      ;;
    fuzz_config)
      cp "$root"/inputs/models/*.cfg "$2"/ ; cp "$root"/inputs/runs/default.cfg "$2"/run.cfg ;;
    fuzz_checkpoint_manifest)
      printf 'bucket embeddings 296 2\ntensor wte 0 256 1 2 32 8\ntensor wpe 256 40 1 2 5 8\n' >"$2/layout.txt" ;;
  esac
}

status=0
for t in fuzz_token_file fuzz_config fuzz_checkpoint_manifest; do
  src=()
  for s in ${sources[$t]}; do
    src+=("$root/$s")
  done
  echo "== $t: building"
  "$CXX" "${flags[@]}" "$root/validation/fuzz/$t.cpp" "${src[@]}" "${libs[@]}" -o "$out/$t" 2>"$out/$t.build.log" \
    || { echo "build failed:"; tail -20 "$out/$t.build.log"; status=1; continue; }
  seed "$t" "$out/$t.seeds"
  mkdir -p "$out/$t.corpus" "$out/$t.crashes"
  echo "== $t: running ${budget} s"
  (cd "$out/$t.crashes" && ASAN_OPTIONS=detect_leaks=0 "$out/$t" -max_total_time="$budget" -timeout=10 -rss_limit_mb=2048 \
     "$out/$t.corpus" "$out/$t.seeds" >"$out/$t.log" 2>&1); rc=$?
  summary=$(grep -E '^#[0-9]+.*(DONE|pulse|NEW)' "$out/$t.log" | tail -1)
  crashes=$(ls "$out/$t.crashes" | grep -Ec '^(crash|leak|timeout|oom)-' || true)
  echo "$t: exit $rc; last status: ${summary:-none}; findings: $crashes"
  [ "$rc" -ne 0 ] && { grep -E 'ERROR|SUMMARY|==[0-9]+==' "$out/$t.log" | head -5; status=1; }
done
exit $status
