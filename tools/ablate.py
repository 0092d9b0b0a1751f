"""Train each VQ-VAE variant for the same budget and put their evaluations in one table.

    python tools/ablate.py --manifest data/fsdd/prepared/manifest.jsonl --out_dir exp/ablation \
        --minutes 10 [--variants baseline,jitter,mel,cpc,...] [--model small] [--units_share 0.5] \
        [--num_eval 20] [-- key=value ...]

For every variant (a set of Hydra overrides on the same model, below) in ``OUT_DIR/<variant>/``:
train for ``--minutes`` (resumes a stopped run; a finished one is kept). A variant whose objective
is not the waveform decoder's (``mel``, ``cpc``) trains in two stages within the same budget: its
units for ``--units_share`` of it in ``OUT_DIR/<variant>/units``, then the waveform decoder on the
frozen codes for the rest (``train.units_from``). Then: encode every utterance
with latents, run the phoneme probe on ``--probe_split`` (the manifest's phone alignments, see
`vqspeech align --manifest`), score reconstructions and conversions of ``--num_eval`` test
utterances (`vqspeech evaluate conversion`), and time decoding. Each code rate seen also gets a
row for k-means on MFCCs with the same K and rate (``mfcc-kmeans-<rate>hz``). Writes ``OUT_DIR/ablation.json`` and
``OUT_DIR/table.md`` (one row per variant; rows of variants not run this time are kept from the
previous ``ablation.json``) and prints the table. To retrain a variant, delete ``OUT_DIR/<variant>``.
The numbers are indicative at such budgets: one seed, minutes of CPU training; each variant should
have the machine to itself, since the budget is wall-clock time (the ``steps`` column shows what
it bought).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import sys
import time
from pathlib import Path

import numpy as np
from vqspeech.config import compose, training_stage
from vqspeech.data.codes import CodesFolder, Encoding
from vqspeech.data.manifest import read_manifest
from vqspeech.errors import UserError
from vqspeech.eval.baseline import mfcc_kmeans_baseline
from vqspeech.eval.conversion import evaluate_conversion
from vqspeech.eval.frames import aligned_utterances
from vqspeech.eval.probe import run_probe
from vqspeech.fileio import write_text_atomic
from vqspeech.inference import VQSpeech
from vqspeech.inference.files import collect_inputs, encode_items
from vqspeech.streams import run_tool
from vqspeech.training.vqvae_task import train_vqvae

HZ50 = ["model.hop_length=160", "model.encoder.strides=[5,4,8]", "model.conv_decoder.upsample_strides=[5,4,8]"]
"""50 codes per second at 8 kHz (the conv front end's and decoder's strides follow the hop)."""
INVARIANT = ["model.encoder.normalize=true", "model.speaker_adversary.weight=1.0"]
"""Both speaker-invariance options: per-utterance normalisation and the speaker adversary."""
MEL = ["model.objective=mel", "model.jitter=0.12"]
CPC = ["model.objective=cpc", "train.speakers_per_batch=2", "train.crop_seconds=1.0"]

VARIANTS: dict[str, list[str]] = {
    "baseline": [],
    "jitter": ["model.jitter=0.12"],
    "kmeans-init": ["model.quantizer.kmeans_iters=10"],
    "groups-2": ["model.quantizer.groups=2"],
    "conv-gan": ["model.decoder_type=conv"],
    "hierarchical": ["model.top.stride=4"],
    "wavenet-50hz": HZ50,
    "mel": MEL,
    "mel-norm": [*MEL, "model.encoder.normalize=true"],
    "mel-invariant": [*MEL, *INVARIANT],
    "mel-invariant-50hz": [*MEL, *INVARIANT, *HZ50],
    "mel-invariant-warp": [*MEL, *INVARIANT, "model.encoder.warp=0.1"],
    "mel-invariant-cepstra": [*MEL, *INVARIANT, "model.encoder.cepstra=13"],
    "mel-invariant-whiten": [*MEL, *INVARIANT, "model.quantizer.whiten=true"],
    "cpc": CPC,
    "cpc-invariant": [*CPC, *INVARIANT],
    "cpc-invariant-50hz": [*CPC, *INVARIANT, *HZ50],
}

CONVERSION_COLUMNS = [  # `evaluate conversion`'s numbers (conversion_scores): key in the row, header, format
    ("mcd", "MCD recon (dB)", "{:.1f}"),
    ("similarity_target", "conv. sim. target", "{:.3f}"),
    ("closer_to_target", "conv. closer to target", "{:.2f}"),
    ("error_reconstruction", "recognition err. recon", "{:.2f}"),
    ("error_conversion", "recognition err. conv", "{:.2f}"),
]

COLUMNS = [  # key in the row, header, format
    ("steps", "steps", "{:d}"),
    ("code_rate_hz", "codes/s", "{:g}"),
    ("accuracy", "phone acc", "{:.3f}"),
    ("pnmi", "PNMI", "{:.3f}"),
    ("accuracy_no_silence", "phone acc (no sil)", "{:.3f}"),
    ("pnmi_no_silence", "PNMI (no sil)", "{:.3f}"),
    ("abx_within", "ABX within", "{:.3f}"),
    ("abx_across", "ABX across", "{:.3f}"),
    ("speaker_id_acc", "speaker ID (codes)", "{:.3f}"),
    ("codes_used", "codes used", "{:d}"),
    *CONVERSION_COLUMNS,
    ("decode_samples_per_s", "decode samples/s", "{:,.0f}"),
    ("decode_generator", "generator", "{}"),
]


def decode_speed(exp_dir: Path, codes_dir: Path, seconds: float = 5.0) -> tuple[float, str]:
    """Samples per second of decoding ``seconds`` of codes (one utterance's, repeated) at batch 1, and
    the generator that did it (:attr:`VQSpeech.waveform_generator`: the reference is many times slower
    than the C kernel, so a speed means nothing without it)."""
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
    return len(audio) / (time.perf_counter() - start), vq.waveform_generator


def train_variant(name: str, exp: Path, overrides: list[str], args) -> int:
    """Train one variant within the budget (two stages when its objective needs them); its steps."""
    common = [f"model={args.model}", f"data.manifest={args.manifest}", f"train.max_steps={args.max_steps}"]
    overrides = [*common, *overrides, *args.overrides]
    two_stage = training_stage(compose(overrides)) == "units"
    print(f"== {name}: train ({' '.join(overrides[len(common):]) or 'no overrides'})", flush=True)
    if not two_stage:
        train_vqvae(exp, [*overrides, *_minutes(args.minutes)])
        return json.loads((exp / "train_summary.json").read_text())["step"]
    units = exp / "units"
    train_vqvae(units, [*overrides, *_minutes(args.minutes * args.units_share)])
    print(f"== {name}: the waveform decoder on the frozen codes", flush=True)
    train_vqvae(exp, [*overrides, f"train.units_from={units}", *_minutes(args.minutes * (1 - args.units_share))])
    steps = [json.loads((e / "train_summary.json").read_text())["step"] for e in (units, exp)]
    return sum(steps)


def _minutes(minutes: float) -> list[str]:
    return [f"train.max_minutes={minutes}"] if minutes else []


def mfcc_row(codes: Path, args) -> dict:
    """The MFCC k-means baseline with the K and code rate of ``codes``, probed the same way."""
    info = CodesFolder.open(codes).info
    rate = f"{info.code_rate_hz:g}"
    name = f"mfcc-kmeans-{rate}hz"
    out = Path(args.out_dir) / name
    mfcc_kmeans_baseline(args.manifest, out / "codes", num_codes=info.num_codes, code_rate_hz=info.code_rate_hz,
                         overwrite=True, progress=False)
    probe = run_probe(out / "codes", out / "probe.json", manifest=args.manifest, split=args.probe_split or None,
                      name=name, overwrite=True, progress=False)
    return {"variant": name, "overrides": [], "settings": run_settings(args, *ABLATION_SETTINGS),
            **{k: probe.get(k) for k in PROBE_KEYS}}


PROBE_KEYS = ("accuracy", "pnmi", "accuracy_no_silence", "pnmi_no_silence", "abx_within", "abx_across",
              "speaker_id_acc", "codes_used", "code_rate_hz")


def run_variant(name: str, overrides: list[str], args) -> dict:
    exp = Path(args.out_dir) / name
    record_run_settings(exp, variant_settings(name, args))
    steps = train_variant(name, exp, overrides, args)
    print(f"== {name}: encode, probe, conversion metrics", flush=True)
    codes = exp / "codes"
    vq = VQSpeech.load(exp, "cpu")
    encode_items(vq, collect_inputs(args.manifest), codes, latents=True, overwrite=True, progress=False)
    probe = run_probe(codes, exp / "probe" / f"{name}.json", manifest=args.manifest, split=args.probe_split or None,
                      name=name, overwrite=True, progress=False)
    convert = evaluate_conversion(exp, exp / "eval_convert", manifest=args.manifest, num=args.num_eval,
                                  device="cpu", overwrite=True, progress=False)["summary"]
    speed, generator = decode_speed(exp, codes)
    return {
        "variant": name, "overrides": overrides, "settings": run_settings(args, *ABLATION_SETTINGS), "steps": steps,
        **{k: probe.get(k) for k in PROBE_KEYS}, **conversion_scores(convert),
        "decode_samples_per_s": speed, "decode_generator": generator,
    }


def merge_rows(path: Path, rows: list[dict]) -> list[dict]:
    """``rows`` plus the rows of an earlier run's ``ablation.json`` for variants not run now, in
    :data:`VARIANTS` order then the MFCC baselines by code rate: rerunning some variants keeps the
    others in the table."""
    new = {row["variant"] for row in rows}
    try:
        earlier = [r for r in json.loads(path.read_text()) if isinstance(r.get("variant"), str)]
    except (OSError, ValueError, AttributeError, TypeError):
        earlier = []
    merged = {r["variant"]: r for r in earlier if r["variant"] not in new} | {r["variant"]: r for r in rows}
    baselines = sorted((n for n in merged if n.startswith("mfcc-kmeans-")), key=lambda n: -merged[n]["code_rate_hz"])
    return [merged[name] for name in [*VARIANTS, *baselines] if name in merged]


def table(rows: list[dict], columns: list[tuple[str, str, str]] = COLUMNS, name: str = "variant") -> str:
    """A Markdown table: one row per dict, its ``name`` first, then ``columns`` (key, header, format)."""
    head = f"| {name} | " + " | ".join(h for _, h, _ in columns) + " |"
    lines = [head, "|---|" + "---|" * len(columns)]
    for row in rows:
        cells = ["-" if row.get(k) is None else f.format(row[k]) for k, _, f in columns]
        lines.append(f"| {row[name]} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def conversion_scores(summary: dict) -> dict:
    """The table's numbers from `evaluate conversion`'s summary."""
    errors = summary["recognition"]["error_rate"]
    return {
        "mcd": summary["mcd"]["reconstruction"],
        "similarity_target": summary["speaker_similarity"]["conversion"]["target"],
        "closer_to_target": summary["conversion_speaker_accuracy"],
        "error_reconstruction": errors["reconstruction"], "error_conversion": errors["conversion"],
        "error_original": errors["original"],
    }


def run_settings(args, *names: str) -> dict:
    """What a row of the table depends on besides its variant: the manifest (its real path and a
    digest of its bytes: prepared again is other data), the options ``names`` of ``args`` and the
    trailing overrides."""
    manifest = Path(args.manifest)
    manifest = manifest / "manifest.jsonl" if manifest.is_dir() else manifest
    digest = hashlib.sha256(manifest.read_bytes()).hexdigest()[:16] if manifest.is_file() else None
    return {"manifest": os.path.realpath(manifest), "manifest_sha256": digest,
            **{name: getattr(args, name) for name in names}, "overrides": list(args.overrides)}


def value_error(row: dict, columns: list[tuple[str, str, str]], name: str) -> str | None:
    """What in ``row`` the table could not print ("accuracy is '0.5'"), or None: a hand-edited row
    of another type is refused before any training, not after it."""
    if not isinstance(row.get(name), str):
        return f"{name} is {row.get(name)!r}"
    for key, _, form in columns:
        value = row.get(key)
        integer = isinstance(value, int) and not isinstance(value, bool)
        number = integer or isinstance(value, float)
        if value is None or form == "{}" or (integer if form.endswith("d}") else number):
            continue
        return f"{key} is {value!r}"
    return None


def settings_change(earlier: object, now: dict) -> str | None:
    """How the ``settings`` an earlier row recorded differ from ``now`` ("key old -> new"), or None."""
    if not isinstance(earlier, dict):
        return "it records no settings (an earlier version wrote it)"
    changed = [key for key in now if earlier.get(key) != now[key]]
    if not changed:
        return None
    key = changed[0]
    return f"{key} {earlier.get(key)!r} -> {now[key]!r}" + (f" and {len(changed) - 1} more" if len(changed) > 1 else "")


ABLATION_SETTINGS = ("model", "minutes", "units_share", "max_steps", "num_eval", "probe_split")

RUN_SETTINGS = ".run_settings.json"
"""Beside each run folder (a variant's, a curve configuration's: ``OUT/<name>.run_settings.json``,
outside the experiment, which takes no foreign files): the settings its training started with,
written before the first step. A rerun with other settings would continue that training under its
own and record only them; it is refused instead, even when no row or score was written yet."""


def run_settings_file(folder: Path) -> Path:
    return folder.parent / f"{folder.name}{RUN_SETTINGS}"


def check_run_settings(folder: Path, settings: dict, scored: object = None) -> None:
    """UserError when the run in ``folder`` was started with other ``settings``. A run of a version
    that recorded none is judged by the settings its row or score recorded (``scored``, then
    taken as its record), and refused when it has none of those either."""
    try:
        earlier = json.loads(run_settings_file(folder).read_text())
    except FileNotFoundError:
        if not any(folder.glob("**/checkpoints/last.pt")):
            return  # nothing trained there yet
        earlier = scored
    except (OSError, ValueError, RecursionError):
        earlier = None
    change = settings_change(earlier, settings)
    if change is not None:
        raise UserError(f"{folder} holds a run started with other settings ({change}); a rerun would continue its "
                        "training under the new ones; use a new --out_dir, or the settings it was started with.")
    record_run_settings(folder, settings)  # an older version's run takes the settings it was judged by


def record_run_settings(folder: Path, settings: dict) -> None:
    """Record the settings the run in ``folder`` starts with (:data:`RUN_SETTINGS`), before it trains."""
    path = run_settings_file(folder)
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.is_file():
        write_text_atomic(path, json.dumps(settings, indent=2) + "\n")


def earlier_row_settings(name: str, args) -> dict | None:
    """The run settings the variant's row in ``OUT_DIR/ablation.json`` implies, or None."""
    try:
        rows = json.loads((Path(args.out_dir) / "ablation.json").read_text())
    except (OSError, ValueError, RecursionError):
        return None
    rows = rows if isinstance(rows, list) else []
    row = next((r for r in rows if isinstance(r, dict) and r.get("variant") == name), None)
    if row is None or not isinstance(row.get("settings"), dict):
        return None
    return {**row["settings"], "variant_overrides": row.get("overrides")}


def variant_settings(name: str, args) -> dict:
    """What a variant's run depends on: the table's settings, its own overrides and the budget."""
    return {**run_settings(args, *ABLATION_SETTINGS), "variant_overrides": list(VARIANTS[name])}


def check_earlier_rows(args) -> None:
    """UserError before any training when ``OUT_DIR/ablation.json`` holds rows of other settings:
    the table keeps earlier rows, and rows of other data or budgets do not compare."""
    path = Path(args.out_dir) / "ablation.json"
    try:
        earlier = json.loads(path.read_text()) if path.is_file() else []
    except (OSError, ValueError, RecursionError):
        earlier = None
    if not isinstance(earlier, list) or not all(isinstance(r, dict) for r in earlier):
        raise UserError(f"{path} is not an ablation table this tool wrote; use a new --out_dir.")
    now = run_settings(args, *ABLATION_SETTINGS)
    for row in earlier:
        change = settings_change(row.get("settings"), now)
        if change is not None:
            raise UserError(f"{path} holds the row {row.get('variant')!r} made with other settings ({change}), "
                            "which would not compare with new rows; use a new --out_dir, or its settings.")
        wrong = value_error(row, COLUMNS, "variant")
        if wrong is not None:
            raise UserError(f"{path} holds a row this tool did not write ({wrong}); use a new --out_dir, or "
                            "delete the file to start the table again.")


def check_before_training(args) -> None:
    """What would fail only after the first training: scoring needs test utterances and alignments."""
    if args.num_eval < 1:
        raise UserError(f"--num_eval must be at least 1, not {args.num_eval}.")
    aligned = aligned_utterances(manifest=args.manifest)  # UserError when the manifest has no phone alignments
    splits = sorted({u.split for u in aligned.values()})
    if args.probe_split and args.probe_split not in splits:
        raise UserError(f"--probe_split {args.probe_split!r} has no aligned utterance in {args.manifest} (its "
                        f"splits: {', '.join(splits)}); choose one of those, or '' for all.")
    if not any(u.split == "test" for u in read_manifest(args.manifest)):
        raise UserError(f"{args.manifest} has no test utterances, which the conversion scores need; prepare it "
                        "with a test split.")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    cut = argv.index("--") if "--" in argv else len(argv)
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--manifest", required=True, help="a prepared manifest whose utterances carry alignments")
    parser.add_argument("--out_dir", required=True)
    parser.add_argument("--variants", default=",".join(VARIANTS), help=f"comma-separated, of: {', '.join(VARIANTS)}")
    parser.add_argument("--model", default="small")
    parser.add_argument("--minutes", type=float, default=10.0, help="training budget per variant (0: steps only)")
    parser.add_argument("--units_share", type=float, default=0.5,
                        help="share of the budget for the units of a two-stage variant (mel, cpc)")
    parser.add_argument("--max_steps", type=int, default=100_000,
                        help="schedule length (the budget usually ends first)")
    parser.add_argument("--num_eval", type=int, default=20, help="test utterances reconstructed and converted")
    parser.add_argument("--probe_split", default="test", help="split the probe scores (empty: all)")
    args = parser.parse_args(argv[:cut])
    args.overrides = argv[cut + 1:]
    names = [v for v in args.variants.split(",") if v]
    try:
        unknown = [v for v in names if v not in VARIANTS]
        if unknown:
            raise UserError(f"Unknown variant(s) {', '.join(unknown)}; choose from {', '.join(VARIANTS)}.")
        if not 0 < args.units_share < 1:
            raise UserError(f"--units_share must be between 0 and 1, not {args.units_share}.")
        if not (math.isfinite(args.minutes) and args.minutes >= 0):  # the trainings would say train.max_minutes
            raise UserError(f"--minutes must be a finite number of minutes, 0 or more, not {args.minutes}.")
        if args.max_steps < 1:
            raise UserError(f"--max_steps must be at least 1, not {args.max_steps}.")
        check_before_training(args)
        check_earlier_rows(args)
        for name in names:  # an interrupted run left no row, but its training
            check_run_settings(Path(args.out_dir) / name, variant_settings(name, args),
                               earlier_row_settings(name, args))
        rows = [run_variant(name, VARIANTS[name], args) for name in names]
        rates = {}  # one MFCC baseline per code rate, with that rate's codes as the model
        for row in rows:
            rates.setdefault(row["code_rate_hz"], Path(args.out_dir) / row["variant"] / "codes")
        rows += [mfcc_row(codes, args) for codes in rates.values()]
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
    sys.exit(run_tool("ablate", main))
