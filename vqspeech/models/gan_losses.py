"""Losses for adversarial decoding: multi-scale mel L1, LSGAN, feature matching, adaptive weight.

The generator objective follows HiFi-GAN (Kong et al., 2020),

    L_G = L_adv(G; D) + lambda_fm * L_FM(G; D) + lambda_mel * L_mel(G),

with least-squares adversarial terms (Mao et al., 2017) summed over sub-discriminators, feature
matching (Larsen et al., 2016; Kumar et al., 2019, MelGAN) summed over sub-discriminators and
layers, and HiFi-GAN's weights lambda_fm = 2, lambda_mel = 45. The mel term here is multi-scale
(the multi-resolution STFT idea of Parallel WaveGAN, Yamamoto et al., 2020, on log-mel
magnitudes). The weights are the caller's; these functions return the unweighted terms.

VQ-GAN (Esser et al., 2021, "Taming Transformers for High-Resolution Image Synthesis") instead
scales the adversarial term by an adaptive weight (:func:`adaptive_weight`) and switches the
discriminator on only after a warm-up (:func:`discriminator_active`).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch
from torch import nn
from torch.nn import functional as F

from .frontend import mel_filterbank


class MultiScaleMelLoss(nn.Module):
    """Mean over scales of the L1 distance between log-mel magnitude spectrograms.

    Scale i: an ``fft_sizes[i]``-point STFT with a Hann window of ``win_lengths[i]`` samples
    (default the FFT size), hop ``hop_lengths[i]`` (default a quarter of it), ``n_mels[i]`` mel
    filters (``vqspeech.models.frontend.mel_filterbank``, equal area), magnitudes (not power) and
    ``log(max(mel, eps))`` as in HiFi-GAN's ``mel_spectrogram``. The defaults for 8 kHz audio,
    (128, 256, 512) points = 16, 32 and 64 ms, bracket HiFi-GAN's single 1024-point (46 ms at
    22.05 kHz) scale; (20, 40, 80) mel bands keep the narrowest filters at two or more FFT bins.
    Frames are centred (``center=True``, reflect padding), frame j at sample j * hop.
    """

    def __init__(
        self,
        sample_rate: int = 8000,
        fft_sizes: Sequence[int] = (128, 256, 512),
        hop_lengths: Sequence[int] | None = None,
        win_lengths: Sequence[int] | None = None,
        n_mels: Sequence[int] = (20, 40, 80),
        fmin: float = 0.0,
        fmax: float | None = None,
        eps: float = 1e-5,
    ):
        super().__init__()
        self.fft_sizes = [int(n) for n in fft_sizes]
        self.hop_lengths = [n // 4 for n in self.fft_sizes] if hop_lengths is None else [int(h) for h in hop_lengths]
        self.win_lengths = list(self.fft_sizes) if win_lengths is None else [int(w) for w in win_lengths]
        self.n_mels = [int(m) for m in n_mels]
        if not len(self.fft_sizes) == len(self.hop_lengths) == len(self.win_lengths) == len(self.n_mels) > 0:
            raise ValueError("fft_sizes, hop_lengths, win_lengths and n_mels need one entry per scale")
        for n_fft, win in zip(self.fft_sizes, self.win_lengths, strict=True):
            if win > n_fft:
                raise ValueError(f"window of {win} samples is longer than its FFT ({n_fft} points)")
        self.eps = eps
        for i, (n_fft, win, mels) in enumerate(zip(self.fft_sizes, self.win_lengths, self.n_mels, strict=True)):
            self.register_buffer(f"window_{i}", torch.hann_window(win), persistent=False)
            self.register_buffer(f"filters_{i}", mel_filterbank(sample_rate, n_fft, mels, fmin, fmax), persistent=False)

    def log_mel(self, audio: torch.Tensor, scale: int) -> torch.Tensor:
        """audio [B, T] -> log-mel [B, n_mels[scale], 1 + T // hop_lengths[scale]]."""
        n_fft, hop = self.fft_sizes[scale], self.hop_lengths[scale]
        pad = n_fft // 2
        x = F.pad(audio.float().unsqueeze(1), (pad, pad), mode="reflect" if audio.shape[-1] > pad else "constant")
        spec = torch.stft(
            x.squeeze(1),
            n_fft,
            hop,
            win_length=self.win_lengths[scale],
            window=getattr(self, f"window_{scale}"),
            center=False,
            return_complex=True,
        )
        # sqrt(|X|^2 + 1e-9) as in HiFi-GAN: a finite gradient where the magnitude is zero
        magnitude = torch.sqrt(spec.real.pow(2) + spec.imag.pow(2) + 1e-9)
        mel = torch.matmul(getattr(self, f"filters_{scale}"), magnitude)
        return torch.log(mel.clamp_min(self.eps))

    def forward(self, prediction: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """prediction, target [B, T]; optional mask [B, T] (1 = real sample) -> scalar loss.

        With a mask, frames whose centre sample is padding are left out of every scale's mean.
        """
        if prediction.shape != target.shape:
            raise ValueError(f"prediction {list(prediction.shape)} and target {list(target.shape)} differ in shape")
        losses = []
        for i, hop in enumerate(self.hop_lengths):
            diff = (self.log_mel(prediction, i) - self.log_mel(target, i)).abs()  # [B, M, J]
            if mask is None:
                losses.append(diff.mean())
                continue
            centres = (torch.arange(diff.shape[-1], device=mask.device) * hop).clamp_max(mask.shape[-1] - 1)
            frame_mask = mask[:, centres].to(diff.dtype)[:, None, :]  # [B, 1, J]
            losses.append((diff * frame_mask).sum() / (frame_mask.sum() * diff.shape[1]).clamp_min(1.0))
        return torch.stack(losses).mean()


def _total(terms: Iterable[torch.Tensor]) -> torch.Tensor:
    """``sum(terms)`` (0 + t_1 + t_2 + ...), which must have at least one term."""
    total = sum(terms)
    if not isinstance(total, torch.Tensor):
        raise ValueError("a loss over no sub-discriminators (empty logits or features)")
    return total


def discriminator_loss(real_logits: Sequence[torch.Tensor], fake_logits: Sequence[torch.Tensor]) -> torch.Tensor:
    """LSGAN discriminator loss: sum_k E[(1 - D_k(x))^2] + E[D_k(G(z))^2] over sub-discriminators k.

    The fake logits should come from a detached generator output.
    """
    if len(real_logits) != len(fake_logits):
        raise ValueError(f"{len(real_logits)} real and {len(fake_logits)} fake logits tensors")
    return _total(torch.mean((1.0 - r) ** 2) + torch.mean(f**2) for r, f in zip(real_logits, fake_logits, strict=True))


def generator_adversarial_loss(fake_logits: Sequence[torch.Tensor]) -> torch.Tensor:
    """LSGAN generator loss: sum_k E[(1 - D_k(G(z)))^2]."""
    return _total(torch.mean((1.0 - f) ** 2) for f in fake_logits)


def feature_matching_loss(
    real_features: Sequence[Sequence[torch.Tensor]], fake_features: Sequence[Sequence[torch.Tensor]]
) -> torch.Tensor:
    """sum_k sum_l E|D_k^l(x) - D_k^l(G(z))| over sub-discriminators k and their layers l.

    The real features are detached: this term trains the generator only. (HiFi-GAN's
    ``feature_loss`` returns twice this, its lambda_fm = 2 folded in.)
    """
    if len(real_features) != len(fake_features) or any(
        len(r) != len(f) for r, f in zip(real_features, fake_features, strict=True)
    ):
        raise ValueError("real and fake feature maps do not have the same structure")
    return _total(
        torch.mean((r.detach() - f).abs())
        for rs, fs in zip(real_features, fake_features, strict=True)
        for r, f in zip(rs, fs, strict=True)
    )


def adaptive_weight(
    rec_loss: torch.Tensor,
    gan_loss: torch.Tensor,
    last_layer: torch.Tensor,
    delta: float = 1e-4,
    max_weight: float = 1e4,
) -> torch.Tensor:
    """VQ-GAN's adaptive weight of the adversarial term (Esser et al., 2021, Sec. 3.1):

        lambda = ||grad_{G_L} L_rec|| / (||grad_{G_L} L_GAN|| + delta),  clamped to [0, max_weight],

    with G_L the decoder's last layer (``ConvDecoder.last_layer``), returned detached so that it is
    a constant of the generator step. This is ``calculate_adaptive_weight`` of taming-transformers
    (``taming/modules/losses/vqperceptual.py``): both gradients by ``torch.autograd.grad`` with
    ``retain_graph=True`` (the caller then back-propagates ``rec_loss + lambda * gan_loss``),
    Frobenius norms, delta = 1e-4, clamp to [0, 1e4]. There the result is further multiplied by a
    constant ``disc_weight``; that factor is the caller's. Where no graph exists (evaluation under
    ``torch.no_grad``), taming-transformers catches the RuntimeError and uses 0; here the same
    case returns 0 without trying.
    """
    if not (rec_loss.requires_grad and gan_loss.requires_grad):
        return torch.zeros((), device=rec_loss.device)
    (rec_grad,) = torch.autograd.grad(rec_loss, last_layer, retain_graph=True)
    (gan_grad,) = torch.autograd.grad(gan_loss, last_layer, retain_graph=True)
    weight = torch.linalg.vector_norm(rec_grad) / (torch.linalg.vector_norm(gan_grad) + delta)
    return weight.clamp(0.0, max_weight).detach()


def discriminator_active(step: int, warmup_steps: int) -> bool:
    """Whether the discriminator trains and the adversarial terms enter the generator loss.

    ``step`` counts generator updates from 0; the first ``warmup_steps`` of them use the
    reconstruction loss alone (taming-transformers' ``adopt_weight``: factor 0 while
    ``global_step < disc_start``). ``warmup_steps=0`` makes the GAN active from the start.
    """
    return step >= warmup_steps
