"""Corpus -> manifest: find utterances, convert audio to one cached format, assign splits.

``prepare_corpus`` writes into ``OUT_DIR``:

- ``wavs/<id>.wav``: mono, resampled to the target rate (soxr), level-normalised, 16-bit PCM;
- ``manifest.jsonl``: one line per usable utterance (see :mod:`vqspeech.data.manifest`);
- ``speakers.tsv``: ``speaker  num_utterances  seconds  splits``;
- ``rejects.tsv``: ``file  reason`` for every input that was skipped (header only when none);
- ``prepare.json``: the settings the manifest was built with.

Re-running with the same settings is cheap: cached wavs made from the same source file (they
carry its modification time) are reused and the manifest is rewritten. Different settings are
refused unless ``overwrite=True``, which converts every file again and removes only what
``prepare`` wrote: its own files by name, and the cached ``wavs/<id>.wav`` of the utterances it
knows. The corpus and the output folder may not overlap, so nothing of the corpus is
ever read back as output or deleted; a ``wavs/`` folder holding files ``prepare`` did not write is
refused.

Splits are reproducible and do not depend on file order or on which other files exist: each
utterance (or speaker, with ``split_by="speaker"``) is placed by a hash of (seed, id). A split
the corpus itself fixes (FSDD's test set) takes precedence over the hash.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import warnings
from collections.abc import Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import soundfile as sf
from tqdm import tqdm

from ..audio import (
    MAX_SAMPLE_RATE,
    MIN_SAMPLE_RATE,
    channels_cancel,
    level,
    load_audio,
    normalize_level,
    resample,
    save_wav,
    sound_file,
)
from ..errors import UserError
from ..fileio import (
    PREPARED_MARK,
    FolderLock,
    check_no_readers,
    inside,
    is_safe_name,
    overlapping,
    read_json_object,
    user_path,
    write_text_atomic,
)
from .corpora import SourceUtterance, find_utterances, source_path, source_speaker
from .manifest import SPLITS, Utterance, read_manifest, write_manifest

SILENCE_RMS = 1e-5
"""Inputs whose RMS level is below this are rejected as silent."""

SPLIT_MODES = ("utterance", "speaker")

DEFAULT_TEST_FRACTION = 0.05
"""The share of utterances (or speakers) drawn for the test split when the corpus fixes none."""


@dataclass
class PrepareSummary:
    """What :func:`prepare_corpus` produced."""

    num_utterances: int
    num_rejected: int
    num_speakers: int
    hours: float
    manifest: str
    splits: dict[str, int] = field(default_factory=dict)
    """Number of utterances per split (train/valid/test)."""
    num_upsampled: int = 0
    """Utterances whose source was recorded below the corpus's rate (kept, with a warning)."""


