"""Phone and word alignments: read the common file formats into one segment list, write TextGrids.

Readers return :class:`Segment` lists (times in seconds, labels as in the file) in file order:

- Praat ``.TextGrid`` (also Montreal Forced Aligner output): :func:`read_textgrid`;
- TIMIT ``.PHN`` / ``.WRD`` (``start_sample end_sample label``, 16 kHz): :func:`read_timit`;
- ``.lab`` files, festvox/EMU (``end_s colour label`` after a ``#`` line) or HTS
  (``start end label`` in 100 ns units, mono or full-context): :func:`read_lab`.

:func:`read_alignment` picks the reader by the file suffix. Only labelled stretches are returned:
time that no segment covers is silence (TextGrid blank intervals, festvox blank labels).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from praatio import textgrid

from ..errors import UserError, first_line
from ..fileio import atomic_path, check_input_file

TIMIT_SAMPLE_RATE = 16000
HTS_TIME_UNIT = 1e-7
"""Seconds per HTS label time unit (100 ns)."""

TIER_SYNONYMS = {"phones": ("phone",), "phone": ("phones",), "words": ("word",), "word": ("words",)}
"""Other tier names accepted for a requested tier name (compared case-insensitively)."""

# HTS full-context label "p1^p2-p3+p4=p5@...": the current phone p3 sits between "-" and "+".
_FULL_CONTEXT = re.compile(r"^(?:[^\^]*\^)?[^-]*-(?P<phone>[^+]+)\+")


@dataclass(frozen=True)
class Segment:
    """One labelled stretch of an utterance."""

    start: float
    """Seconds from the start of the audio."""
    end: float
    """Seconds; ``end >= start``."""
    label: str


def read_alignment(
    path: str | os.PathLike, tier: str = "phones", sample_rate: int = TIMIT_SAMPLE_RATE
) -> list[Segment]:
    """Read tier ``tier`` ("phones" or "words") of the alignment file at ``path``.

    The reader follows the suffix (any case): ``.TextGrid``, ``.phn``/``.wrd`` (TIMIT; the other
    tier is read from the sibling file with the same stem, ``.WRD`` next to ``.PHN``) or ``.lab``
    (phones only). ``sample_rate`` is the rate of TIMIT sample times.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".textgrid":
        return read_textgrid(path, tier)
    if suffix in (".phn", ".wrd"):
        return read_timit(_timit_sibling(path, tier), sample_rate)
    if suffix == ".lab":
        if _tier_kind(tier) != "phones":
            raise UserError(
                f"{path} is a .lab file with one phone tier, not a '{tier}' tier; "
                "ask for tier='phones' or use a TextGrid that has words."
            )
        return read_lab(path)
    raise UserError(
        f"Alignment file {path} has an unknown type '{path.suffix}'; use a .TextGrid, TIMIT .phn/.wrd or .lab file."
    )


def read_textgrid(path: str | os.PathLike, tier: str = "phones") -> list[Segment]:
    """The labelled intervals of interval tier ``tier`` of a Praat TextGrid, in time order.

    Intervals with blank labels (the gaps and silences aligners leave unlabelled) are left out;
    callers treat time without a segment as silence. The tier is found by its exact name, else
    case-insensitively, else as a Montreal Forced Aligner tier ``"<speaker> - <tier>"``; "phones"
    also matches "phone" and "words" "word". Labels are stripped of surrounding white space.
    """
    path = Path(path)
    _check_file(path)
    try:
        grid = textgrid.openTextgrid(
            str(path), includeEmptyIntervals=False, reportingMode="silence", duplicateNamesMode="rename"
        )
    except Exception as exc:  # praatio raises several types for malformed files
        raise UserError(
            f"Cannot read TextGrid {path} ({first_line(exc)}); check that it is a "
            "Praat TextGrid in long or short text format."
        ) from None
    name = _match_tier(path, tier, list(grid.tierNames))
    found = grid.getTier(name)
    if not isinstance(found, textgrid.IntervalTier):
        raise UserError(
            f"Tier '{name}' of {path} is a point tier; alignments need an interval tier, so pick another tier."
        )
    return [Segment(float(start), float(end), label.strip()) for start, end, label in found.entries if label.strip()]


