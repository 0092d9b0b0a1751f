"""Checkpoints: tensors and plain Python values only, written atomically, versioned.

Layout of a checkpoint dict::

    format_version  int
    kind            "vqvae" (later: "prior")
    step            int
    config          the resolved config (plain dict)
    speakers        list[str]; speaker id i is speakers[i]
    model           state_dict on CPU, without DDP's "module." prefix
    optimizer, scheduler, rng, elapsed_seconds     (absent in an export)

Every checkpoint loads with ``torch.load(path, weights_only=True)``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from .errors import UserError, first_line
from .fileio import atomic_path

FORMAT_VERSION = 1


def cpu_state_dict(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    """State dict on CPU, unwrapped from DDP."""
    module = getattr(module, "module", module)
    return {k: v.detach().cpu().clone() for k, v in module.state_dict().items()}


def _to_cpu(obj: Any) -> Any:
    if isinstance(obj, torch.Tensor):
        return obj.detach().cpu()
    if isinstance(obj, dict):
        return {k: _to_cpu(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_to_cpu(v) for v in obj)
    return obj


def save_checkpoint(path: str | os.PathLike, payload: dict[str, Any]) -> None:
    """Write ``payload`` (plus the format version) to a temporary file, then rename over ``path``."""
    with atomic_path(path) as tmp:
        torch.save({"format_version": FORMAT_VERSION, **_to_cpu(payload)}, tmp)


def load_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Load on CPU with ``weights_only=True``; UserError for a missing, corrupt or foreign file."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"Checkpoint {path} does not exist; train a model first or check the path.")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise UserError(f"Checkpoint {path} cannot be read ({first_line(exc)[:120]}); "
                        "it is corrupt or not a vqspeech checkpoint.") from None
    version = ckpt.get("format_version") if isinstance(ckpt, dict) else None
    if version is None:
        raise UserError(f"{path} is not a vqspeech checkpoint (no format_version).")
    if version > FORMAT_VERSION:
        raise UserError(f"Checkpoint {path} has format version {version}, newer than this vqspeech "
                        f"understands ({FORMAT_VERSION}); upgrade vqspeech.")
    return ckpt


def export_checkpoint(src: str | os.PathLike, dst: str | os.PathLike) -> None:
    """Write a shareable copy of a checkpoint without optimizer, scheduler and RNG state."""
    ckpt = load_checkpoint(src)
    keep = ("kind", "step", "config", "speakers", "model")
    save_checkpoint(dst, {k: ckpt[k] for k in keep if k in ckpt})
