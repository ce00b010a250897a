#!/bin/bash
# Packs programs with everything they need at run time except glibc and CUDA's own
# libraries into one relocatable archive, for a GPU machine that has no MPI, HDF5, Boost
# or OpenBLAS (see docs/GPU.md):
#   scripts/gpu-bundle.sh --out FILE.tgz PROGRAM...
# The archive holds
#   usr/...        Open MPI (orterun/orted, its plugins and help files) and PMIx, copied
#                  from this machine's installed Debian packages at their usual paths, so
#                  that OPAL_PREFIX=<bundle>/usr relocates them;
#   etc/openmpi/   Open MPI's configuration (Debian hard-codes /etc/openmpi);
#   bin/           the programs;
#   lib/           every other shared library they or the MPI plugins load (the ldd
#                  closure: HDF5, Boost, OpenBLAS, libgomp, ...), found here by ldd;
#   lib-fallback/  this machine's libstdc++ and libgcc_s, used only where the GPU
#                  machine's own are older;
#   MANIFEST       what was packed, and from where.
# scripts/gpu-run-in-bundle.sh sets up the environment to run from the unpacked archive.
# Needs nothing but the installed packages (no download). Fails naming the library when
# a program needs one that cannot be found here.
set -euo pipefail
OUTF=""; PROGS=()
while [ $# -gt 0 ]; do
  case $1 in
    --out) OUTF=$2; shift 2 ;;
    -h|--help) sed -n '2,20p' "$0"; exit 0 ;;
    -*) echo "gpu-bundle: unknown option '$1' (use --out FILE.tgz PROGRAM...)" >&2; exit 2 ;;
    *) PROGS+=("$1"); shift ;;
  esac
