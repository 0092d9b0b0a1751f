#!/usr/bin/env python
"""Training throughput of a named model config: audio samples per second and peak memory.

    python tools/bench_train.py --model small [--batch_size 8] [--crop_seconds 0.5] [--steps 20] [--json]
    python tools/bench_train.py --model small_mel --stage decoder     # the WaveNet on frozen codes
    python tools/bench_train.py --model small --amp                   # bf16 autocast (CPU or CUDA)
    python tools/bench_train.py --model small --load 1 --threads 2    # beside one busy process
    python tools/bench_train.py --model small --load 1 --threads auto # ... with the thread governor

Runs full training steps (forward, backward, clipping, Adam) on random crops of noise at speech
level, after a few warm-up steps. Prints one line per measurement (or one JSON object with --json).
``--load N`` starts N CPU-bound processes (``while True: pass``) for the whole run; ``--threads
auto`` is what training does by default (``train.threads=0``: :class:`vqspeech.threads.ThreadGovernor`,
here measuring every 2 s and given ``--warmup_seconds`` to see the load first).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import resource
import signal
import subprocess
import sys
import time

import torch
from vqspeech.cli import bounded_float, bounded_int
from vqspeech.config import compose
from vqspeech.data.dataset import crop_length
from vqspeech.device import select_device
from vqspeech.errors import UserError
from vqspeech.models import VQVAE
from vqspeech.threads import ThreadGovernor


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux reports KiB


@contextlib.contextmanager
def busy_processes(count: int):
    """``count`` competing CPU-bound processes while the block runs. Each also ends when this process
    is gone (it spins while its parent is the one that started it), so a benchmark killed in a way
    that skips the cleanup below (SIGKILL) leaves no load behind; SIGTERM ends the block as Ctrl-C."""
    spin = "import os\nparent = os.getppid()\nwhile os.getppid() == parent: pass"
    procs = [subprocess.Popen([sys.executable, "-c", spin]) for _ in range(count)]
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
        for proc in procs:
            proc.kill()
            proc.wait()


def threads_arg(text: str) -> str:
    """--threads: ``auto`` or a count from 1 to 1024."""
    return text if text == "auto" else str(bounded_int(1, 1024)(text))


def main() -> int:
    try:
        return run()
    except UserError as exc:
        print(f"bench_train: error: {exc}", file=sys.stderr)
        return 2


def run() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="small", help="a config in conf/model/ (tiny, small, small_mel, paper)")
    parser.add_argument("--stage", default=None, help="units | decoder for a two-stage model (default: its first)")
    parser.add_argument("--batch_size", type=bounded_int(1, 4096), default=None, help="default: train.batch_size")
    parser.add_argument("--crop_seconds", type=bounded_float(0.01, 60.0), default=None, help="default: train.crop_seconds")
    parser.add_argument("--steps", type=bounded_int(1, 10**7), default=20)
    parser.add_argument("--warmup", type=bounded_int(0, 10**6), default=3)
    parser.add_argument("--threads", type=threads_arg, default=None,
                        help="torch intra-op threads: a number (above the cores: oversubscription) or auto (default: all)")
    parser.add_argument("--warmup_seconds", type=bounded_float(0.0, 3600.0), default=5.0, help="--threads auto: seconds before timing")
    parser.add_argument("--load", type=bounded_int(0, 64), default=0, help="competing CPU-bound processes during the run")
    parser.add_argument("--amp", action="store_true",
                        help="bf16 autocast, on CPU too: a measurement (training's train.amp autocasts on CUDA only)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    cfg = compose([f"model={args.model}", "data.manifest=unused"])
    batch = args.batch_size or cfg["train"]["batch_size"]
    crop_seconds = args.crop_seconds or cfg["train"]["crop_seconds"]
    device = select_device(args.device)
    torch.manual_seed(0)
    model = VQVAE.from_config(cfg["model"], num_speakers=4).to(device)
    if args.stage:
        try:
            model.set_stage(args.stage)
        except ValueError as exc:
            raise UserError(f"--stage {args.stage}: {exc}") from None
    model.train()
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=cfg["train"]["lr"])
    hop, sr = model.hop_length, model.sample_rate
    crop = crop_length(crop_seconds, sr, hop)
    audio = (0.1 * torch.randn(batch, crop)).clamp(-1, 1).to(device)
    speakers = torch.randint(0, 4, (batch,), device=device)

    def step() -> float:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.amp):
            loss = model(audio, speakers).loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg["train"]["grad_clip"])
        optimizer.step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        return float(loss.detach())

    governor = None
    if args.threads == "auto":
        governor = ThreadGovernor(interval=2.0)
    elif args.threads:
        torch.set_num_threads(int(args.threads))
    with busy_processes(args.load):
        warm_until = time.perf_counter() + (args.warmup_seconds if governor else 0.0)
        warmup = 0
        while warmup < args.warmup or time.perf_counter() < warm_until:
            step()
            warmup += 1
            if governor:
                governor.poll()
        start = time.perf_counter()
        for _ in range(args.steps):
            loss = step()
            if governor:
                governor.poll()
        seconds = time.perf_counter() - start
    result = {
        "config": args.model, "stage": model.stage, "device": str(device), "amp": args.amp,
        "threads": governor.threads if governor else torch.get_num_threads(), "auto_threads": governor is not None,
        "load": args.load, "batch": batch, "crop_samples": crop,
        "parameters": sum(p.numel() for p in model.parameters()),
        "trained_parameters": sum(p.numel() for p in model.parameters() if p.requires_grad),
        "samples_per_s": batch * crop * args.steps / seconds, "steps_per_s": args.steps / seconds,
        "last_loss": loss, "peak_mb": peak_rss_mb(),
    }
    if device.type == "cuda":
        result["peak_cuda_mb"] = torch.cuda.max_memory_allocated() / 2**20
    if args.json:
        print(json.dumps(result))
    else:
        threads = f"{result['threads']} threads" + (" (auto)" if governor else "")
        print(f"{args.model} ({model.stage} stage{', bf16' if args.amp else ''}): "
              f"{result['samples_per_s']:,.0f} audio samples/s "
              f"({result['steps_per_s']:.2f} steps/s, batch {batch} x {crop} samples, "
              f"{result['trained_parameters'] / 1e6:.2f}M of {result['parameters'] / 1e6:.2f}M parameters trained, "
              f"{threads}, {args.load} competing processes, {device}), peak memory {result['peak_mb']:,.0f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
