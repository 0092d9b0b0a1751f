"""One trainer for every model: the loop, schedule, DDP, bf16 autocast, checkpoints and logging.

What is specific to a model lives in a :class:`Task` (``vqvae_task.py``, ``prior_task.py``): how
to build batches, compute the loss, validate and draw media for TensorBoard. The trainer owns
everything else.
"""

from __future__ import annotations

import abc
import contextlib
import math
import shutil
import signal
import sys
import threading
import time
import warnings
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
from torch.utils.tensorboard import SummaryWriter
from tqdm import tqdm

from ..checkpoint import check_training_state, cpu_state_dict, save_checkpoint
from ..device import DistInfo, autocast
from ..errors import UserError, first_line
from ..fileio import atomic_path, folder_identity, is_int, json_digest
from ..threads import ThreadGovernor, usable_cores


class Task(abc.ABC):
    """What the trainer needs to know about one kind of model."""

    kind: str
    """Stored in checkpoints; resuming refuses a checkpoint of another kind."""
    model: torch.nn.Module
    progress_keys: tuple[str, ...] = ()
    """Scalars of :meth:`loss` shown on the progress bar."""
    best_metric: str | None = None
    """A validation metric (lower is better) whose best checkpoint is kept as ``best.pt``."""
    step: int = 0
    """Optimizer steps taken so far; the trainer sets it before each :meth:`loss`."""
    memory_fix: str = "lower train.batch_size or train.crop_seconds (or the model's size)"
    """What an out-of-memory error asks the user to change."""

    @abc.abstractmethod
    def batches(self, start_step: int, rank: int, device: torch.device) -> Iterator[Any]:
        """Training batches from step ``start_step`` on, a pure function of (seed, step, rank)."""

    @abc.abstractmethod
    def loss(self, model: torch.nn.Module, batch: Any) -> tuple[torch.Tensor, dict[str, torch.Tensor | int]]:
        """(loss to minimise, detached scalars to log; ``samples`` counts the batch's samples)."""

    @abc.abstractmethod
    def validate(self, model: torch.nn.Module, device: torch.device) -> dict[str, float]:
        """Validation metrics (the model is in eval mode)."""

    @abc.abstractmethod
    def log_media(self, model: torch.nn.Module, writer: SummaryWriter, step: int, device: torch.device) -> None:
        """Write audio, figures or histograms to TensorBoard."""

    @abc.abstractmethod
    def checkpoint_fields(self) -> dict[str, Any]:
        """What the task adds to every checkpoint (speakers, ...)."""

    def data_record(self) -> dict[str, Any] | None:
        """What the task trains and validates on (:func:`data_record`), saved in every checkpoint
        so that resuming on other data is refused. An optional hook: None records nothing."""
        return None

    def to_device(self, device: torch.device) -> None:
        """Move what the task trains besides ``model`` (a discriminator) to ``device``. An optional
        hook: a task with such state overrides it; by default there is nothing to move."""
        return None

    def restore(self, ckpt: dict[str, Any]) -> None:
        """Resume that state from a checkpoint; ValueError when it is missing. An optional hook: a
        task with such state overrides it; by default there is nothing to restore."""
        return None


class DeferredInterrupts:
    """Ctrl-C (SIGINT) and SIGTERM noted, not raised, while training runs (main thread only): the
    loop stops after the step under way and saves it, so an interrupted run continues from where it
    stopped, never from a half-applied optimizer step. The first signal puts the previous handlers
    back, so a second one acts at once; :meth:`reraise` then ends the run as the signal would have."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> DeferredInterrupts:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                previous = signal.getsignal(sig)
                if previous not in (signal.SIG_IGN, None):  # an ignored signal stays ignored
                    self._previous[sig] = previous
                    signal.signal(sig, self._note)
        return self

    def _note(self, signum: int, frame: Any) -> None:
        self.signum = signum
        self._restore()
        tqdm.write("stopping after this step, which is saved (interrupt again to stop at once)", file=sys.stderr)

    def _restore(self) -> None:
        for sig, previous in self._previous.items():
            signal.signal(sig, previous)
        self._previous = {}

    def __exit__(self, *exc: object) -> None:
        self._restore()

    def reraise(self) -> None:
        """End the run as the noted signal would have (the CLI: one line, exit 130 or 143); a
        process that only learned of it from another rank raises KeyboardInterrupt."""
        self._restore()
        if self.signum is not None:
            signal.raise_signal(self.signum)
        raise KeyboardInterrupt


@contextlib.contextmanager
def quiet_event_writer_errors() -> Iterator[None]:
    """TensorBoard writes each event from a thread of its own, which prints a traceback when the
    experiment folder is moved or deleted under it. The trainer finds that at its next step and says
    so in one sentence (:meth:`Trainer._exp_dir_moved`), so the thread's file errors are not printed."""
    previous = threading.excepthook

    def hook(args) -> None:
        if not (type(args.thread).__name__ == "_AsyncWriterThread" and issubclass(args.exc_type, OSError)):
            previous(args)

    threading.excepthook = hook
    try:
        yield
    finally:
        threading.excepthook = previous