done
[ -n "$OUTF" ] && [ ${#PROGS[@]} -gt 0 ] ||
  { echo "gpu-bundle: usage: gpu-bundle.sh --out FILE.tgz PROGRAM..." >&2; exit 2; }
for p in "${PROGS[@]}"; do
  [ -x "$p" ] || { echo "gpu-bundle: program '$p' does not exist or is not executable" >&2; exit 2; }
done
command -v dpkg-query >/dev/null || { echo "gpu-bundle: needs a Debian system (dpkg-query)" >&2; exit 1; }

HERE=$(cd "$(dirname "$0")" && pwd)
S=$(mktemp -d "${TMPDIR:-/tmp}/mics-bundle.XXXXXX")
trap 'rm -rf "$S"' EXIT
ARCH_LIB=usr/lib/x86_64-linux-gnu

# --- 1. Open MPI and PMIx, file by file from the installed packages ------------------------
# Plugins for fabrics the GPU machine lacks (and whose libraries we would have to ship),
# OpenSHMEM, Java and Fortran are left out: one node talks through shared memory.
MPI_PKGS="openmpi-bin openmpi-common libopenmpi3 libpmix2"
SKIP='/usr/share/(doc|man|lintian|bug|locale)/|/usr/include/|\.a$|/pkgconfig/|amca-param-sets|'
SKIP+='(ucx|uct|ofi|openib|psm|verbs|hcoll|ucc|portals|netlink|cuda)[^/]*\.so(\.[0-9.]+)?$|'
SKIP+='mca_(atomic|memheap|scoll|spml|sshmem)_|libmpi_(java|mpifh|usempi)|liboshmem|libompitrace|'
SKIP+='libompi_dbg_msgq|/usr/bin/'
for pkg in $MPI_PKGS; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'ok installed' ||
    { echo "gpu-bundle: package $pkg is not installed (run scripts/install-deps.sh)" >&2; exit 1; }
  dpkg-query -L "$pkg" | grep -vE "$SKIP" | while read -r f; do
    if [ -L "$f" ] || [ -f "$f" ]; then printf '%s\0' "$f"; fi
  done | xargs -0 -r cp -P --parents -t "$S"
done
# The launcher and the daemon it starts; mpirun/mpiexec are Debian alternatives here.
mkdir -p "$S/usr/bin"
for b in orterun orted ompi_info; do cp -L "/usr/bin/$b" "$S/usr/bin/"; done
ln -sf orterun "$S/usr/bin/mpirun"
ln -sf orterun "$S/usr/bin/mpiexec"

# --- 2. the programs -------------------------------------------------------------------------
mkdir -p "$S/bin" "$S/lib" "$S/lib-fallback"
for p in "${PROGS[@]}"; do cp -L "$p" "$S/bin/"; done

# --- 3. the library closure ----------------------------------------------------------------
# Left to the GPU machine: glibc, and CUDA's libraries (hundreds of MiB; the machine's own
# match its driver). libstdc++/libgcc_s go to lib-fallback/.
machine_lib() {
  case $1 in
    linux-vdso.so*|ld-linux*|libc.so.*|libm.so.*|libdl.so.*|librt.so.*|libpthread.so.*|\
    libresolv.so.*|libutil.so.*|libcuda.so*|libcudart.so*|libcublas.so*|libcublasLt.so*|\
    libnccl.so*|libnvrtc*|libnvJitLink*) return 0 ;;
  esac
  return 1
}
is_elf() { [ "$(head -c 4 "$1" 2>/dev/null | od -An -c | tr -d ' ')" = '177ELF' ]; }
LP="$S/lib:$S/$ARCH_LIB:$S/$ARCH_LIB/pmix2/lib"
is_plugin() { case $1 in */openmpi3/*|*/pmix2/lib/pmix/*) return 0 ;; esac; return 1; }
# Each ELF file is examined once; files copied in are examined in the next round.
declare -A seen=()
missing=""
for _ in 1 2 3 4 5 6 7 8; do
  added=0
  while read -r f; do
    [ -n "${seen[$f]:-}" ] && continue
    seen[$f]=1
    is_elf "$f" || continue
    out=$(LD_LIBRARY_PATH=$LP ldd "$f" 2>/dev/null) || continue
    while read -r name arrow path _; do
      [ "$arrow" = "=>" ] || continue
      machine_lib "$name" && continue
      case $name in
        libstdc++.so*|libgcc_s.so*)
          [ -e "$S/lib-fallback/$name" ] || cp -L "$path" "$S/lib-fallback/$name"; continue ;;
      esac
      if [ "$path" = "not" ]; then
        if is_plugin "$f"; then rm -f "$f"; echo "gpu-bundle: left out plugin ${f#"$S"/} (needs $name)"; break; fi
        missing="$missing ${f#"$S"/}:$name"; continue
      fi
      case $path in "$S"/*) continue ;; esac
      [ -e "$S/lib/$name" ] || { cp -L "$path" "$S/lib/$name"; added=$((added + 1)); }
    done <<< "$out"
  done < <(find "$S" -type f \( -name '*.so*' -o -perm -u+x \))
  [ "$added" -eq 0 ] && break
done
if [ -n "$missing" ]; then
  echo "gpu-bundle: libraries not found on this machine:$missing" >&2; exit 1
fi
cp "$HERE/gpu-run-in-bundle.sh" "$S/run-in-bundle.sh"

{
  echo "mics GPU bundle, made $(date -u +%Y-%m-%dT%H:%M:%SZ) on $(. /etc/os-release && echo "$PRETTY_NAME")"
  for pkg in $MPI_PKGS; do echo "package $pkg $(dpkg-query -W -f='${Version}' "$pkg")"; done
  for p in "${PROGS[@]}"; do echo "program $(basename "$p")"; done
  for l in "$S"/lib/* "$S"/lib-fallback/*; do [ -e "$l" ] && echo "library ${l#"$S"/}"; done
  echo "left to the GPU machine: glibc, libcudart, libcublas, libcublasLt, libnccl, libcuda"
} > "$S/MANIFEST"
mkdir -p "$(dirname "$OUTF")"
tar -C "$S" -czf "$OUTF" .
echo "gpu-bundle: $OUTF: $(du -k "$OUTF" | cut -f1) KiB packed ($(du -sk "$S" | cut -f1) KiB unpacked), $(grep -c '^library' "$S/MANIFEST") libraries, ${#PROGS[@]} programs"
