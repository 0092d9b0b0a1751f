"""Hydra configuration: compose `conf/` with command-line overrides; save and reload it.

An experiment folder keeps ``config.yaml`` (the resolved config) and ``overrides.yaml`` (the
overrides it was made with), so re-running ``train`` on it resumes with the same settings plus
whatever new overrides are given.
"""

from __future__ import annotations

import re
from importlib import resources
from pathlib import Path
from typing import Any

import yaml
from hydra import compose as hydra_compose
from hydra import initialize_config_dir
from hydra.errors import HydraException
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from .checkpoint import upgrade_model_config
from .errors import UserError, first_line
from .fileio import write_text_atomic
from .models.vqvae import config_in_use


def config_dir() -> Path:
    """The packaged `conf/` folder."""
    return Path(str(resources.files("vqspeech.conf")))


def _key(override: str) -> str:
    return override.split("=", 1)[0].lstrip("+~")


def merge_overrides(old: list[str], new: list[str]) -> list[str]:
    """Later overrides of the same key replace earlier ones; order otherwise kept."""
    merged: dict[str, str] = {}
    for override in [*old, *new]:
        merged.pop(_key(override), None)
        merged[_key(override)] = override
    return list(merged.values())


def compose(overrides: list[str], config_name: str = "config") -> dict[str, Any]:
    """Compose ``conf/<config_name>.yaml`` with overrides into a plain, resolved dict."""
    for override in overrides:
        if "=" not in override:
            raise UserError(f"Override {override!r} is not of the form key=value (e.g. train.max_steps=100).")
    try:
        with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
            cfg = hydra_compose(config_name, overrides=list(overrides))
        container = OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)
    except OmegaConfBaseException as exc:
        key = getattr(exc, "full_key", None)
        if key:
            raise UserError(f"Config value {key} is missing or invalid; pass it as {key}=VALUE.") from None
        raise UserError(f"Invalid configuration: {first_line(exc)}.") from None
    except HydraException as exc:
        message = first_line(exc)
        group = re.search(r"Could not find '(\w+)/", message)
        if group:
            options = sorted(p.stem for p in (config_dir() / group.group(1)).glob("*.yaml"))
            message += f"; available {group.group(1)} configs: {', '.join(options)}"
        raise UserError(f"Invalid override: {message}.") from None
    if not isinstance(container, dict):  # a composed config is a mapping
        raise UserError(f"conf/{config_name}.yaml does not compose to a mapping of settings.")
    return {str(key): value for key, value in container.items()}  # top-level keys are names (str already)


def save_yaml(path: Path, data: Any) -> None:
    write_text_atomic(path, yaml.safe_dump(data, sort_keys=False))


def load_yaml(path: Path) -> Any:
    try:
        return yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise UserError(f"Cannot read {path} ({exc}); fix or remove it.") from None


def _model_section(cfg: dict[str, Any], model_key: str) -> Any:
    """What must not change on resume: the VQ-VAE config as it builds the model (after the
    checkpoint format's upgrade of an older folder's config), or the ``model_key`` section."""
    section = cfg.get(model_key)
    if model_key == "model" and isinstance(section, dict):
        return config_in_use(upgrade_model_config(section))
    return section


def experiment_config(
    exp_dir: Path, overrides: list[str], config_name: str = "config", model_key: str = "model"
) -> tuple[dict, list[str]]:
    """The config for training in ``exp_dir``: saved overrides (when resuming) + new ones.

    Refuses a ``model_key`` section that builds another model than the folder was trained with."""
    saved = exp_dir / "overrides.yaml"
    old = load_yaml(saved) if saved.is_file() else []
    merged = merge_overrides(old or [], overrides)
    cfg = compose(merged, config_name)
    previous = exp_dir / "config.yaml"
    if previous.is_file():
        before = load_yaml(previous)
        if _model_section(before, model_key) != _model_section(cfg, model_key):
            raise UserError(
                f"The model config differs from the one {exp_dir} was trained with; "
                "use a new experiment folder to train another model."
            )
    return cfg, merged
