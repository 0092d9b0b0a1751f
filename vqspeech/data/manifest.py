"""The manifest: one JSON line per utterance, the interface between `prepare` and every later verb.

Fields: ``id``, ``audio`` (path), ``speaker``, ``duration`` (seconds), ``sample_rate``, ``split``
(train/valid/test), optional ``text`` and ``alignment`` (path). Paths are stored relative to the
manifest's folder when they lie inside it, and returned absolute by :func:`read_manifest`.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Collection
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np
import soundfile as sf

from ..audio import MAX_SAMPLE_RATE, load_audio, sound_file
from ..errors import UserError, first_line
from ..fileio import (
    ALIGN_MARK,
    SAFE_NAME_MAX,
    atomic_path,
    file_stamp,
    is_finite_number,
    is_safe_name,
    json_digest,
    write_text_atomic,
)

SPLITS = ("train", "valid", "test")


@dataclass
class Utterance:
    id: str
    audio: str
    speaker: str
    duration: float
    sample_rate: int
    split: str = "train"
    text: str | None = None
    alignment: str | None = None

    @property
    def num_samples(self) -> int:
        return int(round(self.duration * self.sample_rate))


_REQUIRED = ("id", "audio", "speaker", "duration", "sample_rate")
_KNOWN = {f.name for f in fields(Utterance)}
_SURROGATE = re.compile(r"[\ud800-\udfff]")  # bytes of a file name that were not UTF-8
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")  # also what str.splitlines() breaks at


SPEAKER_RULE = "no slashes, commas, control characters, spaces at either end, a leading '-' or bytes that are not UTF-8"
"""What :func:`is_safe_speaker` refuses, for error messages."""


def is_safe_speaker(name: object) -> bool:
    """A speaker name usable as one path component and one TSV field: a non-empty string without
    slashes, control characters or spaces at either end, not ``.`` or ``..``, and valid UTF-8 (a folder name that is not
    UTF-8 could not be written to the manifest and read back as the same name). No commas (``--targets``
    and ``--heldout_speakers`` take comma-separated lists) and no leading ``-`` (``--speaker -h`` reads
    as an option)."""
    return (
        isinstance(name, str)
        and bool(name)
        and name not in (".", "..")
        and name == name.strip()  # " lead" and "lead" would read as one name in every listing
        and "/" not in name
        and "\\" not in name
        and "," not in name
        and not name.startswith("-")
        and not _CONTROL.search(name)
        and not _SURROGATE.search(name)
    )


MAX_DURATION = 24 * 3600.0
"""The longest utterance a manifest may list, in seconds."""


def _field_problem(row: dict) -> str | None:
    """What is wrong with one manifest row, or None. A manifest is untrusted input: ids become file
    names, so they must be safe names, and every field must have its type."""
    missing = [k for k in _REQUIRED if k not in row]
    if missing:
        return f"missing field(s) {', '.join(missing)}"
    if not is_safe_name(row["id"]):
        return (
            f"id {row['id']!r} is not a safe file name (letters, digits, '_', '.', '-', not starting with a dot, "
            f"at most {SAFE_NAME_MAX} characters)"
        )
    if not isinstance(row["audio"], str) or not row["audio"]:
        return f"audio {row['audio']!r} is not a path"
    if not is_safe_speaker(row["speaker"]):
        return f"speaker {row['speaker']!r} is not a name ({SPEAKER_RULE})"
    if not is_finite_number(row["duration"]) or row["duration"] <= 0:
        return f"duration {row['duration']!r} is not a positive number of seconds"
    if not isinstance(row["sample_rate"], int) or isinstance(row["sample_rate"], bool) or row["sample_rate"] <= 0:
        return f"sample_rate {row['sample_rate']!r} is not a positive whole number of hertz"
    if row["sample_rate"] > MAX_SAMPLE_RATE:
        return f"sample_rate {row['sample_rate']} is above {MAX_SAMPLE_RATE} Hz"
    if row["duration"] * row["sample_rate"] < 1 or row["duration"] > MAX_DURATION:
        return f"duration {row['duration']!r} is not from one sample to {MAX_DURATION:g} seconds"
    if row.get("split", "train") not in SPLITS:
        return f"split {row.get('split')!r} is not one of {', '.join(SPLITS)}"
    for key in ("text", "alignment"):
        if row.get(key) is not None and not isinstance(row[key], str):
            return f"{key} {row[key]!r} is not text"
    return None


def manifest_file(path: str | os.PathLike) -> Path:
    """The manifest file a path names: ``path`` itself, or ``path/manifest.jsonl`` for a folder."""
    path = Path(path)
    return path / "manifest.jsonl" if path.is_dir() else path


def read_manifest(path: str | os.PathLike, split: str | None = None) -> list[Utterance]:
    """Read a manifest; keep only ``split`` when given. Paths come back absolute. Every line is
    checked (ids are safe file names, fields have their types): a bad one raises UserError naming
    the line."""
    path = manifest_file(path)
    if not path.is_file():
        raise UserError(f"Manifest {path} does not exist; create it with `vqspeech prepare`.")
    root = path.resolve().parent
    utts = []
    first_line_of: dict[str, int] = {}
    try:
        lines = path.read_text(encoding="utf-8").split("\n")  # JSON lines end at \n only
    except UnicodeDecodeError as exc:
        raise UserError(
            f"Manifest {path} is not UTF-8 text ({exc.reason} at byte {exc.start}); rebuild it with `vqspeech prepare`."
        ) from None
    for lineno, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except (ValueError, RecursionError) as exc:
            raise UserError(
                f"Manifest {path} line {lineno} is not JSON ({exc}); rebuild it with `vqspeech prepare`."
            ) from None
        problem = _field_problem(row) if isinstance(row, dict) else "it is not a JSON object"
        if problem:
            raise UserError(
                f"Manifest {path} line {lineno}: {problem}; fix the line or rebuild the manifest with "
                "`vqspeech prepare`."
            )
        if row["id"] in first_line_of:  # ids name output files: a repeat would overwrite another's
            raise UserError(
                f"Manifest {path} lines {first_line_of[row['id']]} and {lineno} both have the id {row['id']!r}; "
                "give every utterance its own id."
            )
        first_line_of[row["id"]] = lineno
        utt = Utterance(**{k: v for k, v in row.items() if k in _KNOWN})
        utt.audio = str(root / utt.audio)
        if utt.alignment:
            utt.alignment = str(root / utt.alignment)
        if split is None or utt.split == split:
            utts.append(utt)
    return utts


def load_utterance(utt: Utterance) -> np.ndarray:
    """The utterance's audio [T] float32 at its manifest sample rate. UserError when the file's rate
    or length disagrees with the manifest (edited by hand, or the audio replaced since)."""
    audio, rate = load_audio(utt.audio)
    _check_agrees(utt, rate, len(audio))
    return audio


def check_header(utt: Utterance) -> None:
    """What :func:`load_utterance` checks, from the file's header alone (no samples read)."""
    try:
        info = sf.info(sound_file(utt.audio))
    except (sf.LibsndfileError, RuntimeError, OSError) as exc:
        raise UserError(f"Cannot read {utt.audio} ({first_line(exc)}); re-run `vqspeech prepare`.") from None
    _check_agrees(utt, info.samplerate, info.frames)


