"""Forced phone alignment with pocketsphinx: transcript + audio -> TextGrid (``words``, ``phones``).

For corpora that ship transcripts but no alignments (VCTK, LibriSpeech, FSDD). Everything runs
offline: pocketsphinx carries its US English acoustic model and CMU dictionary in the wheel.

Alignment is two decodes of the same 16 kHz audio (pocketsphinx does not work at 8 kHz): the first
with the transcript as the alignment text (word level), the second in sub-word alignment mode
(phone level; 10 ms frames, 30 ms minimum phone). pocketsphinx sometimes raises, or returns a path
without the transcript's words, so each utterance is tried with padding, wider beams and a
louder dither (:data:`ATTEMPTS`), and a result counts only if the transcript's words come out in
order; when the phone pass cannot finish, each word's phones are aligned inside its word span.
Words missing from the dictionary get a pronunciation from espeak-ng, folded onto ARPAbet.

``align_corpus`` writes into ``OUT_DIR``: ``<id>.TextGrid`` per aligned utterance (tiers ``words``
and ``phones``; phone labels are pocketsphinx's ARPAbet plus ``sil``), ``failed.tsv``
(``id  file  reason``) and ``align.json`` (settings, summary, and what each TextGrid was made
from). Files already aligned are kept while their audio and transcript are unchanged, so an
interrupted run continues where it stopped and an edited transcript is aligned again.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import time
from collections.abc import Collection, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
from pocketsphinx import Decoder
from tqdm import tqdm

from ..audio import load_audio, resample, sound_file
from ..errors import UserError, first_line
from ..fileio import (
    ALIGN_MARK,
    FolderLock,
    file_stamp,
    inside,
    is_safe_name,
    overlapping,
    user_path,
    write_text_atomic,
)
from . import espeak
from .alignments import Segment, write_textgrid
from .corpora import SourceUtterance, find_utterances
from .manifest import read_manifest, set_alignments
from .phones import PhoneFolding

ALIGN_RATE = 16000
"""pocketsphinx's acoustic model rate; audio is resampled to it."""

FRAME_SECONDS = 0.01
"""pocketsphinx frame shift."""

LSB = 1.0 / 32768.0
"""One 16-bit step."""

WIDE_BEAMS = {"beam": 1e-80, "wbeam": 1e-60, "pbeam": 1e-80}

ATTEMPTS: tuple[tuple[float, str, float], ...] = (
    (0.0, "default", LSB),
    (0.1, "default", LSB),
    (0.1, "default", 1e-3),
    (0.3, "wide", 1e-3),
    (0.1, "wide", 3e-3),
    (0.0, "wide", LSB),
)
"""(seconds of zero padding on both sides, beam setting, dither) tried in order until one aligns.

The dither is the standard deviation of fixed-seed noise added before decoding: exact digital
silence (synthetic speech, zero padding) makes pocketsphinx's features degenerate and its
alignment search end in silence; a louder dither (-60 dBFS) rescues most of the utterances whose
last words the first attempts lose."""

_NON_WORDS = {"<s>", "</s>", "<sil>"}
_WORD_CHARS = re.compile(r"[^\w']+|_")  # any script's letters stay in their word: "zéro" is one word


@dataclass
class AlignSummary:
    """What :func:`align_corpus` did. ``coverage`` = aligned / total."""

    total: int
    aligned: int
    failed: int
    reused: int
    coverage: float
    seconds_per_file: float
    """Wall-clock seconds per utterance aligned in this run (all workers together)."""
    out_dir: str


class AlignmentFailed(Exception):
    """pocketsphinx found no alignment containing the transcript's words."""


def transcript_words(text: str) -> list[str]:
    """Lower-case words of a transcript: punctuation dropped, apostrophes inside words kept.

    ``"Please call Stella, ask her..."`` -> ``["please", "call", "stella", "ask", "her"]``.
    """
    words = _WORD_CHARS.sub(" ", text.lower()).split()
    return [w.strip("'") for w in words if w.strip("'")]


