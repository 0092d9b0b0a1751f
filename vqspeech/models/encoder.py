"""Non-causal encoder: waveform -> continuous latents at the code rate."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from .frontend import ConvFrontend, LogMelFrontend


class ResidualDilatedBlock(nn.Module):
    """x + W2 relu(W1_dilated relu(x)): a non-causal residual block, length preserved."""

    def __init__(self, channels: int, dilation: int, kernel_size: int = 3):
        super().__init__()
        self.conv = nn.Conv1d(
            channels, channels, kernel_size, dilation=dilation, padding=dilation * (kernel_size - 1) // 2
        )
        self.proj = nn.Conv1d(channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.proj(torch.relu(self.conv(torch.relu(x))))


def blocks_context(blocks: nn.Sequential) -> int:
    """Frames on each side that a stack of :class:`ResidualDilatedBlock` reaches: the sum of
    dilation * (kernel_size - 1) // 2 over the blocks."""
    reach = 0
    for block in blocks:
        if not isinstance(block, ResidualDilatedBlock):
            raise TypeError(f"expected a stack of ResidualDilatedBlock, found {type(block).__name__}")
        reach += block.conv.dilation[0] * (block.conv.kernel_size[0] - 1) // 2
    return reach


class Encoder(nn.Module):
    """Waveform [B, T] -> latents z [B, latent_dim, T // hop_length].

    Front end (``frontend``): ``"mel"`` (log-mel frames) or ``"conv"`` (strided convolutions over
    the waveform, as in the VQ-VAE paper), then a residual stack of dilated convolutions.

    ``normalize``: per-utterance normalisation of the front end's features (each channel to zero
    mean and unit variance over the utterance's frames; cepstral mean and variance normalisation
    for the mel front end), which removes much of a voice's and a channel's fixed spectral shape.
    The statistics are the whole input's unless given (:meth:`feature_stats` of the whole
    utterance, when it is encoded in chunks).

    ``cepstra`` (mel front end): the encoder sees that many MFCCs per frame instead of the log-mel
    frame (:class:`LogMelFrontend`), the envelope without the pitch harmonics.

    ``warp`` (mel front end, training only): vocal tract length perturbation of the input
    (:class:`LogMelFrontend`); the decoder still reconstructs the unperturbed speech, so whatever of
    the voice the warp changes has to come from the speaker condition, not from the codes.
    """

    def __init__(
        self,
        sample_rate: int,
        hop_length: int,
        frontend: str = "mel",
        n_mels: int = 80,
        n_fft: int | None = None,
        strides: list[int] | None = None,
        channels: int = 128,
        latent_dim: int = 64,
        dilations: Sequence[int] = (1, 2, 4, 1, 2, 4),
        kernel_size: int = 3,
        normalize: bool = False,
        warp: float = 0.0,
        cepstra: int = 0,
    ):
        super().__init__()
        self.normalize = normalize
        if kernel_size % 2 == 0:
            raise ValueError(f"encoder kernel_size={kernel_size} must be odd (centred, length-preserving)")
        self.frontend: LogMelFrontend | ConvFrontend
        if frontend == "mel":
            self.frontend = LogMelFrontend(sample_rate, hop_length, n_mels, n_fft, warp=warp, cepstra=cepstra)
        elif frontend == "conv":
            if warp or cepstra:
                option = f"warp={warp}" if warp else f"cepstra={cepstra}"
                raise ValueError(f"encoder {option} needs the mel front end (frontend='mel')")
            self.frontend = ConvFrontend(hop_length, list(strides or []), channels)
        else:
            raise ValueError(f"unknown encoder frontend {frontend!r}; use 'mel' or 'conv'")
        self.hop_length = hop_length
        self.input_proj = nn.Conv1d(self.frontend.out_channels, channels, 3, padding=1)
        self.blocks = nn.Sequential(*(ResidualDilatedBlock(channels, d, kernel_size) for d in dilations))
        self.output_proj = nn.Conv1d(channels, latent_dim, 1)

    @property
    def context_frames(self) -> int:
        """Frames on each side that can change a latent frame: chunks overlapping by this much
        encode exactly like one pass."""
        return self.frontend.context_frames + 1 + blocks_context(self.blocks)

    def feature_stats(self, audio: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """audio [B, T] -> the front end's per-channel mean and standard deviation over time, each
        [B, C, 1] (what ``normalize`` uses)."""
        return _stats(self.frontend(audio))

    def forward(self, audio: torch.Tensor, stats: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
        """audio [B, T] -> latents [B, latent_dim, T // hop]; ``stats``: see the class docstring."""
        features = self.frontend(audio)
        if self.normalize:
            mean, std = _stats(features) if stats is None else stats
            features = (features - mean) / std
        x = self.input_proj(features)
        return self.output_proj(torch.relu(self.blocks(x)))


def _stats(features: torch.Tensor, eps: float = 1e-3) -> tuple[torch.Tensor, torch.Tensor]:
    """features [B, C, F] -> (mean, std + eps), each [B, C, 1]."""
    mean = features.mean(-1, keepdim=True)
    std = features.std(-1, keepdim=True, unbiased=False) if features.shape[-1] > 1 else torch.zeros_like(mean)
    return mean, std + eps
