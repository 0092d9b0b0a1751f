"""The page's building blocks: escaping and number formatting, notes and tables, reading the
experiment's JSON files, the :class:`Page` every section renders into (with the manifest it links
audio from), and the inline stylesheet and media-check script."""

from __future__ import annotations

import functools
import html
import json
import math
import os
import re
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path
from typing import Any, TypeGuard
from urllib.parse import quote

from ...checkpoint import codebook_digest, load_checkpoint, used_checkpoint
from ...config import training_stage
from ...data.manifest import data_digest, manifest_file
from ...errors import UserError, first_line
from ...fileio import file_digest, is_int, read_json_object, user_path
from .labels import ARROWS


@functools.cache
def stylesheet() -> str:
    """The page's CSS (``report.css``), inlined in its <style>."""
    return files(__package__).joinpath("report.css").read_text(encoding="utf-8")


@functools.cache
def media_check_script() -> str:
    """The page's one script (``report.js``), inlined in its <script>.

    After load it checks each <img> (complete && naturalWidth > 0) and <audio> (readyState >=
    HAVE_METADATA, 'loadedmetadata' or 'error'), writes data-media-{total,ok,failed,checked} on
    <body> and shows a banner naming the failures. A file:// page cannot fetch() its neighbours,
    so media events it is.
    """
    return files(__package__).joinpath("report.js").read_text(encoding="utf-8")


# --- small helpers -------------------------------------------------------------------------------


def esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


class SectionError(Exception):
    """A section cannot be shown; its message becomes the note in its place."""


def read_json(path: Path, name: str | None = None) -> Any:
    """Parsed JSON, or SectionError naming the file (as ``name``, default its file name) and the problem."""
    name = name or path.name
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise SectionError(f"{name} is missing") from None
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise SectionError(f"cannot read {name} ({first_line(exc)})") from None


def read_json_dict(path: Path, name: str | None = None) -> dict:
    data = read_json(path, name)
    if not isinstance(data, dict):
        raise SectionError(f"{name or path.name} does not hold a JSON object")
    return data


def is_number(value: Any) -> TypeGuard[int | float]:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def fmt(value: Any, kind: str = "num") -> str:
    """A value for a table cell: integers as they are, floats to 3-4 significant places."""
    if value is None:
        return "\u2014"
    if not is_number(value):
        if isinstance(value, (list, dict)):
            return json.dumps(value)
        return str(value)
    if isinstance(value, float) and not math.isfinite(value):  # an edited or broken record: no result
        return f"\u2014 (not a number: {value})"
    if kind == "pct" and 0 <= value <= 1:
        return f"{100 * value:.1f}%"
    if isinstance(value, int) or (kind == "int" and float(value).is_integer()):
        return f"{int(value):,}"
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    if abs(value) >= 100:
        return f"{value:.1f}"
    return f"{value:.3f}" if abs(value) >= 0.001 or value == 0 else f"{value:.2e}"


def label_for(key: str, labels: dict) -> tuple[str, str]:
    entry = labels.get(key)
    if entry:
        return entry[0], entry[1]
    return key.replace("_", " ").capitalize(), ""


def short_label(key: str, labels: dict) -> str:
    """The label without its parenthesis, for tight cells."""
    return re.sub(r"\s*\(.*?\)", "", label_for(key, labels)[0])


def arrow(direction: str) -> str:
    if direction not in ARROWS:
        return ""
    symbol, words = ARROWS[direction]
    return f' <span class="arrow" title="{words}">{symbol} {words}</span>'


def note(text: str) -> str:
    """A visible note; `backticked` stretches become <code>."""
    return '<p class="note">' + re.sub(r"`([^`]+)`", r"<code>\1</code>", esc(text)) + "</p>"


