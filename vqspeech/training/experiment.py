"""The experiment folder around a training run: config checks, the files written before
training starts, and the summary written after it. Shared by the VQ-VAE and the priors."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from ..config import save_yaml
from ..device import DistInfo
from ..errors import UserError
from ..fileio import write_text_atomic
from ..models.quantizer import QUANTIZERS
from ..models.vqvae import DECODERS
from .trainer import Task, Trainer


def _get(cfg: dict, key: str):
    for part in key.split("."):
        cfg = cfg[part]
    return cfg


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v) -> bool:
    return (_is_int(v) or isinstance(v, float)) and math.isfinite(v)


# key -> (check, what the value must be)
_RULES = {
    "seed": (_is_int, "an integer"),
    "train.batch_size": (lambda v: _is_int(v) and v > 0, "a positive integer"),
    "train.crop_seconds": (lambda v: _is_number(v) and v > 0, "a positive number"),
    "train.lr": (lambda v: _is_number(v) and v > 0, "a positive number"),
    "train.betas": (
        lambda v: isinstance(v, list) and len(v) == 2 and all(_is_number(b) and 0 <= b < 1 for b in v),
        "two numbers in [0, 1)",
    ),
    "train.weight_decay": (lambda v: _is_number(v) and v >= 0, "a number >= 0"),
    "train.schedule": (lambda v: v in ("constant", "cosine"), "constant or cosine"),
    "train.amp": (lambda v: isinstance(v, bool), "true or false"),
    "train.warmup_steps": (lambda v: _is_int(v) and v >= 0, "an integer >= 0"),
    "train.lr_min_ratio": (lambda v: _is_number(v) and 0 <= v <= 1, "a number in [0, 1]"),
    "train.max_steps": (lambda v: _is_int(v) and v > 0, "a positive integer"),
    "train.max_minutes": (lambda v: v is None or (_is_number(v) and v > 0), "a positive number or null"),
    "train.grad_clip": (lambda v: _is_number(v) and v > 0, "a positive number"),
    "train.num_workers": (lambda v: _is_int(v) and v >= 0, "an integer >= 0"),
    "train.log_every": (lambda v: _is_int(v) and v > 0, "a positive integer"),
    "train.valid_every": (lambda v: _is_int(v) and v > 0, "a positive integer"),
    "train.valid_max_utterances": (lambda v: _is_int(v) and v > 0, "a positive integer"),
    "train.media_every": (lambda v: _is_int(v) and v >= 0, "an integer >= 0"),
    "train.media_seconds": (lambda v: _is_number(v) and v > 0, "a positive number"),
    "train.checkpoint_every": (lambda v: _is_int(v) and v > 0, "a positive integer"),
    "model.sample_rate": (lambda v: _is_int(v) and v > 0, "a positive integer"),
    "model.hop_length": (lambda v: _is_int(v) and v > 0, "a positive integer"),
    "model.num_codes": (lambda v: _is_int(v) and v > 1, "an integer > 1"),
    "model.latent_dim": (lambda v: _is_int(v) and v > 0, "a positive integer"),
    "model.decoder_type": (lambda v: v in DECODERS, " or ".join(DECODERS)),
    "model.quantizer.type": (lambda v: v in QUANTIZERS, " or ".join(QUANTIZERS)),
    "model.top.stride": (lambda v: _is_int(v) and (v == 0 or v >= 2), "0 (one level) or an integer >= 2"),
    "model.top.num_codes": (lambda v: _is_int(v) and v > 1, "an integer > 1"),
}

_WEIGHT = (lambda v: _is_number(v) and v >= 0, "a number >= 0")
# checked only when model.decoder_type is conv
ADVERSARIAL_RULES = {
    "train.adversarial.warmup_steps": (lambda v: _is_int(v) and v >= 0, "an integer >= 0"),
    "train.adversarial.mel_weight": (lambda v: _is_number(v) and v > 0, "a positive number"),
    "train.adversarial.fm_weight": _WEIGHT,
    "train.adversarial.adv_weight": _WEIGHT,
    "train.adversarial.adaptive_weight": (lambda v: isinstance(v, bool), "true or false"),
    "train.adversarial.max_weight": (lambda v: _is_number(v) and v > 0, "a positive number"),
    "train.adversarial.mpd": (lambda v: isinstance(v, bool), "true or false"),
    "train.adversarial.msd": (lambda v: isinstance(v, bool), "true or false"),
    "train.adversarial.d_lr": (lambda v: _is_number(v) and v > 0, "a positive number"),
    "train.adversarial.d_betas": (
        lambda v: isinstance(v, list) and len(v) == 2 and all(_is_number(b) and 0 <= b < 1 for b in v),
        "two numbers in [0, 1)",
    ),
    "train.adversarial.d_weight_decay": (lambda v: _is_number(v) and v >= 0, "a number >= 0"),
}


def check_config(
    cfg: dict[str, Any], sections: tuple[str, ...] = ("seed", "train", "model"), extra: dict | None = None
) -> None:
    """Reject values that would fail later with an obscure error, before anything is written.

    Checks the rules of :data:`_RULES` whose key starts with one of ``sections``, plus ``extra``.
    """
    rules = {k: v for k, v in _RULES.items() if k.split(".")[0] in sections}
    for key, (ok, what) in {**rules, **(extra or {})}.items():
        try:
            value = _get(cfg, key)
        except (KeyError, TypeError):
            raise UserError(f"Config value {key} is missing; add it to the config or pass {key}=VALUE.") from None
        if not ok(value):
            raise UserError(f"Config value {key}={value!r} must be {what}.")


def seed_everything(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed)


def write_experiment_files(
    exp_dir: Path, cfg: dict, merged: list[str], dist_info: DistInfo, files: dict[str, str]
) -> None:
    """Rank 0 writes ``config.yaml``, ``overrides.yaml`` and ``files`` (name -> text) into
    ``exp_dir``; every rank waits for it."""
    if dist_info.is_main:
        exp_dir.mkdir(parents=True, exist_ok=True)
        save_yaml(exp_dir / "config.yaml", cfg)
        save_yaml(exp_dir / "overrides.yaml", merged)
        for name, text in files.items():
            write_text_atomic(exp_dir / name, text)
    if dist_info.enabled:
        dist.barrier()


def fit_and_summarise(
    exp_dir: Path,
    task: Task,
    cfg: dict,
    device: torch.device,
    dist_info: DistInfo,
    resume: dict | None,
    extra: dict | None = None,
) -> dict[str, float]:
    """Train ``task`` to the end of its budget, write ``train_summary.json`` (step, minutes,
    ``extra``, final validation metrics, the best checkpoint's when the task keeps one) and leave
    the process group. Returns the final validation metrics."""
    trainer = Trainer(exp_dir, task, cfg, device, dist_info, resume=resume)
    metrics = trainer.fit()
    if dist_info.is_main:
        summary = {
            "step": trainer.step,
            "minutes": trainer.elapsed / 60,
            **(extra or {}),
            **{f"valid_{k}": v for k, v in metrics.items()},
        }
        if trainer.best is not None:
            summary.update({f"best_valid_{task.best_metric}": trainer.best[0], "best_step": trainer.best[1]})
        write_text_atomic(exp_dir / "train_summary.json", json.dumps(summary, indent=2) + "\n")
    if dist_info.enabled:
        dist.barrier()
        dist.destroy_process_group()
    return metrics
