"""`vqspeech enroll`: add a speaker to a trained VQ-VAE from a few recordings, everything else frozen.

The model gets one more row in every speaker table (:func:`with_new_speaker`): the waveform
decoder's row starts at the mean of the known speakers' rows and is the only tensor trained; the
objective head's row (never used to decode) is that mean, and the speaker adversary's classifier
gets a zero row. The row is fitted by the decoder's own reconstruction loss on the frozen codes of
the recordings (teacher-forced mu-law cross-entropy for a WaveNet decoder, the multi-scale log-mel
L1 for a conv decoder) with Adam, on random crops drawn as a pure function of (seed, step), so a
resumed enrolment continues exactly where it stopped. Every other parameter stays bit-identical.

The enrolled model is written to a new experiment folder (``OUT/checkpoints/last.pt``,
``speakers.txt``, ``enrolment.json``); the source experiment is only read. The checkpoint keeps the
source's config and step, and an ``enrolment`` record (name, source, recordings, options, steps); its
optimizer state (``enrolment_state``) is resume-only and left out of an export.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.func import functional_call
from tqdm import tqdm

from ..checkpoint import RESUME_ONLY, cpu_state_dict, load_checkpoint, resolve_checkpoint, save_checkpoint
from ..config import save_yaml
from ..data.dataset import crop_length
from ..data.reference import load_reference, reference_files
from ..errors import UserError
from ..fileio import (
    FolderLock,
    case_twin,
    check_plain_name,
    enclosing_experiment,
    file_stamp,
    overlapping,
    user_path,
    write_text_atomic,
)
from ..inference.vqspeech import VQSpeech
from ..models.vqvae import VQVAE
from ..threads import ThreadGovernor
from .schema import MAX_BATCH_SAMPLES
from .trainer import out_of_memory_as_user_error

TABLE = "decoder.speaker_embedding.weight"
"""The one tensor enrolment trains (its last row)."""


@dataclass
class EnrolOptions:
    """How long and how the new row is fitted."""

    steps: int = 400  # optimizer steps (a budget in minutes may end it first)
    minutes: float | None = 5.0  # wall-clock budget, summed over resumed runs (None: steps only)
    lr: float = 1e-2  # Adam's learning rate for the row
    batch_size: int = 8  # crops per step
    crop_seconds: float = 0.5  # crop length (whole code frames)
    seed: int = 0
    checkpoint_every: int = 50  # steps between resumable checkpoints

    def check(self) -> None:
        rules = (
            ("steps", self.steps, 1, 1_000_000),
            ("lr", self.lr, 1e-6, 1.0),
            ("batch_size", self.batch_size, 1, 1024),
            ("crop_seconds", self.crop_seconds, 0.05, 60.0),
            ("checkpoint_every", self.checkpoint_every, 1, 1_000_000),
        )
        for name, value, low, high in rules:
            if not (isinstance(value, (int, float)) and low <= value <= high):  # NaN fails both comparisons
                raise UserError(f"`{name}` must be from {low:g} to {high:g}, not {value}.")
        if self.minutes is not None and not (isinstance(self.minutes, (int, float)) and 0 < self.minutes <= 10_000):
            raise UserError(f"`minutes` must be above 0 and at most 10000, not {self.minutes}.")


def with_new_speaker(model: VQVAE, config: dict[str, Any], num_speakers: int) -> VQVAE:
    """A copy of ``model`` (built for ``num_speakers``) that knows one more speaker: every tensor
    equal, every speaker table one row longer (embedding tables: the mean of their rows; the
    speaker adversary's classifier: zeros)."""
    state = model.state_dict()
    grown = VQVAE.from_config(config, num_speakers + 1)
    new_state = {}
    for key, target in grown.state_dict().items():
        old = state[key]
        if old.shape == target.shape:
            new_state[key] = old.clone()
            continue
        if old.shape[1:] != target.shape[1:] or target.shape[0] != old.shape[0] + 1 or old.shape[0] != num_speakers:
            raise ValueError(f"{key}: {tuple(old.shape)} -> {tuple(target.shape)} is not one more speaker")
        extra = old.mean(0, keepdim=True) if key.endswith("speaker_embedding.weight") else torch.zeros_like(old[:1])
        new_state[key] = torch.cat([old, extra])
    grown.load_state_dict(new_state)
    grown.set_stage(model.stage)
    return grown


def draw_crops(
    audio: list[np.ndarray], step: int, seed: int, batch_size: int, crop_samples: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Step ``step``'s batch: (audio [B, crop_samples], mask [B, crop_samples]); recordings drawn in
    proportion to their length, a recording shorter than a crop padded with zeros (mask 0)."""
    rng = np.random.default_rng([seed, step])
    lengths = np.array([len(a) for a in audio], dtype=np.float64)
    picks = rng.choice(len(audio), size=batch_size, p=lengths / lengths.sum())
    batch = np.zeros((batch_size, crop_samples), dtype=np.float32)
    mask = np.zeros((batch_size, crop_samples), dtype=np.float32)
    for row, index in enumerate(picks):
        source = audio[index]
        offset = int(rng.integers(0, max(len(source) - crop_samples, 0) + 1))
        piece = source[offset : offset + crop_samples]
        batch[row, : len(piece)], mask[row, : len(piece)] = piece, 1.0
    return torch.from_numpy(batch), torch.from_numpy(mask)


def fingerprint(paths: list[str]) -> list[list[Any]]:
    """[path, size, mtime_ns] of each file: a replaced model or recording shows as a change."""
    return [[p, *file_stamp(p)] for p in paths]


RESUMED_OPTIONS = ("lr", "batch_size", "crop_seconds", "seed")
"""The options a resumed enrolment must share with its start: they set the optimizer and the crops."""


def _resumed_options(options: EnrolOptions) -> dict[str, Any]:
    return {k: getattr(options, k) for k in RESUMED_OPTIONS}


RESULTS = ("metrics.json", "report.html")
"""What other verbs write into an experiment folder about its model (``evaluate loss --out``, ``report``)."""


def _forget_results(out: Path) -> None:
    """Before an enrolment is replaced: remove the results that describe it, so none of them is
    later read as the new model's; an ``eval_convert/`` folder (``evaluate conversion``'s) is
    refused instead, being more than single files."""
    if (out / "eval_convert").exists():
        raise UserError(
            f"{out / 'eval_convert'} holds an evaluation of the enrolment being replaced; delete it first, or "
            "enrol into a new folder."
        )
    for name in RESULTS:
        (out / name).unlink(missing_ok=True)


def _resume_state(
    out: Path, name: str, inputs: list[list[Any]], options: EnrolOptions, overwrite: bool
) -> dict[str, Any] | None:
    """The enrolment of ``name`` in ``out`` to continue (it has taken fewer than ``options.steps``
    steps), None to start afresh; UserError when ``out`` holds something else, or (without
    ``overwrite``) an enrolment of another name, from other recordings or another state of the model
    (``inputs``: :func:`fingerprint` of the source checkpoint and the recordings), with other
    :data:`RESUMED_OPTIONS`, or one already ``options.steps`` long."""
    ckpt_path = out / "checkpoints" / "last.pt"
    if not ckpt_path.is_file():
        if out.is_dir() and any(not p.name.startswith(".") for p in out.iterdir()):
            raise UserError(f"{out} holds files that are not an enrolment; choose an empty or new output folder.")
        return None
    ckpt = load_checkpoint(ckpt_path)
    record = ckpt.get("enrolment")
    if not isinstance(record, dict) or "enrolment_state" not in ckpt:
        raise UserError(f"{out} holds another model, not an enrolment; choose another output folder.")
    if overwrite:
        _forget_results(out)
        return None
    if record.get("name") != name:
        raise UserError(f"{out} holds an enrolment of {record.get('name')!r}; pass `overwrite=True` to replace it.")
    if record.get("inputs") != inputs:
        raise UserError(
            f"{out} holds an enrolment of {name!r} from other recordings or another state of the model; "
            "pass `overwrite=True` to start again."
        )
    before = record.get("options")
    before = before if isinstance(before, dict) else {}  # an enrolment from before options were recorded
    now = _resumed_options(options)
    changed = [f"{k} {before[k]} -> {v}" for k, v in now.items() if k in before and before[k] != v]
    if changed:
        raise UserError(
            f"{out} holds an enrolment of {name!r} begun with other settings ({', '.join(changed)}); resume it with "
            "the same ones, or pass `overwrite=True` to start again."
        )
    done, steps = ckpt["enrolment_state"]["step"], options.steps
    if record.get("finished") and done >= steps:
        raise UserError(
            f"{out} already holds {name!r}, enrolled in {done} steps; pass more `steps` to continue, or "
            "`overwrite=True` to enrol again."
        )
    return ckpt


def enroll_speaker(
    exp: str | Path,
    name: str,
    recordings: list[str | Path],
    out: str | Path,
    options: EnrolOptions | None = None,
    *,
    overwrite: bool = False,
    device: str = "auto",
    progress: bool = True,
) -> dict[str, Any]:
    """Fit a speaker-table row for ``name`` on ``recordings`` (files or folders) and write the model
    that knows it to the experiment folder ``out``; continues an enrolment there that took fewer steps.
    Returns the summary also written to ``out/enrolment.json``."""
    options = options or EnrolOptions()
    options.check()
    source = resolve_checkpoint(user_path(exp)).resolve()
    out = user_path(out)
    check_plain_name(name)
    if out.exists() and not out.is_dir():
        raise UserError(f"{out} is a file; give a folder for the enrolled model.")
    # an experiment's checkpoint: its whole folder is off limits; a loose checkpoint file: the file
    exp_folder = source.parent.parent if source.parent.name == "checkpoints" else source
    if overlapping(out, exp_folder):
        raise UserError(f"{out} overlaps the experiment {exp_folder}; write the enrolled model to a folder of its own.")
    home = enclosing_experiment(out)
    if home is not None:  # its report would list another model inside it
        raise UserError(
            f"{out} lies inside the experiment {home}; write the enrolled model to a folder outside any experiment."
        )
    if source.parent.name == "checkpoints":  # a model still training changes under the enrolment
        FolderLock(exp_folder, "enroll").check_free()
    stamp = file_stamp(source)
    ckpt = load_checkpoint(source)  # read once: the weights, the config and the fingerprint agree
    if file_stamp(source) != stamp:
        raise UserError(f"{source} changed while it was read (a training saving it?); enrol when it has finished.")
    vq = VQSpeech.from_checkpoint(ckpt, source, device)
    vq.require_decoder()
    same = case_twin(name, vq.speakers)
    if same is not None:  # George beside george
        raise UserError(f"{exp} already knows a speaker {same!r}; choose another name.")
    found = sorted(reference_files(recordings), key=lambda p: str(p.resolve()))  # in any order given, one set
    files = [str(p.resolve()) for p in found]
    audio = load_reference(found, vq.sample_rate, min_seconds=1.0)
    crop = crop_length(options.crop_seconds, vq.sample_rate, vq.hop_length)
    if options.batch_size * crop > MAX_BATCH_SAMPLES:
        raise UserError(
            f"`batch_size` {options.batch_size} x {crop} samples per crop exceeds {MAX_BATCH_SAMPLES:,} samples "
            "a step; lower batch_size or crop_seconds."
        )
    with FolderLock(out, "enroll"):
        inputs = [[str(source), *stamp], *fingerprint(files)]
        resume = _resume_state(out, name, inputs, options, overwrite)
        return _enroll(vq, ckpt, source, name, files, inputs, audio, out, options, resume, progress)


def _enroll(
    vq: VQSpeech,
    ckpt: dict[str, Any],
    source: Path,
    name: str,
    files: list[str],
    inputs: list[list[Any]],
    audio: list[np.ndarray],
    out: Path,
    options: EnrolOptions,
    resume: dict[str, Any] | None,
    progress: bool,
) -> dict[str, Any]:
    config = ckpt["config"]
    model = with_new_speaker(vq.model.cpu(), config["model"], len(vq.speakers)).to(vq.device)
    model.set_stage("decoder")
    model.eval()  # no time jitter: the codes are the recordings'
    model.requires_grad_(False)
    table = model.state_dict()[TABLE]
    row = torch.nn.Parameter(table[-1:].clone())
    optimizer = torch.optim.Adam([row], lr=options.lr)
    step, elapsed, first_loss = 0, 0.0, None
    if resume is not None:
        state = resume["enrolment_state"]
        row.data.copy_(resume["model"][TABLE][-1:].to(vq.device))
        optimizer.load_state_dict(state["optimizer"])
        step, elapsed, first_loss = state["step"], state["elapsed_seconds"], state["first_loss"]
    known = table[:-1]
    new_id = len(vq.speakers)
    crop = crop_length(options.crop_seconds, vq.sample_rate, vq.hop_length)
    speakers = torch.full((options.batch_size,), new_id, dtype=torch.long, device=vq.device)
    speaker_names = [*vq.speakers, name]

    def save(finished: bool, loss: float | None) -> None:
        state = cpu_state_dict(model)
        state[TABLE] = torch.cat([known, row.detach()]).cpu()
        record = {
            "name": name,
            "source": str(source),
            "files": files,
            "inputs": inputs,
            "options": _resumed_options(options),
            "steps": step,
            "finished": finished,
        }
        if isinstance(ckpt.get("enrolment"), dict):  # enrolled from an enrolled model: keep the chain
            record["source_enrolment"] = {k: v for k, v in ckpt["enrolment"].items() if k != "inputs"}
        payload = {k: v for k, v in ckpt.items() if k not in (*RESUME_ONLY, "format_version")}
        payload.update(model=state, speakers=speaker_names, enrolment=record)
        payload["enrolment_state"] = {
            "optimizer": optimizer.state_dict(),
            "step": step,
            "elapsed_seconds": elapsed,
            "first_loss": first_loss,
        }
        save_checkpoint(out / "checkpoints" / "last.pt", payload)
        write_text_atomic(out / "speakers.txt", "".join(f"{s}\n" for s in speaker_names))
        save_yaml(out / "config.yaml", config)
        summary = {**record, "minutes": elapsed / 60, "first_loss": first_loss, "last_loss": loss}
        write_text_atomic(out / "enrolment.json", json.dumps(summary, indent=2) + "\n")

    loss_value: float | None = None
    bar = tqdm(total=options.steps, initial=step, desc=f"enroll {name}", unit="step", disable=not progress)
    clock = time.perf_counter() - elapsed
    threads = torch.get_num_threads()
    governor = ThreadGovernor() if vq.device.type == "cpu" else None
    try:
        while step < options.steps and (options.minutes is None or elapsed < options.minutes * 60):
            if governor is not None:
                governor.poll()
            batch, mask = draw_crops(audio, step, options.seed, options.batch_size, crop)
            weights = {TABLE: torch.cat([known, row])}
            with out_of_memory_as_user_error(step, "lower --batch_size"):
                output = functional_call(model, weights, (batch.to(vq.device), speakers, mask.to(vq.device)))
                optimizer.zero_grad(set_to_none=True)
                output.loss.backward()
            optimizer.step()
            loss_value = float(output.loss.detach())
            first_loss = loss_value if first_loss is None else first_loss
            step += 1
            elapsed = time.perf_counter() - clock
            bar.update(1)
            bar.set_postfix(loss=f"{loss_value:.3f}")
            if step % options.checkpoint_every == 0:
                save(False, loss_value)
    except KeyboardInterrupt:
        save(False, loss_value)
        raise
    finally:
        bar.close()
        torch.set_num_threads(threads)
    save(True, loss_value)
    return json.loads((out / "enrolment.json").read_text())
