"""The phoneme probe of a model's codes beside an MFCC + k-means baseline, as one table.

    # the table of probe results already written by `vqspeech evaluate probe`
    python tools/phoneme_probe.py exp/fsdd/probe/vqvae.json exp/fsdd/probe/mfcc-kmeans.json

    # everything: the baseline (same K and code rate, k-means fitted on the train split), both
    # probes, the table (OUT_DIR/table.md)
    python tools/phoneme_probe.py --codes exp/fsdd/codes --manifest data/fsdd/prepared/manifest.jsonl \
        --split test --out_dir exp/fsdd/probe

Rows are metrics, columns the systems followed by the chance baselines of the first (random codes
with the same K, and the majority phone), all through the same code path.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from vqspeech.data.codes import CodesFolder
from vqspeech.errors import UserError
from vqspeech.eval.baseline import mfcc_kmeans_baseline, settings_like
from vqspeech.eval.probe import run_probe
from vqspeech.cli import as_flags, seed_arg
from vqspeech.fileio import check_output_file, write_text_atomic

ROWS = [  # key, label, which way is better
    ("accuracy", "phone accuracy (code -> phone, held-out speakers)", "higher"),
    ("pnmi", "PNMI", "higher"),
    ("accuracy_no_silence", "phone accuracy, silence excluded", "higher"),
    ("pnmi_no_silence", "PNMI, silence excluded", "higher"),
    ("phone_purity", "phone purity", "higher"),
    ("cluster_purity", "cluster purity", "higher"),
    ("linear_probe_accuracy", "linear probe on latents", "higher"),
    ("abx_within", "ABX within speaker (any context)", "lower"),
    ("abx_across", "ABX across speakers (any context)", "lower"),
    ("abx_within_triphone", "ABX within speaker (triphone)", "lower"),
    ("abx_across_triphone", "ABX across speakers (triphone)", "lower"),
    ("abx_within_latents", "ABX within, latents", "lower"),
    ("abx_across_latents", "ABX across, latents", "lower"),
    ("speaker_id_acc", "speaker ID from code histograms", "lower"),
    ("speaker_id_acc_input", "speaker ID from input MFCCs", "reference"),
    ("codes_used", "codes used", ""),
    ("num_phone_classes", "phone classes", ""),
    ("num_frames", "frames", ""),
    ("num_frames_no_silence", "frames, silence excluded", ""),
]


COMPARED = ("split", "num_utterances", "num_frames", "num_phone_classes", "ignored_labels", "phone_set")
"""What must be equal for two probes' numbers to compare."""


def _cell(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.3f}"
    return str(value)


def table(results: list[dict]) -> str:
    """A Markdown table: one row per metric, one column per system, then the chance baselines."""
    baselines = results[0].get("baselines", {})
    columns = [r.get("system", f"system {i}") for i, r in enumerate(results)]
    columns += ["random codes", "majority phone"]
    first = results[0]
    split = first.get("split") or "all splits, so also utterances the models were trained on"
    lines = [f"{first.get('num_utterances')} utterances ({split}), {first.get('num_speakers')} speakers, "
             f"{first.get('phone_set')} phone alignments folded to {first.get('num_phone_classes')} classes.", "",
             "| metric | better | " + " | ".join(columns) + " |", "|---|---|" + "---|" * len(columns)]
    differ = [key for key in COMPARED if len({json.dumps(r.get(key)) for r in results}) > 1]
    if differ:  # e.g. one probe with --ignore or another split: its numbers are of other frames
        lines[1:1] = ["", f"**The columns do not compare**: the probes differ in {', '.join(differ)} "
                      "(the same codes' alignments, split and ignored labels make them compare)."]
    for key, label, better in ROWS:
        values = [r.get(key) for r in results]
        if all(v is None for v in values):
            continue
        chance = [baselines.get(name, {}).get(key) for name in ("random_codes", "majority_phone")]
        lines.append(f"| {label} | {better} | " + " | ".join(_cell(v) for v in values + chance) + " |")
    return "\n".join(lines) + "\n"


