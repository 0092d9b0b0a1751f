"""`vqspeech enroll`: a new speaker's row fitted on a few recordings, every other parameter frozen,
for both decoders; resumable, exportable, and one sentence for every bad reference."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from conftest import FAST_TRAIN, cli_error, run_cli
from vqspeech.checkpoint import load_checkpoint
from vqspeech.data.manifest import read_manifest
from vqspeech.data.reference import load_reference
from vqspeech.inference import VQSpeech
from vqspeech.training.enroll import TABLE, EnrolOptions, draw_crops, enroll_speaker, with_new_speaker


@pytest.fixture(scope="module")
def recordings(demo_manifest, tmp_path_factory):
    """A folder with the train recordings of one demo speaker (the 'new' voice)."""
    utts = read_manifest(demo_manifest)
    speaker = utts[0].speaker
    folder = tmp_path_factory.mktemp("voice")
    for u in utts:
        if u.speaker == speaker:
            (folder / f"{u.id}.wav").symlink_to(u.audio)
    return folder


@pytest.fixture(scope="module")
def trained_conv(tmp_path_factory, demo_manifest):
    exp = tmp_path_factory.mktemp("conv") / "exp"
    assert run_cli(["train", exp, *FAST_TRAIN, "model.decoder_type=conv", "train.batch_size=4",
                    f"data.manifest={demo_manifest}", "train.max_steps=10"]) == 0
    return exp


def digest(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def mean_loss(model, audio, steps, speaker):
    """The decoder's loss on the enrolment's first ``steps`` batches for speaker id ``speaker``."""
    model.set_stage("decoder")
    model.eval()
    losses = []
    with torch.no_grad():
        for step in range(steps):
            batch, mask = draw_crops(audio, step, 0, 8, 4000)
            losses.append(float(model(batch, torch.full((8,), speaker), mask).loss))
    return float(np.mean(losses))


@pytest.mark.parametrize("decoder", ["wavenet", "conv"])
def test_enrolment_fits_only_the_new_row(decoder, trained_tiny, trained_conv, recordings, tmp_path, one_thread):
    exp = trained_tiny if decoder == "wavenet" else trained_conv
    before = digest(exp / "checkpoints" / "last.pt")
    out = tmp_path / "enrolled"
    options = EnrolOptions(steps=12, lr=0.05, minutes=None)
    summary = enroll_speaker(exp, "newcomer", [recordings], out, options, device="cpu", progress=False)
    assert summary["steps"] == 12 and summary["finished"]
    assert digest(exp / "checkpoints" / "last.pt") == before  # the source is only read

    old, new = load_checkpoint(exp / "checkpoints" / "last.pt"), load_checkpoint(out / "checkpoints" / "last.pt")
    assert new["speakers"] == [*old["speakers"], "newcomer"]
    assert (out / "speakers.txt").read_text().split() == new["speakers"]
    grown = 0
    for key, tensor in old["model"].items():
        if new["model"][key].shape == tensor.shape:
            assert torch.equal(new["model"][key], tensor), key
        else:  # a speaker table: the known rows bit-identical, one row more
            assert torch.equal(new["model"][key][:-1], tensor), key
            grown += 1
    assert grown >= 1
    table = new["model"][TABLE]
    assert not torch.equal(table[-1], old["model"][TABLE].mean(0))  # the row moved from its start

    # and the fitted row explains its recordings better than the starting point (the mean voice)
    audio = load_reference([recordings], 8000)
    source = VQSpeech.load(exp, "cpu")
    start = with_new_speaker(source.model, source.config["model"], len(source.speakers))
    enrolled = VQSpeech.load(out, "cpu").model
    speaker = len(source.speakers)
    assert mean_loss(enrolled, audio, 12, speaker) < mean_loss(start, audio, 12, speaker)


def test_an_enrolled_model_converts_resumes_and_exports(trained_tiny, recordings, tmp_path, one_thread):
    out = tmp_path / "enrolled"
    common = ["enroll", trained_tiny, "newcomer", recordings, "-o", out, "--minutes", "0", "--device", "cpu"]
    assert run_cli([*common, "--steps", "3"]) == 0
    assert run_cli([*common, "--steps", "6"]) == 0  # continues from step 3
    straight = tmp_path / "straight"
    assert run_cli(["enroll", trained_tiny, "newcomer", recordings, "-o", straight, "--minutes", "0",
                    "--steps", "6", "--device", "cpu"]) == 0
    resumed, whole = (load_checkpoint(p / "checkpoints" / "last.pt") for p in (out, straight))
    assert resumed["enrolment_state"]["step"] == 6
    assert torch.equal(resumed["model"][TABLE], whole["model"][TABLE])  # bit-exact across the stop
    assert json.loads((out / "enrolment.json").read_text())["steps"] == 6

    vq = VQSpeech.load(out, "cpu")
    audio, sr = sf.read(next(recordings.iterdir()), dtype="float32")
    converted = vq.convert(audio[:4000], sr, speaker="newcomer", temperature=0)
    assert converted.shape == (4000,) and np.isfinite(converted).all()

    assert run_cli(["export", out, tmp_path / "shared.pt"]) == 0
    shared = load_checkpoint(tmp_path / "shared.pt")
    assert "enrolment_state" not in shared and shared["enrolment"]["name"] == "newcomer"
    assert VQSpeech.load(tmp_path / "shared.pt", "cpu").speakers[-1] == "newcomer"


def test_bad_references_are_one_sentence(trained_tiny, recordings, tmp_path, capsys):
    wav = next(recordings.iterdir())
    audio, _ = sf.read(wav, dtype="float32")
    silent, short, low, corrupt = (tmp_path / n for n in ("silent.wav", "short.wav", "low.wav", "corrupt.wav"))
    sf.write(silent, np.zeros(16000, dtype=np.float32), 8000)
    sf.write(short, audio[:2000], 8000)
    sf.write(low, audio[::2], 4000)
    corrupt.write_bytes(b"RIFF not really a wave file")
    out = tmp_path / "out"

    def error(*args):
        return cli_error(capsys, ["enroll", trained_tiny, *args, "--steps", "1", "--device", "cpu"], "enroll")

    assert "silent" in error("newcomer", silent, "-o", out)
    assert "too short" in error("newcomer", short, "-o", out)
    assert "4000 Hz" in error("newcomer", low, "-o", out)
    assert "corrupt.wav" in error("newcomer", corrupt, "-o", out)
    assert "does not exist" in error("newcomer", tmp_path / "missing.wav", "-o", out)
    known = VQSpeech.load(trained_tiny, "cpu").speakers[0]
    assert "already knows" in error(known, recordings, "-o", out)
    assert "plain name" in error("../x", recordings, "-o", out)
    assert "overlaps" in error("newcomer", recordings, "-o", trained_tiny / "sub")
    assert not out.exists()  # nothing was written for any of them


def test_an_empty_folder_and_a_foreign_output_are_refused(trained_tiny, recordings, tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    message = cli_error(capsys, ["enroll", trained_tiny, "newcomer", empty, "--device", "cpu"], "enroll")
    assert "no sound files" in message
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    message = cli_error(capsys, ["enroll", trained_tiny, "newcomer", recordings, "-o", foreign, "--steps", "1",
                                 "--device", "cpu"], "enroll")
    assert "not an enrolment" in message
    assert (foreign / "notes.txt").read_text() == "mine"


def test_a_name_that_is_not_plain_or_an_empty_recording_is_one_sentence_before_work(trained_tiny, recordings,
                                                                                     tmp_path, capsys, monkeypatch):
    """Without -o the folder is built from the name: a bad name is refused first, not a traceback;
    an empty recording path ('' would be the working directory) is refused."""
    monkeypatch.chdir(tmp_path)
    assert "plain name" in cli_error(capsys, ["enroll", trained_tiny, "a/b", recordings, "--steps", "1"], "enroll")
    assert "not an experiment folder" in cli_error(capsys, ["enroll", "/", "anna", recordings], "enroll")
    assert "empty" in cli_error(capsys, ["enroll", trained_tiny, "anna", "", "-o", tmp_path / "o", "--steps", "1"],
                                "enroll")
    assert not any(tmp_path.iterdir())


def test_a_resumed_enrolment_refuses_a_changed_model_or_recording(trained_tiny, recordings, tmp_path, capsys,
                                                                  one_thread):
    source = tmp_path / "source"
    shutil.copytree(trained_tiny, source)
    out = tmp_path / "enrolled"
    args = ["enroll", source, "newcomer", recordings, "-o", out, "--device", "cpu", "--minutes", "0"]
    assert run_cli([*args, "--steps", "2"]) == 0
    last = source / "checkpoints" / "last.pt"
    os.utime(last, ns=(last.stat().st_atime_ns, last.stat().st_mtime_ns + 10**9))  # the model was trained on
    before = digest(out / "checkpoints" / "last.pt")
    assert "another state of the model" in cli_error(capsys, [*args, "--steps", "4"], "enroll")
    assert digest(out / "checkpoints" / "last.pt") == before
    assert run_cli([*args, "--steps", "4", "--overwrite"]) == 0  # starts again on the model as it is now
    assert json.loads((out / "enrolment.json").read_text())["steps"] == 4


def test_overwrite_replaces_an_enrolment_under_a_mistyped_name(trained_tiny, recordings, tmp_path, capsys,
                                                               one_thread):
    out = tmp_path / "enrolled"
    base = ["enroll", trained_tiny]
    tail = [recordings, "-o", out, "--device", "cpu", "--minutes", "0", "--steps", "1"]
    assert run_cli([*base, "anaa", *tail]) == 0
    assert "enrolment of 'anaa'" in cli_error(capsys, [*base, "anna", *tail], "enroll")
    (out / "metrics.json").write_text('{"bits_per_sample": 5.0}\n')  # results of the replaced enrolment
    (out / "report.html").write_text("<html>anaa</html>\n")
    (out / "eval_convert").mkdir()
    assert "eval_convert holds an evaluation" in cli_error(capsys, [*base, "anna", *tail, "--overwrite"], "enroll")
    (out / "eval_convert").rmdir()
    assert run_cli([*base, "anna", *tail, "--overwrite"]) == 0
    assert json.loads((out / "enrolment.json").read_text())["name"] == "anna"
    assert not (out / "metrics.json").exists() and not (out / "report.html").exists()


def test_a_loose_checkpoint_enrols_beside_itself(trained_tiny, recordings, tmp_path, capsys, one_thread):
    from vqspeech.cli import default_enrol_folder

    models = tmp_path / "models"
    models.mkdir()
    assert run_cli(["export", trained_tiny, models / "m.pt"]) == 0
    assert default_enrol_folder(models / "m.pt", "anna") == models / "m-anna"
    assert default_enrol_folder(trained_tiny / "checkpoints" / "last.pt", "anna") == Path(f"{trained_tiny}-anna")
    assert run_cli(["enroll", models / "m.pt", "anna", recordings, "-o", models / "enrolled", "--steps", "1",
                    "--minutes", "0", "--device", "cpu"]) == 0
    assert "anna" in VQSpeech.load(models / "enrolled", "cpu").speakers
    wav = next(recordings.iterdir())
    message = cli_error(capsys, ["enroll", trained_tiny, "anna", recordings, wav, "-o", tmp_path / "o"], "enroll")
    assert f"Recording {wav} is given twice" in message


def test_a_batch_beyond_the_step_bound_is_refused_before_work(trained_tiny, recordings, tmp_path, capsys):
    out = tmp_path / "o"
    message = cli_error(capsys, ["enroll", trained_tiny, "anna", recordings, "-o", out, "--batch_size", "1024",
                                 "--device", "cpu"], "enroll")
    assert "batch_size" in message and not out.exists()


def test_a_resumed_enrolment_refuses_other_settings_and_records_them(trained_tiny, recordings, tmp_path, capsys,
                                                                    one_thread):
    """Crops are a function of (seed, step) and Adam's state of lr: a resume with others would not
    continue the enrolment it names."""
    out = tmp_path / "enrolled"
    args = ["enroll", trained_tiny, "newcomer", recordings, "-o", out, "--device", "cpu", "--minutes", "0"]
    assert run_cli([*args, "--steps", "1"]) == 0
    record = json.loads((out / "enrolment.json").read_text())
    assert record["options"] == {"lr": 1e-2, "batch_size": 8, "crop_seconds": 0.5, "seed": 0}
    before = digest(out / "checkpoints" / "last.pt")
    message = cli_error(capsys, [*args, "--steps", "2", "--lr", "0.5", "--seed", "7"], "enroll")
    assert "other settings (lr 0.01 -> 0.5, seed 0 -> 7)" in message and "--overwrite" in message
    assert "batch_size 8 -> 2" in cli_error(capsys, [*args, "--steps", "2", "--batch_size", "2"], "enroll")
    assert digest(out / "checkpoints" / "last.pt") == before
    assert run_cli([*args, "--steps", "2"]) == 0


def test_a_name_known_in_another_case_or_read_as_an_option_is_refused(trained_tiny, recordings, tmp_path, capsys):
    known = VQSpeech.load(trained_tiny, "cpu").speakers[0]
    out = tmp_path / "o"
    for name in (known.upper(), known.capitalize()):
        if name != known:
            message = cli_error(capsys, ["enroll", trained_tiny, name, recordings, "-o", out], "enroll")
            assert f"already knows a speaker {known!r}" in message
    message = cli_error(capsys, ["enroll", trained_tiny, "-o", out, "--", "-x", recordings], "enroll")
    assert "'-x' is not a plain name" in message and "starting with a letter" in message
    assert not out.exists()
