"""Device choice (`auto|cpu|cuda|mps`), distributed set-up and mixed precision."""

from __future__ import annotations

import contextlib
import math
import os
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist

from .errors import UserError, first_line

DEVICES = ("auto", "cpu", "cuda", "mps")


def select_device(name: str = "auto", local_rank: int = 0) -> torch.device:
    """Resolve a device name; `auto` prefers CUDA, then MPS, then CPU."""
    if name not in DEVICES:
        raise UserError(f"Unknown device {name!r}; choose one of {', '.join(DEVICES)}.")
    if name == "auto":
        if torch.cuda.is_available():
            name = "cuda"
        elif getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            name = "mps"
        else:
            name = "cpu"
    if name == "cuda":
        if not torch.cuda.is_available():
            raise UserError("Device 'cuda' was requested but no CUDA GPU is available; choose the cpu device.")
        return torch.device("cuda", local_rank % torch.cuda.device_count())
    if name == "mps" and not torch.backends.mps.is_available():
        raise UserError("Device 'mps' was requested but MPS is not available; choose the cpu device.")
    return torch.device(name)


def autocast(device: torch.device, enabled: bool):
    """bf16 autocast on CUDA when enabled; a no-op context elsewhere."""
    if enabled and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


@dataclass
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def launch_variable(name: str, default: int) -> int:
    """A whole-number launch variable (WORLD_SIZE, RANK, LOCAL_RANK) from the environment, or
    ``default`` when unset; UserError naming it otherwise."""
    value = os.environ.get(name, "").strip()
    if not value:
        return default
    if not value.isdigit() or len(value) > 6:
        raise UserError(f"{name}={value!r} is not a whole number of processes; unset it, or launch with torchrun.")
    return int(value)


def is_main_process() -> bool:
    """Whether this process prints a run's results: rank 0 of a torchrun launch, or the only one
    (a RANK left in the shell without a WORLD_SIZE above 1 counts for nothing)."""
    return launch_variable("WORLD_SIZE", 1) <= 1 or launch_variable("RANK", 0) == 0


def init_distributed(device_name: str) -> DistInfo:
    """Join the process group when launched by torchrun (gloo on CPU, nccl on CUDA); UserError
    for launch variables that no launcher set (left over in the shell, or mistyped)."""
    world_size = launch_variable("WORLD_SIZE", 1)
    if world_size <= 1:
        return DistInfo()
    missing = [name for name in ("RANK", "MASTER_ADDR", "MASTER_PORT") if not os.environ.get(name)]
    if missing:
        raise UserError(
            f"WORLD_SIZE={world_size} is set but {', '.join(missing)} is not: launch several processes with torchrun "
            "(e.g. `torchrun --nproc_per_node 2 -m vqspeech.cli train ...`), or unset WORLD_SIZE for one process."
        )
    rank = launch_variable("RANK", 0)
    if rank >= world_size:
        raise UserError(f"RANK={rank} is not below WORLD_SIZE={world_size}; launch with torchrun.")
    info = DistInfo(rank, world_size, launch_variable("LOCAL_RANK", 0))
    if not dist.is_initialized():
        use_cuda = device_name in ("auto", "cuda") and torch.cuda.is_available()
        if use_cuda:
            torch.cuda.set_device(info.local_rank % torch.cuda.device_count())
        backend = "nccl" if use_cuda else "gloo"
        if os.environ.get("TORCHELASTIC_RUN_ID"):  # torchrun: its agent's store, every process already started
            dist.init_process_group(backend)
        else:  # another launcher, or variables left in the shell: wait a bounded time for the others
            dist.init_process_group(backend, store=_rendezvous(rank, world_size), rank=rank, world_size=world_size)
    return info


MAX_RENDEZVOUS_SECONDS = 86400
"""The longest wait for the other processes of a launch without torchrun (the wait is deaf to signals)."""


def _rendezvous(rank: int, world_size: int) -> dist.TCPStore:
    """The store at MASTER_ADDR:MASTER_PORT once all ``world_size`` processes have joined it, within
    ``VQSPEECH_RENDEZVOUS_SECONDS`` (default 120); UserError when they do not. The wait is C++
    code that Ctrl-C cannot interrupt, so without a bound a WORLD_SIZE left in the shell made
    `train` wait for ever."""
    seconds = os.environ.get("VQSPEECH_RENDEZVOUS_SECONDS", "").strip() or "120"
    try:
        wait = float(seconds)
    except ValueError:
        wait = math.nan
    if not (math.isfinite(wait) and 0 < wait <= MAX_RENDEZVOUS_SECONDS):  # Ctrl-C cannot end the wait
        raise UserError(
            f"VQSPEECH_RENDEZVOUS_SECONDS={seconds!r} is not a number of seconds from 0 to {MAX_RENDEZVOUS_SECONDS} "
            "(a day)."
        )
    host, port = os.environ["MASTER_ADDR"], launch_variable("MASTER_PORT", 0)
    try:
        store = dist.TCPStore(
            host, port, world_size, is_master=rank == 0, timeout=timedelta(seconds=wait), wait_for_workers=True
        )
    except (RuntimeError, OSError, ValueError, OverflowError) as exc:  # DistStoreError, a port in use, ...
        raise UserError(
            f"WORLD_SIZE={world_size} is set, but the {world_size} processes did not all meet at {host}:{port} within "
            f"{wait:g} s ({first_line(exc)[:120]}); launch them with torchrun (e.g. `torchrun --nproc_per_node "
            f"{world_size} -m vqspeech.cli train ...`), or unset WORLD_SIZE, RANK, MASTER_ADDR and MASTER_PORT for "
            "one process."
        ) from None
    store.set_timeout(timedelta(minutes=30))  # the default of later waits (gloo's own rendezvous through it)
    return store
