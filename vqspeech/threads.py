"""Torch's CPU thread count, fitted to the cores other processes leave free.

Why: torch runs each operator's loop on an OpenMP team of ``torch.get_num_threads()`` threads, and
the team meets at a barrier when the operator ends. A WaveNet training step is thousands of small
operators. When another CPU-bound process holds one of the cores, the team's thread on that core
runs only in the time slices the scheduler gives it, every barrier waits for it, and the waiting
thread spins meanwhile. On this project's 2-core machine one competing process cut training from
~33k to ~5k samples/s with 2 threads, while 1 thread kept ~11k (``tools/bench_train.py --load 1``;
DESIGN.md, "Training").

:class:`ThreadGovernor` measures, every ``interval`` seconds, the CPU time the other processes used
(all CPUs' busy time from ``/proc/stat`` minus this process's own) and sets the thread count to the
cores they left free: 1 on a 2-core machine with one competing process, all cores again when it
ends. Off Linux (no ``/proc/stat``) it leaves the thread count as it is.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

import torch

PROC_STAT = Path("/proc/stat")


def machine_busy_seconds(stat: Path = PROC_STAT) -> float | None:
    """CPU seconds all CPUs spent busy since boot (user, nice, system, irq, softirq, steal), or None
    where ``/proc/stat`` cannot be read."""
    try:
        with stat.open() as f:
            fields = f.readline().split()
        user, nice, system, _idle, _iowait, irq, softirq, steal = (int(v) for v in fields[1:9])
    except (OSError, ValueError):
        return None
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def own_cpu_seconds() -> float:
    """CPU seconds this process (all its threads) has used."""
    times = os.times()
    return times.user + times.system


def usable_cores() -> int:
    """Cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


class ThreadGovernor:
    """Keeps ``torch.set_num_threads`` at the cores other processes leave free, at most ``max_threads``
    (default: the count torch had when the governor was made, i.e. ``OMP_NUM_THREADS`` or every core).

    Call :meth:`poll` once per training step; it measures at most every ``interval`` seconds.
    ``busy`` (machine busy CPU seconds, or None), ``own`` (this process's CPU seconds) and
    ``clock`` are injectable for tests.
    """

    def __init__(
        self,
        max_threads: int | None = None,
        interval: float = 10.0,
        busy: Callable[[], float | None] = machine_busy_seconds,
        own: Callable[[], float] = own_cpu_seconds,
        clock: Callable[[], float] = time.monotonic,
        cores: int | None = None,
    ):
        self.max_threads = max(1, min(max_threads or torch.get_num_threads(), usable_cores()))
        self.cores = cores or os.cpu_count() or 1  # /proc/stat counts every CPU of the machine
        self.interval = interval
        self._busy, self._own, self._clock = busy, own, clock
        self.threads = self.max_threads
        self.other_cores = 0.0  # the last measurement of what the other processes used
        torch.set_num_threads(self.threads)
        self._last = self._sample()

    def _sample(self) -> tuple[float, float, float] | None:
        busy = self._busy()
        return None if busy is None else (self._clock(), busy, self._own())

    def poll(self) -> int:
        """The thread count to run with now (set in torch when it changes)."""
        if self._last is None or self._clock() - self._last[0] < self.interval:
            return self.threads
        now = self._sample()
        if now is None:
            return self.threads
        wall = now[0] - self._last[0]
        other = ((now[1] - self._last[1]) - (now[2] - self._last[2])) / wall
        self._last = now
        self.other_cores = max(0.0, other)
        threads = max(1, min(self.max_threads, round(self.cores - self.other_cores)))
        if threads != self.threads:
            self.threads = threads
            torch.set_num_threads(threads)
        return threads
