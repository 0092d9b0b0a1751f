#!/usr/bin/env python
"""Training throughput of a named model config: audio samples per second and peak memory.

    python tools/bench_train.py --model small [--batch_size 8] [--crop_seconds 0.5] [--steps 20] [--json]

Runs full training steps (forward, backward, clipping, Adam) on random crops of noise at speech
level, after a few warm-up steps. Prints one line per measurement (or one JSON object with --json).
"""

from __future__ import annotations

import argparse
import json
import resource
import time

import torch

from vqspeech.config import compose
from vqspeech.data.dataset import crop_length
from vqspeech.device import autocast, select_device
from vqspeech.models import VQVAE


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux reports KiB


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="small", help="a config in conf/model/ (tiny, small, paper)")
    parser.add_argument("--batch_size", type=int, default=None, help="default: train.batch_size")
    parser.add_argument("--crop_seconds", type=float, default=None, help="default: train.crop_seconds")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: all)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = compose([f"model={args.model}", "data.manifest=unused"])
    batch = args.batch_size or cfg["train"]["batch_size"]
    crop_seconds = args.crop_seconds or cfg["train"]["crop_seconds"]
    device = select_device(args.device)
    torch.manual_seed(0)
    model = VQVAE.from_config(cfg["model"], num_speakers=4).to(device).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg["train"]["lr"])
    hop, sr = model.hop_length, model.sample_rate
    crop = crop_length(crop_seconds, sr, hop)
    audio = (0.1 * torch.randn(batch, crop)).clamp(-1, 1).to(device)
    speakers = torch.randint(0, 4, (batch,), device=device)

    def step() -> None:
        with autocast(device, cfg["train"]["amp"]):
            loss = model(audio, speakers).loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg["train"]["grad_clip"])
        optimizer.step()
        if device.type == "cuda":
            torch.cuda.synchronize()

    for _ in range(args.warmup):
        step()
    start = time.perf_counter()
    for _ in range(args.steps):
        step()
    seconds = time.perf_counter() - start
    result = {
        "config": args.model, "device": str(device), "threads": torch.get_num_threads(), "batch": batch,
        "crop_samples": crop, "parameters": sum(p.numel() for p in model.parameters()),
        "samples_per_s": batch * crop * args.steps / seconds, "steps_per_s": args.steps / seconds,
        "peak_mb": peak_rss_mb(),
    }
    if device.type == "cuda":
        result["peak_cuda_mb"] = torch.cuda.max_memory_allocated() / 2**20
    if args.json:
        print(json.dumps(result))
    else:
        print(f"{args.model}: {result['samples_per_s']:,.0f} audio samples/s "
              f"({result['steps_per_s']:.2f} steps/s, batch {batch} x {crop} samples, "
              f"{result['parameters'] / 1e6:.2f}M parameters, {result['threads']} threads, {device}), "
              f"peak memory {result['peak_mb']:,.0f} MB")


if __name__ == "__main__":
    main()
