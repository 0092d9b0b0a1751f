"""The fast C generator against the PyTorch reference: same logits, same argmax samples, seeds."""

from __future__ import annotations

import pytest
import torch

from vqspeech.audio import mu_law_encode
from vqspeech.inference.fast_generate import FastWaveNet
from vqspeech.inference.generate import generate
from vqspeech.models import WaveNetDecoder

HOP = 16


def make_decoder(kernel_size: int, seed: int = 0) -> WaveNetDecoder:
    torch.manual_seed(seed)
    return WaveNetDecoder(num_speakers=3, latent_dim=8, hop_length=HOP, residual_channels=8, gate_channels=16,
                          skip_channels=12, kernel_size=kernel_size, layers=6, cycles=2, local_channels=8,
                          global_channels=4).eval()


@pytest.mark.parametrize("kernel_size", [2, 3])
def test_fast_logits_equal_the_full_forward(kernel_size):
    decoder = make_decoder(kernel_size)
    latents, speakers = torch.randn(3, 8, 5), torch.tensor([0, 2, 1])
    classes, logits = FastWaveNet(decoder, threads=2).generate_classes(
        latents, speakers, generator=torch.Generator().manual_seed(1), return_logits=True)
    assert classes.shape == (3, 5 * HOP) and logits.shape == (3, 5 * HOP, 256)
    inputs = torch.cat([torch.full((3, 1), 128), classes[:, :-1]], dim=1)  # its own samples, teacher-forced
    with torch.no_grad():
        full = decoder(inputs, latents, speakers).transpose(1, 2)
    assert (full - logits).abs().max() < 1e-4
    assert len(classes.unique()) > 10  # sampling, not a constant


def test_fast_argmax_equals_reference_argmax():
    decoder = make_decoder(3, seed=4)
    latents, speakers = torch.randn(2, 8, 4), torch.tensor([1, 0])
    reference = mu_law_encode(generate(decoder, latents, speakers, temperature=0))
    fast = FastWaveNet(decoder).generate_classes(latents, speakers, temperature=0)
    assert torch.equal(reference, fast)


def test_fast_sampling_is_reproducible_and_thread_independent():
    decoder = make_decoder(2)
    latents, speakers = torch.randn(4, 8, 3), torch.tensor([0, 1, 2, 0])

    def run(seed, threads):
        return FastWaveNet(decoder, threads=threads).generate_classes(
            latents, speakers, generator=torch.Generator().manual_seed(seed))

    one_thread = run(7, 1)
    assert torch.equal(one_thread, run(7, 2))
    assert torch.equal(one_thread, run(7, 4))
    assert not torch.equal(one_thread, run(8, 1))
    # a lower temperature concentrates the distribution: fewer distinct classes
    hot = FastWaveNet(decoder).generate_classes(latents, speakers, temperature=1.5,
                                                generator=torch.Generator().manual_seed(0))
    cold = FastWaveNet(decoder).generate_classes(latents, speakers, temperature=0.05,
                                                 generator=torch.Generator().manual_seed(0))
    assert len(cold.unique()) < len(hot.unique())


def test_inference_uses_the_fast_path_on_cpu(trained_tiny):
    from vqspeech.inference import VQSpeech

    vq = VQSpeech.load(trained_tiny, "cpu")
    codes = torch.randint(0, 128, (5,)).numpy()
    audio = vq.decode(codes, vq.speakers[0], temperature=0)
    latents = vq.model.quantizer.lookup(torch.as_tensor(codes, dtype=torch.long)[None])
    speakers = torch.tensor([0])
    reference = generate(vq.model.decoder, latents, speakers, temperature=0)[0].numpy()
    assert audio.shape == reference.shape
    assert (abs(audio - reference) < 1e-6).all()


def test_streaming_in_chunks_equals_one_pass():
    """Generating in chunks of 2 frames gives the same logits and argmax samples as one pass."""
    decoder = make_decoder(3, seed=2)
    latents, speakers = torch.randn(2, 8, 7), torch.tensor([2, 0])
    whole, whole_logits = FastWaveNet(decoder, chunk_frames=64).generate_classes(
        latents, speakers, temperature=0, return_logits=True)
    chunked, chunked_logits = FastWaveNet(decoder, chunk_frames=2).generate_classes(
        latents, speakers, temperature=0, return_logits=True)
    assert torch.equal(whole, chunked)
    assert (whole_logits - chunked_logits).abs().max() < 1e-5


def test_streaming_keeps_the_working_set_bounded(monkeypatch):
    """The conditioning is computed a chunk at a time, however long the input."""
    decoder = make_decoder(2)
    seen = []
    original = decoder.local_conditioning
    monkeypatch.setattr(decoder, "local_conditioning", lambda z: seen.append(z.shape[-1]) or original(z))
    fast = FastWaveNet(decoder, chunk_frames=4)
    out = fast.generate(torch.randn(1, 8, 40), torch.tensor([0]))
    assert out.shape == (1, 40 * HOP)
    assert len(seen) == 10 and max(seen) <= 4 + 2 * 2  # a chunk plus the conditioning's context