def stale_notes(results: list[dict]) -> list[str]:
    """A sentence for each probe whose codes folder holds other codes now than those it measured
    (another model's codebook: encoded again since), or is not there any more."""
    notes = []
    for i, result in enumerate(results):
        name, codes_dir, measured = result.get("system", f"system {i}"), result.get("codes_dir"), result.get("codebook")
        if not isinstance(codes_dir, str):
            continue
        try:
            now = CodesFolder.open(codes_dir).info.codebook
        except UserError:
            notes.append(f"**Stale**: the codes '{name}' measured ({codes_dir}) are not there any more.")
            continue
        if isinstance(measured, str) and measured != now:
            notes.append(f"**Stale**: {codes_dir} holds codes of another codebook than the ones '{name}' measured "
                         "(encoded again since); re-run `vqspeech evaluate probe` on it.")
    return notes


def run_all(args) -> list[Path]:
    out = Path(args.out_dir)
    num_codes, code_rate = settings_like(args.codes)
    baseline_dir = out / "mfcc-kmeans-codes"
    mfcc_kmeans_baseline(args.manifest, baseline_dir, num_codes=num_codes, code_rate_hz=code_rate,
                         seed=args.seed, overwrite=args.overwrite)
    paths = []
    for name, codes in (("vqvae", args.codes), ("mfcc-kmeans", baseline_dir)):
        path = out / f"{name}.json"
        run_probe(codes, path, manifest=args.manifest, split=args.split, name=name, seed=args.seed,
                  overwrite=args.overwrite)
        paths.append(path)
    return paths


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("results", nargs="*", help="probe JSON files written by `vqspeech evaluate probe`")
    parser.add_argument("--codes", help="run everything on this codes folder (with --manifest, --out_dir)")
    parser.add_argument("--manifest")
    parser.add_argument("--split", default=None)
    parser.add_argument("--out_dir")
    parser.add_argument("--out", default=None, help="also write the table here (default with --out_dir: table.md)")
    parser.add_argument("--seed", type=seed_arg, default=0)
    parser.add_argument("--overwrite", action="store_true", help="replace the files of an earlier run (and --out)")
    args = parser.parse_args(argv)
    default_out = None
    try:
        if args.out and Path(args.out).suffix not in (".md", ".txt"):  # a probe JSON given is never replaced
            raise UserError(f"--out {args.out} should name a .md (or .txt) file: the table is Markdown.")
        if args.codes:
            if not (args.manifest and args.out_dir):
                raise UserError("--codes needs --manifest (with phone alignments) and --out_dir.")
            default_out = str(Path(args.out_dir) / "table.md")
            if args.out and args.out != default_out:  # checked before the probes run
                check_output_file(args.out, args.overwrite)
            paths = run_all(args)
            args.out = args.out or default_out
        elif args.results:
            paths = [Path(p) for p in args.results]
        else:
            raise UserError("Give probe JSON files, or --codes with --manifest and --out_dir.")
        results = []
        for path in paths:
            try:
                results.append(json.loads(path.read_text()))
            except (OSError, ValueError, RecursionError) as exc:
                raise UserError(f"Cannot read probe results {path} ({exc}); run `vqspeech evaluate probe` first.") from None
        for path, result in zip(paths, results):
            # accuracy is null where it is not defined (one speaker and one utterance: nothing to hold out)
            if not (isinstance(result, dict) and "accuracy" in result and isinstance(result.get("num_frames"), int)):
                raise UserError(f"{path} is not a probe result (no accuracy); give the JSON `vqspeech evaluate probe` wrote.")
            baselines = result.get("baselines", {})
            if not (isinstance(result.get("system", ""), str) and isinstance(baselines, dict)
                    and all(isinstance(b, dict) for b in baselines.values())):
                raise UserError(f"{path} is not a probe result (its system or baselines are not what "
                                "`vqspeech evaluate probe` writes); give the JSON it wrote.")
        if args.out and not args.codes:  # with --codes it was checked before the probes ran
            check_output_file(args.out, args.overwrite, inputs=args.results)
    except UserError as exc:
        print(f"phoneme_probe: error: {as_flags(str(exc), {'--overwrite'})}", file=sys.stderr)
        return 2
    text = table(results)
    notes = stale_notes(results)
    if notes:
        text = "\n".join(notes) + "\n\n" + text
    print(text, end="")
    if args.out:
        write_text_atomic(Path(args.out), text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
