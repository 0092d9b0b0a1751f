"""What each budget of training buys: one run per configuration, scored at several wall-clock points.

    python tools/learning_curve.py --manifest data/fsdd/prepared/manifest.jsonl --out_dir exp/curve \
        [--minutes 10,30,60,120] [--configs recipe,single,conv] [--num_eval 20] [-- key=value ...]

Each configuration (:data:`CONFIGS`) trains one run in ``OUT_DIR/<config>/exp``; at every point of
``--minutes`` (training minutes in all, both stages of a two-stage model counted) training stops,
and the run's checkpoint is scored in ``OUT_DIR/<config>/<minutes>min/``: reconstructions and
conversions of ``--num_eval`` test utterances (`vqspeech evaluate conversion`: recognition error,
speaker similarity, the share of conversions closer to the target than to the source, MCD) and the
phoneme probe of the codes (``--probe_split``; its accuracy and PNMI). Training then resumes toward
the next point, so the points are checkpoints of one run whose learning-rate schedule spans the
last point (``steps_per_minute`` of each configuration sizes it). A point already scored is kept:
rerun the same command to continue, or with a longer ``--minutes`` to extend the curve.

Writes ``OUT_DIR/curve.json``, ``OUT_DIR/curve.md`` (one row per point) and ``OUT_DIR/curve.png``.
Budgets are wall-clock minutes: give the run the machine to itself. The ``samples`` column (audio
samples the decoder trained on) turns a point into a time on other hardware: divide it by the
samples per second ``tools/bench_train.py`` measures there (the units stage, when there is one,
adds its own few minutes).
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import sys
from pathlib import Path

import yaml

from ablate import (
    CONVERSION_COLUMNS, check_before_training, check_run_settings, conversion_scores, record_run_settings, run_settings,
    settings_change, table, value_error,
)
from vqspeech.config import compose, training_stage
from vqspeech.data.dataset import crop_length
from vqspeech.errors import UserError
from vqspeech.eval.conversion import evaluate_conversion
from vqspeech.eval.probe import run_probe
from vqspeech.fileio import atomic_path, write_text_atomic
from vqspeech.inference import VQSpeech
from vqspeech.inference.files import collect_inputs, encode_items
from vqspeech.streams import run_tool
from vqspeech.training.vqvae_task import train_vqvae

CONFIGS: dict[str, dict] = {
    "recipe": {  # the FSDD recipe's default: mel-objective units, then the WaveNet on their codes
        "overrides": ["model=small_mel", "train=short"],
        "units_minutes": 5.0, "units_steps": 6000, "steps_per_minute": 60,
    },
    "single": {  # the paper's objective: encoder, quantizer and WaveNet trained together
        "overrides": ["model=small", "train=short"],
        "steps_per_minute": 60,
    },
    "conv": {  # the same units, then the non-autoregressive GAN decoder on their codes
        "overrides": ["model=small_mel", "train=short", "model.decoder_type=conv"],
        "units_minutes": 5.0, "units_steps": 6000,
        "steps_per_minute": 48,  # measured with its discriminators on (240 before them: the schedule overshot)
        "adversarial_warmup_share": 0.1,  # of the first point's decoder steps: the GAN phase starts early
    },
}

COLUMNS = [  # key in the row, header, format
    ("minutes", "minutes", "{:g}"),
    ("trained_minutes", "trained", "{:.1f}"),
    ("steps", "decoder steps", "{:,d}"),
    ("samples", "samples", "{:.3g}"),
    *CONVERSION_COLUMNS,
    ("error_original", "recognition err. originals", "{:.2f}"),
    ("accuracy", "phone acc", "{:.3f}"),
    ("pnmi", "PNMI", "{:.3f}"),
]


def summary(exp: Path) -> dict:
    return json.loads((exp / "train_summary.json").read_text())


def samples_per_step(exp: Path) -> int:
    """Audio samples in one of the run's training batches."""
    cfg = yaml.safe_load((exp / "config.yaml").read_text())
    model, train = cfg["model"], cfg["train"]
    return train["batch_size"] * crop_length(train["crop_seconds"], model["sample_rate"], model["hop_length"])


