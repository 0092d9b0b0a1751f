"""Train each VQ-VAE variant for the same budget and put their evaluations in one table.

    python tools/ablate.py --manifest data/fsdd/prepared/manifest.jsonl --out_dir exp/ablation \
        --minutes 10 [--variants baseline,jitter,kmeans-init,groups-2,conv-gan,hierarchical] [--model small] \
        [--num_eval 20] [-- key=value ...]

For every variant (a set of Hydra overrides on the same model, below) in ``OUT_DIR/<variant>/``:
train for ``--minutes`` (resumes a stopped run; a finished one is kept), encode every utterance
with latents, run the phoneme probe on ``--probe_split`` (the manifest's phone alignments, see
`vqspeech align --manifest`), score reconstructions and conversions of ``--num_eval`` test
utterances (`vqspeech evaluate conversion`), and time decoding. Writes ``OUT_DIR/ablation.json`` and
``OUT_DIR/table.md`` (one row per variant; rows of variants not run this time are kept from the
previous ``ablation.json``) and prints the table. To retrain a variant, delete ``OUT_DIR/<variant>``.
The numbers are indicative at such budgets: one seed, minutes of CPU training; each variant should
have the machine to itself, since the budget is wall-clock time (the ``steps`` column shows what
it bought).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from vqspeech.data.codes import CodesFolder, Encoding
from vqspeech.errors import UserError
from vqspeech.eval.conversion import evaluate_conversion
from vqspeech.eval.probe import run_probe
from vqspeech.fileio import write_text_atomic
from vqspeech.inference import VQSpeech
from vqspeech.inference.files import collect_inputs, encode_items
from vqspeech.training.vqvae_task import train_vqvae

VARIANTS: dict[str, list[str]] = {
    "baseline": [],
    "jitter": ["model.jitter=0.12"],
    "kmeans-init": ["model.quantizer.kmeans_iters=10"],
    "groups-2": ["model.quantizer.groups=2"],
    "conv-gan": ["model.decoder_type=conv"],
    "hierarchical": ["model.top.stride=4"],
}

COLUMNS = [  # key in the row, header, format
    ("steps", "steps", "{:d}"),
    ("accuracy", "phone acc", "{:.3f}"),
    ("pnmi", "PNMI", "{:.3f}"),
    ("abx_within", "ABX within", "{:.3f}"),
    ("abx_across", "ABX across", "{:.3f}"),
    ("speaker_id_acc", "speaker ID (codes)", "{:.3f}"),
    ("codes_used", "codes used", "{:d}"),
    ("mcd", "MCD recon (dB)", "{:.1f}"),
    ("similarity_target", "conv. sim. target", "{:.3f}"),
    ("closer_to_target", "conv. closer to target", "{:.2f}"),
    ("error_reconstruction", "recognition err. recon", "{:.2f}"),
    ("error_conversion", "recognition err. conv", "{:.2f}"),
    ("decode_samples_per_s", "decode samples/s", "{:,.0f}"),
]


def decode_speed(exp_dir: Path, codes_dir: Path, seconds: float = 5.0) -> float:
    """Samples per second of decoding ``seconds`` of codes (one utterance's, repeated) at batch 1."""
    vq = VQSpeech.load(exp_dir, "cpu")
    folder = CodesFolder.open(codes_dir)
    first = folder.read(folder.code_ids[0])
    frames = int(seconds * vq.sample_rate / vq.hop_length)
    codes = np.resize(first.codes, (frames, *first.codes.shape[1:]))
    top = np.resize(first.top, -(-frames // vq.top_stride)) if first.top is not None else None
    head = 4 * (vq.top_stride or 1)  # frames of a short warm-up decode, which builds the C generator
    vq.decode(Encoding(codes[:head], None if top is None else top[:4]), vq.speakers[0])
    start = time.perf_counter()
    audio = vq.decode(Encoding(codes, top), vq.speakers[0])
    return len(audio) / (time.perf_counter() - start)


def run_variant(name: str, overrides: list[str], args) -> dict:
    exp = Path(args.out_dir) / name
    budget = [f"model={args.model}", f"data.manifest={args.manifest}", f"train.max_steps={args.max_steps}"]
    if args.minutes:
        budget.append(f"train.max_minutes={args.minutes}")
    print(f"== {name}: train ({' '.join(overrides) or 'no overrides'})", flush=True)
    train_vqvae(exp, [*budget, *overrides, *args.overrides])
    summary = json.loads((exp / "train_summary.json").read_text())
    print(f"== {name}: encode, probe, conversion metrics", flush=True)
    codes = exp / "codes"
    vq = VQSpeech.load(exp, "cpu")
    encode_items(vq, collect_inputs(args.manifest), codes, latents=True, overwrite=True, progress=False)
    probe = run_probe(codes, exp / "probe" / f"{name}.json", manifest=args.manifest, split=args.probe_split or None,
                      name=name, overwrite=True, progress=False)
    convert = evaluate_conversion(exp, exp / "eval_convert", manifest=args.manifest, num=args.num_eval,
                                  device="cpu", overwrite=True, progress=False)["summary"]
    errors = convert["recognition"]["error_rate"]
    return {
        "variant": name, "overrides": overrides, "steps": summary["step"],
        **{k: probe.get(k) for k in ("accuracy", "pnmi", "abx_within", "abx_across", "speaker_id_acc",
                                     "codes_used")},
        "mcd": convert["mcd"]["reconstruction"],
        "similarity_target": convert["speaker_similarity"]["conversion"]["target"],
        "closer_to_target": convert["conversion_speaker_accuracy"],
        "error_reconstruction": errors["reconstruction"], "error_conversion": errors["conversion"],
        "decode_samples_per_s": decode_speed(exp, codes),
    }


def merge_rows(path: Path, rows: list[dict]) -> list[dict]:
    """``rows`` plus the rows of an earlier run's ``ablation.json`` for variants not run now, in
    :data:`VARIANTS` order: rerunning some variants keeps the others in the table."""
    new = {row["variant"] for row in rows}
    try:
        earlier = [r for r in json.loads(path.read_text()) if r.get("variant") in VARIANTS]
    except (OSError, ValueError, AttributeError, TypeError):
        earlier = []
    merged = {r["variant"]: r for r in earlier if r["variant"] not in new} | {r["variant"]: r for r in rows}
    return [merged[name] for name in VARIANTS if name in merged]


def table(rows: list[dict]) -> str:
    head = "| variant | " + " | ".join(h for _, h, _ in COLUMNS) + " |"
    lines = [head, "|---|" + "---|" * len(COLUMNS)]
    for row in rows:
        cells = ["-" if row.get(k) is None else f.format(row[k]) for k, _, f in COLUMNS]
        lines.append(f"| {row['variant']} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    cut = argv.index("--") if "--" in argv else len(argv)
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--manifest", required=True, help="a prepared manifest whose utterances carry alignments")
    parser.add_argument("--out_dir", required=True)
    parser.add_argument("--variants", default=",".join(VARIANTS), help=f"comma-separated, of: {', '.join(VARIANTS)}")
    parser.add_argument("--model", default="small")
    parser.add_argument("--minutes", type=float, default=10.0, help="training budget per variant (0: steps only)")
    parser.add_argument("--max_steps", type=int, default=100_000, help="schedule length (the budget usually ends first)")
    parser.add_argument("--num_eval", type=int, default=20, help="test utterances reconstructed and converted")
    parser.add_argument("--probe_split", default="test", help="split the probe scores (empty: all)")
    args = parser.parse_args(argv[:cut])
    args.overrides = argv[cut + 1:]
    names = [v for v in args.variants.split(",") if v]
    try:
        unknown = [v for v in names if v not in VARIANTS]
        if unknown:
            raise UserError(f"Unknown variant(s) {', '.join(unknown)}; choose from {', '.join(VARIANTS)}.")
        rows = [run_variant(name, VARIANTS[name], args) for name in names]
    except UserError as exc:
        print(f"ablate: error: {exc}", file=sys.stderr)
        return 2
    out = Path(args.out_dir)
    rows = merge_rows(out / "ablation.json", rows)
    write_text_atomic(out / "ablation.json", json.dumps(rows, indent=2) + "\n")
    text = table(rows)
    write_text_atomic(out / "table.md", text)
    print(text, end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