def prepare_corpus(
    corpus_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    layout: str,
    *,
    sample_rate: int = 16000,
    split_by: str = "utterance",
    valid_fraction: float = 0.05,
    test_fraction: float | None = None,
    heldout_speakers: Sequence[str] | None = None,
    min_duration: float = 0.1,
    max_duration: float | None = None,
    seed: int = 0,
    num_workers: int | None = None,
    overwrite: bool = False,
    progress: bool = True,
    **layout_options,
) -> PrepareSummary:
    """Read the corpus at ``corpus_dir`` with reader ``layout`` and build ``out_dir``.

    ``split_by="utterance"`` places each utterance by a hash of (seed, id), about
    ``valid_fraction`` / ``test_fraction`` (None: :data:`DEFAULT_TEST_FRACTION`, and no warning when
    the corpus fixes its test split, as FSDD and TIMIT do) of them in valid / test; ``split_by="speaker"`` holds out
    whole speakers: ``heldout_speakers`` become test, or a hash of (seed, speaker) picks about those
    fractions of the speakers. Inputs that cannot be used (unreadable, not audio, empty, silent,
    shorter than ``min_duration`` or longer than ``max_duration`` seconds) are listed in
    ``rejects.tsv``. Conversion runs in ``num_workers`` processes (default: one per CPU; 0 or 1
    converts in this process). Extra keyword arguments are options of the layout (e.g. ``mic``).
    Raises UserError for bad arguments, a missing or unusable corpus, or an existing manifest
    built with other settings when ``overwrite`` is False.
    """
    corpus_dir = user_path(corpus_dir)
    out_dir = user_path(out_dir)
    if isinstance(heldout_speakers, str):
        heldout_speakers = [heldout_speakers]
    given_test_fraction = test_fraction
    test_fraction = DEFAULT_TEST_FRACTION if test_fraction is None else test_fraction
    _check_arguments(
        sample_rate, split_by, valid_fraction, test_fraction, heldout_speakers, min_duration, max_duration, num_workers
    )

    settings = {
        "layout": layout,
        "corpus_dir": str(corpus_dir.resolve()),
        "layout_options": dict(sorted(layout_options.items())),
        "sample_rate": int(sample_rate),
        "split_by": split_by,
        "valid_fraction": float(valid_fraction),
        "test_fraction": float(test_fraction),
        "heldout_speakers": sorted(heldout_speakers) if heldout_speakers is not None else None,
        "seed": int(seed),
        "min_duration": float(min_duration),
        "max_duration": float(max_duration) if max_duration is not None else None,
    }
    settings = json.loads(json.dumps(settings))  # the form it takes in prepare.json
    sources, rejects = find_utterances(corpus_dir, layout, **layout_options)
    if split_by == "utterance" and given_test_fraction is not None and any(u.split == "test" for u in sources):
        warnings.warn(
            f"The {layout} corpus fixes its own test split, so test_fraction={test_fraction:g} is not used; "
            "--split_by speaker places whole speakers instead.",
            stacklevel=2,
        )
    _check_apart(corpus_dir, out_dir)
    _check_sources_apart(sources, out_dir)
    if heldout_speakers:
        _check_speakers(heldout_speakers, sources, corpus_dir)
    with FolderLock(out_dir, "prepare"):
        check_no_readers(out_dir, "prepare")
        return _prepare(out_dir, corpus_dir, layout, settings, sources, rejects, num_workers, overwrite, progress)


def _prepare(
    out_dir: Path,
    corpus_dir: Path,
    layout: str,
    settings: dict,
    sources: list[SourceUtterance],
    rejects: list[tuple[str, str]],
    num_workers: int | None,
    overwrite: bool,
    progress: bool,
) -> PrepareSummary:
    """Convert, split and write, in a folder whose lock the caller holds."""
    sample_rate, min_duration, max_duration = (
        settings["sample_rate"],
        settings["min_duration"],
        settings["max_duration"],
    )
    split_by, valid_fraction, test_fraction = (
        settings["split_by"],
        settings["valid_fraction"],
        settings["test_fraction"],
    )
    heldout_speakers, seed = settings["heldout_speakers"], settings["seed"]
    _check_cache_is_ours(out_dir)  # before anything is deleted
    aligned = _previous_alignments(out_dir, settings, sources)  # before the previous manifest may be removed
    _check_previous_run(out_dir, settings, overwrite, [u.id for u in sources])
    _claim_cache(out_dir, settings)

    wav_dir = out_dir / "wavs"
    replaced = _forget_replaced_sources(out_dir, sources)
    aligned = {k: v for k, v in aligned.items() if k not in replaced and Path(v).is_file()}
    tasks = [
        (
            source_path(u),
            str(inside(wav_dir, f"{u.id}.wav")),
            int(sample_rate),
            float(min_duration),
            None if max_duration is None else float(max_duration),
            not overwrite,
        )
        for u in sources
    ]
    results = _run(tasks, num_workers, progress, desc=f"prepare {layout}")

    usable: list[tuple[SourceUtterance, int]] = []
    upsampled: list[tuple[str, int]] = []
    for utt, (frames, reason, source_rate) in zip(sources, results, strict=True):
        if reason is None:
            usable.append((utt, frames))
            if 0 < source_rate < sample_rate:
                upsampled.append((source_path(utt), source_rate))
        else:
            rejects.append((source_path(utt), reason))
    if upsampled:  # kept, but their band above source_rate / 2 is empty: say so
        lowest = min(upsampled, key=lambda item: item[1])
        warnings.warn(
            f"{len(upsampled)} file(s) were recorded below {sample_rate} Hz and were upsampled, so their band "
            f"above half their rate is silent (lowest: {lowest[0]} at {lowest[1]} Hz); prepare at a lower "
            "`sample_rate`, or leave them out, if that matters.",
            stacklevel=2,
        )
    rejects.sort()
    out_dir.mkdir(parents=True, exist_ok=True)
    _write_tsv(out_dir / "rejects.tsv", ("file", "reason"), rejects)
    if not usable:
        raise UserError(
            f"None of the {len(sources)} audio file(s) found in {corpus_dir} could be "
            f"used; see the reasons in {out_dir / 'rejects.tsv'}."
        )

    kept_speakers = {source_speaker(u) for u, _ in usable}
    if heldout_speakers and split_by == "speaker" and kept_speakers <= set(heldout_speakers):
        others = sorted({source_speaker(u) for u in sources} - set(heldout_speakers))
        if others:  # assign_splits would say the option lists every speaker: the files are the cause
            raise UserError(
                f"Every file of the speakers not held out ({', '.join(others[:5])}) was rejected, so none is left "
                f"for training; see the reasons in {out_dir / 'rejects.tsv'}."
            )
    splits = assign_splits(
        [u for u, _ in usable],
        split_by=split_by,
        valid_fraction=valid_fraction,
        test_fraction=test_fraction,
        heldout_speakers=heldout_speakers,
        seed=seed,
    )
    utts = [
        Utterance(
            id=u.id,
            audio=str(wav_dir / f"{u.id}.wav"),
            speaker=source_speaker(u),
            duration=frames / sample_rate,
            sample_rate=int(sample_rate),
            split=splits[u.id],
            text=u.text,
            alignment=u.alignment or aligned.get(u.id),  # `align --manifest`'s, of an unchanged source
        )
        for u, frames in usable
    ]
    if not any(u.split == "train" for u in utts):
        warnings.warn(
            f"No utterance of {corpus_dir} is in the train split (the corpus or the options put them all in "
            "valid or test); the manifest serves encoding and evaluation, and `vqspeech train` will refuse it.",
            stacklevel=2,
        )
    manifest = out_dir / "manifest.jsonl"
    write_manifest(manifest, utts)
    _write_tsv(out_dir / "speakers.tsv", ("speaker", "num_utterances", "seconds", "splits"), _speaker_rows(utts))
    write_text_atomic(out_dir / "prepare.json", json.dumps(settings, indent=2) + "\n")

    return PrepareSummary(
        num_utterances=len(utts),
        num_rejected=len(rejects),
        num_speakers=len({u.speaker for u in utts}),
        hours=sum(u.duration for u in utts) / 3600.0,
        manifest=str(manifest),
        splits={s: sum(u.split == s for u in utts) for s in SPLITS},
        num_upsampled=len(upsampled),
    )


