"""Score forced alignments against reference alignments: how far can the aligner be trusted?

    python tools/compare_alignments.py REFERENCE ALIGN_DIR [--out agreement.json]

REFERENCE is a manifest (``manifest.jsonl`` or its folder, e.g. the demo corpus, whose TextGrids
are exact) whose utterances carry an ``alignment``; ALIGN_DIR holds ``<id>.TextGrid`` from
``vqspeech align``. Both phone tiers are folded onto the 41 classes (the phone set of each side is
recognised from its labels) and compared on 10 ms frames. Prints one JSON line:

- ``frame_agreement``: fraction of frames whose folded phone classes agree;
- ``word_boundary_within_20ms`` / ``_50ms``: fraction of reference word starts and ends with the
  aligned word boundary that close (utterances whose word counts match);
- ``utterances``, ``frames``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from vqspeech.data.alignments import Segment, read_alignment
from vqspeech.data.manifest import read_manifest
from vqspeech.data.phones import PhoneFolding, guess_phone_set
from vqspeech.errors import UserError
from vqspeech.eval.frames import frame_spans, labels_from_spans
from vqspeech.cli import as_flags
from vqspeech.fileio import ALIGN_MARK, check_output_file, write_text_atomic

FRAME = 0.01


def frame_classes(segments: list[Segment], num_frames: int, folding: PhoneFolding) -> np.ndarray:
    """Class label per 10 ms frame (the phone at the frame centre, as the probe labels code frames)."""
    labels = labels_from_spans(frame_spans(segments, folding, num_frames, 1 / FRAME, FRAME / 2), num_frames)
    labels[labels == ""] = "sil"  # an excluded phone counts as silence here, on both sides alike
    return labels


def compare(reference: str, align_dir: str) -> dict:
    utts = [u for u in read_manifest(reference) if u.alignment]
    pairs = [(u, Path(align_dir) / f"{u.id}.TextGrid") for u in utts]
    pairs = [(u, p) for u, p in pairs if p.is_file()]
    if not pairs:
        raise UserError(f"No utterance of {reference} has an alignment in {align_dir}; "
                        "run `vqspeech align` on the same corpus first.")
    own = [u.alignment for u, _ in pairs if (Path(u.alignment).parent / ALIGN_MARK).is_file()]
    if own:
        raise UserError(f"{len(own)} of the reference alignments in {reference} (e.g. {own[0]}) were written by "
                        "`vqspeech align`, not shipped with the corpus, so they would be compared with themselves "
                        "or another aligner run; give a manifest whose alignments are the corpus's own.")
    ref_phones = {u.id: read_alignment(u.alignment) for u, _ in pairs}
    hyp_phones = {u.id: read_alignment(p) for u, p in pairs}
    ref_fold = PhoneFolding.load(guess_phone_set({s.label for v in ref_phones.values() for s in v}))
    hyp_fold = PhoneFolding.load(guess_phone_set({s.label for v in hyp_phones.values() for s in v}))

    agree = total = 0
    deviations: list[float] = []
    for utt, path in pairs:
        num_frames = int(utt.duration / FRAME)
        ref = frame_classes(ref_phones[utt.id], num_frames, ref_fold)
        hyp = frame_classes(hyp_phones[utt.id], num_frames, hyp_fold)
        agree += int(np.sum(ref == hyp))
        total += num_frames
        ref_words = read_alignment(utt.alignment, tier="words")
        hyp_words = read_alignment(path, tier="words")
        if len(ref_words) == len(hyp_words):
            for r, h in zip(ref_words, hyp_words):
                deviations += [abs(r.start - h.start), abs(r.end - h.end)]
    dev = np.asarray(deviations)
    return {
        "utterances": len(pairs),
        "frames": total,
        "frame_agreement": round(agree / max(total, 1), 4),
        "word_boundary_within_20ms": round(float(np.mean(dev <= 0.02)), 4) if dev.size else None,
        "word_boundary_within_50ms": round(float(np.mean(dev <= 0.05)), 4) if dev.size else None,
        "reference_phone_set": ref_fold.phone_set,
        "aligned_phone_set": hyp_fold.phone_set,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("reference", help="manifest with exact alignments (or its folder)")
    parser.add_argument("align_dir", help="folder of <id>.TextGrid from `vqspeech align`")
    parser.add_argument("--out", default=None, help="also write the scores to this JSON file")
    parser.add_argument("--overwrite", action="store_true", help="replace --out when it exists")
    args = parser.parse_args(argv)
    try:
        if args.out:
            if Path(args.out).suffix != ".json":  # alignments and manifests have other names: never replaced
                raise UserError(f"--out {args.out} should name a .json file (the scores are JSON).")
            check_output_file(args.out, args.overwrite, inputs=[args.reference])
        scores = compare(args.reference, args.align_dir)
    except UserError as exc:
        print(f"compare_alignments: error: {as_flags(str(exc), {'--overwrite'})}", file=sys.stderr)
        return 2
    if args.out:
        write_text_atomic(args.out, json.dumps(scores, indent=2) + "\n")
    print(json.dumps(scores))
    return 0


if __name__ == "__main__":
    sys.exit(main())
