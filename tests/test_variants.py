"""The VQ-VAE family's variants, each a config switch on the existing modules."""

from __future__ import annotations

import pytest
import torch

from helpers import TINY_VQVAE as TINY
from vqspeech.models.jitter import TimeJitter
from vqspeech.models.vqvae import VQVAE

# --- time jitter ---------------------------------------------------------------------------------

def test_jitter_is_identity_in_eval_mode_and_at_zero():
    x = torch.randn(2, 3, 50)
    assert torch.equal(TimeJitter(0.5).eval()(x), x)
    assert torch.equal(TimeJitter(0.0).train()(x), x)
    with pytest.raises(ValueError):
        TimeJitter(1.5)


def test_jitter_replaces_frames_by_a_neighbour_at_the_set_rate():
    torch.manual_seed(0)
    frames = 20000
    x = torch.arange(frames, dtype=torch.float32).expand(1, 2, frames)  # frame t holds the value t
    y = TimeJitter(0.3).train()(x)
    assert torch.equal(y[:, 0], y[:, 1])  # one choice per frame, shared by all channels
    offset = y[0, 0] - x[0, 0]
    assert set(offset.unique().tolist()) <= {-1.0, 0.0, 1.0}
    assert abs((offset != 0).float().mean().item() - 0.3) < 0.015
    assert abs((offset == -1).float().mean().item() - 0.15) < 0.01
    # every input frame's gradient is the number of output frames that copied it
    x = torch.randn(1, 1, 30, requires_grad=True)
    TimeJitter(1.0).train()(x).sum().backward()
    assert x.grad.sum().item() == pytest.approx(30.0)


def test_vqvae_jitters_the_decoder_conditioning_in_training_only():
    torch.manual_seed(0)
    model = VQVAE.from_config({**TINY, "jitter": 0.5}, num_speakers=2)
    plain = VQVAE.from_config(TINY, num_speakers=2)
    plain.load_state_dict(model.state_dict())  # the jitter adds no parameters
    audio, speakers = 0.1 * torch.randn(2, 1600), torch.tensor([0, 1])
    model.eval(), plain.eval()
    assert torch.equal(model(audio, speakers).reconstruction.logits, plain(audio, speakers).reconstruction.logits)
    model.train()
    with torch.no_grad():  # codebook = 16 of the latents, so that neighbouring frames differ in code
        latents = model.encoder(audio).permute(0, 2, 1).reshape(-1, TINY["latent_dim"])
        model.quantizer.codebook.data = latents[torch.randperm(len(latents))[:16]].clone()
    assert len(model.encode(audio).unique()) > 3
    torch.manual_seed(1)
    first = model(audio, speakers).loss
    torch.manual_seed(2)
    second = model(audio, speakers).loss
    torch.manual_seed(1)
    assert model(audio, speakers).loss == first != second  # seeded by the global RNG (resumable)
    with pytest.raises(ValueError):
        VQVAE.from_config({**TINY, "jitter": -0.1}, num_speakers=2)


# --- k-means initialisation of the codebook ------------------------------------------------------

def test_kmeans_finds_separated_clusters_and_never_raises_the_error():
    from vqspeech.models.quantizer import kmeans

    torch.manual_seed(0)
    centres = 10 * torch.randn(4, 3)
    x = (centres[:, None] + 0.1 * torch.randn(4, 50, 3)).reshape(-1, 3)
    start = x[torch.tensor([0, 1, 2, 50])]  # three starts in cluster 0, one in cluster 1

    def sse(c):
        return torch.cdist(x, c).min(1).values.pow(2).sum().item()

    found = kmeans(x, start, iters=20)
    errors = [sse(kmeans(x, start, iters=i)) for i in range(6)]
    assert all(b <= a + 1e-6 for a, b in zip(errors, errors[1:]))  # Lloyd never increases it
    assert sse(found) < sse(start)
    # a centroid that gets no points stays put
    far = torch.cat([start[:1], torch.full((1, 3), 1e6)])
    assert torch.equal(kmeans(x, far, iters=3)[1], far[1])


