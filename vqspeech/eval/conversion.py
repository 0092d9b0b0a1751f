"""Reconstruction and voice-conversion metrics of a trained VQ-VAE (`vqspeech evaluate conversion`).

    metrics = evaluate_conversion("exp/fsdd", "exp/fsdd/eval_convert")
    print(format_summary(metrics))

For up to ``num`` utterances of a manifest split whose speaker the model knows (taken in turn
from each speaker, in a fixed pseudo-random order per speaker), the model's view of the original
(resampled to the model rate, cut to whole code frames), its reconstruction (own codes, own
speaker) and a conversion (own codes, a target speaker) are written, with a spectrogram of the
three, and scored:

- speaker similarity (:mod:`.speaker_similarity`): cosine between each signal's resemblyzer
  embedding and the centroids of the source and the target speaker, each centroid from up to
  ``num_reference`` utterances of the manifest's train split (resampled to the model rate, never
  an evaluated utterance). A conversion counts as reaching its target when it is closer to the
  target's centroid than to the source's (``conversion_speaker_accuracy``).
- word (or digit) error rate (:mod:`.recognition`): pocketsphinx transcripts of the three signals
  against the manifest text; utterances without text are left out. Digits mode (a grammar of the
  digit words, one per utterance) is chosen when every text is a single digit, unless ``digits``
  says otherwise; otherwise the language model is a bigram model of the train split's transcripts
  (closed domain) without the sentences the evaluated utterances say (corpora such as VCTK repeat
  sentences across speakers; ``lm_sentences_dropped_as_evaluated`` counts them).
  Rates are corpus-level: all edits over all reference words.
- MCD (:mod:`.mcd`) of the reconstruction against the original. The conversion's MCD against the
  original is reported too, but it is not a quality measure: a good conversion *should* differ
  from the source speaker's spectrum.

Output folder (paths in ``metrics.json`` are relative to it)::

    original/<id>.wav  reconstruction/<id>.wav  conversion/<id>.wav  spectrograms/<id>.png
    metrics.json       {"summary": {...}, "items": [{...}, ...]}
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
import warnings
from collections import defaultdict
from pathlib import Path

import numpy as np
from tqdm import tqdm

from ..audio import level, resample, save_wav
from ..data.manifest import (
    Utterance,
    check_not_below_rate,
    data_digest,
    load_utterance,
    manifest_file,
    read_manifest,
)
from ..data.prepare import SILENCE_RMS
from ..data.reference import load_reference
from ..errors import UserError
from ..fileio import (
    CONVERSION_EVALUATION_MARK,
    RUN_RECORD,
    CorpusReader,
    FolderLock,
    atomic_path,
    case_twin,
    check_plain_name,
    check_results_home,
    inside,
    is_experiment_folder,
    overlapping,
    read_json_object,
    write_text_atomic,
)
from ..inference import VQSpeech
from ..inference.vqspeech import check_temperature
from ..plots import save_spectrograms
from . import mcd as mcd_lib
from .recognition import Recognizer, is_digit_transcript, normalize_words, word_errors
from .speaker_similarity import SpeakerEmbedder, cosine_similarity

KINDS = ("original", "reconstruction", "conversion")
SUBDIRS = {
    "original": ("original", ".wav"),
    "reconstruction": ("reconstruction", ".wav"),
    "conversion": ("conversion", ".wav"),
    "spectrogram": ("spectrograms", ".png"),
}
MCD_CONVERSION_NOTE = (
    "MCD of conversions against the source recording measures how far the conversion moved from it, not its quality."
)


def evaluate_conversion(
    exp_dir: str | Path,
    out_dir: str | Path,
    *,
    manifest: str | Path | None = None,
    split: str = "test",
    num: int = 20,
    targets: list[str] | None = None,
    voices: dict[str, str] | None = None,
    num_reference: int = 10,
    digits: bool | None = None,
    seed: int = 0,
    temperature: float = 1.0,
    device: str = "auto",
    batch_size: int = 8,
    overwrite: bool = False,
    progress: bool = True,
) -> dict:
    """Write the signals and ``metrics.json`` into ``out_dir``; return the metrics dict.

    ``exp_dir``: an experiment folder or checkpoint. ``manifest`` defaults to the model config's
    ``data.manifest``. ``targets``: conversion target speakers, used in rotation (skipping the
    source speaker when another is listed); default, a rotation over the model's other speakers.
    ``voices``: targets the model does not know, each given by reference audio (name -> a sound
    file or folder; a model with a speaker encoder converts into them zero-shot). Their speaker
    centroid comes from the manifest's train utterances of that name when it has some, else from
    the reference audio itself.
    ``digits``: None = auto. ``seed`` fixes the selection, the reference picks and the sampling.
    ``temperature``: the WaveNet's sampling temperature (0 = argmax; a conv decoder ignores it).
    Raises UserError (before any work) when ``out_dir/metrics.json`` exists and not ``overwrite``,
    and for an unknown target, an empty split, or a split without known speakers.
    """
    start_time = time.perf_counter()
    timing: dict[str, float] = defaultdict(float)
    out_dir = Path(out_dir)
    metrics_path = out_dir / "metrics.json"
    if out_dir.exists() and not out_dir.is_dir():
        raise UserError(f"{out_dir} is a file; give a folder for the evaluation outputs.")
    if is_experiment_folder(out_dir):
        raise UserError(
            f"{out_dir} is an experiment folder; write the evaluation to a folder of its own, e.g. "
            f"{out_dir / 'eval_convert'}."
        )
    if metrics_path.exists() and not overwrite:
        raise UserError(f"{metrics_path} already exists; pass `overwrite=True` to replace it.")
    if metrics_path.exists() and not ((out_dir / MARK).is_file() or _is_conversion_record(metrics_path)):
        raise UserError(
            f"{metrics_path} was not written by `evaluate conversion`; move it away, or choose a new or "
            "empty output folder."
        )
    for name, value in (("num", num), ("num_reference", num_reference), ("batch_size", batch_size)):
        if value <= 0:
            raise UserError(f"`{name}` must be positive, not {value}.")
    check_temperature(temperature)
    previous = previous_outputs(out_dir)
    ours = (out_dir / MARK).is_file() or _is_conversion_record(metrics_path)
    others = (  # hidden files (.gitkeep, a lock) do not count; a killed decode's run record does
        sorted(p.name for p in out_dir.iterdir() if not p.name.startswith(".") or p.name == RUN_RECORD)
        if out_dir.is_dir()
        else []
    )
    if others and not ours:  # another verb's outputs (a decode's wavs, its run record): not ours to mix with
        raise UserError(
            f"{out_dir} holds files that `evaluate conversion` did not write (e.g. {others[0]}); choose a new or "
            "empty output folder."
        )

    t = time.perf_counter()
    vq = VQSpeech.load(exp_dir, device=device)
    vq.require_decoder()
    check_results_home(out_dir, [vq.checkpoint])
    timing["load_model"] = time.perf_counter() - t
    if manifest is None:
        manifest = (vq.config.get("data") or {}).get("manifest")
        if not manifest:
            raise UserError("The model's config names no data.manifest; pass the manifest to evaluate on.")
    manifest = Path(manifest)
    all_utts = read_manifest(manifest)
    check_not_below_rate(all_utts, vq.sample_rate, manifest)  # the items and the targets' recordings
    items = _select(all_utts, split, num, vq.voiced_speakers, seed, manifest)  # it reconstructs them too
    voices = dict(voices or {})
    speakers_known = {*vq.speakers, *(u.speaker for u in all_utts)}
    for name, path in voices.items():
        check_plain_name(name, "Voice name")
        known = case_twin(name, speakers_known)
        if known is not None:  # its conversions would be scored against that speaker's recordings
            same = "is" if known == name else f"differs only in case from {known!r},"
            raise UserError(
                f"The voice name {name!r} {same} a speaker the model or {manifest} already knows, whose recordings "
                "would score conversions into the reference's voice; give the voice another name."
            )
        if not os.path.exists(path):  # else it would read as a speaker name
            raise UserError(
                f"The reference of the voice {name!r}, {path}, does not exist; give a sound file or a folder of them."
            )
        if overlapping(out_dir, path):  # the outputs would become part of the voice
            raise UserError(
                f"The reference of the voice {name!r} ({path}) overlaps the output folder {out_dir}; keep the "
                "reference recordings apart from the evaluation's folder."
            )
    target_of = _assign_targets(items, targets, vq, voices)
    own = sum(target_of[u.id] == u.speaker for u in items)  # no conversion: the source's own voice
    if own:
        warnings.warn(
            f"{own} of the {len(items)} utterances have their own speaker as the target; they are reconstructed "
            "only, and the conversion scores leave them out (give other `targets` to convert them).",
            stacklevel=2,
        )

    # The scorers load before anything is deleted: a missing resemblyzer must not cost old results.
    t = time.perf_counter()
    embedder = SpeakerEmbedder(device="cuda" if vq.device.type == "cuda" else "cpu")
    texts = {u.id: u.text for u in items if normalize_words(u.text)}
    if digits is None:
        digits = bool(texts) and all(is_digit_transcript(x) for x in texts.values())
    single_digit = bool(digits) and bool(texts) and all(is_digit_transcript(x) for x in texts.values())
    # closed-domain LM: train transcripts, minus any sentence an evaluated utterance says
    evaluated_sentences = {tuple(normalize_words(x)) for x in texts.values()}
    train_texts = [u.text for u in all_utts if u.split == "train" and u.text and normalize_words(u.text)]
    lm_texts = [] if digits else [x for x in train_texts if tuple(normalize_words(x)) not in evaluated_sentences]
    lm_dropped = 0 if digits else len(train_texts) - len(lm_texts)
    recognizer = Recognizer(digits=digits, single_word=single_digit, sentences=lm_texts or None) if texts else None
    timing["load_scorers"] = time.perf_counter() - t

    with CorpusReader(manifest, "evaluate conversion"), FolderLock(out_dir, "evaluate conversion"):
        # Validation is over: clear what a previous run wrote, metrics.json first.
        write_text_atomic(out_dir / MARK, "")
        metrics_path.unlink(missing_ok=True)
        for stale in previous:
            stale.unlink(missing_ok=True)

        # ---- originals and codes
        t = time.perf_counter()
        originals, codes, kept, skipped = {}, {}, [], []
        for u in tqdm(items, desc="encode", unit="utt", disable=not progress):
            try:
                audio = resample(load_utterance(u), u.sample_rate, vq.sample_rate)
                if level(audio) < SILENCE_RMS:  # a hand-written manifest can name what `prepare` rejects
                    raise UserError(
                        f"silent (RMS {level(audio):.1e} about its mean, below {SILENCE_RMS:g}), which `prepare` "
                        "rejects: it has no voice or words to score"
                    )
                frames = len(audio) // vq.hop_length
                if frames == 0:
                    raise UserError(f"shorter than one code frame ({vq.hop_length} samples)")
                audio = audio[: frames * vq.hop_length]
                codes[u.id] = vq.encode(audio, vq.sample_rate)
            except UserError as exc:
                skipped.append({"id": u.id, "reason": str(exc)})
                continue
            originals[u.id] = audio
            kept.append(u)
        if not kept:
            raise UserError(
                f"None of the {len(items)} selected utterances could be encoded "
                f"(first problem: {skipped[0]['reason']})."
            )
        items = kept
        timing["encode"] = time.perf_counter() - t

        # ---- reconstructions and conversions, decoded together in batches of similar length
        t = time.perf_counter()
        jobs = [(u.id, "reconstruction", u.speaker) for u in items] + [
            (u.id, "conversion", voices.get(target_of[u.id], target_of[u.id]))
            for u in items
            if target_of[u.id] != u.speaker
        ]
        jobs.sort(key=lambda job: -len(codes[job[0]]))
        outputs: dict[str, dict[str, np.ndarray]] = defaultdict(dict)
        with tqdm(total=len(jobs), desc="decode", unit="utt", disable=not progress) as bar:
            for batch_index, first in enumerate(range(0, len(jobs), batch_size)):
                batch = jobs[first : first + batch_size]
                audios = vq.decode_batch(
                    [codes[i] for i, _, _ in batch],
                    [s for _, _, s in batch],
                    temperature=temperature,
                    seed=seed + batch_index,
                )
                for (uid, kind, _), audio in zip(batch, audios, strict=True):
                    outputs[uid][kind] = audio
                bar.update(len(batch))
        timing["decode"] = time.perf_counter() - t

        # ---- files
        t = time.perf_counter()
        sr = vq.sample_rate
        for u in tqdm(items, desc="write", unit="utt", disable=not progress):
            signals = {"original": originals[u.id], **outputs[u.id]}
            for kind in signals:
                save_wav(inside(out_dir, _relpath(kind, u.id)), signals[kind], sr)
            target = target_of[u.id]
            panels = {
                f"original ({u.speaker})": signals["original"],
                f"reconstruction ({u.speaker})": signals["reconstruction"],
            }
            if "conversion" in signals:
                panels[f"conversion ({u.speaker} -> {target})"] = signals["conversion"]
            with atomic_path(inside(out_dir, _relpath("spectrogram", u.id))) as tmp:
                save_spectrograms(tmp, panels, sr)
        timing["write"] = time.perf_counter() - t

        records = {u.id: _item_record(u, target_of[u.id], "conversion" in outputs[u.id]) for u in items}

        # ---- speaker similarity
        t = time.perf_counter()
        needed = sorted({u.speaker for u in items} | set(target_of.values()))
        evaluated = {u.id for u in items}
        references = _reference_utterances(all_utts, needed, evaluated, num_reference, seed)
        centroids, reference_counts = {}, {}
        for speaker in tqdm(needed, desc="speaker centroids", unit="spk", disable=not progress):
            reference_signals = []
            for ref in references.get(speaker, []):
                try:
                    reference_signals.append((resample(load_utterance(ref), ref.sample_rate, sr), sr))
                except UserError:
                    continue
            if not reference_signals and speaker in voices:  # a voice given only by its reference audio
                reference_signals = [(a, sr) for a in load_reference([voices[speaker]], sr)]
            reference_counts[speaker] = len(reference_signals)
            centroids.update(embedder.centroids({speaker: reference_signals}))
        for u in tqdm(items, desc="speaker similarity", unit="utt", disable=not progress):
            record, target = records[u.id], target_of[u.id]
            signals = {"original": originals[u.id], **outputs[u.id]}
            record["speaker_similarity"]["conversion"] = {"source": None, "target": None}  # none when not converted
            for kind in signals:
                embedding = embedder.embed(signals[kind], sr)
                record["speaker_similarity"][kind] = {
                    "source": _cos(embedding, centroids.get(u.speaker)),
                    "target": _cos(embedding, centroids.get(target)),
                }
            conv = record["speaker_similarity"]["conversion"]
            if conv["source"] is not None and conv["target"] is not None and target != u.speaker:
                record["conversion_closer_to_target"] = conv["target"] > conv["source"]
        timing["speaker_similarity"] = time.perf_counter() - t

        # ---- recognition
        t = time.perf_counter()
        if recognizer is not None:
            for u in tqdm([u for u in items if u.id in texts], desc="recognize", unit="utt", disable=not progress):
                record = records[u.id]
                reference = normalize_words(u.text, digits=digits)
                record["reference_words"] = len(reference)
                signals = {"original": originals[u.id], **outputs[u.id]}
                for kind in signals:
                    hypothesis = recognizer.transcribe(signals[kind], sr)
                    record["transcripts"][kind] = " ".join(hypothesis)
                    record["word_errors"][kind] = word_errors(reference, hypothesis)[0]
        timing["recognition"] = time.perf_counter() - t

        # ---- MCD
        t = time.perf_counter()
        for u in tqdm(items, desc="mcd", unit="utt", disable=not progress):
            reference_cepstra = mcd_lib.mel_cepstrum(originals[u.id], sr)
            for kind in outputs[u.id]:
                distortion = mcd_lib.mcd_from_cepstra(reference_cepstra, mcd_lib.mel_cepstrum(outputs[u.id][kind], sr))
                records[u.id]["mcd"][kind] = _finite(distortion)
        timing["mcd"] = time.perf_counter() - t

        item_list = [records[u.id] for u in items]
        timing["total"] = time.perf_counter() - start_time
        summary = {
            "model": str(Path(vq.checkpoint).resolve()) if vq.checkpoint else None,
            "step": vq.step,
            "model_digest": vq.checkpoint_digest,
            "exp_dir": str(Path(exp_dir).resolve()),
            "manifest": str(manifest_file(manifest).resolve()),
            "manifest_digest": data_digest(manifest),
            "split": split,
            "sample_rate": sr,
            "seed": seed,
            "temperature": temperature,
            "num_items": len(item_list),
            "num_requested": num,
            "skipped": skipped,
            "speakers": sorted({u.speaker for u in items}),
            "targets": sorted(set(target_of[u.id] for u in items)),
            "voices": {name: str(Path(path).resolve()) for name, path in sorted(voices.items())},
            "reference": {
                "split": "train",
                "num_per_speaker": reference_counts,
                "speakers_without_reference": [s for s in needed if s not in centroids],
            },
            "speaker_similarity": {
                kind: {
                    side: _mean(r["speaker_similarity"][kind][side] for r in item_list) for side in ("source", "target")
                }
                for kind in KINDS
            },
            "num_conversions": len(item_list) - sum(r["conversion"] is None for r in item_list),
            "conversion_speaker_accuracy": _mean(r["conversion_closer_to_target"] for r in item_list),
            "num_conversions_scored": sum(r["conversion_closer_to_target"] is not None for r in item_list),
            "recognition": {
                **_recognition_summary(
                    item_list,
                    bool(digits),
                    single_digit,
                    "digit grammar" if digits else "bigram of the train transcripts" if lm_texts else "en-us general",
                ),
                "lm_sentences": len(lm_texts),
                "lm_sentences_dropped_as_evaluated": lm_dropped,
            },
            "mcd": {
                "reconstruction": _mean(r["mcd"]["reconstruction"] for r in item_list),
                "conversion": _mean(r["mcd"].get("conversion") for r in item_list),
                "conversion_note": MCD_CONVERSION_NOTE,
                "definition": "mel-cepstral distortion (c1..c24 of the log-mel spectrum, DTW-aligned); "
                "comparable within vqspeech only",
            },
            "timing_seconds": {k: round(v, 3) for k, v in timing.items()},
        }
        metrics = {"summary": summary, "items": item_list}
        write_text_atomic(metrics_path, json.dumps(_json_safe(metrics), indent=2) + "\n")
    return metrics


def format_summary(metrics: dict) -> str:
    """A few human-readable lines for the command line."""
    s = metrics["summary"]
    sim, rec, mcd = s["speaker_similarity"], s["recognition"], s["mcd"]
    unit = rec["unit"]
    asked = s.get("num_requested")
    requested = f" (of {asked} requested)" if isinstance(asked, int) and asked > s["num_items"] else ""
    lines = [
        f"{s['num_items']} utterances{requested} of split {s['split']} ({', '.join(s['speakers'])}), "
        f"{len(s['skipped'])} skipped"
    ]
    for kind in KINDS:
        if kind == "conversion" and s.get("num_conversions") == 0:
            lines.append(f"  {kind:<15} none: every target is the source's own speaker")
            continue
        lines.append(
            f"  {kind:<15} similarity to source {_fmt(sim[kind]['source'])}, "
            f"to target {_fmt(sim[kind]['target'])}; {unit} error rate {_fmt(rec['error_rate'][kind])}"
        )
    lines.append(
        f"  conversion speaker accuracy {_fmt(s['conversion_speaker_accuracy'])} ({s['num_conversions_scored']} scored)"
    )
    lines.append(
        f"  MCD reconstruction {_fmt(mcd['reconstruction'], 2)} dB "
        f"(conversion vs source {_fmt(mcd['conversion'], 2)} dB, not a quality measure)"
    )
    lines.append("  time: " + ", ".join(f"{k} {v:.1f} s" for k, v in s["timing_seconds"].items()))
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------------


def _order_key(seed: int, uid: str) -> str:
    """A fixed pseudo-random order that does not depend on which other utterances exist."""
    return hashlib.sha1(f"{seed}:{uid}".encode()).hexdigest()


MARK = CONVERSION_EVALUATION_MARK
"""Hidden file that marks a folder as ``evaluate conversion``'s (written before any output): after
a run that failed before its metrics.json, what its subfolders hold is still ours to replace."""


def _is_conversion_record(path: Path) -> bool:
    """Whether ``path`` is a ``metrics.json`` shaped like this verb's (a summary and items)."""
    record = read_json_object(path)
    return record is not None and isinstance(record.get("summary"), dict) and isinstance(record.get("items"), list)


