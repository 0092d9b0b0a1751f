"""`vqspeech prior train|sample` on codes of a (briefly trained) VQ-VAE: training learns, resumes
exactly, sampling is reproducible and decodes to audio, errors are one sentence."""

from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile as sf
import torch

from conftest import run_cli

# A small prior, a few steps: seconds per run.
TINY = {
    "transformer": ["prior=transformer", "prior.d_model=32", "prior.layers=2", "prior.heads=2",
                    "prior.context=64", "prior.dropout=0.0"],
    "wavenet": ["prior=wavenet", "prior.residual_channels=16", "prior.gate_channels=32",
                "prior.skip_channels=16", "prior.layers=6", "prior.cycles=1", "prior.dropout=0.0"],
}
QUICK = ["device=cpu", "data.crop_frames=64", "train.batch_size=8", "train.log_every=5",
         "train.valid_every=1000", "train.media_every=0", "train.checkpoint_every=1000",
         "train.warmup_steps=5", "train.schedule=constant", "train.lr=3e-3"]


@pytest.fixture(scope="module")
def codes_dir(tmp_path_factory, trained_tiny, demo_manifest):
    out = tmp_path_factory.mktemp("codes") / "codes"
    assert run_cli(["encode", trained_tiny, demo_manifest, out]) == 0
    meta = json.loads((out / "codes.json").read_text())
    assert set(meta["splits"].values()) == {"train", "valid", "test"}
    return out


@pytest.mark.parametrize("arch", ["transformer", "wavenet"])
def test_prior_learns_and_beats_its_first_steps(tmp_path, codes_dir, arch):
    exp = tmp_path / arch
    assert run_cli(["prior", "train", exp, *TINY[arch], *QUICK, f"data.codes={codes_dir}",
                    "train.max_steps=1"]) == 0
    first = json.loads((exp / "train_summary.json").read_text())
    assert run_cli(["prior", "train", exp, "train.max_steps=80"]) == 0  # resumes to step 80
    last = json.loads((exp / "train_summary.json").read_text())
    assert last["step"] == 80 and last["arch"] == arch
    assert last["valid_bits_per_code"] < first["valid_bits_per_code"] - 0.5
    assert last["valid_unigram_bits_per_code"] == pytest.approx(first["valid_unigram_bits_per_code"])
    assert 0 < last["valid_unigram_bits_per_code"] < 7.0  # log2(128) = 7
    ckpt = torch.load(exp / "checkpoints/last.pt", weights_only=True)
    assert ckpt["kind"] == "prior" and len(ckpt["data_usage"]) == ckpt["num_codes"] == 128


def test_prior_resume_is_exact(tmp_path, codes_dir):
    args = [*TINY["transformer"], *QUICK, f"data.codes={codes_dir}"]
    assert run_cli(["prior", "train", tmp_path / "once", *args, "train.max_steps=8"]) == 0
    assert run_cli(["prior", "train", tmp_path / "twice", *args, "train.max_steps=4"]) == 0
    assert run_cli(["prior", "train", tmp_path / "twice", "train.max_steps=8"]) == 0
    once = torch.load(tmp_path / "once/checkpoints/last.pt", weights_only=True)["model"]
    twice = torch.load(tmp_path / "twice/checkpoints/last.pt", weights_only=True)["model"]
    assert once.keys() == twice.keys()
    for key in once:
        assert torch.equal(once[key], twice[key]), key


@pytest.fixture(scope="module")
def trained_prior(tmp_path_factory, codes_dir):
    exp = tmp_path_factory.mktemp("prior") / "p"
    assert run_cli(["prior", "train", exp, *TINY["wavenet"], *QUICK, f"data.codes={codes_dir}",
                    "train.max_steps=20"]) == 0
    return exp


