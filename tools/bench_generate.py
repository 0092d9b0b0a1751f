#!/usr/bin/env python
"""WaveNet generation speed: samples per second, real-time factor and peak memory.

    python tools/bench_generate.py [--arch ref-small] [--batch 1] [--path reference] [--samples 2000] [--json]

Paths:
  naive      recompute the whole receptive field for every new sample (full forward on a window)
  reference  incremental generation in plain PyTorch (vqspeech.inference.generate), one call per layer per sample
  fast       the C kernel (vqspeech.inference.fast_generate), compiled at first use

Architectures: the two named reference decoders below (fixed dimensions, so results compare
with other implementations), or any model config in conf/model/ (its decoder).
Without --path / --batch, every path is measured at batch 1 and 8.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time

import torch
from vqspeech.cli import bounded_int
from vqspeech.config import compose
from vqspeech.errors import UserError
from vqspeech.inference.fast_generate import FastWaveNet
from vqspeech.inference.generate import generate, sample_from_logits
from vqspeech.models import WaveNetDecoder

HOP = 160  # 100 code frames per second at 16 kHz
ARCHS = {
    # 20 layers, 2 cycles of dilations 1..512, kernel 3: ~1.0M parameters, ~2 MFLOP per sample
    "ref-small": dict(residual_channels=64, gate_channels=128, skip_channels=64, kernel_size=3, layers=20,
                      cycles=2, local_channels=64, global_channels=64),
    # 24 layers, 4 cycles of dilations 1..32, kernel 3: ~4.1M parameters, ~8 MFLOP per sample
    "ref-paper": dict(residual_channels=128, gate_channels=256, skip_channels=128, kernel_size=3, layers=24,
                      cycles=4, local_channels=64, global_channels=64),
}


def build_decoder(arch: str) -> WaveNetDecoder:
    if arch in ARCHS:
        return WaveNetDecoder(num_speakers=4, latent_dim=64, hop_length=HOP, **ARCHS[arch])
    model = compose([f"model={arch}", "data.manifest=unused"])["model"]
    return WaveNetDecoder(num_speakers=4, latent_dim=model["latent_dim"], hop_length=model["hop_length"],
                          **model["decoder"])


@torch.no_grad()
def generate_naive(decoder: WaveNetDecoder, latents: torch.Tensor, speakers: torch.Tensor,
                   samples: int, generator: torch.Generator) -> torch.Tensor:
    """For every sample, a full forward over the frames covering its receptive field."""
    hop, rf = decoder.hop_length, decoder.receptive_field
    batch, frames = latents.shape[0], latents.shape[-1]
    reach = len(decoder.local_net) // 2 + 1  # frames of context the conditioning convolutions see
    inputs = torch.full((batch, frames * hop), decoder.classes // 2, dtype=torch.long)
    out = torch.empty(batch, samples, dtype=torch.long)
    for t in range(samples):
        first = max(0, (t - rf + 1) // hop - reach)  # frames covering the receptive field, plus the
        last = min(frames, t // hop + 1 + reach)     # conditioning's own context on both sides
        window = inputs[:, first * hop: last * hop]
        logits = decoder(window, latents[:, :, first:last], speakers)[:, :, t - first * hop]
        out[:, t] = sample_from_logits(logits, 1.0, generator)
        if t + 1 < samples:
            inputs[:, t + 1] = out[:, t]
    return out


def measure(decoder: WaveNetDecoder, path: str, batch: int, samples: int) -> float:
    frames = -(-samples // decoder.hop_length)
    latents = torch.randn(batch, decoder.local_net[0].in_channels, frames)
    speakers = torch.arange(batch) % decoder.speaker_embedding.num_embeddings
    generator = torch.Generator().manual_seed(0)
    fast = FastWaveNet(decoder) if path == "fast" else None  # packing and compiling are not timed
    start = time.perf_counter()
    if path == "naive":
        generate_naive(decoder, latents, speakers, samples, generator)
        made = samples
    elif fast is not None:
        fast.generate(latents, speakers, generator=generator)
        made = frames * decoder.hop_length
    else:
        generate(decoder, latents, speakers, generator=generator)
        made = frames * decoder.hop_length
    return batch * made / (time.perf_counter() - start)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", default="ref-small", help="ref-small | ref-paper | a conf/model name")
    parser.add_argument("--batch", type=bounded_int(1, 4096), default=None, help="default: 1 and 8")
    parser.add_argument("--path", choices=["naive", "reference", "fast"], default=None, help="default: all")
    parser.add_argument("--samples", type=bounded_int(1, 10**7), default=2000, help="samples per utterance to generate")
    parser.add_argument("--threads", type=bounded_int(1, 1024), default=None)
    parser.add_argument("--json", action="store_true", help="one JSON object per measurement")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    paths = [args.path] if args.path else ["naive", "reference", "fast"]
    try:
        decoder = build_decoder(args.arch).eval()
        if "fast" in paths:
            FastWaveNet(decoder)  # the C kernel is built (or refused) before any path is timed
    except UserError as exc:
        print(f"bench_generate: error: {exc}", file=sys.stderr)
        return 2
    for path in paths:
        for batch in [args.batch] if args.batch else [1, 8]:
            # the naive path is ~100x slower: measure it on fewer samples
            samples = args.samples if path != "naive" or args.path else max(50, args.samples // 20)
            rate = measure(decoder, path, batch, samples)
            result = {"config": args.arch, "path": path, "batch": batch, "samples_per_s": rate,
                      "rtf_16k": rate / 16000,
                      "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0}
            if args.json:
                print(json.dumps(result), flush=True)
            else:
                print(f"{args.arch:10s} {path:9s} batch {batch}: {rate:9,.0f} samples/s "
                      f"(real-time factor at 16 kHz {result['rtf_16k']:.3f}), peak memory "
                      f"{result['peak_mb']:,.0f} MB", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