def train_to(config: dict, exp: Path, minutes: float, last: float, args) -> None:
    """Train (or resume) the configuration's run to ``minutes`` of training in all; the schedule
    spans ``last`` minutes."""
    overrides = [*config["overrides"], f"data.manifest={args.manifest}", *args.overrides]
    decoder_minutes = minutes
    if training_stage(compose(overrides)) == "units":
        units = exp / "units"
        units_minutes = config["units_minutes"]
        if not (units / "train_summary.json").is_file():
            train_vqvae(units, [*overrides, f"train.max_steps={config['units_steps']}",
                                f"train.max_minutes={units_minutes}"])
        overrides.append(f"train.units_from={units}")
        units_used = summary(units)["minutes"]
        decoder_minutes = minutes - units_used  # what the units left of the point's time
        if decoder_minutes <= minutes / 20:  # the units overran (a loaded machine): the decoder still trains
            print(f"learning_curve: the units took {units_used:.2f} of the point's {minutes:g} "
                  f"minutes; the decoder gets {minutes / 20:.2f}", file=sys.stderr)
            decoder_minutes = minutes / 20
    schedule = max(1, round(config["steps_per_minute"] * (last - config.get("units_minutes", 0.0))))
    if "adversarial_warmup_share" in config:
        first = min(args.minutes) - config.get("units_minutes", 0.0)
        warmup = int(config["adversarial_warmup_share"] * config["steps_per_minute"] * first)
        overrides.append(f"train.adversarial.warmup_steps={warmup}")
    train_vqvae(exp, [*overrides, f"train.max_steps={schedule}", f"train.max_minutes={decoder_minutes}"])
    trained = summary(exp)
    if trained["step"] >= schedule and trained["minutes"] < 0.9 * decoder_minutes:  # the steps ended it, not time
        rate = trained["step"] / max(trained["minutes"], 1e-6)
        raise UserError(
            f"{exp} trained its whole schedule ({schedule} steps, sized by --steps_per_minute "
            f"{config['steps_per_minute']:g}) in {trained['minutes']:.2f} of the {minutes:g}-minute point's "
            f"{decoder_minutes:.2f} minutes: this machine trains about {rate:,.0f} steps a minute; start again in a "
            f"new --out_dir with --steps_per_minute {rate:.0f}."
        )


def probe_codes(exp: Path, out: Path, args) -> dict:
    """The phoneme probe of the run's codes (every utterance encoded; ``--probe_split`` scored)."""
    codes = out / "codes"
    vq = VQSpeech.load(exp, "cpu")
    encode_items(vq, collect_inputs(args.manifest), codes, overwrite=True, progress=False)
    result = run_probe(codes, out / "probe.json", manifest=args.manifest, split=args.probe_split or None,
                       name=out.name, overwrite=True, progress=False)
    shutil.rmtree(codes)  # the probe's numbers are what the curve keeps
    return result


def score_point(name: str, config: dict, minutes: float, args) -> dict:
    """Train to the point and score it, or read the score of a point already done."""
    root = Path(args.out_dir) / name
    exp, out = root / "exp", root / f"{minutes:g}min"
    done = out / "score.json"
    if done.is_file():  # its settings were checked before any training (check_earlier_points)
        return json.loads(done.read_text())
    print(f"== {name}: train to {minutes:g} minutes", flush=True)
    record_run_settings(root, point_settings(config, args))
    train_to(config, exp, minutes, max(args.minutes), args)
    print(f"== {name} at {minutes:g} minutes: conversion metrics, probe", flush=True)
    convert = evaluate_conversion(exp, out / "eval_convert", manifest=args.manifest, num=args.num_eval,
                                  device="cpu", overwrite=True, progress=False)["summary"]
    units = exp / "units"
    probe_exp = units if units.is_dir() else exp
    probe = probe_codes(probe_exp, out, args)
    trained = summary(exp)
    units_minutes = summary(units)["minutes"] if units.is_dir() else 0.0
    row = {
        "config": name, "overrides": config["overrides"] + args.overrides, "minutes": minutes,
        "settings": point_settings(config, args),
        "trained_minutes": units_minutes + trained["minutes"],
        "steps": trained["step"], "samples": trained["step"] * samples_per_step(exp),
        **conversion_scores(convert), "accuracy": probe.get("accuracy"), "pnmi": probe.get("pnmi"),
    }
    write_text_atomic(done, json.dumps(row, indent=2) + "\n")
    return row


CURVE_SETTINGS = ("num_eval", "probe_split")


def point_settings(config: dict, args) -> dict:
    """What a point's score depends on besides its configuration's name and minutes."""
    return {**run_settings(args, *CURVE_SETTINGS), "config": config}


def earlier_score_settings(root: Path) -> object:
    """The settings a point of the configuration's run scored earlier recorded, or None."""
    for done in sorted(root.glob("*min/score.json")):
        try:
            row = json.loads(done.read_text())
        except (OSError, ValueError, RecursionError):
            continue
        if isinstance(row, dict) and isinstance(row.get("settings"), dict):
            return row["settings"]
    return None


def check_earlier_points(configs: dict[str, dict], args) -> None:
    """UserError before any training when a point already scored (which a rerun keeps) was made
    with other settings: other data, overrides or schedule would not compare with the new points."""
    for name, config in configs.items():
        root = Path(args.out_dir) / name
        check_run_settings(root, point_settings(config, args), earlier_score_settings(root))  # its run trains on
        for minutes in args.minutes:
            done = root / f"{minutes:g}min" / "score.json"
            if not done.is_file():
                continue
            try:
                row = json.loads(done.read_text())
            except (OSError, ValueError, RecursionError):
                row = None
            change = settings_change(row.get("settings") if isinstance(row, dict) else None,
                                     point_settings(config, args))
            if change is not None:
                raise UserError(f"{done} was scored with other settings ({change}), and a rerun keeps it; use a "
                                "new --out_dir, or the settings it was made with.")
            wrong = value_error(row, COLUMNS, "config")
            if wrong is not None:
                raise UserError(f"{done} is not a score this tool wrote ({wrong}), and a rerun keeps it; delete it "
                                "to score the point again.")


