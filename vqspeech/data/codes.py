"""The codes folder: the interface between `encode` and every verb that reads codes.

This module is its only writer and reader. `encode`, `baseline mfcc-kmeans` and `prior sample`
write one; `decode`, the priors, the probe and the tools read one. Layout::

    codes/<id>.npy       int16 [F] (grouped codebooks: [F, G])
    codes_top/<id>.npy   int16 [ceil(F / stride)]   hierarchical models only
    latents/<id>.npy     float32 [F, D]             optional: the bottom quantizer's input, or a
                                                    baseline's features; alone, a folder of
                                                    continuous features
    units.txt            one line per utterance: ``<id> c1 c2 ...`` (a grouped frame is ``c1-c2``)
    rejects.tsv          ``file<TAB>reason`` of inputs that could not be encoded (encode only)
    codes.json           :class:`CodesInfo`

Frame t is centred at ``frame_offset_s + t / code_rate_hz`` seconds; top code j covers frames
``j * stride .. (j + 1) * stride - 1``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import UserError, first_line
from ..fileio import (
    atomic_path,
    inside,
    is_experiment_folder,
    is_finite_number,
    is_int,
    is_safe_name,
    read_json_object,
    remove_stale_temps,
    write_text_atomic,
)
from .manifest import MAX_DURATION, SPEAKER_RULE, SPLITS, is_safe_speaker

INFO_FILE = "codes.json"

CODE_DTYPE = np.int16
"""How code files store codes."""
MAX_CODES = int(np.iinfo(CODE_DTYPE).max) + 1
"""The largest K whose codes (0 .. K - 1) :data:`CODE_DTYPE` holds: 32768."""
MAX_GROUPS = 64
"""Codebook groups per frame, as ``model.quantizer.groups`` allows."""
MAX_CODE_RATE_HZ = 48000.0
"""The fastest code rate, one code per sample at 48 kHz: a larger one is a typo that would make a
reader allocate gigabytes (``prior sample`` draws seconds x rate codes)."""
MAX_STRIDE = 65536
"""Bottom codes per top code: a prior's crop (at most 65536 codes) is a multiple of it."""
LEVELS = ("bottom", "top")
"""The code levels of a hierarchical model; a prior models one of them."""


class _Fields:
    """Checked access to one JSON object of ``codes.json`` (``prefix``: where it lies in the file,
    e.g. ``top.``): each value is read with its type and range, and a bad or missing required one
    raises UserError naming the file and the field."""

    def __init__(self, record: dict[str, Any], path: Path, prefix: str = ""):
        self.record, self.path, self.prefix = record, path, prefix

    def bad(self, key: str, must: str) -> UserError:
        value = _shortened(repr(self.record[key])) if key in self.record else "missing"
        return UserError(
            f"{self.path} field {self.prefix}{key} is {value}, but must be {must}; re-run `vqspeech encode`."
        )

    def required_number(self, key: str, at_most: float) -> float:
        """A number above 0 and at most ``at_most``."""
        value: Any = self.record.get(key)
        if not (is_finite_number(value) and 0 < value <= at_most):
            raise self.bad(key, f"a number above 0 and at most {at_most:g}")
        return float(value)

    def integer(self, key: str, at_least: int = 1, at_most: int | None = None) -> int | None:
        """An integer from ``at_least`` to ``at_most`` (None: no bound), or None when absent."""
        return None if self.record.get(key) is None else self.required_integer(key, at_least, at_most)

    def required_integer(self, key: str, at_least: int = 1, at_most: int | None = None) -> int:
        """An integer from ``at_least`` to ``at_most`` (None: no bound)."""
        value: Any = self.record.get(key)
        if not (is_int(value) and value >= at_least and (at_most is None or value <= at_most)):
            bounds = f">= {at_least}" if at_most is None else f"from {at_least} to {at_most}"
            raise self.bad(key, f"an integer {bounds}")
        return value

    def text(self, key: str, options: tuple[str, ...] | None = None) -> str | None:
        """Text (one of ``options`` when given), or None when absent."""
        value = self.record.get(key)
        if value is not None and not (isinstance(value, str) and (options is None or value in options)):
            raise self.bad(key, "text" if options is None else " or ".join(options))
        return value

    def names(self, key: str, allowed: tuple[str, ...] | None = None) -> dict[str, str]:
        """A mapping of utterance ids to names (``allowed``: to one of those)."""
        value = self.record.get(key) or {}
        kind = f"splits ({', '.join(allowed)})" if allowed else f"speaker names ({SPEAKER_RULE})"
        must = f"a mapping of utterance ids to {kind}"
        if not isinstance(value, dict):
            raise self.bad(key, must)
        for k, v in value.items():  # the first wrong entry, not the whole mapping (a corpus has many)
            if not (isinstance(k, str) and (v in allowed if allowed else is_safe_speaker(v))):
                raise UserError(
                    f"{self.path} field {self.prefix}{key}[{_shortened(repr(k))}] is {_shortened(repr(v))}, but "
                    f"{key} must be {must}; re-run `vqspeech encode`."
                )
        return dict(value)