def alignment_duration(path: str | os.PathLike) -> float:
    """The time an alignment file covers, in seconds: a TextGrid's end time (its last interval may
    be blank), else the end of its last segment."""
    path = Path(path)
    if path.suffix.lower() == ".textgrid":
        _check_file(path)
        try:
            return float(textgrid.openTextgrid(str(path), includeEmptyIntervals=True).maxTimestamp)
        except Exception as exc:  # praatio raises several types for malformed files
            raise UserError(f"Cannot read TextGrid {path} ({first_line(exc)}).") from None
    segments = read_alignment(path)
    return max((s.end for s in segments), default=0.0)


def read_timit(path: str | os.PathLike, sample_rate: int = TIMIT_SAMPLE_RATE) -> list[Segment]:
    """A TIMIT ``.PHN`` or ``.WRD`` file: lines ``start_sample end_sample label``.

    Times are sample indices at ``sample_rate`` (TIMIT: 16 kHz), returned in seconds.
    """
    path = Path(path)
    segments, previous_end = [], 0
    for number, fields in _data_lines(path):
        if len(fields) < 3:
            raise _line_error(path, number, "needs 'start_sample end_sample label'")
        start, end = (_parse_int(path, number, f) for f in fields[:2])
        _check_order(path, number, start, end)
        if path.suffix.lower() == ".phn":  # phones follow each other (TIMIT's words may overlap)
            _check_follows(path, number, start, previous_end)
            previous_end = end
        segments.append(Segment(start / sample_rate, end / sample_rate, " ".join(fields[2:])))
    return segments


def read_lab(path: str | os.PathLike) -> list[Segment]:
    """A ``.lab`` phone label file, festvox/EMU or HTS (told apart by a ``#`` line).

    festvox/EMU: header lines, a line ``#``, then lines ``end_s colour label``; each segment
    starts where the previous one ends (the first at 0); blank labels are left out.
    HTS: lines ``start end label`` with integer times in 100 ns units; of a full-context label
    ``a^b-c+d=e...`` the current phone ``c`` is kept.
    """
    path = Path(path)
    lines = list(_data_lines(path))
    if any(fields == ["#"] for _, fields in lines):
        return _read_festvox(path, lines)
    return _read_hts(path, lines)


def write_textgrid(
    path: str | os.PathLike, tiers: dict[str, Sequence[Segment | tuple[float, float, str]]], duration: float
) -> None:
    """Save interval tiers (in the given order) covering [0, ``duration``] s as a long TextGrid.

    Segment ends are clipped to ``duration``; segments that end up empty, or have blank labels,
    are dropped; the gaps between segments are written as blank intervals. The file is replaced
    atomically. Segments may also be plain ``(start, end, label)`` tuples.
    """
    grid = textgrid.Textgrid(minTimestamp=0.0, maxTimestamp=duration)
    for name, segments in tiers.items():
        entries = [
            (start, min(end, duration), label)
            for start, end, label in map(_as_tuple, segments)
            if min(end, duration) > start and label.strip()
        ]
        grid.addTier(textgrid.IntervalTier(name, entries, 0.0, duration))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        grid.save(str(tmp), format="long_textgrid", includeBlankSpaces=True, reportingMode="error")


# ----------------------------------------------------------------------------------------------
# Helpers


def _as_tuple(segment: Segment | tuple[float, float, str]) -> tuple[float, float, str]:
    if isinstance(segment, Segment):
        return segment.start, segment.end, segment.label
    start, end, label = segment
    return start, end, label


def _tier_kind(tier: str) -> str:
    """ "phones" or "words" for the usual names of those tiers, else the name itself."""
    low = tier.strip().lower()
    return {"phone": "phones", "words": "words", "word": "words"}.get(low, low)


def _timit_sibling(path: Path, tier: str) -> Path:
    """The TIMIT file holding ``tier``: ``path`` itself or its .PHN/.WRD sibling."""
    kind = _tier_kind(tier)
    if kind not in ("phones", "words"):
        raise UserError(
            f"TIMIT alignments have tiers 'phones' (.phn) and 'words' (.wrd), not "
            f"'{tier}'; ask for one of those for {path}."
        )
    wanted = ".phn" if kind == "phones" else ".wrd"
    if path.suffix.lower() == wanted:
        return path
    same_case = wanted.upper() if path.suffix.isupper() else wanted
    for candidate in (path.with_suffix(same_case), path.with_suffix(same_case.swapcase())):
        if candidate.is_file():
            return candidate
    raise UserError(
        f"The {kind} of {path} would be in {path.with_suffix(same_case)}, which does "
        "not exist; add that file or ask for the other tier."
    )


