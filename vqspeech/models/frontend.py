"""Encoder front ends: waveform [B, T] -> frame features [B, C, T // hop_length].

Both front ends produce exactly one frame per ``hop_length`` samples; frame t covers samples
[t * hop, (t + 1) * hop) and is centred at (t + 0.5) * hop.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn


def _mel_edges(sample_rate: int, n_mels: int, fmin: float, fmax: float | None) -> torch.Tensor:
    """The n_mels + 2 band edges in Hz, equally spaced on the HTK mel scale, float64 [n_mels + 2]."""
    fmax = fmax or sample_rate / 2

    def hz_to_mel(f):
        return 2595.0 * np.log10(1.0 + np.asarray(f) / 700.0)

    def mel_to_hz(m):
        return 700.0 * (10.0 ** (np.asarray(m) / 2595.0) - 1.0)

    return torch.tensor(mel_to_hz(np.linspace(hz_to_mel(fmin), hz_to_mel(fmax), n_mels + 2)))


def _triangles(freqs: torch.Tensor, edges: torch.Tensor) -> torch.Tensor:
    """Equal-area triangular filters between ``edges`` [n_mels + 2] evaluated at ``freqs`` [..., F]
    (Hz) -> [..., n_mels, F]."""
    lower, centre, upper = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    freqs = freqs.unsqueeze(-2)
    rising = (freqs - lower) / (centre - lower)
    falling = (upper - freqs) / (upper - centre)
    return torch.clamp(torch.minimum(rising, falling), min=0.0) * (2.0 / (upper - lower))


def mel_filterbank(
    sample_rate: int, n_fft: int, n_mels: int, fmin: float = 0.0, fmax: float | None = None
) -> torch.Tensor:
    """Slaney-style triangular mel filters (HTK mel scale), shape [n_mels, n_fft // 2 + 1]."""
    freqs = torch.linspace(0, sample_rate / 2, n_fft // 2 + 1, dtype=torch.float64)
    return _triangles(freqs, _mel_edges(sample_rate, n_mels, fmin, fmax)).float()


def dct_matrix(n: int) -> torch.Tensor:
    """The orthonormal DCT-II as a matrix [n, n]: row k applied to a frame [n] gives its k-th
    coefficient (scipy.fft.dct(x, type=2, norm="ortho"))."""
    i = torch.arange(n, dtype=torch.float64)
    basis = torch.cos(math.pi / n * (i[None] + 0.5) * i[:, None]) * math.sqrt(2.0 / n)
    basis[0] /= math.sqrt(2.0)
    return basis.float()


def vtlp_frequencies(freqs: torch.Tensor, alpha: torch.Tensor, nyquist: float, boundary: float = 0.8) -> torch.Tensor:
    """Vocal tract length perturbation's frequency warp (Jaitly and Hinton, 2013): freqs [F] (Hz)
    and factors alpha [B] -> warped frequencies [B, F].

    f -> alpha * f up to f0 = boundary * nyquist * min(alpha, 1) / alpha, then the straight line
    from (f0, alpha * f0) to (nyquist, nyquist), so the warp keeps 0 and the Nyquist frequency.
    """
    alpha = alpha[:, None].double()
    knee = boundary * nyquist * alpha.clamp(max=1.0) / alpha
    slope = (nyquist - alpha * knee) / (nyquist - knee)
    freqs = freqs[None].double()
    return torch.where(freqs <= knee, alpha * freqs, nyquist - slope * (nyquist - freqs))


def _frames(audio: torch.Tensor, hop_length: int) -> int:
    frames = audio.shape[-1] // hop_length
    if frames == 0:
        raise ValueError(f"audio has {audio.shape[-1]} samples, fewer than one frame (hop_length={hop_length})")
    return frames


def real_frames(mask: torch.Tensor, frames: int, hop_length: int) -> torch.Tensor:
    """Sample mask [B, T] (1 = real, 0 = padding) -> frame mask [B, frames] (bool): a frame is
    real when all its ``hop_length`` samples are."""
    return mask[:, : frames * hop_length].reshape(mask.shape[0], frames, hop_length).amin(-1) > 0


class LogMelFrontend(nn.Module):
    """Log-mel spectrogram via torch.stft: a Hann window (default 2*hop samples), one frame per hop.

    The window is zero-padded to ``n_fft`` points (default: the next power of two >= the window, at
    least 512) so that narrow low-frequency mel filters still cover FFT bins.

    ``cepstra`` > 0: the first ``cepstra`` coefficients of the orthonormal DCT-II of each log-mel
    frame (MFCCs, c0 included) instead of the frame: the spectral envelope without the harmonics
    that resolve the voice's pitch.

    ``warp`` > 0 (training only): vocal tract length perturbation. Each input's frequency axis is
    scaled by its own factor drawn uniformly from [1 - warp, 1 + warp] (:func:`vtlp_frequencies`)
    before the mel filters, which moves formants and harmonics together, as a shorter or longer
    vocal tract and a higher or lower voice would; frames and their timing are unchanged.
    """

    window: torch.Tensor  # [win_length] non-persistent buffer
    filters: torch.Tensor  # [n_mels, n_fft // 2 + 1] non-persistent buffer

    def __init__(
        self,
        sample_rate: int,
        hop_length: int,
        n_mels: int = 80,
        n_fft: int | None = None,
        win_length: int | None = None,
        warp: float = 0.0,
        cepstra: int = 0,
    ):
        super().__init__()
        if not 0.0 <= warp < 1.0:
            raise ValueError(f"frequency warp {warp} must be in [0, 1)")
        if not 0 <= cepstra <= n_mels:
            raise ValueError(f"cepstra={cepstra} must be between 0 (log-mel frames) and n_mels={n_mels}")
        self.hop_length = hop_length
        self.sample_rate = sample_rate
        self.warp = warp
        self.win_length = win_length or 2 * hop_length
        self.n_fft = n_fft or max(512, 1 << (self.win_length - 1).bit_length())
        if self.n_fft < self.win_length:
            raise ValueError(f"n_fft={self.n_fft} is shorter than the window ({self.win_length} samples)")
        self.n_mels = n_mels
        self.out_channels = cepstra or n_mels
        self.register_buffer("window", torch.hann_window(self.win_length), persistent=False)
        self.register_buffer("filters", mel_filterbank(sample_rate, self.n_fft, n_mels), persistent=False)
        self.dct: torch.Tensor | None  # [cepstra, n_mels] non-persistent buffer, or None
        self.register_buffer("dct", dct_matrix(n_mels)[:cepstra] if cepstra else None, persistent=False)

    @property
    def context_frames(self) -> int:
        """Frames on each side whose samples reach into a frame's window."""
        return math.ceil((self.n_fft - self.hop_length) / 2 / self.hop_length)

    def power_spectrum(self, audio: torch.Tensor) -> torch.Tensor:
        """audio [B, T] -> |STFT|^2 [B, n_fft // 2 + 1, T // hop], one frame per hop."""
        frames = _frames(audio, self.hop_length)
        left = (self.n_fft - self.hop_length) // 2  # frame t is centred at (t + 0.5) * hop
        right = self.n_fft - self.hop_length - left
        audio = audio[..., : frames * self.hop_length].float()
        mode = "reflect" if audio.shape[-1] > max(left, right) else "constant"
        audio = nn.functional.pad(audio.unsqueeze(1), (left, right), mode=mode).squeeze(1)
        spec = torch.stft(
            audio,
            self.n_fft,
            self.hop_length,
            win_length=self.win_length,
            window=self.window,
            center=False,
            return_complex=True,
        )
        return spec.abs().pow(2)[..., :frames]

    def forward(self, audio: torch.Tensor) -> torch.Tensor:
        """audio [B, T] -> log-mel [B, n_mels, T // hop] (cepstra: [B, cepstra, T // hop])."""
        filters = self.filters
        if self.training and self.warp:
            filters = self.warped_filters(1.0 + self.warp * (2.0 * torch.rand(len(audio), device=audio.device) - 1.0))
        log_mel = torch.log(torch.matmul(filters, self.power_spectrum(audio)).clamp_min(1e-5))
        return log_mel if self.dct is None else torch.matmul(self.dct, log_mel)

    def warped_filters(self, alpha: torch.Tensor) -> torch.Tensor:
        """VTLP factors alpha [B] (see the class docstring) -> mel filters [B, n_mels, bins]."""
        nyquist = self.sample_rate / 2
        freqs = torch.linspace(0, nyquist, self.n_fft // 2 + 1, dtype=torch.float64, device=alpha.device)
        edges = _mel_edges(self.sample_rate, self.n_mels, 0.0, None).to(alpha.device)
        return _triangles(vtlp_frequencies(freqs, alpha, nyquist), edges).float()


class ConvFrontend(nn.Module):
    """Strided 1-D convolutions over the waveform, as in the VQ-VAE paper; prod(strides) == hop."""

    def __init__(self, hop_length: int, strides: list[int], channels: int = 128):
        super().__init__()
        if math.prod(strides) != hop_length:
            raise ValueError(f"encoder strides {strides} multiply to {math.prod(strides)}, not hop_length={hop_length}")
        self.hop_length = hop_length
        self.out_channels = channels
        self.strides = list(strides)
        # kernel 2*stride with `stride` samples of padding in all keeps exactly T/stride frames
        self.convs = nn.ModuleList(
            nn.Conv1d(1 if i == 0 else channels, channels, 2 * s, s) for i, s in enumerate(strides)
        )

    @property
    def context_frames(self) -> int:
        """Frames on each side within the stack's receptive field (rounded up)."""
        span, step = 1, 1
        for stride in self.strides:
            span += (2 * stride - 1) * step
            step *= stride
        return math.ceil(span / self.hop_length) + 1

    def forward(self, audio: torch.Tensor) -> torch.Tensor:
        """audio [B, T] -> features [B, channels, T // hop]."""
        frames = _frames(audio, self.hop_length)
        x = audio[..., : frames * self.hop_length].unsqueeze(1)
        for stride, conv in zip(self.strides, self.convs, strict=True):
            x = torch.relu(conv(nn.functional.pad(x, (stride // 2, stride - stride // 2))))
        return x
