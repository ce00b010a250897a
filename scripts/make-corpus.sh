#!/usr/bin/env bash
# make-corpus.sh [OUT_DIR] — builds the small real-text corpus the default job trains on.
#
# Source: the licence texts Debian's base-files package installs in
# /usr/share/common-licenses (GPL, LGPL, GFDL, MPL, Artistic, BSD, CC0, Apache): real
# English prose, about 250 KB, present on every Debian system, so the corpus is built
# locally instead of downloaded or shipped. Each file is one document; the
# validation split is the last 10% of the stream (the end of Apache-2.0 and MPL-2.0,
# listed last because their wording shares least with the GPL family before them).
#
# Writes OUT_DIR/corpus_train.bin and OUT_DIR/corpus_val.bin (default build/data/corpus)
# with `mics-data convert` (byte tokens, vocabulary 256). The converter is taken from
# $MICS_DATA, else build/bin/mics-data.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
out="${1:-$root/build/data/corpus}"
mics_data="${MICS_DATA:-$root/build/bin/mics-data}"
src=/usr/share/common-licenses
if [ ! -x "$mics_data" ]; then
  echo "make-corpus.sh: error: $mics_data not found; build first (scripts/build.sh) or set MICS_DATA" >&2
  exit 1
fi
inputs=()
bytes=0
for name in GPL-1 GPL-2 GPL-3 LGPL-2 LGPL-2.1 LGPL-3 GFDL-1.2 GFDL-1.3 MPL-1.1 Artistic BSD CC0-1.0 Apache-2.0 MPL-2.0; do
  f="$src/$name"
  if [ -f "$f" ]; then
    inputs+=(--input "$f")
    bytes=$((bytes + $(stat -c %s "$f")))
  fi
done
# The default job needs enough text for a visible learning curve and a validation split.
if [ "$bytes" -lt 100000 ]; then
  echo "make-corpus.sh: error: only $bytes bytes of text in $src (need at least 100000)" >&2
  exit 1
fi
"$mics_data" convert "${inputs[@]}" --output-prefix "$out/corpus" --val-fraction 0.1
