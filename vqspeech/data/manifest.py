"""The manifest: one JSON line per utterance, the interface between `prepare` and every later verb.

Fields: ``id``, ``audio`` (path), ``speaker``, ``duration`` (seconds), ``sample_rate``, ``split``
(train/valid/test), optional ``text`` and ``alignment`` (path). Paths are stored relative to the
manifest's folder when they lie inside it, and returned absolute by :func:`read_manifest`.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from ..errors import UserError
from ..fileio import atomic_path

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


def read_manifest(path: str | os.PathLike, split: str | None = None) -> list[Utterance]:
    """Read a manifest; keep only ``split`` when given. Paths come back absolute."""
    path = Path(path)
    if path.is_dir():
        path = path / "manifest.jsonl"
    if not path.is_file():
        raise UserError(f"Manifest {path} does not exist; create it with `vqspeech prepare`.")
    root = path.resolve().parent
    utts = []
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                missing = [k for k in _REQUIRED if k not in row]
                if missing:
                    raise ValueError(f"missing field(s) {', '.join(missing)}")
                utt = Utterance(**{k: v for k, v in row.items() if k in _KNOWN})
            except (ValueError, TypeError) as exc:
                raise UserError(
                    f"Manifest {path} line {lineno} is malformed ({exc}); rebuild it with `vqspeech prepare`."
                ) from None
            utt.audio = str(root / utt.audio)
            if utt.alignment:
                utt.alignment = str(root / utt.alignment)
            if split is None or utt.split == split:
                utts.append(utt)
    return utts


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


def speakers_of(utts: list[Utterance]) -> list[str]:
    """Sorted distinct speaker names."""
    return sorted({u.speaker for u in utts})


def _relative(p: str, root: Path) -> str:
    absolute = Path(p).resolve()
    try:
        return str(absolute.relative_to(root))
    except ValueError:
        return str(absolute)
