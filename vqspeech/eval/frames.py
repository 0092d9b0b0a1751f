"""Codes meet alignments: which phone lies under each code frame.

The probe reads a codes folder (:mod:`vqspeech.data.codes`): codes (grouped codebooks [T, G]:
each distinct tuple counts as one unit) and/or latents (continuous features alone, e.g. another
model's, are probed too). Frame t is centred at ``frame_offset_s + t / code_rate_hz`` and takes
the phone whose segment holds that instant.

Phone segments are folded onto the 41 classes (vqspeech.data.phones). Time no segment covers is
silence (aligners leave silences unlabelled); segments the folding excludes (TIMIT's glottal
stop ``q``) give frames labelled ``""``, which every metric leaves out.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import soundfile as sf

from ..audio import sound_file
from ..data.alignments import Segment, alignment_duration, read_alignment
from ..data.codes import CodesFolder
from ..data.corpora import SourceUtterance, find_utterances
from ..data.manifest import read_manifest
from ..data.phones import PhoneFolding, guess_phone_set
from ..errors import UserError

Span = tuple[int, int, str]
"""(first frame, end frame exclusive, phone class)."""


@dataclass
class ProbeData:
    """Frame-level units and phone labels of every utterance that has both, in id order."""

    ids: list[str]
    speakers: list[str]
    codes: list[np.ndarray] | None
    """int [T_u] per utterance, or None (continuous features only)."""
    latents: list[np.ndarray] | None
    """float [T_u, D] per utterance, or None."""
    labels: list[np.ndarray]
    """str [T_u] per utterance: the phone class at each frame centre, "" = excluded."""
    spans: list[list[Span]]
    """Per utterance, the phone segments in frame units (for ABX)."""
    audio: list[str | None]
    num_codes: int
    code_rate_hz: float
    phone_set: str
    skipped: dict[str, int] = field(default_factory=dict)


def read_probe_codes(folder: CodesFolder) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], int]:
    """(codes by id, latents by id, K) of a codes folder, as the probe counts them: grouped codes
    [T, G] become one id per distinct tuple [T] (K: the distinct tuples). Either dict is empty
    when the folder has no such files; latents are read for the utterances with codes."""
    codes = {i: folder.codes(i) for i in folder.code_ids}
    grouped = {c.ndim for c in codes.values()} == {2}
    if grouped:  # product codebooks: each distinct code tuple is one unit
        codes = _tuple_ids(codes)
    with_latents = set(folder.latent_ids)
    latents = {i: folder.latents(i) for i in folder.ids if i in with_latents}
    widths = {z.shape[1] for z in latents.values()}
    if len(widths) > 1:
        raise UserError(
            f"The latents in {folder.root} have different widths ({', '.join(map(str, sorted(widths)))}); "
            "they must come from one model: re-run `vqspeech encode --latents`."
        )
    for i, z in latents.items():
        if i in codes and len(z) != len(codes[i]):
            raise UserError(
                f"{folder.root} has {len(codes[i])} codes but {len(z)} latents for '{i}'; they must "
                "come from one pass: re-run `vqspeech encode --latents`."
            )
    if grouped:
        num_codes = max(int(c.max()) for c in codes.values()) + 1  # the distinct tuples
    elif codes:
        num_codes = folder.info.num_codes or max(int(c.max()) for c in codes.values()) + 1
    else:
        num_codes = 0
    return codes, latents, num_codes


ALIGNMENT_TOLERANCE_S = 0.1
"""Seconds an alignment's extent may differ from its audio's duration."""
LENGTH_TOLERANCE = 2
"""Code frames an utterance's codes may differ from its duration x the code rate (edges, rounding)."""
MIN_MEDIAN_COVERAGE = 0.75
"""The share of their audio the segments of .phn/.lab alignments must cover, by the median over the
utterances; less means times in another unit (8 kHz sample indices read as TIMIT's 16 kHz cover half)."""


def _check_length(utt_id: str, num_frames: int, code_rate_hz: float, utt: SourceUtterance) -> float | None:
    """UserError unless ``num_frames`` codes fit the utterance's duration (its audio file's, else
    what its alignment covers) at the code rate: codes of other audio, or of another rate, would
    otherwise be scored against the wrong phones. Returns the share of the audio a segment-list
    alignment (not a TextGrid) covers, when the audio is known."""
    seconds, covered = None, None
    if utt.path is not None:
        try:
            info = sf.info(sound_file(utt.path))
            seconds = info.frames / info.samplerate
        except (OSError, RuntimeError):  # unreadable: the alignment says how long it is
            seconds = None
    if seconds is None and not str(utt.alignment).lower().endswith(".textgrid"):
        return _check_codes_cover(utt_id, num_frames, code_rate_hz, utt)
    if seconds is None:  # a TextGrid spans its whole recording
        seconds = alignment_duration(str(utt.alignment))
    else:
        covered = _check_alignment_extent(utt_id, seconds, utt)
    expected = seconds * code_rate_hz
    if abs(num_frames - expected) > LENGTH_TOLERANCE:
        raise UserError(
            f"'{utt_id}' has {num_frames} code frames, but it lasts {seconds:.2f} s, {expected:.0f} frames at the "
            f"code rate of {code_rate_hz:g} Hz; the codes and the alignments do not belong together "
            "(re-run `vqspeech encode` on this audio)."
        )
    return covered


