"""Hydra configuration: compose `conf/` with command-line overrides; save and reload it.

An experiment folder keeps ``config.yaml`` (the resolved config) and ``overrides.yaml`` (the
overrides it was made with), so re-running ``train`` on it resumes with the same settings plus
whatever new overrides are given. A composed config may hold only the keys the packaged files
define (a ``+key=value`` typo is refused, with the closest known key); the range of each value is
checked by :mod:`vqspeech.training.schema`.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Sequence
from importlib import resources
from pathlib import Path
from typing import Any

import yaml
from hydra import compose as hydra_compose
from hydra import initialize_config_dir
from hydra.errors import HydraException
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from .errors import UserError, first_line
from .fileio import TRAINING_SUBFOLDERS, FolderLock, is_utf8, write_text_atomic


def config_dir() -> Path:
    """The `conf/` folder of this copy of the code: inside the package when installed, beside it in a
    source checkout. An editable install of another checkout answers ``vqspeech.conf`` too, so a
    checkout on PYTHONPATH would otherwise read that one's configs with its own code."""
    package = Path(__file__).resolve().parent
    for folder in (package / "conf", package.parent / "conf"):
        if (folder / "config.yaml").is_file() and (
            folder == package / "conf" or (package.parent / "pyproject.toml").is_file()
        ):
            return folder
    return Path(str(resources.files("vqspeech.conf")))


def override_key(override: str) -> str:
    """The dotted key an override sets: ``+train.lr=1`` -> ``train.lr``."""
    return override.split("=", 1)[0].lstrip("+~")


def quoted_value(value: str) -> str:
    """``value`` as a Hydra override's quoted string that parses back to it: commas, brackets, ``=``,
    quotes and ``${`` in a path survive a saved override (backslashes are doubled only before a
    quote or at the end, where the grammar reads them as escapes)."""
    escaped = re.sub(r"(\\+)(?='|$)", lambda m: m.group(1) * 2, value)
    return "'" + escaped.replace("'", "\\'").replace("${", "\\${") + "'"


def _unknown_key_message(key: str, overrides: Sequence[str], config_name: str) -> str:
    """Why ``key`` cannot be overridden: it is not in the composed config; with the settings its
    parent does have (composed without the overrides of that key)."""
    others = [o for o in overrides if override_key(o) != key]
    parent, _, _ = key.rpartition(".")
    try:
        node: Any = compose(others, config_name, missing_ok=True)
        for part in parent.split(".") if parent else []:
            node = node[part]
    except (UserError, KeyError, TypeError):
        node = None
    if not isinstance(node, dict):
        return f"{key} is not a setting of this configuration"
    return f"{key} is not a setting of this configuration; {parent or 'the top level'} has: {', '.join(sorted(node))}"


def merge_overrides(old: list[str], new: list[str]) -> list[str]:
    """Later overrides of the same key replace earlier ones; order otherwise kept."""
    merged: dict[str, str] = {}
    for override in [*old, *new]:
        merged.pop(override_key(override), None)
        merged[override_key(override)] = override
    return list(merged.values())


