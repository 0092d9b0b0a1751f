"""Hierarchical codes (VQ-VAE-2, ``model.top.stride``): shapes, conditioning, chunked encoding,
decoding, and the normal verbs."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from helpers import TINY_VQVAE
from vqspeech.errors import UserError
from vqspeech.checkpoint import upgrade_model_config
from vqspeech.data.codes import Encoding
from vqspeech.inference import VQSpeech
from vqspeech.models.vqvae import VQVAE

pytestmark = pytest.mark.usefixtures("seeded", "one_thread")

TINY = {  # the variants' tiny model, codebooks initialised from data, a top level and a conv decoder
    **TINY_VQVAE,
    "quantizer": {**TINY_VQVAE["quantizer"], "init_from_data": True},
    "top": {"stride": 4, "num_codes": 8, "channels": 16, "dilations": [1, 2]},
    "conv_decoder": {"channels": 16, "upsample_strides": [5, 4, 4], "upsample_kernel_sizes": None,
                     "resblock_kernel_sizes": [3], "resblock_dilations": [[1, 3]], "global_channels": 4},
}


def trained_once(decoder_type: str = "wavenet") -> VQVAE:
    """A tiny hierarchical model whose codebooks were initialised from one batch (so codes vary)."""
    model = VQVAE.from_config({**TINY, "decoder_type": decoder_type}, num_speakers=2).train()
    model(0.1 * torch.randn(2, 120 * 80), torch.tensor([0, 1]))
    return model.eval()


@pytest.mark.parametrize("frames", [36, 37, 39])
def test_both_levels_have_the_right_shapes_and_the_loss_reaches_every_part(frames):
    model = VQVAE.from_config(TINY, num_speakers=2).train()
    out = model(0.1 * torch.randn(2, frames * 80), torch.tensor([0, 1]))
    assert out.vq.codes.shape == (2, frames)
    assert out.top.codes.shape == (2, -(-frames // 4))  # the last top code covers the remainder
    assert out.reconstruction.logits.shape == (2, 256, frames * 80)
    out.loss.backward()
    assert [n for n, p in model.named_parameters() if p.grad is None] == []
    assert model.top.quantizer.codebook.grad.abs().sum() > 0  # the top codebook loss is in the total


def test_one_level_models_are_unchanged_by_the_switch():
    flat = {k: v for k, v in TINY.items() if k != "top"}
    torch.manual_seed(0)
    a = VQVAE.from_config(upgrade_model_config(flat), num_speakers=2)  # a config from before the switch
    torch.manual_seed(0)
    b = VQVAE.from_config({**flat, "top": {**TINY["top"], "stride": 0}}, num_speakers=2)
    assert a.top is None and b.top is None and a.top_stride == 0
    assert a.state_dict().keys() == b.state_dict().keys()
    assert all(torch.equal(a.state_dict()[k], b.state_dict()[k]) for k in a.state_dict())
    with pytest.raises(ValueError):
        VQVAE.from_config({**flat, "top": {**TINY["top"], "stride": 1}}, num_speakers=2)


def test_bottom_codes_and_decoder_depend_on_the_top_codes():
    model = trained_once()
    audio = 0.1 * torch.randn(1, 40 * 80)
    with torch.no_grad():
        q = model.quantize(audio)
        assert torch.allclose(model.embed_codes(q.vq.codes, q.top.codes), q.decoder_input, atol=1e-5)
        other_top = (q.top.codes + 1) % TINY["top"]["num_codes"]
        assert not torch.allclose(model.embed_codes(q.vq.codes, other_top), q.decoder_input)
        # the bottom encoder is conditioned on the top: other top vectors change the bottom codes
        model.top.quantizer.codebook.data = 3 * torch.randn_like(model.top.quantizer.codebook)
        assert not torch.equal(model.quantize(audio).vq.codes, q.vq.codes)
    with pytest.raises(ValueError, match="top codes"):
        model.embed_codes(q.vq.codes)


@pytest.mark.parametrize("chunk", [8, 13, 40])
def test_chunked_encoding_equals_one_pass(chunk):
    vq = VQSpeech(trained_once(), ["a", "b"], {}, torch.device("cpu"))
    audio = 0.1 * np.random.default_rng(0).standard_normal(8000 * 2).astype(np.float32)
    whole = vq.encode(audio, 8000, latents=True, chunk_frames=10_000)
    assert isinstance(whole, Encoding) and len(whole) == 200 and len(whole.top) == 50
    parts = vq.encode(audio, 8000, latents=True, chunk_frames=chunk)
    z, z_parts = whole.latents, parts.latents
    assert np.array_equal(whole.codes, parts.codes) and np.array_equal(whole.top, parts.top)
    assert np.array_equal(z, z_parts) and z.shape == (200, TINY["latent_dim"])
    assert len(np.unique(whole.codes)) > 3 and len(np.unique(whole.top)) > 1


def test_decoding_needs_both_levels_and_batches_do_not_leak_into_each_other():
    vq = VQSpeech(trained_once("conv"), ["a", "b"], {}, torch.device("cpu"))
    rng = np.random.default_rng(0)
    long = vq.encode(0.1 * rng.standard_normal(8000).astype(np.float32), 8000)
    short = Encoding(long.codes[:30], long.top[:8])  # 30 frames: ceil(30 / 4) = 8 top codes
    alone = vq.decode(short, "b")
    together = vq.decode_batch([long, short], ["a", "b"])
    assert together[0].shape == (100 * 80,) and alone.shape == (30 * 80,)
    assert np.array_equal(together[1], alone)  # the long utterance's codes do not reach the short one
    with pytest.raises(UserError, match="two code levels"):
        vq.decode(long.codes, "a")
    with pytest.raises(UserError, match="top codes do not match"):
        vq.decode(Encoding(long.codes, long.top[:-2]), "a")
    with pytest.raises(UserError, match=r"\[0, 8\)"):
        vq.decode(Encoding(long.codes, long.top + 8), "a")


@pytest.mark.slow
def test_hierarchical_model_trains_encodes_decodes_and_converts(demo_manifest, tmp_path):
    """model.top.stride=4 through the normal verbs: train, encode (codes_top/), decode, convert."""
    from conftest import FAST_TRAIN, run_cli

    exp = tmp_path / "hier"
    assert run_cli(["train", exp, *FAST_TRAIN, f"data.manifest={demo_manifest}", "train.max_steps=3",
                    "model.top.stride=4"]) == 0
    summary = json.loads((exp / "train_summary.json").read_text())
    assert summary["step"] == 3 and summary["valid_top_codes_used"] > 0
    codes_dir = tmp_path / "codes"
    assert run_cli(["encode", exp, demo_manifest, codes_dir, "--limit", "4"]) == 0
    meta = json.loads((codes_dir / "codes.json").read_text())
    assert meta["top"]["stride"] == 4 and meta["top"]["code_rate_hz"] == pytest.approx(meta["code_rate_hz"] / 4)
    for path in (codes_dir / "codes").glob("*.npy"):
        top = np.load(codes_dir / "codes_top" / path.name)
        assert len(top) == -(-len(np.load(path)) // 4) and top.max() < meta["top"]["K"]
    out = tmp_path / "decoded"
    assert run_cli(["decode", exp, codes_dir, "-o", out]) == 0
    assert len(list(out.glob("*.wav"))) == 4
    one = sorted((codes_dir / "codes_top").glob("*.npy"))[0]
    one.unlink()  # a folder missing its top level: one sentence, nothing written
    assert run_cli(["decode", exp, codes_dir, "-o", tmp_path / "again"]) == 2
    assert not (tmp_path / "again").exists()
    wav = sorted(out.glob("*.wav"))[0]
    speaker = sorted(set(meta["speakers"].values()))[0]
    assert run_cli(["convert", exp, wav, "--speaker", speaker, "-o", tmp_path / "converted.wav"]) == 0
    assert (tmp_path / "converted.wav").stat().st_size > 44