def _shortened(text: str, limit: int = 80) -> str:
    """``text`` cut to ``limit`` characters (with an ellipsis) for a message."""
    return text if len(text) <= limit else text[: limit - 3] + "..."


@dataclass
class Encoding:
    """One utterance's codes at every level of the model that made them (what
    :meth:`vqspeech.VQSpeech.encode` returns and a codes folder holds), with its speaker and split
    when they are known."""

    codes: np.ndarray
    """int [F] (grouped codebooks: [F, G])."""
    top: np.ndarray | None = None
    """int [ceil(F / stride)]: the top codes of a hierarchical model (VQ-VAE-2), else None."""
    latents: np.ndarray | None = None
    """float32 [F, D]: the bottom quantizer's input, when asked for."""
    speaker: str | None = None
    split: str | None = None
    codebook: str | None = None
    """The digest of the codebook the codes index (``VQSpeech.codebook_digest``), when known: a
    model with another codebook refuses to decode them."""

    def __len__(self) -> int:
        return len(self.codes)


@dataclass
class TopLevelInfo:
    """``codes.json``'s ``top``: the top codes of a hierarchical model."""

    code_rate_hz: float
    num_codes: int
    """K of the top codebook (``"K"`` in the file)."""
    stride: int
    """Bottom codes per top code."""


