"""Files and folders written safely: atomic writes, names that cannot leave their folder, a lock
that keeps one writer per output folder, and a check that a folder is writable before long work."""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import re
import socket
import time
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from types import TracebackType
from typing import TypeGuard

from .errors import UserError, first_line

try:
    import fcntl
except ImportError:  # Windows: stale locks are taken over without the flock (see FolderLock._remove_stale)
    fcntl = None  # type: ignore[assignment]

SAFE_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")
"""A name that is safe as one file name and as a command-line value: letters, digits, ``_ . -``,
starting with a letter, digit or ``_`` (a leading dot hides a file, a leading dash reads as an
option); the whole name, matched with ``fullmatch``, so no trailing newline slips through."""

NAME_MAX = 255
"""The longest file name (bytes) of the common file systems."""

SAFE_NAME_MAX = 200
"""The longest safe name (characters, ASCII): room for the suffixes verbs append (``.TextGrid``,
``.spec.png``, a temporary file's ``.<name>.tmp<pid>``) within :data:`NAME_MAX`."""

TEMP_MARK = ".tmp"
"""Temporary files are named ``.<stem>.tmp<pid><suffix>``: hidden, so every reader skips them."""


def is_safe_name(name: object) -> bool:
    return isinstance(name, str) and len(name) <= SAFE_NAME_MAX and bool(SAFE_NAME.fullmatch(name))


def case_twin(name: str, names: Iterable[str]) -> str | None:
    """The name of ``names`` that equals ``name`` but for case, or None: two such names are one
    file on a case-blind file system (macOS, Windows), and one speaker to a reader."""
    return next((n for n in names if n.casefold() == name.casefold()), None)


def check_plain_name(name: object, what: str = "Speaker name") -> None:
    """UserError unless ``name`` can be a file or folder name (:func:`is_safe_name`)."""
    if not is_safe_name(name):
        raise UserError(
            f"{what} {name!r} is not a plain name; use letters, digits, '_', '.' and '-', starting with a "
            f"letter, digit or '_', at most {SAFE_NAME_MAX} characters."
        )


def file_stamp(path: str | os.PathLike) -> list[int]:
    """[size, modification time in ns] of a file: a replaced file shows as a change."""
    stat = os.stat(path)
    return [stat.st_size, stat.st_mtime_ns]


def read_json_object(path: str | os.PathLike) -> dict | None:
    """The JSON object (a dict) in ``path``; None when the file is missing, unreadable, not JSON,
    too deep, or holds something else: for records a verb wrote and reads back."""
    try:
        record = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError):
        return None
    return record if isinstance(record, dict) else None


def is_int(value: object) -> TypeGuard[int]:
    """An integer read from JSON, YAML or a config (a bool is an int to Python, never a count here)."""
    return isinstance(value, int) and not isinstance(value, bool)


def is_finite_number(value: object) -> bool:
    """A finite int or float read from JSON, YAML or a config (not a bool, NaN or infinity)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def is_utf8(text: str) -> bool:
    """False for a path that holds bytes which are not UTF-8 (Python keeps them as lone surrogates)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def user_path(path: str | os.PathLike) -> Path:
    """``path`` with a leading ``~`` or ``~user`` expanded; UserError for a user that does not exist."""
    try:
        return Path(path).expanduser()
    except RuntimeError:  # Path.expanduser: "Could not determine home directory"
        raise UserError(f"Cannot expand {path}: no such user's home folder; give the path in full.") from None


def overlapping(a: str | os.PathLike, b: str | os.PathLike) -> bool:
    """Whether two folders are the same or one lies inside the other, once links are resolved."""
    first, second = Path(os.path.realpath(a)), Path(os.path.realpath(b))  # realpath: a link loop is no error
    return first == second or first.is_relative_to(second) or second.is_relative_to(first)


