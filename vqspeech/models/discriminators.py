"""Waveform discriminators: HiFi-GAN's multi-period and MelGAN's multi-scale discriminators.

- Multi-period discriminator (MPD; Kong et al., 2020, HiFi-GAN): for each period p the waveform
  [T] is reshaped to [T / p, p] (reflect-padded to a multiple of p) and judged by 2-D convolutions
  with (k, 1) kernels, so each sees the samples p apart -- the periodic structure of voiced speech.
- Multi-scale discriminator (MSD; Kumar et al., 2019, MelGAN, as used by HiFi-GAN): identical
  1-D convolutional discriminators with strided, grouped convolutions on the raw waveform and on
  x2 and x4 average-pooled copies. As in HiFi-GAN, the raw-scale one uses spectral norm, the others
  weight norm; pooling is MelGAN's ``AvgPool1d(4, 2, padding=1, count_include_pad=False)``, which
  halves even lengths exactly.

Every discriminator maps a waveform [B, T] (or [B, 1, T]) to ``(logits, features)``: a list with
one logits tensor [B, N_i] per sub-discriminator (N_i output positions, flattened), and a list with
one list of feature maps per sub-discriminator (every hidden activation after its leaky ReLU, then
the final map before flattening) for feature matching. Channel widths default to a small fraction
of the papers' (HiFi-GAN: MPD 32-128-512-1024-1024, MSD 128-...-1024) so that they run on a CPU.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torch.nn import functional as F
from torch.nn.utils.parametrizations import spectral_norm, weight_norm

LRELU_SLOPE = 0.1

Logits = list[torch.Tensor]
Features = list[list[torch.Tensor]]


def _as_batch_channel_time(audio: torch.Tensor) -> torch.Tensor:
    """[B, T] or [B, 1, T] -> [B, 1, T]."""
    if audio.dim() == 2:
        return audio.unsqueeze(1)
    if audio.dim() == 3 and audio.shape[1] == 1:
        return audio
    raise ValueError(f"discriminator input must be [B, T] or [B, 1, T], got {list(audio.shape)}")


class PeriodDiscriminator(nn.Module):
    """One MPD branch: [B, 1, T] -> (logits [B, N], features) with period ``period``.

    ``channels``: outputs of the strided (kernel (k, 1), stride (s, 1)) convolutions; a stride-1
    convolution of the same width and a 1-channel (3, 1) output convolution follow, so there are
    ``len(channels) + 2`` feature maps, each [B, C, H, period].
    """

    def __init__(self, period: int, channels: Sequence[int] = (16, 32, 64, 128), kernel_size: int = 5, stride: int = 3):
        super().__init__()
        self.period = period
        pad = (kernel_size // 2, 0)
        widths = [1, *channels]
        self.convs = nn.ModuleList(
            weight_norm(nn.Conv2d(c_in, c_out, (kernel_size, 1), (stride, 1), padding=pad))
            for c_in, c_out in zip(widths[:-1], widths[1:], strict=True)
        )
        self.convs.append(weight_norm(nn.Conv2d(widths[-1], widths[-1], (kernel_size, 1), padding=pad)))
        self.output = weight_norm(nn.Conv2d(widths[-1], 1, (3, 1), padding=(1, 0)))

    def forward(self, audio: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        x = _as_batch_channel_time(audio)
        batch, _, length = x.shape
        if length % self.period:
            extra = self.period - length % self.period
            x = F.pad(x, (0, extra), mode="reflect" if length > extra else "replicate")
            length += extra
        x = x.view(batch, 1, length // self.period, self.period)
        return _conv_stack(self.convs, self.output, x)


def _conv_stack(convs: nn.ModuleList, output: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Leaky-ReLU convolutions then the output convolution: (logits [B, N], every layer's output)."""
    features = []
    for conv in convs:
        x = F.leaky_relu(conv(x), LRELU_SLOPE)
        features.append(x)
    x = output(x)
    features.append(x)
    return x.flatten(1), features


