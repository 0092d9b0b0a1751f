"""Units meet alignments: which phone lies under each code frame.

Units come in the ``vqspeech encode`` layout: ``codes/<id>.npy`` (int [T]; grouped codebooks
[T, G], each distinct tuple then counts as one unit) and/or
``latents/<id>.npy`` (float [T, D]; continuous features alone, e.g. another model's, are probed
too), and ``codes.json`` with ``code_rate_hz`` and ``frame_offset_s`` (the time of frame 0's
centre; half a frame when absent). Frame t is centred at
``frame_offset_s + t / code_rate_hz`` and takes the phone whose segment holds that instant.

Phone segments are folded onto the 41 classes (vqspeech.data.phones). Time no segment covers is
silence (aligners leave silences unlabelled); segments the folding excludes (TIMIT's glottal
stop ``q``) give frames labelled ``""``, which every metric leaves out.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..data.alignments import Segment, read_alignment
from ..data.phones import PhoneFolding, guess_phone_set
from ..errors import UserError

Span = tuple[int, int, str]
"""(first frame, end frame exclusive, phone class)."""


@dataclass
class Units:
    """What ``vqspeech encode`` (or ``vqspeech baseline``) wrote to a codes folder."""

    codes: dict[str, np.ndarray]
    """Empty when the folder holds continuous features only."""
    latents: dict[str, np.ndarray]
    """Empty when the folder has no ``latents/``."""
    code_rate_hz: float
    frame_offset_s: float
    num_codes: int
    meta: dict


@dataclass
class AlignedUtterance:
    id: str
    speaker: str
    alignment: str
    audio: str | None = None
    split: str | None = None


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


def read_units(codes_dir: str | Path, latents: bool = True, tuples: bool = True) -> Units:
    """Read a codes folder (``latents=False``: leave its latents on disk); a missing or malformed
    one raises UserError. Grouped codes [T, G] become one unit id per distinct tuple [T], unless
    ``tuples`` is False (then they stay [T, G] and ``num_codes`` is K)."""
    root = Path(codes_dir)
    meta_path = root / "codes.json"
    if not meta_path.is_file():
        raise UserError(f"{root} is not a codes folder: it holds no codes.json; make one with "
                        "`vqspeech encode` or `vqspeech baseline`.")
    if not ((root / "codes").is_dir() or (root / "latents").is_dir()):
        raise UserError(f"{root} is not a codes folder: it has neither codes/ nor latents/; make one "
                        "with `vqspeech encode` or `vqspeech baseline`.")
    try:
        meta = json.loads(meta_path.read_text())
        rate = float(meta["code_rate_hz"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise UserError(f"{meta_path} has no readable code_rate_hz ({exc}); re-run `vqspeech encode`.") from None
    codes = {p.stem: load_codes(p) for p in sorted((root / "codes").glob("*.npy"))}
    grouped = tuples and {c.ndim for c in codes.values()} == {2}
    if grouped:  # product codebooks: each distinct code tuple is one unit
        codes = _tuples_to_units(codes)
    latent_files = sorted((root / "latents").glob("*.npy")) if latents or not codes else []
    latents = {p.stem: _load_array(p, ndim=2).astype(np.float32) for p in latent_files
               if not codes or p.stem in codes}
    if not codes and not latents:
        raise UserError(f"{root} holds no codes/*.npy or latents/*.npy files; run `vqspeech encode` first.")
    if grouped:
        num_codes = max(int(c.max()) for c in codes.values()) + 1  # the distinct tuples
    else:
        num_codes = int(meta.get("K") or max(int(c.max()) for c in codes.values()) + 1) if codes else 0
    offset = meta.get("frame_offset_s")
    return Units(codes, latents, rate, 0.5 / rate if offset is None else float(offset), num_codes, meta)


def _tuples_to_units(codes: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Grouped codes [T, G] per utterance -> one id per distinct tuple [T] (ids shared by all)."""
    ids = list(codes)
    _, inverse = np.unique(np.concatenate([codes[i] for i in ids]), axis=0, return_inverse=True)
    bounds = np.cumsum([0] + [len(codes[i]) for i in ids])
    return {i: inverse.reshape(-1)[a:b] for i, a, b in zip(ids, bounds[:-1], bounds[1:])}


def load_codes(path: Path) -> np.ndarray:
    """A codes file -> int64 [T] or [T, G]; unreadable or not codes: UserError."""
    codes = _load_array(path, ndim=(1, 2))
    if codes.size == 0 or not np.issubdtype(codes.dtype, np.integer) or codes.min() < 0:
        raise UserError(f"{path} does not hold codes (non-negative integers, at least one frame); "
                        "re-run `vqspeech encode`.")
    return codes.astype(np.int64)