def previous_outputs(out_dir: Path) -> list[Path]:
    """The files an earlier run wrote in ``out_dir``'s subfolders, as its ``metrics.json`` lists
    them (or, in a folder marked by a run that never finished, every file named as the run names
    its outputs); UserError when a subfolder is a link or holds any other file (they are not ours
    to delete)."""
    marked = (out_dir / MARK).is_file()
    recorded: set[Path] | None = None
    try:
        items = json.loads((out_dir / "metrics.json").read_text(encoding="utf-8")).get("items", [])
        recorded = {
            inside(out_dir, item[key]).resolve() for item in items for key in SUBDIRS if isinstance(item.get(key), str)
        }
    except FileNotFoundError:
        recorded = None if marked else set()  # a marked folder without metrics: a run that did not finish
    except (OSError, ValueError, RecursionError, AttributeError, TypeError, UserError):  # no readable record
        recorded = set()
    found = []
    for sub, suffix in SUBDIRS.values():
        folder = out_dir / sub
        if folder.is_symlink():
            raise UserError(f"{folder} is a link; give an output folder whose subfolders are its own.")
        if not folder.is_dir():
            continue
        for path in sorted(folder.iterdir()):
            ours = path.suffix == suffix and path.is_file() if recorded is None else path.resolve() in recorded
            if not ours:
                raise UserError(
                    f"{folder} holds {path.name}, which no earlier `evaluate conversion` there wrote; "
                    "move it away, or choose a new or empty output folder."
                )
            found.append(path)
    return found