class PocketsphinxAligner:
    """Phone-level forced alignment of one utterance at a time (one instance per process)."""

    def __init__(self):
        self._decoders: dict[str, Decoder] = {}
        self._added: dict[str, str | None] = {}

    def align(self, audio: np.ndarray, sample_rate: int, text: str) -> tuple[list[Segment], list[Segment], int]:
        """Align ``audio`` [T] (any rate; resampled to 16 kHz) to ``text``.

        Returns (words, phones, attempt index); times in seconds within the unpadded audio. Raises
        AlignmentFailed with the reason when no attempt yields the transcript's words.
        """
        words = transcript_words(text)
        if not words:
            raise AlignmentFailed("the transcript has no words")
        audio = resample(np.asarray(audio, dtype=np.float32), sample_rate, ALIGN_RATE)
        duration = len(audio) / ALIGN_RATE
        missing = [w for w in words if not (re.fullmatch(r"[a-z0-9']+", w) and self._pronounceable(w))]
        if missing:
            raise AlignmentFailed(f"no pronunciation for: {' '.join(missing)}")
        last = "no attempt ran"
        for attempt, (pad, beams, dither) in enumerate(ATTEMPTS):
            try:
                result = self._align_once(audio, words, pad, beams, dither)
            except AlignmentFailed as exc:
                last = str(exc)
                continue
            word_segs, phone_segs = (_shift(segs, pad, duration) for segs in result)
            return word_segs, phone_segs, attempt
        raise AlignmentFailed(f"{len(ATTEMPTS)} attempts failed (last: {last})")

    def _align_once(
        self, audio: np.ndarray, words: list[str], pad: float, beams: str, dither: float
    ) -> tuple[list[Segment], list[Segment]]:
        """One attempt: word pass, then phone pass (word by word if the whole-utterance one fails)."""
        decoder = self._decoder(beams)
        pcm = pcm16(audio, pad, dither)
        try:
            decoder.set_align_text(" ".join(words))
            decode_pcm(decoder, pcm)
            segments = decoder.seg()
        except RuntimeError as exc:
            raise AlignmentFailed(f"pocketsphinx: {first_line(exc)}") from None
        word_frames = [(word_name(s.word), s.start_frame, s.end_frame + 1) for s in segments or [] if is_word(s.word)]
        found = [name for name, _, _ in word_frames]
        if found != words:
            raise AlignmentFailed(f"words came out as '{' '.join(found)}'")
        try:
            decoder.set_alignment()
            decode_pcm(decoder, pcm)
            phone_frames = _phone_frames(decoder.get_alignment(), words)
        except (RuntimeError, AlignmentFailed):
            # pocketsphinx's sub-word pass sometimes cannot finish a long utterance: align the
            # phones of each word inside that word's span from the word pass instead.
            phone_frames = self._phones_word_by_word(decoder, pcm, word_frames)
        word_segs = [Segment(a * FRAME_SECONDS, b * FRAME_SECONDS, name) for name, a, b in word_frames]
        phone_segs = [Segment(a * FRAME_SECONDS, b * FRAME_SECONDS, label) for label, a, b in phone_frames]
        return word_segs, phone_segs

    def _phones_word_by_word(
        self, decoder, pcm: bytes, word_frames: list[tuple[str, int, int]]
    ) -> list[tuple[str, int, int]]:
        """Phones of each word aligned within its own span; the time between words is silence."""
        bytes_per_frame = 2 * int(ALIGN_RATE * FRAME_SECONDS)
        total = len(pcm) // bytes_per_frame
        phones, cursor = [], 0
        for name, start, end in word_frames:
            if start > cursor:
                phones.append(("sil", cursor, start))
            try:
                decoder.set_align_text(name)
                chunk = pcm[start * bytes_per_frame : end * bytes_per_frame]
                decode_pcm(decoder, chunk)
                decoder.set_alignment()
                decode_pcm(decoder, chunk)
                inner = _phone_frames(decoder.get_alignment(), [name])
            except RuntimeError as exc:
                raise AlignmentFailed(f"pocketsphinx (phones of '{name}'): {first_line(exc)}") from None
            inner = [
                (label, a + start, min(b + start, end)) for label, a, b in inner if label != "sil" and a + start < end
            ]
            phones.extend(inner)
            cursor = inner[-1][2] if inner else start
        if cursor < total:
            phones.append(("sil", cursor, total))
        return phones

    def _decoder(self, beams: str) -> Decoder:
        if beams not in self._decoders:
            options = WIDE_BEAMS if beams == "wide" else {}
            decoder = Decoder(samprate=ALIGN_RATE, lm=None, loglevel="FATAL", **options)
            for word, phones in self._added.items():
                if phones:
                    decoder.add_word(word, phones, True)
            self._decoders[beams] = decoder
        return self._decoders[beams]

    def _pronounceable(self, word: str) -> bool:
        """True when the dictionary has ``word``, after adding an espeak pronunciation if needed."""
        decoder = self._decoder("default")
        if decoder.lookup_word(word) is not None:
            return True
        if word not in self._added:
            self._added[word] = espeak_pronunciation(word)
            if self._added[word]:
                for d in self._decoders.values():
                    d.add_word(word, self._added[word], True)
        return bool(self._added[word])


