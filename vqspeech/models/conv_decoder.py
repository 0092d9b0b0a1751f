"""Non-autoregressive convolutional decoder in the style of the HiFi-GAN generator.

HiFi-GAN (Kong et al., 2020, "HiFi-GAN: Generative Adversarial Networks for Efficient and High
Fidelity Speech Synthesis"): an input convolution at frame rate, a stack of transposed
convolutions whose strides multiply to the hop length, each followed by a multi-receptive-field
fusion (MRF) module -- the average of residual blocks of dilated convolutions with different
kernel sizes -- leaky ReLUs, weight normalisation, and an output convolution with tanh. Here the
input is the quantized code vectors rather than a mel spectrogram, and a speaker embedding is
added after the input convolution (the multi-speaker form VITS, Kim et al. 2021, uses).

Differences from the reference code (jik876/hifi-gan ``models.py``, ResBlock1 / Generator):

- The output convolution has no weight norm, so that :attr:`ConvDecoder.last_layer` is a leaf
  parameter for the adaptive GAN weight (VQ-GAN's ``conv_out``; see ``gan_losses.adaptive_weight``).
- Weights keep PyTorch's default initialisation. The reference applies ``normal_(0, 0.01)`` to
  ``module.weight`` *after* ``weight_norm``; the norm's pre-forward hook recomputes that tensor
  from ``g`` and ``v``, so the reference trains from the default initialisation too.
- The leaky-ReLU slope before the output convolution is 0.1 like every other one (the reference
  uses PyTorch's default 0.01 there).
- Transposed convolutions take ``padding = ceil((k - u) / 2)`` and the ``output_padding`` that
  makes the output exactly ``u`` times longer for any kernel ``k >= u`` (the reference's
  ``(k - u) // 2`` is exact only for even ``k - u``). The default kernel is the smallest
  ``k >= 2u`` with ``k - u`` even (``2u`` for even strides, as in HiFi-GAN; ``2u + 1`` for odd
  ones), so each input position's kernel is centred on the ``u`` samples it expands to.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F
from torch.nn.utils.parametrizations import weight_norm

from .gan_losses import MultiScaleMelLoss
from .speaker_encoder import speaker_vectors

LRELU_SLOPE = 0.1


@dataclass
class WaveformOutput:
    """What the conv decoder's training objective returns for audio [B, T]."""

    waveform: torch.Tensor  # [B, T] the decoded audio, with its graph (the GAN terms need it)
    target: torch.Tensor  # [B, T] the input audio
    mask: torch.Tensor | None  # [B, T] 1 = real sample, when the batch was padded
    loss: torch.Tensor  # multi-scale log-mel L1 (masked, unweighted), with its graph


def same_padding(kernel_size: int, dilation: int = 1) -> int:
    """Padding that keeps the length of a stride-1 convolution with an odd kernel."""
    return (kernel_size - 1) * dilation // 2


def transposed_padding(kernel_size: int, stride: int) -> tuple[int, int]:
    """(padding, output_padding) for which ConvTranspose1d maps L -> L * stride exactly.

    The output length is (L - 1) * u - 2p + k + op, so op = 2p - (k - u) must lie in [0, u). Input
    position i reaches outputs [i*u - p, i*u - p + k): centred on its block [i*u, (i+1)*u) when
    k - u is even, half an output sample early when it is odd.
    """
    if kernel_size < stride:
        raise ValueError(f"upsampling kernel {kernel_size} is shorter than its stride {stride}")
    padding = (kernel_size - stride + 1) // 2
    output_padding = 2 * padding - (kernel_size - stride)
    if output_padding >= stride:  # only stride 1 with an even kernel
        raise ValueError(
            f"upsampling kernel {kernel_size} with stride {stride} cannot keep the exact length; "
            "use an odd kernel for stride 1"
        )
    return padding, output_padding


