#!/usr/bin/env python3
"""english_words.py --generate BIN --checkpoint CKPT --corpus SHARD [--min F | --max F]

Asks mics-generate to continue a prompt taken from the training corpus, once per seed,
and measures how much of the continuations is real English: the fraction of their words
(maximal runs of two or more ASCII letters, lower-cased, counting repeats; the first and
last run of each continuation are dropped, since the prompt or the token limit may cut
them) that occur as words of the corpus shard (the same runs of its text). Single
letters are left out: the corpus has most of them ("s" from "program's"), so they would
count as words whatever the model. --min F passes when that fraction is at least F, with
at least --min-words words of which a third distinct (a trained model; a model stuck on
"the the the" fails); --max F passes when it is at most F (an untrained model: the
measure must tell the two apart). Prints the measure, the counts and the text; exits 1
on failure.
"""
import argparse
import re
import struct
import subprocess
import sys

HEADER_BYTES = 256 * 4  # llm.c's shard header: 256 int32, then uint16 tokens


def corpus_text(path):
    raw = open(path, "rb").read()
    magic, _version, count = struct.unpack("<3i", raw[:12])
    if magic != 20240520:
        sys.exit(f"english_words: {path}: not a token shard")
    tokens = struct.unpack(f"<{count}H", raw[HEADER_BYTES:HEADER_BYTES + 2 * count])
    return bytes(t for t in tokens if 0 < t < 256).decode("latin-1")


def words(text):
    return [w.lower() for w in re.findall(r"[A-Za-z]{2,}", text)]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--generate", required=True)
    ap.add_argument("--checkpoint", required=True)
    ap.add_argument("--corpus", required=True)
    ap.add_argument("--tokens", type=int, default=400)
    ap.add_argument("--temperature", default="0.8")
    ap.add_argument("--seeds", default="1,2,3", help="one continuation per seed, measured together")
    ap.add_argument("--min", type=float)
    ap.add_argument("--max", type=float)
    ap.add_argument("--min-words", type=int, default=30)
    a = ap.parse_args()

    text = corpus_text(a.corpus)
    vocabulary = set(words(text))
    # The prompt: 64 bytes of the corpus starting at a word, a fixed place in the text.
    start = text.index(" ", len(text) // 3) + 1
    prompt = text[start:start + 64]
    ws, samples = [], []
    for seed in a.seeds.split(","):
        out = subprocess.run([a.generate, a.checkpoint, "--prompt", prompt, "--tokens", str(a.tokens),
                              "--temperature", a.temperature, "--seed", seed, "--echo", "false"],
                             capture_output=True, timeout=120)
        if out.returncode != 0:
            sys.exit(f"english_words: mics-generate failed ({out.returncode}): "
                     f"{out.stderr.decode(errors='replace')}")
        samples.append(out.stdout.decode("latin-1"))
        ws += words(samples[-1])[1:-1]
    known = sum(w in vocabulary for w in ws)
    frac = known / len(ws) if ws else 0.0
    print(f"prompt: {prompt!r}")
    for seed, sample in zip(a.seeds.split(","), samples):
        print(f"sample (seed {seed}): {sample!r}")
    print(f"english_words: {known} of {len(ws)} words ({len(set(ws))} distinct) are corpus words: "
          f"fraction {frac:.3f} (vocabulary {len(vocabulary)} words)")
    ok = True
    if a.min is not None:
        ok = len(ws) >= a.min_words and frac >= a.min and len(set(ws)) >= a.min_words // 3
        print(f"english_words: {'ok' if ok else 'FAIL'}: need >= {a.min_words} words, "
              f">= {a.min_words // 3} distinct, fraction >= {a.min}")
    if a.max is not None:
        ok = frac <= a.max
        print(f"english_words: {'ok' if ok else 'FAIL'}: untrained model, need fraction <= {a.max}")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
