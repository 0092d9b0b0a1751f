"""The `vqspeech` command: each verb parses its own flags and calls the library. Thin by design.

Each verb imports the library it calls when it runs (the imports inside the ``cmd_*`` functions),
so that ``vqspeech --help`` and a mistyped verb answer at once instead of loading torch first.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import sys
import warnings
from pathlib import Path

from .errors import UserError, first_line
from .streams import Terminated, process_streams, silence_stdout, stdout_error


def _split_list(text: str | None, flag: str | None = None) -> list[str] | None:
    """A comma-separated list (None when not given); with ``flag``, one that names nothing is refused."""
    if text is None:
        return None
    names = [s for s in text.split(",") if s]
    if flag and not names:
        raise UserError(f"{flag} {text!r} names no speaker; give comma-separated names, or leave the option out.")
    return names or None


def _layout_options(args) -> dict:
    """The corpus-layout options given on the command line (``--mic``, ``--subset``)."""
    return {k: getattr(args, k) for k in ("mic", "subset") if getattr(args, k, None)}


# --- corpus -----------------------------------------------------------------------------------


def cmd_prepare(args) -> None:
    from .data.prepare import prepare_corpus

    options = _layout_options(args)
    summary = prepare_corpus(
        args.corpus_dir,
        args.out_dir,
        args.layout,
        sample_rate=args.sample_rate,
        split_by=args.split_by,
        valid_fraction=args.valid_fraction,
        test_fraction=args.test_fraction,
        heldout_speakers=_split_list(args.heldout_speakers, "--heldout_speakers"),
        min_duration=args.min_duration,
        max_duration=args.max_duration,
        seed=args.seed,
        num_workers=args.num_workers,
        overwrite=args.overwrite,
        **options,
    )
    print(json.dumps(summary.__dict__))


def cmd_demo_data(args) -> None:
    from .data.demo import make_demo_corpus

    out = make_demo_corpus(args.out_dir, num_sentences=args.num_sentences, seed=args.seed, overwrite=args.overwrite)
    print(f"demo corpus ready in {out}")


def cmd_align(args) -> None:
    from .data.align import align_corpus

    options = _layout_options(args)
    summary = align_corpus(
        args.source,
        args.out_dir,
        args.layout,
        manifest=args.manifest,
        num_workers=args.num_workers,
        limit=args.limit,
        overwrite=args.overwrite,
        **options,
    )
    print(
        json.dumps(
            {
                "total": summary.total,
                "aligned": summary.aligned,
                "coverage": summary.coverage,
                "seconds_per_file": summary.seconds_per_file,
                "failed": summary.failed,
                "reused": summary.reused,
                "out_dir": summary.out_dir,
            }
        )
    )


# --- training ---------------------------------------------------------------------------------


def cmd_train(args) -> None:
    from .device import is_main_process
    from .training.vqvae_task import train_vqvae

    metrics = train_vqvae(args.exp_dir, args.overrides)
    if metrics and is_main_process():
        print(json.dumps({"valid_" + k: v for k, v in metrics.items()}))


def cmd_prior_train(args) -> None:
    from .device import is_main_process
    from .training.prior_task import train_prior

    metrics = train_prior(args.exp_dir, args.overrides)
    if metrics and is_main_process():
        print(json.dumps({"valid_" + k: v for k, v in metrics.items()}))


def cmd_prior_sample(args) -> None:
    from .inference.prior_sampling import sample_prior

    record = sample_prior(
        args.prior_dir,
        args.out,
        speaker=args.speaker,
        seconds=args.seconds,
        num=args.num,
        candidates=args.candidates,
        temperature=args.temperature,
        top_k=args.top_k,
        seed=args.seed,
        vqvae=args.vqvae,
        codes_only=args.codes_only,
        overwrite=args.overwrite,
        device=args.device,
        top_prior=args.top_prior,
    )
    print(json.dumps(record))


def cmd_evaluate_loss(args) -> None:
    from .eval.loss import evaluate_loss

    print(
        json.dumps(
            evaluate_loss(
                args.exp_dir,
                manifest=args.manifest,
                split=args.split,
                max_utterances=args.max_utterances,
                out=args.out,
                overwrite=args.overwrite,
                device=args.device,
            )
        )
    )


def cmd_export(args) -> None:
    from .checkpoint import export_checkpoint, used_checkpoint

    out = Path(args.out)
    source = used_checkpoint(args.exp_dir)  # a prior's best.pt: the one `prior sample` uses
    export_checkpoint(source, out, overwrite=args.overwrite)
    print(f"wrote {out} (from {source})")


# --- inference --------------------------------------------------------------------------------


def cmd_encode(args) -> None:
    from .fileio import CorpusReader
    from .inference import VQSpeech
    from .inference.files import collect_inputs, encode_items

    with CorpusReader(args.input, "encode"):
        items = collect_inputs(args.input, args.split, args.limit)
        vq = VQSpeech.load(args.exp_dir, args.device)
        summary = encode_items(vq, items, Path(args.out_dir), latents=args.latents, overwrite=args.overwrite)
    print(json.dumps(summary))


def cmd_decode(args) -> None:
    from .inference import VQSpeech
    from .inference.files import decode_codes

    vq = VQSpeech.load(args.exp_dir, args.device)
    written = decode_codes(
        vq,
        Path(args.codes),
        Path(args.out),
        speaker=args.speaker,
        temperature=args.temperature,
        seed=args.seed,
        batch_size=args.batch_size,
        overwrite=args.overwrite,
    )
    print(json.dumps({"written": [str(p) for p in written]}))


def cmd_convert(args) -> None:
    from .fileio import CorpusReader
    from .inference import VQSpeech
    from .inference.files import collect_inputs, convert_items

    with CorpusReader(args.input, "convert"):
        items = collect_inputs(args.input, args.split, args.limit)
        vq = VQSpeech.load(args.exp_dir, args.device)
        written = convert_items(
            vq,
            items,
            Path(args.out),
            speaker=args.speaker,
            temperature=args.temperature,
            seed=args.seed,
            batch_size=args.batch_size,
            overwrite=args.overwrite,
            source=Path(args.input),
        )
    print(json.dumps({"written": [str(p) for p in written]}))


def cmd_enroll(args) -> None:
    from .training.enroll import EnrolOptions, enroll_speaker

    options = EnrolOptions(
        steps=args.steps, minutes=args.minutes or None, lr=args.lr, batch_size=args.batch_size, seed=args.seed
    )
    out = Path(args.out) if args.out else default_enrol_folder(Path(args.exp_dir), args.name)
    summary = enroll_speaker(
        args.exp_dir, args.name, args.audio, out, options, overwrite=args.overwrite, device=args.device
    )
    # the recordings and their stamps are in OUT/enrolment.json; a line here stays short however many
    brief = {k: v for k, v in summary.items() if k not in ("files", "inputs")}
    print(json.dumps({"out": str(out), **brief, "recordings": len(summary.get("files", []))}))


def default_enrol_folder(exp: Path, name: str) -> Path:
    """``EXP-NAME`` beside the experiment folder (of a checkpoint in ``checkpoints/``: beside its
    experiment; of a loose checkpoint file ``m.pt``: ``m-NAME`` beside it)."""
    from .fileio import check_plain_name

    check_plain_name(name)
    if exp.is_file() and exp.parent.name != "checkpoints":  # a loose checkpoint (an export): beside it
        loose = Path(os.path.abspath(exp))
        return loose.with_name(f"{loose.stem}-{name}")
    folder = exp.parent.parent if exp.is_file() else exp
    folder = Path(os.path.abspath(folder))
    if not folder.name:
        raise UserError(f"{exp} is not an experiment folder; name the trained model's folder (and -o OUT).")
    return folder.with_name(f"{folder.name}-{name}")


def cmd_speakers(args) -> None:
    from .checkpoint import load_checkpoint, resolve_checkpoint
    from .data.codes import CodesFolder
    from .data.manifest import read_manifest, speakers_of
    from .fileio import is_experiment_folder
    from .inference import VQSpeech

    path = Path(args.exp_dir)
    experiment = is_experiment_folder(path)  # which may hold its codes in EXP/codes, as the recipes do
    if path.is_dir() and not experiment and CodesFolder.holds_codes(path):  # a codes folder: its utterances' speakers
        print("\n".join(sorted(set(CodesFolder.open(path).info.speakers.values()))))
        return
    corpus = path.is_dir() and (path / "manifest.jsonl").is_file() and not experiment
    if path.suffix == ".jsonl" or corpus:
        speakers = speakers_of(read_manifest(path))
        if not speakers:
            raise UserError(f"{path} lists no utterances; prepare the corpus again with `vqspeech prepare`.")
        print("\n".join(speakers))
        return
    ckpt = load_checkpoint(resolve_checkpoint(path))
    if ckpt.get("kind") == "prior":
        print("\n".join(ckpt["speakers"]))
        return
    print("\n".join(VQSpeech.load(args.exp_dir, "cpu").speakers))  # validates the checkpoint, too


# --- evaluation -------------------------------------------------------------------------------

PROBE_SUMMARY = (
    "system",
    "num_frames",
    "num_phone_classes",
    "codes_used",
    "accuracy",
    "pnmi",
    "phone_purity",
    "cluster_purity",
    "abx_within",
    "abx_across",
    "linear_probe_accuracy",
    "speaker_id_acc",
    "speaker_id_acc_input",
)


def cmd_evaluate_probe(args) -> None:
    from .eval.probe import run_probe

    result = run_probe(
        args.codes,
        args.out,
        manifest=args.manifest,
        corpus=args.corpus,
        layout=args.layout,
        alignments=args.alignments,
        split=args.split,
        phone_set=args.phone_set,
        folding_table=args.folding,
        ignore=tuple(_split_list(args.ignore) or ()),
        name=args.name,
        abx=not args.no_abx,
        abx_max_items=args.abx_max_items,
        seed=args.seed,
        overwrite=args.overwrite,
        **_layout_options(args),
    )
    summary = {k: result.get(k) for k in PROBE_SUMMARY}
    summary["chance_accuracy"] = result["baselines"]["majority_phone"]["accuracy"]
    print(json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in summary.items()}))


def cmd_baseline(args) -> None:
    from .eval.baseline import mfcc_kmeans_baseline, settings_like

    num_codes, rate = args.num_codes, args.code_rate
    if args.like:
        like_codes, like_rate = settings_like(args.like, warn=num_codes is None)
        num_codes = like_codes if num_codes is None else num_codes
        rate = like_rate if rate is None else rate
    summary = mfcc_kmeans_baseline(
        args.manifest,
        args.out_dir,
        num_codes=128 if num_codes is None else num_codes,
        code_rate_hz=100.0 if rate is None else rate,
        fit_split=args.fit_split,
        split=args.split,
        seed=args.seed,
        overwrite=args.overwrite,
    )
    print(json.dumps(summary))


def cmd_evaluate_conversion(args) -> None:
    from .eval.conversion import evaluate_conversion, format_summary

    out = Path(args.out) if args.out else Path(args.exp_dir) / "eval_convert"
    digits = {"auto": None, "yes": True, "no": False}[args.digits]
    result = evaluate_conversion(
        args.exp_dir,
        out,
        manifest=args.manifest,
        split=args.split,
        num=args.num,
        targets=_split_list(args.targets, "--targets"),
        voices=_voices(args.voice),
        num_reference=args.num_reference,
        digits=digits,
        seed=args.seed,
        temperature=args.temperature,
        device=args.device,
        overwrite=args.overwrite,
    )
    print(format_summary(result))
    print(f"wrote {out / 'metrics.json'}")


def _voices(given: list[str]) -> dict[str, str]:
    """``NAME=PATH`` arguments -> {name: path}."""
    from .fileio import case_twin

    voices: dict[str, str] = {}
    for item in given:
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            raise UserError(f"--voice {item!r} is not NAME=PATH (a name, then a sound file or folder of that voice).")
        earlier = case_twin(name, voices)
        if earlier is not None:  # the later one used to replace the earlier without a word
            raise UserError(
                f"--voice {name} is given twice ({earlier}={voices[earlier]}, {name}={path}; names that differ in "
                "case only are one voice); give each voice once, with a folder for several recordings."
            )
        voices[name] = path
    return voices


def cmd_report(args) -> None:
    from .eval.report import write_report

    print(f"wrote {write_report(args.exp_dir, args.out, overwrite=args.overwrite)}")


# --- parser -----------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vqspeech", description=__doc__)
    verbs = parser.add_subparsers(dest="verb", required=True, metavar="VERB")

    def input_filters(p):
        p.add_argument("--split", default=None, help="with a manifest input: only this split")
        p.add_argument("--limit", type=int, default=None, help="only the first N inputs")

    def device_flag(p):
        p.add_argument("--device", default="auto", help="auto | cpu | cuda | mps (default: auto)")

    p = verbs.add_parser("prepare", help="corpus on disk -> manifest.jsonl, speakers.tsv, rejects.tsv, wavs/")
    p.add_argument("corpus_dir")
    p.add_argument("out_dir")
    p.add_argument("--layout", required=True, help="vctk | librispeech | libritts | timit | fsdd | folder | demo")
    p.add_argument("--sample_rate", type=int, default=16000)
    p.add_argument("--split_by", choices=["utterance", "speaker"], default="utterance")
    p.add_argument("--valid_fraction", type=float, default=0.05)
    p.add_argument(
        "--test_fraction",
        type=float,
        default=None,
        help="share of utterances (or speakers) in test (default 0.05; FSDD and TIMIT fix their own)",
    )
    p.add_argument("--heldout_speakers", help="comma-separated test speakers (with --split_by speaker)")
    p.add_argument("--min_duration", type=float, default=0.1, help="seconds; shorter files are rejected")
    p.add_argument("--max_duration", type=float, default=None, help="seconds; longer files are rejected")
    p.add_argument("--mic", default=None, help="VCTK 0.92 microphone: mic1 (default) or mic2")
    p.add_argument("--subset", default=None, help="LibriSpeech/LibriTTS subset, e.g. train-clean-100")
    p.add_argument("--seed", type=seed_arg, default=0)
    p.add_argument("--num_workers", type=bounded_int(0, 1024), default=None)
    p.add_argument("--overwrite", action="store_true")
    p.set_defaults(func=cmd_prepare)

    p = verbs.add_parser("demo-data", help="synthesise the embedded multi-speaker demo corpus (espeak-ng)")
    p.add_argument("out_dir")
    p.add_argument("--num_sentences", type=bounded_int(1, 100_000), default=240)
    p.add_argument("--seed", type=seed_arg, default=0)
    p.add_argument("--overwrite", action="store_true")
    p.set_defaults(func=cmd_demo_data)

    p = verbs.add_parser("align", help="forced phone alignment (pocketsphinx) -> OUT_DIR/<id>.TextGrid")
    p.add_argument("source", help="a corpus folder (with --layout) or a manifest.jsonl")
    p.add_argument("out_dir")
    p.add_argument("--layout", default=None, help="corpus layout; leave out when SOURCE is a manifest")
    p.add_argument("--mic", default=None, help="VCTK 0.92 microphone: mic1 (default) or mic2")
    p.add_argument("--subset", default=None, help="LibriSpeech/LibriTTS subset, e.g. train-clean-100")
    p.add_argument(
        "--manifest", default=None, help="point this manifest's utterances at their alignments (rewritten in place)"
    )
    p.add_argument("--num_workers", type=bounded_int(0, 1024), default=None, help="processes (default: one per CPU)")
    p.add_argument("--limit", type=int, default=None, help="only the first N utterances")
    p.add_argument("--overwrite", action="store_true", help="realign files already aligned")
    p.set_defaults(func=cmd_align)

    p = verbs.add_parser("train", help="train (or resume) a VQ-VAE in EXP_DIR; trailing key=value overrides")
    p.add_argument("exp_dir")
    p.add_argument("overrides", nargs="*", help="Hydra overrides, e.g. model=small data.manifest=M.jsonl")
    p.set_defaults(func=cmd_train)

    p = verbs.add_parser("prior", help="a prior over codes: `prior train`, `prior sample`")
    prior_verbs = p.add_subparsers(dest="prior_verb", required=True, metavar="ACTION")
    p = prior_verbs.add_parser(
        "train",
        help="train (or resume) a prior in EXP_DIR on encoded codes; "
        "trailing key=value overrides (data.codes=DIR, prior=transformer|wavenet)",
    )
    p.add_argument("exp_dir")
    p.add_argument("overrides", nargs="*")
    p.set_defaults(func=cmd_prior_train)
    p = prior_verbs.add_parser("sample", help="draw code sequences for a speaker and decode them to wav")
    p.add_argument("prior_dir")
    p.add_argument("-o", "--out", required=True, help="output folder")
    p.add_argument("--speaker", required=True)
    p.add_argument("--seconds", type=float, default=2.0, help="length of each sample (at most 600)")
    p.add_argument("--num", type=int, default=4, help="samples to keep")
    p.add_argument(
        "--candidates",
        type=int,
        default=None,
        help="draw this many and keep the --num most likely under the prior (default: --num)",
    )
    p.add_argument("--temperature", type=float, default=1.0, help="0 = argmax")
    p.add_argument("--top_k", type=int, default=None)
    p.add_argument("--seed", type=seed_arg, default=0)
    p.add_argument("--vqvae", default=None, help="the VQ-VAE to decode with (default: the one the codes came from)")
    p.add_argument(
        "--top_prior",
        default=None,
        metavar="TOP_PRIOR_DIR",
        help="hierarchical codes: the top-level prior (data.level=top) whose codes condition "
        "the bottom prior prior_dir; its codes are drawn first",
    )
    p.add_argument("--codes_only", action="store_true", help="write codes, do not decode")
    p.add_argument("--overwrite", action="store_true")
    device_flag(p)
    p.set_defaults(func=cmd_prior_sample)

    p = verbs.add_parser("export", help="write a checkpoint without optimizer state, for sharing")
    p.add_argument("exp_dir")
    p.add_argument("out")
    p.add_argument("--overwrite", action="store_true")
    p.set_defaults(func=cmd_export)

    p = verbs.add_parser("encode", help="audio (file, folder or manifest) -> codes/<id>.npy, units.txt")
    p.add_argument("exp_dir")
    p.add_argument("input")
    p.add_argument("out_dir")
    p.add_argument("--latents", action="store_true", help="also write latents/<id>.npy before quantisation")
    input_filters(p)
    p.add_argument("--overwrite", action="store_true")
    device_flag(p)
    p.set_defaults(func=cmd_encode)

    for name, func, what in (
        ("decode", cmd_decode, "codes (a .npy file or an encode folder) -> wav"),
        ("convert", cmd_convert, "audio (file, folder or manifest) -> wav in another voice"),
    ):
        p = verbs.add_parser(name, help=what)
        p.add_argument("exp_dir")
        if name == "decode":
            p.add_argument("codes")
            p.add_argument(
                "--speaker",
                default=None,
                help="a known speaker or a sound file / folder of a voice; default: the utterance's own speaker",
            )
        else:
            p.add_argument("input")
            p.add_argument(
                "--speaker",
                required=True,
                help="a speaker the model knows, or a sound file or folder of the target voice (a model "
                "with a speaker encoder)",
            )
            input_filters(p)
        p.add_argument("-o", "--out", required=True, help="a .wav file for one input, else a folder")
        p.add_argument("--temperature", type=float, default=1.0, help="softmax temperature; 0 = argmax")
        p.add_argument("--seed", type=seed_arg, default=0)
        p.add_argument("--batch_size", type=int, default=8, help="utterances generated together")
        p.add_argument("--overwrite", action="store_true")
        device_flag(p)
        p.set_defaults(func=func)

    p = verbs.add_parser("baseline", help="reference codes for the probe: `baseline mfcc-kmeans`")
    baseline_verbs = p.add_subparsers(dest="baseline_verb", required=True, metavar="SYSTEM")
    p = baseline_verbs.add_parser("mfcc-kmeans", help="MFCC + deltas clustered by k-means -> a codes folder")
    p.add_argument("manifest")
    p.add_argument("out_dir")
    p.add_argument("--like", default=None, help="take K and the code rate from this codes folder (the model's)")
    p.add_argument("--num_codes", type=int, default=None, help="K (default: --like's, else 128)")
    p.add_argument("--code_rate", type=float, default=None, help="codes per second (default: --like's, else 100)")
    p.add_argument("--fit_split", default="train", help="the split k-means is fitted on")
    p.add_argument("--split", default=None, help="only encode this split (default: all)")
    p.add_argument("--seed", type=seed_arg, default=0)
    p.add_argument("--overwrite", action="store_true")
    p.set_defaults(func=cmd_baseline)

    p = verbs.add_parser("evaluate", help="evaluation: `evaluate loss`, `evaluate conversion`, `evaluate probe`")
    evaluations = p.add_subparsers(dest="evaluation", required=True, metavar="WHAT")
    p = evaluations.add_parser(
        "loss",
        help="whole-utterance reconstruction loss (teacher-forced bits per sample, "
        "or a conv decoder's mel loss) and code usage on a split",
    )
    p.add_argument("exp_dir")
    p.add_argument("--manifest", default=None, help="default: the manifest the model was trained on")
    p.add_argument("--split", default="test", choices=["train", "valid", "test"])
    p.add_argument("--max_utterances", type=int, default=None)
    p.add_argument("--out", default=None, help="also write the metrics to this JSON file")
    p.add_argument("--overwrite", action="store_true")
    device_flag(p)
    p.set_defaults(func=cmd_evaluate_loss)

    p = evaluations.add_parser(
        "conversion", help="speaker similarity, recognition error and MCD of reconstructions and conversions"
    )
    p.add_argument("exp_dir")
    p.add_argument("--out", default=None, help="output folder (default: EXP_DIR/eval_convert)")
    p.add_argument("--manifest", default=None, help="default: the manifest the model was trained on")
    p.add_argument("--split", default="test")
    p.add_argument("--num", type=int, default=20, help="utterances to reconstruct and convert")
    p.add_argument("--targets", default=None, help="comma-separated target speakers (default: a rotation)")
    p.add_argument(
        "--voice",
        action="append",
        default=[],
        metavar="NAME=PATH",
        help="a target the model does not know, given by a sound file or folder (a model with a speaker encoder); "
        "name it in --targets too",
    )
    p.add_argument("--num_reference", type=int, default=10, help="train utterances per speaker centroid")
    p.add_argument(
        "--digits",
        choices=["auto", "yes", "no"],
        default="auto",
        help="recognise with a digit vocabulary (auto: when every text is one digit word)",
    )
    p.add_argument("--seed", type=seed_arg, default=0)
    p.add_argument("--temperature", type=float, default=1.0, help="the WaveNet's sampling temperature; 0 = argmax")
    p.add_argument("--overwrite", action="store_true")
    device_flag(p)
    p.set_defaults(func=cmd_evaluate_conversion)

    p = evaluations.add_parser(
        "probe", help="phoneme probe of a codes folder against phone alignments -> metrics JSON + plots"
    )
    p.add_argument("--codes", required=True, help="a folder written by `vqspeech encode` or `vqspeech baseline`")
    source = p.add_argument_group("phone alignments (give one)")
    source.add_argument("--manifest", default=None, help="a manifest whose utterances carry `alignment`")
    source.add_argument("--corpus", default=None, help="a corpus folder shipping alignments (with --layout)")
    source.add_argument("--alignments", default=None, help="a folder of <id>.TextGrid (e.g. from `vqspeech align`)")
    p.add_argument("--layout", default=None, help="corpus layout for --corpus, e.g. timit, demo")
    p.add_argument("--mic", default=None, help=argparse.SUPPRESS)
    p.add_argument("--subset", default=None, help=argparse.SUPPRESS)
    p.add_argument("--out", required=True, help="metrics .json; the plots are written beside it")
    p.add_argument("--split", default=None, help="only utterances of this split (default: all)")
    p.add_argument("--phone_set", default=None, help="arpabet | timit61 | espeak (default: guessed from the labels)")
    p.add_argument("--folding", default=None, help="your own phone folding table (TSV: set, label, class)")
    p.add_argument("--ignore", default=None, help="comma-separated classes left out of every metric, e.g. sil,spn")
    p.add_argument("--name", default=None, help="system name in the JSON and plots (default: the folder name)")
    p.add_argument("--no_abx", action="store_true", help="skip the ABX scores (the slowest part)")
    p.add_argument("--abx_max_items", type=int, default=None, help="ABX items per cell (default: the module's)")
    p.add_argument("--seed", type=seed_arg, default=0)
    p.add_argument("--overwrite", action="store_true")
    p.set_defaults(func=cmd_evaluate_probe)

    p = verbs.add_parser("report", help="one HTML page with the metrics, plots and audio of an experiment")
    p.add_argument("exp_dir")
    p.add_argument("--out", default=None, help="default: EXP_DIR/report.html")
    p.add_argument("--overwrite", action="store_true", help="replace an existing file that is not a report")
    p.set_defaults(func=cmd_report)

    p = verbs.add_parser("enroll", help="add a speaker to a trained model from a few recordings -> a new experiment")
    p.add_argument("exp_dir", help="the trained experiment (only read)")
    p.add_argument("name", help="the new speaker's name")
    p.add_argument("audio", nargs="+", help="sound files or folders of the new voice (a few seconds or more)")
    p.add_argument("-o", "--out", default=None, help="the enrolled model's experiment folder (default: EXP_DIR-NAME)")
    p.add_argument("--steps", type=bounded_int(1, 1_000_000), default=400, help="optimizer steps")
    p.add_argument("--minutes", type=float, default=5.0, help="wall-clock budget (0: the steps only)")
    p.add_argument("--lr", type=float, default=1e-2, help="learning rate of the new speaker's row")
    p.add_argument("--batch_size", type=bounded_int(1, 1024), default=8, help="crops of 0.5 s per step")
    p.add_argument("--seed", type=seed_arg, default=0)
    p.add_argument("--overwrite", action="store_true", help="enrol again over a finished enrolment in --out")
    device_flag(p)
    p.set_defaults(func=cmd_enroll)

    p = verbs.add_parser(
        "speakers",
        help="list the speakers a trained model (a VQ-VAE or a prior), a codes folder or a prepared corpus knows",
    )
    p.add_argument(
        "exp_dir", help="an experiment folder, a checkpoint file, a codes folder, or a prepared corpus or its manifest"
    )
    p.set_defaults(func=cmd_speakers)
    _check_paths(parser)
    return parser


def _flags(parser: argparse.ArgumentParser) -> set[str]:
    """The ``--name`` option strings of ``parser`` and of all its sub-commands."""
    flags: set[str] = set()
    for action in parser._actions:
        flags.update(o for o in action.option_strings if o.startswith("--"))
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                flags |= _flags(sub)
    return flags


def as_flags(message: str, flags: set[str]) -> str:
    """A library message for the command line: a backquoted parameter that is also a flag
    (```overwrite=True```, ```num```) becomes that flag (``--overwrite``, ``--num``)."""

    def replace(match: re.Match) -> str:
        flag = "--" + match.group(1)
        return flag if flag in flags else match.group(0)

    return re.sub(r"`(\w+)(?:=True)?`", replace, message)


PATH_ARGUMENTS = (
    "corpus_dir", "source", "out_dir", "exp_dir", "prior_dir", "top_prior", "input", "codes", "manifest",
    "corpus", "alignments", "folding", "out", "audio", "vqvae", "like",
)  # fmt: skip
"""The arguments that name files or folders (an empty one would mean the working directory)."""


def path_arg(text: str) -> str:
    """An argparse type for a file or folder: refuses an empty string, which would mean the working
    directory (typically an unset shell variable)."""
    if not text:
        raise argparse.ArgumentTypeError("is empty; give a file or folder (an unset shell variable?)")
    return text


def _check_paths(parser: argparse.ArgumentParser) -> None:
    """Give every :data:`PATH_ARGUMENTS` argument of ``parser`` and its verbs the type :func:`path_arg`."""
    for action in parser._actions:
        if action.dest in PATH_ARGUMENTS and action.type is None:
            action.type = path_arg
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                _check_paths(sub)


def _warning_printer(verb: str, flags: set[str]):
    """A ``warnings.showwarning`` for the command line: vqspeech's own warnings as one line like its
    errors (``vqspeech prepare: warning: ...``, parameters as flags); other libraries' as Python prints them."""
    package = os.path.dirname(os.path.abspath(__file__))
    default = warnings.showwarning

    def show(message, category, filename, lineno, file=None, line=None):
        if issubclass(category, UserWarning) and os.path.abspath(filename).startswith(package + os.sep):
            print(f"vqspeech {verb}: warning: {as_flags(str(message), flags)}", file=sys.stderr)
        else:
            default(message, category, filename, lineno, file, line)

    return show