@dataclass
class CodesInfo:
    """The fields of ``codes.json``. In the file ``num_codes`` is ``"K"``; unknown keys (a
    baseline's ``system``, ``features``, ...) are kept in ``extra`` and written back as they were."""

    code_rate_hz: float
    frame_offset_s: float
    """Time of frame 0's centre (half a frame)."""
    num_codes: int | None
    """K; None only for a folder of continuous features."""
    groups: int = 1
    checkpoint: str | None = None
    """The VQ-VAE that wrote the codes (absolute path)."""
    codebook: str | None = None
    """A digest of that VQ-VAE's codebook(s) (``VQSpeech.codebook_digest``): who may decode them."""
    sample_rate: int | None = None
    hop_length: int | None = None
    num_utterances: int | None = None
    speakers: dict[str, str] = field(default_factory=dict)
    """id -> speaker, when the input was a manifest."""
    splits: dict[str, str] = field(default_factory=dict)
    """id -> train | valid | test, when the input was a manifest."""
    top: TopLevelInfo | None = None
    level: str | None = None
    """In a prior's copy: the level it models (``bottom`` or ``top``)."""
    stride: int | None = None
    """Level ``top``: bottom codes per code."""
    bottom: dict[str, Any] | None = None
    """Level ``top``: the bottom level's ``code_rate_hz``, ``K`` and ``hop_length``."""
    extra: dict[str, Any] = field(default_factory=dict)

    _KEYS = (
        "code_rate_hz",
        "frame_offset_s",
        "K",
        "groups",
        "checkpoint",
        "codebook",
        "sample_rate",
        "hop_length",
        "num_utterances",
        "speakers",
        "splits",
        "top",
        "level",
        "stride",
        "bottom",
    )

    @classmethod
    def for_rate(cls, code_rate_hz: float, num_codes: int | None, **fields: Any) -> CodesInfo:
        """The info of codes at ``code_rate_hz``, each frame centred on its samples."""
        return cls(code_rate_hz, 0.5 / code_rate_hz, num_codes, **fields)

    def to_json(self) -> dict[str, Any]:
        record: dict[str, Any] = dict(self.extra)
        record.update(
            code_rate_hz=self.code_rate_hz, frame_offset_s=self.frame_offset_s, K=self.num_codes, groups=self.groups
        )
        optional = {
            "checkpoint": self.checkpoint,
            "codebook": self.codebook,
            "sample_rate": self.sample_rate,
            "hop_length": self.hop_length,
            "num_utterances": self.num_utterances,
            "speakers": self.speakers or None,
            "splits": self.splits or None,
            "top": None
            if self.top is None
            else {"code_rate_hz": self.top.code_rate_hz, "K": self.top.num_codes, "stride": self.top.stride},
            "level": self.level,
            "stride": self.stride,
            "bottom": self.bottom,
        }
        record.update({k: v for k, v in optional.items() if v is not None})
        return record

    @classmethod
    def from_json(cls, record: dict[str, Any], path: Path) -> CodesInfo:
        """Parse a ``codes.json`` record read from ``path``; a field of the wrong type or out of
        range raises UserError naming it (codes.json may have been edited by hand, and its sizes
        decide what readers allocate: K, groups, the code rate and the stride are bounded)."""
        fields = _Fields(record, path)
        rate = fields.required_number("code_rate_hz", MAX_CODE_RATE_HZ)
        groups = fields.integer("groups", 1, MAX_GROUPS)
        offset = record.get("frame_offset_s")
        if offset is not None and not (is_finite_number(offset) and 0 <= offset < 1 / rate):
            raise fields.bad("frame_offset_s", f"a number in [0, {1 / rate:g}) (within one code period)")
        return cls(
            code_rate_hz=rate,
            frame_offset_s=0.5 / rate if offset is None else float(offset),
            num_codes=fields.integer("K", 2, MAX_CODES),
            groups=1 if groups is None else groups,
            checkpoint=fields.text("checkpoint"),
            codebook=fields.text("codebook"),
            sample_rate=fields.integer("sample_rate"),
            hop_length=fields.integer("hop_length"),
            num_utterances=fields.integer("num_utterances", at_least=0),
            speakers=fields.names("speakers"),
            splits=fields.names("splits", SPLITS),
            top=_top_info(record.get("top"), path),
            level=fields.text("level", LEVELS),
            stride=fields.integer("stride", 1, MAX_STRIDE),
            bottom=record.get("bottom") if isinstance(record.get("bottom"), dict) else None,
            extra={k: v for k, v in record.items() if k not in cls._KEYS},
        )

    @classmethod
    def load(cls, path: str | Path) -> CodesInfo:
        path = Path(path)
        try:
            record = json.loads(path.read_text())
        except (OSError, ValueError, RecursionError) as exc:
            raise UserError(f"Cannot read {path} ({exc}); re-run `vqspeech encode`.") from None
        if not isinstance(record, dict):
            raise UserError(f"{path} does not hold a JSON object; re-run `vqspeech encode`.")
        return cls.from_json(record, path)

    def to_text(self) -> str:
        return json.dumps(self.to_json(), indent=2) + "\n"

    def save(self, path: str | Path) -> None:
        write_text_atomic(path, self.to_text())

    def without_ids(self) -> CodesInfo:
        """The same info without the per-utterance speakers and splits (a prior's copy)."""
        return CodesInfo(**{**self.__dict__, "speakers": {}, "splits": {}})

    def top_level(self) -> CodesInfo:
        """The info of the top codes as a level of their own: their rate, K and frame offset,
        ``level`` top, the ``stride`` to the bottom codes and the bottom level's rate and K."""
        if self.top is None:
            raise ValueError("these codes have one level")
        top = self.top
        return CodesInfo.for_rate(
            top.code_rate_hz,
            top.num_codes,
            checkpoint=self.checkpoint,
            codebook=self.codebook,
            sample_rate=self.sample_rate,
            hop_length=None if self.hop_length is None else self.hop_length * top.stride,
            num_utterances=self.num_utterances,
            speakers=self.speakers,
            splits=self.splits,
            level="top",
            stride=top.stride,
            extra=self.extra,
            bottom={
                k: v
                for k, v in (
                    ("code_rate_hz", self.code_rate_hz),
                    ("K", self.num_codes),
                    ("hop_length", self.hop_length),
                )
                if v is not None
            },
        )