def test_quantizer_kmeans_init_fits_the_first_batch_better_than_sampling():
    from vqspeech.models.quantizer import VectorQuantizer

    torch.manual_seed(0)
    z = torch.randn(4, 8, 200) + 3 * torch.randn(4, 8, 1)  # [B, D, T]
    losses = {}
    for iters in (0, 10):
        torch.manual_seed(1)
        vq = VectorQuantizer(num_codes=16, dim=8, kmeans_iters=iters).train()
        losses[iters] = vq(z).commitment_loss.item()
    assert losses[10] < 0.9 * losses[0]
    with pytest.raises(ValueError):
        VectorQuantizer(kmeans_iters=-1)


def _kmeans_init_rank(rank: int, world: int, port: int, out: str) -> None:
    import torch.distributed as dist

    from vqspeech.models.quantizer import VectorQuantizer

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    torch.manual_seed(rank)  # each rank sees other data and draws other random numbers
    vq = VectorQuantizer(num_codes=8, dim=4, kmeans_iters=5).train()
    vq(torch.randn(2, 4, 50) + rank)
    torch.save(vq.codebook.detach(), f"{out}/codebook{rank}.pt")
    white = VectorQuantizer(num_codes=8, dim=4, whiten=True).train()  # statistics of both ranks' batches
    z = torch.randn(2, 4, 50) * (rank + 1) + rank
    white(z)
    torch.save({"z": z, **{k: v for k, v in white.state_dict().items() if k.startswith("white")}},
               f"{out}/white{rank}.pt")
    dist.destroy_process_group()


def test_kmeans_init_and_whitening_give_every_rank_the_same_codebook(tmp_path):
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(_kmeans_init_rank, args=(2, port, str(tmp_path)), nprocs=2)
    first, second = (torch.load(tmp_path / f"codebook{r}.pt") for r in (0, 1))
    assert torch.equal(first, second)
    white = [torch.load(tmp_path / f"white{r}.pt") for r in (0, 1)]
    for key in ("white_mean", "white_cov", "white_matrix"):  # every rank whitens alike
        assert torch.equal(white[0][key], white[1][key]), key
    both = torch.cat([w["z"].transpose(1, 2).reshape(-1, 4) for w in white]).double()
    torch.testing.assert_close(white[0]["white_mean"].double(), both.mean(0), atol=1e-5, rtol=0)
    torch.testing.assert_close(white[0]["white_cov"].double(), torch.cov(both.t(), correction=0), atol=1e-4, rtol=0)


# --- grouped (product) codebooks -----------------------------------------------------------------

def test_product_quantizer_picks_the_nearest_code_of_each_group():
    from vqspeech.models.quantizer import ProductQuantizer, build_quantizer

    torch.manual_seed(0)
    pq = ProductQuantizer(num_codes=5, dim=6, groups=3, init_from_data=False, dead_code_threshold=0.0).eval()
    z = torch.randn(2, 6, 7)
    out = pq(z)
    assert out.codes.shape == (2, 7, 3) and out.quantized.shape == z.shape and out.usage.shape == (15,)
    for g, quantizer in enumerate(pq.quantizers):
        part = z[:, 2 * g: 2 * g + 2].transpose(1, 2)  # [B, T, 2]
        brute = torch.cdist(part, quantizer.codebook[None].expand(2, -1, -1)).argmin(-1)
        assert torch.equal(out.codes[..., g], brute)
    assert torch.allclose(pq.lookup(out.codes), out.quantized)
    distinct = len(torch.unique(out.codes.reshape(-1, 3), dim=0))
    assert 1 <= out.perplexity.item() <= distinct  # perplexity of the code tuples
    assert isinstance(build_quantizer(8, 4), torch.nn.Module) and not hasattr(build_quantizer(8, 4), "quantizers")
    with pytest.raises(ValueError):
        ProductQuantizer(num_codes=5, dim=6, groups=4)