def key_value_table(record: dict, labels: dict, caption: str = "") -> str:
    """Known keys first (in label order), then any other numeric or short text values."""
    keys = [k for k in labels if k in record] + [k for k in record if k not in labels]
    rows = []
    for key in keys:
        value = record[key]
        if not (is_number(value) or value is None or isinstance(value, str)):
            continue
        label, direction = label_for(key, labels)
        cell = f'<td class="num">{esc(fmt(value))}</td>' if is_number(value) else f"<td>{esc(fmt(value))}</td>"
        rows.append(f"<tr><th>{esc(label)}{arrow(direction)}</th>{cell}</tr>")
    if not rows:
        return note("No values to show.")
    cap = f"<caption>{esc(caption)}</caption>" if caption else ""
    return f"<table>{cap}{''.join(rows)}</table>"


@dataclass
class Page:
    """What every section needs: the folders, and how to link a file from the page."""

    exp_dir: Path
    out_dir: Path
    config: dict

    @functools.cached_property
    def manifest(self) -> Path | None:
        return manifest_path(self)

    @functools.cached_property
    def records(self) -> dict[str, dict]:
        return read_manifest(self.manifest)

    @functools.cached_property
    def last_checkpoint(self) -> dict | None:
        """``checkpoints/last.pt`` (the model decode, convert and the evaluations load), or None."""
        last = self.exp_dir / "checkpoints" / "last.pt"
        if not last.is_file():
            return None
        try:
            return load_checkpoint(last)
        except UserError:
            return None

    @property
    def stage(self) -> str | None:
        """The stage the experiment's config trains (``joint``, ``units``, ``decoder``), or None."""
        model, train = self.config.get("model"), self.config.get("train")
        if not isinstance(model, dict):
            return None
        return training_stage({"model": model, "train": train if isinstance(train, dict) else {}})

    @functools.cached_property
    def untrained_speakers(self) -> list[str]:
        """Speakers of the model's table its waveform decoder never trained (a decoder stage on fewer
        speakers than its units; the checkpoint records them)."""
        names = (self.last_checkpoint or {}).get("untrained_speakers")
        return [str(n) for n in names] if isinstance(names, list) else []

    @functools.cached_property
    def model_step(self) -> int | None:
        """The training step of the model that decode, convert and the evaluations load
        (``checkpoints/last.pt``; ``train_summary.json`` is written only when a run ends), else the
        summary's step, else None."""
        step = (self.last_checkpoint or {}).get("step")
        if is_int(step):
            return step
        summary = read_json_object(self.exp_dir / "train_summary.json") or {}
        return summary["step"] if is_int(summary.get("step")) else None

    @functools.cached_property
    def model_codebook(self) -> str | None:
        """The digest (:func:`vqspeech.checkpoint.codebook_digest`) of that model's codebook, or None."""
        weights = (self.last_checkpoint or {}).get("model")
        return codebook_digest(weights) if isinstance(weights, dict) else None

    def codebook_moved(self, recorded: object) -> bool:
        """Whether results that recorded the codebook digest ``recorded`` were made with another
        codebook than the model's now (it trained on since); False when either is unknown."""
        return isinstance(recorded, str) and self.model_codebook is not None and recorded != self.model_codebook

    @functools.cached_property
    def model_digest(self) -> str | None:
        """The digest (:func:`vqspeech.fileio.file_digest`) of ``checkpoints/last.pt``, or None."""
        last = self.exp_dir / "checkpoints" / "last.pt"
        return file_digest(last) if last.is_file() else None

    @functools.cached_property
    def prior_state(self) -> tuple[int | None, str] | None:
        """(step, digest) of the checkpoint `prior sample` draws from in ``EXP/prior`` (its best.pt,
        else last.pt), or None when there is none."""
        folder = self.exp_dir / "prior"
        if not (folder / "checkpoints").is_dir():
            return None
        try:
            path = used_checkpoint(folder)
            step = load_checkpoint(path).get("step")
            return (step if is_int(step) else None), file_digest(path)
        except (UserError, OSError):
            return None

    @functools.cached_property
    def manifest_digest(self) -> str | None:
        """The digest (:func:`vqspeech.data.manifest.data_digest`) of the data the experiment's
        manifest describes as they are now, or None (no manifest, an unreadable one)."""
        if self.manifest is None or not manifest_file(self.manifest).is_file():
            return None
        try:
            return data_digest(self.manifest)
        except (UserError, OSError):
            return None

    def url(self, path: Path) -> str:
        """The path relative to the page's folder, percent-encoded, HTML-escaped for an attribute."""
        rel = os.path.relpath(Path(path).absolute(), self.out_dir)
        return esc(quote(Path(rel).as_posix(), safe="/"))

    def audio(self, path: Path) -> str:
        if not path.is_file():
            return f'<span class="missing">missing: {esc(self.rel(path))}</span>'
        return f'<audio controls preload="metadata" src="{self.url(path)}"></audio>'

    def image(self, path: Path, alt: str, link: bool = True) -> str:
        if not path.is_file():
            return f'<span class="missing">missing: {esc(self.rel(path))}</span>'
        img = f'<img src="{self.url(path)}" alt="{esc(alt)}" loading="eager">'
        return f'<a href="{self.url(path)}">{img}</a>' if link else img

    def recorded_file(self, folder: Path, name: str) -> Path | None:
        """``folder / name`` for a file name a results JSON records, or None when it leads out of
        ``folder`` (an edited record must not make the page link or play other files)."""
        root = os.path.realpath(folder)
        path = os.path.realpath(folder / name)
        return Path(path) if os.path.commonpath([root, path]) == root else None

    def recorded_audio(self, folder: Path, name: str) -> str:
        path = self.recorded_file(folder, name)
        return (
            self.audio(path)
            if path
            else f'<span class="missing">left out: {esc(name)} is not in {esc(folder.name)}/</span>'
        )

    def recorded_image(self, folder: Path, name: str, alt: str) -> str:
        path = self.recorded_file(folder, name)
        return (
            self.image(path, alt)
            if path
            else f'<span class="missing">left out: {esc(name)} is not in {esc(folder.name)}/</span>'
        )

    def rel(self, path: Path) -> str:
        return os.path.relpath(Path(path).absolute(), self.out_dir)


