"""The experiment folder around a training run: whether it may resume, the files written before
training starts, and the summary written after it. Shared by the VQ-VAE and the priors."""

from __future__ import annotations

import contextlib
import json
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch
import torch.distributed as dist

from ..checkpoint import check_training_state
from ..config import config_changes, load_yaml, merge_overrides, quoted_value, save_yaml
from ..config import override_key as _key
from ..device import DistInfo
from ..errors import UserError
from ..fileio import FolderLock, is_finite_number, is_int, user_path, write_text_atomic
from ..models.vqvae import config_in_use
from .trainer import Task, Trainer

U = TypeVar("U")


def known_speakers_only(utts: Sequence[U], known: dict[str, int]) -> list[U]:
    """The validation utterances whose speaker the model knows (the others cannot be decoded in
    their own voice), with a warning naming how many were left out and whose they are."""
    kept = [u for u in utts if getattr(u, "speaker", None) in known]
    if len(kept) < len(utts):
        unknown = sorted({str(getattr(u, "speaker", None)) for u in utts if getattr(u, "speaker", None) not in known})
        listed = ", ".join(unknown[:5]) + (" ..." if len(unknown) > 5 else "")
        rest = f"validation uses the other {len(kept)}" if kept else "there are no validation metrics"
        warnings.warn(
            f"{len(utts) - len(kept)} of the {len(utts)} valid utterances are by speakers absent from the train "
            f"split ({listed}); {rest}. Prepare with --split_by utterance to validate on known speakers.",
            stacklevel=2,
        )
    return kept


def absolute_path(
    exp_dir: Path, cfg: dict[str, Any], merged: list[str], new: list[str], key: str
) -> tuple[Path | None, list[str]]:
    """Make the path at ``key`` (e.g. ``data.codes``) absolute in ``cfg`` and in the overrides
    ``merged`` that the folder will save, so resuming from any working directory reads the same
    files. A relative path given now is taken from the working directory; one only saved (an older
    folder's) is taken from the folder's ``config.yaml``, where it was stored absolute. Returns the
    path (None when the key is null) and the new overrides."""
    section, name = key.rsplit(".", 1)
    node = cfg[section]
    if node[name] is None or not str(node[name]).strip():  # null or empty: no path (the caller decides)
        return None, merged
    path = user_path(str(node[name]))
    if not path.is_absolute():
        saved = exp_dir / "config.yaml"
        before = load_yaml(saved) if saved.is_file() and not any(_key(o) == key for o in new) else None
        stored = before.get(section, {}).get(name) if isinstance(before, dict) else None
        path = Path(stored) if isinstance(stored, str) and Path(stored).is_absolute() else path.resolve()
    node[name] = str(path)
    return path, merge_overrides(merged, [f"{key}={quoted_value(str(path))}"])


def check_resumable(
    exp_dir: Path, cfg: dict[str, Any], resume: dict[str, Any] | None, model_key: str = "model"
) -> None:
    """Refuse to resume ``resume`` (the folder's last checkpoint) with a config that builds another
    model. Without a checkpoint there is nothing to protect: a first run that failed before its
    first checkpoint does not stop the corrected one."""
    if resume is None:
        return
    check_training_state(resume, exp_dir / "checkpoints" / "last.pt")  # before the config files are written
    before, now = resume["config"].get(model_key), cfg.get(model_key)
    if model_key == "model" and isinstance(before, dict) and isinstance(now, dict):
        before, now = config_in_use(before), config_in_use(now)  # the checkpoint's config is upgraded
    changes = config_changes(before, now, model_key)
    if changes:
        raise UserError(
            f"The model config differs from the one {exp_dir} was trained with ({_shown(changes)}); "
            "use a new experiment folder to train another model, or resume without that change."
        )
    settings, step, elapsed = cfg["train"], resume.get("step"), resume.get("elapsed_seconds")
    budget = settings.get("max_minutes")
    finished = (is_int(step) and step >= settings["max_steps"]) or (  # a damaged state: the trainer says so
        budget is not None and is_finite_number(elapsed) and elapsed >= 60 * budget
    )
    if finished:  # no step would run: new settings would only relabel the trained model
        saved = resume["config"]
        changes = [c for key in cfg for c in config_changes(saved.get(key), cfg[key], key)]
        if changes:
            raise UserError(
                f"{exp_dir} has trained {resume['step']} steps, as many steps (or minutes) as these settings ask "
                f"for or more, so they would train nothing but be recorded as its own: {_shown(changes)}; raise "
                "train.max_steps (or "
                "train.max_minutes) to continue with them, or train in a new experiment folder."
            )


def _shown(changes: list[str]) -> str:
    return ", ".join(changes[:3]) + (f" and {len(changes) - 3} more" if len(changes) > 3 else "")


@contextlib.contextmanager
def lock_on_every_rank(exp_dir: Path, verb: str, dist_info: DistInfo) -> Iterator[FolderLock]:
    """Hold the experiment folder's lock (rank 0 takes it); a refusal there (a live holder, another
    verb's folder) is raised on every rank, so that none waits for rank 0 at the next barrier and
    dies there with the process group's traceback."""
    lock = FolderLock(exp_dir, verb, enabled=dist_info.is_main)
    message = None
    try:
        lock.__enter__()
    except UserError as exc:
        message = str(exc)
    if dist_info.enabled:
        verdict = [message]
        dist.broadcast_object_list(verdict, src=0)
        message = verdict[0]
    if message is not None:
        raise UserError(message)
    try:
        yield lock
    finally:
        lock.release()


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
