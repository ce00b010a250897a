#!/usr/bin/env bash
# Checkpoint write/read bandwidth on RANKS ranks for a synthetic model of MB megabytes
# (fp32 master + Adam m + v), next to the limit: a plain sequential dd write
# (conv=fdatasync) and read of the same number of bytes on the same disk. The page cache
# is dropped before every read when we may (root), so reads come from the disk.
#   validation/bench-checkpoint.sh [BUILD_DIR] [MB] [RANKS] [REPS]
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build=${1:-$root/build}
mb=${2:-300}
ranks=${3:-4}
reps=${4:-3}
bench=$build/bin/checkpoint_bench
[ -x "$bench" ] || { echo "bench-checkpoint: $bench not built (cmake --build $build --target checkpoint_bench)"; exit 1; }
source "$root/scripts/env.sh"
work=${BENCH_DIR:-$build/bench-checkpoint.tmp}
rm -rf "$work"; mkdir -p "$work"
trap 'rm -rf "$work"' EXIT

drop() {
  sync
  if echo 3 > /proc/sys/vm/drop_caches 2>/dev/null; then cache=cold; else cache=warm; fi
}
field() { sed -n "s/.*$1=\([^ ]*\).*/\1/p"; }

rows=()
for r in $(seq 1 "$reps"); do
  for io in two-phase per-rank; do
    rm -rf "$work/ckpt"
    drop
    out=$(mpirun -n "$ranks" --bind-to none "$bench" "$work/ckpt" "$mb" save $io)
    bytes=$(echo "$out" | field bytes)
    rows+=("save-$io $r $(echo "$out" | field seconds) $bytes")
    drop
    out=$(mpirun -n "$ranks" --bind-to none "$bench" "$work/ckpt" "$mb" load $io)
    [ "$(echo "$out" | field wrong)" = 0 ] || { echo "bench-checkpoint: load read wrong values: $out"; exit 1; }
    rows+=("load-$io $r $(echo "$out" | field seconds) $bytes")
    file_bytes=$(stat -c %s "$work"/ckpt/step_*.h5)
  done

  # The limit: the same number of bytes written and read sequentially by dd.
  count=$(( (bytes + 4194303) / 4194304 ))
  drop
  t0=$(date +%s.%N)
  dd if=/dev/zero of="$work/plain" bs=4M count="$count" conv=fdatasync status=none
  t1=$(date +%s.%N)
  rows+=("dd-write $r $(echo "$t1 - $t0" | bc -l) $((count * 4194304))")
  drop
  t0=$(date +%s.%N)
  dd if="$work/plain" of=/dev/null bs=4M status=none
  t1=$(date +%s.%N)
  rows+=("dd-read $r $(echo "$t1 - $t0" | bc -l) $((count * 4194304))")
  rm -f "$work/plain"
done

echo "# checkpoint bandwidth: $ranks ranks (p=$ranks), model states $(echo "$bytes / 1000000" | bc) MB (file $(echo "$file_bytes / 1000000" | bc) MB), best of $reps, page cache $cache before each phase"
echo "# $(date -u +%Y-%m-%dT%H:%MZ) $(uname -n) $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg); disk: $(df -P "$work" | awk 'NR==2 {print $1}') $(findmnt -no FSTYPE -T "$work" 2>/dev/null || true)"
printf '%-48s %8s %8s %9s %7s\n' "operation" "MB" "best s" "MB/s" "vs dd"
declare -A sec mbs bytes_of
for op in save-two-phase load-two-phase save-per-rank load-per-rank dd-write dd-read; do
  line=$(for row in "${rows[@]}"; do set -- $row; [ "$1" = "$op" ] && echo "$3 $4"; done | sort -g | head -n 1 || true)
  s=${line% *}; b=${line#* }
  sec[$op]=$s
  mbs[$op]=$(echo "$b / $s / 1000000" | bc -l)
  bytes_of[$op]=$b
done
for op in "save-two-phase:dd-write:checkpoint save, two-phase collective I/O" \
          "load-two-phase:dd-read:checkpoint load, two-phase collective I/O" \
          "save-per-rank:dd-write:checkpoint save, collective call, per-rank I/O" \
          "load-per-rank:dd-read:checkpoint load, collective call, per-rank I/O" \
          "dd-write:dd-write:dd write bs=4M conv=fdatasync (limit)" "dd-read:dd-read:dd read bs=4M (limit)"; do
  IFS=: read -r o ref label <<<"$op"
  printf '%-48s %8.1f %8.3f %9.1f %6.0f%%\n' "$label" "$(echo "${bytes_of[$o]} / 1000000" | bc -l)" \
    "${sec[$o]}" "${mbs[$o]}" "$(echo "100 * ${mbs[$o]} / ${mbs[$ref]}" | bc -l)"
done
