"""The thread governor: fewer torch threads while other processes hold cores, all of them after."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from vqspeech.threads import ThreadGovernor, machine_busy_seconds, usable_cores


class FakeMachine:
    """A 2-core machine's CPU clocks: ``run(seconds, ours, others)`` advances the wall clock and adds
    the cores busy with this process and with others."""

    def __init__(self):
        self.wall = self.busy = self.own = 0.0

    def run(self, seconds: float, ours: float, others: float) -> None:
        self.wall += seconds
        self.own += seconds * ours
        self.busy += seconds * (ours + others)


@pytest.fixture
def restore_threads():
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def make_governor(machine: FakeMachine) -> ThreadGovernor:
    return ThreadGovernor(
        max_threads=2, interval=10.0, busy=lambda: machine.busy, own=lambda: machine.own, clock=lambda: machine.wall,
        cores=2,
    )


@pytest.mark.skipif(usable_cores() < 2, reason="needs 2 usable cores")
def test_one_competing_process_leaves_one_thread_and_its_end_gives_both_back(restore_threads):
    machine = FakeMachine()
    governor = make_governor(machine)
    assert governor.threads == 2 and torch.get_num_threads() == 2

    machine.run(5, ours=2, others=0)
    assert governor.poll() == 2  # before the interval: no measurement
    machine.run(6, ours=2, others=0)
    assert governor.poll() == 2  # a quiet machine
    machine.run(10, ours=1.1, others=0.9)  # a competing process takes most of a core
    assert governor.poll() == 1 and torch.get_num_threads() == 1
    assert governor.other_cores == pytest.approx(0.9)

    machine.run(11, ours=1, others=1)
    assert governor.poll() == 1
    machine.run(11, ours=1, others=0.05)  # it ended: background noise only
    assert governor.poll() == 2 and torch.get_num_threads() == 2


@pytest.mark.skipif(usable_cores() < 2, reason="needs 2 usable cores")
def test_light_background_work_keeps_every_thread(restore_threads):
    machine = FakeMachine()
    governor = make_governor(machine)
    machine.run(11, ours=1.7, others=0.3)
    assert governor.poll() == 2


def test_without_proc_stat_the_count_is_left_alone(restore_threads):
    torch.set_num_threads(1)
    clock = iter(range(0, 1000, 20))
    governor = ThreadGovernor(busy=lambda: None, clock=lambda: float(next(clock)))
    assert governor.poll() == 1 and governor.poll() == 1 and torch.get_num_threads() == 1
    assert machine_busy_seconds(stat=Path("/nonexistent/stat")) is None


@pytest.mark.skipif(machine_busy_seconds() is None, reason="no /proc/stat")
@pytest.mark.skipif(not 2 <= (os.cpu_count() or 1) <= 8, reason="fills every core with a busy process")
def test_real_competing_processes_lower_the_thread_count(restore_threads):
    """Every core busy with another process: the governor measures it from /proc/stat and keeps one thread."""
    torch.set_num_threads(usable_cores())
    burners = [
        subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(os.cpu_count() or 1)
    ]
    try:
        governor = ThreadGovernor(interval=1.0)
        time.sleep(1.5)
        assert governor.poll() == 1, f"other processes used {governor.other_cores:.2f} cores"
        assert governor.other_cores > (os.cpu_count() or 1) - 1
    finally:
        for burner in burners:
            burner.kill()
            burner.wait()


def test_the_thread_count_does_not_change_the_loss_on_real_audio(demo_manifest, restore_threads):
    """What the governor changes is speed only: one training step's loss and gradients on real
    speech with 1 and 2 threads agree to float32 rounding (relative 1e-5)."""
    from vqspeech.config import compose
    from vqspeech.data.manifest import load_utterance, read_manifest
    from vqspeech.models import VQVAE

    utts = read_manifest(demo_manifest)[:4]
    crop = 4000
    audio = torch.stack([torch.from_numpy(load_utterance(u)[:crop]) for u in utts])
    speakers = torch.arange(len(utts)) % 2
    results = []
    for threads in (1, 2):
        torch.set_num_threads(threads)
        torch.manual_seed(0)
        model = VQVAE.from_config(compose(["model=small", "data.manifest=x"])["model"], num_speakers=2)
        loss = model(audio, speakers).loss
        loss.backward()
        grad = torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])
        results.append((loss.item(), grad))
    (loss1, grad1), (loss2, grad2) = results
    assert loss1 == pytest.approx(loss2, rel=1e-5)
    assert torch.allclose(grad1, grad2, rtol=1e-3, atol=1e-6)
