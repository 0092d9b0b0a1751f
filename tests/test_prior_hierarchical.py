"""Priors over hierarchical (VQ-VAE-2) codes: a top prior over ``codes_top/`` and a bottom prior
conditioned on the top codes. The conditioned models stay strictly causal in the bottom codes, see
every top code, step incrementally as they run in full; training learns a bottom level that only the
top codes explain; sampling draws top then bottom codes. Tiny models on CPU, seeded."""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from conftest import FAST_TRAIN, run_cli
from vqspeech.models import CodePrior, build_prior, sample_codes

K, TOP_K, STRIDE, SPEAKERS = 16, 5, 3, 3
ARCHS = ["wavenet", "transformer"]


def tiny(arch: str, top_codes: int = TOP_K, top_stride: int = STRIDE, **overrides) -> CodePrior:
    """The tiny priors of test_prior_models (transformer context 8), conditioned on top codes."""
    if arch == "wavenet":
        cfg = dict(arch="wavenet", residual_channels=16, gate_channels=32, skip_channels=16,
                   kernel_size=2, layers=4, cycles=1, global_channels=8)
    else:
        cfg = dict(arch="transformer", d_model=32, layers=2, heads=2, context=8)
    return build_prior({**cfg, **overrides}, SPEAKERS, K, top_codes=top_codes, top_stride=top_stride).eval()


def random_batch(batch: int = 3, length: int = 24):
    """codes [B, T], speakers [B], top codes [B, ceil(T / STRIDE)]."""
    return (torch.randint(0, K, (batch, length)), torch.arange(batch) % SPEAKERS,
            torch.randint(0, TOP_K, (batch, math.ceil(length / STRIDE))))


@torch.no_grad()
def stepped_logits(prior: CodePrior, codes: torch.Tensor, speakers: torch.Tensor, top: torch.Tensor):
    """Teacher-forced incremental steps with the top codes given to the state: [B, T] -> [B, T, K]."""
    state = prior.new_state(codes.shape[0], codes.device, top=top)
    steps = [prior.step(state, None if t == 0 else codes[:, t - 1], speakers) for t in range(codes.shape[1])]
    return torch.stack(steps, dim=1)


def differs(a: torch.Tensor, b: torch.Tensor) -> bool:
    """True when every row's logits [B, K] differ."""
    return float((a - b).abs().amax(-1).min()) > 1e-5


# --------------------------------------------------------------------------------------------
# the conditioned models