def test_sample_writes_decodable_wavs_and_keeps_the_likeliest(tmp_path, trained_prior, capsys):
    out = tmp_path / "s"
    code = run_cli(["prior", "sample", trained_prior, "-o", out, "--speaker", "us_f3", "--seconds",
                    "0.3", "--num", "2", "--candidates", "5", "--seed", "3", "--device", "cpu"])
    assert code == 0, capsys.readouterr().err
    record = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert record["codes_per_sample"] == 30 and len(record["wavs"]) == 2
    for name in ("sample_00", "sample_01"):
        codes = np.load(out / "codes" / f"{name}.npy")
        assert codes.shape == (30,) and codes.min() >= 0 and codes.max() < 128
        audio, sr = sf.read(out / f"{name}.wav")
        assert sr == 8000 and len(audio) == 30 * 80 and np.abs(audio).max() > 0
    rows = [line.split("\t") for line in (out / "scores.tsv").read_text().splitlines()[1:]]
    assert len(rows) == 5
    scores = {kept: float(bits) for _, bits, kept in rows}
    others = [float(bits) for _, bits, kept in rows if kept == "-"]
    assert scores["sample_00"] <= scores["sample_01"] <= min(others)
    assert record["kept_bits_per_code"] == [round(scores["sample_00"], 4), round(scores["sample_01"], 4)]


def test_sampling_with_a_seed_is_reproducible(tmp_path, trained_prior):
    def draw(out, seed):
        assert run_cli(["prior", "sample", trained_prior, "-o", out, "--speaker", "us_m1",
                        "--seconds", "0.2", "--num", "2", "--seed", seed, "--codes_only",
                        "--device", "cpu"]) == 0
        return [np.load(out / "codes" / f"sample_0{i}.npy") for i in range(2)]

    a, b, c = draw(tmp_path / "a", 7), draw(tmp_path / "b", 7), draw(tmp_path / "c", 8)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert not all(np.array_equal(x, y) for x, y in zip(a, c))


def test_prior_errors_are_one_sentence(tmp_path, trained_prior, codes_dir, capsys):
    assert run_cli(["prior", "sample", trained_prior, "-o", tmp_path / "x", "--speaker", "nobody"]) == 2
    err = capsys.readouterr().err
    assert "Speaker 'nobody' is unknown" in err and "us_f3" in err
    assert run_cli(["prior", "sample", trained_prior, "-o", tmp_path / "x", "--speaker", "us_f3",
                    "--num", "3", "--candidates", "2"]) == 2
    assert "--candidates (2) must be at least --num (3)" in capsys.readouterr().err
    assert run_cli(["prior", "train", tmp_path / "p", "data.codes=" + str(tmp_path / "none")]) == 2
    assert "holds no codes.json" in capsys.readouterr().err
    assert run_cli(["prior", "train", tmp_path / "p", f"data.codes={codes_dir}", "prior=lstm"]) == 2
    assert "transformer" in capsys.readouterr().err  # lists the available prior configs
    assert run_cli(["prior", "sample", codes_dir, "-o", tmp_path / "y", "--speaker", "a"]) == 2
    assert "is another command's output folder (codes, a corpus, audio), not a model" in capsys.readouterr().err
    assert run_cli(["prior", "sample", tmp_path, "-o", tmp_path / "y", "--speaker", "a"]) == 2
    assert "holds no checkpoints/last.pt" in capsys.readouterr().err


def test_best_validation_checkpoint_is_kept_and_used(tmp_path, codes_dir):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from vqspeech.inference.prior_sampling import load_prior

    exp = tmp_path / "p"
    assert run_cli(["prior", "train", exp, *TINY["wavenet"], *QUICK, f"data.codes={codes_dir}",
                    "train.max_steps=40", "train.valid_every=10", "train.lr=2e-2"]) == 0
    summary = json.loads((exp / "train_summary.json").read_text())
    events = EventAccumulator(str(exp / "tb"))
    events.Reload()
    curve = {e.step: e.value for e in events.Scalars("valid/bits_per_code")}
    best_step = min(curve, key=curve.get)
    assert summary["best_step"] == best_step
    assert summary["best_valid_bits_per_code"] == pytest.approx(curve[best_step], abs=1e-5)
    best = torch.load(exp / "checkpoints/best.pt", weights_only=True)
    assert best["step"] == best_step and best["best_step"] == best_step
    _, loaded, _ = load_prior(exp, "cpu")
    assert loaded["step"] == best_step
