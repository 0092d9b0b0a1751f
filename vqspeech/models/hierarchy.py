"""The top level of a two-level VQ-VAE (VQ-VAE-2, Razavi et al. 2019), over the encoder's latents.

    h [B, D, F] --down (stride s), residual blocks--> z_top [B, D, ceil(F/s)] --quantizer--> q_top
    q_top --residual blocks, up (stride s)--> u [B, D, F]
    bottom quantizer input   = bottom_in(concat(h, u))       (the bottom encoder sees the top codes)
    decoder input            = decoder_in(concat(q_bottom, u))  (the decoder sees both levels)

A bottom frame f belongs to top code f // s; the last top code may cover fewer than s frames (h is
padded by repeating its last frame).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from .encoder import ResidualDilatedBlock, blocks_context
from .quantizer import QuantizerOutput, build_quantizer


class TopLevel(nn.Module):
    """Encoder, quantizer and upsampler of the top codes, plus the two 1x1 convolutions that join
    the levels. ``quantizer`` takes the options of ``conf/model/*.yaml``'s ``quantizer`` block."""

    def __init__(
        self,
        latent_dim: int,
        stride: int,
        num_codes: int = 128,
        channels: int = 128,
        dilations: Sequence[int] = (1, 2, 4),
        kernel_size: int = 3,
        quantizer: dict[str, Any] | None = None,
    ):
        super().__init__()
        if stride < 2:
            raise ValueError(f"the top level's stride must be >= 2, not {stride}")
        self.stride = stride
        self.down = nn.Conv1d(latent_dim, channels, stride, stride=stride)
        self.down_blocks = nn.Sequential(*(ResidualDilatedBlock(channels, d, kernel_size) for d in dilations))
        self.to_latent = nn.Conv1d(channels, latent_dim, 1)
        self.quantizer = build_quantizer(num_codes, latent_dim, **(quantizer or {}))
        self.up_in = nn.Conv1d(latent_dim, channels, 3, padding=1)
        self.up_blocks = nn.Sequential(*(ResidualDilatedBlock(channels, d, kernel_size) for d in dilations))
        self.up = nn.ConvTranspose1d(channels, latent_dim, stride, stride=stride)
        self.bottom_in = nn.Conv1d(2 * latent_dim, latent_dim, 1)
        self.decoder_in = nn.Conv1d(2 * latent_dim, latent_dim, 1)

    @property
    def num_codes(self) -> int:
        return self.quantizer.num_codes

    @property
    def context_frames(self) -> int:
        """Bottom frames on each side of a frame that can change its bottom code or decoder input
        (through the top level), not counting the encoder's own context."""
        blocks = blocks_context(self.down_blocks)
        # the frame's top code j sees top codes j +- (1 + blocks) through the upsampler, each of
        # which sees its own s frames and `blocks` top codes either side through the downsampler
        return self.stride * (2 * blocks + 3)

    def top_frames(self, frames: int) -> int:
        return -(-frames // self.stride)

    def encode(self, h: torch.Tensor) -> torch.Tensor:
        """Encoder latents h [B, D, F] -> top latents [B, D, ceil(F / stride)]."""
        pad = -h.shape[-1] % self.stride
        if pad:
            h = F.pad(h, (0, pad), mode="replicate")
        return self.to_latent(torch.relu(self.down_blocks(self.down(h))))

    def upsample(self, quantized_top: torch.Tensor, frames: int) -> torch.Tensor:
        """Top code vectors [B, D, F_top] -> their contribution at the bottom rate [B, D, frames]."""
        x = torch.relu(self.up_blocks(self.up_in(quantized_top)))
        return self.up(x)[..., :frames]

    def quantize(self, h: torch.Tensor) -> tuple[QuantizerOutput, torch.Tensor, torch.Tensor]:
        """h [B, D, F] -> (top quantizer output (codes [B, F_top]), upsampled top u [B, D, F],
        the bottom quantizer's input [B, D, F])."""
        top = self.quantizer(self.encode(h))
        upsampled = self.upsample(top.quantized, h.shape[-1])
        return top, upsampled, self.bottom_in(torch.cat([h, upsampled], dim=1))

    def decoder_input(self, quantized_bottom: torch.Tensor, upsampled: torch.Tensor) -> torch.Tensor:
        """Both levels [B, D, F] each -> the decoder's latents [B, D, F]."""
        return self.decoder_in(torch.cat([quantized_bottom, upsampled], dim=1))
