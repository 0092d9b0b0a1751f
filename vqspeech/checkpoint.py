"""Checkpoints: tensors and plain Python values only, written atomically, versioned.

Layout of a checkpoint dict::

    format_version  int (FORMAT_VERSION); older checkpoints are upgraded when loaded
    kind            "vqvae" | "prior"
    step            int
    config          the resolved config (plain dict)
    speakers        list[str]; speaker id i is speakers[i]
    model           state_dict on CPU, without DDP's "module." prefix
    optimizer, scheduler, rng, elapsed_seconds     resume only (absent in an export)
    best_value, best_step                           the best validation so far (None: not kept)
    discriminator, d_optimizer                      resume only: a conv decoder's GAN training
    enrolment                                       a model made by `vqspeech enroll`: name, source,
                                                    files, steps, finished
    enrolment_state                                 resume only: that enrolment's optimizer, step
    kind "prior" adds: num_codes, groups, level ("bottom" | "top"), data_usage (code counts [K]
    or [G * K]), and for a bottom prior conditioned on top codes, top ({num_codes, stride})

Every checkpoint loads with ``torch.load(path, weights_only=True)``.
"""

from __future__ import annotations

import copy
import hashlib
import os
import pickle
import re
import zipfile
from pathlib import Path
from typing import Any

import torch

from .data.codes import CodesInfo
from .errors import UserError, first_line
from .fileio import (
    OWNED_FOLDER_MARKS,
    FolderLock,
    atomic_path,
    check_output_file,
    enclosing_experiment,
    is_experiment_folder,
    model_home,
)

FORMAT_VERSION = 5
"""5: model.encoder.warp added (before: 0). 4: model.speaker_encoder added (before: off). 3:
model.objective, model.encoder.normalize and model.speaker_adversary added (before: ``wavenet``,
false, weight 0). 2: every key a model reads is in the checkpoint (quantizer.type added). 1:
configs written before jitter, quantizer.kmeans_iters, quantizer.groups, decoder_type and top
existed lack them, and priors before hierarchical and grouped codes lack level and groups. A VQ-VAE's
model config of any version gets the keys of :data:`LEGACY_MODEL_KEYS` it lacks (encoder.cepstra and
quantizer.whiten came within version 5)."""

LEGACY_MODEL_KEYS: dict[tuple[str, ...], Any] = {
    ("jitter",): 0.0,
    ("quantizer", "type"): "vq",
    ("quantizer", "kmeans_iters"): 0,
    ("quantizer", "groups"): 1,
    ("quantizer", "whiten"): False,
    ("quantizer", "whiten_decay"): 0.99,
    ("decoder_type",): "wavenet",
    ("top",): {"stride": 0, "num_codes": 128, "channels": 128, "dilations": [1, 2, 4]},  # one level: sizes unused
    ("objective",): "wavenet",
    ("encoder", "normalize"): False,
    ("encoder", "warp"): 0.0,
    ("encoder", "cepstra"): 0,
    ("speaker_adversary",): {"weight": 0.0, "hidden": 128},
    ("speaker_encoder",): {
        "share": 0.0,
        "reference_seconds": 2.0,
        "n_mels": 40,
        "channels": 128,
        "dilations": [1, 2, 4],
    },
}
"""Keys added to the VQ-VAE's model config over time, with the value that reproduces how a model
whose config lacks them was trained."""

LEGACY_PRIOR_FIELDS: dict[str, Any] = {"level": "bottom", "groups": 1}
"""Prior checkpoint fields added over time, likewise."""


def upgrade_model_config(model: dict[str, Any]) -> dict[str, Any]:
    """A VQ-VAE model config of any version, with every key of :data:`LEGACY_MODEL_KEYS` it lacks
    filled in (a copy; the current version's configs come back equal)."""
    model = copy.deepcopy(model)
    for keys, value in LEGACY_MODEL_KEYS.items():
        *parents, last = keys
        node = model
        for key in parents:
            node = node.setdefault(key, {})
        node.setdefault(last, copy.deepcopy(value))
    return model


def _upgrade(ckpt: dict[str, Any]) -> dict[str, Any]:
    """Bring a checkpoint of an older format version to :data:`FORMAT_VERSION`."""
    # model keys are filled in whatever the version: a key added without a new version (encoder.cepstra
    # in version 5) made checkpoints written before it unusable
    if ckpt.get("kind") == "vqvae" and isinstance(ckpt.get("config", {}).get("model"), dict):
        ckpt["config"]["model"] = upgrade_model_config(ckpt["config"]["model"])
    if ckpt["format_version"] < 2:
        if ckpt.get("kind") == "prior":
            for key, value in LEGACY_PRIOR_FIELDS.items():
                ckpt.setdefault(key, value)
    ckpt["format_version"] = FORMAT_VERSION
    return ckpt


