"""Training: learning on real audio, exact resume, checkpoints, DDP, configs, TensorBoard, budget."""

from __future__ import annotations

import json
import math
import shutil
import textwrap
from pathlib import Path

import pytest
import torch

from conftest import FAST_TRAIN, run_cli
from helpers import run_torchrun
from vqspeech.checkpoint import FORMAT_VERSION, load_checkpoint
from vqspeech.config import compose, config_dir
from vqspeech.data.manifest import read_manifest, speakers_of, write_manifest
from vqspeech.errors import UserError
from vqspeech.eval.loss import teacher_forced_metrics
from vqspeech.inference import VQSpeech
from vqspeech.models import VQVAE
from vqspeech.models.mel_decoder import MelOutput
from vqspeech.training.experiment import seed_everything
from vqspeech.training.schema import check_vqvae_config as check_config
from vqspeech.training.vqvae_task import train_vqvae

CPU = torch.device("cpu")
# Small batches of short crops: enough to exercise every code path, cheap on a CPU.
SMALL = [*FAST_TRAIN, "train.batch_size=4", "train.crop_seconds=0.25"]


def last_checkpoint(exp: Path) -> dict:
    return torch.load(exp / "checkpoints" / "last.pt", map_location="cpu", weights_only=True)


def assert_identical(a, b, path: str = "") -> None:
    """Recursively equal: tensors bit for bit (dtype and shape too), everything else by ==."""
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor), path
        assert a.dtype == b.dtype and a.shape == b.shape, path
        assert torch.equal(a, b), f"tensors differ at {path}"
    elif isinstance(a, dict):
        assert isinstance(b, dict) and set(a) == set(b), f"keys differ at {path}: {set(a) ^ set(b)}"
        for key in a:
            assert_identical(a[key], b[key], f"{path}/{key}")
    elif isinstance(a, (list, tuple)):
        assert isinstance(b, (list, tuple)) and len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b)):
            assert_identical(x, y, f"{path}[{i}]")
    else:
        assert a == b, f"{path}: {a!r} != {b!r}"