def _check_codes_cover(utt_id: str, num_frames: int, code_rate_hz: float, utt: SourceUtterance) -> float:
    """No audio, segments that may leave a final silence out (``.phn``, ``.lab``): UserError when
    they reach past what the codes cover; else the share of the codes' time they cover (judged
    over all utterances, as with audio: a median far below 1 means times in another unit)."""
    extent = alignment_duration(str(utt.alignment))
    coded = num_frames / code_rate_hz
    if extent > coded + (LENGTH_TOLERANCE / code_rate_hz) + ALIGNMENT_TOLERANCE_S:
        raise UserError(
            f"The alignment of '{utt_id}' ({utt.alignment}) spans {extent:.2f} s, but its {num_frames} code frames "
            f"cover {coded:.2f} s at {code_rate_hz:g} Hz; the codes and the alignments do not belong together "
            "(re-run `vqspeech encode` on the audio these alignments describe)."
        )
    return extent / coded if coded > 0 else 0.0


def _check_alignment_extent(utt_id: str, seconds: float, utt: SourceUtterance) -> float | None:
    """UserError when the alignment cannot be of this audio: it reaches past the audio's end, or (a
    TextGrid, which spans its whole recording) ends well before it. Returns the share of the audio
    the segments of another format cover (they may leave a final silence out, so one utterance
    cannot tell; :func:`load_probe_data` judges them together)."""
    extent = alignment_duration(str(utt.alignment))
    textgrid = str(utt.alignment).lower().endswith(".textgrid")
    if extent > seconds + ALIGNMENT_TOLERANCE_S or (textgrid and extent < seconds - ALIGNMENT_TOLERANCE_S):
        raise UserError(
            f"The alignment of '{utt_id}' ({utt.alignment}) spans {extent:.2f} s, but its audio lasts {seconds:.2f} s; "
            "they are not of the same recording (align this audio again, e.g. `vqspeech align`)."
        )
    return None if textgrid or seconds <= 0 else extent / seconds


