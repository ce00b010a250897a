#!/bin/sh
# Runs a command with the unpacked runtime of scripts/gpu-bundle.sh:
#   gpu-run-in-bundle.sh CMD [ARGS...]          e.g. mpirun -np 2 mics-train ..., or mics-train ...
#   gpu-run-in-bundle.sh --env                  print the exports instead
# The bundle is $MICS_BUNDLE_DIR, else the folder this script is in (the archive carries a
# copy at its root). Its bin/ and usr/bin/ come first on PATH, its libraries first on
# LD_LIBRARY_PATH; CUDA's libraries must already be on LD_LIBRARY_PATH (gpu-check.sh
# finds them).
set -eu
B=${MICS_BUNDLE_DIR:-$(cd "$(dirname "$0")" && pwd)}
[ -x "$B/usr/bin/orterun" ] ||
  { echo "gpu-run-in-bundle: no unpacked bundle in $B (set MICS_BUNDLE_DIR)" >&2; exit 2; }
L=$B/usr/lib/x86_64-linux-gnu
# Open MPI finds its binaries, plugins and help files under OPAL_PREFIX; without it mpirun
# fails with a misleading "unknown option -np". Debian's configuration folder is absolute
# and not moved by OPAL_PREFIX.
export OPAL_PREFIX="$B/usr"
export OPAL_SYSCONFDIR="$B/etc/openmpi"
# Debian's PMIx is external and built with absolute paths: point each of them here.
export PMIX_PKGLIBDIR="$L/pmix2/lib/pmix" PMIX_PKGDATADIR="$L/pmix2/share/pmix"
export PMIX_SYSCONFDIR="$L/pmix2/share"
export PMIX_MCA_mca_base_component_path="$L/pmix2/lib/pmix"
# hwloc plugins are not shipped; never load the host's.
export HWLOC_PLUGINS_PATH="$B/no-hwloc-plugins"
export PATH="$B/bin:$B/usr/bin:$PATH"
export LD_LIBRARY_PATH="$B/lib:$L:$L/pmix2/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
# One node, no ssh: launch locally, talk through shared memory; containers often forbid
# the cross-memory-attach single copy.
export OMPI_MCA_plm=isolated OMPI_MCA_btl=self,vader OMPI_MCA_pml=ob1
export OMPI_MCA_btl_vader_single_copy_mechanism=none
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
export OMPI_MCA_rmaps_base_oversubscribe=1
if [ "${1:-}" = "--env" ]; then
  for v in OPAL_PREFIX OPAL_SYSCONFDIR PMIX_PKGLIBDIR PMIX_PKGDATADIR PMIX_SYSCONFDIR \
           PMIX_MCA_mca_base_component_path HWLOC_PLUGINS_PATH PATH LD_LIBRARY_PATH OMPI_MCA_plm \
           OMPI_MCA_btl OMPI_MCA_pml OMPI_MCA_btl_vader_single_copy_mechanism OMPI_ALLOW_RUN_AS_ROOT \
           OMPI_ALLOW_RUN_AS_ROOT_CONFIRM OMPI_MCA_rmaps_base_oversubscribe; do
    eval "printf 'export %s=%s\n' $v \"\$$v\""
  done
  exit 0
fi
[ $# -gt 0 ] || { echo "gpu-run-in-bundle: usage: gpu-run-in-bundle.sh CMD [ARGS...] | --env" >&2; exit 2; }
exec "$@"
