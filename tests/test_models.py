"""Model modules: mu-law, encoder front ends, vector quantizer, WaveNet decoder, incremental
generation and the assembled VQ-VAE. Small dimensions on CPU; a few seconds in total."""

from __future__ import annotations

import math

import pytest
import torch
from torch.nn import functional as F

from helpers import tiny_model_config
from vqspeech.audio import mu_law_decode, mu_law_encode
from vqspeech.inference.generate import IncrementalState, generate, incremental_step
from vqspeech.models import VQVAE, Encoder, VectorQuantizer, WaveNetDecoder
from vqspeech.models.frontend import ConvFrontend, LogMelFrontend

SR = 8000


pytestmark = pytest.mark.usefixtures("one_thread", "seeded")


# --------------------------------------------------------------------------------------------
# mu-law


def test_mu_law_round_trip_error_bound():
    x = torch.linspace(-1.0, 1.0, 100_001)
    err = (mu_law_decode(mu_law_encode(x)) - x).abs()
    # half a quantisation step in the compressed domain (1/255) times the slope of the expansion
    bound = 1.05 * (1.0 + 255.0 * x.abs()) * math.log(256.0) / 255.0 / 255.0
    assert bool((err <= bound).all()), float((err / bound).max())
    assert float(err.max()) < 0.022          # the widest step, near full scale
    assert float(err[x.abs() < 0.002].max()) < 1.5e-4  # fine resolution near silence


def test_mu_law_classes_range_and_monotonic():
    x = torch.linspace(-1.5, 1.5, 20_001)  # out-of-range input is clamped
    c = mu_law_encode(x)
    assert c.dtype == torch.long
    assert int(c.min()) == 0 and int(c.max()) == 255
    assert bool((c.diff() >= 0).all())
    assert set(c.unique().tolist()) == set(range(256))  # every class reachable
    levels = mu_law_decode(torch.arange(256))
    assert bool((levels.diff() > 0).all())
    assert float(levels[0]) == pytest.approx(-1.0) and float(levels[-1]) == pytest.approx(1.0)
    assert bool((mu_law_encode(levels) == torch.arange(256)).all())
    # shape preserved
    assert mu_law_encode(torch.zeros(2, 3, 5)).shape == (2, 3, 5)
    assert mu_law_decode(torch.zeros(2, 3, 5, dtype=torch.long)).shape == (2, 3, 5)


def test_mu_law_silence_is_middle_class():
    assert mu_law_encode(torch.zeros(7)).tolist() == [128] * 7
    assert 256 // 2 == 128  # the decoder's teacher-forcing start value (classes // 2)
    assert abs(float(mu_law_decode(torch.tensor(128)))) < 1e-4
    # antisymmetric: class k and 255 - k decode to opposite values
    levels = mu_law_decode(torch.arange(256))
    torch.testing.assert_close(levels, -levels.flip(0))


# --------------------------------------------------------------------------------------------
# front ends and encoder


@pytest.mark.parametrize("hop,strides", [(80, [5, 4, 4]), (8, [2, 2, 2]), (6, [3, 2])])
@pytest.mark.parametrize("extra", [0, 1, -1])
def test_frontends_frame_count(hop, strides, extra):
    mel = LogMelFrontend(SR, hop, n_mels=12)
    conv = ConvFrontend(hop, strides, channels=5)
    for frames in (1, 2, 3, 7):
        length = frames * hop + extra
        if length < hop:
            continue
        audio = 0.1 * torch.randn(2, length)
        expected = length // hop
        assert mel(audio).shape == (2, 12, expected), (hop, length)
        assert conv(audio).shape == (2, 5, expected), (hop, length)
        assert torch.isfinite(mel(audio)).all()


def test_frontends_ignore_trailing_partial_frame():
    hop = 8
    audio = 0.1 * torch.randn(1, 5 * hop + 5)
    changed = audio.clone()
    changed[:, 5 * hop:] = 0.9  # samples beyond the last whole frame
    for frontend in (LogMelFrontend(SR, hop, 10), ConvFrontend(hop, [2, 4], 6)):
        torch.testing.assert_close(frontend(audio), frontend(changed), rtol=0, atol=0)


def test_conv_frontend_rejects_bad_strides():
    with pytest.raises(ValueError, match="strides"):
        ConvFrontend(80, [5, 4, 2])
    with pytest.raises(ValueError):
        ConvFrontend(8, [2, 2])
    with pytest.raises(ValueError):
        Encoder(SR, 80, frontend="conv", strides=[4, 4, 4])
    with pytest.raises(ValueError, match="frontend"):
        Encoder(SR, 80, frontend="spectrogram")


