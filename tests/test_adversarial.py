"""Adversarial decoding modules: the HiFi-GAN-style conv decoder, MPD/MSD discriminators and the
GAN losses (multi-scale mel, LSGAN, feature matching, VQ-GAN's adaptive weight). CPU, tiny sizes."""

from __future__ import annotations

import math

import pytest
import torch
from torch.nn import functional as F

from helpers import shared_fsdd
from vqspeech.models.conv_decoder import ConvDecoder
from vqspeech.models.discriminators import CombinedDiscriminator, MultiPeriodDiscriminator, MultiScaleDiscriminator
from vqspeech.models.frontend import LogMelFrontend
from vqspeech.models.gan_losses import (MultiScaleMelLoss, adaptive_weight, discriminator_active, discriminator_loss,
                                        feature_matching_loss, generator_adversarial_loss)

SR = 8000
TINY_DECODER = dict(channels=32, resblock_kernel_sizes=(3, 7), resblock_dilations=((1, 3), (1, 3)),
                    global_channels=8)
TINY_DISCRIMINATOR = dict(mpd_channels=(4, 8, 16, 16), msd_channels=(8, 16, 16, 32, 32, 32),
                          msd_groups=(4, 4, 8, 8, 8))


pytestmark = pytest.mark.usefixtures("one_thread", "seeded")


def harmonic(seconds: float = 0.5, f0: float = 140.0, seed: int = 0) -> torch.Tensor:
    """A voiced-like test signal [T]: 12 harmonics with 1/k amplitudes, vibrato, a smooth envelope."""
    g = torch.Generator().manual_seed(seed)
    t = torch.arange(int(seconds * SR)) / SR
    phase = 2 * math.pi * torch.cumsum(f0 * (1 + 0.05 * torch.sin(2 * math.pi * 4 * t)), 0) / SR
    x = sum(torch.sin(k * phase + 2 * math.pi * torch.rand((), generator=g)) / k for k in range(1, 13))
    return 0.3 * x / x.abs().max() * torch.sin(math.pi * t / seconds) ** 0.5


def utterance() -> tuple[torch.Tensor, str]:
    """One real FSDD recording (8 kHz) when the shared data is present, else the harmonic signal."""
    path = shared_fsdd() / "recordings" / "3_george_7.wav"
    if path.is_file():
        from vqspeech.audio import load_audio

        return torch.from_numpy(load_audio(path, SR)[0]), "fsdd"
    return harmonic(), "synthetic"


# --------------------------------------------------------------------------------------------
# conv decoder


@pytest.mark.parametrize("hop,strides,kernels", [(80, (5, 4, 4), None), (60, (3, 4, 5), (3, 9, 11)),
                                                 (16, (1, 2, 8), (3, 5, 16))])
def test_conv_decoder_output_length_is_frames_times_hop(hop, strides, kernels):
    dec = ConvDecoder(3, latent_dim=6, hop_length=hop, upsample_strides=strides, upsample_kernel_sizes=kernels,
                      **TINY_DECODER)
    for frames in (1, 2, 5, 17):
        out = dec(torch.randn(2, 6, frames), torch.tensor([0, 2]))
        assert out.shape == (2, frames * hop), (strides, kernels, frames)
        assert torch.isfinite(out).all()


def test_conv_decoder_output_is_bounded_by_tanh():
    dec = ConvDecoder(2, latent_dim=6, **TINY_DECODER)
    latents, speakers = 100 * torch.randn(2, 6, 9), torch.tensor([0, 1])
    with torch.no_grad():
        dec.output.weight.mul_(100.0)  # pre-activations far outside [-1, 1], both signs
        out = dec(latents, speakers)
        assert float(out.abs().max()) <= 1.0
        assert float(out.max()) > 0.999 and float(out.min()) < -0.999
        dec.output.weight.zero_()
        dec.output.bias.fill_(2.0)
        torch.testing.assert_close(dec(latents, speakers), torch.full((2, 9 * 80), math.tanh(2.0)))