def data_record(train: Iterable[tuple], valid: Iterable[tuple]) -> dict[str, Any]:
    """The number of training and validation utterances and a digest of their rows (an utterance's
    id or content, speaker, length): a manifest or codes folder changed since the run started gives
    another digest."""
    rows = {"train": sorted(train), "valid": sorted(valid)}
    return {"train": len(rows["train"]), "valid": len(rows["valid"]), "digest": json_digest(rows)}


@contextlib.contextmanager
def out_of_memory_as_user_error(step: int, fix: str) -> Iterator[None]:
    """Turn the allocator's failure (CPU: a RuntimeError "can't allocate memory"; CUDA:
    torch.OutOfMemoryError) into one sentence naming the settings that size a step (``fix``)."""
    try:
        yield
    except RuntimeError as exc:  # torch.OutOfMemoryError is a RuntimeError too
        if not (isinstance(exc, torch.OutOfMemoryError) or "allocate memory" in str(exc)):
            raise
        raise UserError(f"Out of memory at step {step} ({first_line(exc)[:80]}); {fix}.") from None


def _count(value: Any) -> int:
    """A step count read from a checkpoint: a non-negative int (ValueError otherwise)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"step {value!r} is not a count")
    return value


def lr_lambda(warmup_steps: int, max_steps: int, schedule: str, min_ratio: float):
    """Linear warm-up, then constant or cosine decay to ``min_ratio`` of the peak at max_steps."""
    if schedule not in ("constant", "cosine"):
        raise UserError(f"Unknown train.schedule {schedule!r}; use constant or cosine.")

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        if schedule == "constant":
            return 1.0
        progress = min(1.0, (step - warmup_steps) / max(1, max_steps - warmup_steps))
        return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

    return factor


class Trainer:
    """Runs (or resumes) training of ``task.model`` in ``exp_dir``. ``config`` is the experiment's
    whole config (saved in every checkpoint); its ``train`` section drives the loop."""

    def __init__(
        self,
        exp_dir: str | Path,
        task: Task,
        config: dict[str, Any],
        device: torch.device,
        dist_info: DistInfo | None = None,
        resume: dict[str, Any] | None = None,
    ):
        self.exp_dir, self.task, self.config = Path(exp_dir), task, config
        self.settings = config["train"]  # the loop's settings
        self.device, self.dist = device, dist_info or DistInfo()
        self.ckpt_dir = self.exp_dir / "checkpoints"
        self.model = task.model.to(device)
        task.to_device(device)
        settings = self.settings
        self.optimizer = torch.optim.Adam(
            [p for p in self.model.parameters() if p.requires_grad],  # a frozen part is not optimised
            lr=settings["lr"],
            betas=tuple(settings["betas"]),
            weight_decay=settings["weight_decay"],
        )
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer,
            lr_lambda(settings["warmup_steps"], settings["max_steps"], settings["schedule"], settings["lr_min_ratio"]),
        )
        self.step, self.elapsed = 0, 0.0
        self.interrupted = False  # a Ctrl-C or SIGTERM stopped the loop (on any rank)
        self.best: tuple[float, int] | None = None  # (value of task.best_metric, step)
        self.amp = settings["amp"] and device.type == "cuda"
        self.data = task.data_record()  # saved in every checkpoint; resuming compares it
        if settings["warmup_steps"] >= settings["max_steps"] and self.dist.is_main:
            warnings.warn(
                f"train.warmup_steps={settings['warmup_steps']} is not below train.max_steps={settings['max_steps']}, "
                "so the learning rate never reaches train.lr; lower train.warmup_steps.",
                stacklevel=2,
            )
        if resume is not None:
            self._resume(resume)
        self.ddp_model = (
            DistributedDataParallel(self.model, device_ids=[device.index] if device.type == "cuda" else None)
            if self.dist.enabled
            else self.model
        )

    # --- state -----------------------------------------------------------------------------
    def _resume(self, ckpt: dict[str, Any]) -> None:
        """Restore from ``checkpoints/last.pt`` as loaded by the caller."""
        last = self.ckpt_dir / "last.pt"
        if ckpt.get("kind") != self.task.kind:
            raise UserError(
                f"{last} holds a {ckpt.get('kind')} model, not a {self.task.kind}; use another experiment folder."
            )
        check_training_state(ckpt, last)
        before, now = ckpt.get("data"), self.data
        if isinstance(before, dict) and now is not None and before.get("digest") != now["digest"]:
            raise UserError(
                f"{self.exp_dir} was trained on other data than it is given now ({before.get('train')} training "
                f"and {before.get('valid')} validation utterances then, {now['train']} and {now['valid']} now, or "
                "as many with other ids, speakers, splits or lengths, or audio files rewritten since: a copy that does "
                "not keep file times, `cp` without -a, counts as rewritten); resume on the data it started with, or "
                "train in a new folder."
            )
        world = ckpt.get("world_size")
        if self.dist.is_main and is_int(world) and world != self.dist.world_size:
            warnings.warn(
                f"{self.exp_dir} trained with {world} process(es) and resumes with {self.dist.world_size}: "
                "train.batch_size is per process, so each step now sees "
                f"{self.dist.world_size}/{world} of the crops it did, and the data order differs from an "
                "uninterrupted run.",
                stacklevel=2,
            )
        try:
            self.model.load_state_dict(ckpt["model"])
            self.optimizer.load_state_dict(ckpt["optimizer"])
            self.task.restore(ckpt)
        except Exception as exc:  # RuntimeError for other shapes; TypeError, KeyError for a damaged file
            raise UserError(
                f"{last} does not match the configured model ({str(exc).splitlines()[0][:100]}); "
                "use a new experiment folder."
            ) from None
        try:  # a damaged or crafted checkpoint can fail in any of these
            self.scheduler.load_state_dict(ckpt["scheduler"])
            self.step, self.elapsed = _count(ckpt["step"]), float(ckpt["elapsed_seconds"])
            if ckpt.get("best_step") is not None:
                self.best = (float(ckpt["best_value"]), _count(ckpt["best_step"]))
            torch.set_rng_state(ckpt["rng"]["torch"])
            if torch.cuda.is_available() and ckpt["rng"].get("cuda"):
                torch.cuda.set_rng_state_all(ckpt["rng"]["cuda"])
        except Exception as exc:
            raise UserError(
                f"{last} holds a damaged training state ({first_line(exc)[:100]}); train in a new folder, or "
                "resume from a copy of a good checkpoint."
            ) from None
        # optimizer settings come from the config, so overrides given on resume take effect
        self.scheduler.base_lrs = [self.settings["lr"] for _ in self.optimizer.param_groups]
        factor = self.scheduler.lr_lambdas[0](self.scheduler.last_epoch)
        for group in self.optimizer.param_groups:
            group.update(
                lr=self.settings["lr"] * factor,
                initial_lr=self.settings["lr"],
                betas=tuple(self.settings["betas"]),
                weight_decay=self.settings["weight_decay"],
            )

    def save(self, name: str = "last.pt", also_last: bool = False) -> None:
        """Write a checkpoint (rank 0 only); ``also_last`` copies it to last.pt as well."""
        if not self.dist.is_main:
            return
        rng: dict[str, torch.Tensor | list[torch.Tensor]] = {"torch": torch.get_rng_state()}
        if torch.cuda.is_available():
            rng["cuda"] = torch.cuda.get_rng_state_all()
        save_checkpoint(
            self.ckpt_dir / name,
            {
                "kind": self.task.kind,
                "step": self.step,
                "elapsed_seconds": self.elapsed,
                "config": self.config,
                "model": cpu_state_dict(self.model),
                "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(),
                "rng": rng,
                "best_value": self.best[0] if self.best else None,
                "best_step": self.best[1] if self.best else None,
                "world_size": self.dist.world_size,
                "data": self.data,
                **self.task.checkpoint_fields(),
            },
        )
        if also_last and name != "last.pt":
            with atomic_path(self.ckpt_dir / "last.pt") as tmp:
                shutil.copyfile(self.ckpt_dir / name, tmp)

    # --- loop ------------------------------------------------------------------------------
    def _should_stop(self, started: float, diverged: bool, interrupts: DeferredInterrupts) -> bool:
        """Budget reached, or interrupted (``self.interrupted``)? Every rank stops at the same step,
        and every rank raises on divergence."""
        budget = self.settings.get("max_minutes")
        stop = self.step >= self.settings["max_steps"] or (
            budget is not None and self.elapsed + time.time() - started >= 60 * budget
        )
        self.interrupted = interrupts.signum is not None
        moved = self.dist.is_main and self._exp_dir_moved()  # the main process writes the folder
        if self.dist.enabled:
            flags = torch.tensor(
                [float(stop), float(diverged), float(self.interrupted), float(moved)],
                device=self.device if self.device.type == "cuda" else "cpu",
            )
            dist.all_reduce(flags, op=dist.ReduceOp.MAX)
            stop, diverged, self.interrupted, moved = (bool(f) for f in flags)
        stop = stop or self.interrupted
        if diverged:
            raise UserError(
                f"Training diverged at step {self.step} (the loss is not finite); lower train.lr or train.grad_clip."
            )
        if moved:
            raise self._moved_error()
        return stop

    def _moved_error(self) -> UserError:
        return UserError(
            f"{self.exp_dir} was moved or deleted during training (at step {self.step}); put it back and run the "
            "same command to resume from its last checkpoint."
        )

    def _exp_dir_moved(self) -> bool:
        """Is the experiment folder no longer at its path (moved, renamed or deleted while training)? Its
        checkpoints could not be written, and TensorBoard's next flush would fail in its own thread."""
        return folder_identity(self.exp_dir) != self._exp_identity  # None once it is gone

    def fit(self) -> dict[str, float]:
        """Train until max_steps or the wall-clock budget; returns the last validation metrics."""
        threads = torch.get_num_threads()
        governor = None
        if self.device.type == "cpu":
            if self.settings.get("threads"):  # more threads than cores only wait on each other
                torch.set_num_threads(min(self.settings["threads"], usable_cores()))
            else:
                governor = ThreadGovernor()
        try:
            with quiet_event_writer_errors():
                return self._fit(governor)
        finally:
            torch.set_num_threads(threads)

    def _fit(self, governor: ThreadGovernor | None) -> dict[str, float]:
        self._exp_identity = folder_identity(self.exp_dir)
        writer = None
        if self.dist.is_main:
            if self.step == 0:  # a fresh start: curves of an earlier start killed before its first checkpoint go
                for events in (self.exp_dir / "tb").rglob("events.out.tfevents.*"):
                    events.unlink()
            # events after this step (a killed run's, even one that left no checkpoint) are dropped; the
            # checkpoint's own step was logged before it was saved
            writer = SummaryWriter(str(self.exp_dir / "tb"), purge_step=self.step + 1)
        started, metrics, first_step = time.time(), {}, self.step
        batches = self.task.batches(self.step, self.dist.rank, self.device)
        bar = tqdm(
            total=self.settings["max_steps"],
            initial=self.step,
            disable=not self.dist.is_main,
            desc=f"train {self.task.kind}",
            dynamic_ncols=True,
            mininterval=1.0,
        )
        window_samples: torch.Tensor | float = 0.0  # samples since the last log (a task may count in a tensor)
        window_start, diverged, validated_at = time.time(), False, None
        with DeferredInterrupts() as interrupts, contextlib.closing(bar):  # an error is printed below the bar
            while not self._should_stop(started, diverged, interrupts):
                if governor is not None:
                    governor.poll()
                with self._saved_on_failure(started):  # a file of the data gone or changed: keep the steps so far
                    batch = next(batches)
                self.model.train()
                self.task.step = self.step
                with out_of_memory_as_user_error(self.step, self.task.memory_fix):
                    with autocast(self.device, self.amp):
                        loss, scalars = self.task.loss(self.ddp_model, batch)
                    self.optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.settings["grad_clip"])
                self.optimizer.step()
                self.scheduler.step()
                self.step += 1
                window_samples = window_samples + scalars.pop("samples", 0) * self.dist.world_size
                loss = loss.detach()
                diverged = not math.isfinite(float(loss))
                if self.step % self.settings["log_every"] == 0 and writer is not None:
                    now = time.time()
                    rate = float(window_samples) / max(now - window_start, 1e-9)
                    window_start, window_samples = now, 0.0
                    values = {k: float(v) for k, v in scalars.items()}
                    try:
                        for key, value in values.items():
                            writer.add_scalar(f"train/{key}", value, self.step)
                        writer.add_scalar("train/lr", self.scheduler.get_last_lr()[0], self.step)
                        writer.add_scalar("train/grad_norm", float(grad_norm), self.step)
                        writer.add_scalar("speed/samples_per_s", rate, self.step)
                    except OSError:  # the writer's thread failed on its file: the folder moved since this step began?
                        if self._exp_dir_moved():
                            raise self._moved_error() from None
                        raise
                    bar.set_postfix(
                        ordered_dict=None,
                        refresh=False,
                        loss=f"{float(loss):.3f}",
                        **{k: f"{v:.3g}" for k, v in values.items() if k in self.task.progress_keys},
                        sps=f"{rate:,.0f}",
                    )
                bar.update(1)
                with self._saved_on_failure(started):
                    if self.step % self.settings["valid_every"] == 0:
                        metrics, validated_at = self._validate(writer), self.step
                    media = self.settings["media_every"] and self.step % self.settings["media_every"] == 0
                    if media and writer is not None:
                        self.task.log_media(self.model, writer, self.step, self.device)
                if self.step % self.settings["checkpoint_every"] == 0:
                    self.elapsed += time.time() - started
                    started = time.time()
                    self.save(f"step-{self.step}.pt", also_last=True)
        if self.step == first_step < self.settings["max_steps"] and not self.interrupted and self.dist.is_main:
            warnings.warn(  # the budget ended the run, not the steps
                f"train.max_minutes={self.settings.get('max_minutes')} ended the run before its first step, so it "
                "trained nothing; give it more minutes.",
                stacklevel=2,
            )
        if validated_at != self.step and not self.interrupted:
            with self._saved_on_failure(started):
                metrics = self._validate(writer)
        self.elapsed += time.time() - started
        self.save()  # interrupted: the step under way is done and saved, then the run ends as the signal would
        if writer is not None:
            writer.close()
        if self.interrupted:
            interrupts.reraise()
        return metrics

    @contextlib.contextmanager
    def _saved_on_failure(self, started: float) -> Iterator[None]:
        """Keep the steps since the last checkpoint (``started``: when this run's time was last
        added to ``elapsed``) when reading the data, validation or media fail (a file changed or
        gone, a plot), or a signal stops them (the final validation runs after signals are no
        longer deferred): the corrected rerun resumes from here."""
        try:
            yield
        except (Exception, KeyboardInterrupt):
            self.elapsed += time.time() - started
            self.save()
            raise

    def _validate(self, writer) -> dict[str, float]:
        """Validation metrics; a new best of ``task.best_metric`` is saved as ``best.pt``."""
        self.model.eval()
        with torch.no_grad(), autocast(self.device, self.amp):
            metrics = self.task.validate(self.model, self.device)
        if writer is not None:
            for key, value in metrics.items():
                writer.add_scalar(f"valid/{key}", value, self.step)
            writer.flush()
        best_key = self.task.best_metric
        if best_key is not None and best_key in metrics and (self.best is None or metrics[best_key] < self.best[0]):
            self.best = (float(metrics[best_key]), self.step)
            self.save("best.pt", also_last=True)  # a run killed before its next checkpoint resumes from here
        return metrics