def _top_info(record: Any, path: Path) -> TopLevelInfo | None:
    """``codes.json``'s ``top`` entry, checked like the file's own fields (None when absent)."""
    if record is None:
        return None
    if not isinstance(record, dict):
        raise UserError(
            f"{path} field top is {record!r}, but must be an object with code_rate_hz, K and stride; "
            "re-run `vqspeech encode`."
        )
    fields = _Fields(record, path, prefix="top.")
    return TopLevelInfo(
        fields.required_number("code_rate_hz", MAX_CODE_RATE_HZ),
        fields.required_integer("K", 2, MAX_CODES),
        fields.required_integer("stride", 1, MAX_STRIDE),
    )


def read_codes_file(path: str | Path, code_rate_hz: float | None = None) -> np.ndarray:
    """One codes file -> int64 [F] or [F, G]; unreadable or not codes: UserError. With
    ``code_rate_hz``, a file of more frames than the longest utterance a manifest may list (its
    header read first: a sparse file can claim gigabytes it does not hold) is refused unread."""
    max_frames = None if code_rate_hz is None else int(MAX_DURATION * code_rate_hz) + 1
    codes = _load_array(Path(path), ndim=(1, 2), max_frames=max_frames)
    # the range before the cast: an unsigned 2**63 or more would turn negative as int64
    if codes.size == 0 or not np.issubdtype(codes.dtype, np.integer) or codes.min() < 0 or codes.max() >= MAX_CODES:
        raise UserError(
            f"{path} does not hold codes (integers from 0 to {MAX_CODES - 1}, at least one frame); re-run "
            "`vqspeech encode`."
        )
    return codes.astype(np.int64)


def _load_array(path: Path, ndim: tuple[int, ...], max_frames: int | None = None) -> np.ndarray:
    try:  # memory-mapped first: a header that claims more data than the file holds fails here, unallocated
        mapped = np.load(path, mmap_mode="r")
        if not isinstance(mapped, np.ndarray):  # an .npz archive under an .npy name
            mapped.close()
            raise UserError(f"{path} is an archive of several arrays, not one array; re-run `vqspeech encode`.")
        if max_frames is not None and mapped.ndim and mapped.shape[0] > max_frames:
            raise UserError(
                f"{path} claims {mapped.shape[0]:,} frames, more than {MAX_DURATION / 3600:g} hours of codes "
                "(the longest utterance a manifest may list); it is damaged or crafted, re-run `vqspeech encode`."
            )
        array = np.array(mapped)
        del mapped
    except (OSError, ValueError, MemoryError) as exc:
        pickled = "allow_pickle" in str(exc)  # numpy's hint would invite an unsafe load
        reason = "not an array of numbers: random bytes or pickled objects" if pickled else first_line(exc)
        raise UserError(f"Cannot read {path} ({reason}); re-run `vqspeech encode`.") from None
    if array.ndim not in ndim:
        raise UserError(f"{path} holds shape {array.shape}; expected a {' or '.join(f'{n}-D' for n in ndim)} array.")
    return array