def compose(overrides: list[str], config_name: str = "config", *, missing_ok: bool = False) -> dict[str, Any]:
    """Compose ``conf/<config_name>.yaml`` with overrides into a plain, resolved dict
    (``missing_ok``: mandatory values left unset stay ``"???"``)."""
    for override in overrides:
        if override.startswith("~"):  # every setting has a value the schema checks: none is removed
            raise UserError(
                f"Override {override!r} deletes a setting, which vqspeech does not support (every setting has a "
                f"value it checks); set it instead: {override_key(override)}=VALUE."
            )
        if "=" not in override:
            raise UserError(f"Override {override!r} is not of the form key=value (e.g. train.max_steps=100).")
        if override_key(override).split(".")[0] == "hydra":  # composed, not run: Hydra's own settings do nothing
            raise UserError(
                f"Override {override!r} sets Hydra's own settings, which vqspeech does not use: the folder "
                "given on the command line is where a run writes; leave the hydra.* keys out."
            )
    try:
        with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
            cfg = hydra_compose(config_name, overrides=list(overrides))
        container = OmegaConf.to_container(cfg, resolve=not missing_ok, throw_on_missing=not missing_ok)
    except OmegaConfBaseException as exc:
        key = getattr(exc, "full_key", None)
        if key:
            raise UserError(f"Config value {key} is missing or invalid; pass it as {key}=VALUE.") from None
        raise UserError(f"Invalid configuration: {first_line(exc)}.") from None
    except HydraException as exc:
        message = first_line(exc).rstrip(".")
        group = re.search(r"Could not find '(\w+)/", message)
        if group:
            options = sorted(p.stem for p in (config_dir() / group.group(1)).glob("*.yaml"))
            message += f"; available {group.group(1)} configs: {', '.join(options)}"
        unknown = re.search(r"Could not override '([\w.]+)'", message)
        if unknown:
            message = _unknown_key_message(unknown.group(1), overrides, config_name)
        if "LexerNoViableAltException" in message:  # a character the override grammar does not take unquoted
            message += "; quote the value, as key='value' (a path with accents or spaces, a line break)"
        raise UserError(f"Invalid override: {message}.") from None
    if not isinstance(container, dict):  # a composed config is a mapping
        raise UserError(f"conf/{config_name}.yaml does not compose to a mapping of settings.")
    return {str(key): value for key, value in container.items()}  # top-level keys are names (str already)


def save_yaml(path: Path, data: Any) -> None:
    write_text_atomic(path, yaml.safe_dump(data, sort_keys=False))


def load_yaml(path: Path) -> Any:
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError, yaml.YAMLError) as exc:  # ValueError: not UTF-8
        raise UserError(f"Cannot read {path} ({exc}); fix or remove it.") from None


def _leaves(cfg: Any, prefix: str = "") -> set[str]:
    """The dotted keys of a nested dict (a dict value is a group, anything else a leaf)."""
    if not isinstance(cfg, dict):
        return {prefix}
    keys = set()
    for key, value in cfg.items():
        keys |= _leaves(value, f"{prefix}.{key}" if prefix else str(key))
    return keys


def config_changes(before: Any, now: Any, prefix: str) -> list[str]:
    """``key old -> new`` for every dotted key (under ``prefix``) whose value differs between two
    nested dicts, in order; a key only one of them has shows ``None`` on the other side."""
    if not (isinstance(before, dict) and isinstance(now, dict)):
        return [] if before == now else [f"{prefix} {before!r} -> {now!r}"]
    changes = []
    for key in [*before, *(k for k in now if k not in before)]:
        changes += config_changes(before.get(key), now.get(key), f"{prefix}.{key}")
    return changes


def check_known_keys(cfg: dict[str, Any], overrides: list[str], config_name: str = "config") -> None:
    """UserError naming the first key of ``cfg`` that the packaged config files do not define (with
    the same group choices, e.g. ``model=tiny``), and the known key closest to it."""
    groups = [o for o in overrides if "." not in override_key(o) and not o.startswith(("+", "~"))]
    known = _leaves(compose(groups, config_name, missing_ok=True))
    unknown = sorted(_leaves(cfg) - known, key=lambda k: (k.count("."), k))
    if unknown:
        key = unknown[0]
        close = difflib.get_close_matches(key, sorted(known), n=1, cutoff=0.6)
        hint = f"; did you mean {close[0]}?" if close else "; check the spelling against the files in conf/."
        raise UserError(f"Config key {key} is not a setting vqspeech knows{hint}")


OWN_SUBFOLDERS = TRAINING_SUBFOLDERS
"""What training writes below an experiment folder: a link there would resume, and overwrite,
another experiment's files without its lock."""


