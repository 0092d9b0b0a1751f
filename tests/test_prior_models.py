"""Code priors (WaveNet and transformer): causality, exact receptive fields, cached incremental steps
equal to the full forward, speaker conditioning, sampling, overfitting a Markov chain, configs.
Tiny dimensions on CPU; a few seconds in total."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import yaml
from torch.nn import functional as F

from vqspeech.models import CodePrior, TransformerPrior, WaveNetPrior, build_prior, sample_codes

K, SPEAKERS = 16, 3
CONF = Path(__file__).resolve().parents[1] / "conf" / "prior"


pytestmark = pytest.mark.usefixtures("one_thread", "seeded")


def tiny(arch: str, num_codes: int = K, **overrides) -> CodePrior:
    """Receptive fields: wavenet 1 + (1 + 2 + 4 + 8) = 16 inputs; transformer 2 * (8 - 1) + 1 = 15."""
    if arch == "wavenet":
        cfg = dict(arch="wavenet", residual_channels=16, gate_channels=32, skip_channels=16,
                   kernel_size=2, layers=4, cycles=1, global_channels=8)
    else:
        cfg = dict(arch="transformer", d_model=32, layers=2, heads=2, context=8)
    prior = build_prior({**cfg, **overrides}, SPEAKERS, num_codes)
    return prior.eval()


ARCHS = ["wavenet", "transformer"]


def random_batch(batch: int = 3, length: int = 24):
    return torch.randint(0, K, (batch, length)), torch.arange(batch) % SPEAKERS


# --------------------------------------------------------------------------------------------
# causality and receptive field


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("length", [8, 24])  # the transformer: within its window, and beyond it
@torch.no_grad()
def test_forward_shape_and_strict_causality(arch, length):
    prior = tiny(arch)
    codes, speakers = random_batch(3, length)
    logits = prior(codes, speakers)
    assert logits.shape == (3, length, K)
    for t in (0, 1, 5, length - 1):
        changed = codes.clone()
        changed[:, t:] = (changed[:, t:] + 1 + torch.randint(0, K - 1, changed[:, t:].shape)) % K
        assert bool((changed[:, t:] != codes[:, t:]).all())
        other = prior(changed, speakers)
        torch.testing.assert_close(other[:, :t + 1], logits[:, :t + 1], atol=1e-6, rtol=0)
        if t + 1 < length:  # codes[:, t] is the input that predicts codes[:, t + 1]
            assert float((other[:, t + 1] - logits[:, t + 1]).abs().amax(-1).min()) > 1e-4


@pytest.mark.parametrize("arch", ARCHS)
def test_gradient_reaches_only_earlier_codes(arch):
    prior = tiny(arch)
    codes, speakers = random_batch(2, 20)
    embedded = {}

    def keep(module, inputs, output):
        output.retain_grad()
        embedded["x"] = output

    handle = prior.code_embedding.register_forward_hook(keep)
    t = 11
    prior(codes, speakers)[:, t].square().sum().backward()
    handle.remove()
    # input position s holds codes[:, s - 1] (position 0 is the start token)
    grad = embedded["x"].grad.abs().sum(-1)  # [B, T]
    assert bool((grad[:, t + 1:] == 0).all())          # codes t, t+1, ... do not influence logits t
    assert bool((grad[:, max(0, t + 1 - prior.receptive_field):t + 1] > 0).all())


@pytest.mark.parametrize("arch", ARCHS)
@torch.no_grad()
def test_receptive_field_is_exact(arch):
    prior = tiny(arch)
    rf = prior.receptive_field
    assert rf == (16 if arch == "wavenet" else 15)
    length = rf + 10
    codes, speakers = random_batch(2, length)
    logits = prior(codes, speakers)
    t = length - 1
    # logits t sees input positions t - rf + 1 .. t, i.e. codes t - rf .. t - 1
    far = codes.clone()
    far[:, :t - rf] = (far[:, :t - rf] + 3) % K
    torch.testing.assert_close(prior(far, speakers)[:, t], logits[:, t], atol=1e-6, rtol=0)
    edge = codes.clone()
    edge[:, t - rf] = (edge[:, t - rf] + 3) % K
    assert float((prior(edge, speakers)[:, t] - logits[:, t]).abs().amax(-1).min()) > 1e-6


@pytest.mark.parametrize("arch", ARCHS)
@torch.no_grad()
def test_speaker_changes_logits(arch):
    prior = tiny(arch)
    codes = torch.randint(0, K, (1, 12)).expand(SPEAKERS, -1)
    logits = prior(codes, torch.arange(SPEAKERS))
    for a in range(SPEAKERS):
        for b in range(a + 1, SPEAKERS):
            assert float((logits[a] - logits[b]).abs().amax(-1).min()) > 1e-4  # at every position


# --------------------------------------------------------------------------------------------
# incremental steps


@torch.no_grad()
def stepped_logits(prior: CodePrior, codes: torch.Tensor, speakers: torch.Tensor) -> torch.Tensor:
    """Teacher-forced incremental steps: [B, T] -> logits [B, T, K]."""
    state = prior.new_state(codes.shape[0], codes.device)
    steps = [prior.step(state, None if t == 0 else codes[:, t - 1], speakers) for t in range(codes.shape[1])]
    return torch.stack(steps, dim=1)


@pytest.mark.parametrize("arch", ARCHS)
def test_incremental_steps_equal_forward(arch):
    """Up to the transformer's window, and for the WaveNet well past its receptive field (the ring
    buffers wrap around several times)."""
    prior = tiny(arch)
    length = 8 if arch == "transformer" else 50
    codes, speakers = random_batch(3, length)
    with torch.no_grad():
        full = prior(codes, speakers)
    torch.testing.assert_close(stepped_logits(prior, codes, speakers), full, atol=1e-5, rtol=0)


def test_transformer_sliding_window_steps():
    """Past ``context`` the cache keeps the last ``context`` entries; forward on longer inputs uses the
    same banded window, so the two still agree. Far past the window, logits stay finite."""
    prior = tiny("transformer")
    codes, speakers = random_batch(2, 40)  # 5 windows
    with torch.no_grad():
        full = prior(codes, speakers)
    stepped = stepped_logits(prior, codes, speakers)
    torch.testing.assert_close(stepped, full, atol=1e-5, rtol=0)
    # a window of 8 differs from full causal attention over 40 positions
    unwindowed = tiny("transformer", context=64)
    unwindowed.load_state_dict(prior.state_dict())
    with torch.no_grad():
        assert float((unwindowed(codes, speakers)[:, 20:] - full[:, 20:]).abs().max()) > 1e-3
    _, log_likelihood = sample_codes(prior, speakers, 300)
    assert bool(torch.isfinite(log_likelihood).all())


@pytest.mark.parametrize("arch", ARCHS)
def test_first_step_is_the_start_token(arch):
    prior = tiny(arch)
    speakers = torch.arange(SPEAKERS)
    with torch.no_grad():
        first = prior.step(prior.new_state(SPEAKERS), None, speakers)
        full = prior(torch.randint(0, K, (SPEAKERS, 5)), speakers)
    torch.testing.assert_close(first, full[:, 0], atol=1e-5, rtol=0)


# --------------------------------------------------------------------------------------------
# sampling


def sequence_log_likelihood(prior: CodePrior, codes: torch.Tensor, speakers: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        logp = prior(codes, speakers).log_softmax(-1)
    return logp.gather(-1, codes[..., None])[..., 0].sum(-1)


@pytest.mark.parametrize("arch", ARCHS)
def test_sample_codes_shape_range_and_seed(arch):
    prior = tiny(arch)
    speakers = torch.tensor([0, 1, 2, 0])

    def draw(seed, **kw):
        return sample_codes(prior, speakers, 30, generator=torch.Generator().manual_seed(seed), **kw)

    codes, log_likelihood = draw(1)
    assert codes.shape == (4, 30) and codes.dtype == torch.long
    assert int(codes.min()) >= 0 and int(codes.max()) < K
    assert log_likelihood.shape == (4,) and bool((log_likelihood < 0).all())
    again, again_ll = draw(1)
    assert torch.equal(codes, again) and torch.equal(log_likelihood, again_ll)
    assert not torch.equal(codes, draw(2)[0])
    assert not prior.training


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("kwargs", [dict(), dict(temperature=0.5), dict(temperature=1.5, top_k=4),
                                    dict(temperature=0.0)])
def test_sampled_log_likelihood_is_untempered_model_score(arch, kwargs):
    prior = tiny(arch)
    speakers = torch.tensor([0, 1, 2])
    codes, log_likelihood = sample_codes(prior, speakers, 40, generator=torch.Generator().manual_seed(0),
                                         **kwargs)
    torch.testing.assert_close(log_likelihood, sequence_log_likelihood(prior, codes, speakers),
                               atol=1e-4, rtol=0)


@pytest.mark.parametrize("arch", ARCHS)
def test_sampling_runs_in_eval_mode(arch):
    prior = tiny(arch, dropout=0.5).train()
    speakers = torch.tensor([0, 1, 2])
    codes, log_likelihood = sample_codes(prior, speakers, 20, generator=torch.Generator().manual_seed(0))
    assert prior.training  # restored
    prior.eval()
    torch.testing.assert_close(log_likelihood, sequence_log_likelihood(prior, codes, speakers),
                               atol=1e-4, rtol=0)


@pytest.mark.parametrize("arch", ARCHS)
def test_greedy_and_top1_sampling_are_argmax(arch):
    prior = tiny(arch)
    speakers = torch.tensor([0, 1, 2])
    greedy, _ = sample_codes(prior, speakers, 25, temperature=0.0)
    with torch.no_grad():
        assert torch.equal(prior(greedy, speakers).argmax(-1), greedy)  # each code is the argmax given its past
    assert torch.equal(sample_codes(prior, speakers, 25, temperature=0.0)[0], greedy)
    top1, _ = sample_codes(prior, speakers, 25, top_k=1, generator=torch.Generator().manual_seed(3))
    assert torch.equal(top1, greedy)


@pytest.mark.parametrize("arch", ARCHS)
def test_top_k_restricts_support(arch):
    prior = tiny(arch)
    speakers = torch.zeros(64, dtype=torch.long)
    codes, _ = sample_codes(prior, speakers, 1, temperature=2.0, top_k=3,
                            generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        allowed = prior.step(prior.new_state(1), None, speakers[:1]).topk(3).indices[0]
    assert set(codes[:, 0].tolist()) == set(allowed.tolist())  # 64 draws: all three, nothing else


# --------------------------------------------------------------------------------------------
# learning


def markov_chains(num_codes: int, generator: torch.Generator) -> torch.Tensor:
    """One chain per speaker: code c is followed by one of two successors, equally likely (1 bit per
    code). Returns successors [S, K, 2]."""
    return torch.stack([torch.randperm(num_codes, generator=generator)[:, None] + torch.tensor([0, 1])
                        for _ in range(SPEAKERS)]) % num_codes


def markov_codes(successors: torch.Tensor, batch: int, length: int, generator: torch.Generator):
    """Sequences [batch, length] drawn from the chains, speakers [batch]."""
    num_codes = successors.shape[1]
    speakers = torch.randint(0, SPEAKERS, (batch,), generator=generator)
    codes = torch.empty(batch, length, dtype=torch.long)
    codes[:, 0] = torch.randint(0, num_codes, (batch,), generator=generator)
    for t in range(1, length):
        choice = torch.randint(0, 2, (batch,), generator=generator)
        codes[:, t] = successors[speakers, codes[:, t - 1], choice]
    return codes, speakers


def bits_per_code(prior: CodePrior, codes: torch.Tensor, speakers: torch.Tensor) -> float:
    with torch.no_grad():
        return float(F.cross_entropy(prior(codes, speakers).transpose(1, 2), codes)) / math.log(2)


@pytest.mark.parametrize("arch", ARCHS)
def test_tiny_prior_learns_speaker_markov_chains(arch):
    num_codes, length = 32, 32
    gen = torch.Generator().manual_seed(0)
    chains = markov_chains(num_codes, gen)
    codes, speakers = markov_codes(chains, 512, length, gen)
    held_out, held_out_speakers = markov_codes(chains, 48, length, gen)
    counts = torch.bincount(codes.flatten(), minlength=num_codes).float()
    unigram_bits = float(-(counts / counts.sum() * (counts / counts.sum()).clamp_min(1e-12).log2()).sum())
    assert unigram_bits > 4.5  # close to log2(32) = 5
    best = (math.log2(num_codes) + (length - 1) * 1.0) / length  # the first code is uniform, then 1 bit
    prior = tiny(arch, num_codes=num_codes).train()
    start = bits_per_code(prior, codes, speakers)
    optimizer = torch.optim.Adam(prior.parameters(), lr=1e-2 if arch == "wavenet" else 3e-3)
    for step in range(150):
        batch = torch.randint(0, codes.shape[0], (32,), generator=gen)
        loss = F.cross_entropy(prior(codes[batch], speakers[batch]).transpose(1, 2), codes[batch])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    prior.eval()
    bits = bits_per_code(prior, held_out, held_out_speakers)  # fresh sequences: structure, not memory
    print(f"{arch}: {start:.2f} -> {bits:.2f} bits per code on held-out data (best {best:.2f}, unigram "
          f"{unigram_bits:.2f})")
    assert start > 4.5 and bits < best + 0.5, (start, bits)
    # it uses the speaker: the same codes scored as another speaker's are much less likely
    assert bits_per_code(prior, held_out, (held_out_speakers + 1) % SPEAKERS) > bits + 1.0


# --------------------------------------------------------------------------------------------
# configs


@pytest.mark.parametrize("name,cls", [("wavenet", WaveNetPrior), ("transformer", TransformerPrior)])
def test_build_prior_from_shipped_configs(name, cls):
    from omegaconf import OmegaConf

    cfg = yaml.safe_load((CONF / f"{name}.yaml").read_text())
    assert cfg["arch"] == name
    prior = build_prior(cfg, num_speakers=4, num_codes=128)
    assert type(prior) is cls and prior.num_codes == 128 and prior.num_speakers == 4
    assert 300_000 < prior.num_parameters() < 2_000_000
    assert prior.num_parameters() == sum(p.numel() for p in prior.parameters())
    assert prior.receptive_field >= 200  # at least two seconds of codes at 100 codes/s
    # an OmegaConf node works as well as a dict
    again = build_prior(OmegaConf.load(CONF / f"{name}.yaml"), num_speakers=4, num_codes=128)
    assert again.num_parameters() == prior.num_parameters()
    prior.eval()
    codes, speakers = torch.randint(0, 128, (2, 50)), torch.tensor([0, 3])
    assert prior(codes, speakers).shape == (2, 50, 128)
    codes, log_likelihood = sample_codes(prior, speakers, 5, generator=torch.Generator().manual_seed(0))
    assert codes.shape == (2, 5) and bool(torch.isfinite(log_likelihood).all())


def test_build_prior_rejects_unknown_arch():
    with pytest.raises(ValueError, match="unknown prior arch"):
        build_prior({"arch": "lstm"}, 2, 8)
    with pytest.raises(ValueError):
        tiny("wavenet", layers=5, cycles=2)
    with pytest.raises(ValueError):
        tiny("transformer", d_model=30, heads=4)