def inside(folder: str | os.PathLike, name: str) -> Path:
    """``folder / name`` when that stays inside ``folder`` once resolved; UserError otherwise (an
    absolute name, ``..``, a path through a link that points elsewhere)."""
    root = Path(os.path.realpath(folder))  # realpath: a link loop is no error (and stays inside)
    path = Path(os.path.realpath(root / name))
    if not name or path == root or not path.is_relative_to(root):
        raise UserError(f"{name!r} would be written outside {folder} (or is not a name); refusing to write it.")
    if len(os.fsencode(Path(name).name)) > NAME_MAX:
        raise UserError(f"The file name {Path(name).name[:40]}... is longer than {NAME_MAX} bytes; shorten the input.")
    return Path(folder) / name


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success rename it to ``path``, else remove it.

    A reader never sees a half-written file, and an interrupted write leaves the old file intact.
    The temporary name keeps the target's suffix (some writers choose the format by it). A failure
    to remove the temporary file never hides the error that made the write fail.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}{TEMP_MARK}{os.getpid()}{path.suffix}")
    if len(os.fsencode(tmp.name)) > NAME_MAX:  # a name that fits, but not with the temporary prefix
        stem = hashlib.sha1(os.fsencode(path.stem)).hexdigest()[:16]
        tmp = path.with_name(f".{stem}{TEMP_MARK}{os.getpid()}{path.suffix}")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` as UTF-8, atomically. Bytes of a file name that were not UTF-8 (Python keeps
    them as lone surrogates) are written as backslash escapes (``\\udcff``), so the file is always valid UTF-8."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8", errors="backslashreplace")


def remove_stale_temps(folder: Path) -> None:
    """Remove the temporary files that killed runs left in ``folder`` (not in its subfolders)."""
    for path in folder.glob(f".*{TEMP_MARK}*"):
        with contextlib.suppress(OSError):
            path.unlink()


def check_writable_parent(path: str | os.PathLike) -> None:
    """UserError unless a file can be written at ``path`` (its folder exists or can be made, is a
    folder, and accepts a file), checked before long work."""
    path = Path(path)
    if path.is_dir():
        raise UserError(f"{path} is a folder; give a file name.")
    if len(os.fsencode(path.name)) > NAME_MAX:
        raise UserError(f"The file name {path.name[:40]}... is longer than {NAME_MAX} bytes; choose a shorter name.")
    writable_folder(path.parent)


DEMO_MARK = ".vqspeech-demo"
"""Hidden file ``demo-data`` writes into its corpus: no other verb writes there."""

CONVERSION_EVALUATION_MARK = ".evaluate-conversion"
"""Hidden file ``evaluate conversion`` writes into its output folder before any output."""

DECODE_MARK = ".vqspeech-decode"
"""Hidden file ``decode`` writes into an output folder (not beside a single output file)."""

CONVERT_MARK = ".vqspeech-convert"
"""Hidden file ``convert`` writes into an output folder (not beside a single output file)."""

ALIGN_MARK = "align.json"
"""``align``'s record of its settings and inputs, written when it starts: marks its output folder."""

PREPARED_MARK = ".vqspeech-cache.json"
"""The file `prepare` keeps in a prepared corpus (its audio cache record)."""

OWNED_FOLDER_MARKS = {
    ".vqspeech-codes": "a codes folder",
    PREPARED_MARK: "a prepared corpus",
    DEMO_MARK: "a demo corpus",
    CONVERSION_EVALUATION_MARK: "a conversion evaluation's folder",
    DECODE_MARK: "a folder of audio `vqspeech decode` generated",
    CONVERT_MARK: "a folder of audio `vqspeech convert` generated",
    ALIGN_MARK: "an alignment folder `vqspeech align` wrote",
}
"""Files that mark a folder as another command's output (``encode``'s, ``prepare``'s,
``demo-data``'s, ``evaluate conversion``'s, ``decode``'s, ``convert``'s, ``align``'s)."""


RUN_RECORD = ".vqspeech-run.json"
"""In a decode or convert output folder: each output an unfinished (or killed) run has written,
with the verb, the digest of the settings that made it (:func:`run_settings`) and the file's size
and time. An output is recorded as it takes its name, and the record goes when its run finishes.
The identical rerun of a killed run carries on where it stopped; another run replaces a killed
run's outputs only with ``overwrite``, and the rest of them stay recorded as that run's."""


def json_digest(value: object) -> str:
    """The first 16 hex digits of the SHA-256 of ``value`` as JSON (lists, numbers, strings): the
    same description gives the same digest in every run."""
    return hashlib.sha256(json.dumps(value).encode()).hexdigest()[:16]


def file_digest(path: str | os.PathLike) -> str:
    """The first 16 hex digits of a file's SHA-256: the same content, wherever and whenever."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()[:16]


def write_generation_mark(folder: Path, mark: str, outputs: dict[str, dict]) -> None:
    """Write ``decode``'s or ``convert``'s mark into its output ``folder``: the folder is theirs,
    and ``outputs`` maps each finished output's file name to what made it, {"step": the model's
    training step, "model": its checkpoint's :func:`file_digest`} (None: not known), recorded with
    the file's size and time."""
    entries = {n: {**made, "stamp": file_stamp(folder / n)} for n, made in outputs.items()}
    write_text_atomic(folder / mark, json.dumps({"outputs": entries}) + "\n")


def read_generation_mark(folder: Path, mark: str) -> dict[str, dict]:
    """The outputs a :func:`write_generation_mark` mark records that are still as their run wrote
    them, {name: {"step", "model"}}; a file replaced or added since is left out (who made it is not
    known), as is everything of a mark that cannot be read. A step or digest that is not a
    plausible one reads as None."""
    record = read_json_object(folder / mark) or {}
    outputs = record.get("outputs")
    if not isinstance(outputs, dict):
        return {}
    made: dict[str, dict] = {}
    for name, entry in outputs.items():
        if not (is_safe_name(name) and isinstance(entry, dict) and (folder / name).is_file()):
            continue
        if entry.get("stamp") != file_stamp(folder / name):
            continue
        step, model = entry.get("step"), entry.get("model")
        made[name] = {
            "step": step if is_int(step) and 0 <= step < 2**53 else None,
            "model": model if isinstance(model, str) and re.fullmatch(r"[0-9a-f]{16}", model) else None,
        }
    return made


TRAINING_SUBFOLDERS = ("checkpoints", "tb")
"""What training writes below an experiment folder (and resumes from): no other verb writes there."""

TRAINING_FILES = ("config.yaml", "overrides.yaml", "speakers.txt", "train_summary.json", "enrolment.json")
"""Files training (or enrolment) writes at the top of an experiment folder: no other verb replaces them."""


OWN_KINDS = {
    "encode": ".vqspeech-codes",
    "baseline": ".vqspeech-codes",
    "prior sample": ".vqspeech-codes",
    "prepare": PREPARED_MARK,
    "demo-data": DEMO_MARK,
    "evaluate conversion": CONVERSION_EVALUATION_MARK,
    "decode": DECODE_MARK,
    "convert": CONVERT_MARK,
    "align": ALIGN_MARK,
}
"""Verbs whose output folder is itself one of :data:`OWNED_FOLDER_MARKS`' kinds (its writer)."""


EXPERIMENT_WRITERS = ("train", "prior train", "enroll")
"""The verbs whose output folder is an experiment (a model's or a prior's); no other writes there."""


def is_experiment_folder(folder: str | os.PathLike) -> bool:
    """A trained model's or a prior's folder (``train``/``prior train``/``enroll`` wrote it): it has
    ``overrides.yaml`` or ``checkpoints/``."""
    return (Path(folder) / "overrides.yaml").exists() or (Path(folder) / "checkpoints").is_dir()


def owning_folder(folder: str | os.PathLike, own_mark: str | None = None) -> tuple[Path, str] | None:
    """(the folder, what it is) when ``folder`` is or lies inside a folder another command owns
    (:data:`OWNED_FOLDER_MARKS`), else None. ``own_mark``: a mark ``folder`` itself may carry
    (its writer rewriting its own output)."""
    start = Path(os.path.realpath(folder))
    for owner in (start, *start.parents):
        for mark, what in OWNED_FOLDER_MARKS.items():
            if not (owner == start and mark == own_mark) and (owner / mark).exists():
                return owner, what
        if owner.name in TRAINING_SUBFOLDERS and is_experiment_folder(owner.parent):  # training's own
            return owner, f"the {owner.name} folder of an experiment"
    return None


def model_home(checkpoint: str | os.PathLike) -> Path | None:
    """The experiment a checkpoint file belongs to: ``EXP`` for ``EXP/checkpoints/<name>.pt``, None
    for a checkpoint elsewhere (an export, a copy), wherever it lies."""
    for folder in (Path(os.path.abspath(checkpoint)).parent, Path(os.path.realpath(checkpoint)).parent):
        if folder.name == "checkpoints" and is_experiment_folder(folder.parent):  # also a linked checkpoints/
            return Path(os.path.realpath(folder.parent))
    return None


def enclosing_experiment(path: str | os.PathLike) -> Path | None:
    """The nearest experiment folder that holds ``path`` (``path`` itself excluded), by real paths."""
    for folder in Path(os.path.realpath(path)).parents:
        if is_experiment_folder(folder):
            return folder
    return None


def check_results_home(path: str | os.PathLike, made_by: Sequence[str | os.PathLike | None]) -> None:
    """UserError when the output ``path`` lies inside an experiment folder that is not the home of
    a model in ``made_by`` (checkpoint files, :func:`model_home`): that experiment's report would
    show another model's results as its own."""
    home = enclosing_experiment(path)
    models = [Path(m) for m in made_by if m is not None]
    homes = [h for h in map(model_home, models) if h is not None]
    if home is None or home in homes:
        return
    if not homes:  # an export or a copy: its results belong in no experiment
        made = f"the model {models[0]}, which belongs to no experiment" if models else "no model of that experiment"
        where = "a folder outside any experiment"
    else:
        made, where = (
            f"the model {models[0]}",
            f"{homes[0]} (that model's experiment) or a folder outside any experiment",
        )
    raise UserError(
        f"{path} lies inside the experiment {home}, whose report would show these results as its own, but "
        f"they are of {made}; write them into {where}."
    )


def check_not_in_owned_folder(path: str | os.PathLike, own_mark: str | None = None) -> None:
    """UserError when the file ``path`` would be written into a folder that another command owns
    and later commands read (a codes folder, a prepared corpus, or any folder inside one): it could
    replace one of its files (``codes.json``, a cached wav) or be read as one of them."""
    found = owning_folder(Path(path).parent, own_mark)
    if found is not None:
        raise UserError(
            f"{path} would be written into {found[0]}, {found[1]} that other commands read; write it elsewhere."
        )
    if Path(path).name in TRAINING_FILES and is_experiment_folder(Path(path).parent):
        raise UserError(f"{path} is a file training wrote into its experiment folder; write it elsewhere.")


def check_not_an_input(path: str | os.PathLike, inputs: Iterable[str | os.PathLike | None]) -> None:
    """UserError when the output ``path`` is one of the run's input files ``inputs`` (None skipped),
    once links are resolved: ``--overwrite`` would replace what the run reads."""
    out = Path(os.path.realpath(path))
    for given in inputs:
        if given is not None and out == Path(os.path.realpath(given)):
            raise UserError(f"{path} is an input of this run; write the output under another name.")


def check_output_file(
    path: str | os.PathLike, overwrite: bool, inputs: Iterable[str | os.PathLike | None] = ()
) -> Path:
    """UserError unless ``path`` can take an output file: none of ``inputs`` (:func:`check_not_an_input`),
    nothing there (or, with ``overwrite``, a regular file), in no folder another verb owns, in a
    folder that accepts a file."""
    path = Path(path)
    check_not_an_input(path, inputs)
    if os.path.lexists(path):
        if not overwrite:
            raise UserError(f"{path} exists; pass `overwrite=True` to replace it, or choose another name.")
        if not path.is_file():
            raise UserError(f"{path} is not a regular file (a folder, a device or a pipe); choose another name.")
    check_not_in_owned_folder(path)
    check_writable_parent(path)
    return path


RESULT_KINDS = {
    "loss": ("bits_per_sample", "manifest", "split"),
    "probe": ("system", "codes_dir"),
}
"""The result files a verb writes where the user says (``"result"`` in the JSON), each with the keys
that tell a file written before that field."""


def result_kind(path: str | os.PathLike) -> str | None:
    """Which kind of :data:`RESULT_KINDS` the JSON file at ``path`` holds, or None (not one, unreadable)."""
    record = read_json_object(Path(path))
    if record is None:
        return None
    kind = record.get("result")
    if isinstance(kind, str) and kind in RESULT_KINDS:
        return kind
    return next((k for k, keys in RESULT_KINDS.items() if all(key in record for key in keys)), None)


def check_result_kind(path: str | os.PathLike, kind: str) -> None:
    """UserError when ``path`` holds another kind of result: ``--overwrite`` replaces a verb's own
    result, never another's (the report would read loss metrics as a probe, or the reverse)."""
    if not Path(path).is_file():
        return
    found = result_kind(path)
    if found is not None and found != kind:
        raise UserError(
            f"{path} holds {found} results, not {kind} results; --overwrite replaces only its own kind, "
            "so choose another name."
        )
    if found is None and Path(path).stat().st_size > 0:
        raise UserError(
            f"{path} holds no {kind} results of vqspeech (another file: a manifest, someone's notes?); "
            "--overwrite replaces only its own kind, so choose another name."
        )


def check_input_file(path: Path, what: str) -> None:
    """UserError unless ``path`` is a regular file to read (``what``: "Audio file", "Alignment
    file"): a folder, a pipe or device, a broken or looping link and a missing file each say so."""
    if path.is_file():
        return
    if path.is_dir():
        raise UserError(f"{what} {path} is a folder, not a file; check the path.")
    if path.exists():
        raise UserError(f"{what} {path} is not a regular file (a device or a pipe); check the path.")
    if path.is_symlink():
        raise UserError(f"{what} {path} is a link that leads nowhere (or back to itself); check the path.")
    raise UserError(f"{what} {path} does not exist; check the path.")


def writable_folder(folder: str | os.PathLike) -> Path:
    """Make ``folder`` if needed and check that a file can be written in it; UserError naming the
    folder and the reason otherwise (a file in the way, no permission, a full or read-only disk)."""
    folder = Path(folder)
    for parent in (folder, *folder.parents):
        if parent.exists() and not parent.is_dir():
            raise UserError(f"{parent} is a file, so {folder} cannot be a folder; choose another output path.")
        if parent.is_symlink() and not parent.exists():
            raise UserError(
                f"{parent} is a link to {os.readlink(parent)}, which does not exist; fix or remove the link, or "
                "choose another output path."
            )
    probe = folder / f".write-test{TEMP_MARK}{os.getpid()}"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe.write_bytes(b"\0" * 4096)  # a few bytes: a full disk still creates empty files
    except OSError as exc:
        raise UserError(
            f"Cannot write to {folder} ({exc.strerror or first_line(exc)}); choose another "
            "folder, or check its permissions and the free disk space."
        ) from None
    finally:
        with contextlib.suppress(OSError):
            probe.unlink(missing_ok=True)
    return folder


def process_start(pid: int) -> str | None:
    """When process ``pid`` started (clock ticks after boot, from /proc), or None if unknown."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]


def process_record(verb: str, folder: Path) -> dict:
    """What a lock or a reader's entry in ``folder`` says of this process: pid, host, verb, start
    time, and the folder's identity (:func:`folder_identity`)."""
    return {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "verb": verb,
        "started": time.time(),
        "process_start": process_start(os.getpid()),
        "folder": folder_identity(folder),
    }


def folder_identity(folder: Path) -> list[int] | None:
    """The folder's device and inode: a copy of the folder (`cp -a`, a backup restored) has others,
    a moved one keeps them."""
    try:
        info = os.stat(folder)
    except OSError:
        return None
    return [info.st_dev, info.st_ino]


def process_holds(record: dict, folder: Path) -> bool:
    """Whether the process a record in ``folder`` names runs and the record was written in this
    folder: a lock or entry copied with its folder, while its process runs on, holds only the
    original (records without an identity, from earlier versions, are taken at their word)."""
    recorded = record.get("folder")
    return process_alive(record) and (recorded is None or recorded == folder_identity(folder))


def read_process_record(path: Path) -> dict:
    """The :func:`process_record` in ``path``, or {} when it is unreadable (being written this
    instant, or broken: any field of the wrong type, so a crafted file is treated like a broken one)."""
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError, RecursionError):
        return {}
    if not isinstance(record, dict):
        return {}
    started = record.get("started")
    well_formed = (
        is_int(record.get("pid")) and 0 < record["pid"] < 2**31
        and isinstance(record.get("host"), str)
        and isinstance(record.get("verb"), str)
        and isinstance(started, (int, float)) and not isinstance(started, bool) and 0 <= started < 1e11
        and isinstance(record.get("process_start"), (str, type(None)))
        and (record.get("folder") is None
             or (isinstance(record["folder"], list) and len(record["folder"]) == 2
                 and all(is_int(v) for v in record["folder"])))
    )  # fmt: skip
    return record if well_formed else {}


def process_alive(record: dict) -> bool:
    """Whether the process a :func:`process_record` names still runs (not a later process that was
    given its id); another machine's process is assumed to run."""
    pid = record.get("pid")
    if record.get("host") != socket.gethostname():
        return True  # another machine's process cannot be checked from here: assume it runs
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # it exists, under another user
    started = process_start(pid)
    return started is None or record.get("process_start") in (None, started)


def describe_process(record: dict) -> str:
    """ "`vqspeech VERB` (process N on HOST, since DATE TIME)" for a :func:`process_record`."""
    since = time.strftime("%Y-%m-%d %H:%M", time.localtime(record["started"]))
    return f"`vqspeech {record['verb']}` (process {record['pid']} on {record['host']}, since {since})"


class FolderLock:
    """One writer per output folder: ``FOLDER/.vqspeech.lock`` holds the writer's process id, host,
    verb and start time while it runs.

    Taking the lock refuses, in one sentence, a folder another live process holds; a lock left by a
    killed process (its process is gone, or the id now belongs to a process started later) is
    taken over. Taking it also checks that the folder is writable and (``guard``) that it does not lie
    in a folder another verb owns (:func:`check_not_in_owned_folder`; a verb may rewrite a folder of
    its own kind, :data:`OWN_KINDS`) and is not an experiment folder unless the verb writes those
    (:data:`EXPERIMENT_WRITERS`). Use it as a context manager; ``enabled=False`` (the other
    ranks of a distributed run) makes it a no-op.
    """

    NAME = ".vqspeech.lock"

    def __init__(self, folder: str | os.PathLike, verb: str, enabled: bool = True, guard: bool = True):
        self.folder, self.verb, self.enabled, self.guard = Path(folder), verb, enabled, guard
        self.path = self.folder / self.NAME
        self.host = socket.gethostname()
        self.held = False
        self.created: Path | None = None  # the outermost folder this lock made, removed again if left empty

    def acquire(self) -> None:
        if not self.enabled:
            return
        missing = [p for p in (self.folder, *self.folder.parents) if not p.exists()]
        self.created = missing[-1] if missing else None
        try:
            writable_folder(self.folder)
        except UserError:
            self._remove_created()
            raise
        record = json.dumps(process_record(self.verb, self.folder))
        if os.path.lexists(self.path) and not self.path.is_file():
            raise UserError(
                f"{self.path} is not a lock file (a folder or a link?); remove it if no vqspeech process writes into "
                f"{self.folder}."
            )
        for _ in range(2):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                holder = self._read_holder()
                if not holder and self._abandoned():
                    self._remove_stale(holder)  # an empty lock a failed write left
                    continue
                if not holder:
                    raise UserError(
                        f"{self.folder} holds a lock file {self.path} that cannot be read; delete it if no "
                        f"vqspeech process is writing into {self.folder}."
                    ) from None
                if process_holds(holder, self.folder):
                    raise self._in_use(holder) from None
                self._remove_stale(holder)  # a killed run's lock, or one copied with the folder: take it over
                continue
            try:
                with os.fdopen(fd, "w") as f:
                    f.write(record)
            except OSError as exc:  # a full disk: no empty lock may stay behind to block later runs
                with contextlib.suppress(OSError):
                    self.path.unlink()
                self._remove_created()
                raise UserError(
                    f"Cannot write the lock {self.path} ({exc.strerror or first_line(exc)}); check the free "
                    "disk space and the folder's permissions."
                ) from None
            self.held = True
            return
        raise UserError(f"Cannot take the lock {self.path}; another process keeps replacing it.")

    def _in_use(self, holder: dict) -> UserError:
        return UserError(
            f"{self.folder} is in use by {describe_process(holder)}; wait for it to finish, or delete {self.path} "
            "if that process no longer runs."
        )

    def check_free(self) -> None:
        """UserError when a live process holds the folder's lock; the lock is not taken. For a
        writer of one file in a folder it does not own (several may share a folder, such as the
        working directory), which must not slip into a folder another run is writing."""
        holder = self._read_holder() if self.path.is_file() else {}
        if holder and process_holds(holder, self.folder):
            raise self._in_use(holder)

    def _remove_stale(self, stale: dict) -> None:
        """Remove the lock a dead process (or a failed write) left, unless another process has taken
        it over meanwhile. Two processes may judge the same lock stale; the check is repeated and
        the lock removed under an exclusive ``flock`` of the folder (which the kernel drops when its
        holder dies), so the second one finds the first one's fresh lock and leaves it."""
        guard = os.open(self.folder, os.O_RDONLY)  # the folder itself: a lock on it leaves no file behind
        try:
            if fcntl is not None:
                fcntl.flock(guard, fcntl.LOCK_EX)
            if self._read_holder() == stale and (stale or self._abandoned()):
                with contextlib.suppress(FileNotFoundError):
                    self.path.unlink()
        finally:
            os.close(guard)
        with contextlib.suppress(OSError):  # the guard file earlier versions left
            (self.folder / f"{self.NAME}.takeover").unlink(missing_ok=True)

    def _abandoned(self, seconds: float = 10.0) -> bool:
        """An unreadable lock older than ``seconds``: not one being written this instant, but one a
        failed write left (a writer fills it at once)."""
        try:
            return time.time() - self.path.stat().st_mtime > seconds
        except OSError:
            return False

    def _read_holder(self) -> dict:
        """The lock's record, or {} when it is unreadable (see :func:`read_process_record`)."""
        return read_process_record(self.path)

    def release(self) -> None:
        if self.held:
            with contextlib.suppress(OSError):
                self.path.unlink()
            self.held = False
            self._remove_created()

    def _remove_created(self) -> None:
        """A run that wrote nothing leaves no folder behind: remove the folders taking the lock made,
        if they are empty."""
        if self.created is None:
            return
        for folder in (self.folder, *self.folder.parents):
            with contextlib.suppress(OSError):
                folder.rmdir()  # only succeeds when empty
            if folder == self.created:
                break

    def __enter__(self) -> FolderLock:
        found = owning_folder(self.folder, OWN_KINDS.get(self.verb)) if self.enabled and self.guard else None
        if self.enabled and self.guard and self.verb not in EXPERIMENT_WRITERS and is_experiment_folder(self.folder):
            raise UserError(
                f"{self.folder} is an experiment folder (a model's or a prior's); give `{self.verb}` a folder of its "
                f"own, e.g. a new subfolder of it."
            )
        if found is not None:
            where = "is" if found[0] == Path(os.path.realpath(self.folder)) else "lies inside"
            raise UserError(
                f"{self.folder} {where} {found[0]}, {found[1]} that other commands read; "
                f"give `{self.verb}` a folder of its own."
            )
        self.acquire()
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.release()


class CorpusReader:
    """A reader of a prepared corpus, registered for as long as the context lasts:
    ``FOLDER/.vqspeech-readers/PID-TAG.json`` holds its :func:`process_record`.

    `prepare` refuses a folder with a live reader (:func:`check_no_readers`) and a reader refuses a
    folder `prepare` holds; each makes itself known before it looks for the other, so of two that
    start together at least one sees the other. A training reads its audio for hours: rewritten
    under it, the run stopped on a missing file or trained on other audio. Nothing is registered
    when ``source`` (a manifest, the prepared folder or its ``wavs``) is not in a prepared corpus or
    its folder cannot be written (a shared read-only corpus, which `prepare` cannot rewrite either).
    """

    FOLDER = ".vqspeech-readers"

    def __init__(self, source: str | os.PathLike | None, verb: str):
        self.folder = prepared_folder(source) if source is not None else None
        self.verb = verb
        self.entry: Path | None = None

    def __enter__(self) -> CorpusReader:
        if self.folder is None:
            return self
        check_readers_folder(self.folder)
        entry = self.folder / self.FOLDER / f"{os.getpid()}-{os.urandom(4).hex()}.json"
        try:
            entry.parent.mkdir(exist_ok=True)
            write_text_atomic(entry, json.dumps(process_record(self.verb, self.folder)))
            self.entry = entry
        except OSError:
            return self  # a folder this user cannot write, nor rewrite with `prepare`
        lock = self.folder / FolderLock.NAME
        holder = read_process_record(lock) if lock.is_file() else {}
        if holder.get("verb") == "prepare" and process_holds(holder, self.folder):
            self._leave()
            raise UserError(
                f"{self.folder} is being rewritten by {describe_process(holder)}; wait for it to finish before "
                f"`{self.verb}` reads it."
            )
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self._leave()

    def _leave(self) -> None:
        if self.entry is not None:
            with contextlib.suppress(OSError):
                self.entry.unlink()
            with contextlib.suppress(OSError):
                self.entry.parent.rmdir()  # only when no other reader is listed
            self.entry = None


def prepared_folder(source: str | os.PathLike) -> Path | None:
    """The prepared corpus a verb's input lies in (the real folder, links resolved), or None: a
    manifest's folder, the prepared folder itself, or its ``wavs`` folder, when it holds
    :data:`PREPARED_MARK`."""
    path = Path(os.path.realpath(source))
    candidates = (path, path.parent) if path.is_dir() else (path.parent,) if path.suffix == ".jsonl" else ()
    return next((folder for folder in candidates if (folder / PREPARED_MARK).is_file()), None)


def check_readers_folder(folder: Path) -> None:
    """UserError when ``FOLDER/.vqspeech-readers`` is there but not a plain folder (a file or a link
    would switch the registry off, or put its entries outside the corpus)."""
    readers = folder / CorpusReader.FOLDER
    if os.path.lexists(readers) and (readers.is_symlink() or not readers.is_dir()):
        raise UserError(
            f"{readers} is not a folder of vqspeech's (a file or a link); remove it if no vqspeech process reads "
            f"{folder}."
        )


def check_no_readers(folder: Path, verb: str) -> None:
    """UserError when a live :class:`CorpusReader` reads the prepared corpus in ``folder``; entries
    of processes that are gone are removed."""
    check_readers_folder(folder)
    readers = folder / CorpusReader.FOLDER
    if not readers.is_dir():
        return
    for entry in sorted(readers.glob("*.json")):
        record = read_process_record(entry)
        if record and process_holds(record, folder):
            raise UserError(
                f"{folder} is being read by {describe_process(record)}; `{verb}` would change its audio under it: "
                f"wait for it to finish, or delete {entry} if that process no longer runs."
            )
        try:
            stale = bool(record) or time.time() - entry.stat().st_mtime > 10.0  # not one being written now
        except OSError:
            continue
        if stale:
            with contextlib.suppress(OSError):
                entry.unlink()
    with contextlib.suppress(OSError):
        readers.rmdir()