def spread(items: list, n: int) -> list:
    """``n`` items spread over the list (fixed, so before/after compare the same audio)."""
    return items[:: max(1, len(items) // n)][:n]


def initial_model(manifest: Path, num_speakers: int) -> VQVAE:
    """The model `train` starts from (same seed, same config), before any step."""
    cfg = compose(["model=tiny", f"data.manifest={manifest}"])
    seed_everything(cfg["seed"])
    return VQVAE.from_config(cfg["model"], num_speakers)


# --- 1. learning -----------------------------------------------------------------------------

def test_training_lowers_bits_on_real_fsdd(tmp_path, fsdd_manifest):
    train_utts = read_manifest(fsdd_manifest, "train")
    valid_utts = read_manifest(fsdd_manifest, "valid")
    speakers = speakers_of(train_utts)
    ids = {s: i for i, s in enumerate(speakers)}
    probe, held_out = spread(train_utts, 8), valid_utts[:4]
    model = initial_model(fsdd_manifest, len(speakers))
    before = teacher_forced_metrics(model, probe, ids, CPU)
    before_valid = teacher_forced_metrics(model, held_out, ids, CPU)
    # An untrained decoder predicts close to uniformly over 256 mu-law classes: 8 bits.
    assert 7.7 < before["bits_per_sample"] < 8.5

    exp = tmp_path / "fsdd"
    assert run_cli(["train", exp, *FAST_TRAIN, f"data.manifest={fsdd_manifest}", "train.max_steps=60",
                    "train.lr=1e-2", "train.warmup_steps=5", "train.schedule=constant"]) == 0
    vq = VQSpeech.load(exp, "cpu")
    assert vq.speakers == speakers == ["george", "jackson"]
    after = teacher_forced_metrics(vq.model, probe, ids, CPU)
    after_valid = teacher_forced_metrics(vq.model, held_out, ids, CPU)
    # Measured on the build machine: 8.01 -> 6.86 bits (train), 8.0 -> 6.8 (valid) after 60 steps.
    assert after["bits_per_sample"] < before["bits_per_sample"] - 0.5, (before, after)
    assert after_valid["bits_per_sample"] < before_valid["bits_per_sample"] - 0.3, (before_valid, after_valid)
    # The codebook must not collapse (data-initialised codebook and re-seeded dead codes).
    assert after["codes_used"] >= 16, after
    summary = json.loads((exp / "train_summary.json").read_text())
    assert summary["step"] == 60 and math.isfinite(summary["valid_bits_per_sample"])


def test_training_lowers_bits_on_demo_corpus(trained_tiny, demo_manifest):
    """The shared fixture model (30 steps) already predicts the demo speech much better than chance."""
    vq = VQSpeech.load(trained_tiny, "cpu")
    ids = {s: i for i, s in enumerate(vq.speakers)}
    probe = spread(read_manifest(demo_manifest, "train"), 4)
    before = teacher_forced_metrics(initial_model(demo_manifest, len(vq.speakers)), probe, ids, CPU)
    after = teacher_forced_metrics(vq.model, probe, ids, CPU)
    assert after["bits_per_sample"] < before["bits_per_sample"] - 0.5, (before, after)
    assert after["codes_used"] >= 16


# --- 2. exact resume -------------------------------------------------------------------------

def test_resume_in_two_runs_equals_one_run(tmp_path, demo_manifest):
    common = [*SMALL, f"data.manifest={demo_manifest}", "train.lr=1e-2", "train.warmup_steps=3",
              "train.schedule=constant", "train.valid_every=4", "train.checkpoint_every=4", "seed=3",
              "model.quantizer.usage_decay=0.5"]  # codes die and are re-seeded (randomly) every few steps
    one, two = tmp_path / "one", tmp_path / "two"
    assert run_cli(["train", one, *common, "train.max_steps=12"]) == 0
    assert run_cli(["train", two, *common, "train.max_steps=6"]) == 0
    assert load_checkpoint(two / "checkpoints" / "last.pt")["step"] == 6
    # Resuming needs only the changed key: the experiment remembers its other overrides.
    assert run_cli(["train", two, "train.max_steps=12"]) == 0

    a, b = last_checkpoint(one), last_checkpoint(two)
    assert a["step"] == b["step"] == 12
    assert a["config"] == b["config"]
    for key in ("model", "optimizer", "scheduler", "rng", "speakers"):
        assert_identical(a[key], b[key], key)
    # The model did move away from its start (a test of equality between two no-ops proves nothing).
    start = initial_model(demo_manifest, len(a["speakers"])).state_dict()
    assert not torch.equal(start["decoder.input_embedding.weight"], a["model"]["decoder.input_embedding.weight"])
    # Periodic checkpoints: step-4, step-8, step-12 and last, all loadable.
    assert sorted(p.name for p in (one / "checkpoints").glob("*.pt")) == [
        "last.pt", "step-12.pt", "step-4.pt", "step-8.pt"]
    assert load_checkpoint(one / "checkpoints" / "step-8.pt")["step"] == 8


def test_resume_applies_new_optimizer_overrides(tmp_path, demo_manifest):
    """A learning rate given when resuming is used (not the one saved with the optimizer state)."""
    exp = tmp_path / "exp"
    common = [*SMALL, f"data.manifest={demo_manifest}", "train.schedule=constant", "train.warmup_steps=0"]
    assert run_cli(["train", exp, *common, "train.lr=1e-3", "train.max_steps=3"]) == 0
    assert run_cli(["train", exp, "train.lr=5e-4", "train.max_steps=5"]) == 0
    ckpt = last_checkpoint(exp)
    assert ckpt["step"] == 5 and ckpt["config"]["train"]["lr"] == 5e-4
    assert [g["lr"] for g in ckpt["optimizer"]["param_groups"]] == [5e-4]
    assert ckpt["scheduler"]["base_lrs"] == [5e-4]
    # the manifest is stored absolute, so the experiment resumes from any working directory
    assert Path(ckpt["config"]["data"]["manifest"]).is_absolute()


def test_resume_after_crash_from_periodic_checkpoint(tmp_path, demo_manifest):
    """A run killed after step 6 (cosine schedule) resumes to the exact state of an unbroken run."""
    common = [*SMALL, f"data.manifest={demo_manifest}", "train.lr=1e-2", "train.warmup_steps=3",
              "train.schedule=cosine", "train.checkpoint_every=6", "train.max_steps=12",
              "model.quantizer.usage_decay=0.5"]
    full = tmp_path / "full"
    assert run_cli(["train", full, *common]) == 0
    crashed = tmp_path / "crashed"
    (crashed / "checkpoints").mkdir(parents=True)
    for name in ("config.yaml", "overrides.yaml", "speakers.txt"):
        shutil.copy(full / name, crashed / name)
    shutil.copy(full / "checkpoints" / "step-6.pt", crashed / "checkpoints" / "last.pt")
    assert run_cli(["train", crashed]) == 0
    a, b = last_checkpoint(full), last_checkpoint(crashed)
    assert a["step"] == b["step"] == 12
    for key in ("model", "optimizer", "scheduler", "rng"):
        assert_identical(a[key], b[key], key)


# --- 3. checkpoints --------------------------------------------------------------------------

@pytest.mark.parametrize("version", [FORMAT_VERSION, 1])
def test_a_checkpoint_written_before_a_model_key_existed_loads(tmp_path, trained_tiny, version):
    """Keys added to the model config are filled in at load, whatever the checkpoint's version: the
    current version's checkpoints written before encoder.cepstra were refused as unusable."""
    from vqspeech.checkpoint import LEGACY_MODEL_KEYS

    ckpt = last_checkpoint(trained_tiny)
    for *parents, last in LEGACY_MODEL_KEYS:
        node = ckpt["config"]["model"]
        for key in parents:
            node = node[key]
        del node[last]
    ckpt["format_version"] = version
    torch.save(ckpt, tmp_path / "old.pt")
    vq = VQSpeech.load(tmp_path / "old.pt", "cpu")
    assert vq.config["model"]["encoder"]["cepstra"] == 0 and vq.config["model"]["objective"] == "wavenet"
    assert_identical(cpu_state(vq.model), ckpt["model"], "loaded")


def test_checkpoint_layout_and_export(tmp_path, trained_tiny, capsys):
    ckpt = last_checkpoint(trained_tiny)  # weights_only=True must work
    for key in ("format_version", "kind", "step", "config", "speakers", "model", "optimizer", "scheduler", "rng"):
        assert key in ckpt, key
    assert ckpt["format_version"] == FORMAT_VERSION and ckpt["kind"] == "vqvae" and ckpt["step"] == 30
    assert ckpt["speakers"] == (trained_tiny / "speakers.txt").read_text().split()
    assert ckpt["config"]["model"]["latent_dim"] == 16  # the resolved tiny config
    assert not [k for k in ckpt["model"] if k.startswith("module.")]
    assert all(v.device.type == "cpu" for v in ckpt["model"].values())
    model = VQVAE.from_config(ckpt["config"]["model"], len(ckpt["speakers"]))
    model.load_state_dict(ckpt["model"])  # strict: no missing or unexpected keys
    assert bool(ckpt["model"]["quantizer.initialized"])

    out = tmp_path / "shared" / "tiny.pt"
    assert run_cli(["export", trained_tiny, out]) == 0
    exported = torch.load(out, map_location="cpu", weights_only=True)
    assert set(exported) == {"format_version", "kind", "step", "config", "speakers", "model"}
    assert_identical(exported["model"], ckpt["model"], "model")
    assert out.stat().st_size < (trained_tiny / "checkpoints" / "last.pt").stat().st_size
    vq = VQSpeech.load(out, "cpu")
    assert vq.speakers == ckpt["speakers"]
    assert_identical(cpu_state(vq.model), ckpt["model"], "loaded")

    # An existing export is not replaced without --overwrite.
    capsys.readouterr()
    data = out.read_bytes()
    assert run_cli(["export", trained_tiny, out]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert out.read_bytes() == data
    assert run_cli(["export", trained_tiny, out, "--overwrite"]) == 0


def cpu_state(model: torch.nn.Module) -> dict:
    return {k: v.detach().cpu() for k, v in model.state_dict().items()}


@pytest.mark.parametrize("damage", ["garbage", "truncated", "foreign", "empty"])
def test_damaged_checkpoint_is_one_sentence_user_error(tmp_path, trained_tiny, capsys, damage):
    good = (trained_tiny / "checkpoints" / "last.pt").read_bytes()
    path = tmp_path / "model.pt"
    if damage == "garbage":
        path.write_bytes(b"this is not a checkpoint\n" * 40)
    elif damage == "truncated":
        path.write_bytes(good[: len(good) // 2])
    elif damage == "foreign":
        torch.save({"state_dict": {"w": torch.zeros(2)}}, path)
    else:
        path.write_bytes(b"")
    with pytest.raises(UserError) as info:
        VQSpeech.load(path, "cpu")
    assert str(path) in str(info.value)
    capsys.readouterr()
    assert run_cli(["speakers", path]) == 2
    err = capsys.readouterr().err
    assert err.startswith("vqspeech speakers: error: ") and str(path) in err
    assert err.count("\n") == 1 and "Traceback" not in err

    # A damaged last.pt in an experiment folder stops `train` (resume) the same way.
    exp = tmp_path / "exp"
    (exp / "checkpoints").mkdir(parents=True)
    for name in ("config.yaml", "overrides.yaml"):
        shutil.copy(trained_tiny / name, exp / name)
    shutil.copy(path, exp / "checkpoints" / "last.pt")
    assert run_cli(["train", exp]) == 2
    err = capsys.readouterr().err
    assert "last.pt" in err and "Traceback" not in err
    assert (exp / "checkpoints" / "last.pt").read_bytes() == path.read_bytes()


# --- 4. DDP ----------------------------------------------------------------------------------

DDP_HELPER = textwrap.dedent('''
    """Run `vqspeech train` under torchrun; each rank also records its final model and first batch."""
    import json, os, sys
    import torch
    import vqspeech.training.experiment as experiment
    from vqspeech.checkpoint import cpu_state_dict
    from vqspeech.cli import main
    from vqspeech.data import dataset

    out, rank = os.environ["VQS_TEST_OUT"], int(os.environ["RANK"])
    batches = {}
    original_batch = dataset.StepBatchSampler.batch

    def batch(self, step):
        requests = original_batch(self, step)
        batches.setdefault(str(step), [[r.utterance, r.offset] for r in requests])
        return requests

    dataset.StepBatchSampler.batch = batch

    class RecordingTrainer(experiment.Trainer):
        def fit(self):
            metrics = super().fit()
            torch.save({"model": cpu_state_dict(self.model), "step": self.step,
                        "world_size": self.dist.world_size}, f"{out}/rank{rank}.pt")
            with open(f"{out}/rank{rank}.json", "w") as f:
                json.dump(batches, f)
            return metrics

    experiment.Trainer = RecordingTrainer
    sys.exit(main(sys.argv[1:]))
''')


def test_two_process_ddp_on_cpu(tmp_path, demo_manifest):
    exp = tmp_path / "exp"
    proc, record = run_torchrun(tmp_path, DDP_HELPER, [
        "train", exp, *SMALL, f"data.manifest={demo_manifest}", "train.max_steps=6",
        "train.lr=1e-2", "train.warmup_steps=2", "train.log_every=2", "train.checkpoint_every=3"])
    assert proc.returncode == 0, proc.stderr[-4000:]

    ckpt = last_checkpoint(exp)
    assert ckpt["step"] == 6 and ckpt["kind"] == "vqvae"
    assert load_checkpoint(exp / "checkpoints" / "step-3.pt")["step"] == 3
    assert all(torch.isfinite(v).all() for v in ckpt["model"].values() if v.is_floating_point())
    assert not [k for k in ckpt["model"] if k.startswith("module.")]
    ranks = [torch.load(record / f"rank{r}.pt", weights_only=True) for r in (0, 1)]
    assert [r["world_size"] for r in ranks] == [2, 2] and [r["step"] for r in ranks] == [6, 6]
    # DDP keeps the replicas identical, codebook (re-seeded on rank 0, broadcast) included.
    assert_identical(ranks[0]["model"], ckpt["model"], "rank0")
    assert_identical(ranks[1]["model"], ckpt["model"], "rank1")
    # ... while each rank trained on its own crops.
    first = [json.loads((record / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert sorted(first[0]) == sorted(first[1]) == [str(s) for s in range(6)]
    assert all(first[0][s] != first[1][s] for s in first[0])
    summary = json.loads((exp / "train_summary.json").read_text())
    assert summary["step"] == 6


# --- 5. every config file builds and trains one step -----------------------------------------

MODEL_CONFIGS = sorted(p.stem for p in (config_dir() / "model").glob("*.yaml"))
TRAIN_CONFIGS = sorted(p.stem for p in (config_dir() / "train").glob("*.yaml"))


def test_config_groups_are_found():
    assert {"tiny", "small", "paper"} <= set(MODEL_CONFIGS) and "default" in TRAIN_CONFIGS


@pytest.mark.parametrize("name,extra", [(name, []) for name in MODEL_CONFIGS] + [
    ("tiny", ["model.encoder.frontend=conv"]), ("tiny", ["model.quantizer.ema=true"])])
def test_model_config_dry_run(name, extra):
    cfg = compose([f"model={name}", "data.manifest=x", *extra])
    model_cfg = cfg["model"]
    torch.manual_seed(0)
    model = VQVAE.from_config(model_cfg, num_speakers=3).train()
    hop, dim = model_cfg["hop_length"], model_cfg["latent_dim"]
    assert model.hop_length == hop and model.sample_rate == model_cfg["sample_rate"]
    frames = 3
    audio = 0.3 * torch.randn(2, frames * hop + hop // 2).clamp(-3, 3) / 3  # a partial frame is cut off
    mask = torch.ones_like(audio)
    mask[1, frames * hop // 2:] = 0
    out = model(audio, torch.tensor([0, 2]), mask)
    length = frames * hop
    rec = out.reconstruction
    if isinstance(rec, MelOutput):  # a two-stage model (small_mel): the units stage's objective
        assert model.stage == "units" and rec.predicted.shape == (2, model_cfg["mel_decoder"]["n_mels"], frames)
        assert out.adversary is not None and torch.isfinite(out.adversary.loss)
    else:
        assert rec.logits.shape == (2, 256, length) and rec.targets.shape == (2, length)
        assert 0 < float(rec.bits_per_sample) < 16
    assert out.vq.codes.shape == (2, frames) and out.vq.quantized.shape == (2, dim, frames)
    assert int(out.vq.codes.min()) >= 0 and int(out.vq.codes.max()) < model_cfg["num_codes"]
    assert torch.isfinite(out.loss)
    out.loss.backward()
    no_grad = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert no_grad == []
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
    assert float(model.encoder.output_proj.weight.grad.abs().sum()) > 0  # straight-through reaches the encoder


@pytest.mark.parametrize("name", TRAIN_CONFIGS)
def test_train_config_composes_and_validates(name):
    cfg = compose([f"train={name}", "model=tiny", "data.manifest=x"])
    check_config(cfg)
    assert cfg["train"]["batch_size"] > 0 and cfg["train"]["schedule"] in ("constant", "cosine")


def test_default_config_composes():
    cfg = compose(["data.manifest=m.jsonl"])
    assert cfg["data"]["manifest"] == "m.jsonl"
    assert set(cfg) >= {"model", "train", "data", "device", "seed"}
    check_config(cfg)


# --- 6. configuration errors -----------------------------------------------------------------

@pytest.mark.parametrize("override,words", [
    ("train.batch_size=0", ["train.batch_size"]),
    ("train.lr=-1", ["train.lr"]),
    ("train.batch_size=abc", ["train.batch_size"]),
    ("train.max_steps=0", ["train.max_steps"]),
    ("train.max_minutes=0", ["train.max_minutes"]),
    ("model.hop_length=0", ["model.hop_length"]),
    ("model=nope", ["nope"]),
    ("train.no_such_key=1", ["no_such_key"]),
    ("train.max_steps", ["train.max_steps", "key=value"]),
])
def test_bad_override_is_user_error(tmp_path, demo_manifest, capsys, override, words):
    exp = tmp_path / "exp"
    args = [*FAST_TRAIN, f"data.manifest={demo_manifest}", "train.max_steps=2", override]
    with pytest.raises(UserError) as info:
        train_vqvae(exp, args)
    for word in words:
        assert word in str(info.value)
    assert not exp.exists()  # nothing written for a config that is refused
    assert run_cli(["train", exp, *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith("vqspeech train: error: ") and "Traceback" not in err
    assert all(word in err for word in words)


@pytest.mark.parametrize("override,word", [
    ("train.batch_size=2.5", "batch_size"),
    ("train.betas=[0.9,1.5]", "betas"),
    ("train.weight_decay=-1", "weight_decay"),
    ("train.num_workers=-1", "num_workers"),
    ("train.threads=-1", "threads"),
    ("train.lr=nan", "lr"),
    ("seed=abc", "seed"),
    ("model.latent_dim=0", "latent_dim"),
    ("model.decoder.layers=7", "layers"),
    ("model.encoder.frontend=foo", "frontend"),
    ("model.encoder.frontend=conv model.encoder.strides=[5,4]", "strides"),
])
def test_other_bad_values_are_user_errors_before_anything_is_written(tmp_path, demo_manifest, override, word):
    """Values that torch or the model constructors would reject must not surface as tracebacks."""
    exp = tmp_path / "exp"
    with pytest.raises(UserError) as info:
        train_vqvae(exp, [*SMALL, f"data.manifest={demo_manifest}", "train.max_steps=1", *override.split()])
    assert word in str(info.value)
    assert not exp.exists()


def test_unknown_schedule_is_user_error(tmp_path, demo_manifest):
    with pytest.raises(UserError, match="train.schedule"):
        train_vqvae(tmp_path / "exp", [*SMALL, f"data.manifest={demo_manifest}", "train.schedule=linear"])


def test_manifest_at_another_sample_rate_is_refused(tmp_path, demo_manifest):
    exp = tmp_path / "exp"
    with pytest.raises(UserError) as info:
        train_vqvae(exp, [*SMALL, f"data.manifest={demo_manifest}", "model.sample_rate=16000"])
    assert "8000" in str(info.value) and "16000" in str(info.value) and str(demo_manifest) in str(info.value)
    # The same with a manifest that really holds 16 kHz lines.
    utts = read_manifest(demo_manifest)
    for u in utts:
        u.sample_rate = 16000
    other = tmp_path / "m16.jsonl"
    write_manifest(other, utts)
    with pytest.raises(UserError) as info:
        train_vqvae(exp, [*SMALL, f"data.manifest={other}"])
    assert "8000" in str(info.value) and "16000" in str(info.value)
    assert not exp.exists()


def test_missing_manifest_is_user_error(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        train_vqvae(tmp_path / "exp", [*SMALL, f"data.manifest={tmp_path / 'none.jsonl'}"])


def test_resume_with_another_model_config_is_refused(tmp_path, trained_tiny, capsys):
    exp = tmp_path / "copy"
    shutil.copytree(trained_tiny, exp)
    before = {p: p.read_bytes() for p in exp.rglob("*") if p.is_file()}
    for override in ("model=small", "model.decoder.layers=4"):
        with pytest.raises(UserError, match="model config differs"):
            train_vqvae(exp, [override])
        assert run_cli(["train", exp, override]) == 2
        assert "model config" in capsys.readouterr().err
    assert {p: p.read_bytes() for p in exp.rglob("*") if p.is_file()} == before  # untouched


# --- 7. TensorBoard --------------------------------------------------------------------------

def test_tensorboard_scalars_audio_and_images(tmp_path, demo_manifest):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    exp = tmp_path / "exp"
    assert run_cli(["train", exp, *SMALL, f"data.manifest={demo_manifest}", "train.max_steps=4",
                    "train.log_every=2", "train.valid_every=2", "train.media_every=4",
                    "train.media_seconds=0.1", "train.warmup_steps=2", "train.lr=2e-3",
                    "train.schedule=cosine", "train.lr_min_ratio=0.1"]) == 0
    events = list((exp / "tb").glob("events.out.tfevents.*"))
    assert events
    acc = EventAccumulator(str(exp / "tb"), size_guidance={"scalars": 0, "audio": 0, "images": 0})
    acc.Reload()
    tags = acc.Tags()
    for tag in ("train/bits", "train/ppl", "train/lr", "train/grad_norm", "valid/bits_per_sample",
                "valid/perplexity", "speed/samples_per_s"):
        assert tag in tags["scalars"], tag
    assert [e.step for e in acc.Scalars("train/bits")] == [2, 4]
    assert [e.step for e in acc.Scalars("valid/bits_per_sample")] == [2, 4]
    assert all(math.isfinite(e.value) and 0 < e.value < 16 for e in acc.Scalars("train/bits"))
    lrs = [e.value for e in acc.Scalars("train/lr")]
    assert lrs == pytest.approx([2e-3, 2e-4])  # warm-up done at step 2, cosine down to lr_min_ratio at 4
    audio_tags = set(tags["audio"])
    assert {"audio/original", "audio/reconstruction"} <= audio_tags
    assert any(t.startswith("audio/converted_to_") for t in audio_tags)
    original = acc.Audio("audio/original")
    assert [e.step for e in original] == [4]
    assert original[0].sample_rate == 8000 and original[0].length_frames == 800  # 0.1 s at 8 kHz
    assert acc.Audio("audio/reconstruction")[0].length_frames == 800
    assert tags["images"], "no spectrogram image"
    image = acc.Images(tags["images"][0])[0]
    assert image.step == 4 and image.width > 50 and image.height > 50
    assert image.encoded_image_string[:8] == b"\x89PNG\r\n\x1a\n"


# --- 8. wall-clock budget --------------------------------------------------------------------

def test_wall_clock_budget_stops_and_saves(tmp_path, demo_manifest):
    exp = tmp_path / "exp"
    args = [*SMALL, f"data.manifest={demo_manifest}", "train.max_steps=100000", "train.max_minutes=0.05"]
    assert run_cli(["train", exp, *args]) == 0
    ckpt = load_checkpoint(exp / "checkpoints" / "last.pt")
    assert 1 <= ckpt["step"] < 100000
    assert ckpt["elapsed_seconds"] >= 3.0
    summary = json.loads((exp / "train_summary.json").read_text())
    assert summary["step"] == ckpt["step"] and summary["minutes"] >= 0.05
    # The budget is summed over resumed runs: a second run has nothing left and takes no step.
    assert run_cli(["train", exp]) == 0
    assert load_checkpoint(exp / "checkpoints" / "last.pt")["step"] == ckpt["step"]
