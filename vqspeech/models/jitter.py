"""Time-jitter regularisation of the decoder's conditioning (Chorowski et al., 2019, "Unsupervised
speech representation learning using WaveNet autoencoders").

In training, each latent frame is replaced by its left or its right neighbour, each with
probability ``probability / 2``; the decoder can then not rely on the exact position of any one
code, which pushes the codes towards slowly varying, phone-like units. Identity in eval mode.
"""

from __future__ import annotations

import torch
from torch import nn


class TimeJitter(nn.Module):
    """x [B, D, T] -> x with frames swapped for neighbours (training only); edges repeat themselves."""

    def __init__(self, probability: float = 0.0):
        super().__init__()
        if not 0.0 <= probability <= 1.0:
            raise ValueError(f"jitter probability must be in [0, 1], not {probability}")
        self.probability = probability

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.probability == 0.0:
            return x
        batch, dim, frames = x.shape
        u = torch.rand(batch, frames, device=x.device)
        shift = (u < self.probability).long() * torch.where(u < self.probability / 2, -1, 1)
        index = (torch.arange(frames, device=x.device) + shift).clamp(0, frames - 1)
        return x.gather(2, index[:, None, :].expand(batch, dim, frames))

    def extra_repr(self) -> str:
        return f"probability={self.probability}"