def assign_splits(
    utts: Sequence[SourceUtterance],
    *,
    split_by: str = "utterance",
    valid_fraction: float = 0.05,
    test_fraction: float = 0.05,
    heldout_speakers: Sequence[str] | None = None,
    seed: int = 0,
) -> dict[str, str]:
    """Map each utterance id to "train", "valid" or "test", reproducibly.

    By utterance, a corpus-fixed split (``SourceUtterance.split``) is kept, and the other
    utterances are placed by a hash of (seed, id); a split the corpus fixes for some utterances is
    not drawn for the rest (FSDD: valid comes from the non-test utterances). By speaker, corpus
    splits are ignored and whole speakers are placed: ``heldout_speakers`` are test, the rest by a
    hash of (seed, speaker). A split with a non-zero fraction gets at least one item whenever one
    can be taken while leaving at least one for training.
    """
    if split_by == "utterance":
        fixed = {u.split for u in utts if u.split}
        free = [u.id for u in utts if not u.split]
        chosen = _hash_split(
            free,
            seed,
            test_fraction=0.0 if "test" in fixed else test_fraction,
            valid_fraction=0.0 if "valid" in fixed else valid_fraction,
        )
        return {u.id: u.split or chosen[u.id] for u in utts}
    if split_by != "speaker":
        raise UserError(f"split_by='{split_by}' is not valid; use one of: {', '.join(SPLIT_MODES)}.")
    speakers = sorted({source_speaker(u) for u in utts})
    if heldout_speakers:
        heldout = set(heldout_speakers)
        rest = [s for s in speakers if s not in heldout]
        if not rest:
            raise UserError(
                "`heldout_speakers` lists every speaker of the corpus; leave at least one speaker for training."
            )
        by_speaker = {s: "test" for s in heldout}
        by_speaker.update(_hash_split(rest, seed, test_fraction=0.0, valid_fraction=valid_fraction))
    else:
        by_speaker = _hash_split(speakers, seed, test_fraction=test_fraction, valid_fraction=valid_fraction)
    return {u.id: by_speaker[source_speaker(u)] for u in utts}