def _select(
    utts: list[Utterance], split: str, num: int, known: list[str], seed: int, manifest: Path
) -> list[Utterance]:
    in_split = [u for u in utts if u.split == split]
    if not in_split:
        splits = sorted({u.split for u in utts})
        raise UserError(
            f"Manifest {manifest} has no utterances in split {split!r} (it has: {', '.join(splits) or 'none'})."
        )
    by_speaker: dict[str, list[Utterance]] = defaultdict(list)
    for u in in_split:
        if u.speaker in known:
            by_speaker[u.speaker].append(u)
    if not by_speaker:
        raise UserError(
            f"None of the {len(in_split)} utterances in split {split!r} of {manifest} is by a "
            f"speaker this model knows ({', '.join(known[:10])}); was it trained on another corpus?"
        )
    queues = [sorted(by_speaker[s], key=lambda u: _order_key(seed, u.id)) for s in sorted(by_speaker)]
    picked: list[Utterance] = []
    for rank in range(max(len(q) for q in queues)):
        for q in queues:
            if rank < len(q) and len(picked) < num:
                picked.append(q[rank])
    return picked


def _assign_targets(
    items: list[Utterance], targets: list[str] | None, vq: VQSpeech, voices: dict[str, str] | None = None
) -> dict[str, str]:
    """Target speaker per item: a rotation over ``targets`` (else the model's other speakers);
    a target in ``voices`` is given by reference audio."""
    voices = voices or {}
    unused = sorted(set(voices) - set(targets or []))
    if unused:
        raise UserError(f"The voice {unused[0]!r} is not among the targets; add it to `targets`.")
    if targets is not None:
        targets = list(dict.fromkeys(targets))
        if not targets:
            raise UserError("The list of target speakers is empty; name at least one or leave it out.")
        for name in targets:
            if name in voices:
                vq.speaker_vector(voices[name])  # UserError for a bad reference or a model without an encoder
            else:
                vq.speaker_id(name)  # UserError naming the unknown speaker
    voiced = vq.voiced_speakers
    if targets is None and len(voiced) < 2:
        raise UserError(
            f"The model speaks only one voice ({voiced[0]}), so there is nobody to "
            "convert to; pass a target speaker to convert to that one."
        )
    counts: dict[str, int] = defaultdict(int)
    out = {}
    for u in items:
        pool = targets if targets is not None else voiced
        others = [s for s in pool if s != u.speaker] or pool
        out[u.id] = others[counts[u.speaker] % len(others)]
        counts[u.speaker] += 1
    return out