@pytest.mark.usefixtures("one_thread", "seeded")
class TestConditionedModels:
    @pytest.mark.parametrize("arch", ARCHS)
    @pytest.mark.parametrize("length", [8, 25])  # the transformer: within its window, and beyond it
    @torch.no_grad()
    def test_strictly_causal_in_the_bottom_codes(self, arch, length):
        """logits[:, t] predicts codes[:, t] from codes[:, :t]: changing codes t.. leaves logits
        ..t alone and changes logits t + 1."""
        prior = tiny(arch)
        codes, speakers, top = random_batch(3, length)
        logits = prior(codes, speakers, top)
        assert logits.shape == (3, length, K)
        for t in (0, 1, 4, length - 1):
            changed = codes.clone()
            changed[:, t:] = (changed[:, t:] + 1 + torch.randint(0, K - 1, changed[:, t:].shape)) % K
            other = prior(changed, speakers, top)
            torch.testing.assert_close(other[:, :t + 1], logits[:, :t + 1], atol=1e-6, rtol=0)
            if t + 1 < length:
                assert differs(other[:, t + 1], logits[:, t + 1])

    @pytest.mark.parametrize("arch", ARCHS)
    @torch.no_grad()
    def test_depends_on_the_top_codes_around_each_position(self, arch):
        """Top code j conditions the positions it covers and, through the two k=3 convolutions at
        the top rate, those of top codes j-2 .. j+2 (non-causal); nothing before them."""
        prior = tiny(arch)
        codes, speakers, top = random_batch(3, 30)  # 10 top codes
        logits = prior(codes, speakers, top)
        j = 6
        changed = top.clone()
        changed[:, j] = (changed[:, j] + 1 + torch.randint(0, TOP_K - 1, (3,))) % TOP_K
        other = prior(codes, speakers, changed)
        for t in range(j * STRIDE, (j + 1) * STRIDE):  # the positions top code j covers
            assert differs(other[:, t], logits[:, t])
        assert differs(other[:, (j - 2) * STRIDE], logits[:, (j - 2) * STRIDE])  # looks ahead
        torch.testing.assert_close(other[:, :(j - 2) * STRIDE], logits[:, :(j - 2) * STRIDE],
                                   atol=1e-6, rtol=0)

    @pytest.mark.parametrize("arch", ARCHS)
    @pytest.mark.parametrize("length", [8, 40])  # 40: past the transformer's window, the wavenet's field
    def test_incremental_steps_equal_forward(self, arch, length):
        prior = tiny(arch)
        codes, speakers, top = random_batch(3, length)
        top = torch.cat([top, torch.randint(0, TOP_K, (3, 2))], dim=1)  # longer than needed: cropped
        with torch.no_grad():
            full = prior(codes, speakers, top)
        torch.testing.assert_close(stepped_logits(prior, codes, speakers, top), full, atol=1e-5, rtol=0)

    @pytest.mark.parametrize("arch", ARCHS)
    def test_sampled_log_likelihood_is_the_conditioned_score(self, arch):
        prior = tiny(arch)
        speakers = torch.tensor([0, 1, 2])
        top = torch.randint(0, TOP_K, (3, 7))
        codes, log_likelihood = sample_codes(prior, speakers, 20, top=top, temperature=1.5,
                                             generator=torch.Generator().manual_seed(0))
        assert codes.shape == (3, 20)
        with torch.no_grad():
            logp = prior(codes, speakers, top).log_softmax(-1)
        torch.testing.assert_close(log_likelihood, logp.gather(-1, codes[..., None])[..., 0].sum(-1),
                                   atol=1e-4, rtol=0)
        _, other = sample_codes(prior, speakers, 20, top=(top + 1) % TOP_K,
                                generator=torch.Generator().manual_seed(0))
        assert float((other - log_likelihood).abs().min()) > 1e-4  # the top codes were used

    @pytest.mark.parametrize("arch", ARCHS)
    def test_top_codes_are_required_exactly_when_conditioned(self, arch):
        prior = tiny(arch)
        codes, speakers, top = random_batch(2, 12)
        with pytest.raises(ValueError, match="conditioned on top codes"):
            prior(codes, speakers)
        with pytest.raises(ValueError, match="conditioned on top codes"):
            prior.new_state(2)
        with pytest.raises(ValueError, match="conditioned on top codes"):
            sample_codes(prior, speakers, 5)
        with pytest.raises(ValueError, match="top codes"):  # 4 top codes cover 12 positions, not 13
            sample_codes(prior, speakers, 13, top=top)
        with pytest.raises(ValueError, match="fewer than"):
            prior(torch.randint(0, K, (2, 13)), speakers, top)
        state = prior.new_state(2, top=top[:, :1])
        for _ in range(STRIDE):
            prior.step(state, None, speakers)
        with pytest.raises(ValueError, match="past them"):
            prior.step(state, None, speakers)
        flat = tiny(arch, top_codes=0)
        with pytest.raises(ValueError, match="not conditioned"):
            flat(codes, speakers, top)

    @pytest.mark.parametrize("arch", ARCHS)
    def test_unconditioned_state_dict_and_initial_weights_are_unchanged(self, arch):
        """The conditioning is built after everything else, so an unconditioned prior has the keys
        it always had and the same seed draws the same weights, conditioned or not."""
        torch.manual_seed(0)
        flat = tiny(arch, top_codes=0).state_dict()
        torch.manual_seed(0)
        conditioned = tiny(arch).state_dict()
        assert not any("top" in key for key in flat)
        assert list(conditioned)[:len(flat)] == list(flat)
        assert {k.split(".")[0] for k in list(conditioned)[len(flat):]} == {"top_conditioning"}
        for key in flat:
            assert torch.equal(flat[key], conditioned[key]), key


# --------------------------------------------------------------------------------------------
# data: a synthetic hierarchical codes folder

BOTTOM_K, TOP_CODES, TOP_STRIDE, RATE = 32, 16, 2, 50.0