def espeak_pronunciation(word: str) -> str | None:
    """ARPAbet phones (upper case, space separated) for ``word`` from espeak-ng, or None.

    espeak reads any spelling (names, numbers such as ``42``); its phonemes are folded onto the
    ARPAbet classes with the ``espeak`` table of :mod:`vqspeech.data.phones`.
    """
    folding = PhoneFolding.load("espeak")
    try:
        result = espeak.synthesize(word, voice="en-us")
    except UserError:
        return None
    folded = [folding.fold(label) for _, _, label in result.phones]
    phones = [p.upper() for p in folded if p and p not in ("sil", "spn")]
    return " ".join(phones) or None


def is_word(name: str) -> bool:
    """False for pocketsphinx's sentence markers, silence and fillers (``+NSN+``, ``[NOISE]``)."""
    return name not in _NON_WORDS and not name.startswith(("+", "["))


def word_name(name: str) -> str:
    """Dictionary entry -> word: ``zero(2)`` (second pronunciation) -> ``zero``."""
    return re.sub(r"\(\d+\)$", "", name)


def _phone_frames(alignment, words: list[str]) -> list[tuple[str, int, int]]:
    """(label, start frame, end frame) of every phone of a sub-word alignment; raises
    AlignmentFailed unless its words are ``words``. pocketsphinx's ``SIL`` becomes ``sil``."""
    if alignment is None:
        raise AlignmentFailed("pocketsphinx returned no alignment")
    phones, found = [], []
    for word in alignment:
        if is_word(word.name):
            found.append(word_name(word.name))
        for ph in word:
            phones.append(("sil" if ph.name == "SIL" else ph.name, ph.start, ph.start + ph.duration))
    if found != words:
        raise AlignmentFailed(f"phones came out for '{' '.join(found)}'")
    return phones


def pcm16(audio: np.ndarray, pad_seconds: float, dither: float, seed: int = 0) -> bytes:
    """16 kHz float audio -> 16-bit PCM bytes for pocketsphinx, padded with ``pad_seconds`` of
    silence on each side and given fixed-seed Gaussian dither (exact digital silence breaks it)."""
    pad_samples = int(round(pad_seconds * ALIGN_RATE))
    padded = np.pad(np.asarray(audio, dtype=np.float64), (pad_samples, pad_samples))
    padded += dither * np.random.default_rng(seed).standard_normal(len(padded))
    return (np.clip(padded, -1.0, 1.0) * 32767.0).astype("<i2").tobytes()


def decode_pcm(decoder, pcm: bytes) -> None:
    """One whole utterance through a pocketsphinx decoder (its search decides what comes out)."""
    decoder.start_utt()
    decoder.process_raw(pcm, full_utt=True)
    decoder.end_utt()


def _shift(segments: list[Segment], pad: float, duration: float) -> list[Segment]:
    """Undo ``pad`` seconds of leading padding and clip to [0, duration]; drop empty segments."""
    out = []
    for seg in segments:
        start = min(max(seg.start - pad, 0.0), duration)
        end = min(max(seg.end - pad, 0.0), duration)
        if end > start:
            out.append(Segment(round(start, 6), round(end, 6), seg.label))
    return out


# ----------------------------------------------------------------------------------------------
# Corpus level


_WORKER: PocketsphinxAligner | None = None


def _align_item(job: tuple[SourceUtterance, str]) -> tuple[str, str | None, int]:
    """Align one utterance and write its TextGrid (the job's path); returns (id, failure reason or
    None, attempt)."""
    item, out = job
    global _WORKER
    if _WORKER is None:
        _WORKER = PocketsphinxAligner()
    if not item.text:
        return item.id, "no transcript", -1
    try:
        audio, sample_rate = load_audio(str(item.path))
        if audio.size == 0:
            return item.id, "empty audio", -1
        words, phones, attempt = _WORKER.align(audio, sample_rate, item.text)
        write_textgrid(out, {"words": words, "phones": phones}, len(audio) / sample_rate)
        return item.id, None, attempt
    except (AlignmentFailed, UserError) as exc:
        return item.id, str(exc), -1
    except Exception as exc:  # one bad file must not stop a corpus run
        return item.id, f"alignment failed ({type(exc).__name__}: {first_line(exc)})", -1