def test_product_quantizer_gradients_pass_straight_through_to_the_encoder_and_reach_each_codebook():
    from vqspeech.models.quantizer import ProductQuantizer

    torch.manual_seed(0)
    pq = ProductQuantizer(num_codes=4, dim=4, groups=2, init_from_data=False, dead_code_threshold=0.0).train()
    z = torch.randn(1, 4, 10, requires_grad=True)
    out = pq(z)
    (out.quantized * torch.arange(4.0)[None, :, None]).sum().backward(retain_graph=True)
    assert torch.allclose(z.grad, torch.arange(4.0)[None, :, None].expand(1, 4, 10))  # identity Jacobian
    z.grad = None
    out.loss.backward()
    for quantizer in pq.quantizers:  # the codebook loss moves every group's used codes
        assert quantizer.codebook.grad is not None and quantizer.codebook.grad.abs().sum() > 0


def test_the_codebook_digest_covers_every_group_and_the_whitening():
    """A grouped model's codebooks are `quantizer.quantizers.N.codebook`: the digest once matched
    none of them, so codes of any grouped model passed for any other's."""
    import hashlib

    from helpers import tiny_model_config
    from vqspeech.checkpoint import codebook_digest
    from vqspeech.models import VQVAE

    empty = hashlib.sha256().hexdigest()[:16]
    for options in ({"groups": 2}, {"groups": 2, "whiten": True}, {"whiten": True}, {}):
        config = tiny_model_config()
        config["quantizer"] = {**config["quantizer"], **options}
        state = VQVAE.from_config(config, 2).state_dict()
        digest = codebook_digest(state)
        assert digest != empty, options
        for name in [n for n in state if n.startswith("quantizer.") and n.endswith(("codebook", "white_mean"))]:
            changed = {**state, name: state[name] + 1}
            assert codebook_digest(changed) != digest, name
        other = {**state, "quantizer.usage_ema": state["quantizer.usage_ema"] + 1} if "quantizer.usage_ema" in state \
            else dict(state)
        assert codebook_digest(other) == digest  # running usage is not what a code means


@pytest.mark.slow
def test_grouped_codebooks_train_encode_decode_and_probe(demo_manifest, tmp_path):
    """model.quantizer.groups=2 through the normal verbs: train, encode ([T, 2]), decode, probe."""
    import json

    import numpy as np

    from conftest import FAST_TRAIN, run_cli

    exp = tmp_path / "grouped"
    assert run_cli(["train", exp, *FAST_TRAIN, f"data.manifest={demo_manifest}", "train.max_steps=3",
                    "model.quantizer.groups=2"]) == 0
    codes_dir = tmp_path / "codes"
    assert run_cli(["encode", exp, demo_manifest, codes_dir, "--latents", "--limit", "6"]) == 0
    meta = json.loads((codes_dir / "codes.json").read_text())
    one = sorted((codes_dir / "codes").glob("*.npy"))[0]
    codes = np.load(one)
    assert meta["groups"] == 2 and codes.ndim == 2 and codes.shape[1] == 2 and codes.max() < meta["K"]
    assert "-" in (codes_dir / "units.txt").read_text().split()[1]  # one token per code tuple
    assert run_cli(["decode", exp, one, "-o", tmp_path / "out.wav", "--speaker",
                    meta["speakers"][one.stem]]) == 0
    assert (tmp_path / "out.wav").stat().st_size > 44
    probe = tmp_path / "probe.json"
    assert run_cli(["evaluate", "probe", "--codes", codes_dir, "--manifest", demo_manifest, "--out", probe, "--no_abx"]) == 0
    result = json.loads(probe.read_text())
    tuples = len(np.unique(np.concatenate([np.load(p) for p in (codes_dir / "codes").glob("*.npy")]), axis=0))
    assert result["codes_used"] == tuples and result["K"] == tuples