class CodesFolder:
    """A codes folder on disk, read one utterance at a time. :meth:`open` checks the folder."""

    def __init__(self, root: Path, info: CodesInfo):
        self.root, self.info = root, info
        self.code_ids = _ids(root / "codes")
        self.latent_ids = _ids(root / "latents")

    @classmethod
    def open(cls, root: str | Path) -> CodesFolder:
        """A folder written by ``encode``, ``baseline`` or ``prior sample``; UserError when it is not
        one or holds no code or latents files."""
        root = Path(root)
        if not (root / INFO_FILE).is_file():
            raise UserError(
                f"{root} is not a codes folder: it holds no codes.json; make one with "
                "`vqspeech encode` or `vqspeech baseline`."
            )
        if not ((root / "codes").is_dir() or (root / "latents").is_dir()):
            raise UserError(
                f"{root} is not a codes folder: it has neither codes/ nor latents/; make one "
                "with `vqspeech encode` or `vqspeech baseline`."
            )
        folder = cls(root, CodesInfo.load(root / INFO_FILE))
        if not folder.code_ids and not folder.latent_ids:
            raise UserError(f"{root} holds no codes/*.npy or latents/*.npy files; run `vqspeech encode` first.")
        expected = folder.info.num_utterances
        if expected is not None and len(folder.ids) != expected:  # a copy that stopped, a file deleted by hand
            listed = sorted(set(folder.info.speakers) | set(folder.info.splits))
            missing = [i for i in listed if i not in set(folder.ids)]
            example = f" ({missing[0]} is missing)" if missing else ""
            raise UserError(
                f"{root} holds {len(folder.ids)} utterances' files but its codes.json lists {expected}{example}; "
                "re-run `vqspeech encode` (or copy the folder again)."
            )
        return folder

    @classmethod
    def containing(cls, codes_file: Path) -> CodesFolder | None:
        """The folder whose ``codes/<id>.npy`` ``codes_file`` is, or None for a file of codes
        elsewhere."""
        root = codes_file.parent.parent
        if codes_file.parent.name != "codes" or not (root / INFO_FILE).is_file():
            return None
        return cls.open(root)

    @staticmethod
    def holds_codes(root: Path) -> bool:
        """True when ``root`` looks like a codes folder (it has ``codes/``)."""
        return (root / "codes").is_dir()

    def code_path(self, utt_id: str) -> Path:
        return self.root / "codes" / f"{utt_id}.npy"

    @property
    def ids(self) -> list[str]:
        """The utterances, sorted: those with codes (a folder of continuous features: with latents)."""
        return self.code_ids or self.latent_ids

    def codes(self, utt_id: str) -> np.ndarray:
        """int64 [F] (grouped codebooks: [F, G]); UserError unless the file's shape and range fit
        ``codes.json`` (its groups and K)."""
        path = self.code_path(utt_id)
        codes = read_codes_file(path, self.info.code_rate_hz)
        groups, num_codes = self.info.groups, self.info.num_codes
        shape_ok = codes.ndim == 1 if groups == 1 else codes.ndim == 2 and codes.shape[1] == groups
        if not shape_ok or (num_codes is not None and codes.max() >= num_codes):
            expected = "[frames]" if groups == 1 else f"[frames, {groups}]"
            raise UserError(
                f"{path} holds codes of shape {list(codes.shape)} up to {codes.max()}, but codes.json says "
                f"{expected} codes below K={num_codes}; re-run `vqspeech encode`."
            )
        return codes

    def top_codes(self, utt_id: str, frames: int) -> np.ndarray:
        """int64 [ceil(frames / stride)]: the top codes above ``frames`` bottom codes; UserError when
        they are missing or do not fit ``codes.json``'s ``top``."""
        top = self.info.top
        if top is None:
            raise UserError(f'The codes in {self.root} have a single level (codes.json has no "top" entry).')
        path = self.root / "codes_top" / f"{utt_id}.npy"
        if not path.is_file():
            raise UserError(
                f"{path} is missing: the folder's codes.json names a top level, so every "
                "utterance needs its top codes; re-run `vqspeech encode`."
            )
        codes = read_codes_file(path, top.code_rate_hz)
        expected = -(-frames // top.stride)
        if codes.ndim != 1 or len(codes) != expected or codes.max() >= top.num_codes:
            raise UserError(
                f"{path} holds {codes.shape} codes up to {codes.max()}; expected {expected} codes "
                f"below {top.num_codes} above {frames} bottom codes at stride {top.stride}: "
                "re-run `vqspeech encode`."
            )
        return codes

    def latents(self, utt_id: str) -> np.ndarray:
        """float32 [F, D]; UserError for values that are not finite numbers."""
        path = self.root / "latents" / f"{utt_id}.npy"
        latents = _load_array(path, ndim=(2,))
        if not np.issubdtype(latents.dtype, np.number) or not np.all(np.isfinite(latents)):
            raise UserError(f"{path} holds values that are not finite numbers; re-run `vqspeech encode --latents`.")
        return latents.astype(np.float32)

    def read(self, utt_id: str, *, latents: bool = False) -> Encoding:
        """The utterance's codes, its top codes when the folder has a top level, (``latents``) its
        latents, and its speaker and split when codes.json records them."""
        codes = self.codes(utt_id)
        top = self.top_codes(utt_id, len(codes)) if self.info.top is not None else None
        return Encoding(
            codes,
            top,
            self.latents(utt_id) if latents else None,
            self.info.speakers.get(utt_id),
            self.info.splits.get(utt_id),
            self.info.codebook,
        )


class CodesWriter:
    """Writes a codes folder: :meth:`add` each utterance, then :meth:`finish` with its info.

    Refuses a folder that already holds codes unless ``overwrite`` (or they are an interrupted
    write's, see :func:`refuse_existing_codes`); then codes.json, units.txt and
    rejects.tsv of the previous run are removed first, then its code, top-code and latents files
    (and temporary files of killed runs), so that an interrupted write never leaves a codes.json
    or units.txt describing files that are not there. The caller holds the folder's lock.
    """

    def __init__(
        self,
        root: str | Path,
        *,
        latents: bool = False,
        top: bool = False,
        overwrite: bool = False,
        samples: bool = False,
        system: str = "vqvae",
    ):
        self.root, self.latents, self.top = Path(root), latents, top
        refuse_existing_codes(self.root, overwrite, samples=samples, system=system)
        self.root.mkdir(parents=True, exist_ok=True)
        write_text_atomic(self.root / WRITER_MARK, "")  # an interrupted write's files stay ours to replace
        for name in (INFO_FILE, "units.txt", "rejects.tsv"):
            (self.root / name).unlink(missing_ok=True)
        for stale in _code_files(self.root):
            stale.unlink()
        for sub in ("codes", "latents", "codes_top"):
            remove_stale_temps(self.root / sub)
        for sub, kept in (("latents", latents), ("codes_top", top)):  # a level the old codes had, these do not
            if not kept and (self.root / sub).is_dir() and not any((self.root / sub).iterdir()):
                (self.root / sub).rmdir()
        (self.root / "codes").mkdir(parents=True, exist_ok=True)
        if latents:
            (self.root / "latents").mkdir(exist_ok=True)
        if top:
            (self.root / "codes_top").mkdir(exist_ok=True)
        self.lines: list[str] = []

    def add(self, utt_id: str, encoding: Encoding) -> None:
        """Write ``codes/<id>.npy`` (:data:`CODE_DTYPE`), and ``codes_top/`` and ``latents/`` when the folder has
        them. ``utt_id`` must be a safe file name: nothing is written outside the folder."""
        if not is_safe_name(utt_id):
            raise UserError(f"{utt_id!r} is not a safe name for a codes file (letters, digits, '_', '.', '-').")
        if (encoding.top is not None) != self.top or (self.latents and encoding.latents is None):
            raise ValueError(f"{utt_id}: the encoding's levels do not match the folder's")
        _save_npy(inside(self.root / "codes", f"{utt_id}.npy"), _storable(utt_id, encoding.codes))
        if encoding.top is not None:
            _save_npy(inside(self.root / "codes_top", f"{utt_id}.npy"), _storable(utt_id, encoding.top))
        if self.latents and encoding.latents is not None:
            _save_npy(inside(self.root / "latents", f"{utt_id}.npy"), encoding.latents.astype(np.float32))
        codes = encoding.codes
        tokens = codes.tolist() if codes.ndim == 1 else ["-".join(map(str, row)) for row in codes.tolist()]
        self.lines.append(f"{utt_id} {' '.join(map(str, tokens))}\n")

    def finish(self, info: CodesInfo, rejects: Iterable[tuple[str, str]] | None = None) -> CodesInfo:
        """Write ``units.txt``, ``rejects.tsv`` (when ``rejects`` is given) and, last, ``codes.json``
        with ``num_utterances`` set. Returns the info written."""
        write_text_atomic(self.root / "units.txt", "".join(self.lines))
        if rejects is not None:
            write_text_atomic(self.root / "rejects.tsv", "file\treason\n" + "".join(f"{f}\t{r}\n" for f, r in rejects))
        info.num_utterances = len(self.lines)
        info.save(self.root / INFO_FILE)
        return info


WRITER_MARK = ".vqspeech-codes"
"""Hidden file a :class:`CodesWriter` leaves in its folder before writing anything."""

SAMPLES_MARK = ".prior-sample"
"""Hidden file ``prior sample`` leaves in its output folder: codes beside their wavs and scores."""


def _holds_codes(root: Path) -> bool:
    """Whether ``root`` holds a codes folder's files (codes.json or any code file)."""
    return (root / INFO_FILE).exists() or bool(_code_files(root))


CODE_WRITERS = {"vqvae": "`vqspeech encode` (a VQ-VAE's codes)", "mfcc-kmeans": "`vqspeech baseline mfcc-kmeans`"}
"""Who wrote a codes folder, by its codes.json's ``system`` (none: a VQ-VAE's, ``encode``)."""


def refuse_existing_codes(root: Path, overwrite: bool, samples: bool = False, system: str = "vqvae") -> None:
    """UserError when ``root`` already holds codes and not ``overwrite``, or has a subfolder that
    is a link (its files are not the folder's to replace); check before long work. The files of an
    interrupted write (the writer's mark, no codes.json) are replaced without ``overwrite``: the
    identical command simply runs again. A folder of prior samples (:data:`SAMPLES_MARK`) is
    ``prior sample``'s alone (``samples``): other codes would sit beside its wavs and scores.
    ``overwrite`` replaces only codes of the same ``system`` (:data:`CODE_WRITERS`): a baseline's
    k-means codes never replace a model's, which its priors were trained on, nor the reverse."""
    if not samples and (root / SAMPLES_MARK).exists():
        raise UserError(
            f"{root} holds samples that `vqspeech prior sample` wrote; write these codes to another folder."
        )
    for sub in ("codes", "latents", "codes_top"):
        if (root / sub).is_symlink():
            raise UserError(f"{root / sub} is a link; give an output folder whose subfolders are its own.")
    if is_experiment_folder(root):
        raise UserError(
            f"{root} is an experiment folder (a model's or a prior's); write the codes to a folder of their "
            f"own, e.g. {root / ('codes' if system == 'vqvae' else 'baseline')}."
        )
    if _code_files(root) and not ((root / INFO_FILE).exists() or (root / WRITER_MARK).exists()):
        raise UserError(
            f"{root} holds .npy files that no vqspeech run wrote there (no codes.json); choose a new or "
            "empty output folder."
        )
    interrupted = (root / WRITER_MARK).exists() and not (root / INFO_FILE).exists()  # a killed run's: ours
    if _holds_codes(root) and not overwrite and not interrupted:
        raise UserError(f"{root} already holds codes; pass `overwrite=True` to replace them.")
    record = read_json_object(root / INFO_FILE) if _holds_codes(root) and not samples else None
    theirs = record.get("system", "vqvae") if record is not None else system
    if theirs != system:
        raise UserError(
            f"{root} holds codes {CODE_WRITERS.get(str(theirs), repr(theirs))} wrote; `overwrite` replaces only codes "
            f"of the same kind, so write these to another folder."
        )
    foreign = [name for name in ("units.txt", "rejects.tsv") if (root / name).exists()]
    if foreign and not _holds_codes(root):
        raise UserError(
            f"{root} holds {foreign[0]} but no codes: it is not a codes folder (a prepared corpus?); "
            "choose another output folder."
        )


def _ids(folder: Path) -> list[str]:
    """The utterance ids of ``folder/*.npy``; hidden files (temporary files of killed runs) are not
    utterances, nor anything but a regular file (a FIFO would block its reader)."""
    return sorted(p.stem for p in folder.glob("*.npy") if not p.name.startswith(".") and p.is_file())


def _code_files(root: Path) -> list[Path]:
    return [p for sub in ("codes", "latents", "codes_top") for p in (root / sub).glob("*.npy")]


def _storable(utt_id: str, codes: np.ndarray) -> np.ndarray:
    """``codes`` as :data:`CODE_DTYPE`; ValueError for codes it cannot hold (the writer's caller
    checks K against :data:`MAX_CODES` first, so that a code never wraps around to a negative one)."""
    if codes.size and (codes.min() < 0 or codes.max() >= MAX_CODES):
        raise ValueError(f"{utt_id}: codes from {codes.min()} to {codes.max()} do not fit in {np.dtype(CODE_DTYPE)}")
    return codes.astype(CODE_DTYPE)


def _save_npy(path: Path, array: np.ndarray) -> None:
    """Write ``array`` atomically; a failed write (numpy reports a full disk as "N requested and M
    written") is one sentence naming the file."""
    try:
        with atomic_path(path) as tmp:
            np.save(tmp, array)
    except OSError as exc:
        raise UserError(
            f"Cannot write {path} ({exc.strerror or first_line(exc)}); check the free disk space and the "
            "folder's permissions."
        ) from None


def code_usage(sequences: list[np.ndarray], num_codes: int) -> np.ndarray:
    """How often each code occurs: [K] counts; grouped codes [T, G] -> [G * K], group g's at g*K."""
    codes = np.concatenate(sequences)
    if codes.ndim == 2:
        codes = codes + np.arange(codes.shape[1]) * num_codes
    return np.bincount(codes.reshape(-1), minlength=num_codes * (1 if codes.ndim == 1 else codes.shape[1]))


def unigram_bits(train: list[np.ndarray], test: list[np.ndarray], num_codes: int) -> float:
    """Cross-entropy (bits per code) of ``test`` under the add-one unigram of ``train``; grouped
    codes [T, G]: the sum over groups of each group's (bits per code tuple)."""
    if train[0].ndim == 2:
        return sum(
            unigram_bits([c[:, g] for c in train], [c[:, g] for c in test], num_codes) for g in range(train[0].shape[1])
        )
    counts = np.bincount(np.concatenate(train), minlength=num_codes).astype(np.float64) + 1.0
    log_p = np.log2(counts / counts.sum())
    everything = np.concatenate(test)
    return float(-log_p[everything].mean())