def read_rejects(out_dir: str | os.PathLike) -> list[tuple[str, str]]:
    """The (file, reason) rows of ``rejects.tsv`` in ``out_dir`` (or of that file itself)."""
    path = Path(out_dir)
    if path.is_dir():
        path = path / "rejects.tsv"
    if not path.is_file():
        raise UserError(f"Rejects list {path} does not exist; create it with `vqspeech prepare`.")
    rows = []
    with open(path, encoding="utf-8") as f:
        next(f, None)  # header
        for line in f:
            line = line.rstrip("\n")
            if line:
                file, _, reason = line.partition("\t")
                rows.append((file, reason))
    return rows


# ----------------------------------------------------------------------------------------------
# Conversion (runs in worker processes)


def _convert(task: tuple[str, str, int, float, float | None, bool]) -> tuple[int, str | None, int]:
    """Convert one source file into the cache; returns (num_samples, reject reason or None, the
    source's sample rate or 0 when unknown).

    With ``reuse`` (the last field), keeps a cached wav made from this very source file: the cache
    carries its source's modification time (to the nanosecond) and has the target rate. Never
    raises for bad input: every problem becomes a reason.
    """
    source, cache, sample_rate, min_duration, max_duration, reuse = task
    try:
        frames = _cached_frames(cache, source, sample_rate) if reuse else None
        if frames is not None:
            return frames, _duration_problem(frames, sample_rate, min_duration, max_duration), _header_rate(source)
        made_from = os.stat(source)  # before reading: a source changed meanwhile is converted again next time
        audio, source_rate = load_audio(source)
        if audio.size == 0:
            return 0, "empty (0 samples)", source_rate
        rms = level(audio)
        if rms < SILENCE_RMS:
            why = "; its channels cancel out when mixed to mono" if channels_cancel(source, SILENCE_RMS) else ""
            return 0, f"silent (RMS {rms:.1e} below {SILENCE_RMS:g}, about its mean{why})", source_rate
        audio = resample(audio, source_rate, sample_rate)
        problem = _duration_problem(len(audio), sample_rate, min_duration, max_duration)
        if problem:
            return len(audio), problem, source_rate
        save_wav(cache, normalize_level(audio), sample_rate)
        os.utime(cache, ns=(made_from.st_atime_ns, made_from.st_mtime_ns))
        return len(audio), None, source_rate
    except UserError as exc:
        return 0, str(exc), 0
    except Exception as exc:  # any other failure on one file must not stop the run
        return 0, f"conversion failed ({type(exc).__name__}: {exc})", 0


def _header_rate(source: str) -> int:
    """A source's sample rate from its header (0 when it cannot be read)."""
    try:
        return int(sf.info(sound_file(source)).samplerate)
    except (OSError, RuntimeError, ValueError):
        return 0


def _cached_frames(cache: str, source: str, sample_rate: int) -> int | None:
    """Length of a usable cached wav (made from this source: the same modification time; right
    rate, mono), else None. A source replaced by another file (even an older one) is converted again."""
    try:
        if os.stat(cache).st_mtime_ns != os.stat(source).st_mtime_ns:
            return None
        info = sf.info(sound_file(cache))
    except (OSError, RuntimeError):  # missing file, or unreadable cache (soundfile error)
        return None
    if info.samplerate != sample_rate or info.channels != 1 or info.frames == 0:
        return None
    return int(info.frames)


def _duration_problem(frames: int, sample_rate: int, min_duration: float, max_duration: float | None) -> str | None:
    seconds = frames / sample_rate
    if frames == 0:
        return "empty after resampling (0 samples)"
    if seconds < min_duration:
        return f"too short ({seconds:.3f} s < min_duration {min_duration:g} s)"
    if max_duration is not None and seconds > max_duration:
        return f"too long ({seconds:.1f} s > max_duration {max_duration:g} s)"
    return None


