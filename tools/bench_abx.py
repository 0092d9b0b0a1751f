#!/usr/bin/env python
"""ABX speed: seconds per protocol on a synthetic corpus, and the vectorised code vs the brute force.

    python tools/bench_abx.py [--utterances 2000] [--speakers 4] [--dim 64] [--one_hot 0] [--json]

The corpus: utterances of 2-4 s at 100 frames/s, phones of 3-12 frames drawn from 39 classes, each
class a direction in feature space plus noise (or one-hot codes of a random 4-code vocabulary per
class with --one_hot K). Prints one line per protocol (any-context / triphone x within / across)
with items, scored cells and seconds, then the speed-up over ``abx_error_bruteforce`` on a small
subset where the loops finish in reasonable time.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import numpy as np

from vqspeech.cli import bounded_int
from vqspeech.eval.abx import abx_error, abx_error_bruteforce, build_items

PHONES = 39


def synthetic_corpus(utterances: int, speakers: int, dim: int, one_hot: int, seed: int = 0):
    """(features [T, D] per utterance, phone spans per utterance, speaker per utterance)."""
    rng = np.random.default_rng(seed)
    directions = rng.normal(size=(PHONES, dim))
    vocab = rng.integers(0, one_hot, size=(PHONES, 4)) if one_hot else None
    features, spans, who = [], [], []
    for u in range(utterances):
        frames, segs, start = int(rng.integers(200, 400)), [(0, 20, "sil")], 20
        labels = np.full(frames, -1)
        while start < frames - 20:
            length = int(rng.integers(3, 13))
            phone = int(rng.integers(PHONES))
            segs.append((start, min(start + length, frames - 20), f"p{phone}"))
            labels[start: start + length] = phone
            start += length
        segs.append((segs[-1][1], frames, "sil"))
        if one_hot:
            ids = np.where(labels >= 0, vocab[np.maximum(labels, 0), rng.integers(0, 4, frames)], 0)
            x = np.eye(one_hot, dtype=np.float32)[ids]
        else:
            x = np.where(labels[:, None] >= 0, directions[np.maximum(labels, 0)], 0.0)
            x = (x + rng.normal(scale=6.0, size=(frames, dim))).astype(np.float32)
        features.append(x)
        spans.append(segs)
        who.append(f"s{u % speakers}")
    return features, spans, who


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--utterances", type=bounded_int(20, 10**6), default=2000)
    parser.add_argument("--speakers", type=bounded_int(2, 1000), default=4)
    parser.add_argument("--dim", type=bounded_int(1, 4096), default=64)
    parser.add_argument("--one_hot", type=bounded_int(0, 65536), default=0, help="K: one-hot codes instead of continuous features")
    parser.add_argument("--brute_utterances", type=bounded_int(2, 10**4), default=40, help="subset for the brute-force comparison")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    features, spans, speakers = synthetic_corpus(args.utterances, args.speakers, args.dim, args.one_hot)
    rows = []
    for context in (False, True):
        items = build_items(spans, speakers, context=context)
        for across in (False, True):
            start = time.perf_counter()
            result = abx_error(features, items, across=across)
            rows.append({"protocol": "triphone" if context else "any-context",
                         "condition": "across" if across else "within", "items": len(items),
                         "cells": result["num_pairs"], "error": result["error"],
                         "seconds": round(time.perf_counter() - start, 2)})
    n = min(args.brute_utterances, args.utterances)  # the corpus may be smaller than the subset asked for
    small = build_items(spans[:n], speakers[:n], context=False)
    timings = {}
    for name, fn in (("vectorised", abx_error), ("brute force", abx_error_bruteforce)):
        start = time.perf_counter()
        fn(features[:n], small, across=False)
        timings[name] = time.perf_counter() - start
    speedup = timings["brute force"] / max(timings["vectorised"], 1e-9)
    if args.json:
        print(json.dumps({"rows": rows, "bruteforce_seconds": timings, "speedup": speedup}))
        return
    kind = f"one-hot K={args.one_hot}" if args.one_hot else f"continuous D={args.dim}"
    print(f"{args.utterances} utterances, {args.speakers} speakers, {kind}")
    for r in rows:
        print(f"{r['protocol']:>11} {r['condition']:<6} items {r['items']:>6}  cells {r['cells']:>6}  "
              f"error {'n/a' if r['error'] is None else format(r['error'], '.3f')}  {r['seconds']:>6.2f} s")
    print(f"any-context within on {n} utterances: vectorised {timings['vectorised']:.2f} s, brute force "
          f"{timings['brute force']:.2f} s ({speedup:.0f}x)")


if __name__ == "__main__":
    main()
