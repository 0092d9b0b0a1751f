"""`vqspeech train`: bind the composed config to data, model, task and trainer."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch.distributed as dist

from .checkpoint import load_checkpoint
from .config import experiment_config, save_yaml
from .data.manifest import read_manifest, speakers_of
from .device import init_distributed, select_device
from .errors import UserError
from .models import VQVAE
from .tasks import VQVAETask, seed_everything
from .train import Trainer


def check_train_config(cfg: dict[str, Any]) -> None:
    """Reject values that would fail later with an obscure error."""
    train, model = cfg["train"], cfg["model"]
    positive = {"train.batch_size": train["batch_size"], "train.crop_seconds": train["crop_seconds"],
                "train.lr": train["lr"], "train.max_steps": train["max_steps"],
                "train.log_every": train["log_every"], "train.valid_every": train["valid_every"],
                "train.checkpoint_every": train["checkpoint_every"], "model.sample_rate": model["sample_rate"],
                "model.hop_length": model["hop_length"], "model.num_codes": model["num_codes"]}
    for key, value in positive.items():
        if not isinstance(value, (int, float)) or value <= 0:
            raise UserError(f"Config value {key}={value!r} must be a positive number.")
    if train["max_minutes"] is not None and train["max_minutes"] <= 0:
        raise UserError(f"Config value train.max_minutes={train['max_minutes']!r} must be positive or null.")


def train_vqvae(exp_dir: str | Path, overrides: list[str]) -> dict[str, float]:
    """Train (or resume) a VQ-VAE in ``exp_dir``; returns the final validation metrics."""
    exp_dir = Path(exp_dir)
    cfg, merged = experiment_config(exp_dir, overrides)
    check_train_config(cfg)
    dist_info = init_distributed(cfg["device"])
    device = select_device(cfg["device"], dist_info.local_rank)
    model_cfg = cfg["model"]

    manifest = Path(cfg["data"]["manifest"])
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
    speakers = load_checkpoint(last)["speakers"] if last.is_file() else speakers_of(train_utts)
    unknown = sorted({u.speaker for u in train_utts} - set(speakers))
    if unknown:
        raise UserError(f"The manifest has training speakers ({', '.join(unknown[:5])}) that {exp_dir} was not "
                        "started with; train a new experiment for a changed speaker set.")

    seed_everything(cfg["seed"])
    model = VQVAE.from_config(model_cfg, len(speakers))
    if dist_info.is_main:
        exp_dir.mkdir(parents=True, exist_ok=True)
        save_yaml(exp_dir / "config.yaml", cfg)
        save_yaml(exp_dir / "overrides.yaml", merged)
        (exp_dir / "speakers.txt").write_text("".join(f"{s}\n" for s in speakers))
    if dist_info.enabled:
        dist.barrier()
    task = VQVAETask(model, cfg, speakers, train_utts, valid_utts)
    trainer = Trainer(exp_dir, task, cfg["train"], cfg, device, dist_info)
    metrics = trainer.fit()
    if dist_info.is_main:
        summary = {"step": trainer.step, "minutes": trainer.elapsed / 60, **{f"valid_{k}": v for k, v in metrics.items()}}
        (exp_dir / "train_summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    if dist_info.enabled:
        dist.barrier()
        dist.destroy_process_group()
    return metrics