def _run(tasks: list, num_workers: int | None, progress: bool, desc: str) -> list[tuple[int, str | None, int]]:
    """Run :func:`_convert` over ``tasks`` (in order) with a progress bar, in parallel if asked."""
    workers = (os.cpu_count() or 1) if num_workers is None else num_workers
    workers = min(workers, len(tasks))
    with tqdm(total=len(tasks), desc=desc, unit="file", disable=not progress) as bar:
        if workers <= 1:
            results = []
            for task in tasks:
                results.append(_convert(task))
                bar.update()
            return results
        chunksize = max(1, min(64, len(tasks) // (workers * 8)))
        with ProcessPoolExecutor(max_workers=workers) as pool:
            results = []
            for result in pool.map(_convert, tasks, chunksize=chunksize):
                results.append(result)
                bar.update()
            return results


# ----------------------------------------------------------------------------------------------
# Splits


def _unit_hash(seed: int, key: str) -> float:
    """A number in [0, 1) fixed by (seed, key)."""
    digest = hashlib.sha1(f"{seed}:{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64


def _hash_split(keys: Iterable[str], seed: int, *, test_fraction: float, valid_fraction: float) -> dict[str, str]:
    """Place each key by its hash: [0, test) -> test, [test, test+valid) -> valid, else train.

    Then make sure train is not empty, and that each split with a non-zero fraction holds at least
    one key when one can be moved from train while leaving train non-empty (the train key with the
    smallest hash moves, so small corpora stay reproducible too).
    """
    score = {k: _unit_hash(seed, k) for k in keys}
    placed = {}
    for key, x in score.items():
        placed[key] = "test" if x < test_fraction else "valid" if x < test_fraction + valid_fraction else "train"
    if score and "train" not in placed.values():
        placed[max(score, key=score.__getitem__)] = "train"
    for name, fraction in (("test", test_fraction), ("valid", valid_fraction)):
        train = [k for k in placed if placed[k] == "train"]
        if fraction > 0 and name not in placed.values() and len(train) > 1:
            placed[min(train, key=score.__getitem__)] = name
    return placed


# ----------------------------------------------------------------------------------------------
# Checks and files


def _check_arguments(
    sample_rate, split_by, valid_fraction, test_fraction, heldout_speakers, min_duration, max_duration, num_workers
) -> None:
    if not isinstance(sample_rate, (int, np.integer)) or not MIN_SAMPLE_RATE <= sample_rate <= MAX_SAMPLE_RATE:
        raise UserError(
            f"sample_rate={sample_rate!r} is not valid; give a whole number of hertz from {MIN_SAMPLE_RATE} to "
            f"{MAX_SAMPLE_RATE}, such as 16000."
        )
    if split_by not in SPLIT_MODES:
        raise UserError(f"split_by='{split_by}' is not valid; use one of: {', '.join(SPLIT_MODES)}.")
    if not (0 <= valid_fraction < 1 and 0 <= test_fraction < 1 and valid_fraction + test_fraction < 1):
        raise UserError(
            f"valid_fraction={valid_fraction} and test_fraction={test_fraction} must "
            "each be in [0, 1) and sum to less than 1."
        )
    if heldout_speakers is not None and split_by != "speaker":
        raise UserError(
            "`heldout_speakers` only applies when `split_by` is 'speaker'; set `split_by` to speaker or drop "
            "`heldout_speakers`."
        )
    finite = math.isfinite(min_duration) and (max_duration is None or math.isfinite(max_duration))
    if not finite or min_duration < 0 or (max_duration is not None and max_duration <= min_duration):
        raise UserError(
            f"min_duration={min_duration} and max_duration={max_duration} are not "
            "valid; use 0 <= min_duration < max_duration (seconds)."
        )
    if num_workers is not None and num_workers < 0:
        raise UserError(f"num_workers={num_workers} is not valid; use 0 or more (0 or 1 converts in this process).")


def _check_speakers(heldout_speakers: Sequence[str], sources: Sequence[SourceUtterance], corpus_dir: Path) -> None:
    known = {source_speaker(u) for u in sources}
    unknown = sorted(set(heldout_speakers) - known)
    if unknown:
        examples = ", ".join(sorted(known)[:10]) + (", ..." if len(known) > 10 else "")
        raise UserError(
            f"Held-out speaker(s) {', '.join(unknown)} are not in {corpus_dir}; its speakers include: {examples}."
        )
    if known and known <= set(heldout_speakers):  # found before any file is converted
        raise UserError(
            "`heldout_speakers` lists every speaker of the corpus; leave at least one speaker for training."
        )


def _check_apart(corpus_dir: Path, out_dir: Path) -> None:
    """UserError unless the output folder lies outside the corpus and the corpus outside it."""
    if out_dir.exists() and not out_dir.is_dir():
        raise UserError(f"{out_dir} is a file; give a folder for the prepared corpus.")
    if not corpus_dir.is_dir():
        return  # find_utterances says so in its own words
    if overlapping(corpus_dir, out_dir):
        raise UserError(
            f"Output folder {out_dir} and corpus folder {corpus_dir} overlap; choose a separate output folder, "
            "outside the corpus and not around it, so that prepare never reads back or deletes the corpus's files."
        )


def _check_sources_apart(sources: list[SourceUtterance], out_dir: Path) -> None:
    """UserError when a source file lies in the output folder once links are resolved (a link in
    the corpus that leads there): prepare would read back its own output."""
    out = Path(os.path.realpath(out_dir))
    for utt in sources:
        if Path(os.path.realpath(source_path(utt))).is_relative_to(out):
            raise UserError(
                f"{source_path(utt)} lies in the output folder {out_dir} (through a link in the corpus); "
                "remove the link or choose another output folder."
            )


OWN_FILES = ("manifest.jsonl", "prepare.json", "speakers.tsv", "rejects.tsv")
"""The files ``prepare`` writes in its output folder, besides ``wavs/``."""

CACHE_MARK = PREPARED_MARK
"""Beside ``wavs/``: the corpus its cached audio comes from; marks ``wavs/`` as ``prepare``'s own."""

SOURCES_RECORD = ".vqspeech-sources.json"
"""Beside ``wavs/``: each cached utterance's source file as it was converted (path, size,
modification time, inode, status-change time), so that a source replaced by another file is
converted again even when the two share a modification time (files unpacked from one archive; two
files swapped with mv; a file rewritten in place by a tool that restores its times)."""


def _source_stamp(path: str) -> list:
    try:
        stat = os.stat(path)
    except OSError:
        return [path]
    # ctime: any write changes it and utime cannot set it back (an in-place rewrite that keeps mtime)
    return [path, stat.st_size, stat.st_mtime_ns, stat.st_ino, stat.st_ctime_ns]


def _forget_replaced_sources(out_dir: Path, sources: Sequence[SourceUtterance]) -> set[str]:
    """Remove the cached audio of every utterance whose source is not the file it was made from
    (by :data:`SOURCES_RECORD`; an utterance the record lacks counts as replaced) or that left the
    corpus (recorded, no longer found), then record the sources as they are now. The record is
    written before any conversion, so an interrupted run leaves either a missing cache file or one
    made from the recorded source. Returns the ids whose source is new or replaced."""
    previous = read_json_object(out_dir / SOURCES_RECORD) or {}
    now = {u.id: _source_stamp(source_path(u)) for u in sources}
    replaced = [utt_id for utt_id, stamp in now.items() if previous.get(utt_id) != stamp]
    _remove_cached(out_dir / "wavs", [*replaced, *(utt_id for utt_id in previous if utt_id not in now)])
    write_text_atomic(out_dir / SOURCES_RECORD, json.dumps(now) + "\n")
    return set(replaced)


def _previous_alignments(out_dir: Path, settings: dict, sources: list[SourceUtterance]) -> dict[str, str]:
    """id -> alignment file of the previous manifest's lines that have one (``align --manifest``
    adds them), when it was prepared from the same corpus and the utterance's transcript is the
    same now (an alignment is of its words); empty otherwise."""
    previous = read_json_object(out_dir / "prepare.json")
    if previous is None or any(previous.get(k) != settings[k] for k in _CORPUS_KEYS):
        return {}
    try:
        lines = read_manifest(out_dir / "manifest.jsonl")
    except UserError:  # a damaged manifest keeps nothing
        return {}
    text = {u.id: u.text for u in sources}
    return {u.id: u.alignment for u in lines if u.alignment and u.id in text and text[u.id] == u.text}


def _check_previous_run(out_dir: Path, settings: dict, overwrite: bool, ids: list[str]) -> None:
    """Refuse to replace a manifest built with other settings unless ``overwrite``; with it, remove
    the previous run's files (its own files by name, and the cached audio of the corpus it read when
    the corpus is another)."""
    manifest = out_dir / "manifest.jsonl"
    if not manifest.exists():
        foreign = [name for name in OWN_FILES if (out_dir / name).exists()]
        if foreign and not (out_dir / CACHE_MARK).is_file():  # not left by an interrupted prepare
            raise UserError(
                f"{out_dir} holds {foreign[0]}, which `vqspeech prepare` did not write there; choose a new "
                "or empty output folder, or move that file away."
            )
        return
    try:
        previous = json.loads((out_dir / "prepare.json").read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError):
        previous = None
    if not isinstance(previous, dict):  # not a record prepare wrote
        previous = None
    if previous == settings:
        return
    if not overwrite:
        if previous is None:
            raise UserError(
                f"{manifest} exists but has no readable prepare.json beside it; pass "
                "`overwrite=True` to replace it, or choose another output folder."
            )
        changed = ", ".join(
            f"{k} {previous.get(k)!r} -> {settings[k]!r}" for k in settings if previous.get(k) != settings[k]
        )
        raise UserError(
            f"{manifest} was prepared with different settings ({changed}); pass "
            "`overwrite=True` to rebuild it, or choose another output folder."
        )
    try:
        previous_ids = [json.loads(line)["id"] for line in manifest.read_text(encoding="utf-8").split("\n") if line]
    except (OSError, ValueError, RecursionError, KeyError, TypeError):
        previous_ids = []
    for name in OWN_FILES:
        (out_dir / name).unlink(missing_ok=True)
    if previous is None or any(previous.get(k) != settings[k] for k in _CORPUS_KEYS):
        # cached audio of another corpus or microphone would pass the freshness check: drop it
        _remove_cached(out_dir / "wavs", [*previous_ids, *ids])


_CORPUS_KEYS = ("layout", "corpus_dir", "layout_options")


def _remove_cached(wav_dir: Path, ids: list[str]) -> None:
    """Remove ``wavs/<id>.wav`` of these utterances (the files prepare writes there), nothing else."""
    for utt_id in ids:
        if is_safe_name(utt_id):
            (wav_dir / f"{utt_id}.wav").unlink(missing_ok=True)


def _check_cache_is_ours(out_dir: Path) -> None:
    """Refuse a ``wavs/`` that is a link, or that holds files prepare did not write (no mark, and
    no prepare.json of an earlier run beside it)."""
    wav_dir = out_dir / "wavs"
    ours = (out_dir / CACHE_MARK).is_file() or (out_dir / "prepare.json").is_file()
    if wav_dir.is_symlink():
        raise UserError(f"{wav_dir} is a link; give an output folder whose wavs/ is its own.")
    if wav_dir.is_dir() and not ours and any(p for p in wav_dir.iterdir() if not p.name.startswith(".")):
        raise UserError(
            f"{wav_dir} holds files that `vqspeech prepare` did not write; choose another output folder, "
            "or move those files away."
        )


def _claim_cache(out_dir: Path, settings: dict) -> None:
    """Make ``wavs/`` the cache of this corpus (checked by :func:`_check_cache_is_ours`): mark it."""
    (out_dir / "wavs").mkdir(parents=True, exist_ok=True)
    corpus = {k: settings[k] for k in _CORPUS_KEYS}
    write_text_atomic(out_dir / CACHE_MARK, json.dumps(corpus, indent=2) + "\n")


def _speaker_rows(utts: Sequence[Utterance]) -> list[tuple]:
    """speakers.tsv rows: (speaker, num_utterances, seconds, splits as "train,valid,test")."""
    count: dict[str, int] = {}
    seconds: dict[str, float] = {}
    splits: dict[str, set[str]] = {}
    for u in utts:
        count[u.speaker] = count.get(u.speaker, 0) + 1
        seconds[u.speaker] = seconds.get(u.speaker, 0.0) + u.duration
        splits.setdefault(u.speaker, set()).add(u.split)
    return [
        (spk, count[spk], f"{seconds[spk]:.2f}", ",".join(s for s in SPLITS if s in splits[spk]))
        for spk in sorted(count)
    ]


def _write_tsv(path: Path, header: Sequence[str], rows: Iterable[Sequence]) -> None:
    lines = ["\t".join(header)]
    for row in rows:
        lines.append("\t".join(" ".join(str(value).split()) for value in row))
    write_text_atomic(path, "\n".join(lines) + "\n")
