"""`vqspeech train`: bind the composed config to data, model, task and trainer."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import torch.distributed as dist

from .checkpoint import load_checkpoint
from .config import compose, experiment_config, load_yaml, merge_overrides, save_yaml
from .data.manifest import read_manifest, speakers_of
from .device import init_distributed, select_device
from .errors import UserError, first_line
from .fileio import write_text_atomic
from .models import VQVAE
from .tasks import VQVAETask, seed_everything
from .train import Trainer


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
    "train.betas": (lambda v: isinstance(v, list) and len(v) == 2 and all(_is_number(b) and 0 <= b < 1 for b in v),
                    "two numbers in [0, 1)"),
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
    "model.decoder_type": (lambda v: v in ("wavenet", "conv"), "wavenet or conv"),
    "model.top.stride": (lambda v: _is_int(v) and (v == 0 or v >= 2), "0 (one level) or an integer >= 2"),
    "model.top.num_codes": (lambda v: _is_int(v) and v > 1, "an integer > 1"),
}

_WEIGHT = (lambda v: _is_number(v) and v >= 0, "a number >= 0")
# checked only when model.decoder_type is conv
_ADVERSARIAL_RULES = {
    "train.adversarial.warmup_steps": (lambda v: _is_int(v) and v >= 0, "an integer >= 0"),
    "train.adversarial.mel_weight": (lambda v: _is_number(v) and v > 0, "a positive number"),
    "train.adversarial.fm_weight": _WEIGHT,
    "train.adversarial.adv_weight": _WEIGHT,
    "train.adversarial.adaptive_weight": (lambda v: isinstance(v, bool), "true or false"),
    "train.adversarial.max_weight": (lambda v: _is_number(v) and v > 0, "a positive number"),
    "train.adversarial.mpd": (lambda v: isinstance(v, bool), "true or false"),
    "train.adversarial.msd": (lambda v: isinstance(v, bool), "true or false"),
    "train.adversarial.d_lr": (lambda v: _is_number(v) and v > 0, "a positive number"),
    "train.adversarial.d_betas": (lambda v: isinstance(v, list) and len(v) == 2
                                  and all(_is_number(b) and 0 <= b < 1 for b in v), "two numbers in [0, 1)"),
    "train.adversarial.d_weight_decay": (lambda v: _is_number(v) and v >= 0, "a number >= 0"),
}


def check_config(cfg: dict[str, Any], sections: tuple[str, ...] = ("seed", "train", "model"),
                 extra: dict | None = None) -> None:
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


def build_model(model_cfg: dict[str, Any], num_speakers: int) -> VQVAE:
    """VQVAE.from_config, with a bad model value reported as one sentence."""
    try:
        return VQVAE.from_config(model_cfg, num_speakers)
    except (ValueError, TypeError, KeyError, RuntimeError) as exc:
        raise UserError(f"The model config is invalid ({first_line(exc)}); fix the model.* values.") from None


LEGACY_MODEL_KEYS: dict[tuple[str, ...], Any] = {
    ("jitter",): 0.0,
    ("quantizer", "kmeans_iters"): 0,
    ("quantizer", "groups"): 1,
    ("decoder_type",): "wavenet",
    ("conv_decoder",): None,  # unused by a WaveNet: any value
    ("top",): None,  # an old folder's own overrides cannot name it, so it composes to stride 0: one level
}
"""Keys added to ``conf/model`` after experiments were trained, with the value that reproduces how
a folder whose config lacks them was trained."""


def _upgrade_legacy_config(exp_dir: Path) -> None:
    """Fill :data:`LEGACY_MODEL_KEYS` into a folder's ``config.yaml`` written before they existed,
    when its own overrides compose to those values, so that resuming it passes the unchanged-model
    check; a folder whose overrides ask for something else is left to that check."""
    path, saved_overrides = exp_dir / "config.yaml", exp_dir / "overrides.yaml"
    if not path.is_file():
        return
    saved = load_yaml(path)
    model = saved.get("model") if isinstance(saved, dict) else None
    if not isinstance(model, dict):
        return
    try:
        current = compose((load_yaml(saved_overrides) if saved_overrides.is_file() else None) or [])["model"]
    except UserError:
        return  # experiment_config reports it
    changed = False
    for keys, legacy in LEGACY_MODEL_KEYS.items():
        *parents, last = keys
        old, new = model, current
        for key in parents:
            old, new = old.get(key), (new or {}).get(key)
            if not isinstance(old, dict):
                break
        else:
            if last not in old and isinstance(new, dict) and last in new and legacy in (None, new[last]):
                old[last] = new[last]
                changed = True
    if changed:
        save_yaml(path, saved)


def train_vqvae(exp_dir: str | Path, overrides: list[str]) -> dict[str, float]:
    """Train (or resume) a VQ-VAE in ``exp_dir``; returns the final validation metrics."""
    exp_dir = Path(exp_dir)
    _upgrade_legacy_config(exp_dir)
    cfg, merged = experiment_config(exp_dir, overrides)
    check_config(cfg)
    if cfg["model"]["decoder_type"] == "conv":
        check_config(cfg, sections=(), extra=_ADVERSARIAL_RULES)
        if not (cfg["train"]["adversarial"]["mpd"] or cfg["train"]["adversarial"]["msd"]):
            raise UserError("Config values train.adversarial.mpd and train.adversarial.msd are both false; "
                            "enable at least one discriminator.")
    dist_info = init_distributed(cfg["device"])
    device = select_device(cfg["device"], dist_info.local_rank)
    model_cfg = cfg["model"]

    manifest = Path(cfg["data"]["manifest"]).expanduser().resolve()
    # stored absolute, so resuming or evaluating from another folder finds it
    cfg["data"]["manifest"] = str(manifest)
    merged = merge_overrides(merged, [f"data.manifest={manifest}"])
    utts = read_manifest(manifest)
    rates = sorted({u.sample_rate for u in utts})
    if rates != [model_cfg["sample_rate"]]:
        raise UserError(f"Manifest {manifest} holds audio at {', '.join(map(str, rates))} Hz but the model "
                        f"runs at {model_cfg['sample_rate']} Hz; re-run `vqspeech prepare --sample_rate "
                        f"{model_cfg['sample_rate']}` or set model.sample_rate.")
    train_utts = [u for u in utts if u.split == "train"]
    if not train_utts:
        raise UserError(f"Manifest {manifest} has no utterances in the train split.")
    valid_utts = [u for u in utts if u.split == "valid"]

    last = exp_dir / "checkpoints" / "last.pt"
    resume = load_checkpoint(last) if last.is_file() else None
    speakers = resume["speakers"] if resume else speakers_of(train_utts)
    unknown = sorted({u.speaker for u in train_utts} - set(speakers))
    if unknown:
        raise UserError(f"The manifest has training speakers ({', '.join(unknown[:5])}) that {exp_dir} was not "
                        "started with; train a new experiment for a changed speaker set.")

    seed_everything(cfg["seed"])
    model = build_model(model_cfg, len(speakers))
    write_experiment_files(exp_dir, cfg, merged, dist_info,
                           {"speakers.txt": "".join(f"{s}\n" for s in speakers)})
    task = VQVAETask(model, cfg, speakers, train_utts, valid_utts)
    return fit_and_summarise(exp_dir, task, cfg, device, dist_info, resume)


def write_experiment_files(exp_dir: Path, cfg: dict, merged: list[str], dist_info,
                           files: dict[str, str]) -> None:
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


def fit_and_summarise(exp_dir: Path, task, cfg: dict, device, dist_info, resume: dict | None,
                      extra: dict | None = None) -> dict[str, float]:
    """Train ``task`` to the end of its budget, write ``train_summary.json`` (step, minutes,
    ``extra``, final validation metrics, the best checkpoint's when the task keeps one) and leave
    the process group. Returns the final validation metrics."""
    trainer = Trainer(exp_dir, task, cfg["train"], cfg, device, dist_info, resume=resume)
    metrics = trainer.fit()
    if dist_info.is_main:
        summary = {"step": trainer.step, "minutes": trainer.elapsed / 60, **(extra or {}),
                   **{f"valid_{k}": v for k, v in metrics.items()}}
        if trainer.best is not None:
            summary.update({f"best_valid_{task.best_metric}": trainer.best[0],
                            "best_step": trainer.best[1]})
        write_text_atomic(exp_dir / "train_summary.json", json.dumps(summary, indent=2) + "\n")
    if dist_info.enabled:
        dist.barrier()
        dist.destroy_process_group()
    return metrics
