"""The phoneme probe: every unit metric of a codes folder against phone alignments, in one JSON.

``run_probe`` reads units (vqspeech.eval.frames), labels their frames with phones and reports:
the held-out code -> phone mapping accuracy, PNMI and purities (vqspeech.eval.code_metrics) with
the chance baselines computed the same way, each also on speech frames only (``*_no_silence``:
silence and spoken noise left out, the mapping learned on those frames too; their number in
``num_frames_no_silence``), ABX within and across speakers on one-hot codes and on the latents
(vqspeech.eval.abx), a linear phone probe on the latents and speaker identification from code
histograms beside the same from the input's MFCC statistics (vqspeech.eval.classifiers), plus
three PNG plots next to the JSON. A folder of continuous
features alone (``latents/``, no ``codes/``) gets the metrics defined for them: ABX, the linear
probe and speaker identification from the features' mean and standard deviation.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

from ..audio import load_audio
from ..data.codes import CodesFolder
from ..data.phones import PHONE_CLASSES
from ..errors import UserError
from ..fileio import (
    check_not_in_owned_folder,
    check_result_kind,
    check_results_home,
    check_writable_parent,
    write_text_atomic,
)
from ..plots import save_code_phone_heatmap, save_code_usage, save_phone_accuracy
from . import classifiers
from .abx import abx_scores
from .code_metrics import chance_baselines, code_scores, code_scores_and_predictions, contingency, per_phone_accuracy
from .features import mfcc
from .frames import ProbeData, aligned_utterances, load_probe_data

PLOTS = ("code_usage", "code_phone", "phone_accuracy")
"""The probe's PNGs, written beside its JSON as ``<stem>_<kind>.png``."""

NON_SPEECH = ("sil", "spn")
"""Phone classes left out of the ``*_no_silence`` scores (silence and spoken noise), as in the
published unit-discovery tables that score speech frames only."""

UTTERANCE_FOLDS = 5
"""With a single speaker the mapping is learned leave-one-fold-out over utterances instead."""


def run_probe(
    codes_dir: str | Path,
    out: str | Path,
    *,
    manifest=None,
    corpus=None,
    layout=None,
    alignments=None,
    split: str | None = None,
    phone_set: str | None = None,
    folding_table=None,
    ignore: tuple[str, ...] = (),
    name: str | None = None,
    abx: bool = True,
    abx_max_items: int | None = None,
    input_features: bool = True,
    plots: bool = True,
    seed: int = 0,
    overwrite: bool = False,
    progress: bool = True,
    **layout_options,
) -> dict:
    """Probe the units in ``codes_dir``; write the metrics to ``out`` (.json) and plots beside it."""
    out = Path(out)
    if out.suffix != ".json":
        raise UserError(f"`out` {out} should name a .json file.")
    folder = CodesFolder.open(codes_dir)
    if folder.info.checkpoint is not None:  # before any folder is made; a baseline's codes go anywhere
        check_results_home(out, [folder.info.checkpoint])
    plot_files = [out.with_name(f"{out.stem}_{kind}.png") for kind in PLOTS] if plots else []
    for path in (out, *plot_files):
        if path.exists() and not overwrite:
            raise UserError(f"{path} exists; pass `overwrite=True` to replace it.")
        check_not_in_owned_folder(path)
        check_writable_parent(path)  # also a name too long for the file system, before the work
    check_result_kind(out, "probe")
    if abx_max_items is not None and abx_max_items < 1:
        raise UserError(f"ABX needs at least 1 item per cell (`abx_max_items`, given {abx_max_items}).")
    timings: dict[str, float] = {}
    clock = time.perf_counter()
    utterances = aligned_utterances(
        manifest=manifest, corpus=corpus, layout=layout, alignments=alignments, **layout_options
    )
    if split is not None:
        splits = folder.info.splits
        split_of = {i: u.split or splits.get(i) for i, u in utterances.items()}
        utterances = {i: u for i, u in utterances.items() if split_of[i] == split}
        if not utterances:
            known = sorted({s for s in split_of.values() if s}) or ["none recorded"]
            raise UserError(
                f"No aligned utterance is in split '{split}' (splits: {', '.join(known)}); "
                "choose one of those or leave out `split`."
            )
    data = load_probe_data(folder, utterances, phone_set=phone_set, folding_table=folding_table)
    timings["load"] = time.perf_counter() - clock

    table = frame_table(data, ignore)
    result = {
        "result": "probe",
        "system": name or Path(codes_dir).name,
        "codes_dir": str(Path(codes_dir).resolve()),
        "codebook": folder.info.codebook,  # the report tells a probe of an earlier codebook by it
        "split": split,
        "phone_set": data.phone_set,
        "groups": folder.info.groups,
        **probe_metrics(
            data,
            table,
            ignore=ignore,
            abx=abx,
            abx_max_items=abx_max_items,
            input_features=input_features,
            seed=seed,
            progress=progress,
            timings=timings,
        ),
    }
    result["skipped_utterances"] = data.skipped
    if plots:
        result["plots"] = write_plots(data, table, result, out)
    result["seconds"] = {k: round(v, 2) for k, v in timings.items()}
    out.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out, json.dumps(result, indent=2) + "\n")
    return result