def _match_tier(path: Path, tier: str, names: list[str]) -> str:
    """The tier name in ``names`` that ``tier`` refers to (see :func:`read_textgrid`)."""
    if tier in names:
        return tier
    wanted = {tier.lower(), *TIER_SYNONYMS.get(tier.lower(), ())}
    rules = (
        lambda name: name.lower() in wanted,
        lambda name: name.lower().rpartition(" - ")[2] in wanted and " - " in name,
    )
    for rule in rules:
        matches = [name for name in names if rule(name)]
        if len(matches) == 1:
            return matches[0]
        if len(matches) > 1:
            raise UserError(
                f"TextGrid {path} has several tiers that could be '{tier}' "
                f"({', '.join(matches)}); pass the exact tier name."
            )
    listed = ", ".join(f"'{name}'" for name in names) or "none"
    raise UserError(
        f"TextGrid {path} has no tier '{tier}' (its tiers: {listed}); rename the tier that holds them to "
        f"'{tier}', as `vqspeech align` names it."
    )


def _check_file(path: Path) -> None:
    check_input_file(path, "Alignment file")


def _data_lines(path: Path) -> Iterable[tuple[int, list[str]]]:
    """(1-based line number, white-space separated fields) of the non-blank lines of ``path``."""
    _check_file(path)
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        raise UserError(f"Cannot read alignment file {path} ({first_line(exc)}); check its permissions.") from None
    for number, line in enumerate(text.splitlines(), start=1):
        fields = line.split()
        if fields:
            yield number, fields


def _read_festvox(path: Path, lines: list[tuple[int, list[str]]]) -> list[Segment]:
    body = lines[next(i for i, (_, fields) in enumerate(lines) if fields == ["#"]) + 1 :]
    segments, start = [], 0.0
    for number, fields in body:
        if len(fields) < 2:
            raise _line_error(path, number, "needs 'end_time colour label'")
        end = _parse_float(path, number, fields[0])
        _check_order(path, number, start, end)
        label = " ".join(fields[2:])
        if label:
            segments.append(Segment(start, end, label))
        start = end
    return segments


def _read_hts(path: Path, lines: list[tuple[int, list[str]]]) -> list[Segment]:
    segments, previous_end = [], 0
    for number, fields in lines:
        if len(fields) < 3:
            raise _line_error(
                path, number, "needs 'start end label' (HTS) or the file a '#' line before its labels (festvox)"
            )
        start, end = (_parse_int(path, number, f) for f in fields[:2])
        _check_order(path, number, start, end)
        _check_follows(path, number, start, previous_end)
        previous_end = end
        match = _FULL_CONTEXT.match(fields[2])
        label = match["phone"] if match else fields[2]
        segments.append(Segment(start * HTS_TIME_UNIT, end * HTS_TIME_UNIT, label))
    return segments


def _parse_int(path: Path, number: int, text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise _line_error(path, number, f"has '{text}' where an integer time belongs") from None


def _parse_float(path: Path, number: int, text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise _line_error(path, number, f"has '{text}' where a time in seconds belongs") from None
    if value != value or value in (float("inf"), float("-inf")):
        raise _line_error(path, number, f"has '{text}' where a time in seconds belongs")
    return value


def _check_order(path: Path, number: int, start: float, end: float) -> None:
    if start < 0 or end < start:
        raise _line_error(
            path,
            number,
            f"ends ({end}) before it starts ({start})" if end < start else f"starts at a negative time ({start})",
        )


def _check_follows(path: Path, number: int, start: int, previous_end: int) -> None:
    """A phone segment starts where the one before it ends, or later (overlapping or unordered
    segments would label one frame twice)."""
    if start < previous_end:
        raise _line_error(path, number, f"starts ({start}) before the segment above it ends ({previous_end})")


def _line_error(path: Path, number: int, problem: str) -> UserError:
    return UserError(f"Line {number} of alignment file {path} {problem}; fix or remove that line.")
