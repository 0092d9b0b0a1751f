"""Inference on long inputs: chunked encoding equals one pass, for both encoder front ends and a
normalising encoder (whose chunks get the whole utterance's statistics)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from vqspeech.config import compose
from vqspeech.inference import VQSpeech
from vqspeech.models import VQVAE


def tiny_model(frontend: str, normalize: bool = False) -> VQSpeech:
    cfg = compose(["model=tiny", "data.manifest=unused", f"model.encoder.frontend={frontend}",
                   f"model.encoder.normalize={str(normalize).lower()}"])["model"]
    torch.manual_seed(0)
    model = VQVAE.from_config(cfg, num_speakers=2)
    model.quantizer.initialized.fill_(True)
    return VQSpeech(model, ["a", "b"], {"model": cfg}, torch.device("cpu"))


@pytest.mark.parametrize("frontend,normalize", [("mel", False), ("conv", False), ("mel", True)])
def test_chunked_encoding_equals_one_pass(frontend, normalize):
    vq = tiny_model(frontend, normalize)
    rng = np.random.default_rng(0)
    audio = (0.1 * rng.standard_normal(8000 * 3)).astype(np.float32)  # 3 s, 300 frames
    one = vq.encode(audio, 8000, latents=True, chunk_frames=10_000)
    chunked = vq.encode(audio, 8000, latents=True, chunk_frames=7)
    one_codes, one_latents, codes, latents = one.codes, one.latents, chunked.codes, chunked.latents
    assert latents.shape == one_latents.shape == (300, 16)
    np.testing.assert_allclose(latents, one_latents, atol=1e-4)
    assert (codes == one_codes).mean() > 0.99  # equal but for near-ties of the nearest code
    # and the chunks are honestly smaller: the margin is far below the 300 frames
    assert vq.model.encoder.context_frames < 30


def test_chunking_does_not_cross_the_margin_unchecked():
    """A context too small would show: cutting the margin changes the latents near chunk edges."""
    vq = tiny_model("mel")
    audio = (0.1 * np.random.default_rng(1).standard_normal(8000)).astype(np.float32)
    whole = vq.encode(audio, 8000, latents=True, chunk_frames=10_000).latents
    encoder = vq.model.encoder
    real = type(encoder).context_frames
    try:
        type(encoder).context_frames = property(lambda self: 0)
        cut = vq.encode(audio, 8000, latents=True, chunk_frames=7).latents
    finally:
        type(encoder).context_frames = real
    assert np.abs(cut - whole).max() > 1e-3


def test_a_normalising_encoder_ignores_the_level():
    """Per-utterance mean and variance normalisation of the log-mel features: a gain is a constant
    offset of every log-mel channel, which the mean removes; an encoder without it sees the level."""
    rng = np.random.default_rng(1)
    audio = (0.1 * rng.standard_normal(8000)).astype(np.float32)
    quieter = 0.25 * audio
    normalised, plain = tiny_model("mel", normalize=True), tiny_model("mel")

    def latents(vq, x):  # the model itself, without the API's level normalisation
        with torch.no_grad():
            return vq.model.quantize(torch.from_numpy(x)[None], None).latents.numpy()

    np.testing.assert_allclose(latents(normalised, quieter), latents(normalised, audio), atol=1e-3)
    assert not np.allclose(latents(plain, quieter), latents(plain, audio), atol=1e-2)
    # the API brings every input to prepare's level first, so even a plain encoder's codes ignore the gain
    np.testing.assert_allclose(plain.encode(quieter, 8000, latents=True).latents,
                               plain.encode(audio, 8000, latents=True).latents, atol=1e-3)