def cpu_state_dict(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    """State dict on CPU, unwrapped from DDP."""
    module = getattr(module, "module", module)
    return {k: v.detach().cpu().clone() for k, v in module.state_dict().items()}


CODEBOOK_TENSORS = re.compile(r"(^|\.)quantizer\.(quantizers\.\d+\.)?(codebook|white_mean|unwhite_matrix)$")
"""State-dict names of what fixes a code's vector: each codebook (one quantizer's, or every group's of
a product quantizer, ``quantizer.quantizers.N.codebook``) and a whitening quantizer's mean and matrix."""


def codebook_digest(state_dict: dict[str, Any]) -> str:
    """A short hash of a model's codebook(s) (every tensor :data:`CODEBOOK_TENSORS` names, the top
    level's included): codes.json records it, so codes are decoded only by a model that shares that
    codebook, and results of codes (a probe) can tell whether the model still has it."""
    digest = hashlib.sha256()
    for name, tensor in sorted(state_dict.items()):
        if CODEBOOK_TENSORS.search(name) and isinstance(tensor, torch.Tensor):
            digest.update(name.encode())
            digest.update(tensor.detach().float().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


def _to_cpu(obj: Any) -> Any:
    if isinstance(obj, torch.Tensor):
        return obj.detach().cpu()
    if isinstance(obj, dict):
        return {k: _to_cpu(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_to_cpu(v) for v in obj)
    return obj


def save_checkpoint(path: str | os.PathLike, payload: dict[str, Any]) -> None:
    """Write ``payload`` (plus the format version) to a temporary file, then rename over ``path``.
    A failed write (torch reports a full or read-only disk as RuntimeError) is one sentence."""
    try:
        with atomic_path(path) as tmp:
            torch.save({"format_version": FORMAT_VERSION, **_to_cpu(payload)}, tmp)
    except (OSError, RuntimeError) as exc:
        raise UserError(
            f"Cannot write the checkpoint {path} ({first_line(exc)[:120]}); check the free disk space and "
            "the folder's permissions."
        ) from None


def load_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Load on CPU with ``weights_only=True``; UserError for a missing, corrupt or foreign file."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"Checkpoint {path} does not exist; train a model first or check the path.")
    if not zipfile.is_zipfile(path):  # what torch.save writes; its error for anything else is long and odd
        raise UserError(
            f"{path} is not a checkpoint (not a PyTorch zip archive); give an experiment folder or the .pt file "
            "that training or `vqspeech export` wrote."
        )
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:  # weights_only refused an object: it could run code
        raise UserError(
            f"Checkpoint {path} holds Python objects besides tensors and plain data; vqspeech does not load it, "
            "since loading such objects can run code. Use a checkpoint vqspeech wrote."
        ) from None
    except Exception as exc:
        raise UserError(
            f"Checkpoint {path} cannot be read ({first_line(exc)[:120]}); it is corrupt or not a vqspeech checkpoint."
        ) from None
    version = ckpt.get("format_version") if isinstance(ckpt, dict) else None
    if version is None:
        raise UserError(f"{path} is not a vqspeech checkpoint (no format_version).")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise UserError(f"{path} is not a vqspeech checkpoint (format_version {version!r}).")
    for key, kind in (("config", dict), ("speakers", list)):
        if key in ckpt and not isinstance(ckpt[key], kind):
            raise UserError(f"{path} is not a usable vqspeech checkpoint ({key} is not a {kind.__name__}).")
    if "speakers" in ckpt and not all(isinstance(s, str) for s in ckpt["speakers"]):
        raise UserError(f"{path} is not a usable vqspeech checkpoint (a speaker name is not text).")
    if version > FORMAT_VERSION:
        raise UserError(
            f"Checkpoint {path} has format version {version}, newer than this vqspeech "
            f"understands ({FORMAT_VERSION}); upgrade vqspeech."
        )
    return _upgrade(ckpt)


TRAINING_STATE = ("optimizer", "scheduler", "rng", "elapsed_seconds")
"""What every training checkpoint holds and an export does not: training resumes from it."""

RESUME_ONLY = (
    *TRAINING_STATE,
    "best_value",
    "best_step",
    "world_size",
    "data",
    "discriminator",
    "d_optimizer",
    "enrolment_state",
)
"""What only resuming needs: an export leaves it out."""


def check_training_state(ckpt: dict[str, Any], path: str | os.PathLike) -> None:
    """UserError when the checkpoint ``ckpt`` (read from ``path``) lacks :data:`TRAINING_STATE`: an export."""
    missing = [k for k in TRAINING_STATE if k not in ckpt]
    if missing:
        raise UserError(
            f"{path} has no training state ({', '.join(missing)}): it is an export; training cannot resume from it."
        )


def export_checkpoint(src: str | os.PathLike, dst: str | os.PathLike, overwrite: bool = False) -> None:
    """Write a shareable copy of a checkpoint without the :data:`RESUME_ONLY` state; an existing
    ``dst`` (a regular file) is replaced only with ``overwrite``."""
    if Path(dst).suffix != ".pt":
        raise UserError(f"{dst} does not end in .pt; name the export <name>.pt.")
    if Path(dst).exists() and os.path.samefile(src, dst):
        raise UserError(f"{dst} is the checkpoint being exported; write the export to another file.")
    # the folder as written, and as links resolve it: an experiment's checkpoints/ is training's own, and
    # any other checkpoints/ would make its parent look like an experiment
    parent = Path(dst).parent
    for folder in (Path(os.path.abspath(parent)), Path(os.path.realpath(parent)), Path(os.path.realpath(dst)).parent):
        if folder.name == "checkpoints":
            whose = (
                f"the checkpoints of the experiment {folder.parent}, which training and every verb read"
                if is_experiment_folder(folder.parent)
                else "a checkpoints folder, which would make its parent look like an experiment"
            )
            raise UserError(f"{dst} would be written into {whose}; an export is for sharing, write it elsewhere.")
    home = enclosing_experiment(dst)
    if home is not None:  # an export lies in no experiment's checkpoints/, so its results could go nowhere there
        raise UserError(
            f"{dst} lies inside the experiment {home}; an export is for sharing, so write it outside any experiment "
            "folder."
        )
    check_output_file(dst, overwrite)
    if os.path.lexists(dst) and not _is_export(dst):  # --overwrite replaces an export, nothing else
        raise UserError(
            f"{dst} is not an export of vqspeech (a training checkpoint, which resumes a run, or another file); "
            "--overwrite replaces only an export, so choose another name."
        )
    FolderLock(Path(dst).parent, "export").check_free()  # not into a folder a run is writing
    ckpt = load_checkpoint(src)
    payload = {k: v for k, v in ckpt.items() if k not in (*RESUME_ONLY, "format_version")}
    home = model_home(src)
    if ckpt.get("kind") == "prior" and home is not None and (home / "codes.json").is_file():
        # what the prior's folder knows of its codes (which VQ-VAE and codebook made them), so that
        # `prior sample` checks an export against a decoder and a top prior as it checks the folder
        payload["codes_info"] = CodesInfo.load(home / "codes.json").without_ids().to_json()
    save_checkpoint(dst, payload)


def _is_export(path: str | os.PathLike) -> bool:
    """Whether ``path`` holds a checkpoint without training state (what :func:`export_checkpoint` writes)."""
    try:
        ckpt = load_checkpoint(path)
    except UserError:
        return False
    return isinstance(ckpt, dict) and "kind" in ckpt and not any(key in ckpt for key in TRAINING_STATE)


def weights_problem(model: torch.nn.Module, weights: dict[str, Any]) -> str | None:
    """How a checkpoint's ``weights`` (a state dict) fail ``model`` (built on the meta device, so a
    crafted config allocates nothing): a name or shape the model does not have, a missing weight,
    or a value that is not a finite number (NaN weights give NaN losses, constant codes, DC audio);
    None when they fit."""
    shapes = {name: tuple(tensor.shape) for name, tensor in model.state_dict().items()}
    for name, tensor in weights.items():
        if not isinstance(tensor, torch.Tensor) or shapes.get(name) != tuple(tensor.shape):
            wanted = "no such weight" if name not in shapes else f"the config builds {list(shapes[name])}"
            return f"weight {name} does not fit the config: {wanted}"
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            return f"weight {name} holds values that are not finite numbers"
    missing = sorted(set(shapes) - set(weights))
    return f"weight {missing[0]} is missing" if missing else None


def resolve_checkpoint(path: str | Path) -> Path:
    """An experiment folder (-> checkpoints/last.pt) or a checkpoint file."""
    path = Path(path)
    if path.is_dir():
        ckpt = path / "checkpoints" / "last.pt"
        if not ckpt.is_file() and any((path / mark).exists() for mark in OWNED_FOLDER_MARKS):
            raise UserError(
                f"{path} is another command's output folder (codes, a corpus, audio), not a model; give the "
                "experiment folder `vqspeech train` wrote, or a checkpoint file."
            )
        if ckpt.is_file():
            return ckpt
        if path.name == "checkpoints" and any(path.glob("*.pt")):
            raise UserError(
                f"{path} is an experiment's checkpoints folder; give the experiment folder ({path.parent}) "
                "or one checkpoint file in it."
            )
        try:
            empty = not any(not p.name.startswith(".") for p in path.iterdir())
        except OSError:  # unreadable: not one this user trained
            empty = False
        if is_experiment_folder(path) or empty:
            raise UserError(f"{path} holds no checkpoints/last.pt; train it first with `vqspeech train {path} ...`.")
        raise UserError(
            f"{path} is not an experiment folder (it has no checkpoints/last.pt); give the folder "
            "`vqspeech train` wrote, or a checkpoint file."
        )
    if not path.is_file():
        raise UserError(f"{path} is neither an experiment folder nor a checkpoint file; check the path.")
    return path


def used_checkpoint(path: str | Path) -> Path:
    """The checkpoint the inference verbs use: an experiment folder's ``checkpoints/best.pt`` when
    training kept one (a prior: the lowest validation bits per code), else its ``last.pt``; or a
    checkpoint file as given."""
    best = Path(path) / "checkpoints" / "best.pt"
    return best if best.is_file() else resolve_checkpoint(path)
