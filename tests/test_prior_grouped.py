"""Priors over grouped codes (``model.quantizer.groups`` G > 1): a step's code is a tuple [G],
predicted one group after the other."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import FAST_TRAIN, run_cli
from vqspeech.models import CodePrior, build_prior, sample_codes

K, G, SPEAKERS = 6, 2, 3
ARCHS = ["wavenet", "transformer"]


def tiny(arch: str, groups: int = G) -> CodePrior:
    if arch == "wavenet":
        cfg = dict(arch="wavenet", residual_channels=16, gate_channels=32, skip_channels=16,
                   kernel_size=2, layers=4, cycles=1, global_channels=8)
    else:
        cfg = dict(arch="transformer", d_model=32, layers=2, heads=2, context=8)
    prior = build_prior(cfg, SPEAKERS, K, groups=groups).eval()
    with torch.no_grad():  # larger weights than the transformer's 0.02 init, so that changes show
        for p in prior.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return prior


@pytest.mark.usefixtures("one_thread", "seeded")
class TestGroupedModels:
    @pytest.mark.parametrize("arch", ARCHS)
    def test_each_code_sees_only_the_past_and_the_earlier_groups_of_its_step(self, arch):
        prior = tiny(arch)
        codes, speakers = torch.randint(0, K, (2, 12, G)), torch.tensor([0, 2])
        logits = prior(codes, speakers)
        assert logits.shape == (2, 12, G, K)
        t = 6
        second = codes.clone()
        second[:, t, 1] = (second[:, t, 1] + 1) % K  # group 1 of step t: later steps only
        changed = prior(second, speakers)
        assert torch.equal(changed[:, : t + 1], logits[:, : t + 1])
        assert not torch.allclose(changed[:, t + 1], logits[:, t + 1])
        first = codes.clone()
        first[:, t, 0] = (first[:, t, 0] + 1) % K  # group 0 of step t: group 1 of step t, and later
        changed = prior(first, speakers)
        assert torch.equal(changed[:, :t], logits[:, :t]) and torch.equal(changed[:, t, 0], logits[:, t, 0])
        assert not torch.allclose(changed[:, t, 1], logits[:, t, 1])

    @pytest.mark.parametrize("arch", ARCHS)
    def test_incremental_steps_equal_forward_and_sampling_scores_its_draws(self, arch):
        prior = tiny(arch)
        codes, speakers = torch.randint(0, K, (2, 12, G)), torch.tensor([1, 2])  # past the context of 8
        state, prev, steps = prior.new_state(2), None, []
        with torch.no_grad():
            for t in range(12):
                hidden = prior.step_hidden(state, prev, speakers)
                steps.append(torch.stack([prior.group_logits(hidden, codes[:, t], g) for g in range(G)], 1))
                prev = codes[:, t]
            assert torch.allclose(torch.stack(steps, 1), prior(codes, speakers), atol=1e-5)
        drawn, loglik = sample_codes(prior, speakers, 10, generator=torch.Generator().manual_seed(0))
        assert drawn.shape == (2, 10, G) and drawn.max() < K
        expected = prior(drawn, speakers).log_softmax(-1).gather(-1, drawn[..., None]).sum((1, 2, 3))
        assert torch.allclose(loglik, expected, atol=1e-4)
        with pytest.raises(ValueError, match="one group at a time"):
            prior.step(prior.new_state(2), None, speakers)

    @pytest.mark.parametrize("arch", ARCHS)
    def test_single_codebook_priors_are_unchanged(self, arch):
        cfg = {"arch": "wavenet", "layers": 2, "cycles": 1} if arch == "wavenet" else \
            {"arch": "transformer", "d_model": 16, "layers": 1, "heads": 2}
        torch.manual_seed(0)
        flat = build_prior(cfg, SPEAKERS, K)
        torch.manual_seed(0)
        one = build_prior(cfg, SPEAKERS, K, groups=1)
        assert flat.state_dict().keys() == one.state_dict().keys() and one.group_embedding is None
        assert all(torch.equal(flat.state_dict()[k], one.state_dict()[k]) for k in flat.state_dict())
        grouped = build_prior(cfg, SPEAKERS, K, groups=2)
        assert set(grouped.state_dict()) - set(flat.state_dict()) == {"group_embedding.weight"}


# --------------------------------------------------------------------------------------------
# training and sampling on a synthetic grouped codes folder


def write_grouped_folder(root: Path, num: int = 48, seed: int = 0) -> Path:
    """Codes [T, 2]: group 0 is uniform and independent (log2 8 = 3 bits), group 1 is a fixed
    permutation of group 0 in the same step. A prior that models the tuple jointly needs 3 bits per
    step; one whose groups ignored each other (or the unigram, ~6 bits) could not get below 6."""
    rng = np.random.default_rng(seed)
    perm = np.random.default_rng(7).permutation(8)
    (root / "codes").mkdir(parents=True)
    speakers, splits = {}, {}
    for i in range(num):
        uid = f"u{i:03d}"
        first = rng.integers(0, 8, int(rng.integers(60, 121)))
        np.save(root / "codes" / f"{uid}.npy", np.stack([first, perm[first]], axis=1).astype(np.int16))
        speakers[uid] = ("s1", "s2")[i % 2]
        splits[uid] = {0: "valid", 1: "test"}.get(i % 8, "train")
    meta = {"code_rate_hz": 50.0, "frame_offset_s": 0.01, "K": 8, "groups": 2, "checkpoint": "none.pt",
            "sample_rate": 8000, "hop_length": 160, "num_utterances": num, "speakers": speakers,
            "splits": splits}
    (root / "codes.json").write_text(json.dumps(meta))
    return root


QUICK = ["prior=transformer", "prior.d_model=32", "prior.layers=2", "prior.heads=2", "prior.context=64",
         "prior.dropout=0.0", "device=cpu", "data.crop_frames=32", "train.batch_size=16",
         "train.log_every=50", "train.valid_every=1000", "train.media_every=0",
         "train.checkpoint_every=1000", "train.warmup_steps=10", "train.schedule=constant", "train.lr=3e-3"]


def test_grouped_prior_learns_the_joint_distribution_of_a_step(tmp_path, capsys):
    codes = write_grouped_folder(tmp_path / "codes")
    exp = tmp_path / "prior"
    assert run_cli(["prior", "train", exp, *QUICK, f"data.codes={codes}", "train.max_steps=150"]) == 0
    summary = json.loads((exp / "train_summary.json").read_text())
    assert summary["valid_unigram_bits_per_code"] > 5.5  # two independent 3-bit unigrams
    assert summary["valid_bits_per_code"] < 3.6  # the 3 bits of group 0; group 1 is then certain
    ckpt = torch.load(exp / "checkpoints/last.pt", weights_only=True)
    assert ckpt["groups"] == 2 and len(ckpt["data_usage"]) == 16
    capsys.readouterr()
    out = tmp_path / "samples"
    assert run_cli(["prior", "sample", exp, "-o", out, "--speaker", "s1", "--seconds", "0.4", "--num", "2",
                    "--codes_only", "--device", "cpu"]) == 0
    drawn = np.load(out / "codes/sample_00.npy")
    perm = np.random.default_rng(7).permutation(8)
    assert drawn.shape == (20, 2) and drawn.dtype == np.int16
    assert (perm[drawn[:, 0]] == drawn[:, 1]).mean() > 0.9  # the tuples follow the data's pairing


def test_grouped_vqvae_codes_to_prior_to_audio(tmp_path, demo_manifest):
    """The real chain: a (barely trained) VQ-VAE with 2 codebooks encodes, a prior trains on its
    code tuples, and its samples decode."""
    import soundfile as sf

    exp = tmp_path / "vq"
    assert run_cli(["train", exp, *FAST_TRAIN, f"data.manifest={demo_manifest}", "model.quantizer.groups=2",
                    "train.max_steps=3"]) == 0
    assert run_cli(["encode", exp, demo_manifest, exp / "codes"]) == 0
    assert run_cli(["prior", "train", exp / "prior", *QUICK, f"data.codes={exp / 'codes'}",
                    "train.max_steps=3"]) == 0
    out = tmp_path / "samples"
    assert run_cli(["prior", "sample", exp / "prior", "-o", out, "--speaker", "us_f3", "--seconds", "0.3",
                    "--num", "1", "--device", "cpu"]) == 0
    assert np.load(out / "codes/sample_00.npy").shape == (30, 2)
    audio, sr = sf.read(out / "sample_00.wav")
    assert sr == 8000 and len(audio) == 30 * 80 and math.isfinite(float(np.abs(audio).max()))