@pytest.mark.parametrize("frontend", ["mel", "conv"])
def test_encoder_output_shape(frontend):
    hop = 80
    enc = Encoder(SR, hop, frontend=frontend, n_mels=20, strides=[5, 4, 4], channels=16,
                  latent_dim=7, dilations=[1, 2])
    for length in (hop, 3 * hop, 10 * hop + 41):
        z = enc(0.1 * torch.randn(3, length))
        assert z.shape == (3, 7, length // hop)
        assert torch.isfinite(z).all()


def test_mel_encoder_is_non_causal_and_local():
    hop, frames = 8, 24
    enc = Encoder(SR, hop, frontend="mel", n_mels=10, channels=12, latent_dim=6, dilations=[1, 2])
    enc.eval()
    audio = 0.1 * torch.randn(1, frames * hop)
    j = 16
    changed = audio.clone()
    changed[0, j * hop + hop // 4] += 0.5  # a sample inside frame j (windows of frames j-1 and j)
    with torch.no_grad():
        diff = (enc(audio) - enc(changed)).abs().amax(dim=1)[0]  # [frames]
    # earlier frames see the later sample: the encoder is not causal
    assert float(diff[j - 1]) > 1e-4
    assert float(diff[j - 3]) > 1e-4
    # reach: mel windows (frames j-1, j) + input conv (+-1) + dilated blocks (+-1, +-2)
    assert float(diff[: j - 5].max()) < 1e-5
    assert float(diff[j + 5:].max()) < 1e-5


# --------------------------------------------------------------------------------------------
# vector quantizer


def _distances(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Exact pairwise Euclidean distances [N, M] in float64 (no matmul shortcut)."""
    return (a.detach().double()[:, None, :] - b.detach().double()[None, :, :]).norm(dim=-1)


def _brute_force_codes(flat: torch.Tensor, codebook: torch.Tensor) -> torch.Tensor:
    return _distances(flat, codebook).argmin(dim=1)


def test_nearest_matches_brute_force():
    vq = VectorQuantizer(num_codes=32, dim=8)
    for scale in (0.1, 1.0, 10.0):
        flat = scale * torch.randn(500, 8)
        with torch.no_grad():
            vq.codebook.copy_(scale * torch.randn(32, 8))
        codes = vq.nearest(flat)
        assert codes.shape == (500,) and codes.dtype == torch.long
        assert torch.equal(codes, _brute_force_codes(flat, vq.codebook))


def test_forward_eval_codes_and_values():
    vq = VectorQuantizer(num_codes=16, dim=6).eval()
    z = torch.randn(3, 6, 11)
    out = vq(z)
    assert out.quantized.shape == (3, 6, 11)
    assert out.codes.shape == (3, 11)
    flat = z.transpose(1, 2).reshape(-1, 6)
    assert torch.equal(out.codes.reshape(-1), vq.nearest(flat))
    assert torch.equal(out.codes.reshape(-1), _brute_force_codes(flat, vq.codebook))
    expected = vq.codebook.detach()[out.codes].permute(0, 2, 1)  # [B, D, T]
    torch.testing.assert_close(out.quantized, expected, rtol=0, atol=1e-6)
    torch.testing.assert_close(vq.lookup(out.codes), expected)
    assert out.reseeded == 0
    assert not bool(vq.initialized)  # eval mode never initialises from data


def test_straight_through_gradient_is_identity():
    vq = VectorQuantizer(num_codes=16, dim=6).eval()
    z = torch.randn(2, 6, 9, requires_grad=True)
    w = torch.randn(2, 6, 9)
    out = vq(z)
    (out.quantized * w).sum().backward()
    torch.testing.assert_close(z.grad, w)
    assert vq.codebook.grad is None or float(vq.codebook.grad.abs().max()) == 0.0


def test_codebook_and_commitment_losses():
    num_codes, dim, beta = 16, 6, 0.37
    vq = VectorQuantizer(num_codes=num_codes, dim=dim, beta=beta).eval()
    z = torch.randn(2, dim, 5, requires_grad=True)
    out = vq(z)
    flat = z.detach().transpose(1, 2).reshape(-1, dim)
    codes = out.codes.reshape(-1)
    e = vq.codebook.detach()[codes]
    expected_mse = float(((flat - e) ** 2).mean())
    assert out.commitment_loss.item() == pytest.approx(expected_mse, rel=1e-5)
    assert out.codebook_loss.item() == pytest.approx(expected_mse, rel=1e-5)
    assert out.loss.item() == pytest.approx(out.codebook_loss.item() + beta * out.commitment_loss.item(),
                                             rel=1e-6)

    # codebook loss: gradient only into the codebook rows used, none into z
    cb_grad, z_grad = torch.autograd.grad(out.codebook_loss, [vq.codebook, z], retain_graph=True,
                                          allow_unused=True)
    assert z_grad is None or float(z_grad.abs().max()) == 0.0
    expected_grad = torch.zeros(num_codes, dim).index_add_(0, codes, 2.0 * (e - flat)) / flat.numel()
    torch.testing.assert_close(cb_grad, expected_grad)
    used = torch.zeros(num_codes, dtype=torch.bool)
    used[codes] = True
    assert 0 < int(used.sum()) < num_codes  # the test needs both used and unused rows
    assert float(cb_grad[~used].abs().max()) == 0.0
    assert bool((cb_grad[used].abs().amax(dim=1) > 0).all())

    # commitment loss: gradient only into z, = 2 (z - e) / N
    cb_grad, z_grad = torch.autograd.grad(out.commitment_loss, [vq.codebook, z], allow_unused=True)
    assert cb_grad is None or float(cb_grad.abs().max()) == 0.0
    expected_z = (2.0 * (flat - e) / flat.numel()).reshape(2, 5, dim).transpose(1, 2)
    torch.testing.assert_close(z_grad, expected_z)


def test_perplexity_and_usage():
    vq = VectorQuantizer(num_codes=8, dim=4).eval()
    z = torch.randn(3, 4, 20)
    out = vq(z)
    counts = torch.bincount(out.codes.reshape(-1), minlength=8).double()
    assert out.usage.shape == (8,)
    torch.testing.assert_close(out.usage.double(), counts)
    assert float(out.usage.sum()) == 3 * 20
    p = counts[counts > 0] / counts.sum()
    expected = math.exp(float(-(p * p.log()).sum()))
    assert float(out.perplexity) == pytest.approx(expected, rel=1e-5)
    assert 1.0 <= float(out.perplexity) <= 8.0

    # limiting cases: one code used -> 1; K codes used equally -> K
    with torch.no_grad():
        vq.codebook.copy_(torch.arange(8.0)[:, None].repeat(1, 4) * 10)
    one = vq(torch.full((1, 4, 12), 30.0))
    assert float(one.perplexity) == pytest.approx(1.0)
    even = vq(vq.codebook.detach().t()[None].repeat(1, 1, 3))  # every code three times
    assert float(even.perplexity) == pytest.approx(8.0, rel=1e-5)


def test_init_from_data():
    vq = VectorQuantizer(num_codes=16, dim=5, init_from_data=True)
    assert not bool(vq.initialized)
    before = vq.codebook.detach().clone()
    z = torch.randn(2, 5, 20)  # N = 40 >= K = 16
    out = vq.train()(z)
    assert bool(vq.initialized)
    flat = z.transpose(1, 2).reshape(-1, 5)
    d = _distances(vq.codebook, flat)  # [K, N]
    assert float(d.min(dim=1).values.max()) < 1e-6  # every row is an input vector
    assert len(set(d.argmin(dim=1).tolist())) == 16  # distinct input vectors
    assert not torch.allclose(before, vq.codebook.detach())
    # vectors that became codebook rows quantise to themselves
    rows = d.argmin(dim=1)
    assert torch.equal(out.codes.reshape(-1)[rows], torch.arange(16))
    # a second training forward does not re-initialise
    snapshot = vq.codebook.detach().clone()
    vq(torch.randn(2, 5, 20))
    torch.testing.assert_close(vq.codebook.detach(), snapshot, rtol=0, atol=0)


def _clustered_along_a_narrow_direction(n: int = 4000) -> tuple[torch.Tensor, torch.Tensor]:
    """z [1, 2, n]: a wide Gaussian (std 10) on channel 0, two clusters at +-0.5 (std 0.1) on channel
    1, mixed by a rotation; and each frame's cluster [n]."""
    labels = torch.randint(0, 2, (n,))
    points = torch.stack([10 * torch.randn(n), (labels * 2 - 1) * 0.5 + 0.1 * torch.randn(n)], dim=1)
    angle = torch.tensor(0.3)
    rotation = torch.stack([torch.stack([angle.cos(), -angle.sin()]), torch.stack([angle.sin(), angle.cos()])])
    return (points @ rotation.t() + torch.tensor([3.0, -2.0])).t()[None], labels


def test_whitening_finds_clusters_along_a_narrow_direction():
    """Nearest codes in whitened coordinates (a Mahalanobis distance) split the data where it is
    clustered, not where it is wide: what k-means on whitened latents gained on the FSDD codes."""
    z, labels = _clustered_along_a_narrow_direction()
    agreement = {}
    for whiten in (False, True):
        vq = VectorQuantizer(num_codes=2, dim=2, kmeans_iters=25, dead_code_threshold=0, whiten=whiten).train()
        codes = vq(z).codes.reshape(-1)
        same = float((codes == labels).float().mean())
        agreement[whiten] = max(same, 1 - same)
    assert agreement[True] > 0.97 and agreement[False] < 0.7, agreement


def test_whitening_coordinates_lookup_and_gradient():
    z, _ = _clustered_along_a_narrow_direction()
    vq = VectorQuantizer(num_codes=8, dim=2, whiten=True, whiten_decay=0.9).train()
    out = vq(z)
    u = vq.coordinates(z)[0].double()  # [2, N]: zero mean, unit covariance under the first batch's estimate
    torch.testing.assert_close(u.mean(1), torch.zeros(2, dtype=torch.float64), atol=1e-4, rtol=0)
    torch.testing.assert_close(torch.cov(u, correction=0), torch.eye(2, dtype=torch.float64), atol=1e-3, rtol=0)
    torch.testing.assert_close(vq.white_matrix @ vq.unwhite_matrix, torch.eye(2), atol=1e-5, rtol=0)
    # codes: the nearest codebook row in those coordinates; quantized and lookup map back to z's
    flat = u.t().float()
    assert torch.equal(out.codes.reshape(-1), _brute_force_codes(flat, vq.codebook.detach()))
    vq.eval()
    evaluated = vq(z)
    torch.testing.assert_close(evaluated.quantized, vq.lookup(evaluated.codes), atol=1e-5, rtol=0)
    assert float((evaluated.quantized - z).abs().mean()) < float(z.std(dim=2).mean())
    # straight through to z, and a frozen (eval) quantizer does not move its estimates
    frozen = {name: buffer.clone() for name, buffer in vq.named_buffers()}
    z = (z[..., :50] * 3).requires_grad_()
    w = torch.randn_like(z)
    (vq(z).quantized * w).sum().backward()
    torch.testing.assert_close(z.grad, w, atol=1e-5, rtol=0)
    for name, buffer in vq.named_buffers():
        assert torch.equal(buffer, frozen[name]), name
    # in training, later batches move the running estimates by 1 - whiten_decay
    vq.train()
    before = vq.white_mean.clone()
    shifted = torch.zeros(1, 2, 100) + (before[None, :, None] + 10)
    vq(shifted)
    torch.testing.assert_close(vq.white_mean, before + 0.1 * 10, atol=1e-4, rtol=0)


def test_init_from_data_off_keeps_codebook():
    vq = VectorQuantizer(num_codes=16, dim=5, init_from_data=False, dead_code_threshold=0).train()
    assert bool(vq.initialized)
    before = vq.codebook.detach().clone()
    vq(torch.randn(2, 5, 20))
    torch.testing.assert_close(vq.codebook.detach(), before, rtol=0, atol=0)


def test_ema_mode_codebook_is_buffer():
    vq = VectorQuantizer(num_codes=8, dim=4, ema=True)
    names = dict(vq.named_parameters())
    assert "codebook" not in names and len(names) == 0
    buffers = dict(vq.named_buffers())
    assert {"codebook", "ema_count", "ema_sum", "usage_ema", "initialized"} <= set(buffers)
    assert {"codebook", "ema_count", "ema_sum"} <= set(vq.state_dict())
    assert isinstance(VectorQuantizer(num_codes=8, dim=4).codebook, torch.nn.Parameter)


def test_ema_update_formula():
    K, D, decay, eps, beta = 8, 4, 0.9, 0.1, 0.25  # a large eps makes the smoothing visible
    vq = VectorQuantizer(num_codes=K, dim=D, ema=True, decay=decay, eps=eps, beta=beta,
                         init_from_data=False, dead_code_threshold=0).train()
    old = vq.codebook.clone()
    z = torch.randn(2, D, 15) / D ** 0.5
    flat = z.transpose(1, 2).reshape(-1, D)
    codes = _brute_force_codes(flat, old)
    counts = torch.bincount(codes, minlength=K).double()
    sums = torch.zeros(K, D, dtype=torch.double).index_add_(0, codes, flat.double())
    ema_count = decay * 1.0 + (1 - decay) * counts
    ema_sum = decay * old.double() + (1 - decay) * sums
    total = ema_count.sum()
    smoothed = (ema_count + eps) / (total + K * eps) * total
    expected = ema_sum / smoothed[:, None]

    z.requires_grad_(True)
    out = vq(z)
    assert torch.equal(out.codes.reshape(-1), codes)
    torch.testing.assert_close(vq.ema_count.double(), ema_count, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(vq.ema_sum.double(), ema_sum, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(vq.codebook.double(), expected, rtol=1e-5, atol=1e-6)
    assert (counts == 0).any() and (counts > 0).any()  # both kinds of rows were exercised
    assert float(out.codebook_loss) == 0.0
    assert out.loss.item() == pytest.approx(beta * out.commitment_loss.item(), rel=1e-6)
    out.loss.backward()
    assert z.grad is not None and float(z.grad.abs().max()) > 0

    # eval mode leaves the EMA statistics alone
    vq.eval()
    snapshot = [t.clone() for t in (vq.codebook, vq.ema_count, vq.ema_sum)]
    vq(torch.randn(2, D, 15))
    for a, b in zip(snapshot, (vq.codebook, vq.ema_count, vq.ema_sum)):
        assert torch.equal(a, b)


def test_ema_converges_to_cluster_means():
    K, D = 4, 3
    centres = torch.tensor([[3.0, 0, 0], [0, 3.0, 0], [0, 0, 3.0], [-3.0, -3.0, -3.0]])
    vq = VectorQuantizer(num_codes=K, dim=D, ema=True, decay=0.5, init_from_data=False,
                         dead_code_threshold=0).train()
    with torch.no_grad():
        vq.codebook.copy_(centres + 0.5 * torch.randn(K, D))
        vq.ema_sum.copy_(vq.codebook)
    points = (centres[:, None, :] + 0.3 * torch.randn(K, 25, D)).reshape(-1, D)  # [100, D]
    z = points.t()[None]  # [1, D, 100]
    for _ in range(40):
        out = vq(z)
    means = torch.stack([points[out.codes[0] == k].mean(0) for k in range(K)])
    torch.testing.assert_close(vq.codebook, means, rtol=1e-3, atol=1e-3)


def _dead_code_setup(threshold: float, ema: bool = False):
    K, D = 8, 4
    live = torch.tensor([[4.0, 0, 0, 0], [0, 4.0, 0, 0], [0, 0, 4.0, 0], [0, 0, 0, 4.0]])
    vq = VectorQuantizer(num_codes=K, dim=D, ema=ema, init_from_data=False, dead_code_threshold=threshold,
                         usage_decay=0.5).train()
    with torch.no_grad():
        vq.codebook.copy_(torch.cat([live, torch.full((4, D), 100.0) + torch.randn(4, D)]))
        if ema:
            vq.ema_sum.copy_(vq.codebook)

    def batch():
        # 10 points around each live code: every live code gets a quarter of the batch
        pts = (live[:, None, :] + 0.2 * torch.randn(4, 10, D)).reshape(-1, D)
        return pts[torch.randperm(40)].t()[None]  # [1, D, 40]

    return vq, batch


def test_dead_codes_are_reseeded_from_inputs():
    vq, batch = _dead_code_setup(threshold=0.5)
    live_before = vq.codebook.detach()[:4].clone()
    reseeded_total, step = 0, 0
    while reseeded_total == 0:
        step += 1
        assert step <= 10, "dead codes were never re-seeded"
        z = batch()
        out = vq(z)
        assert bool((out.codes < 4).all())  # far codes are never chosen
        reseeded_total += out.reseeded
    # usage_ema of a dead code halves per step: 1/K -> 0.5/K (not < 0.5/K) -> 0.25/K (dead)
    assert step == 2
    assert out.reseeded == 4
    flat = z[0].t()  # this step's inputs [40, D]
    d = _distances(vq.codebook[4:], flat)
    assert float(d.min(dim=1).values.max()) < 1e-5  # re-seeded rows are input vectors
    torch.testing.assert_close(vq.codebook.detach()[:4], live_before, rtol=0, atol=0)  # used: untouched
    # a grace period: re-seeded codes are not declared dead again at once
    torch.testing.assert_close(vq.usage_ema[4:], torch.full((4,), 1.0 / 8))
    assert vq(batch()).reseeded == 0


def test_dead_codes_are_reseeded_in_ema_mode():
    vq, batch = _dead_code_setup(threshold=0.5, ema=True)
    vq(batch())
    z = batch()
    out = vq(z)
    assert out.reseeded == 4
    d = _distances(vq.codebook[4:], z[0].t())
    assert float(d.min(dim=1).values.max()) < 1e-3
    assert float(vq.codebook[4:].abs().max()) < 10  # no longer near the far-away start


def test_dead_code_threshold_zero_disables_reseeding():
    vq, batch = _dead_code_setup(threshold=0.0)
    before = vq.codebook.detach().clone()
    for _ in range(20):
        assert vq(batch()).reseeded == 0
    torch.testing.assert_close(vq.codebook.detach(), before, rtol=0, atol=0)
    # the running usage still tracks the batches: far codes decay towards zero
    assert float(vq.usage_ema[4:].max()) < 1e-5
    torch.testing.assert_close(vq.usage_ema[:4], torch.full((4,), 0.25), rtol=0, atol=0.05)


# --------------------------------------------------------------------------------------------
# WaveNet decoder

HOP = 4
LATENT = 6


def _decoder(kernel_size: int = 2, layers: int = 4, cycles: int = 2, hop: int = HOP) -> WaveNetDecoder:
    dec = WaveNetDecoder(num_speakers=3, latent_dim=LATENT, hop_length=hop, residual_channels=8,
                         gate_channels=16, skip_channels=8, kernel_size=kernel_size, layers=layers,
                         cycles=cycles, local_channels=8, global_channels=4)
    return dec.eval()


def _inputs(batch: int, frames: int, hop: int = HOP):
    inputs = torch.randint(0, 256, (batch, frames * hop))
    latents = torch.randn(batch, LATENT, frames)
    speakers = torch.arange(batch) % 3
    return inputs, latents, speakers


def test_decoder_output_shape_and_length_check():
    dec = _decoder()
    inputs, latents, speakers = _inputs(2, 5)
    logits = dec(inputs, latents, speakers)
    assert logits.shape == (2, 256, 20)
    assert torch.isfinite(logits).all()
    with pytest.raises(ValueError, match="samples"):
        dec(inputs[:, :-1], latents, speakers)
    with pytest.raises(ValueError):
        dec(inputs, latents[:, :, :-1], speakers)
    with pytest.raises(ValueError, match="cycles"):
        WaveNetDecoder(2, layers=5, cycles=2)


@pytest.mark.parametrize("kernel_size,expected_rf", [(2, 1 + (1 + 2) * 2), (3, 1 + 2 * (1 + 2) * 2)])
def test_decoder_receptive_field_property(kernel_size, expected_rf):
    assert _decoder(kernel_size).receptive_field == expected_rf
    # dilations 1, 2, 4, 8 per cycle
    assert _decoder(kernel_size, layers=8, cycles=2).receptive_field == 1 + (kernel_size - 1) * 15 * 2


@pytest.mark.parametrize("kernel_size", [2, 3])
def test_decoder_causality_by_perturbation(kernel_size):
    """Input position s influences exactly outputs s .. s + rf - 1 (latents held fixed); every other
    output is bit-for-bit unchanged."""
    dec = _decoder(kernel_size)
    rf = dec.receptive_field
    frames = 10
    inputs, latents, speakers = _inputs(1, frames)
    length = frames * HOP
    assert length > rf + 5
    with torch.no_grad():
        base = dec(inputs, latents, speakers)
        for s in range(length):
            changed = inputs.clone()
            changed[0, s] = (changed[0, s] + 97) % 256
            diff = (dec(changed, latents, speakers) - base).abs().amax(dim=1)[0]  # [T]
            affected = set(torch.nonzero(diff > 0).flatten().tolist())
            expected = set(range(s, min(s + rf, length)))
            assert affected == expected, (s, sorted(affected))


@pytest.mark.parametrize("kernel_size", [2, 3])
def test_decoder_causality_by_gradient(kernel_size):
    """d logits[..., t] / d embedded input[s] is zero for s > t and for s <= t - rf."""
    dec = _decoder(kernel_size)
    rf = dec.receptive_field
    frames = 8
    inputs, latents, speakers = _inputs(2, frames)
    length = frames * HOP
    captured = {}

    def hook(_module, _args, output):
        output.retain_grad()
        captured["emb"] = output

    handle = dec.input_embedding.register_forward_hook(hook)
    try:
        for t in range(0, length, 3):
            dec.zero_grad()
            logits = dec(inputs, latents, speakers)
            logits[:, :, t].pow(2).sum().backward()
            grad = captured["emb"].grad.abs().amax(dim=2)  # [B, T]
            window = torch.zeros(length, dtype=torch.bool)
            window[max(0, t - rf + 1): t + 1] = True
            if (~window).any():
                assert float(grad[:, ~window].max()) == 0.0, t
            assert bool((grad[:, window] > 0).all()), t
    finally:
        handle.remove()


def test_decoder_docstring_semantics_teacher_forcing():
    """Output t predicts target t; input t is target t-1 (shift right by one from silence)."""
    model = VQVAE.from_config(_tiny_config(), num_speakers=2)
    targets = torch.randint(0, 256, (2, 16))
    inputs = model.decoder.teacher_forcing_inputs(targets)
    assert inputs.shape == targets.shape
    assert inputs[:, 0].tolist() == [128, 128]
    assert torch.equal(inputs[:, 1:], targets[:, :-1])
    # so logits at t may depend on target t-1 (= input t) but never on target t (= input t+1)
    dec = model.decoder.eval()
    latents = torch.randn(2, dec.local_net[0].in_channels, 16 // dec.hop_length)
    speakers = torch.tensor([0, 1])
    t = 9
    changed = targets.clone()
    changed[:, t] = (changed[:, t] + 50) % 256
    with torch.no_grad():
        a = dec(model.decoder.teacher_forcing_inputs(targets), latents, speakers)
        b = dec(model.decoder.teacher_forcing_inputs(changed), latents, speakers)
    assert float((a[:, :, : t + 1] - b[:, :, : t + 1]).abs().max()) == 0.0
    assert float((a[:, :, t + 1] - b[:, :, t + 1]).abs().max()) > 1e-5


def test_decoder_conditioning_changes_output():
    dec = _decoder()
    inputs, latents, _ = _inputs(2, 5)
    with torch.no_grad():
        a = dec(inputs, latents, torch.tensor([0, 0]))
        b = dec(inputs, latents, torch.tensor([1, 0]))
        c = dec(inputs, latents + torch.randn_like(latents), torch.tensor([0, 0]))
    assert float((a[0] - b[0]).abs().max()) > 1e-4   # the speaker matters
    torch.testing.assert_close(a[1], b[1])           # ... per item of the batch
    assert float((a - c).abs().max()) > 1e-4          # the codes matter


def test_decoder_local_conditioning_is_per_frame():
    """Changing only the latents of the last frame leaves samples before frame F-2 unchanged
    (the local net has two kernel-3 convolutions at frame rate) and changes that frame's samples."""
    dec = _decoder()
    frames = 8
    inputs, latents, speakers = _inputs(1, frames)
    changed = latents.clone()
    changed[:, :, -1] += 1.0
    with torch.no_grad():
        diff = (dec(inputs, latents, speakers) - dec(inputs, changed, speakers)).abs().amax(dim=1)[0]
    assert float(diff[: (frames - 3) * HOP].max()) == 0.0
    assert float(diff[(frames - 1) * HOP:].min()) > 1e-6


# --------------------------------------------------------------------------------------------
# incremental generation


def _incremental_logits(dec: WaveNetDecoder, inputs, latents, speakers) -> torch.Tensor:
    local = dec.local_conditioning(latents)
    speaker = dec.speaker_embedding(speakers)
    conds = [layer.conditioning(local, speaker) for layer in dec.layers]
    state = IncrementalState(dec, inputs.shape[0], latents.device, latents.dtype)
    steps = []
    with torch.no_grad():
        for t in range(inputs.shape[1]):
            x = dec.input_embedding(inputs[:, t])
            steps.append(incremental_step(dec, state, x, [c[:, :, t // dec.hop_length] for c in conds]))
    return torch.stack(steps, dim=-1)  # [B, C, T]


@pytest.mark.parametrize("kernel_size", [2, 3])
@pytest.mark.parametrize("layers,cycles", [(4, 2), (6, 3)])
def test_incremental_step_matches_teacher_forced_forward(kernel_size, layers, cycles):
    dec = _decoder(kernel_size, layers=layers, cycles=cycles)
    frames = 12
    inputs, latents, speakers = _inputs(2, frames)
    assert frames * HOP > 2 * dec.receptive_field  # exercise the ring buffers' wrap-around
    with torch.no_grad():
        full = dec(inputs, latents, speakers)
    incremental = _incremental_logits(dec, inputs, latents, speakers)
    assert incremental.shape == full.shape
    torch.testing.assert_close(incremental, full, rtol=1e-4, atol=1e-4)


def test_generate_greedy_is_deterministic_and_self_consistent():
    dec = _decoder(3)
    frames = 6
    _, latents, speakers = _inputs(2, frames)
    a = generate(dec, latents, speakers, temperature=0)
    b = generate(dec, latents, speakers, temperature=0)
    assert a.shape == (2, frames * HOP)
    assert torch.equal(a, b)
    assert float(a.min()) >= -1.0 and float(a.max()) <= 1.0
    # greedy samples are the argmax of the teacher-forced forward fed with themselves
    classes = mu_law_encode(a)
    assert torch.equal(mu_law_decode(classes), a)
    inputs = F.pad(classes[:, :-1], (1, 0), value=dec.classes // 2)
    with torch.no_grad():
        full = dec(inputs, latents, speakers)
    assert torch.equal(full.argmax(dim=1), classes)


def test_generate_sampling_is_reproducible_with_generator():
    dec = _decoder(2)
    frames = 5
    _, latents, speakers = _inputs(2, frames)

    def run(seed):
        return generate(dec, latents, speakers, temperature=1.0, generator=torch.Generator().manual_seed(seed))

    a, b, c = run(1), run(1), run(2)
    assert a.shape == (2, frames * HOP)
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    assert float(a.min()) >= -1.0 and float(a.max()) <= 1.0
    assert a.dtype == torch.float32


# --------------------------------------------------------------------------------------------
# VQ-VAE


def _tiny_config(frontend: str = "mel") -> dict:
    return tiny_model_config(
        f"sample_rate={SR}", "hop_length=8", "num_codes=16", "latent_dim=8", f"encoder.frontend={frontend}",
        "encoder.n_mels=8", "encoder.strides=[2,2,2]", "encoder.channels=16", "decoder.residual_channels=8",
        "decoder.gate_channels=16", "decoder.skip_channels=8", "decoder.layers=4", "decoder.local_channels=8",
        "decoder.global_channels=4")


@pytest.mark.parametrize("frontend", ["mel", "conv"])
def test_vqvae_forward_shapes_and_initial_bits(frontend):
    model = VQVAE.from_config(_tiny_config(frontend), num_speakers=3)
    assert model.hop_length == 8 and model.code_rate_hz == 1000.0
    audio = 0.3 * torch.randn(2, 8 * 20 + 5)  # not a multiple of hop: trimmed to 160
    speakers = torch.tensor([0, 2])
    out = model(audio, speakers)
    assert out.reconstruction.logits.shape == (2, 256, 160)
    assert out.reconstruction.targets.shape == (2, 160)
    assert torch.equal(out.reconstruction.targets, mu_law_encode(audio[:, :160]))
    assert out.vq.codes.shape == (2, 20)
    assert 7.0 < float(out.reconstruction.bits_per_sample) < 9.0
    assert torch.isfinite(out.loss)
    # bits per sample is the mean teacher-forced cross-entropy in bits
    ce = F.cross_entropy(out.reconstruction.logits.detach(), out.reconstruction.targets)
    assert float(out.reconstruction.bits_per_sample) == pytest.approx(float(ce) / math.log(2), rel=1e-5)
    assert out.loss.item() == pytest.approx(float(ce) + out.vq.loss.item(), rel=1e-5)
    assert torch.equal(model.eval().encode(audio[:, :160]), model.quantize(audio[:, :160]).vq.codes)


def test_vqvae_backward_reaches_every_part():
    model = VQVAE.from_config(_tiny_config(), num_speakers=2).train()
    out = model(0.3 * torch.randn(2, 96), torch.tensor([0, 1]))
    assert bool(model.quantizer.initialized)
    out.loss.backward()
    for part in (model.encoder, model.quantizer, model.decoder):
        grads = [p.grad for p in part.parameters() if p.grad is not None]
        assert grads, part
        assert all(torch.isfinite(g).all() for g in grads)
        assert sum(float(g.abs().sum()) for g in grads) > 0, type(part).__name__
    # the straight-through path: the encoder gets gradient from the reconstruction loss alone
    model.zero_grad()
    out = model(0.3 * torch.randn(2, 96), torch.tensor([0, 1]))
    (out.loss - out.vq.loss).backward()
    assert float(model.encoder.output_proj.weight.grad.abs().sum()) > 0


def test_vqvae_mask():
    model = VQVAE.from_config(_tiny_config(), num_speakers=2).eval()  # eval: fixed codebook
    audio = 0.3 * torch.randn(2, 80)
    speakers = torch.tensor([0, 1])
    with torch.no_grad():
        plain = model(audio, speakers)
        ones = model(audio, speakers, mask=torch.ones(2, 80))
        assert float(ones.loss) == pytest.approx(float(plain.loss), rel=1e-6)
        assert float(ones.reconstruction.bits_per_sample) == pytest.approx(float(plain.reconstruction.bits_per_sample), rel=1e-6)

        # a padded batch: the second item has 37 real samples; the mean covers real samples only
        mask = torch.ones(2, 80)
        mask[1, 37:] = 0
        padded = audio.clone()
        padded[1, 37:] = 0
        out = model(padded, speakers, mask=mask)
        nll = F.cross_entropy(out.reconstruction.logits, out.reconstruction.targets, reduction="none")
        expected = float(nll[mask.bool()].mean())
        assert float(out.reconstruction.bits_per_sample) * math.log(2) == pytest.approx(expected, rel=1e-5)
        assert float(out.reconstruction.bits_per_sample) * math.log(2) != pytest.approx(float(nll.mean()), rel=1e-4)
        # mask values are weights: a float mask of 0/1 and a bool mask give the same loss
        as_bool = model(padded, speakers, mask=mask.bool())
        assert float(as_bool.loss) == pytest.approx(float(out.loss), rel=1e-6)

        # mask longer than the trimmed audio is trimmed with it
        longer = model(audio[:, :85], speakers, mask=torch.ones(2, 85))
        assert float(longer.loss) == pytest.approx(float(plain.loss), rel=1e-6)

        # a fully masked batch gives a finite loss (no division by zero)
        empty = model(audio, speakers, mask=torch.zeros(2, 80))
        assert torch.isfinite(empty.loss) and torch.isfinite(empty.reconstruction.bits_per_sample)
        assert float(empty.reconstruction.bits_per_sample) == 0.0


# --------------------------------------------------------------------------------------------
# edge cases of the shape contracts


@pytest.mark.parametrize("frontend", [LogMelFrontend(SR, 8, 8), ConvFrontend(8, [2, 2, 2], 4)],
                         ids=["mel", "conv"])
def test_frontend_shorter_than_one_hop(frontend):
    """Fewer than hop_length samples: T // hop == 0 frames, or a clear ValueError (not a crash
    deep inside torch.stft / conv1d)."""
    for length in (0, 5):
        try:
            out = frontend(torch.zeros(2, length))
        except ValueError as exc:
            assert "hop" in str(exc) or "sample" in str(exc)
        else:
            assert out.shape == (2, frontend.out_channels, 0)


@pytest.mark.parametrize("kernel_size,dilations", [(2, [1, 2]), (4, [1, 2])])
def test_encoder_even_kernel_size(kernel_size, dilations):
    """Residual blocks must preserve the length for every kernel size they accept: an even kernel
    either works or is rejected at construction with a ValueError."""
    try:
        enc = Encoder(SR, 8, n_mels=8, channels=8, latent_dim=4, dilations=dilations, kernel_size=kernel_size)
    except ValueError:
        return
    assert enc(torch.randn(1, 80)).shape == (1, 4, 10)