class ResBlock(nn.Module):
    """HiFi-GAN ResBlock1: x [B, C, T] -> [B, C, T].

    For each dilation d: x <- x + conv_1(lrelu(conv_d(lrelu(x)))), both convolutions with kernel
    ``kernel_size`` and weight norm, the second undilated.
    """

    def __init__(self, channels: int, kernel_size: int = 3, dilations: Sequence[int] = (1, 3, 5)):
        super().__init__()
        if kernel_size % 2 == 0:
            raise ValueError(f"residual block kernel sizes must be odd, got {kernel_size}")
        self.dilated = nn.ModuleList(
            weight_norm(nn.Conv1d(channels, channels, kernel_size, dilation=d, padding=same_padding(kernel_size, d)))
            for d in dilations
        )
        self.pointwise = nn.ModuleList(
            weight_norm(nn.Conv1d(channels, channels, kernel_size, padding=same_padding(kernel_size)))
            for _ in dilations
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for dilated, conv in zip(self.dilated, self.pointwise, strict=True):
            h = dilated(F.leaky_relu(x, LRELU_SLOPE))
            x = x + conv(F.leaky_relu(h, LRELU_SLOPE))
        return x


class ConvDecoder(nn.Module):
    """Code vectors [B, D, F] + speaker ids [B] -> waveform [B, F * hop_length] in [-1, 1].

    Frame f is centred on output samples [f * hop, (f + 1) * hop), the encoder's frame grid: with
    the default (centred) upsampling kernels, the samples a frame can influence extend equally far
    on both sides of that block.

    Args:
        num_speakers: size of the speaker embedding table.
        latent_dim: D, the code-vector dimension (the quantizer's ``dim``).
        hop_length: samples per frame; must equal ``prod(upsample_strides)``.
        sample_rate: of the audio; sets the mel filters of the reconstruction loss.
        channels: width after the input convolution; each upsampling stage halves it.
        upsample_strides: the transposed convolutions' strides, e.g. (5, 4, 4) for hop 80.
        upsample_kernel_sizes: their kernel sizes (default ``2 * stride`` for even strides, as in
            HiFi-GAN, ``2 * stride + 1`` for odd ones).
        resblock_kernel_sizes: kernel sizes of the MRF's residual blocks (one block each).
        resblock_dilations: one dilation tuple per residual block.
        global_channels: speaker-embedding size (projected to ``channels`` and added).
        input_kernel_size, output_kernel_size: kernels of the first and last convolutions.
    """

    def __init__(
        self,
        num_speakers: int,
        latent_dim: int = 64,
        hop_length: int = 80,
        sample_rate: int = 8000,
        channels: int = 128,
        upsample_strides: Sequence[int] = (5, 4, 4),
        upsample_kernel_sizes: Sequence[int] | None = None,
        resblock_kernel_sizes: Sequence[int] = (3, 7, 11),
        resblock_dilations: Sequence[Sequence[int]] = ((1, 3, 5), (1, 3, 5), (1, 3, 5)),
        global_channels: int = 64,
        input_kernel_size: int = 7,
        output_kernel_size: int = 7,
    ):
        super().__init__()
        strides = [int(s) for s in upsample_strides]
        if not strides or math.prod(strides) != hop_length:
            raise ValueError(
                f"conv decoder upsample_strides {strides} multiply to {math.prod(strides)}, not hop_length={hop_length}"
            )
        if upsample_kernel_sizes is None:
            kernels = [2 * s + s % 2 for s in strides]  # the smallest k >= 2u with k - u even
        else:
            kernels = [int(k) for k in upsample_kernel_sizes]
        if len(kernels) != len(strides):
            raise ValueError(f"{len(kernels)} upsample_kernel_sizes for {len(strides)} upsample_strides")
        if len(resblock_kernel_sizes) != len(resblock_dilations) or not resblock_kernel_sizes:
            raise ValueError(
                f"resblock_kernel_sizes {list(resblock_kernel_sizes)} and resblock_dilations "
                f"{[list(d) for d in resblock_dilations]} must be non-empty and of equal length"
            )
        if channels % 2 ** len(strides):
            raise ValueError(f"conv decoder channels={channels} cannot be halved {len(strides)} times")
        for k in (input_kernel_size, output_kernel_size):
            if k % 2 == 0:
                raise ValueError(f"input/output kernel sizes must be odd, got {k}")
        self.hop_length, self.sample_rate = hop_length, sample_rate
        self.upsample_strides = strides

        self.input = weight_norm(
            nn.Conv1d(latent_dim, channels, input_kernel_size, padding=same_padding(input_kernel_size))
        )
        self.speaker_embedding = nn.Embedding(num_speakers, global_channels)
        self.speaker_proj = nn.Linear(global_channels, channels)
        self.upsamples = nn.ModuleList()
        self.mrfs = nn.ModuleList()
        width = channels
        for stride, kernel in zip(strides, kernels, strict=True):
            padding, output_padding = transposed_padding(kernel, stride)
            self.upsamples.append(
                weight_norm(
                    nn.ConvTranspose1d(
                        width, width // 2, kernel, stride, padding=padding, output_padding=output_padding
                    )
                )
            )
            width //= 2
            self.mrfs.append(
                nn.ModuleList(
                    ResBlock(width, k, d) for k, d in zip(resblock_kernel_sizes, resblock_dilations, strict=True)
                )
            )
        self.output = nn.Conv1d(width, 1, output_kernel_size, padding=same_padding(output_kernel_size))
        # the objective's filterbanks are non-persistent buffers: the state dict holds no extra keys
        self.mel_loss = MultiScaleMelLoss(sample_rate)

    @property
    def last_layer(self) -> nn.Parameter:
        """The output convolution's weight [1, C, k]: where the adaptive GAN weight is measured."""
        weight = self.output.weight
        if not isinstance(weight, nn.Parameter):  # e.g. under a weight-norm parametrization
            raise TypeError("the output convolution's weight is not a leaf parameter")
        return weight

    def forward(self, latents: torch.Tensor, speakers: torch.Tensor) -> torch.Tensor:
        """latents [B, D, F], speakers: ids [B] or speaker vectors [B, global_channels]
        (:func:`speaker_vectors`) -> waveform [B, F * hop_length] in [-1, 1]."""
        x = self.input(latents) + self.speaker_proj(speaker_vectors(self.speaker_embedding, speakers))[:, :, None]
        for upsample, mrf in zip(self.upsamples, self.mrfs, strict=True):
            if not isinstance(mrf, nn.ModuleList):
                raise TypeError("ConvDecoder.mrfs holds a module that is not a ModuleList of ResBlocks")
            x = upsample(F.leaky_relu(x, LRELU_SLOPE))
            x = sum(block(x) for block in mrf) / len(mrf)
        return torch.tanh(self.output(F.leaky_relu(x, LRELU_SLOPE))).squeeze(1)

    def reconstruct(
        self, audio: torch.Tensor, latents: torch.Tensor, speakers: torch.Tensor, mask: torch.Tensor | None = None
    ) -> WaveformOutput:
        """The training objective: audio [B, T] with T == F * hop_length, latents [B, D, F],
        speakers [B], optional mask [B, T] -> the decoded audio and its multi-scale mel loss (the
        adversarial terms are added by the training task)."""
        waveform = self(latents, speakers)
        return WaveformOutput(waveform, audio, mask, self.mel_loss(waveform, audio, mask))