def _tuple_ids(codes: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Grouped codes [T, G] per utterance -> one id per distinct tuple [T] (ids shared by all)."""
    ids = list(codes)
    _, inverse = np.unique(np.concatenate([codes[i] for i in ids]), axis=0, return_inverse=True)
    bounds = np.cumsum([0] + [len(codes[i]) for i in ids])
    return {i: inverse.reshape(-1)[a:b] for i, a, b in zip(ids, bounds[:-1], bounds[1:], strict=True)}


def aligned_utterances(
    *,
    manifest: str | Path | None = None,
    corpus: str | Path | None = None,
    layout: str | None = None,
    alignments: str | Path | None = None,
    **layout_options,
) -> dict[str, SourceUtterance]:
    """Utterances with a phone alignment, by id, from exactly one source.

    ``manifest``: its utterances' ``alignment`` fields; ``corpus`` + ``layout``: the alignments a
    corpus ships (TIMIT .phn, demo TextGrids); ``alignments``: a folder of ``<id>.TextGrid`` (or
    .phn/.lab) files such as ``vqspeech align`` writes; speakers then come from the codes.
    """
    given = [s for s in (manifest, corpus, alignments) if s is not None]
    if len(given) != 1:
        raise UserError(
            "Give exactly one source of phone alignments: `manifest`, `corpus` (with `layout`) or `alignments`."
        )
    if manifest is not None:
        found = {
            u.id: SourceUtterance(u.id, u.audio, u.speaker, u.text, u.alignment, u.split)
            for u in read_manifest(manifest)
            if u.alignment
        }
        if not found:
            raise UserError(
                f"No utterance of {manifest} has a phone alignment; run `vqspeech align "
                f"CORPUS OUT_DIR --layout L --manifest {manifest}` first."
            )
    elif corpus is not None:
        if layout is None:
            raise UserError("`corpus` needs `layout` (e.g. timit, demo).")
        utts, _ = find_utterances(corpus, layout, **layout_options)
        found = {u.id: u for u in utts if u.alignment}
        if not found:
            raise UserError(
                f"The {layout} corpus at {corpus} ships no phone alignments; align it with "
                "`vqspeech align` and pass `alignments`."
            )
    else:
        assert alignments is not None  # the one source given
        folder = Path(alignments)
        if not folder.is_dir():
            raise UserError(f"Alignment folder {folder} does not exist; run `vqspeech align` first.")
        files = [
            p
            for p in sorted(folder.iterdir())
            if p.suffix.lower() in (".textgrid", ".phn", ".lab") and not p.name.startswith(".")  # not temp files
        ]
        if not files:
            raise UserError(f"Alignment folder {folder} holds no .TextGrid, .phn or .lab files.")
        found = {}
        for p in files:
            if p.stem in found:  # which one is the utterance's? Neither is taken silently
                first = Path(found[p.stem].alignment or "").name
                raise UserError(
                    f"Alignment folder {folder} holds two alignments of {p.stem} ({first} and {p.name}); keep one "
                    "of them."
                )
            found[p.stem] = SourceUtterance(p.stem, None, None, alignment=str(p))
    return found


def frame_spans(
    segments: list[Segment], folding: PhoneFolding, num_frames: int, code_rate_hz: float, frame_offset_s: float
) -> list[Span]:
    """Folded phone segments -> frame spans covering [0, num_frames), gaps filled with "sil".

    Frame t belongs to the segment holding its centre ``offset + t / rate``. Excluded segments
    become "" spans; consecutive spans of one class merge (``b`` after ``bcl``), also across a gap
    too short to hold a frame centre.
    """

    def first_frame(time: float) -> int:  # the first frame whose centre is at or after `time`
        return int(np.clip(np.ceil((time - frame_offset_s) * code_rate_hz - 1e-6), 0, num_frames))

    spans: list[Span] = []

    def add(start: int, end: int, label: str) -> None:
        if end <= start:
            return
        if spans and spans[-1][2] == label and spans[-1][1] == start:
            spans[-1] = (spans[-1][0], end, label)
        else:
            spans.append((start, end, label))

    cursor = 0
    for seg in sorted(segments, key=lambda s: s.start):
        label = folding.fold(seg.label)
        start, end = max(first_frame(seg.start), cursor), first_frame(seg.end)
        add(cursor, start, "sil")
        add(start, end, "" if label is None else label)
        cursor = max(cursor, end)
    add(cursor, num_frames, "sil")
    return spans


def labels_from_spans(spans: list[Span], num_frames: int) -> np.ndarray:
    labels = np.full(num_frames, "", dtype=object)
    for start, end, label in spans:
        labels[start:end] = label
    return labels


def load_probe_data(
    folder: CodesFolder,
    utterances: dict[str, SourceUtterance],
    *,
    phone_set: str | None = None,
    folding_table: str | Path | None = None,
) -> ProbeData:
    """Pair every utterance that has units and an alignment; label each frame with its phone.
    Speakers come from the alignments' source, else from the codes folder."""
    codes, latents, num_codes = read_probe_codes(folder)
    frames = codes or latents
    ids = sorted(set(frames) & set(utterances))
    if not ids:
        example = next(iter(frames))
        raise UserError(
            f"No utterance has both codes and a phone alignment (codes for e.g. '{example}', "
            f"{len(utterances)} alignment(s)); check that both come from the same corpus ids."
        )
    info = folder.info
    segments = {i: read_alignment(str(utterances[i].alignment)) for i in ids}
    empty = [i for i in ids if not segments[i]]  # it would count as one long silence
    if len(empty) == len(ids):
        raise UserError(
            f"No alignment labels any phone (e.g. {utterances[ids[0]].alignment} has no labelled segment); give "
            "alignments with phone labels."
        )
    if empty:
        warnings.warn(
            f"{len(empty)} alignment(s) label no phone (e.g. {utterances[empty[0]].alignment}); those utterances "
            "are left out.",
            stacklevel=2,
        )
        ids = [i for i in ids if segments[i]]
    if phone_set is None:
        phone_set = guess_phone_set({s.label for segs in segments.values() for s in segs})
    folding = PhoneFolding.load(phone_set, folding_table)

    data = ProbeData(
        [],
        [],
        [] if codes else None,
        [] if latents else None,
        [],
        [],
        [],
        num_codes,
        info.code_rate_hz,
        phone_set,
        skipped={
            "no_alignment_or_other_split": len(set(frames) - set(utterances)),
            "empty_alignment": len(empty),
            "no_speaker": 0,
        },
    )
    coverage: list[float] = []
    for i in ids:
        speaker = utterances[i].speaker or info.speakers.get(i)
        if not speaker:
            data.skipped["no_speaker"] += 1
            continue
        num_frames = len(frames[i])
        covered = _check_length(i, num_frames, info.code_rate_hz, utterances[i])
        if covered is not None:
            coverage.append(covered)
        spans = frame_spans(segments[i], folding, num_frames, info.code_rate_hz, info.frame_offset_s)
        data.ids.append(i)
        data.speakers.append(speaker)
        if data.codes is not None:
            data.codes.append(codes[i])
        data.labels.append(labels_from_spans(spans, num_frames))
        data.spans.append(spans)
        data.audio.append(utterances[i].path)
        if data.latents is not None:
            if i not in latents:
                raise UserError(
                    f"Codes folder has latents for some utterances but not for '{i}'; "
                    "re-run `vqspeech encode --latents`."
                )
            data.latents.append(latents[i])
    if coverage and float(np.median(coverage)) < MIN_MEDIAN_COVERAGE:
        raise UserError(
            f"The phone segments of these utterances end, by the median, at {np.median(coverage):.0%} of their "
            "audio, so their times are likely in another unit (TIMIT .phn files count samples at 16 kHz, HTS .lab "
            "files 100 ns); check the alignment files, or give TextGrids."
        )
    if not data.ids:
        raise UserError(
            "No aligned utterance has a known speaker; give a manifest or codes written "
            "by `vqspeech encode` from a manifest."
        )
    return data
