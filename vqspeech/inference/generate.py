"""Autoregressive WaveNet generation, incremental: each layer keeps a queue of its past inputs so a
new sample costs one column per layer instead of the whole receptive field.

This is the plain PyTorch reference path (it also runs on GPU).
"""

from __future__ import annotations

import torch
from tqdm import tqdm

from ..audio import mu_law_decode
from ..models.speaker_encoder import speaker_vectors
from ..models.wavenet import WaveNetDecoder, residual_layers


class IncrementalState:
    """Per-layer ring buffers of past residual inputs: layer i holds [B, R, (k-1)*d_i + 1]."""

    def __init__(self, decoder: WaveNetDecoder, batch: int, device, dtype):
        self.buffers = [
            torch.zeros(batch, layer.residual_channels, layer.receptive_field + 1, device=device, dtype=dtype)
            for layer in residual_layers(decoder.layers)
        ]
        self.t = 0


def incremental_step(
    decoder: WaveNetDecoder, state: IncrementalState, x: torch.Tensor, conds: list[torch.Tensor]
) -> torch.Tensor:
    """One time step. x [B, R] residual input at time t; conds[i] [B, gate] -> logits [B, classes]."""
    skips: torch.Tensor | int = 0
    for layer, buffer, cond in zip(residual_layers(decoder.layers), state.buffers, conds, strict=True):
        size = buffer.shape[-1]
        buffer[:, :, state.t % size] = x
        taps = [(state.t - (layer.kernel_size - 1 - j) * layer.dilation) % size for j in range(layer.kernel_size)]
        x, skip = layer.step(buffer[:, :, taps], x, cond)
        skips = skips + skip
    state.t += 1
    if not isinstance(skips, torch.Tensor):
        raise ValueError("the decoder has no layers")
    return decoder.output_step(skips)


def sample_from_logits(
    logits: torch.Tensor, temperature: float = 1.0, generator: torch.Generator | None = None
) -> torch.Tensor:
    """logits [B, C] -> classes [B]; temperature 0 means argmax."""
    if temperature <= 0:
        return logits.argmax(dim=-1)
    probs = torch.softmax(logits.float() / temperature, dim=-1)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)


@torch.no_grad()
def generate(
    decoder: WaveNetDecoder,
    latents: torch.Tensor,
    speakers: torch.Tensor,
    *,
    temperature: float = 1.0,
    generator: torch.Generator | None = None,
    progress: bool = False,
) -> torch.Tensor:
    """Sample audio from code vectors. latents [B, D, F], speakers [B] -> waveform [B, F * hop]."""
    batch, frames = latents.shape[0], latents.shape[-1]
    hop = decoder.hop_length
    local = decoder.local_conditioning(latents)
    speaker = speaker_vectors(decoder.speaker_embedding, speakers)
    conds = [layer.conditioning(local, speaker) for layer in residual_layers(decoder.layers)]  # each [B, gate, F]
    state = IncrementalState(decoder, batch, latents.device, latents.dtype)
    current = torch.full((batch,), decoder.classes // 2, dtype=torch.long, device=latents.device)
    out = torch.empty(batch, frames * hop, dtype=torch.long, device=latents.device)
    for t in tqdm(
        range(frames * hop), disable=not progress, unit="sample", unit_scale=True, desc="generate", mininterval=1.0
    ):
        x = decoder.input_embedding(current)
        logits = incremental_step(decoder, state, x, [c[:, :, t // hop] for c in conds])
        current = sample_from_logits(logits, temperature, generator)
        out[:, t] = current
    return mu_law_decode(out, decoder.classes)