PANELS = [  # (title, [(key, line style label)])
    ("recognition error (lower is better)", [("error_reconstruction", "recon"), ("error_conversion", "conv")]),
    ("conversions closer to the target", [("closer_to_target", "")]),
    ("MCD of reconstructions (dB)", [("mcd", "")]),
    ("phone accuracy of the codes", [("accuracy", "")]),
]


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(PANELS), figsize=(4.2 * len(PANELS), 3.6))
    configs = list(dict.fromkeys(r["config"] for r in rows))
    for ax, (title, series) in zip(axes, PANELS, strict=True):
        for i, config in enumerate(configs):
            points = [r for r in rows if r["config"] == config]
            for style, (key, label) in zip(("-o", "--s"), series, strict=False):
                xs = [r["trained_minutes"] for r in points if r.get(key) is not None]
                ys = [r[key] for r in points if r.get(key) is not None]
                ax.plot(xs, ys, style, color=f"C{i}", label=f"{config} {label}".strip())
        if title.startswith("recognition") and rows and rows[0].get("error_original") is not None:
            ax.axhline(rows[0]["error_original"], color="grey", lw=0.8, ls=":", label="originals")
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("training minutes (2 CPU cores)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    cut = argv.index("--") if "--" in argv else len(argv)
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--manifest", required=True, help="a prepared manifest whose utterances carry alignments")
    parser.add_argument("--out_dir", required=True)
    parser.add_argument("--configs", default="recipe,single,conv", help=f"comma-separated, of: {', '.join(CONFIGS)}")
    parser.add_argument("--minutes", default="10,30,60,120", help="training minutes in all at each point")
    parser.add_argument("--num_eval", type=int, default=20, help="test utterances reconstructed and converted")
    parser.add_argument("--probe_split", default="test", help="split the probe scores (empty: all)")
    parser.add_argument("--steps_per_minute", type=float, default=None,
                        help="decoder steps a minute buys, which sizes the schedule (default: each "
                        "configuration's, measured on 2 CPU cores; a GPU needs its own)")
    parser.add_argument("--units_minutes", type=float, default=None,
                        help="the units stage's budget of a two-stage configuration (default: its own, 5)")
    args = parser.parse_args(argv[:cut])
    args.overrides = argv[cut + 1:]
    try:
        names = [c for c in args.configs.split(",") if c]
        unknown = [c for c in names if c not in CONFIGS]
        if unknown or not names:
            given, known = ", ".join(unknown) or "(none)", ", ".join(CONFIGS)
            raise UserError(f"Unknown configuration(s) {given}; choose from {known}.")
        given = args.minutes
        try:
            args.minutes = [float(m) for m in given.split(",")]  # an empty entry ("10,,20") is a typo
        except ValueError:
            args.minutes = [math.nan]
        if len({f"{m:g}" for m in args.minutes}) < len(args.minutes):
            args.minutes = [math.nan]  # a point twice (its folder is named by 6 digits: 0.1 and 0.1000001 are one)
        args.minutes = sorted(args.minutes)  # the curve's points in increasing order, however given
        if not args.minutes or not all(math.isfinite(m) and m > 0 for m in args.minutes):
            raise UserError(f"--minutes takes distinct positive finite numbers separated by commas, not {given!r}.")
        for name in ("units_minutes", "steps_per_minute"):
            value = getattr(args, name)
            if value is not None and not (math.isfinite(value) and value > 0):
                raise UserError(f"--{name} must be a positive finite number, not {value!r}.")
        configs = {n: {**CONFIGS[n]} for n in names}
        for config in configs.values():
            if args.units_minutes is not None and "units_minutes" in config:
                config["units_minutes"] = args.units_minutes
            if args.steps_per_minute is not None:
                config["steps_per_minute"] = args.steps_per_minute
            first = config.get("units_minutes", 0.0)
            if not args.minutes or args.minutes[0] <= first:
                raise UserError(f"every point of --minutes must exceed the units stage's {first:g} minutes.")
        check_before_training(args)
        check_earlier_points(configs, args)
        rows = [score_point(name, configs[name], m, args) for name in names for m in args.minutes]
    except UserError as exc:
        print(f"learning_curve: error: {exc}", file=sys.stderr)
        return 2
    out = Path(args.out_dir)
    write_text_atomic(out / "curve.json", json.dumps(rows, indent=2) + "\n")
    text = table(rows, COLUMNS, name="config")
    write_text_atomic(out / "curve.md", text)
    plot(rows, out / "curve.png")
    print(text, end="")
    return 0


if __name__ == "__main__":
    sys.exit(run_tool("learning_curve", main))