def experiment_config(exp_dir: Path, overrides: list[str], config_name: str = "config") -> tuple[dict, list[str]]:
    """The config for training in ``exp_dir``: saved overrides (when resuming) + new ones, with
    every key one the packaged config files define (:func:`check_known_keys`).

    The saved overrides count once the folder has a checkpoint. Before that (a first run that
    failed early) a command with overrides is taken as the corrected command, alone: a bad value
    saved by the failed run cannot come back. A bare ``vqspeech train EXP`` still reruns the saved
    ones."""
    if exp_dir.exists() and not exp_dir.is_dir():
        raise UserError(f"{exp_dir} is a file; give a folder for the experiment.")
    if not is_utf8(str(exp_dir.absolute())):
        raise UserError(
            f"The experiment folder {exp_dir} has a path that is not UTF-8, which TensorBoard cannot "
            "log to; choose a folder whose path is UTF-8."
        )
    for sub in OWN_SUBFOLDERS:
        if (exp_dir / sub).is_symlink():
            raise UserError(
                f"{exp_dir / sub} is a link; training writes there, so it must be a folder of this experiment "
                "(train in a new folder, or replace the link by a copy)."
            )
    if exp_dir.is_dir():  # a run writing there now: its half-written state is no reason to give
        FolderLock(exp_dir, "train").check_free()
    saved = exp_dir / "overrides.yaml"
    if (exp_dir / "enrolment.json").is_file() and not saved.is_file():
        raise UserError(
            f"{exp_dir} holds a model `vqspeech enroll` wrote (a speaker added to a trained model), which "
            "`train` does not continue; rerun `vqspeech enroll` to carry on its enrolment, or train in a new folder."
        )
    if exp_dir.is_dir() and not saved.is_file():
        foreign = sorted(p.name for p in exp_dir.iterdir() if p.is_file() and not p.name.startswith("."))
        if foreign:
            raise UserError(
                f"{exp_dir} holds {foreign[0]} but no overrides.yaml: it is not an experiment folder; "
                "train in a new or empty folder."
            )
    _check_kind(exp_dir, config_name)
    started = (exp_dir / "checkpoints" / "last.pt").is_file()
    if not started and (exp_dir / "checkpoints").is_dir():
        kept = sorted(
            (p for p in (exp_dir / "checkpoints").glob("*.pt") if not p.name.startswith(".")),
            key=lambda p: p.stat().st_mtime,
        )
        if kept:  # an earlier run's, whose last.pt is gone: a fresh start would overwrite them
            raise UserError(
                f"{exp_dir / 'checkpoints'} holds {kept[-1].name} but no last.pt; to resume from it, copy it "
                f"to {exp_dir / 'checkpoints' / 'last.pt'}, or train in a new folder."
            )
    old = load_yaml(saved) if saved.is_file() and (started or not overrides) else []
    if not isinstance(old, list) or not all(isinstance(o, str) for o in old):
        raise UserError(f"{saved} does not hold a list of overrides; fix or remove it.")
    merged = merge_overrides(old, overrides)
    cfg = compose(merged, config_name)
    check_known_keys(cfg, merged, config_name)
    return cfg, merged


def _check_kind(exp_dir: Path, config_name: str) -> None:
    """UserError when ``exp_dir`` holds the other kind of experiment (a VQ-VAE's config has
    ``model``, a prior's ``prior``): its saved overrides would otherwise be reported as unknown keys."""
    saved = exp_dir / "config.yaml"
    record = load_yaml(saved) if saved.is_file() else None
    if not isinstance(record, dict):
        return
    if config_name == "prior_train" and "model" in record and "prior" not in record:
        raise UserError(f"{exp_dir} is a VQ-VAE's experiment, not a prior's; give `prior train` a folder of its own.")
    if config_name == "config" and "prior" in record and "model" not in record:
        raise UserError(f"{exp_dir} is a prior's experiment, not a VQ-VAE's; give `train` a folder of its own.")


def training_stage(config: dict[str, Any]) -> str:
    """The stage a VQ-VAE config trains (:data:`vqspeech.models.vqvae.STAGES`): ``decoder`` with
    ``train.units_from`` (the waveform decoder on another experiment's frozen codes), else
    ``units`` for an objective other than ``wavenet``, else ``joint`` (the paper's end-to-end)."""
    if config.get("train", {}).get("units_from"):
        return "decoder"
    return "joint" if config["model"].get("objective", "wavenet") == "wavenet" else "units"