def _check_agrees(utt: Utterance, rate: int, samples: int) -> None:
    if rate != utt.sample_rate:
        raise UserError(
            f"{utt.audio} holds audio at {rate} Hz but its manifest line ({utt.id}) says "
            f"{utt.sample_rate} Hz; re-run `vqspeech prepare` to rebuild the manifest."
        )
    if abs(samples - utt.duration * rate) > 0.01 * rate:
        raise UserError(
            f"{utt.audio} lasts {samples / rate:.3f} s but its manifest line ({utt.id}) says "
            f"{utt.duration:.3f} s; re-run `vqspeech prepare` to rebuild the manifest."
        )


def write_manifest(path: str | os.PathLike, utts: list[Utterance]) -> None:
    """Write atomically; paths inside the manifest's folder are made relative to it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    root = path.resolve().parent
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
        for utt in utts:
            row = asdict(utt)
            row["audio"] = _relative(row["audio"], root)
            if row["alignment"]:
                row["alignment"] = _relative(row["alignment"], root)
            row = {k: v for k, v in row.items() if v is not None}
            f.write(json.dumps(row, ensure_ascii=False) + "\n")


def set_alignments(path: str | os.PathLike, alignments: dict[str, str], redone: Collection[str] = ()) -> int:
    """Point the utterances of the manifest at ``path`` without an alignment at the files of
    ``alignments`` (id -> TextGrid), keeping every other field of every line (also fields vqspeech
    does not read) and their order. An utterance of ``redone`` (aligned again) whose alignment an
    earlier `vqspeech align` run wrote (a folder it marked) takes the new one, or none when it has
    none now; an alignment the corpus ships is kept. A manifest reached through a link is
    rewritten where it lies. Returns the number of utterances that now have an alignment."""
    path = Path(path)
    path = Path(os.path.realpath(path / "manifest.jsonl" if path.is_dir() else path))
    read_manifest(path)  # every line checked first
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").split("\n") if line.strip()]
    redone = set(redone)
    for row in rows:
        grid, current = alignments.get(row["id"]), row.get("alignment")
        if current and row["id"] in redone and _written_by_align(path.parent / current):
            current = None  # an earlier run's (this folder's or another's): replaced by this run's result
            row.pop("alignment")
        if not current and grid:
            row["alignment"] = _relative(grid, path.parent)
    write_text_atomic(path, "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows))
    return sum(1 for row in rows if row.get("alignment"))


def audio_stamp(utt: Utterance) -> list[int] | None:
    """[size, modification time in ns] of an utterance's audio file, or None when it cannot be read:
    audio replaced by other audio of the same length (re-recorded, denoised) shows as a change."""
    try:
        return file_stamp(utt.audio)
    except OSError:
        return None


def data_digest(manifest: str | os.PathLike) -> str:
    """A digest of the data a manifest describes: each utterance's id, speaker, split, rate, length
    and audio file stamp. Fields that do not change the audio (text, the alignment `align
    --manifest` adds) leave it as it is; audio prepared again does not."""
    rows = sorted(
        [u.id, u.speaker, u.split, u.sample_rate, u.num_samples, audio_stamp(u)] for u in read_manifest(manifest)
    )
    return json_digest(rows)


def check_not_below_rate(utts: list[Utterance], sample_rate: int, manifest: str | os.PathLike) -> None:
    """UserError when an utterance was prepared at a rate below ``sample_rate`` (a model's): its
    upsampled audio lacks the band above its own Nyquist frequency, so scores of it would measure the
    resampling as much as the model."""
    low = next((u for u in utts if u.sample_rate < sample_rate), None)
    if low is not None:
        raise UserError(
            f"{manifest} holds audio at {low.sample_rate} Hz ({low.id}), below the model's {sample_rate} Hz, so "
            f"its scores would be of upsampled audio; prepare the corpus at {sample_rate} Hz."
        )


def _written_by_align(alignment: Path) -> bool:
    """Whether an alignment file lies in a folder `vqspeech align` wrote (its ``align.json``)."""
    return (alignment.parent / ALIGN_MARK).is_file()


def speakers_of(utts: list[Utterance]) -> list[str]:
    """Sorted distinct speaker names."""
    return sorted({u.speaker for u in utts})


def _relative(p: str, root: Path) -> str:
    absolute = Path(p).resolve()
    try:
        return str(absolute.relative_to(root))
    except ValueError:
        return str(absolute)