# --- data: manifest, prepare.json ----------------------------------------------------------------


def manifest_path(page: Page) -> Path | None:
    data = page.config.get("data") if isinstance(page.config.get("data"), dict) else {}
    value = data.get("manifest") if data else None
    if not value:
        return None
    path = user_path(str(value))
    if path.is_absolute():
        return path
    for base in (Path.cwd(), page.exp_dir, *page.exp_dir.absolute().parents):
        if (base / path).is_file():
            return base / path
    return path


def read_manifest(path: Path | None) -> dict[str, dict]:
    """id -> manifest record (malformed lines skipped); empty when unreadable."""
    records: dict[str, dict] = {}
    if path is None or not path.is_file():
        return records
    try:
        with path.open(encoding="utf-8") as f:
            for line in f:
                try:
                    record = json.loads(line)
                except (ValueError, RecursionError):
                    continue
                if isinstance(record, dict) and "id" in record:
                    records[str(record["id"])] = record
    except (OSError, UnicodeDecodeError):
        return {}
    return records


def manifest_audio(manifest: Path | None, record: dict | None) -> Path | None:
    if manifest is None or not record or not record.get("audio"):
        return None
    audio = Path(str(record["audio"]))
    return audio if audio.is_absolute() else manifest.parent / audio


def corpus_layout(manifest: Path | None) -> tuple[str | None, dict]:
    """(layout, prepare.json) for the manifest's folder; (None, {}) when unknown."""
    if manifest is None:
        return None, {}
    try:
        prepare = read_json_dict(manifest.parent / "prepare.json")
    except SectionError:
        return None, {}
    layout = prepare.get("layout")
    return (str(layout) if layout else None), prepare