def _phone_order(labels: set[str]) -> list[str]:
    known = [p for p in PHONE_CLASSES if p in labels]
    return known + sorted(labels - set(known))


def frame_table(data: ProbeData, ignore: tuple[str, ...] = ()):
    """Flatten to frames: (phone index [N], keep mask per utterance, phone names, codes [N] or None)."""
    present = {p for lab in data.labels for p in set(lab.tolist())} - {""}
    folded = {p.lower(): p for p in present}  # `IY` for the folded set's `iy`: the case of the alignments
    ignore = tuple(label if label in present else folded.get(label.lower(), label) for label in ignore)
    unknown = [label for label in ignore if label not in present]
    if unknown:
        raise UserError(
            f"No frame is labelled {unknown[0]!r}, so it cannot be ignored; the classes here are "
            f"{', '.join(_phone_order(present))}."
        )
    keep = [(lab != "") & ~np.isin(lab, list(ignore)) for lab in data.labels]
    phones = _phone_order({p for lab, k in zip(data.labels, keep, strict=True) for p in set(lab[k])})
    if not phones:
        raise UserError("No frame has a phone label once excluded and ignored labels are removed.")
    if len(phones) < 2:  # every metric is trivially perfect (or undefined) with one class
        raise UserError(
            f"Every frame left is labelled {phones[0]!r} once excluded and ignored labels are removed; the phone "
            "metrics need at least two classes, so check the alignments (time no segment labels is silence) "
            "and `ignore`."
        )
    speech = [p for p in phones if p not in NON_SPEECH]
    if len(speech) < 2:  # silence against one phone (or none) says nothing about phones
        raise UserError(
            f"The frames hold {len(speech)} speech phone class(es) ({', '.join(phones)}) once excluded and ignored "
            "labels are removed; a phone probe needs at least two, so check the alignments and `ignore`."
        )
    index = {p: i for i, p in enumerate(phones)}
    labels = np.array([index[p] for lab, k in zip(data.labels, keep, strict=True) for p in lab[k]], dtype=np.int64)
    codes = None if data.codes is None else np.concatenate([c[k] for c, k in zip(data.codes, keep, strict=True)])
    return labels, keep, phones, codes


def _groups(data: ProbeData, keep: list[np.ndarray]) -> tuple[np.ndarray, str]:
    speakers = sorted(set(data.speakers))
    if len(speakers) >= 2:
        per_utt = [speakers.index(s) for s in data.speakers]
        protocol = "leave-one-speaker-out"
    elif len(data.ids) >= 2:
        folds = min(UTTERANCE_FOLDS, len(data.ids))
        per_utt = [i % folds for i in range(len(data.ids))]
        protocol = f"leave-one-fold-out over utterances ({folds} folds; one speaker)"
    else:
        per_utt, protocol = [0], "none (one utterance: nothing to hold out)"
    return np.concatenate([np.full(int(k.sum()), g) for g, k in zip(per_utt, keep, strict=True)]), protocol


