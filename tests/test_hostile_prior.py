"""Hostile and careless input around the codes and their priors: K beyond what the codes' int16
holds, a VQ-VAE that cannot decode a prior's samples, sizes in codes.json that would exhaust
memory, damaged or crafted prior checkpoints. Each is refused in one sentence before the work."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import cli_error, run_cli
from vqspeech.checkpoint import load_checkpoint
from vqspeech.data.codes import MAX_CODES, CodesInfo, CodesWriter, Encoding
from vqspeech.errors import UserError
from vqspeech.inference.prior_sampling import load_prior
from vqspeech.models.vqvae import VQVAE
from vqspeech.training.schema import MAX_CODES as CONFIG_MAX_CODES

PRIOR = ["prior=wavenet", "prior.residual_channels=16", "prior.gate_channels=32", "prior.skip_channels=16",
         "prior.layers=4", "prior.cycles=1", "prior.dropout=0.0", "device=cpu", "data.crop_frames=32",
         "train.batch_size=4", "train.log_every=5", "train.valid_every=1000", "train.media_every=0",
         "train.checkpoint_every=1000"]
SPEAKER = "us_f3"


@pytest.fixture(scope="module")
def codes(tmp_path_factory, trained_tiny, demo_manifest) -> Path:
    out = tmp_path_factory.mktemp("hostile_prior_codes") / "codes"
    assert run_cli(["encode", trained_tiny, demo_manifest, out]) == 0
    return out


@pytest.fixture(scope="module")
def prior(tmp_path_factory, codes) -> Path:
    """A tiny prior trained for two steps (read-only: tests copy it before changing it)."""
    exp = tmp_path_factory.mktemp("hostile_prior") / "prior"
    assert run_cli(["prior", "train", exp, *PRIOR, f"data.codes={codes}", "train.max_steps=2"]) == 0
    return exp


@pytest.fixture
def no_drawing(monkeypatch):
    """Fail the test if `prior sample` gets as far as drawing codes."""

    def drawn(*args, **kwargs):
        raise AssertionError("codes were drawn before the mistake was found")

    monkeypatch.setattr("vqspeech.inference.prior_sampling.draw_candidates", drawn)


def edited_json(path: Path, **changes) -> None:
    path.write_text(json.dumps({**json.loads(path.read_text()), **changes}))


# --- 1. K must fit the codes' int16 ------------------------------------------------------------


def test_baseline_refuses_more_codes_than_int16_holds_before_any_work(tmp_path, capsys, monkeypatch,
                                                                      demo_manifest):
    def features(*args, **kwargs):
        raise AssertionError("MFCCs were computed before K was checked")

    monkeypatch.setattr("vqspeech.eval.baseline._mfcc_features", features)
    out = tmp_path / "baseline"
    message = cli_error(capsys, ["baseline", "mfcc-kmeans", demo_manifest, out, "--num_codes", MAX_CODES + 1],
                        "baseline")
    assert "--num_codes" in message and str(MAX_CODES) in message and str(MAX_CODES + 1) in message
    assert not out.exists()


def test_the_codes_writer_never_wraps_a_code_around(tmp_path):
    assert MAX_CODES == CONFIG_MAX_CODES == 32768  # what a config may ask for is what the files hold
    writer = CodesWriter(tmp_path / "c")
    writer.add("fits", Encoding(np.array([0, MAX_CODES - 1])))
    assert np.load(tmp_path / "c" / "codes" / "fits.npy").tolist() == [0, MAX_CODES - 1]
    with pytest.raises(ValueError, match="do not fit"):
        writer.add("wraps", Encoding(np.array([0, MAX_CODES])))
    assert not (tmp_path / "c" / "codes" / "wraps.npy").exists()


# --- 2. the VQ-VAE that decodes a prior's samples is checked before drawing ----------------------


def vqvae_variant(source: Path, out: Path, speakers: list[str] | None = None, **model) -> Path:
    """An experiment folder holding ``source``'s VQ-VAE with other ``model`` config values (a
    dotted key: value) or ``speakers``, its weights freshly initialised to fit."""
    ckpt = torch.load(source / "checkpoints" / "last.pt", weights_only=True)
    for key, value in model.items():
        *parents, last = key.split(".")
        node = ckpt["config"]["model"]
        for parent in parents:
            node = node[parent]
        node[last] = value
    ckpt["speakers"] = speakers or ckpt["speakers"]
    fresh = VQVAE.from_config(ckpt["config"]["model"], len(ckpt["speakers"])).state_dict()
    kept = ckpt["model"]  # the source's weights where they still fit (its codebook, when K is unchanged)
    ckpt["model"] = {k: kept[k] if k in kept and kept[k].shape == v.shape else v for k, v in fresh.items()}
    (out / "checkpoints").mkdir(parents=True)
    torch.save(ckpt, out / "checkpoints" / "last.pt")
    return out


@pytest.mark.parametrize("change,words", [
    ({"hop_length": 160}, ["50 codes per second", "100 per second"]),  # the codes come at 100 Hz
    ({"quantizer.groups": 2}, ["2 codebook group(s)", "draws 1"]),
    ({"num_codes": 256}, ["codebook of 256 codes", "draws from 128"]),  # a larger K is another codebook too
    ({"speakers": [f"x{i}" for i in range(8)]}, [f"Speaker '{SPEAKER}'", "x0"]),
])
def test_prior_sample_checks_the_decoder_before_drawing(tmp_path, capsys, trained_tiny, prior, no_drawing,
                                                        change, words):
    change = dict(change)
    vqvae = vqvae_variant(trained_tiny, tmp_path / "vq", change.pop("speakers", None), **change)
    out = tmp_path / "s"
    message = cli_error(capsys, ["prior", "sample", prior, "--speaker", SPEAKER, "--seconds", "0.1",
                                 "--device", "cpu", "--vqvae", vqvae, "-o", out], "prior sample")
    assert str(vqvae) in message and all(word in message for word in words), message
    assert not out.exists()


# --- 3. codes.json's sizes are bounded where it is read ------------------------------------------


@pytest.mark.parametrize("changes,field", [
    ({"K": 3_000_000}, "K"),
    ({"K": MAX_CODES + 1}, "K"),
    ({"code_rate_hz": 1e9}, "code_rate_hz"),
    ({"code_rate_hz": 0}, "code_rate_hz"),
    ({"groups": 10_000}, "groups"),
    ({"stride": 10**9}, "stride"),
    ({"level": "middle"}, "level"),
    ({"top": {"code_rate_hz": 25.0, "K": 10**7, "stride": 4}}, "top.K"),
    ({"top": {"code_rate_hz": 1e12, "K": 8, "stride": 4}}, "top.code_rate_hz"),
    ({"top": {"code_rate_hz": 25.0, "K": 8, "stride": 10**9}}, "top.stride"),
    ({"top": {"K": 8, "stride": 4}}, "top.code_rate_hz"),
    ({"top": [25.0, 8, 4]}, "top"),
])
def test_codes_json_sizes_have_bounds(tmp_path, changes, field):
    path = tmp_path / "codes.json"
    path.write_text(json.dumps({"code_rate_hz": 100.0, "K": 128, **changes}))
    with pytest.raises(UserError) as info:
        CodesInfo.load(path)
    message = str(info.value)
    assert f"{path} field {field} is" in message and message.count(". ") == 0 and message.endswith(".")


def test_prior_train_refuses_a_k_beyond_int16_in_codes_json(tmp_path, capsys, codes):
    tampered = tmp_path / "codes"
    shutil.copytree(codes, tampered)
    edited_json(tampered / "codes.json", K=40_000)
    exp = tmp_path / "p"
    message = cli_error(capsys, ["prior", "train", exp, *PRIOR, f"data.codes={tampered}", "train.max_steps=1"],
                        "prior train")
    assert "codes.json field K is 40000" in message and str(MAX_CODES) in message
    assert not (exp / "checkpoints").exists()


def test_prior_sample_refuses_an_absurd_code_rate_before_drawing(tmp_path, capsys, prior, no_drawing):
    tampered = tmp_path / "prior"
    shutil.copytree(prior, tampered)
    edited_json(tampered / "codes.json", code_rate_hz=1e9, frame_offset_s=0.0)
    message = cli_error(capsys, ["prior", "sample", tampered, "--speaker", SPEAKER, "--seconds", "1",
                                 "--codes_only", "--device", "cpu", "-o", tmp_path / "s"], "prior sample")
    assert "codes.json field code_rate_hz" in message
    assert not (tmp_path / "s").exists()


def test_prior_sample_refuses_a_codes_json_of_other_codes_than_its_checkpoint(tmp_path, capsys, prior,
                                                                               no_drawing):
    tampered = tmp_path / "prior"
    shutil.copytree(prior, tampered)
    edited_json(tampered / "codes.json", K=64)  # the checkpoint draws codes up to 127
    message = cli_error(capsys, ["prior", "sample", tampered, "--speaker", SPEAKER, "--seconds", "0.1",
                                 "--codes_only", "--device", "cpu", "-o", tmp_path / "s"], "prior sample")
    assert "K=64" in message and "K=128" in message and not (tmp_path / "s").exists()


# --- 4. prior checkpoints are checked when loaded ------------------------------------------------


def crafted(prior: Path, out: Path, change) -> Path:
    """A copy of the prior folder whose checkpoints were changed by ``change(ckpt)``."""
    shutil.copytree(prior, out)
    for path in (out / "checkpoints").glob("*.pt"):
        ckpt = torch.load(path, weights_only=True)
        change(ckpt)
        torch.save(ckpt, path)
    return out


DAMAGE = {
    "no num_codes": (lambda c: c.pop("num_codes"), "num_codes"),
    "num_codes text": (lambda c: c.update(num_codes="many"), "num_codes"),
    "num_codes huge": (lambda c: c.update(num_codes=3_000_000), "num_codes"),
    "level middle": (lambda c: c.update(level="middle"), "level"),
    "groups 0": (lambda c: c.update(groups=0), "groups"),
    "top malformed": (lambda c: c.update(top={"num_codes": "x"}), "top"),
    "top on a top prior": (lambda c: c.update(level="top", top={"num_codes": 8, "stride": 2}), "top"),
    "no speakers": (lambda c: c.update(speakers=[]), "speakers"),
    "data_usage text": (lambda c: c.update(data_usage=["a"]), "data_usage"),
    "no prior config": (lambda c: c["config"].pop("prior"), "prior section"),
    "prior layers 0": (lambda c: c["config"]["prior"].update(layers=0), "prior.layers=0"),
    "unknown arch": (lambda c: c["config"]["prior"].update(arch="lstm"), "prior.arch"),
    "wider than its weights": (lambda c: c["config"]["prior"].update(residual_channels=4096), "does not fit"),
    "foreign weights": (lambda c: c.update(model={"x": torch.zeros(1)}), "weight x"),
    "weights not tensors": (lambda c: c["model"].update({"output.3.bias": [0.0]}), "output.3.bias"),
}


@pytest.mark.parametrize("name", DAMAGE)
def test_damaged_prior_checkpoints_are_one_sentence_when_sampled(tmp_path, capsys, prior, no_drawing, name):
    change, word = DAMAGE[name]
    bad = crafted(prior, tmp_path / "prior", change)
    message = cli_error(capsys, ["prior", "sample", bad, "--speaker", SPEAKER, "--seconds", "0.1",
                                 "--codes_only", "--device", "cpu", "-o", tmp_path / "s"], "prior sample")
    assert str(bad / "checkpoints" / "best.pt") in message and "usable prior" in message
    assert word in message, message
    assert not (tmp_path / "s").exists()


def test_a_vqvae_checkpoint_is_not_sampled_as_a_prior(tmp_path, capsys, trained_tiny):
    message = cli_error(capsys, ["prior", "sample", trained_tiny, "--speaker", SPEAKER, "--codes_only",
                                 "-o", tmp_path / "s"], "prior sample")
    assert "vqvae model, not a prior" in message


@pytest.mark.parametrize("name", ["no num_codes", "level middle", "top malformed", "no prior config"])
def test_damaged_prior_checkpoints_are_one_sentence_when_resumed(tmp_path, capsys, prior, name):
    change, word = DAMAGE[name]
    bad = crafted(prior, tmp_path / "prior", change)
    message = cli_error(capsys, ["prior", "train", bad, "train.max_steps=3"], "prior train")
    assert str(bad / "checkpoints" / "last.pt") in message and word in message, message


def test_resuming_on_codes_of_another_k_is_refused_by_name(tmp_path, capsys, prior, codes):
    other = tmp_path / "codes"
    shutil.copytree(codes, other)
    edited_json(other / "codes.json", K=200)  # the same codes, all below 200: readable
    exp = tmp_path / "prior"
    shutil.copytree(prior, exp)
    message = cli_error(capsys, ["prior", "train", exp, f"data.codes={other}", "train.max_steps=3"], "prior train")
    assert "K=128" in message and "other codes" in message


def test_an_intact_prior_still_loads(prior):
    model, ckpt, _ = load_prior(prior, "cpu")
    assert ckpt["num_codes"] == 128 and model.num_codes == 128 and not model.training
    reference = torch.load(prior / "checkpoints" / "best.pt", weights_only=True)["model"]
    assert all(torch.equal(value, reference[name]) for name, value in model.state_dict().items())


# --- sixth pass -------------------------------------------------------------------------------


def test_a_prior_over_baseline_codes_is_not_decoded_by_a_vqvae(tmp_path, capsys, trained_tiny, demo_manifest,
                                                              no_drawing):
    baseline = tmp_path / "baseline"
    assert run_cli(["baseline", "mfcc-kmeans", demo_manifest, baseline, "--num_codes", "128"]) == 0
    prior = tmp_path / "prior"
    assert run_cli(["prior", "train", prior, *PRIOR, f"data.codes={baseline}", "train.max_steps=1"]) == 0
    for extra in ([], ["--vqvae", trained_tiny]):
        message = cli_error(capsys, ["prior", "sample", prior, "--speaker", SPEAKER, "--seconds", "0.1",
                                     "--device", "cpu", "-o", tmp_path / "s", *extra], "prior sample")
        assert "mfcc-kmeans" in message and "codes_only" in message
    assert not (tmp_path / "s").exists()


def test_a_prior_does_not_resume_on_codes_of_another_vqvae(tmp_path, capsys, trained_tiny, codes):
    own = tmp_path / "codes"
    shutil.copytree(codes, own)
    prior = tmp_path / "prior"
    assert run_cli(["prior", "train", prior, *PRIOR, f"data.codes={own}", "train.max_steps=1"]) == 0
    other = vqvae_variant(trained_tiny, tmp_path / "other")  # same sizes, other weights
    info = json.loads((own / "codes.json").read_text())
    (own / "codes.json").write_text(json.dumps({**info, "checkpoint": str(other / "checkpoints" / "last.pt")}))
    before = (prior / "codes.json").read_text()
    message = cli_error(capsys, ["prior", "train", prior, "train.max_steps=2"], "prior train")
    assert "new folder" in message and str(other) in message
    assert (prior / "codes.json").read_text() == before


@pytest.mark.parametrize("overrides,key", [
    (["prior=wavenet", "prior.layers=32", "prior.cycles=1"], "prior.cycles"),  # dilations up to 2^31
    (["prior=transformer", "prior.context=65536", "data.crop_frames=65536"], "data.crop_frames"),  # 1M codes
    (["prior=transformer", "prior.context=8192", "data.crop_frames=8192"], "data.crop_frames"),  # 4G scores
])
def test_prior_sizes_that_would_exhaust_memory_are_refused(tmp_path, capsys, codes, overrides, key):
    message = cli_error(capsys, ["prior", "train", tmp_path / "p", "device=cpu", "train.batch_size=16",
                                 f"data.codes={codes}", *overrides], "prior train")
    assert key in message and not (tmp_path / "p").exists()


def test_prior_sample_deletes_nothing_in_a_folder_it_did_not_write(tmp_path, capsys, prior, trained_tiny, no_drawing):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "samples.json").write_text('{"my": "notes"}\n')
    (out / "sample_take1.wav").write_text("x")
    (out / "scores.tsv").write_text("a\tb\n")
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    speaker = load_checkpoint(prior / "checkpoints" / "last.pt")["speakers"][0]
    message = cli_error(capsys, ["prior", "sample", prior, "--vqvae", trained_tiny, "--speaker", speaker,
                                 "--seconds", "0.2", "--num", "1", "-o", out, "--overwrite"], "prior sample")
    assert "did not write" in message
    (out / "units.txt").write_text("my transcripts\n")
    before["units.txt"] = (out / "units.txt").read_bytes()
    (out / "samples.json").write_text(json.dumps({"speaker": speaker, "wavs": [], "kept_bits_per_code": []}))
    before["samples.json"] = (out / "samples.json").read_bytes()
    message = cli_error(capsys, ["prior", "sample", prior, "--vqvae", trained_tiny, "--speaker", speaker,
                                 "--seconds", "0.2", "--num", "1", "-o", out, "--overwrite"], "prior sample")
    assert "not a codes folder" in message
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before  # nothing deleted, no mark left


def test_an_unknown_prior_key_names_the_keys_there_are(tmp_path, capsys, codes):
    message = cli_error(capsys, ["prior", "train", tmp_path / "p", f"data.codes={codes}", "prior=wavenet",
                                 "prior.d_model=32"], "prior train")
    assert "prior.d_model is not a setting of this configuration; prior has: arch," in message
    assert "residual_channels" in message and ".." not in message


def test_speakers_of_a_prior(capsys, prior):
    capsys.readouterr()
    assert run_cli(["speakers", prior]) == 0
    listed = capsys.readouterr().out.split()
    assert listed and listed == load_checkpoint(prior / "checkpoints" / "last.pt")["speakers"]


def test_prior_sample_refuses_less_than_one_code_and_records_the_decoders_step(tmp_path, capsys, prior,
                                                                               trained_tiny):
    speaker = load_checkpoint(prior / "checkpoints" / "last.pt")["speakers"][0]
    sample = ["prior", "sample", prior, "--vqvae", trained_tiny, "--speaker", speaker, "--num", "1"]
    message = cli_error(capsys, [*sample, "--seconds", "1e-9", "-o", tmp_path / "tiny"], "prior sample")
    assert "shorter than one code (0.01 s" in message and not (tmp_path / "tiny").exists()
    assert run_cli([*sample, "--seconds", "0.05", "-o", tmp_path / "s"]) == 0
    record = json.loads((tmp_path / "s" / "samples.json").read_text())
    assert record["step"] == load_checkpoint(trained_tiny / "checkpoints" / "last.pt")["step"] == 30
    assert record["prior_step"] == load_checkpoint(prior / "checkpoints" / "last.pt")["step"]


def test_an_exported_prior_is_checked_against_its_decoder_as_its_folder_is(tmp_path, capsys, prior, trained_tiny):
    """The export carries what the prior's folder knows of its codes (which codebook made them)."""
    other = tmp_path / "other"
    shutil.copytree(trained_tiny, other)
    ckpt = torch.load(other / "checkpoints" / "last.pt", weights_only=True)
    ckpt["model"]["quantizer.codebook"] += 0.5  # another codebook: another model's codes
    torch.save(ckpt, other / "checkpoints" / "last.pt")
    assert run_cli(["export", prior, tmp_path / "prior.pt"]) == 0
    speaker = load_checkpoint(prior / "checkpoints" / "last.pt")["speakers"][0]
    sample = ["prior", "sample", tmp_path / "prior.pt", "--speaker", speaker, "--seconds", "0.05", "--num", "1"]
    for given in (prior, tmp_path / "prior.pt"):
        message = cli_error(capsys, [*sample[:2], given, *sample[3:], "--vqvae", other, "-o", tmp_path / "x"],
                            "prior sample")
        assert "has another codebook than the one whose codes the prior learned" in message
    assert run_cli([*sample, "-o", tmp_path / "s"]) == 0  # the export names its VQ-VAE, as the folder does