def write_codes_folder(root: Path, *, hierarchical: bool = True, speakers=("s1", "s2"), num: int = 48,
                       seed: int = 0) -> Path:
    """An encode folder whose top codes are uniform and independent (4 bits each) and whose bottom
    code at frame f is ``perm[2 * top[f // 2] + f % 2]``: given the top codes and the previous code
    (which tells the phase f % 2), the bottom codes are certain; without the top codes, the first
    code of each pair carries the top code's 4 bits, so no prior ignoring them gets below 2 bits per
    code. The unigram is ~5 bits. One utterance in 8 is valid, one test."""
    rng = np.random.default_rng(seed)
    perm = np.random.default_rng(123).permutation(BOTTOM_K)  # the same mapping in every folder
    (root / "codes").mkdir(parents=True)
    if hierarchical:
        (root / "codes_top").mkdir()
    speaker_of, split_of = {}, {}
    for i in range(num):
        uid = f"u{i:03d}"
        frames = int(rng.integers(60, 121))
        top = rng.integers(0, TOP_CODES, math.ceil(frames / TOP_STRIDE))
        f = np.arange(frames)
        np.save(root / "codes" / f"{uid}.npy", perm[TOP_STRIDE * top[f // TOP_STRIDE] + f % TOP_STRIDE]
                .astype(np.int16))
        if hierarchical:
            np.save(root / "codes_top" / f"{uid}.npy", top.astype(np.int16))
        speaker_of[uid] = speakers[i % len(speakers)]
        split_of[uid] = {0: "valid", 1: "test"}.get(i % 8, "train")
    meta = {"code_rate_hz": RATE, "frame_offset_s": 0.5 / RATE, "K": BOTTOM_K,
            "checkpoint": str(root / "no_vqvae.pt"), "sample_rate": 8000, "hop_length": 160,
            "num_utterances": num, "speakers": speaker_of, "splits": split_of}
    if hierarchical:
        meta["top"] = {"code_rate_hz": RATE / TOP_STRIDE, "K": TOP_CODES, "stride": TOP_STRIDE}
    (root / "codes.json").write_text(json.dumps(meta, indent=2))
    return root


def perm_of_folder() -> np.ndarray:
    return np.random.default_rng(123).permutation(BOTTOM_K)


TRANSFORMER = ["prior=transformer", "prior.d_model=32", "prior.layers=2", "prior.heads=2",
               "prior.context=64", "prior.dropout=0.0"]
WAVENET = ["prior=wavenet", "prior.residual_channels=16", "prior.gate_channels=32",
           "prior.skip_channels=16", "prior.layers=4", "prior.cycles=1", "prior.dropout=0.0"]
QUICK = ["device=cpu", "data.crop_frames=32", "train.batch_size=16", "train.log_every=50",
         "train.valid_every=1000", "train.media_every=0", "train.checkpoint_every=1000",
         "train.warmup_steps=10", "train.schedule=constant", "train.lr=3e-3"]


@pytest.fixture(scope="module")
def hier_dir(tmp_path_factory) -> Path:
    return write_codes_folder(tmp_path_factory.mktemp("hier") / "codes")


@pytest.fixture(scope="module")
def flat_dir(tmp_path_factory) -> Path:
    return write_codes_folder(tmp_path_factory.mktemp("flat") / "codes", hierarchical=False)


def test_conditioned_batches_align_top_and_bottom(hier_dir):
    """Crops start at multiples of the stride, and top column i is the top code above crop
    positions i*s .. (i+1)*s - 1 (checked through the folder's bottom = perm[2 top + phase])."""
    from vqspeech.training.prior_task import PriorTask, read_prior_data

    _, utts = read_prior_data(hier_dir)
    train = [u for u in utts if u.split == "train"]
    crop = 96  # longer than some utterances (60-120 codes): padding too
    cfg = {"data": {"crop_frames": crop}, "train": {"batch_size": 16}, "seed": 0}
    prior = build_prior({"arch": "wavenet", "residual_channels": 8, "gate_channels": 8, "skip_channels": 8,
                         "layers": 2, "cycles": 1}, 2, BOTTOM_K, top_codes=TOP_CODES, top_stride=TOP_STRIDE)
    task = PriorTask(prior, cfg, ["s1", "s2"], BOTTOM_K, train, [])
    perm, phase = perm_of_folder(), np.arange(crop) % TOP_STRIDE
    batches = task.batches(0, 0, torch.device("cpu"))
    for _ in range(5):
        codes, _, mask, top = (x.numpy() for x in next(batches))
        assert top.shape == (16, crop // TOP_STRIDE)
        expected = perm[TOP_STRIDE * top[:, np.arange(crop) // TOP_STRIDE] + phase]
        assert np.array_equal(codes[mask], expected[mask])
        assert not mask.all() and mask[:, :60].all()  # short utterances: padding, masked


def test_stride_one_keeps_the_unconditioned_data_order(hier_dir):
    from vqspeech.training.prior_task import PriorTask, read_prior_data

    _, utts = read_prior_data(hier_dir)
    for u in utts:  # one top code per bottom code
        u.top = u.codes % TOP_CODES
    cfg = {"data": {"crop_frames": 32}, "train": {"batch_size": 8}, "seed": 5}
    arch = {"arch": "wavenet", "residual_channels": 8, "gate_channels": 8, "skip_channels": 8,
            "layers": 2, "cycles": 1}
    flat = PriorTask(build_prior(arch, 2, BOTTOM_K), cfg, ["s1", "s2"], BOTTOM_K, utts, [])
    conditioned = PriorTask(build_prior(arch, 2, BOTTOM_K, top_codes=TOP_CODES), cfg, ["s1", "s2"],
                            BOTTOM_K, utts, [])
    a, b = flat.batches(3, 0, torch.device("cpu")), conditioned.batches(3, 0, torch.device("cpu"))
    for _ in range(5):
        x, y = next(a), next(b)
        assert len(x) == 3 and len(y) == 4
        assert all(torch.equal(p, q) for p, q in zip(x, y[:3]))


# --------------------------------------------------------------------------------------------
# training


@pytest.mark.parametrize("arch,settings", [("transformer", TRANSFORMER), ("wavenet", WAVENET)])
def test_conditioned_bottom_prior_learns_what_only_the_top_codes_explain(tmp_path, hier_dir, arch, settings):
    exp = tmp_path / arch
    assert run_cli(["prior", "train", exp, *settings, *QUICK, f"data.codes={hier_dir}",
                    "train.max_steps=150"]) == 0
    summary = json.loads((exp / "train_summary.json").read_text())
    print(arch, summary["valid_bits_per_code"], summary["valid_unigram_bits_per_code"])
    assert summary["valid_unigram_bits_per_code"] > 4.5
    assert summary["valid_bits_per_code"] < 1.0  # below the 2 bits of any prior ignoring the top
    ckpt = torch.load(exp / "checkpoints/last.pt", weights_only=True)
    assert ckpt["level"] == "bottom" and ckpt["num_codes"] == BOTTOM_K
    assert ckpt["top"] == {"num_codes": TOP_CODES, "stride": TOP_STRIDE}
    meta = json.loads((exp / "codes.json").read_text())
    assert meta["code_rate_hz"] == RATE and meta["top"]["stride"] == TOP_STRIDE
    assert "speakers" not in meta and "splits" not in meta


def test_top_level_prior_trains_on_the_top_codes(tmp_path, hier_dir):
    exp = tmp_path / "top"
    assert run_cli(["prior", "train", exp, *TRANSFORMER, *QUICK, f"data.codes={hier_dir}",
                    "data.level=top", "data.crop_frames=33", "train.max_steps=3"]) == 0
    summary = json.loads((exp / "train_summary.json").read_text())
    assert summary["valid_unigram_bits_per_code"] == pytest.approx(math.log2(TOP_CODES), abs=0.3)
    ckpt = torch.load(exp / "checkpoints/last.pt", weights_only=True)
    assert ckpt["level"] == "top" and ckpt["num_codes"] == TOP_CODES and "top" not in ckpt
    assert len(ckpt["data_usage"]) == TOP_CODES
    assert "top_conditioning.embedding.weight" not in ckpt["model"]
    meta = json.loads((exp / "codes.json").read_text())
    assert meta["code_rate_hz"] == RATE / TOP_STRIDE and meta["K"] == TOP_CODES
    assert meta["level"] == "top" and meta["stride"] == TOP_STRIDE and "top" not in meta
    assert meta["hop_length"] == 160 * TOP_STRIDE and meta["bottom"]["code_rate_hz"] == RATE


def test_training_errors_are_one_sentence(tmp_path, hier_dir, flat_dir, capsys):
    assert run_cli(["prior", "train", tmp_path / "a", *QUICK, f"data.codes={hier_dir}",
                    "data.crop_frames=33"]) == 2
    err = capsys.readouterr().err
    assert "data.crop_frames=33 is not a multiple of the top codes' stride 2" in err
    assert "data.crop_frames=34" in err and not (tmp_path / "a" / "config.yaml").exists()
    assert run_cli(["prior", "train", tmp_path / "b", *QUICK, f"data.codes={flat_dir}", "data.level=top"]) == 2
    err = capsys.readouterr().err
    assert "no top level" in err and "data.level=bottom" in err and err.count("\n") == 1
    assert run_cli(["prior", "train", tmp_path / "c", *QUICK, f"data.codes={hier_dir}", "data.level=middle"]) == 2
    assert "data.level='middle' must be bottom or top" in capsys.readouterr().err


# --------------------------------------------------------------------------------------------
# sampling


@pytest.fixture(scope="module")
def priors(tmp_path_factory, hier_dir, flat_dir) -> dict[str, Path]:
    """A bottom prior conditioned on the top codes (trained well enough to follow them), a top
    prior, and a flat prior; all tiny."""
    root = tmp_path_factory.mktemp("priors")
    out = {"bottom": root / "bottom", "top": root / "top", "flat": root / "flat"}
    assert run_cli(["prior", "train", out["bottom"], *TRANSFORMER, *QUICK, f"data.codes={hier_dir}",
                    "train.max_steps=150", "train.media_every=100"]) == 0
    assert run_cli(["prior", "train", out["top"], *TRANSFORMER, *QUICK, f"data.codes={hier_dir}",
                    "data.level=top", "train.max_steps=20"]) == 0
    assert run_cli(["prior", "train", out["flat"], *WAVENET, *QUICK, f"data.codes={flat_dir}",
                    "train.max_steps=2"]) == 0
    assert list((out["bottom"] / "tb").glob("events.*"))  # media: sampling conditioned on top codes
    return out


def test_sample_draws_top_then_bottom_codes(tmp_path, priors, capsys):
    out = tmp_path / "s"
    code = run_cli(["prior", "sample", priors["bottom"], "--top_prior", priors["top"], "-o", out,
                    "--speaker", "s2", "--seconds", "0.3", "--num", "2", "--candidates", "5",
                    "--seed", "1", "--codes_only", "--device", "cpu"])
    assert code == 0, capsys.readouterr().err
    record = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    length, top_length = 15, 8  # 0.3 s at 50 codes/s; ceil(15 / 2)
    assert record["codes_per_sample"] == length and record["top_codes_per_sample"] == top_length
    assert record["stride"] == TOP_STRIDE and record["wavs"] == []
    perm, f = perm_of_folder(), np.arange(length)
    followed = []
    for name in ("sample_00", "sample_01"):
        bottom = np.load(out / "codes" / f"{name}.npy")
        top = np.load(out / "codes_top" / f"{name}.npy")
        assert bottom.shape == (length,) and bottom.dtype == np.int16 and 0 <= bottom.min() <= bottom.max() < BOTTOM_K
        assert top.shape == (top_length,) and 0 <= top.min() <= top.max() < TOP_CODES
        followed.append(np.mean(bottom == perm[TOP_STRIDE * top[f // TOP_STRIDE] + f % TOP_STRIDE]))
    assert np.mean(followed) > 0.8, followed  # the bottom codes follow the drawn top codes
    header, *rows = [line.split("\t") for line in (out / "scores.tsv").read_text().splitlines()]
    assert header == ["candidate", "bits_per_code", "kept", "top_bits_per_top_code", "bottom_bits_per_code"]
    assert len(rows) == 5
    for _, bits, _, top_bits, bottom_bits in rows:  # (top nll + bottom nll) / bottom length
        expected = (float(top_bits) * top_length + float(bottom_bits) * length) / length
        assert float(bits) == pytest.approx(expected, abs=2e-3)
    scores = {kept: float(bits) for _, bits, kept, _, _ in rows}
    assert scores["sample_00"] <= scores["sample_01"] <= min(float(r[1]) for r in rows if r[2] == "-")


def test_sample_decodes_both_levels_together(tmp_path, priors, monkeypatch):
    """The decoder gets an Encoding(codes, top) per kept sample."""
    from vqspeech import inference
    from vqspeech.data.codes import Encoding

    calls = []

    class FakeVQ:  # a two-level VQ-VAE with a trained decoder, as far as prior sample checks
        sample_rate, hop_length = 8000, 160  # the codes' 50 codes per second
        top_stride = 2
        checkpoint, step, checkpoint_digest = None, 7, None
        speakers = ["s1", "s2"]
        model = SimpleNamespace(quantizer=SimpleNamespace(num_codes=BOTTOM_K, num_groups=1),
                                top=SimpleNamespace(num_codes=TOP_CODES, stride=2))

        def require_decoder(self):
            pass

        def speaker_id(self, name):
            return self.speakers.index(name)

        def decode_batch(self, codes, speakers, **kwargs):
            calls.append((codes, speakers))
            return [np.zeros(len(c) * 160, dtype=np.float32) for c in codes]

    monkeypatch.setattr(inference.VQSpeech, "load", classmethod(lambda cls, source, device="auto": FakeVQ()))
    vqvae = tmp_path / "vq.pt"
    vqvae.write_bytes(b"")
    out = tmp_path / "s"
    assert run_cli(["prior", "sample", priors["bottom"], "--top_prior", priors["top"], "-o", out,
                    "--speaker", "s1", "--seconds", "0.1", "--num", "2", "--vqvae", vqvae,
                    "--device", "cpu"]) == 0
    (codes, speakers), = calls
    assert speakers == ["s1", "s1"]
    for i, item in enumerate(codes):
        assert isinstance(item, Encoding) and len(item) == 5 and len(item.top) == 3
        assert np.array_equal(item.codes, np.load(out / "codes" / f"sample_0{i}.npy"))
        assert np.array_equal(item.top, np.load(out / "codes_top" / f"sample_0{i}.npy"))
    assert (out / "sample_01.wav").is_file()


def test_hierarchical_vqvae_codes_to_priors_to_audio(tmp_path, demo_manifest, capsys):
    """The real chain: a (barely trained) two-level VQ-VAE encodes, both priors train on its codes,
    and samples of both levels decode to audio of the requested length."""
    import soundfile as sf

    exp = tmp_path / "vq"
    assert run_cli(["train", exp, *FAST_TRAIN, f"data.manifest={demo_manifest}", "model.top.stride=4",
                    "train.max_steps=3"]) == 0
    assert run_cli(["encode", exp, demo_manifest, exp / "codes"]) == 0
    quick = [*TRANSFORMER, *QUICK, f"data.codes={exp / 'codes'}", "train.max_steps=3"]
    assert run_cli(["prior", "train", exp / "prior_top", *quick, "data.level=top"]) == 0
    assert run_cli(["prior", "train", exp / "prior", *quick]) == 0
    capsys.readouterr()
    out = tmp_path / "samples"
    assert run_cli(["prior", "sample", exp / "prior", "--top_prior", exp / "prior_top", "-o", out,
                    "--speaker", "us_f3", "--seconds", "0.3", "--num", "1", "--device", "cpu"]) == 0, \
        capsys.readouterr().err
    assert np.load(out / "codes/sample_00.npy").shape == (30,)  # 100 codes/s
    assert np.load(out / "codes_top/sample_00.npy").shape == (8,)
    audio, sr = sf.read(out / "sample_00.wav")
    assert sr == 8000 and len(audio) == 30 * 80


def test_top_prior_alone_samples_codes_but_does_not_decode(tmp_path, priors, capsys):
    out = tmp_path / "t"
    assert run_cli(["prior", "sample", priors["top"], "-o", out, "--speaker", "s1", "--seconds", "0.3",
                    "--num", "1", "--codes_only", "--device", "cpu"]) == 0
    record = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert record["level"] == "top" and record["codes_per_sample"] == round(0.3 * RATE / TOP_STRIDE)
    assert np.load(out / "codes" / "sample_00.npy").max() < TOP_CODES
    assert run_cli(["prior", "sample", priors["top"], "-o", tmp_path / "u", "--speaker", "s1",
                    "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert "top codes only" in err and "--codes_only" in err and not (tmp_path / "u").exists()


def test_sampling_errors_are_one_sentence(tmp_path, priors, hier_dir, capsys):
    def fails(*args) -> str:
        assert run_cli(["prior", "sample", *args, "-o", tmp_path / "x", "--speaker", "s1",
                        "--codes_only", "--device", "cpu"]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1, err
        return err

    assert "pass --top_prior" in fails(priors["bottom"])
    assert "--top_prior is only for a bottom prior" in fails(priors["flat"], "--top_prior", priors["top"])
    assert "is not a top-level prior" in fails(priors["bottom"], "--top_prior", priors["bottom"])
    other = write_codes_folder(tmp_path / "other", speakers=("s1", "s3"))  # another speaker list
    assert run_cli(["prior", "train", tmp_path / "top3", *TRANSFORMER, *QUICK, f"data.codes={other}",
                    "data.level=top", "train.max_steps=1"]) == 0
    capsys.readouterr()
    assert "different speaker lists" in fails(priors["bottom"], "--top_prior", tmp_path / "top3")
    same_shape = write_codes_folder(tmp_path / "same_shape", seed=9)  # another model's codes, alike in all else
    assert run_cli(["prior", "train", tmp_path / "top4", *TRANSFORMER, *QUICK, f"data.codes={same_shape}",
                    "data.level=top", "train.max_steps=1"]) == 0
    capsys.readouterr()
    assert "was trained on the codes of another VQ-VAE" in fails(priors["bottom"], "--top_prior", tmp_path / "top4")
    assert not (tmp_path / "x").exists()


# --------------------------------------------------------------------------------------------
# recipes


def test_recipe_prior_stages_train_and_sample_both_levels(tmp_path, hier_dir):
    """Stages 6-7 of the recipes on an encode folder with a top level: stage 6 trains prior_top
    (data.level=top) and prior; stage 7 would sample with --top_prior, but the synthetic folder
    has no VQ-VAE to decode with, so it stops before drawing; sampling the codes alone writes both
    levels. Flat codes go through these stages in test_recipes."""
    recipes = Path(__file__).resolve().parents[1] / "recipes"
    exp = tmp_path / "exp"
    shutil.copytree(hier_dir, exp / "codes")
    script = (f"set -euo pipefail; stage=6 stop_stage=7 force=false exp_dir='{exp}' "
              "prior_arch=transformer prior_steps=2 prior_minutes= targets=s1 num_samples=1 "
              f"sample_seconds=0.2; . '{recipes}/utils/stage.sh'; . '{recipes}/utils/prior_stages.sh'")
    env = dict(os.environ, OMP_NUM_THREADS="1",
               PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    result = subprocess.run(["bash", "-c", script], env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode != 0 and "is not there; pass --vqvae" in result.stderr, result.stderr[-3000:]
    assert (exp / ".stages/6").is_file() and not (exp / ".stages/7").exists()
    top = torch.load(exp / "prior_top/checkpoints/last.pt", weights_only=True)
    assert top["level"] == "top" and top["step"] == 2
    bottom = torch.load(exp / "prior/checkpoints/last.pt", weights_only=True)
    assert bottom["top"] == {"num_codes": TOP_CODES, "stride": TOP_STRIDE} and bottom["step"] == 2
    samples = exp / "prior_samples/s1"
    assert not (samples / "codes").exists()  # the missing VQ-VAE is found before anything is drawn
    assert run_cli(["prior", "sample", exp / "prior", "--top_prior", exp / "prior_top", "--speaker", "s1",
                    "--seconds", "0.2", "--num", "1", "-o", samples, "--codes_only"]) == 0
    assert np.load(samples / "codes/sample_00.npy").shape == (10,)
    assert np.load(samples / "codes_top/sample_00.npy").shape == (5,)
