#!/usr/bin/env bash
# check-hf-export.sh CHECKPOINT [BUILD_DIR]
# Exports a GPT checkpoint with `mics-ckpt export --format hf`, loads the folder with
# transformers.GPT2LMHeadModel.from_pretrained in float32 and compares its logits on a
# fixed token sequence with mics' own forward pass (`mics-generate --logits`). Passes when
# the largest absolute difference is at most 1e-4.
#
# Not part of the test suite: it needs PyTorch and transformers, which it installs from
# PyPI into a virtual environment created on first use and reused afterwards
# ($MICS_HF_VENV, default ~/.cache/mics/hf-venv; several GB with PyTorch's dependencies).
set -euo pipefail
ckpt=${1:?usage: check-hf-export.sh CHECKPOINT [BUILD_DIR]}
build=${2:-build}
venv=${MICS_HF_VENV:-$HOME/.cache/mics/hf-venv}
if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c "import torch, transformers, safetensors" 2>/dev/null; then
  echo "check-hf-export: creating $venv (torch, transformers, safetensors, numpy)"
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --upgrade pip
  "$venv/bin/pip" install --quiet torch transformers safetensors numpy
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
"$build/bin/mics-ckpt" export "$ckpt" --format hf --output "$work/hf"
# A fixed sequence: a document start, then text bytes, as long as the model's context.
ids=$("$venv/bin/python" - "$work/hf/config.json" <<'PY'
import json, sys
n = json.load(open(sys.argv[1]))["n_positions"]
text = b"This License applies to any program or other work which contains a notice placed by the copyright holder. "
print(" ".join(str(b) for b in ([0] + list(text * 20))[:n]))
PY
)
"$build/bin/mics-generate" "$ckpt" --prompt-ids "$ids" --tokens 0 --output ids --logits "$work/mics.f32" >/dev/null
"$venv/bin/python" - "$work/hf" "$work/mics.f32" "$ids" <<'PY'
import sys
import numpy as np
import torch
import transformers
from transformers import GPT2LMHeadModel
folder, logits_file, ids = sys.argv[1], sys.argv[2], [int(x) for x in sys.argv[3].split()]
model = GPT2LMHeadModel.from_pretrained(folder, torch_dtype=torch.float32).eval()
with torch.no_grad():
    hf = model(torch.tensor([ids])).logits[0].double().numpy()
mics = np.fromfile(logits_file, dtype="<f4").reshape(len(ids), -1).astype(np.float64)
diff = np.abs(hf - mics)
print(f"check-hf-export: {len(ids)} positions x {mics.shape[1]} logits; transformers {transformers.__version__}, "
      f"torch {torch.__version__}; logits range [{mics.min():.3f}, {mics.max():.3f}]")
print(f"check-hf-export: max abs difference {diff.max():.3e} (limit 1e-4), mean {diff.mean():.3e}; "
      f"argmax agrees at {int((hf.argmax(1) == mics.argmax(1)).sum())} of {len(ids)} positions")
sys.exit(0 if diff.max() <= 1e-4 else 1)
PY