def align_corpus(
    source: str | os.PathLike,
    out_dir: str | os.PathLike,
    layout: str | None = None,
    *,
    manifest: str | os.PathLike | None = None,
    num_workers: int | None = None,
    limit: int | None = None,
    overwrite: bool = False,
    progress: bool = True,
    **layout_options,
) -> AlignSummary:
    """Force-align every utterance with a transcript and write ``OUT_DIR/<id>.TextGrid``.

    ``source`` is a corpus folder read with ``layout`` (and its options, e.g. ``mic``), or a
    manifest (``manifest.jsonl`` or its folder, with ``layout=None``) whose ``text`` fields give
    the transcripts. ``manifest``, when given, is rewritten so each of its utterances with an
    alignment in ``out_dir`` points at it. Existing TextGrids are reused unless ``overwrite``.
    Raises UserError for a missing source, an unknown layout, or an ``out_dir`` aligned from a
    different source (unless ``overwrite``).
    """
    if limit is not None and limit < 1:
        raise UserError(f"`limit` must be at least 1, not {limit}.")
    target_ids = None if manifest is None else {u.id for u in read_manifest(Path(manifest))}  # checked first
    source = user_path(source)
    out_dir = Path(out_dir)
    if layout is not None and overlapping(out_dir, source):  # a corpus may ship TextGrids of its own
        raise UserError(
            f"{out_dir} overlaps the corpus {source}; write the alignments to a folder of their own, so that "
            "no file of the corpus is replaced."
        )
    manifest_folder = out_dir
    manifests = [Path(m) for m in (source if layout is None else None, manifest) if m is not None]
    for given in manifests:
        folder = given if given.is_dir() else given.parent
        if os.path.realpath(folder) == os.path.realpath(out_dir):
            raise UserError(
                f"{out_dir} is the folder of the manifest {given}; write the alignments to a folder of their own."
            )
    if manifest is not None:
        manifest_folder = Path(manifest) if Path(manifest).is_dir() else Path(manifest).parent
    items, settings = _items(source, layout, layout_options)
    if limit is not None:
        items = items[:limit]
    _check_previous(out_dir, settings, overwrite)
    if target_ids is not None and items and not target_ids & {it.id for it in items}:
        raise UserError(
            f"None of the utterances of {source} is in the manifest {manifest}, so no alignment could be attached "
            "to it; give the manifest prepared from this corpus."
        )
    if manifest is not None:
        _check_same_recordings(items, Path(manifest))
    if items and not any(it.text for it in items):
        raise UserError(
            f"None of the {len(items)} utterances of {source} has a transcript, and align needs the words; "
            "use a layout that reads transcripts, or a manifest whose lines have text."
        )
    earlier = _previous_inputs(out_dir)
    previous = {} if overwrite else earlier
    inputs = {it.id: _fingerprint(it) for it in items}

    # the manifest's folder is a prepared corpus: align rewrites its manifest there, by design
    manifest_lock = FolderLock(manifest_folder, "align", enabled=manifest is not None, guard=False)
    with FolderLock(out_dir, "align"), manifest_lock:
        # align.json marks the folder as this command's from the start (a killed run can be rerun)
        # (with the inputs of the TextGrids it may keep: a killed run's rerun reuses them)
        write_text_atomic(
            out_dir / ALIGN_MARK, json.dumps(dict(settings, summary=None, inputs=previous), indent=2) + "\n"
        )
        (out_dir / PROGRESS_LOG).unlink(missing_ok=True)  # its entries are in align.json now
        if overwrite:  # replace the earlier run's alignments: none of them may be attached as this run's
            _remove_grids(out_dir, [i for i in earlier if i not in inputs])
        jobs = [(it, str(inside(out_dir, f"{it.id}.TextGrid"))) for it in items]
        # a TextGrid is kept only when the audio and transcript it was made from are unchanged
        todo = [job for job in jobs if not (Path(job[1]).is_file() and previous.get(job[0].id) == inputs[job[0].id])]
        for _, grid in todo:  # a stale TextGrid must not outlive a failed realignment
            Path(grid).unlink(missing_ok=True)
        reused = len(items) - len(todo)
        failures: dict[str, str] = {}
        attempts: dict[str, int] = {}
        start = time.perf_counter()
        workers = max(1, min((os.cpu_count() or 1) if num_workers is None else num_workers, len(todo)))
        results: Iterator[tuple[str, str | None, int]]
        with tqdm(total=len(todo), desc="align", unit="file", disable=not progress) as bar:
            if workers == 1:
                results = map(_align_item, todo)
            else:
                pool = ProcessPoolExecutor(max_workers=workers)
                results = pool.map(_align_item, todo, chunksize=max(1, min(16, len(todo) // (8 * workers))))
            with open(out_dir / PROGRESS_LOG, "a", encoding="utf-8") as log:
                for utt_id, reason, attempt in results:
                    if reason is None:
                        attempts[str(attempt)] = attempts.get(str(attempt), 0) + 1
                        # what this TextGrid was made from, at once: a killed run's rerun reuses it
                        log.write(json.dumps({"id": utt_id, "inputs": inputs[utt_id]}) + "\n")
                        log.flush()
                    else:
                        failures[utt_id] = reason
                    bar.update()
            if workers > 1:
                pool.shutdown()
        elapsed = time.perf_counter() - start

        out_dir.mkdir(parents=True, exist_ok=True)
        by_id = {it.id: it for it in items}
        rows = ["id\tfile\treason"] + [f"{i}\t{by_id[i].path}\t{r}" for i, r in sorted(failures.items())]
        write_text_atomic(out_dir / "failed.tsv", "\n".join(rows) + "\n")
        aligned = sum(Path(out).is_file() for _, out in jobs)
        processed = len(todo) - len(failures)
        summary = AlignSummary(
            total=len(items),
            aligned=aligned,
            failed=len(failures),
            reused=reused,
            coverage=round(aligned / len(items), 4) if items else 0.0,
            seconds_per_file=round(elapsed / processed, 4) if processed else 0.0,
            out_dir=str(out_dir),
        )
        kept = {i: inputs[i] for i in inputs if i not in failures}
        kept = {**{i: v for i, v in previous.items() if i not in inputs}, **kept}
        record = dict(settings, summary=asdict(summary), attempts=attempts, workers=workers, inputs=kept)
        write_text_atomic(out_dir / ALIGN_MARK, json.dumps(record, indent=2) + "\n")
        (out_dir / PROGRESS_LOG).unlink(missing_ok=True)  # align.json holds it all now
        if manifest is not None:
            attach_alignments(manifest, out_dir, redone=[it.id for it in items])
    return summary


def _remove_grids(out_dir: Path, ids: Collection[str]) -> None:
    """Remove ``out_dir/<id>.TextGrid`` of these ids (TextGrids an earlier run recorded), nothing else."""
    for utt_id in ids:
        if is_safe_name(utt_id):
            (out_dir / f"{utt_id}.TextGrid").unlink(missing_ok=True)


def attach_alignments(manifest: str | os.PathLike, align_dir: str | os.PathLike, redone: Collection[str] = ()) -> int:
    """Point each utterance of ``manifest`` at ``align_dir/<id>.TextGrid`` when that file exists
    and, in a folder `vqspeech align` wrote, its ``align.json`` records it (what it was made from):
    another file there is no alignment of this corpus.

    Utterances that already have an alignment shipped by the corpus keep it; those of ``redone``
    (aligned by this run) whose alignment an earlier `align` run wrote take this run's result, or
    none when it failed (:func:`set_alignments`). Rewrites the manifest atomically; returns the
    number of utterances that now have an alignment.
    """
    align_dir = Path(align_dir)
    grids = {p.stem: str(p.resolve()) for p in align_dir.glob("*.TextGrid") if not p.name.startswith(".")}
    if (align_dir / ALIGN_MARK).is_file():
        recorded = _previous_inputs(align_dir)
        grids = {i: g for i, g in grids.items() if i in recorded}
    return set_alignments(manifest, grids, redone)


DURATION_TOLERANCE = 0.05
"""Seconds by which a corpus file and the manifest line of the same id may differ (resampling)."""


def _check_same_recordings(items: list[SourceUtterance], manifest: Path) -> None:
    """UserError when an utterance of the corpus lasts otherwise than the manifest line of its id:
    the manifest was prepared from other recordings (another release of the corpus, other takes),
    and its lines must not point at alignments of audio they do not hold."""
    durations = {u.id: u.duration for u in read_manifest(manifest)}
    for item in items:
        if item.id not in durations or item.path is None:
            continue
        try:
            seconds = sf.info(sound_file(item.path)).duration
        except (RuntimeError, OSError, ValueError):  # unreadable: its alignment fails and says why
            continue
        if abs(seconds - durations[item.id]) > DURATION_TOLERANCE:
            raise UserError(
                f"{item.path} lasts {seconds:.2f} s, but the utterance {item.id} of {manifest} lasts "
                f"{durations[item.id]:.2f} s: the manifest was prepared from other recordings; give the corpus "
                "it was prepared from."
            )


def _items(source: Path, layout: str | None, layout_options: dict) -> tuple[list[SourceUtterance], dict[str, object]]:
    """The utterances to align, and the settings that identify this source."""
    settings: dict[str, object]
    if layout is None:
        settings = {"source": str(source.resolve()), "layout": None}
        return [SourceUtterance(u.id, u.audio, u.speaker, u.text) for u in read_manifest(source)], settings
    utts, _ = find_utterances(source, layout, **layout_options)
    settings = {
        "source": str(source.resolve()),
        "layout": layout,
        "layout_options": dict(sorted(layout_options.items())),
    }
    return utts, settings


def _fingerprint(item: SourceUtterance) -> list:
    """[audio size, audio mtime in ns, transcript hash]: what an utterance's TextGrid was made from."""
    audio: list[int | None] = [None, None]
    if item.path is not None:
        with contextlib.suppress(OSError, ValueError):
            audio = [*file_stamp(item.path)]
    return [*audio, hashlib.sha1((item.text or "").encode("utf-8", "surrogatepass")).hexdigest()[:16]]


PROGRESS_LOG = ".align-progress.jsonl"
"""A running `align` appends each finished TextGrid's inputs here (align.json takes them at the end)."""


def _previous_inputs(out_dir: Path) -> dict[str, list]:
    """The inputs each TextGrid of an earlier run was made from (its align.json, and the progress
    log of a run killed before it wrote align.json at the end), or {}."""
    try:
        inputs = json.loads((out_dir / ALIGN_MARK).read_text(encoding="utf-8")).get("inputs")
    except (OSError, ValueError, RecursionError, AttributeError):
        inputs = {}
    known = {k: v for k, v in inputs.items() if isinstance(v, list)} if isinstance(inputs, dict) else {}
    try:
        lines = (out_dir / PROGRESS_LOG).read_text(encoding="utf-8").splitlines()
    except (OSError, ValueError):
        lines = []
    for line in lines:  # the last line of a killed run may be cut short
        try:
            entry = json.loads(line)
        except (ValueError, RecursionError):
            continue
        if isinstance(entry, dict) and isinstance(entry.get("id"), str) and isinstance(entry.get("inputs"), list):
            known[entry["id"]] = entry["inputs"]
    return known


def _check_previous(out_dir: Path, settings: dict, overwrite: bool) -> None:
    """UserError for an ``out_dir`` aligned from another source (unless ``overwrite``), or holding
    TextGrids that no `vqspeech align` run wrote (no ``align.json``: another aligner's, a corpus's)."""
    record = out_dir / ALIGN_MARK
    if not record.is_file():
        if out_dir.is_dir() and any(p.suffix == ".TextGrid" for p in out_dir.iterdir()):
            raise UserError(
                f"{out_dir} holds TextGrids that `vqspeech align` did not write (no align.json); "
                "choose another output folder."
            )
        return
    if overwrite:
        return
    try:
        previous = json.loads(record.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError):
        return
    if not isinstance(previous, dict):
        raise UserError(f"{record} is not a record `vqspeech align` wrote; pass `overwrite=True` to replace it.")
    old = {k: previous.get(k) for k in settings}
    if old != settings:
        raise UserError(
            f"{out_dir} holds alignments of {previous.get('source')} "
            f"(layout {previous.get('layout')}); choose another output folder or "
            "pass `overwrite=True` to replace them."
        )