def probe_metrics(
    data: ProbeData,
    table: tuple,
    *,
    ignore=(),
    abx=True,
    abx_max_items=None,
    input_features=True,
    seed=0,
    progress=True,
    timings: dict | None = None,
) -> dict:
    """Every metric of ``data`` as one flat dict (see the module docstring); None where not defined.

    ``table``: :func:`frame_table` of ``data`` with the same ``ignore``."""
    timings = {} if timings is None else timings
    clock = time.perf_counter()
    phones, keep, phone_names, codes = table
    groups, protocol = _groups(data, keep)
    P = len(phone_names)
    speech = ~np.isin(phones, [i for i, p in enumerate(phone_names) if p in NON_SPEECH])
    result = {
        "num_utterances": len(data.ids),
        "num_speakers": len(set(data.speakers)),
        "num_frames": int(len(phones)),
        "num_frames_no_silence": int(speech.sum()),
        "num_phone_classes": P,
        "code_rate_hz": data.code_rate_hz,
        "mapping_protocol": protocol,
        "ignored_labels": list(ignore),
    }
    if codes is not None:
        K = data.num_codes
        if codes.max() >= K:
            raise UserError(f"Codes go up to {codes.max()} but codes.json says K={K}; re-run `vqspeech encode`.")
        scores, predictions = code_scores_and_predictions(codes, phones, groups, K, P)
        baselines = chance_baselines(phones, groups, K, P, seed)
        if speech.any():  # the same scores on speech frames only (the mapping learned on them too)
            scores.update(_suffixed(code_scores(codes[speech], phones[speech], groups[speech], K, P)))
            speech_baselines = chance_baselines(phones[speech], groups[speech], K, P, seed)
            for name, values in speech_baselines.items():
                baselines[name].update(_suffixed(values))
        result.update(
            {
                "K": K,
                "codes_used": int(np.sum(np.bincount(codes, minlength=K) > 0)),
                **scores,
                "baselines": baselines,
            }
        )
        per_phone = np.full(P, np.nan) if result["accuracy"] is None else per_phone_accuracy(phones, predictions, P)
        result["per_phone_accuracy"] = {
            p: (None if np.isnan(a) else round(float(a), 4)) for p, a in zip(phone_names, per_phone, strict=True)
        }
    else:  # continuous features only: the discrete metrics are not defined
        result.update(dict.fromkeys(("K", "codes_used", "accuracy", "pnmi", "phone_purity", "cluster_purity")))
        result.update(_suffixed(dict.fromkeys(("accuracy", "pnmi", "phone_purity", "cluster_purity"))))
        result["baselines"] = {"majority_phone": code_scores(np.zeros_like(phones), phones, groups, 1, P)}
    timings["code_metrics"] = time.perf_counter() - clock

    clock = time.perf_counter()
    latent_frames = None
    if data.latents is not None:
        latent_frames = np.concatenate([z[k] for z, k in zip(data.latents, keep, strict=True)])
    result["linear_probe_accuracy"] = (
        None if latent_frames is None else classifiers.linear_probe_accuracy(latent_frames, phones, groups, seed=seed)
    )
    timings["linear_probe"] = time.perf_counter() - clock

    clock = time.perf_counter()
    speakers = np.array(data.speakers)
    per_utterance = (
        classifiers.code_histograms(data.codes, data.num_codes)
        if data.codes is not None
        else classifiers.feature_statistics(_latents(data))
    )
    result["speaker_id_acc"] = classifiers.speaker_id_accuracy(per_utterance, speakers, seed=seed)
    result["speaker_id_features"] = "code histograms" if data.codes is not None else "mean and std of the features"
    result["speaker_id_acc_input"] = None
    audio_files = [path for path in data.audio if path]
    if input_features and len(audio_files) == len(data.audio):  # every utterance's audio is known
        mfccs = []
        for path in tqdm(audio_files, desc="input mfcc", unit="utt", disable=not progress):
            audio, sr = load_audio(path)
            mfccs.append(mfcc(audio, sr, max(1, sr // 100)))
        result["speaker_id_acc_input"] = classifiers.speaker_id_accuracy(
            classifiers.feature_statistics(mfccs), speakers, seed=seed
        )
    _, per_speaker = np.unique(speakers, return_counts=True)
    result["speaker_id_chance"] = float(per_speaker.max() / per_speaker.sum())
    timings["speaker_id"] = time.perf_counter() - clock

    if abx:
        clock = time.perf_counter()
        options = {
            "seed": seed,
            "ignore": ("sil", "spn", *ignore),
            **({"max_items_per_cell": abx_max_items} if abx_max_items is not None else {}),
        }
        if data.codes is not None:
            one_hot = [np.eye(data.num_codes, dtype=np.float32)[c] for c in data.codes]
            result.update(abx_scores(one_hot, data.spans, data.speakers, **options))
            result["abx_features"] = "one-hot codes, angular distance, DTW"
            if data.latents is not None:
                latent_scores = abx_scores(data.latents, data.spans, data.speakers, **options)
                result.update({f"{k}_latents": v for k, v in latent_scores.items() if k.startswith("abx_")})
        else:
            result.update(abx_scores(_latents(data), data.spans, data.speakers, **options))
            result["abx_features"] = "continuous features, angular distance, DTW"
        timings["abx"] = time.perf_counter() - clock
    return result


def _suffixed(scores: dict) -> dict:
    """accuracy, pnmi, ... -> accuracy_no_silence, pnmi_no_silence, ..."""
    return {f"{key}_no_silence": value for key, value in scores.items()}


def _latents(data: ProbeData) -> list[np.ndarray]:
    """The continuous features of units without codes (load_probe_data gives codes, latents or both)."""
    if data.latents is None:
        raise ValueError("ProbeData has neither codes nor latents.")
    return data.latents


def write_plots(data: ProbeData, table: tuple, result: dict, out: Path) -> dict[str, str]:
    """code usage, code-by-phone heat map and per-phone accuracy PNGs named ``<stem>_*.png``.

    Codes only: continuous features get no plots."""
    phones, _, names, codes = table
    if codes is None:
        return {}
    system = result["system"]
    files = {kind: f"{out.stem}_{kind}.png" for kind in PLOTS}
    out.parent.mkdir(parents=True, exist_ok=True)
    save_code_usage(
        out.parent / files["code_usage"], np.bincount(codes, minlength=data.num_codes), f"{system}: code usage"
    )
    save_code_phone_heatmap(
        out.parent / files["code_phone"],
        contingency(codes, phones, data.num_codes, len(names)),
        names,
        f"{system}: p(phone | code)",
    )
    accuracy = np.array(
        [np.nan if result["per_phone_accuracy"][p] is None else result["per_phone_accuracy"][p] for p in names]
    )
    save_phone_accuracy(
        out.parent / files["phone_accuracy"],
        accuracy,
        np.bincount(phones, minlength=len(names)),
        names,
        f"{system}: held-out mapping accuracy "
        + ("n/a" if result["accuracy"] is None else f"{result['accuracy']:.3f}"),
    )
    return files