def _load_array(path: Path, ndim: int | tuple[int, ...]) -> np.ndarray:
    try:
        array = np.load(path)
    except (OSError, ValueError) as exc:
        raise UserError(f"Cannot read {path} ({exc}); re-run `vqspeech encode`.") from None
    allowed = ndim if isinstance(ndim, tuple) else (ndim,)
    if array.ndim not in allowed:
        raise UserError(f"{path} holds shape {array.shape}; expected a "
                        f"{' or '.join(f'{n}-D' for n in allowed)} array.")
    return array


def aligned_utterances(*, manifest: str | Path | None = None, corpus: str | Path | None = None,
                       layout: str | None = None, alignments: str | Path | None = None,
                       **layout_options) -> dict[str, AlignedUtterance]:
    """Utterances with a phone alignment, by id, from exactly one source.

    ``manifest``: its utterances' ``alignment`` fields; ``corpus`` + ``layout``: the alignments a
    corpus ships (TIMIT .phn, demo TextGrids); ``alignments``: a folder of ``<id>.TextGrid`` (or
    .phn/.lab) files such as ``vqspeech align`` writes; speakers then come from the codes.
    """
    given = [s for s in (manifest, corpus, alignments) if s is not None]
    if len(given) != 1:
        raise UserError("Give exactly one source of phone alignments: --manifest, --corpus (with "
                        "--layout) or --alignments.")
    if manifest is not None:
        from ..data.manifest import read_manifest

        found = {u.id: AlignedUtterance(u.id, u.speaker, u.alignment, u.audio, u.split)
                 for u in read_manifest(manifest) if u.alignment}
        if not found:
            raise UserError(f"No utterance of {manifest} has a phone alignment; run `vqspeech align "
                            f"CORPUS OUT_DIR --layout L --manifest {manifest}` first.")
    elif corpus is not None:
        from ..data.corpora import find_utterances

        if layout is None:
            raise UserError("--corpus needs --layout (e.g. timit, demo).")
        utts, _ = find_utterances(corpus, layout, **layout_options)
        found = {u.id: AlignedUtterance(u.id, u.speaker, u.alignment, u.path, u.split)
                 for u in utts if u.alignment}
        if not found:
            raise UserError(f"The {layout} corpus at {corpus} ships no phone alignments; align it with "
                            "`vqspeech align` and pass --alignments.")
    else:
        folder = Path(alignments)
        if not folder.is_dir():
            raise UserError(f"Alignment folder {folder} does not exist; run `vqspeech align` first.")
        files = [p for p in sorted(folder.iterdir()) if p.suffix.lower() in (".textgrid", ".phn", ".lab")]
        if not files:
            raise UserError(f"Alignment folder {folder} holds no .TextGrid, .phn or .lab files.")
        found = {p.stem: AlignedUtterance(p.stem, "", str(p)) for p in files}
    return found


def frame_spans(segments: list[Segment], folding: PhoneFolding, num_frames: int, code_rate_hz: float,
                frame_offset_s: float) -> list[Span]:
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


def load_probe_data(units: Units, utterances: dict[str, AlignedUtterance], *,
                    phone_set: str | None = None, folding_table: str | Path | None = None,
                    speakers: dict[str, str] | None = None) -> ProbeData:
    """Pair every utterance that has units and an alignment; label each frame with its phone."""
    frames = units.codes or units.latents
    ids = sorted(set(frames) & set(utterances))
    if not ids:
        example = next(iter(frames))
        raise UserError(f"No utterance has both codes and a phone alignment (codes for e.g. '{example}', "
                        f"{len(utterances)} alignment(s)); check that both come from the same corpus ids.")
    speakers = {**units.meta.get("speakers", {}), **(speakers or {})}
    segments = {i: read_alignment(utterances[i].alignment) for i in ids}
    if phone_set is None:
        phone_set = guess_phone_set({s.label for segs in segments.values() for s in segs})
    folding = PhoneFolding.load(phone_set, folding_table)

    data = ProbeData([], [], [] if units.codes else None, [] if units.latents else None, [], [], [],
                     units.num_codes, units.code_rate_hz, phone_set,
                     skipped={"no_alignment_or_other_split": len(set(frames) - set(utterances)),
                              "no_speaker": 0})
    for i in ids:
        speaker = utterances[i].speaker or speakers.get(i)
        if not speaker:
            data.skipped["no_speaker"] += 1
            continue
        num_frames = len(frames[i])
        spans = frame_spans(segments[i], folding, num_frames, units.code_rate_hz, units.frame_offset_s)
        data.ids.append(i)
        data.speakers.append(speaker)
        if data.codes is not None:
            data.codes.append(units.codes[i])
        data.labels.append(labels_from_spans(spans, num_frames))
        data.spans.append(spans)
        data.audio.append(utterances[i].audio)
        if data.latents is not None:
            if i not in units.latents:
                raise UserError(f"Codes folder has latents for some utterances but not for '{i}'; "
                                "re-run `vqspeech encode --latents`.")
            data.latents.append(units.latents[i])
    if not data.ids:
        raise UserError("No aligned utterance has a known speaker; give a manifest or codes written "
                        "by `vqspeech encode` from a manifest.")
    return data