def _reference_utterances(
    utts: list[Utterance], speakers: list[str], exclude: set[str], num: int, seed: int
) -> dict[str, list[Utterance]]:
    pool: dict[str, list[Utterance]] = defaultdict(list)
    for u in utts:
        if u.split == "train" and u.speaker in speakers and u.id not in exclude:
            pool[u.speaker].append(u)
    return {s: sorted(p, key=lambda u: _order_key(seed + 1, u.id))[:num] for s, p in pool.items()}


def _relpath(kind: str, uid: str) -> str:
    sub, suffix = SUBDIRS[kind]
    return f"{sub}/{uid}{suffix}"


def _item_record(u: Utterance, target: str, converted: bool) -> dict:
    """An item's record; ``converted`` False (its own speaker as the target): no conversion file."""
    return {
        "id": u.id,
        "source_speaker": u.speaker,
        "target_speaker": target,
        "text": u.text,
        **{kind: _relpath(kind, u.id) for kind in (*KINDS, "spectrogram")},
        **({} if converted else {"conversion": None}),
        "speaker_similarity": {},
        "conversion_closer_to_target": None,
        "reference_words": None,
        "transcripts": {},
        "word_errors": {},
        "mcd": {},
    }


def _recognition_summary(items: list[dict], digits: bool, single_digit: bool, language_model: str) -> dict:
    scored = [r for r in items if r["reference_words"]]
    total = sum(r["reference_words"] for r in scored)
    rates = {}
    for kind in KINDS:  # a conversion's rate over the utterances that were converted
        words = sum(r["reference_words"] for r in scored if kind in r["word_errors"])
        rates[kind] = sum(r["word_errors"].get(kind, 0) for r in scored) / words if words else None
    return {
        "unit": "digit" if digits else "word",
        "digits": digits,
        "single_digit_grammar": single_digit,
        "engine": "pocketsphinx en-us",
        "language_model": language_model,
        "num_scored": len(scored),
        "reference_words": total,
        "error_rate": rates,
    }


def _cos(embedding: np.ndarray, centroid: np.ndarray | None) -> float | None:
    return None if centroid is None else round(cosine_similarity(embedding, centroid), 6)


def _finite(value: float) -> float | None:
    return None if value is None or not math.isfinite(value) else round(float(value), 4)


def _mean(values) -> float | None:
    values = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    return round(float(np.mean(values)), 6) if values else None


def _fmt(value: float | None, digits: int = 3) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def _json_safe(obj):
    """NaN and infinities -> null; numpy scalars -> Python numbers."""
    if isinstance(obj, dict):
        return {k: _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(v) for v in obj]
    if isinstance(obj, (np.floating, float)):
        return float(obj) if math.isfinite(float(obj)) else None
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.bool_):
        return bool(obj)
    return obj