def test_conv_decoder_frame_reach_is_local_and_centred():
    hop, frames, f = 80, 24, 12
    dec = ConvDecoder(1, latent_dim=6, hop_length=hop, **TINY_DECODER).double()
    # Without biases and the speaker term, zero latents decode to exact zeros, so the nonzero
    # samples are exactly those frame f reaches (a difference of two decodings would lose the
    # edges' tiny changes to rounding).
    with torch.no_grad():
        for name, parameter in dec.named_parameters():
            if name.endswith("bias") or name.startswith("speaker"):
                parameter.zero_()
        latents = torch.zeros(1, 6, frames, dtype=torch.float64)
        latents[:, :, f] = torch.randn(6, dtype=torch.float64)
        touched = dec(latents, torch.zeros(1, dtype=torch.long))[0].nonzero()[:, 0]
    left, right = f * hop - int(touched.min()), int(touched.max()) - ((f + 1) * hop - 1)
    # Reach on each side, in output samples: the input conv's 3 frames; at each stage (16, 4 and 1
    # output samples per position after strides 5, 4, 4) the upsampling kernel's overhang (3, 2, 2
    # positions) plus the widest residual block's sum over dilations d of (k - 1)/2 * (d + 1),
    # k = 7; the output conv's 3. The two sides are equal because every kernel is centred.
    block = 3 * (1 + 1) + 3 * (3 + 1)
    expected = 3 * hop + 16 * (3 + block) + 4 * (2 + block) + 1 * (2 + block) + 3
    assert left == right == expected, (left, right, expected)


def test_conv_decoder_speaker_conditioning_changes_output():
    dec = ConvDecoder(4, latent_dim=6, **TINY_DECODER)
    latents = torch.randn(1, 6, 10).expand(2, -1, -1)
    with torch.no_grad():
        same = dec(latents, torch.tensor([1, 1]))
        different = dec(latents, torch.tensor([1, 3]))
    torch.testing.assert_close(same[0], same[1], rtol=0, atol=0)
    torch.testing.assert_close(different[0], same[0], rtol=0, atol=0)
    assert float((different[1] - different[0]).abs().mean()) > 1e-3 * float(different[0].abs().mean())


def test_conv_decoder_rejects_bad_configurations():
    with pytest.raises(ValueError, match="multiply to 40, not hop_length=80"):
        ConvDecoder(1, hop_length=80, upsample_strides=(5, 4, 2))
    with pytest.raises(ValueError, match="upsample_kernel_sizes"):
        ConvDecoder(1, hop_length=80, upsample_strides=(5, 4, 4), upsample_kernel_sizes=(10, 8))
    with pytest.raises(ValueError, match="shorter than its stride"):
        ConvDecoder(1, hop_length=80, upsample_strides=(5, 4, 4), upsample_kernel_sizes=(4, 8, 8))
    with pytest.raises(ValueError, match="halved"):
        ConvDecoder(1, hop_length=80, channels=20)


def test_conv_decoder_last_layer_is_the_output_weight():
    dec = ConvDecoder(1, latent_dim=6, **TINY_DECODER)
    assert dec.last_layer is dec.output.weight
    assert isinstance(dec.last_layer, torch.nn.Parameter) and dec.last_layer.shape == (1, 4, 7)


# --------------------------------------------------------------------------------------------
# discriminators and GAN losses


def test_multi_period_discriminator_shapes():
    periods, channels = (2, 3, 5, 7, 11), (4, 8, 16, 16)
    mpd = MultiPeriodDiscriminator(periods, channels)
    audio = torch.randn(3, 1000)
    logits, features = mpd(audio)
    assert len(logits) == len(features) == len(periods)
    for p, out, feats in zip(periods, logits, features):
        assert len(feats) == len(channels) + 2
        rows = math.ceil(1000 / p)
        for c, fmap in zip(channels, feats):
            rows = (rows + 2 * 2 - 5) // 3 + 1
            assert fmap.shape == (3, c, rows, p)
        assert feats[-1].shape == (3, 1, rows, p)
        assert out.shape == (3, rows * p)
    # [B, 1, T] is accepted too, with the same result
    logits_3d, _ = mpd(audio[:, None])
    torch.testing.assert_close(logits_3d, logits)