class ScaleDiscriminator(nn.Module):
    """One MSD branch: [B, 1, T] -> (logits [B, N], features).

    A kernel-15 convolution to ``channels[0]``, grouped kernel-41 convolutions to ``channels[1:]``
    with ``strides`` and ``groups``, a kernel-5 convolution and a 1-channel kernel-3 output
    convolution: ``len(channels) + 2`` feature maps, each [B, C, T'].
    """

    def __init__(
        self,
        channels: Sequence[int] = (16, 32, 64, 128, 128, 128),
        strides: Sequence[int] = (2, 2, 4, 4, 1),
        groups: Sequence[int] = (4, 8, 16, 16, 16),
        use_spectral_norm: bool = False,
    ):
        super().__init__()
        if not len(channels) - 1 == len(strides) == len(groups):
            raise ValueError(
                f"scale discriminator: {len(channels)} channels need {len(channels) - 1} strides "
                f"and groups, got {len(strides)} and {len(groups)}"
            )
        norm = spectral_norm if use_spectral_norm else weight_norm
        self.convs = nn.ModuleList([norm(nn.Conv1d(1, channels[0], 15, padding=7))])
        for c_in, c_out, stride, group in zip(channels[:-1], channels[1:], strides, groups, strict=True):
            self.convs.append(norm(nn.Conv1d(c_in, c_out, 41, stride, groups=group, padding=20)))
        self.convs.append(norm(nn.Conv1d(channels[-1], channels[-1], 5, padding=2)))
        self.output = norm(nn.Conv1d(channels[-1], 1, 3, padding=1))

    def forward(self, audio: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        x = _as_batch_channel_time(audio)
        return _conv_stack(self.convs, self.output, x)


class MultiPeriodDiscriminator(nn.Module):
    """HiFi-GAN's MPD: one :class:`PeriodDiscriminator` per period (primes, so they overlap little).

    waveform [B, T] -> (logits: len(periods) x [B, N_p], features: len(periods) x (len(channels)+2) maps).
    """

    def __init__(
        self,
        periods: Sequence[int] = (2, 3, 5, 7, 11),
        channels: Sequence[int] = (16, 32, 64, 128),
        kernel_size: int = 5,
        stride: int = 3,
    ):
        super().__init__()
        self.discriminators = nn.ModuleList(PeriodDiscriminator(p, channels, kernel_size, stride) for p in periods)

    def forward(self, audio: torch.Tensor) -> tuple[Logits, Features]:
        outputs = [d(audio) for d in self.discriminators]
        return [o[0] for o in outputs], [o[1] for o in outputs]


class MultiScaleDiscriminator(nn.Module):
    """MelGAN's MSD: ``scales`` :class:`ScaleDiscriminator` s on the waveform pooled 1, 2, 4, ... times.

    waveform [B, T] -> (logits: scales x [B, N_s], features: scales x (len(channels)+2) maps).
    """

    def __init__(
        self,
        scales: int = 3,
        channels: Sequence[int] = (16, 32, 64, 128, 128, 128),
        strides: Sequence[int] = (2, 2, 4, 4, 1),
        groups: Sequence[int] = (4, 8, 16, 16, 16),
    ):
        super().__init__()
        self.discriminators = nn.ModuleList(
            ScaleDiscriminator(channels, strides, groups, use_spectral_norm=(i == 0)) for i in range(scales)
        )
        self.pool = nn.AvgPool1d(4, 2, padding=1, count_include_pad=False)

    def forward(self, audio: torch.Tensor) -> tuple[Logits, Features]:
        x = _as_batch_channel_time(audio)
        logits, features = [], []
        for i, d in enumerate(self.discriminators):
            if i:
                x = self.pool(x)
            out, feats = d(x)
            logits.append(out)
            features.append(feats)
        return logits, features


class CombinedDiscriminator(nn.Module):
    """MPD and/or MSD behind one call: waveform [B, T] -> (logits, features), MPD's entries first.

    Constructor keywords are passed through: ``periods``, ``mpd_channels``, ``scales``,
    ``msd_channels``, ``msd_strides``, ``msd_groups``.
    """

    def __init__(
        self,
        use_mpd: bool = True,
        use_msd: bool = True,
        periods: Sequence[int] = (2, 3, 5, 7, 11),
        mpd_channels: Sequence[int] = (16, 32, 64, 128),
        scales: int = 3,
        msd_channels: Sequence[int] = (16, 32, 64, 128, 128, 128),
        msd_strides: Sequence[int] = (2, 2, 4, 4, 1),
        msd_groups: Sequence[int] = (4, 8, 16, 16, 16),
    ):
        super().__init__()
        if not (use_mpd or use_msd):
            raise ValueError("CombinedDiscriminator needs use_mpd or use_msd (or both)")
        self.mpd = MultiPeriodDiscriminator(periods, mpd_channels) if use_mpd else None
        self.msd = MultiScaleDiscriminator(scales, msd_channels, msd_strides, msd_groups) if use_msd else None

    def forward(self, audio: torch.Tensor) -> tuple[Logits, Features]:
        logits, features = [], []
        for part in (self.mpd, self.msd):
            if part is not None:
                out, feats = part(audio)
                logits += out
                features += feats
        return logits, features
