"""Training and using the conv (adversarial) decoder: `model.decoder_type=conv` + `train.adversarial`."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from conftest import FAST_TRAIN, run_cli
from vqspeech.checkpoint import load_checkpoint
from vqspeech.config import compose
from vqspeech.errors import UserError
from vqspeech.checkpoint import upgrade_model_config
from vqspeech.training.vqvae_task import train_vqvae
from vqspeech.inference import VQSpeech
from vqspeech.models import VQVAE

CONV = [*FAST_TRAIN, "model.decoder_type=conv", "train.batch_size=4", "train.crop_seconds=0.25",
        "train.log_every=1", "train.schedule=constant", "train.warmup_steps=0", "train.lr=2e-3"]


def last_checkpoint(exp: Path) -> dict:
    return torch.load(exp / "checkpoints" / "last.pt", map_location="cpu", weights_only=True)


def scalars(exp: Path) -> dict[str, list[int]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(exp / "tb"), size_guidance={"scalars": 0})
    acc.Reload()
    return {tag: [e.step for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


@pytest.fixture(scope="module")
def conv_exp(tmp_path_factory, demo_manifest) -> Path:
    """A tiny conv-decoder model trained 4 steps, the discriminator on after 2 (read-only!)."""
    exp = tmp_path_factory.mktemp("conv") / "exp"
    assert run_cli(["train", exp, *CONV, f"data.manifest={demo_manifest}", "train.max_steps=4",
                    "train.adversarial.warmup_steps=2", "train.valid_max_utterances=2",
                    "train.media_every=4", "train.media_seconds=0.1"]) == 0
    return exp


def test_train_writes_checkpoint_and_logs_adversarial_terms_after_warmup(conv_exp):
    ckpt = last_checkpoint(conv_exp)
    assert ckpt["step"] == 4 and ckpt["config"]["model"]["decoder_type"] == "conv"
    assert {"discriminator", "d_optimizer"} <= set(ckpt)
    assert any(k.startswith("mpd.") for k in ckpt["discriminator"])
    assert any(k.startswith("msd.") for k in ckpt["discriminator"])
    assert any(k.startswith("decoder.upsamples.") for k in ckpt["model"])
    tags = scalars(conv_exp)
    assert tags["train/mel"] == [1, 2, 3, 4]
    for tag in ("train/d_loss", "train/lambda", "train/adversarial", "train/feature_matching"):
        assert tags[tag] == [3, 4], tag  # warm-up: steps 1-2 on mel + VQ loss alone
    assert "train/bits" not in tags and "valid/bits_per_sample" not in tags
    assert tags["valid/mel_loss"] == [4]
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(conv_exp / "tb"), size_guidance={"audio": 0})
    acc.Reload()
    assert acc.Audio("audio/reconstruction")[0].length_frames == 800  # 0.1 s at 8 kHz, decoded by the conv decoder
    summary = json.loads((conv_exp / "train_summary.json").read_text())
    assert summary["step"] == 4 and summary["valid_mel_loss"] > 0
    assert "valid_bits_per_sample" not in summary


def test_resume_is_bit_exact_for_generator_and_discriminator(tmp_path, demo_manifest):
    common = [*CONV, f"data.manifest={demo_manifest}", "train.adversarial.warmup_steps=1", "seed=2",
              "train.valid_every=1000"]
    one, two = tmp_path / "one", tmp_path / "two"
    assert run_cli(["train", one, *common, "train.max_steps=4"]) == 0
    assert run_cli(["train", two, *common, "train.max_steps=2"]) == 0
    assert run_cli(["train", two, "train.max_steps=4"]) == 0
    a, b = last_checkpoint(one), last_checkpoint(two)
    assert a["step"] == b["step"] == 4
    for key in ("model", "discriminator"):
        assert set(a[key]) == set(b[key])
        for name in a[key]:
            assert torch.equal(a[key][name], b[key][name]), f"{key}/{name}"
    for state_a, state_b in zip(a["d_optimizer"]["state"].values(), b["d_optimizer"]["state"].values()):
        assert all(torch.equal(state_a[k], state_b[k]) for k in state_a)
    assert a["rng"]["torch"].equal(b["rng"]["torch"])
    # the discriminator did train (equality of two no-ops would prove nothing)
    assert a["d_optimizer"]["state"] and int(next(iter(a["d_optimizer"]["state"].values()))["step"]) == 3


def test_decode_convert_evaluate_and_export(conv_exp, demo_manifest, tmp_path, capsys):
    codes = tmp_path / "codes"
    assert run_cli(["encode", conv_exp, demo_manifest, codes, "--device", "cpu", "--limit", "3"]) == 0
    out = tmp_path / "decoded"
    assert run_cli(["decode", conv_exp, codes, "-o", out, "--device", "cpu"]) == 0
    wavs = sorted(out.glob("*.wav"))
    assert len(wavs) == 3
    for wav in wavs:
        frames = len(np.load(codes / "codes" / f"{wav.stem}.npy"))
        audio, sr = sf.read(wav)
        assert sr == 8000 and len(audio) == frames * 80
    speakers = (conv_exp / "speakers.txt").read_text().split()
    converted = tmp_path / "converted"
    assert run_cli(["convert", conv_exp, demo_manifest, "-o", converted, "--speaker", speakers[0],
                    "--device", "cpu", "--limit", "2"]) == 0
    assert len(list(converted.glob("*.wav"))) == 2

    # batched decoding equals one at a time; temperature and seed do not matter
    vq = VQSpeech.load(conv_exp, "cpu")
    arrays = [np.load(codes / "codes" / f"{w.stem}.npy") for w in wavs]
    batch = vq.decode_batch(arrays, [speakers[0]] * 3, temperature=0.3, seed=5)
    for array, wav in zip(arrays, batch):
        assert np.array_equal(wav, vq.decode(array, speakers[0]))

    capsys.readouterr()
    assert run_cli(["evaluate", "loss", conv_exp, "--split", "train", "--max_utterances", "2", "--device", "cpu"]) == 0
    metrics = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert metrics["mel_loss"] > 0 and "bits_per_sample" not in metrics

    exported = tmp_path / "export.pt"
    assert run_cli(["export", conv_exp, exported]) == 0
    ckpt = torch.load(exported, map_location="cpu", weights_only=True)
    assert set(ckpt) == {"format_version", "kind", "step", "config", "speakers", "model"}
    assert VQSpeech.load(exported, "cpu").model.decoder_type == "conv"


def test_wavenet_remains_the_default():
    cfg = compose(["model=tiny", "data.manifest=x"])
    assert cfg["model"]["decoder_type"] == "wavenet"
    legacy = {k: v for k, v in cfg["model"].items() if k not in ("decoder_type", "conv_decoder")}
    torch.manual_seed(0)
    new = VQVAE.from_config(cfg["model"], 3)
    torch.manual_seed(0)
    old = VQVAE.from_config(upgrade_model_config(legacy), 3)  # a checkpoint config from before the switch
    assert old.decoder_type == new.decoder_type == "wavenet"
    assert set(old.state_dict()) == set(new.state_dict())
    assert all(torch.equal(v, old.state_dict()[k]) for k, v in new.state_dict().items())


@pytest.mark.parametrize("override,word", [
    ("model.decoder_type=gan", "decoder_type"),
    ("train.adversarial.warmup_steps=-1", "warmup_steps"),
    ("train.adversarial.d_betas=[0.8,1.2]", "d_betas"),
    ("train.adversarial.adaptive_weight=maybe", "adaptive_weight"),
    ("train.adversarial.mpd=false train.adversarial.msd=false", "msd"),
    ("model.conv_decoder.upsample_strides=[5,4]", "upsample_strides"),
])
def test_bad_adversarial_values_are_user_errors(tmp_path, demo_manifest, override, word):
    exp = tmp_path / "exp"
    extra = [] if override.startswith("model.decoder_type") else ["model.decoder_type=conv"]
    with pytest.raises(UserError) as info:
        train_vqvae(exp, [*FAST_TRAIN, f"data.manifest={demo_manifest}", "train.max_steps=1", *extra,
                          *override.split()])
    assert word in str(info.value) and "\n" not in str(info.value)
    assert not exp.exists()


def test_mel_loss_decreases_on_demo_corpus(tmp_path, demo_manifest):
    from vqspeech.data.manifest import read_manifest
    from vqspeech.eval.loss import teacher_forced_metrics
    from vqspeech.training.experiment import seed_everything

    exp = tmp_path / "exp"
    args = [*CONV, f"data.manifest={demo_manifest}", "train.max_steps=30", "train.valid_every=10",
            "train.valid_max_utterances=4", "train.adversarial.warmup_steps=1000", "train.lr=3e-3",
            "train.batch_size=8"]
    assert run_cli(["train", exp, *args]) == 0
    cfg = compose(args[:-1] + ["train.batch_size=8"])
    ckpt = load_checkpoint(exp / "checkpoints" / "last.pt")
    speaker_ids = {s: i for i, s in enumerate(ckpt["speakers"])}
    utts = [u for u in read_manifest(demo_manifest, "valid") if u.speaker in speaker_ids][:4]
    seed_everything(cfg["seed"])
    start = VQVAE.from_config(cfg["model"], len(speaker_ids))  # the model training started from
    trained = VQVAE.from_config(cfg["model"], len(speaker_ids))
    trained.load_state_dict(ckpt["model"])
    before = teacher_forced_metrics(start, utts, speaker_ids, torch.device("cpu"))["mel_loss"]
    after = teacher_forced_metrics(trained, utts, speaker_ids, torch.device("cpu"))["mel_loss"]
    summary = json.loads((exp / "train_summary.json").read_text())
    assert after == pytest.approx(summary["valid_mel_loss"], rel=1e-4)
    assert after < 0.8 * before, (before, after)
    # and it kept falling after the first validation
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(exp / "tb"), size_guidance={"scalars": 0})
    acc.Reload()
    valid = [e.value for e in acc.Scalars("valid/mel_loss")]
    assert len(valid) == 3 and valid[-1] < valid[0], valid


def test_experiment_from_before_the_switch_resumes_as_wavenet(tmp_path, demo_manifest):
    """A folder whose config.yaml lacks the model keys added since (decoder_type, conv_decoder,
    jitter, quantizer.kmeans_iters, quantizer.groups: older vqspeech) still resumes."""
    import yaml

    exp = tmp_path / "old"
    assert run_cli(["train", exp, *FAST_TRAIN, f"data.manifest={demo_manifest}", "train.batch_size=2",
                    "train.crop_seconds=0.1", "train.max_steps=1"]) == 0
    cfg = yaml.safe_load((exp / "config.yaml").read_text())
    del cfg["model"]["decoder_type"], cfg["model"]["conv_decoder"], cfg["model"]["jitter"]
    del cfg["model"]["quantizer"]["kmeans_iters"], cfg["model"]["quantizer"]["groups"]
    (exp / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    assert run_cli(["train", exp, "train.max_steps=2"]) == 0
    ckpt = last_checkpoint(exp)
    assert ckpt["step"] == 2 and ckpt["config"]["model"]["decoder_type"] == "wavenet"
    assert "discriminator" not in ckpt
    assert yaml.safe_load((exp / "config.yaml").read_text())["model"]["quantizer"]["groups"] == 1


DDP_HELPER = '''
import os, sys, torch
import vqspeech.training.experiment as experiment
from vqspeech.checkpoint import cpu_state_dict
from vqspeech.cli import main

out, rank = os.environ["VQS_TEST_OUT"], int(os.environ["RANK"])

class RecordingTrainer(experiment.Trainer):
    def fit(self):
        metrics = super().fit()
        torch.save({"model": cpu_state_dict(self.model), "disc": cpu_state_dict(self.task.discriminator),
                    "step": self.step}, f"{out}/rank{rank}.pt")
        return metrics

experiment.Trainer = RecordingTrainer
sys.exit(main(sys.argv[1:]))
'''


def test_two_process_ddp_keeps_generator_and_discriminator_replicas_identical(tmp_path, demo_manifest):
    from helpers import run_torchrun

    proc, record = run_torchrun(tmp_path, DDP_HELPER, [
        "train", tmp_path / "exp", *CONV, f"data.manifest={demo_manifest}", "train.max_steps=3",
        "train.adversarial.warmup_steps=1", "train.valid_every=1000"])
    assert proc.returncode == 0, proc.stderr[-4000:]
    a, b = (torch.load(record / f"rank{r}.pt", weights_only=True) for r in (0, 1))
    assert a["step"] == b["step"] == 3
    for key in ("model", "disc"):
        assert all(torch.equal(a[key][k], b[key][k]) for k in a[key]), key
    ckpt = last_checkpoint(tmp_path / "exp")
    assert all(torch.equal(ckpt["discriminator"][k], a["disc"][k]) for k in a["disc"])


def test_prior_sample_decodes_through_the_conv_decoder(conv_exp, demo_manifest, tmp_path, capsys):
    codes = tmp_path / "codes"
    assert run_cli(["encode", conv_exp, demo_manifest, codes, "--device", "cpu"]) == 0
    prior = tmp_path / "prior"
    assert run_cli(["prior", "train", prior, "prior=wavenet", "prior.residual_channels=8", "prior.gate_channels=16",
                    "prior.skip_channels=8", "prior.layers=2", "prior.cycles=1", "device=cpu",
                    "data.crop_frames=32", "train.batch_size=4", "train.max_steps=2", "train.valid_every=1000",
                    "train.media_every=0", "train.warmup_steps=0", f"data.codes={codes}"]) == 0
    out = tmp_path / "samples"
    speaker = (conv_exp / "speakers.txt").read_text().split()[0]
    capsys.readouterr()
    assert run_cli(["prior", "sample", prior, "-o", out, "--speaker", speaker, "--seconds", "0.2",
                    "--num", "2", "--device", "cpu"]) == 0
    for name in ("sample_00", "sample_01"):
        audio, sr = sf.read(out / f"{name}.wav")
        assert sr == 8000 and len(audio) == 20 * 80 and np.abs(audio).max() > 0