def test_multi_scale_discriminator_shapes():
    channels = (8, 16, 16, 32, 32, 32)
    msd = MultiScaleDiscriminator(3, channels, groups=(4, 4, 8, 8, 8))
    logits, features = msd(torch.randn(2, 1024))
    assert len(logits) == len(features) == 3
    for scale, (out, feats) in enumerate(zip(logits, features)):
        length = 1024 // 2 ** scale  # average pooling halves the length exactly
        assert len(feats) == len(channels) + 2
        assert feats[0].shape == (2, 8, length)
        assert feats[-1].shape == (2, 1, length // 64)
        assert out.shape == (2, length // 64)
    # HiFi-GAN: spectral norm on the raw-scale branch, weight norm on the pooled ones
    norms = [type(d.convs[0].parametrizations.weight[0]).__name__ for d in msd.discriminators]
    assert norms == ["_SpectralNorm", "_WeightNorm", "_WeightNorm"]


def test_combined_discriminator_concatenates_mpd_then_msd():
    audio = torch.randn(2, 800)
    both = CombinedDiscriminator(**TINY_DISCRIMINATOR).eval()  # eval: spectral norm's power iteration stays put
    logits, features = both(audio)
    assert len(logits) == len(features) == 5 + 3
    mpd_logits, _ = both.mpd(audio)
    msd_logits, _ = both.msd(audio)
    for got, want in zip(logits, mpd_logits + msd_logits):
        torch.testing.assert_close(got, want)
    assert len(CombinedDiscriminator(use_msd=False, **TINY_DISCRIMINATOR)(audio)[0]) == 5
    assert len(CombinedDiscriminator(use_mpd=False, **TINY_DISCRIMINATOR)(audio)[0]) == 3
    with pytest.raises(ValueError):
        CombinedDiscriminator(use_mpd=False, use_msd=False)


def test_lsgan_losses_formulas():
    ones, zeros = [torch.ones(2, 5), torch.ones(2, 3)], [torch.zeros(2, 5), torch.zeros(2, 3)]
    # a perfect discriminator (real -> 1, fake -> 0) has zero loss; the reverse costs 2 per branch
    assert float(discriminator_loss(ones, zeros)) == 0.0
    assert float(discriminator_loss(zeros, ones)) == pytest.approx(4.0)
    half = [torch.full((2, 5), 0.5), torch.full((2, 3), 0.5)]
    assert float(discriminator_loss(half, half)) == pytest.approx(1.0)
    assert float(generator_adversarial_loss(ones)) == 0.0
    assert float(generator_adversarial_loss(zeros)) == pytest.approx(2.0)
    r, f = torch.randn(4, 7), torch.randn(4, 7)
    assert float(discriminator_loss([r], [f])) == pytest.approx(float(((1 - r) ** 2).mean() + (f ** 2).mean()))


def test_discriminator_learns_to_separate_and_its_loss_falls():
    disc = CombinedDiscriminator(**TINY_DISCRIMINATOR)
    real = torch.stack([harmonic(0.125, f0, seed=i) for i, f0 in enumerate((110.0, 150.0, 190.0, 230.0))])
    fake = 0.1 * torch.randn_like(real)
    opt = torch.optim.Adam(disc.parameters(), lr=1e-2, betas=(0.8, 0.99))

    def loss_and_margins():
        (real_logits, _), (fake_logits, _) = disc(real), disc(fake)
        margins = torch.stack([r.mean() - f.mean() for r, f in zip(real_logits, fake_logits)]).detach()
        return discriminator_loss(real_logits, fake_logits), margins

    for _ in range(50):
        loss, _ = loss_and_margins()
        opt.zero_grad()
        loss.backward()
        opt.step()
    loss, margins = loss_and_margins()
    # a discriminator that cannot tell them apart scores at best 0.5 per branch (both logits 0.5)
    chance = 0.5 * len(margins)
    assert loss.item() < 0.5 * chance, loss.item()
    assert int((margins > 0.3).sum()) >= 6 and float(margins.mean()) > 0.5, margins


def test_feature_matching_loss():
    real = [[torch.randn(2, 3, 10), torch.randn(2, 1, 4)], [torch.randn(2, 5)]]
    fake = [[t.clone().requires_grad_() for t in group] for group in real]
    assert feature_matching_loss(real, fake).item() == 0.0
    shifted = [[t + 0.5 for t in group] for group in real]
    assert float(feature_matching_loss(real, shifted)) == pytest.approx(3 * 0.5)  # sum of per-map means
    # gradients reach the fake features only
    real_leaf = [[t.clone().requires_grad_() for t in group] for group in real]
    fake_leaf = [[t.clone().requires_grad_() for t in group] for group in shifted]
    feature_matching_loss(real_leaf, fake_leaf).backward()
    assert all(t.grad is None for group in real_leaf for t in group)
    assert all(t.grad is not None and float(t.grad.abs().sum()) > 0 for group in fake_leaf for t in group)
    with pytest.raises(ValueError):
        feature_matching_loss(real, [fake[0]])


def test_discriminator_active_after_warmup():
    assert [discriminator_active(s, 3) for s in range(5)] == [False, False, False, True, True]
    assert discriminator_active(0, 0)


# --------------------------------------------------------------------------------------------
# multi-scale mel loss


def test_multi_scale_mel_loss_zero_monotone_differentiable():
    loss_fn = MultiScaleMelLoss(SR)
    clean = harmonic(0.5)[None].repeat(2, 1)
    assert float(loss_fn(clean, clean)) == 0.0
    g = torch.Generator().manual_seed(1)
    noise = torch.randn(clean.shape, generator=g)
    losses = [float(loss_fn(clean + level * noise, clean)) for level in (1e-3, 1e-2, 3e-2, 1e-1, 3e-1)]
    assert all(a < b for a, b in zip(losses, losses[1:])), losses
    assert losses[0] > 0.0
    prediction = (clean + 0.05 * noise).requires_grad_()
    loss_fn(prediction, clean).backward()
    assert torch.isfinite(prediction.grad).all() and float(prediction.grad.abs().sum()) > 0
    # zero-valued predictions (silence) still give finite gradients
    silence = torch.zeros_like(clean, requires_grad=True)
    loss_fn(silence, clean).backward()
    assert torch.isfinite(silence.grad).all()


def test_log_mel_matches_numpy_reference():
    """Each scale's spectrogram against numpy: reflect-padded centred frames, Hann window,
    |rfft|, the mel filterbank, log with a floor."""
    import numpy as np

    from vqspeech.models.frontend import mel_filterbank

    loss_fn = MultiScaleMelLoss(SR)
    audio = 0.1 * torch.randn(1, 1000, dtype=torch.float64)
    for i, (n_fft, hop, mels) in enumerate(zip(loss_fn.fft_sizes, loss_fn.hop_lengths, loss_fn.n_mels)):
        x = np.pad(audio[0].numpy(), n_fft // 2, mode="reflect")
        window = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n_fft) / n_fft)  # periodic Hann
        frames = np.stack([x[j * hop: j * hop + n_fft] * window for j in range(1 + 1000 // hop)])
        magnitude = np.abs(np.fft.rfft(frames, axis=1)).T
        expected = np.log(np.maximum(mel_filterbank(SR, n_fft, mels).double().numpy() @ magnitude, 1e-5))
        got = loss_fn.log_mel(audio, i)[0].double().numpy()
        np.testing.assert_allclose(got, expected, atol=2e-3, rtol=0)


def test_multi_scale_mel_loss_scales_and_mask():
    loss_fn = MultiScaleMelLoss(SR)
    assert loss_fn.fft_sizes == [128, 256, 512] and loss_fn.hop_lengths == [32, 64, 128]
    audio = harmonic(0.5)[None]
    for i, (hop, mels) in enumerate(zip(loss_fn.hop_lengths, loss_fn.n_mels)):
        assert loss_fn.log_mel(audio, i).shape == (1, mels, 1 + audio.shape[-1] // hop)
    # per-scale mean, then the mean over scales
    noisy = audio + 0.01 * torch.randn_like(audio)
    per_scale = [float((loss_fn.log_mel(noisy, i) - loss_fn.log_mel(audio, i)).abs().mean()) for i in range(3)]
    assert float(loss_fn(noisy, audio)) == pytest.approx(sum(per_scale) / 3, rel=1e-5)
    # masked-out padding does not count: garbage in the padded half changes nothing
    mask = torch.ones_like(audio)
    mask[:, 2000:] = 0
    garbage = noisy.clone()
    garbage[:, 2600:] = torch.randn(1, audio.shape[-1] - 2600)
    assert float(loss_fn(garbage, audio, mask)) == pytest.approx(float(loss_fn(noisy, audio, mask)), rel=1e-6)
    assert float(loss_fn(garbage, audio)) > 1.4 * float(loss_fn(noisy, audio))


# --------------------------------------------------------------------------------------------
# adaptive weight


def _generator_and_losses():
    """A tiny decoder, its output's mel loss and LSGAN generator loss against a tiny discriminator."""
    dec = ConvDecoder(1, latent_dim=6, **TINY_DECODER)
    disc = CombinedDiscriminator(**TINY_DISCRIMINATOR)
    target = harmonic(0.2)[None]
    fake = dec(torch.randn(1, 6, target.shape[-1] // 80), torch.zeros(1, dtype=torch.long))
    rec = MultiScaleMelLoss(SR)(fake, target)
    gan = generator_adversarial_loss(disc(fake)[0])
    return dec, rec, gan


def _grad_norm(loss: torch.Tensor, parameter: torch.nn.Parameter) -> float:
    """||d loss / d parameter|| by an ordinary backward into .grad (not autograd.grad)."""
    parameter.grad = None
    loss.backward(retain_graph=True)
    norm = float(parameter.grad.double().norm())
    parameter.grad = None
    return norm


def test_adaptive_weight_matches_gradient_norm_ratio():
    dec, rec, gan = _generator_and_losses()
    weight = adaptive_weight(rec, gan, dec.last_layer)
    rec_norm, gan_norm = _grad_norm(rec, dec.last_layer), _grad_norm(gan, dec.last_layer)
    assert rec_norm > 0 and gan_norm > 0
    assert float(weight) == pytest.approx(rec_norm / (gan_norm + 1e-4), rel=1e-5)
    # delta enters the denominator only
    assert float(adaptive_weight(rec, gan, dec.last_layer, delta=gan_norm)) == pytest.approx(
        rec_norm / (2 * gan_norm), rel=1e-5)
    # scaling the GAN loss scales its gradient norm, not delta
    assert float(adaptive_weight(rec, 10 * gan, dec.last_layer)) == pytest.approx(
        rec_norm / (10 * gan_norm + 1e-4), rel=1e-5)


def test_adaptive_weight_is_clamped_and_detached():
    dec, rec, gan = _generator_and_losses()
    free = float(adaptive_weight(rec, gan, dec.last_layer))
    assert float(adaptive_weight(rec, gan, dec.last_layer, max_weight=free / 2)) == pytest.approx(free / 2)
    # a vanishing GAN gradient: rec_norm / delta, capped at max_weight
    tiny = float(adaptive_weight(rec, 1e-12 * gan, dec.last_layer, delta=1e-4, max_weight=1e12))
    assert tiny == pytest.approx(_grad_norm(rec, dec.last_layer) / 1e-4, rel=1e-3)
    assert float(adaptive_weight(rec, 1e-12 * gan, dec.last_layer, max_weight=1e4)) == min(tiny, 1e4)
    weight = adaptive_weight(rec, gan, dec.last_layer)
    assert not weight.requires_grad and weight.grad_fn is None and weight.dim() == 0
    # the graph survives (retain_graph) for the generator's backward
    (rec + weight * gan).backward()
    assert float(dec.last_layer.grad.abs().sum()) > 0
    # evaluation (no graph) gives 0, as taming-transformers does
    with torch.no_grad():
        _, rec_eval, gan_eval = _generator_and_losses()
    assert float(adaptive_weight(rec_eval, gan_eval, dec.last_layer)) == 0.0


# --------------------------------------------------------------------------------------------
# training


def test_conv_decoder_overfits_one_utterance_with_mel_loss():
    audio, source = utterance()
    frames = audio.shape[-1] // 80
    target = audio[None, : frames * 80]
    features = LogMelFrontend(SR, 80, n_mels=16)(target)
    latents = (features - features.mean()) / features.std()  # a vocoder's input: the utterance's own mels
    dec = ConvDecoder(1, latent_dim=16, **TINY_DECODER)
    loss_fn = MultiScaleMelLoss(SR)
    opt = torch.optim.Adam(dec.parameters(), lr=2e-3, betas=(0.8, 0.99))
    speaker = torch.zeros(1, dtype=torch.long)
    losses = []
    for _ in range(150):
        loss = loss_fn(dec(latents, speaker), target)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    start, end = losses[0], sum(losses[-5:]) / 5
    assert end < 0.6 * start, (source, start, end)
    # better than noise with the target's loudness contour: the spectral shape was learned, not only the level
    envelope = F.avg_pool1d(target.abs()[None], 81, 1, 40)[0]
    noise = torch.randn(target.shape, generator=torch.Generator().manual_seed(0)) * envelope * 1.25
    assert end < 0.5 * float(loss_fn(noise, target)), (source, end)


def test_one_adversarial_step_end_to_end():
    dec = ConvDecoder(2, latent_dim=6, **TINY_DECODER)
    disc = CombinedDiscriminator(**TINY_DISCRIMINATOR)
    mel = MultiScaleMelLoss(SR)
    opt_g = torch.optim.AdamW(dec.parameters(), 2e-4, betas=(0.8, 0.99))
    opt_d = torch.optim.AdamW(disc.parameters(), 2e-4, betas=(0.8, 0.99))
    real = torch.stack([harmonic(0.2, 120.0), harmonic(0.2, 200.0, seed=1)])
    latents, speakers = torch.randn(2, 6, real.shape[-1] // 80), torch.tensor([0, 1])
    g_before = [p.detach().clone() for p in dec.parameters()]
    d_before = [p.detach().clone() for p in disc.parameters()]

    fake = dec(latents, speakers)
    # discriminator step on the detached output
    d_loss = discriminator_loss(disc(real)[0], disc(fake.detach())[0])
    opt_d.zero_grad()
    d_loss.backward()
    assert all(p.grad is None for p in dec.parameters())  # the generator got nothing from it
    opt_d.step()
    d_after = [p.detach().clone() for p in disc.parameters()]
    assert all(torch.equal(a, b) for a, b in zip(g_before, dec.parameters()))

    # generator step: mel + adaptive weight x (LSGAN + feature matching)
    with torch.no_grad():
        _, real_features = disc(real)
    fake_logits, fake_features = disc(fake)
    rec = 45.0 * mel(fake, real)
    gan = generator_adversarial_loss(fake_logits) + 2.0 * feature_matching_loss(real_features, fake_features)
    weight = adaptive_weight(rec, gan, dec.last_layer)
    total = rec + weight * gan
    opt_g.zero_grad()
    total.backward()
    opt_g.step()

    for value in (d_loss, rec, gan, weight, total):
        assert math.isfinite(value.item())
    assert float(weight) > 0
    assert sum(not torch.equal(a, b) for a, b in zip(g_before, dec.parameters())) > 0.9 * len(g_before)
    assert sum(not torch.equal(a, b) for a, b in zip(d_before, d_after)) > 0.9 * len(d_before)
    # the generator's optimizer did not move the discriminator
    assert all(torch.equal(a, b) for a, b in zip(d_after, disc.parameters()))