def command_name(args: argparse.Namespace) -> str:
    """The verb as typed, with its action for the grouped verbs: ``evaluate probe``, ``prior train``."""
    action = getattr(args, "evaluation", None) or getattr(args, "prior_verb", None)
    return f"{args.verb} {action}" if action else args.verb


def seed_arg(text: str) -> int:
    """A random seed: an integer from 0 to 2**32 - 1 (what numpy and torch accept)."""
    return bounded_int(0, 2**32 - 1)(text)


def bounded_int(low: int, high: int):
    """An argparse type: an integer from ``low`` to ``high``."""
    return _bounded(int, "an integer", low, high)


def bounded_float(low: float, high: float):
    """An argparse type: a finite number from ``low`` to ``high``."""
    return _bounded(float, "a number", low, high)


def _bounded(kind, noun: str, low, high):
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {noun}") from None
        if not (math.isfinite(value) and low <= value <= high):
            raise argparse.ArgumentTypeError(f"{value} is not from {low} to {high}")
        return value

    return parse


def main(argv: list[str] | None = None) -> int:
    with process_streams():
        return _main(argv)


def _main(argv: list[str] | None) -> int:
    parser = build_parser()
    args, unknown = parser.parse_known_args(argv)
    if unknown:  # parse_args would name no verb: "vqspeech: error: unrecognized arguments"
        print(
            f"vqspeech {command_name(args)}: error: unrecognized arguments: {' '.join(unknown)} (see `vqspeech "
            f"{command_name(args)} --help`)",
            file=sys.stderr,
        )
        return 2
    try:
        with warnings.catch_warnings():
            warnings.showwarning = _warning_printer(command_name(args), _flags(parser))
            args.func(args)
            sys.stdout.flush()  # here, not at exit: a closed pipe is then one of the cases below
    except UserError as exc:
        print(f"vqspeech {command_name(args)}: error: {as_flags(str(exc), _flags(parser))}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # `vqspeech speakers EXP | head -1`: the reader has what it wanted
        silence_stdout()  # nothing more reaches the closed pipe
        return 141  # as a program killed by SIGPIPE
    except OSError as exc:  # the disk, the permissions, a path: what the user can fix, in one sentence
        if (failed := stdout_error()) is not None:
            silence_stdout()
            print(
                f"vqspeech {command_name(args)}: error: could not write to standard output "
                f"({failed.strerror or first_line(failed)}); send it to a file or device that takes it.",
                file=sys.stderr,
            )
            return 2
        where = f" ({exc.filename})" if exc.filename else ""
        print(
            f"vqspeech {command_name(args)}: error: {exc.strerror or first_line(exc)}{where}; check the path, its "
            "permissions and the free disk space.",
            file=sys.stderr,
        )
        return 2
    except RuntimeError as exc:
        if not str(exc).startswith("Symlink loop"):  # Path.resolve() on a link that leads back to itself
            raise
        print(
            f"vqspeech {command_name(args)}: error: {first_line(exc)}: a link in that path leads back to itself; "
            "give a path without a link loop.",
            file=sys.stderr,
        )
        return 2
    except KeyboardInterrupt as exc:
        terminated = isinstance(exc, Terminated)
        print(f"vqspeech {command_name(args)}: {'terminated' if terminated else 'interrupted'}", file=sys.stderr)
        return 143 if terminated else 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
