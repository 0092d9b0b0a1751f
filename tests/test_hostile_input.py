"""Hostile and careless input, one class at a time: nothing is written outside its output folder,
one writer per experiment or codes folder, `prepare` never touches its input, resuming does not
depend on the working directory, results that cannot be right are refused, configuration errors
are caught before work starts, and operating-system errors are one sentence."""

from __future__ import annotations

import argparse
import copy
import dataclasses
import errno
import json
import os
import shutil
import socket
import subprocess
import sys
import warnings
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from conftest import FAST_TRAIN, cli_error, run_cli
from vqspeech.data.align import align_corpus
from vqspeech.data.codes import CodesFolder, CodesWriter, Encoding
from vqspeech.data.corpora import find_utterances
from vqspeech.data.dataset import CropDataset, CropRequest
from vqspeech.data.manifest import is_safe_speaker, read_manifest
from vqspeech.data.prepare import prepare_corpus
from vqspeech.errors import UserError
from vqspeech.eval import conversion as conversion_module
from vqspeech.inference import VQSpeech
from vqspeech.fileio import FolderLock, atomic_path, is_safe_name, process_alive, process_start

NO_READERS = shutil.ignore_patterns(".vqspeech-readers")  # entries a killed reader of a shared fixture left

PRIOR = ["prior=wavenet", "prior.residual_channels=16", "prior.gate_channels=32", "prior.skip_channels=16",
         "prior.layers=4", "prior.cycles=1", "prior.dropout=0.0", "device=cpu", "data.crop_frames=32",
         "train.batch_size=4", "train.log_every=5", "train.valid_every=1000", "train.media_every=0",
         "train.checkpoint_every=1000"]


def files_under(folder: Path) -> set[Path]:
    return {p for p in folder.rglob("*") if p.is_file()}


def manifest_lines(manifest: Path) -> list[dict]:
    return [json.loads(line) for line in manifest.read_text().splitlines() if line.strip()]


def write_lines(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def absolute_rows(manifest: Path) -> list[dict]:
    """The manifest's rows with absolute audio and alignment paths (so a copy elsewhere works)."""
    rows = manifest_lines(manifest)
    for row in rows:
        for key in ("audio", "alignment"):
            if row.get(key):
                row[key] = str((manifest.parent / row[key]).resolve())
    return rows


@pytest.fixture(scope="module")
def codes(tmp_path_factory, trained_tiny, demo_manifest) -> Path:
    out = tmp_path_factory.mktemp("hostile_codes") / "codes"
    assert run_cli(["encode", trained_tiny, demo_manifest, out, "--latents"]) == 0
    return out


# --- 1. a manifest is untrusted input --------------------------------------------------------


@pytest.mark.parametrize("bad_id", ["/tmp/vqspeech_escape_abs", "../../escape", "a/b", "..", ".hidden", "a b", "a" * 201])
def test_manifest_ids_are_checked_where_the_manifest_is_read(tmp_path, demo_manifest, bad_id):
    rows = absolute_rows(demo_manifest)
    rows[1]["id"] = bad_id
    bad = write_lines(tmp_path / "m" / "manifest.jsonl", rows)
    with pytest.raises(UserError, match=r"line 2") as info:
        read_manifest(bad)
    assert repr(bad_id) in str(info.value) or bad_id in str(info.value)


@pytest.mark.parametrize("bad_speaker", ["../x", "a/b", "new\nline", "tab\there", "", ".."])
def test_manifest_speakers_are_checked(tmp_path, demo_manifest, bad_speaker):
    rows = absolute_rows(demo_manifest)
    rows[0]["speaker"] = bad_speaker
    with pytest.raises(UserError, match=r"line 1"):
        read_manifest(write_lines(tmp_path / "manifest.jsonl", rows))


def test_no_verb_writes_outside_its_folder_for_a_hostile_manifest(tmp_path, capsys, trained_tiny, demo_manifest,
                                                                   codes):
    rows = absolute_rows(demo_manifest)
    victim = tmp_path / "victim"
    rows[0]["id"] = str(victim)  # an absolute path as the id
    rows[1]["id"] = "../../victim2"
    bad = write_lines(tmp_path / "work" / "m" / "manifest.jsonl", rows)
    out = tmp_path / "work" / "out" / "x"
    before = files_under(tmp_path)
    for command, argv in (
        ("encode", ["encode", trained_tiny, bad, out / "codes"]),
        ("convert", ["convert", trained_tiny, bad, "--speaker", "us_f3", "-o", out / "conv", "--limit", "2"]),
        ("baseline", ["baseline", "mfcc-kmeans", bad, out / "base", "--num_codes", "4"]),
        ("align", ["align", bad, out / "align"]),
        ("evaluate conversion", ["evaluate", "conversion", trained_tiny, "--manifest", bad, "--out", out / "ev"]),
        ("evaluate probe", ["evaluate", "probe", "--codes", codes, "--manifest", bad, "--out", out / "p.json"]),
    ):
        message = cli_error(capsys, argv, command)
        assert "manifest" in message.lower() and "id" in message
    assert files_under(tmp_path) == before
    assert not victim.exists() and not (tmp_path / "victim2").exists()


@pytest.mark.parametrize("name", ["../x", "/abs/x", "a/../../x", ""])
def test_per_utterance_writers_stay_inside_their_folder(tmp_path, name):
    writer = CodesWriter(tmp_path / "codes")
    with pytest.raises(UserError, match="outside|not a safe"):
        writer.add(name, Encoding(np.zeros(3, dtype=np.int16)))
    assert files_under(tmp_path) == {tmp_path / "codes" / ".vqspeech-codes"}  # the writer's mark only


# --- 2. one writer per experiment or codes folder ----------------------------------------------


@pytest.fixture
def sleeper():
    """A live process that is not this one (the holder of a lock), stopped afterwards."""
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    yield proc
    proc.kill()
    proc.wait()


def hold_lock(folder: Path, pid: int, verb: str = "train") -> Path:
    """Write the lock a running `vqspeech VERB` with process id ``pid`` would hold on ``folder``."""
    lock = FolderLock(folder, verb)
    folder.mkdir(parents=True, exist_ok=True)
    lock.path.write_text(json.dumps({"pid": pid, "host": lock.host, "verb": verb, "started": time.time(),
                                     "process_start": process_start(pid)}))
    return lock.path


def test_a_second_train_on_a_busy_folder_is_refused(tmp_path, capsys, demo_manifest, sleeper):
    exp = tmp_path / "exp"
    lock = hold_lock(exp, sleeper.pid)
    message = cli_error(capsys, ["train", exp, *FAST_TRAIN, f"data.manifest={demo_manifest}", "train.max_steps=1"],
                        "train")
    assert str(sleeper.pid) in message and str(exp) in message
    assert files_under(exp) == {lock}  # nothing written, the holder's lock kept


def test_a_stale_lock_of_a_killed_run_is_taken_over(tmp_path, demo_manifest):
    exp = tmp_path / "exp"
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    hold_lock(exp, dead.pid)
    assert run_cli(["train", exp, *FAST_TRAIN, f"data.manifest={demo_manifest}", "train.max_steps=1"]) == 0
    assert not FolderLock(exp, "train").path.exists()  # released at the end


def test_two_real_trainings_on_one_folder(tmp_path, capsys, demo_manifest):
    """A second `train` while the first runs: refused, and the first one's files stay its own."""
    exp = tmp_path / "exp"
    first = subprocess.Popen(
        [sys.executable, "-m", "vqspeech.cli", "train", str(exp), *FAST_TRAIN, f"data.manifest={demo_manifest}",
         "train.max_steps=100000", "train.max_minutes=2"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env={**os.environ, "OMP_NUM_THREADS": "1"})
    try:
        deadline = time.time() + 120
        while not (exp / "config.yaml").is_file() and time.time() < deadline:
            time.sleep(0.2)
        assert (exp / "config.yaml").is_file()
        config = (exp / "config.yaml").read_bytes()
        message = cli_error(capsys, ["train", exp, *FAST_TRAIN, f"data.manifest={demo_manifest}",
                                     "train.max_steps=3", "model.decoder.layers=4"], "train")
        assert "in use" in message and str(first.pid) in message
        assert (exp / "config.yaml").read_bytes() == config
    finally:
        first.terminate()  # SIGTERM: the run ends as Ctrl-C ends it, its entry as a reader of the demo corpus too
        try:
            first.wait(timeout=60)
        except subprocess.TimeoutExpired:
            first.kill()
            first.wait()


def test_other_writers_take_the_lock_too(tmp_path, capsys, trained_tiny, demo_manifest, codes, sleeper):
    for command, folder, argv in (
        ("encode", tmp_path / "c", ["encode", trained_tiny, demo_manifest, tmp_path / "c"]),
        ("prior train", tmp_path / "p", ["prior", "train", tmp_path / "p", *PRIOR, f"data.codes={codes}"]),
        ("baseline", tmp_path / "b", ["baseline", "mfcc-kmeans", demo_manifest, tmp_path / "b"]),
        ("evaluate conversion", tmp_path / "e", ["evaluate", "conversion", trained_tiny, "--out", tmp_path / "e"]),
        ("decode", tmp_path / "d", ["decode", trained_tiny, codes, "-o", tmp_path / "d"]),
    ):
        lock = hold_lock(folder, sleeper.pid, "something")
        assert str(sleeper.pid) in cli_error(capsys, argv, command)
        assert files_under(folder) == {lock}


# --- 3. prepare never touches its input ----------------------------------------------------------


def small_corpus(root: Path, demo_manifest: Path, n: int = 4) -> Path:
    for row in manifest_lines(demo_manifest)[:n]:
        audio, sr = sf.read(demo_manifest.parent / row["audio"])
        (root / row["speaker"]).mkdir(parents=True, exist_ok=True)
        sf.write(root / row["speaker"] / f"{row['id']}.wav", audio, sr)
    return root


@pytest.mark.parametrize("where", ["corpus inside out", "out inside corpus", "same"])
def test_prepare_refuses_overlapping_corpus_and_output(tmp_path, capsys, demo_manifest, where):
    if where == "corpus inside out":
        out, corpus = tmp_path / "out", tmp_path / "out" / "wavs"
    elif where == "out inside corpus":
        corpus, out = tmp_path / "corpus", tmp_path / "corpus" / "prepared"
    else:
        corpus = out = tmp_path / "corpus"
    small_corpus(corpus, demo_manifest)
    before = {p: p.read_bytes() for p in files_under(corpus)}
    for extra in ([], ["--overwrite"]):
        message = cli_error(capsys, ["prepare", corpus, out, "--layout", "folder", "--sample_rate", "8000",
                                     "--num_workers", "0", *extra], "prepare")
        assert str(corpus) in message or str(out) in message
        assert {p: p.read_bytes() for p in files_under(corpus)} == before


def test_prepare_overwrite_removes_only_what_it_wrote(tmp_path, demo_manifest):
    corpus = small_corpus(tmp_path / "corpus", demo_manifest)
    out = tmp_path / "out"
    assert run_cli(["prepare", corpus, out, "--layout", "folder", "--num_workers", "0", "--sample_rate", "8000"]) == 0
    mine = [out / "notes.txt", out / "wavs" / "keep.txt", out / "wavs" / "mine.wav"]
    for path in mine:
        path.write_text("the user's")
    # another corpus into the same folder: its cached audio must go, the user's files stay
    other = tmp_path / "other"
    shutil.copytree(corpus, other)
    corpus_files = {p: p.read_bytes() for p in files_under(corpus) | files_under(other)}
    assert run_cli(["prepare", other, out, "--layout", "folder", "--num_workers", "0", "--sample_rate", "16000",
                    "--overwrite"]) == 0
    assert all(p.read_text() == "the user's" for p in mine)
    assert {p: p.read_bytes() for p in files_under(corpus) | files_under(other)} == corpus_files
    assert all(sf.info(u.audio).samplerate == 16000 for u in read_manifest(out / "manifest.jsonl"))


def test_prepare_refuses_a_wavs_folder_it_did_not_write(tmp_path, capsys, demo_manifest):
    corpus = small_corpus(tmp_path / "corpus", demo_manifest)
    out = tmp_path / "out"
    (out / "wavs").mkdir(parents=True)
    (out / "wavs" / "holiday.wav").write_bytes(b"not ours")
    message = cli_error(capsys, ["prepare", corpus, out, "--layout", "folder", "--num_workers", "0"], "prepare")
    assert "wavs" in message
    assert (out / "wavs" / "holiday.wav").read_bytes() == b"not ours"


# --- 4. resuming does not depend on the working directory ----------------------------------------


def test_prior_resume_from_another_directory_trains_on_the_same_codes(tmp_path, monkeypatch, codes):
    first, second = tmp_path / "a", tmp_path / "b"
    for place in (first, second):
        (place / "enc").mkdir(parents=True)
        shutil.copytree(codes, place / "enc" / "codes")
    (second / "enc" / "codes" / "codes.json").write_text(
        (second / "enc" / "codes" / "codes.json").read_text().replace('"K": 128', '"K": 129'))
    exp = tmp_path / "prior"
    monkeypatch.chdir(first)
    assert run_cli(["prior", "train", exp, *PRIOR, "data.codes=enc/codes", "train.max_steps=2"]) == 0
    saved = (exp / "config.yaml").read_text()
    assert str(first / "enc" / "codes") in saved and str(first / "enc" / "codes") in (exp / "overrides.yaml").read_text()
    monkeypatch.chdir(second)
    assert run_cli(["prior", "train", exp, "train.max_steps=3"]) == 0
    assert str(first / "enc" / "codes") in (exp / "config.yaml").read_text()


# --- 5. results that cannot be right are refused -------------------------------------------------


def test_probe_refuses_codes_whose_length_does_not_fit_the_audio(tmp_path, capsys, codes, demo_manifest):
    wrong = tmp_path / "wrong"
    shutil.copytree(codes, wrong)
    for path in (wrong / "codes").glob("*.npy"):
        np.save(path, np.tile(np.load(path), 5))
    shutil.rmtree(wrong / "latents")
    message = cli_error(capsys, ["evaluate", "probe", "--codes", wrong, "--manifest", demo_manifest, "--out",
                                 tmp_path / "p.json", "--no_abx"], "evaluate probe")
    assert "frames" in message and "code rate" in message
    assert not (tmp_path / "p.json").exists()


def test_probe_refuses_latents_that_do_not_fit_the_codes(tmp_path, capsys, codes, demo_manifest):
    wrong = tmp_path / "wrong"
    shutil.copytree(codes, wrong)
    first = sorted((wrong / "latents").glob("*.npy"))[0]
    np.save(first, np.load(first)[:-3])
    message = cli_error(capsys, ["evaluate", "probe", "--codes", wrong, "--manifest", demo_manifest, "--out",
                                 tmp_path / "p.json", "--no_abx"], "evaluate probe")
    assert first.stem in message and "latents" in message


def test_audio_with_nan_is_refused_by_encode_and_convert(tmp_path, capsys, trained_tiny):
    audio = 0.1 * np.random.default_rng(0).standard_normal(1600).astype(np.float32)
    audio[100] = np.nan
    bad = tmp_path / "in" / "nan.wav"
    bad.parent.mkdir()
    sf.write(bad, audio, 8000, subtype="FLOAT")
    message = cli_error(capsys, ["convert", trained_tiny, bad, "--speaker", "us_f3", "-o", tmp_path / "o.wav"],
                        "convert")
    assert "NaN" in message and str(bad) in message
    assert not (tmp_path / "o.wav").exists()
    cli_error(capsys, ["encode", trained_tiny, bad, tmp_path / "codes"], "encode")  # its only input: rejected
    rejects = (tmp_path / "codes" / "rejects.tsv")
    assert not rejects.exists() or "NaN" in rejects.read_text()


def test_manifest_sample_rate_is_checked_against_the_file(tmp_path, capsys, trained_tiny, demo_manifest):
    rows = absolute_rows(demo_manifest)
    for row in rows:
        if row["split"] == "test":
            audio, sr = sf.read(row["audio"])
            path = tmp_path / "audio" / f"{row['id']}.wav"
            path.parent.mkdir(exist_ok=True)
            sf.write(path, np.repeat(audio, 2), 2 * sr)  # 16 kHz audio, the manifest still says 8 kHz
            row["audio"] = str(path)
            victim = path
    bad = write_lines(tmp_path / "m" / "manifest.jsonl", rows)
    message = cli_error(capsys, ["evaluate", "loss", trained_tiny, "--manifest", bad, "--split", "test"],
                        "evaluate loss")
    assert "16000" in message and "8000" in message
    message = cli_error(capsys, ["baseline", "mfcc-kmeans", bad, tmp_path / "base", "--num_codes", "4"], "baseline")
    assert "16000" in message and str(victim.parent) in message


# --- 6. configuration errors are caught before work starts ---------------------------------------


@pytest.mark.parametrize("override,key", [
    ("+train.max_stepz=2", "train.max_stepz"),
    ("+model.decoder.layerz=3", "model.decoder.layerz"),
    ("model.decoder.layers=0", "model.decoder.layers"),
    ("model.decoder.cycles=4", "model.decoder.cycles"),
    ("model.encoder.channels=-1", "model.encoder.channels"),
    ("train.lr=1e308", "train.lr"),
    ("train.lr=nan", "train.lr"),
    ("model.quantizer.groups=3", "model.quantizer.groups"),
    ("model.jitter=1.5", "model.jitter"),
])
def test_bad_config_values_name_the_key_before_anything_is_written(tmp_path, capsys, demo_manifest, override, key):
    exp = tmp_path / "exp"
    message = cli_error(capsys, ["train", exp, *FAST_TRAIN, f"data.manifest={demo_manifest}", "train.max_steps=1",
                                 override], "train")
    assert key in message
    assert not exp.exists()


def test_a_typo_gets_a_suggestion(tmp_path, capsys, demo_manifest):
    message = cli_error(capsys, ["train", tmp_path / "e", *FAST_TRAIN, f"data.manifest={demo_manifest}",
                                 "+train.max_stepz=2"], "train")
    assert "train.max_steps" in message


def test_bad_prior_config_values_name_the_key(tmp_path, capsys, codes):
    for override, key in (("+train.max_stepz=2", "train.max_stepz"), ("prior.layers=0", "prior.layers"),
                          ("prior.dropout=2", "prior.dropout")):
        message = cli_error(capsys, ["prior", "train", tmp_path / "p", *PRIOR, f"data.codes={codes}", override],
                            "prior train")
        assert key in message
        assert not (tmp_path / "p").exists()


def test_a_run_that_fails_before_its_first_checkpoint_does_not_block_the_corrected_one(tmp_path, demo_manifest):
    rows = [dict(row, audio=str(tmp_path / "gone.wav")) for row in absolute_rows(demo_manifest)]
    broken = write_lines(tmp_path / "broken" / "manifest.jsonl", rows)  # the first batch fails
    exp = tmp_path / "exp"
    train = ["train", exp, *FAST_TRAIN, "train.max_steps=2"]
    assert run_cli([*train, f"data.manifest={broken}", "model.decoder.layers=6"]) == 2
    assert not (exp / "checkpoints" / "last.pt").exists()
    assert run_cli([*train, f"data.manifest={demo_manifest}", "model.decoder.layers=4"]) == 0


# --- 7. operating-system errors are one sentence, found early -------------------------------------


def test_an_output_path_that_is_a_file(tmp_path, capsys, trained_tiny, demo_manifest, codes):
    file = tmp_path / "file"
    file.write_text("x")
    for command, argv in (
        ("encode", ["encode", trained_tiny, demo_manifest, file]),
        ("encode", ["encode", trained_tiny, demo_manifest, file / "codes"]),
        ("train", ["train", file / "exp", *FAST_TRAIN, f"data.manifest={demo_manifest}", "train.max_steps=1"]),
        ("decode", ["decode", trained_tiny, codes, "-o", file / "wavs"]),
        ("report", ["report", trained_tiny, "--out", file / "r.html"]),
        ("prepare", ["prepare", demo_manifest.parent / "wavs", file, "--layout", "folder"]),
    ):
        cli_error(capsys, argv, command)
    assert file.read_text() == "x"


def test_a_full_disk_is_one_sentence(tmp_path, capsys, monkeypatch, trained_tiny, demo_manifest):
    import vqspeech.data.codes as codes_module

    def full(path, array):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(codes_module, "_save_npy", full)
    message = cli_error(capsys, ["encode", trained_tiny, demo_manifest, tmp_path / "c"], "encode")
    assert "No space left on device" in message


def test_a_cleanup_error_never_hides_the_original_one(tmp_path, monkeypatch):
    real_unlink = Path.unlink

    def failing_unlink(self, missing_ok=False):
        if ".tmp" in self.name:
            raise PermissionError(errno.EACCES, "Permission denied", str(self))
        return real_unlink(self, missing_ok=missing_ok)

    monkeypatch.setattr(Path, "unlink", failing_unlink)
    with pytest.raises(ValueError, match="the original"):
        with atomic_path(tmp_path / "x.txt") as tmp:
            tmp.write_text("half")
            raise ValueError("the original")


def test_links_that_loop_in_a_corpus(tmp_path, demo_manifest):
    corpus = small_corpus(tmp_path / "corpus", demo_manifest, n=2)
    (corpus / "loop.wav").symlink_to(corpus / "loop.wav")
    (corpus / "sub").mkdir()
    (corpus / "sub" / "up").symlink_to(corpus)
    assert run_cli(["prepare", corpus, tmp_path / "out", "--layout", "folder", "--num_workers", "0",
                    "--sample_rate", "8000"]) == 0
    assert len(read_manifest(tmp_path / "out" / "manifest.jsonl")) == 2
    assert "loop.wav" in (tmp_path / "out" / "rejects.tsv").read_text()


def test_file_names_that_are_not_utf8(tmp_path, capsys, demo_manifest, trained_tiny):
    """A file or folder name with bytes that are not UTF-8: its audio is read, a speaker folder so
    named is rejected (it could not be read back from the manifest), every text file written stays
    UTF-8, and an experiment folder so named is refused before anything is written."""
    root = os.fsencode(tmp_path)
    corpus = small_corpus(tmp_path / "corpus", demo_manifest, n=2)
    wav = next((corpus / next(p.name for p in corpus.iterdir())).iterdir())
    os.rename(os.fsencode(wav), os.fsencode(wav.parent) + b"/take\xff1.wav")
    os.mkdir(root + b"/corpus/spk\xfe")
    shutil.copy(demo_manifest.parent / manifest_lines(demo_manifest)[3]["audio"], root + b"/corpus/spk\xfe/x.wav")
    out = tmp_path / "out"
    assert run_cli(["prepare", corpus, out, "--layout", "folder", "--num_workers", "0", "--sample_rate", "8000"]) == 0
    ids = [u.id for u in read_manifest(out / "manifest.jsonl")]
    assert len(ids) == 2 and any("take" in i for i in ids)
    rejects = (out / "rejects.tsv").read_bytes().decode("utf-8")
    assert "x.wav" in rejects and "UTF-8" in rejects

    assert run_cli(["encode", trained_tiny, os.fsdecode(os.fsencode(wav.parent) + b"/take\xff1.wav"),
                    os.fsdecode(root + b"/codes\xff")]) == 0
    assert len(os.listdir(root + b"/codes\xff/codes")) == 1
    (Path(os.fsdecode(root + b"/codes\xff")) / "units.txt").read_bytes().decode("utf-8")

    exp = os.fsdecode(root + b"/exp\xff")
    message = cli_error(capsys, ["train", exp, f"data.manifest={out / 'manifest.jsonl'}", *FAST_TRAIN], "train")
    assert "UTF-8" in message and not os.path.exists(exp)


@pytest.mark.parametrize("change,word", [
    (lambda row: row.update(duration="long"), "duration"),
    (lambda row: row.update(sample_rate="8k"), "sample_rate"),
    (lambda row: row.update(speaker=5), "speaker"),
    (lambda row: row.update(split="bogus"), "split"),
    (lambda row: row.update(duration=float("nan")), "duration"),
    (lambda row: row.update(text=3), "text"),
    (lambda row: row.update(audio=["a"]), "audio"),
])
def test_wrongly_typed_manifest_fields(tmp_path, demo_manifest, change, word):
    rows = absolute_rows(demo_manifest)
    change(rows[2])
    with pytest.raises(UserError, match=rf"line 3.*{word}"):
        read_manifest(write_lines(tmp_path / "manifest.jsonl", rows))


def test_a_manifest_that_is_not_utf8(tmp_path, capsys, trained_tiny):
    bad = tmp_path / "manifest.jsonl"
    bad.write_bytes(b'{"id": "a\xff\xfe", "audio": "x.wav"}\n')
    message = cli_error(capsys, ["encode", trained_tiny, bad, tmp_path / "c"], "encode")
    assert str(bad) in message and "UTF-8" in message


@pytest.mark.parametrize("field,value", [("K", "many"), ("speakers", ["a"]), ("groups", 0),
                                         ("code_rate_hz", float("inf")), ("splits", {"x": 3}),
                                         ("hop_length", "80")])
def test_wrongly_typed_codes_json(tmp_path, capsys, codes, trained_tiny, field, value):
    bad = tmp_path / "codes"
    shutil.copytree(codes, bad)
    info = json.loads((bad / "codes.json").read_text())
    info[field] = value
    (bad / "codes.json").write_text(json.dumps(info))
    message = cli_error(capsys, ["decode", trained_tiny, bad, "-o", tmp_path / "o"], "decode")
    assert field in message and "codes.json" in message


def test_sampling_lengths_and_temperatures_have_limits(tmp_path, capsys, codes, trained_tiny):
    prior = tmp_path / "prior"
    assert run_cli(["prior", "train", prior, *PRIOR, f"data.codes={codes}", "train.max_steps=1"]) == 0
    sample = ["prior", "sample", prior, "--speaker", "us_f3", "-o", tmp_path / "s"]
    for extra, word in ((["--seconds", "inf"], "seconds"), (["--seconds", "1e9"], "seconds"),
                        (["--seconds", "nan"], "seconds"), (["--temperature", "nan"], "temperature"),
                        (["--temperature", "inf"], "temperature")):
        assert word in cli_error(capsys, [*sample, *extra], "prior sample")
    assert not (tmp_path / "s").exists()
    for extra in (["--temperature", "nan"], ["--temperature", "-1"]):
        assert "temperature" in cli_error(capsys, ["decode", trained_tiny, codes, "-o", tmp_path / "d", *extra],
                                          "decode")
    assert not (tmp_path / "d").exists()


def test_long_sampling_shows_progress(tmp_path, capsys, codes):
    prior = tmp_path / "prior"
    assert run_cli(["prior", "train", prior, *PRIOR, f"data.codes={codes}", "train.max_steps=1"]) == 0
    capsys.readouterr()
    assert run_cli(["prior", "sample", prior, "--speaker", "us_f3", "-o", tmp_path / "s", "--codes_only",
                    "--seconds", "1"]) == 0
    assert "draw" in capsys.readouterr().err


def test_an_interrupted_encode_leaves_no_units_that_disagree_with_its_codes(tmp_path, monkeypatch, trained_tiny,
                                                                           demo_manifest):
    out = tmp_path / "codes"
    assert run_cli(["encode", trained_tiny, demo_manifest, out]) == 0
    from vqspeech.inference import VQSpeech

    calls = {"n": 0}
    real = VQSpeech.encode

    def interrupted(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] > 3:
            raise KeyboardInterrupt
        return real(self, *args, **kwargs)

    monkeypatch.setattr(VQSpeech, "encode", interrupted)
    assert run_cli(["encode", trained_tiny, demo_manifest, out, "--overwrite"]) == 130
    assert not (out / "codes.json").exists()
    units = out / "units.txt"
    ids = {line.split()[0] for line in units.read_text().splitlines()} if units.exists() else set()
    assert not units.exists() or ids == {p.stem for p in (out / "codes").glob("*.npy")}


def test_temp_files_of_killed_runs_are_ignored_and_cleaned(tmp_path, codes, trained_tiny, demo_manifest):
    dirty = tmp_path / "codes"
    shutil.copytree(codes, dirty)
    np.save(dirty / "codes" / ".a.tmp999.npy", np.zeros(5, dtype=np.int16))
    folder = CodesFolder.open(dirty)
    assert not any(i.startswith(".") for i in folder.ids)
    assert run_cli(["encode", trained_tiny, demo_manifest, dirty, "--overwrite"]) == 0
    assert not list((dirty / "codes").glob(".*"))


# --- a second, independent hostile pass ----------------------------------------------------------


def test_evaluate_conversion_never_deletes_files_it_did_not_write(tmp_path, capsys, trained_tiny):
    out = tmp_path / "user"
    (out / "original").mkdir(parents=True)
    mine = out / "original" / "mine.wav"
    sf.write(mine, np.zeros(800, dtype=np.float32), 8000)
    message = cli_error(capsys, ["evaluate", "conversion", trained_tiny, "--out", out, "--num", "1"],
                        "evaluate conversion")
    assert "mine.wav" in message and mine.is_file()
    (out / "original").rename(tmp_path / "elsewhere")
    (out / "original").symlink_to(tmp_path / "elsewhere")
    assert "link" in cli_error(capsys, ["evaluate", "conversion", trained_tiny, "--out", out, "--num", "1",
                                        "--overwrite"], "evaluate conversion")
    assert (tmp_path / "elsewhere" / "mine.wav").is_file()


def test_prior_sample_and_prior_train_leave_a_codes_folder_alone(tmp_path, capsys, codes):
    victim = tmp_path / "victim"
    shutil.copytree(codes, victim)
    before = {p: p.read_bytes() for p in files_under(victim)}
    message = cli_error(capsys, ["prior", "train", victim, *PRIOR, f"data.codes={victim}", "train.max_steps=2"],
                        "prior train")
    assert "not an experiment folder" in message
    inner = victim / "prior"  # an experiment inside its codes folder
    assert "overlap" in cli_error(capsys, ["prior", "train", inner, *PRIOR, f"data.codes={victim}"], "prior train")
    assert not inner.exists()
    prior = tmp_path / "prior"
    assert run_cli(["prior", "train", prior, *PRIOR, f"data.codes={victim}", "train.max_steps=2"]) == 0
    speaker = json.loads((victim / "codes.json").read_text())["speakers"].popitem()[1]
    for extra in ([], ["--overwrite"]):
        message = cli_error(capsys, ["prior", "sample", prior, "--speaker", speaker, "--seconds", "0.1",
                                     "-o", victim, *extra], "prior sample")
        assert "did not write" in message
    message = cli_error(capsys, ["prior", "sample", prior, "--speaker", speaker, "--seconds", "0.1",
                                 "-o", tmp_path / "s", "--vqvae", tmp_path / "nowhere"], "prior sample")
    assert "nowhere" in message and not (tmp_path / "s").exists()  # checked before drawing
    assert {p: p.read_bytes() for p in files_under(victim)} == before


def test_a_linked_subfolder_of_an_output_folder_is_refused(tmp_path, capsys, trained_tiny, demo_manifest):
    target = tmp_path / "precious"
    target.mkdir()
    np.save(target / "keep.npy", np.arange(5))
    out = tmp_path / "enc"
    out.mkdir()
    (out / "codes").symlink_to(target)
    message = cli_error(capsys, ["encode", trained_tiny, demo_manifest, out, "--overwrite", "--limit", "1"],
                        "encode")
    assert "link" in message and files_under(target) == {target / "keep.npy"}
    corpus = small_corpus(tmp_path / "corpus", demo_manifest, n=2)
    prepared = tmp_path / "prepared"
    prepared.mkdir()
    (prepared / "wavs").symlink_to(target)
    assert "link" in cli_error(capsys, ["prepare", corpus, prepared, "--layout", "folder", "--sample_rate", "8000",
                                        "--num_workers", "0"], "prepare")
    assert files_under(target) == {target / "keep.npy"}


def test_prepare_does_not_follow_links_back_into_its_output_or_its_corpus(tmp_path, capsys, demo_manifest):
    corpus = small_corpus(tmp_path / "corpus", demo_manifest, n=4)
    speakers = sorted(p.name for p in corpus.iterdir())
    assert len(speakers) >= 2
    (corpus / speakers[0] / "again").symlink_to(corpus / speakers[1])  # a link inside the corpus: skipped
    out = tmp_path / "out"
    assert run_cli(["prepare", corpus, out, "--layout", "folder", "--sample_rate", "8000", "--num_workers", "0"]) == 0
    assert {u.speaker for u in read_manifest(out / "manifest.jsonl")} == set(speakers)
    (corpus / "into_out").symlink_to(out)  # a link to the output folder: it would read its own wavs back
    message = cli_error(capsys, ["prepare", corpus, out, "--layout", "folder", "--sample_rate", "8000",
                                 "--num_workers", "0"], "prepare")
    assert "output folder" in message and "link" in message


def test_names_with_a_trailing_newline_or_line_separators_are_refused(tmp_path, demo_manifest):
    assert not is_safe_name("evil\n") and is_safe_name("good.1")
    for bad in ("a\u2028b", "a\u2029b", "a\x85b", "a\nb"):
        assert not is_safe_speaker(bad)
    rows = absolute_rows(demo_manifest)
    rows[0]["text"] = "a sentence\u2028with a line separator"  # JSON keeps it; lines end at \n only
    assert len(read_manifest(write_lines(tmp_path / "m.jsonl", rows))) == len(rows)
    rows[1]["id"] = "evil\n"
    with pytest.raises(UserError, match="line 2"):
        read_manifest(write_lines(tmp_path / "m.jsonl", rows))


def test_training_crops_refuse_nan_audio_and_files_shorter_than_their_manifest_line(tmp_path, demo_manifest):
    utt = read_manifest(demo_manifest, "train")[0]
    audio = np.zeros(8000, dtype=np.float32)
    audio[100] = np.nan
    sf.write(tmp_path / "nan.wav", audio, 8000, subtype="FLOAT")
    nan = dataclasses.replace(utt, audio=str(tmp_path / "nan.wav"), duration=1.0, sample_rate=8000)
    with pytest.raises(UserError, match="NaN"):
        CropDataset([nan], {utt.speaker: 0}, 4000)[CropRequest(0, 0)]
    short = dataclasses.replace(utt, duration=10 * utt.duration)
    with pytest.raises(UserError, match="shorter than its manifest line"):
        CropDataset([short], {utt.speaker: 0}, 4000)[CropRequest(0, short.num_samples - 5000)]


def test_codes_files_and_codes_json_that_do_not_agree_are_refused(tmp_path, capsys, codes, demo_manifest):
    tampered = tmp_path / "t"
    shutil.copytree(codes, tampered)
    info = json.loads((tampered / "codes.json").read_text())
    first = sorted((tampered / "codes").iterdir())[0]
    np.save(first, np.full(20, info["K"] + 100, dtype=np.int16))  # codes >= K
    with pytest.raises(UserError, match="K="):
        CodesFolder.open(tampered).codes(first.stem)
    assert "K=" in cli_error(capsys, ["prior", "train", tmp_path / "p", *PRIOR, f"data.codes={tampered}"],
                             "prior train")
    np.save(first, np.zeros((20, 2), dtype=np.int16))  # grouped codes in a folder of one group
    with pytest.raises(UserError, match="shape"):
        CodesFolder.open(tampered).codes(first.stem)
    shutil.rmtree(tampered)
    shutil.copytree(codes, tampered)
    for offset in (1.0 / info["code_rate_hz"], 3.0, 1e9):
        (tampered / "codes.json").write_text(json.dumps({**info, "frame_offset_s": offset}))
        with pytest.raises(UserError, match="frame_offset_s"):
            CodesFolder.open(tampered)
    (tampered / "codes.json").write_text(json.dumps(info))
    latents = sorted((tampered / "latents").iterdir())
    bad = np.load(latents[0])
    bad[0, 0] = np.nan
    np.save(latents[0], bad)
    assert "finite" in cli_error(capsys, ["evaluate", "probe", "--codes", tampered, "--manifest", demo_manifest,
                                          "--out", tmp_path / "p.json", "--no_abx"], "evaluate probe")
    np.save(latents[0], np.zeros((len(bad), bad.shape[1] + 1), dtype=np.float32))
    assert "widths" in cli_error(capsys, ["evaluate", "probe", "--codes", tampered, "--manifest", demo_manifest,
                                          "--out", tmp_path / "p.json", "--no_abx"], "evaluate probe")


def test_a_checkpoint_that_cannot_be_written_is_one_sentence(tmp_path, capsys, monkeypatch, trained_tiny):
    def full_disk(obj, path):
        raise RuntimeError("[enforce fail at inline_container.cc:747] . unexpected pos 102208 vs 102096")

    monkeypatch.setattr(torch, "save", full_disk)
    message = cli_error(capsys, ["export", trained_tiny, tmp_path / "m.pt"], "export")
    assert "m.pt" in message and "disk space" in message and not (tmp_path / "m.pt").exists()


def test_records_of_the_wrong_type_are_one_sentence(tmp_path, capsys, demo_manifest, trained_tiny):
    corpus = small_corpus(tmp_path / "corpus", demo_manifest, n=2)
    out = tmp_path / "out"
    prepare = ["prepare", corpus, out, "--layout", "folder", "--sample_rate", "8000", "--num_workers", "0"]
    assert run_cli(prepare) == 0
    (out / "prepare.json").write_text("[1, 2]")
    assert "prepare.json" in cli_error(capsys, prepare, "prepare")
    assert run_cli([*prepare, "--overwrite"]) == 0
    exp = tmp_path / "exp"
    shutil.copytree(trained_tiny, exp)
    with open(exp / "overrides.yaml", "ab") as f:
        f.write(b"- train.max_steps=25\xff\n")
    assert "overrides.yaml" in cli_error(capsys, ["train", exp], "train")


def test_a_lock_that_cannot_be_written_leaves_nothing_behind(tmp_path, monkeypatch):
    folder = tmp_path / "new" / "out"
    real_fdopen = os.fdopen

    class FullDisk:
        def __init__(self, fd, mode):
            self.file = real_fdopen(fd, mode)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.file.close()

        def write(self, text):
            raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fdopen", FullDisk)
    with pytest.raises(UserError, match="free disk space"):
        FolderLock(folder, "encode").acquire()
    assert not (tmp_path / "new").exists()
    monkeypatch.undo()
    # an empty lock an older failure left behind is taken over; a fresh empty one (being written) is not
    folder.mkdir(parents=True)
    lock = folder / FolderLock.NAME
    lock.write_text("")
    with pytest.raises(UserError, match="cannot be read"):
        FolderLock(folder, "encode").acquire()
    os.utime(lock, (time.time() - 60, time.time() - 60))
    with FolderLock(folder, "encode"):
        assert json.loads(lock.read_text())["pid"] == os.getpid()


@pytest.mark.parametrize("override,key", [
    ("model.decoder.layers=1000000", "model.decoder.layers"),
    ("model.num_codes=100000000", "model.num_codes"),
    ("model.decoder.residual_channels=100000", "model.decoder.residual_channels"),
    ("model.quantizer.kmeans_iters=100000000", "model.quantizer.kmeans_iters"),
    ("model.encoder.n_mels=2000", "model.encoder.n_mels"),
    ("model.encoder.dilations=[1,2,1000000]", "model.encoder.dilations"),
])
def test_sizes_have_upper_bounds(tmp_path, capsys, demo_manifest, override, key):
    message = cli_error(capsys, ["train", tmp_path / "e", *FAST_TRAIN, f"data.manifest={demo_manifest}", override],
                        "train")
    assert key in message and not (tmp_path / "e").exists()


def test_prior_crops_longer_than_the_context_are_refused(tmp_path, capsys, codes):
    message = cli_error(capsys, ["prior", "train", tmp_path / "p", "prior=transformer", "prior.context=64",
                                 "device=cpu", f"data.codes={codes}", "data.crop_frames=100"], "prior train")
    assert "data.crop_frames" in message and "prior.context=64" in message


def test_the_corrected_command_after_an_early_failure_drops_the_failed_runs_overrides(tmp_path, demo_manifest):
    exp = tmp_path / "e"
    exp.mkdir()
    (exp / "overrides.yaml").write_text("- model=tiny\n- model.encoder.channels=4000\n")  # a run that never
    assert run_cli(["train", exp, *FAST_TRAIN, f"data.manifest={demo_manifest}", "train.max_steps=2"]) == 0
    config = (exp / "config.yaml").read_text()
    assert "channels: 4000" not in config and "4000" not in (exp / "overrides.yaml").read_text()
    # with a checkpoint the saved overrides count: a bare rerun resumes the same run
    assert run_cli(["train", exp, "train.max_steps=3"]) == 0
    assert "model=tiny" in (exp / "overrides.yaml").read_text()


# --- a third hostile pass ----------------------------------------------------------------------


def test_writers_refuse_folders_holding_other_verbs_files(tmp_path, capsys, demo_manifest, trained_tiny, codes):
    prepared = tmp_path / "prepared"
    shutil.copytree(demo_manifest.parent, prepared, ignore=NO_READERS)
    before = {p: p.read_bytes() for p in files_under(prepared)}
    assert "not a codes folder" in cli_error(capsys, ["baseline", "mfcc-kmeans", prepared / "manifest.jsonl", prepared,
                                                      "--num_codes", "16"], "baseline")
    assert "a prepared corpus that other commands read" in cli_error(capsys, ["encode", trained_tiny, demo_manifest,
                                                                               prepared], "encode")
    project = tmp_path / "project"
    project.mkdir()
    (project / "config.yaml").write_text("my: settings\n")
    assert "not an experiment folder" in cli_error(capsys, ["train", project, *FAST_TRAIN,
                                                            f"data.manifest={demo_manifest}"], "train")
    assert (project / "config.yaml").read_text() == "my: settings\n"
    other = tmp_path / "other"
    shutil.copytree(codes, other)
    assert "not an experiment folder" in cli_error(capsys, ["prior", "train", other, *PRIOR, f"data.codes={codes}"],
                                                   "prior train")
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "scores.tsv").write_text("mine\n")
    prior = tmp_path / "prior"
    assert run_cli(["prior", "train", prior, *PRIOR, f"data.codes={codes}", "train.max_steps=2"]) == 0
    speaker = json.loads((codes / "codes.json").read_text())["speakers"].popitem()[1]
    assert "did not write" in cli_error(capsys, ["prior", "sample", prior, "--speaker", speaker, "--seconds", "0.1",
                                                 "-o", mine, "--codes_only"], "prior sample")
    assert (mine / "scores.tsv").read_text() == "mine\n"
    assert {p: p.read_bytes() for p in files_under(prepared)} == before


def test_a_failed_prior_sample_does_not_block_the_corrected_command(tmp_path, capsys, monkeypatch, codes,
                                                                       trained_tiny):
    prior = tmp_path / "prior"
    assert run_cli(["prior", "train", prior, *PRIOR, f"data.codes={codes}", "train.max_steps=2"]) == 0
    speaker = json.loads((codes / "codes.json").read_text())["speakers"].popitem()[1]
    out = tmp_path / "samples"
    sample = ["prior", "sample", prior, "--speaker", speaker, "--seconds", "0.1", "--num", "1", "-o", out]

    def full_disk(*args, **kwargs):
        raise UserError("Cannot write x.wav (System error); check the free disk space and the folder's permissions.")

    monkeypatch.setattr("vqspeech.inference.prior_sampling.save_wav", full_disk)
    cli_error(capsys, [*sample, "--vqvae", trained_tiny], "prior sample")
    monkeypatch.undo()
    assert run_cli([*sample, "--vqvae", trained_tiny]) == 0 and (out / "samples.json").is_file()


def test_a_failed_evaluate_conversion_does_not_block_the_corrected_command(tmp_path, capsys, monkeypatch,
                                                                            trained_tiny):
    out = tmp_path / "ec"
    command = ["evaluate", "conversion", trained_tiny, "--out", out, "--num", "1", "--num_reference", "1"]
    real_save = conversion_module.save_wav
    calls = []

    def fails_second_time(path, *args):
        calls.append(path)
        if len(calls) == 2:
            raise UserError(f"Cannot write {path} (System error); check the free disk space.")
        real_save(path, *args)

    monkeypatch.setattr(conversion_module, "save_wav", fails_second_time)
    cli_error(capsys, command, "evaluate conversion")
    monkeypatch.undo()
    assert any(out.rglob("*.wav")) and not (out / "metrics.json").exists()
    assert run_cli(command) == 0 and (out / "metrics.json").is_file()


def test_align_keeps_every_field_and_follows_a_linked_manifest(tmp_path, demo_manifest):
    data = tmp_path / "data"
    shutil.copytree(demo_manifest.parent, data, ignore=NO_READERS)
    manifest = data / "manifest.jsonl"
    rows = manifest_lines(manifest)[:3]
    for row in rows:
        row["gender"] = "f"
        row.pop("alignment", None)
    write_lines(manifest, rows)
    link = tmp_path / "link.jsonl"
    link.symlink_to(manifest)
    assert run_cli(["align", manifest, tmp_path / "grids", "--manifest", link]) == 0
    assert link.is_symlink()
    after = manifest_lines(manifest)
    assert all(r["gender"] == "f" for r in after) and [r["audio"] for r in after] == [r["audio"] for r in rows]
    assert any(r.get("alignment") for r in after)
    assert len(read_manifest(link)) == 3


def test_convert_never_writes_over_its_inputs(tmp_path, capsys, trained_tiny, demo_manifest):
    inputs = tmp_path / "in"
    inputs.mkdir()
    for row in manifest_lines(demo_manifest)[:2]:
        shutil.copy(demo_manifest.parent / row["audio"], inputs / f"{row['id']}.wav")
    before = {p: p.read_bytes() for p in files_under(inputs)}
    speaker = VQSpeech.load(trained_tiny, "cpu").speakers[0]
    assert "one of the inputs" in cli_error(capsys, ["convert", trained_tiny, inputs, "--speaker", speaker,
                                                     "-o", inputs, "--overwrite"], "convert")
    assert {p: p.read_bytes() for p in files_under(inputs)} == before


def test_a_decoder_stays_with_its_units(tmp_path, capsys, demo_manifest):
    mel = [*FAST_TRAIN, f"data.manifest={demo_manifest}", "model.objective=mel", "train.max_steps=2"]
    assert run_cli(["train", tmp_path / "u1", *mel]) == 0
    assert run_cli(["train", tmp_path / "u2", *mel, "seed=5"]) == 0
    assert run_cli(["train", tmp_path / "d", *mel, f"train.units_from={tmp_path / 'u1'}"]) == 0
    message = cli_error(capsys, ["train", tmp_path / "d", f"train.units_from={tmp_path / 'u2'}",
                                 "train.max_steps=4"], "train")
    assert "u1" in message and "new experiment" in message


def test_odd_values_and_files_are_one_sentence(tmp_path, capsys, codes, trained_tiny, demo_manifest):
    np.savez(tmp_path / "z.npz", a=np.zeros(4, dtype=np.int16))
    (tmp_path / "z.npz").rename(tmp_path / "z.npy")
    assert "archive" in cli_error(capsys, ["decode", trained_tiny, tmp_path / "z.npy", "--speaker", "x",
                                           "-o", tmp_path / "o.wav"], "decode")
    deep = tmp_path / "deep.jsonl"
    deep.write_text("[" * 100_000 + "]" * 100_000 + "\n")
    cli_error(capsys, ["encode", trained_tiny, deep, tmp_path / "c"], "encode")
    cli_error(capsys, ["train", tmp_path / "x", *FAST_TRAIN, 'data.manifest="~nosuchuser_vqs/m.jsonl"'], "train")
    for seed in ("99999999999999999999", "-1"):  # refused by the flag's parser, before any work
        capsys.readouterr()
        with pytest.raises(SystemExit) as stop:
            run_cli(["baseline", "mfcc-kmeans", demo_manifest, tmp_path / "b", "--seed", seed])
        err = capsys.readouterr().err
        assert stop.value.code == 2 and "--seed" in err and "Traceback" not in err
    assert "seed" in cli_error(capsys, ["train", tmp_path / "s", *FAST_TRAIN, f"data.manifest={demo_manifest}",
                                        "seed=99999999999999999999"], "train")
    assert "faster code rate" in cli_error(capsys, ["baseline", "mfcc-kmeans", demo_manifest, tmp_path / "b2",
                                                    "--num_codes", "8", "--code_rate", "0.25"], "baseline")
    prior = tmp_path / "prior"
    assert run_cli(["prior", "train", prior, *PRIOR, f"data.codes={codes}", "train.max_steps=2"]) == 0
    speaker = json.loads((codes / "codes.json").read_text())["speakers"].popitem()[1]
    for flags in (["--temperature", "1e-300"], ["--candidates", "100000000"]):
        cli_error(capsys, ["prior", "sample", prior, "--speaker", speaker, "--seconds", "0.1", "-o",
                           tmp_path / "ps", "--codes_only", *flags], "prior sample")
    assert "at least 1" in cli_error(capsys, ["align", demo_manifest, tmp_path / "al", "--limit", "-3"], "align")
    assert "nowhere" in cli_error(capsys, ["align", demo_manifest, tmp_path / "al", "--manifest",
                                           tmp_path / "nowhere.jsonl"], "align")
    assert not (tmp_path / "al").exists()
    assert "bogus" in cli_error(capsys, ["evaluate", "probe", "--codes", codes, "--manifest", demo_manifest,
                                         "--out", tmp_path / "p.json", "--ignore", "bogus", "--no_abx"],
                                "evaluate probe")
    last = trained_tiny / "checkpoints" / "last.pt"
    assert "another file" in cli_error(capsys, ["export", trained_tiny, last, "--overwrite"], "export")


def test_crafted_checkpoints_are_one_sentence(tmp_path, capsys, trained_tiny):
    ckpt = torch.load(trained_tiny / "checkpoints" / "last.pt", weights_only=True)
    for name, change in (("speakers", lambda c: c.update(speakers=[1, 2])),
                         ("version", lambda c: c.update(format_version="3")),
                         ("hop", lambda c: c["config"]["model"].update(hop_length=0))):
        crafted = copy.deepcopy(ckpt)
        change(crafted)
        path = tmp_path / f"{name}.pt"
        torch.save(crafted, path)
        cli_error(capsys, ["speakers", path], "speakers")
        cli_error(capsys, ["encode", path, demo_wav(tmp_path), tmp_path / f"c_{name}"], "encode")


def demo_wav(tmp_path: Path) -> Path:
    path = tmp_path / "tone.wav"
    if not path.exists():
        sf.write(path, (0.1 * np.sin(np.arange(8000) / 5)).astype(np.float32), 8000)
    return path


def test_a_prior_resumed_on_codes_with_new_speakers_is_refused(tmp_path, capsys, codes):
    prior = tmp_path / "prior"
    assert run_cli(["prior", "train", prior, *PRIOR, f"data.codes={codes}", "train.max_steps=2"]) == 0
    renamed = tmp_path / "renamed"
    shutil.copytree(codes, renamed)
    info = json.loads((renamed / "codes.json").read_text())
    info["speakers"] = {k: f"new_{v}" for k, v in info["speakers"].items()}
    (renamed / "codes.json").write_text(json.dumps(info))
    message = cli_error(capsys, ["prior", "train", prior, f"data.codes={renamed}", "train.max_steps=4"],
                        "prior train")
    assert "new_" in message


def test_prepare_leaves_a_users_files_alone(tmp_path, capsys, demo_manifest):
    corpus = small_corpus(tmp_path / "corpus", demo_manifest, n=2)
    out = tmp_path / "out"
    out.mkdir()
    (out / "speakers.tsv").write_text("mine\n")
    message = cli_error(capsys, ["prepare", corpus, out, "--layout", "folder", "--sample_rate", "8000",
                                 "--num_workers", "0"], "prepare")
    assert "speakers.tsv" in message and (out / "speakers.tsv").read_text() == "mine\n"


# --- a fourth hostile pass ---------------------------------------------------------------------


def test_fourth_pass_cases(tmp_path, capsys, trained_tiny, demo_manifest, codes):
    user = tmp_path / "user"
    (user / "text").mkdir(parents=True)
    (user / "README.md").write_text("notes\n")
    (user / "text" / "thesis.txt").write_text("important\n")
    for extra in ([], ["--overwrite"]):
        assert "did not write" in cli_error(capsys, ["demo-data", user, "--num_sentences", "1", *extra], "demo-data")
    assert (user / "text" / "thesis.txt").read_text() == "important\n"

    (tmp_path / "victim.txt").write_text("victim\n")
    probe_dir = tmp_path / "pr"
    probe_dir.mkdir()
    (probe_dir / "m_code_usage.png").symlink_to(tmp_path / "victim.txt")
    assert "m_code_usage.png" in cli_error(capsys, ["evaluate", "probe", "--codes", codes, "--manifest", demo_manifest,
                                                    "--out", probe_dir / "m.json", "--no_abx"], "evaluate probe")
    assert run_cli(["evaluate", "probe", "--codes", codes, "--manifest", demo_manifest, "--out", probe_dir / "m.json",
                    "--no_abx", "--overwrite"]) == 0
    assert (tmp_path / "victim.txt").read_text() == "victim\n"  # the link was replaced, not written through
    long_name = tmp_path / ("y" * 250 + ".json")
    assert "long" in cli_error(capsys, ["evaluate", "probe", "--codes", codes, "--manifest", demo_manifest,
                                             "--out", long_name, "--no_abx"], "evaluate probe")

    demo_copy = tmp_path / "demo_copy"
    shutil.copytree(demo_manifest.parent, demo_copy, ignore=NO_READERS)
    (demo_copy / ".vqspeech-cache.json").unlink(missing_ok=True)
    (demo_copy / "prepare.json").unlink(missing_ok=True)
    before = {p: p.read_bytes() for p in files_under(demo_copy)}
    corpus = small_corpus(tmp_path / "corpus", demo_manifest, n=2)
    cli_error(capsys, ["prepare", corpus, demo_copy, "--layout", "folder", "--sample_rate", "8000",
                       "--num_workers", "0", "--overwrite"], "prepare")
    assert {p: p.read_bytes() for p in files_under(demo_copy)} == before  # refused before deleting anything

    proj = tmp_path / "proj"
    (proj / "latents").mkdir(parents=True)
    np.save(proj / "latents" / "mydata.npy", np.arange(5))
    for extra in ([], ["--overwrite"]):
        assert "no vqspeech run wrote" in cli_error(capsys, ["encode", trained_tiny, demo_manifest, proj, "--limit",
                                                             "1", *extra], "encode")
    assert (proj / "latents" / "mydata.npy").is_file()

    assert "data.manifest" in cli_error(capsys, ["train", tmp_path / "n", *FAST_TRAIN, "data.manifest=null"], "train")
    rows = absolute_rows(demo_manifest)
    rows[-1]["audio"] = str(tmp_path / "gone.wav")
    broken = write_lines(tmp_path / "broken" / "manifest.jsonl", rows)
    assert "gone.wav" in cli_error(capsys, ["train", tmp_path / "b", *FAST_TRAIN, f"data.manifest={broken}"], "train")
    assert not (tmp_path / "b").exists()

    exp = tmp_path / "exp"
    shutil.copytree(trained_tiny, exp)
    assert ".html" in cli_error(capsys, ["report", exp, "--out", exp / "checkpoints" / "last.pt", "--overwrite"],
                                "report")
    assert ".json" in cli_error(capsys, ["evaluate", "loss", exp, "--out", exp / "config.yaml", "--overwrite"],
                                "evaluate loss")
    assert VQSpeech.load(exp, "cpu").speakers


# --- fifth pass -------------------------------------------------------------------------------


def test_align_never_writes_into_its_input_or_over_foreign_textgrids(tmp_path, capsys, demo_manifest):
    corpus = demo_manifest.parent.parent / "corpus"
    before = {p: p.read_bytes() for p in files_under(corpus)}
    message = cli_error(capsys, ["align", corpus, corpus / "alignments", "--layout", "demo", "--overwrite"], "align")
    assert "overlaps the corpus" in message
    message = cli_error(capsys, ["align", corpus, demo_manifest.parent, "--layout", "demo",
                                 "--manifest", demo_manifest], "align")
    assert "is the folder of the manifest" in message
    foreign = tmp_path / "mfa"
    shutil.copytree(corpus / "alignments", foreign)
    message = cli_error(capsys, ["align", corpus, foreign, "--layout", "demo", "--overwrite"], "align")
    assert "did not write" in message
    assert {p: p.read_bytes() for p in files_under(corpus)} == before
    assert not (demo_manifest.parent / "align.json").exists() and not (foreign / "align.json").exists()


def test_align_waits_for_the_manifests_writer(tmp_path, capsys, demo_manifest):
    data = tmp_path / "data"
    shutil.copytree(demo_manifest.parent, data, ignore=NO_READERS)
    manifest = data / "manifest.jsonl"
    write_lines(manifest, manifest_lines(manifest)[:2])
    before = manifest.read_bytes()
    with FolderLock(data, "prepare"):  # a live `prepare` of that folder
        message = cli_error(capsys, ["align", manifest, tmp_path / "grids", "--manifest", manifest], "align")
    assert "in use by `vqspeech prepare`" in message and manifest.read_bytes() == before


def test_training_refuses_linked_checkpoint_and_log_folders(tmp_path, capsys, demo_manifest, trained_tiny):
    for sub in ("checkpoints", "tb"):
        exp = tmp_path / sub / "exp"
        exp.mkdir(parents=True)
        (exp / sub).symlink_to(trained_tiny / sub)
        message = cli_error(capsys, ["train", exp, *FAST_TRAIN, f"data.manifest={demo_manifest}",
                                     "train.max_steps=1"], "train")
        assert f"{sub} is a link" in message
    assert torch.load(trained_tiny / "checkpoints" / "last.pt", weights_only=True)["step"] == 30


def test_reports_are_not_written_into_a_codes_folder_or_a_prepared_corpus(tmp_path, capsys, codes, demo_manifest,
                                                                         trained_tiny):
    before = (codes / "codes.json").read_bytes()
    for out in (codes / "codes.json", codes / "codes" / "p.json", demo_manifest.parent / "prepare.json"):
        message = cli_error(capsys, ["evaluate", "probe", "--codes", codes, "--manifest", demo_manifest,
                                     "--out", out, "--no_abx", "--overwrite"], "evaluate probe")
        assert "other commands read" in message
    message = cli_error(capsys, ["evaluate", "loss", trained_tiny, "--out", codes / "codes.json", "--overwrite"],
                        "evaluate loss")
    assert "other commands read" in message
    assert (codes / "codes.json").read_bytes() == before


def test_fifth_pass_values(tmp_path, capsys, monkeypatch, demo_manifest, trained_tiny):
    # prepare: a sample rate no model accepts
    message = cli_error(capsys, ["prepare", demo_manifest.parent.parent / "corpus", tmp_path / "p", "--layout",
                                 "demo", "--sample_rate", "1000000000"], "prepare")
    assert "1000000000" in message and not (tmp_path / "p").exists()
    # a manifest: one id twice, or a duration of no samples
    rows = absolute_rows(demo_manifest)
    twice = write_lines(tmp_path / "twice.jsonl", [*rows, dict(rows[1], id=rows[0]["id"])])
    with pytest.raises(UserError, match="lines 1 and 25 both have the id"):
        read_manifest(twice)
    tiny = write_lines(tmp_path / "tiny.jsonl", [dict(rows[0], duration=1e-9), *rows[1:]])
    with pytest.raises(UserError, match="line 1: duration"):
        read_manifest(tiny)
    # training sizes: a batch no memory holds, too many loader processes
    for override, key in (("train.crop_seconds=500", "train.crop_seconds"), ("train.num_workers=1000",
                                                                             "train.num_workers")):
        message = cli_error(capsys, ["train", tmp_path / "e", *FAST_TRAIN, f"data.manifest={demo_manifest}",
                                     override], "train")
        assert key in message and not (tmp_path / "e").exists()
    # a relative manifest path that is a link to itself (made absolute with Path.resolve)
    (tmp_path / "loop.jsonl").symlink_to("loop.jsonl")
    monkeypatch.chdir(tmp_path)
    message = cli_error(capsys, ["train", tmp_path / "e", *FAST_TRAIN, "data.manifest=loop.jsonl"], "train")
    assert "leads back to itself" in message


def test_the_python_api_refuses_audio_it_cannot_encode(trained_tiny):
    vq = VQSpeech.load(trained_tiny, "cpu")
    a = (0.1 * np.random.default_rng(0).standard_normal(8000)).astype(np.float32)
    for audio, rate, match in (
        (np.full(8000, np.nan, np.float32), 8000, "NaN or infinite"),
        (np.full(8000, np.inf, np.float32), 8000, "NaN or infinite"),
        ((a * 3000).astype(np.int16), 8000, "not floats"),
        (np.stack([a, a], 1), 8000, "not one channel"),
        (a, float("nan"), "sample_rate"),
        (a, "8000", "sample_rate"),
    ):
        with pytest.raises(UserError, match=match):
            vq.encode(audio, rate)
    with pytest.raises(UserError, match="chunk_frames"):
        vq.encode(a, 8000, chunk_frames=0)
    assert vq.encode(a[:, None], 8000).codes.shape == (100,)  # [T, 1] is one channel
    codes = vq.encode(a, 8000).codes
    for bad, match in ((np.stack([codes, codes], 1), "shape"), (codes.astype(np.float32), "whole numbers")):
        with pytest.raises(UserError, match=match):
            vq.decode(bad, vq.speakers[0])
    with pytest.raises(UserError, match="as many speakers"):
        vq.decode_batch([codes, codes], [vq.speakers[0]])
    with pytest.raises(UserError, match="seed"):
        vq.decode(codes, vq.speakers[0], seed=1.5)


def test_a_damaged_training_state_is_one_sentence(tmp_path, capsys, trained_tiny):
    exp = tmp_path / "exp"
    shutil.copytree(trained_tiny, exp)
    last = exp / "checkpoints" / "last.pt"
    for field, value in (("step", "abc"), ("rng", {"torch": "x"}), ("scheduler", [1])):
        ckpt = torch.load(last, weights_only=True)
        good = ckpt[field]
        ckpt[field] = value
        torch.save(ckpt, last)
        message = cli_error(capsys, ["train", exp, "train.max_steps=40"], "train")
        assert "damaged training state" in message
        ckpt[field] = good
        torch.save(ckpt, last)


@pytest.mark.parametrize("record", [
    {"pid": 1, "verb": "train", "started": "abc"},
    {"pid": 1, "verb": "train", "started": 1e300},
    {"pid": 10**20, "verb": "train", "started": 0},
    {"foo": 1},
])
def test_malformed_locks_are_broken_locks(tmp_path, record):
    folder = tmp_path / "out"
    folder.mkdir()
    lock = folder / FolderLock.NAME
    lock.write_text(json.dumps({"host": socket.gethostname(), **record}))
    with pytest.raises(UserError, match="cannot be read"):  # a fresh one: perhaps being written
        FolderLock(folder, "encode").acquire()
    old = time.time() - 60
    os.utime(lock, (old, old))
    with FolderLock(folder, "encode") as taken:  # an old broken lock is taken over
        assert taken.held


def test_prepare_converts_a_replaced_source_again(tmp_path):
    from vqspeech.data.prepare import prepare_corpus

    recordings = tmp_path / "fsdd" / "recordings"
    recordings.mkdir(parents=True)
    t = np.arange(8000) / 8000
    for n in range(2):
        sf.write(recordings / f"1_anna_{n}.wav", (0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32), 8000)
    summary = prepare_corpus(tmp_path / "fsdd", tmp_path / "out", "fsdd", sample_rate=8000, progress=False,
                             num_workers=0)
    source = recordings / "1_anna_0.wav"
    stamp = source.stat().st_mtime_ns - 10**12  # the replacement is older (cp -p, tar, rsync)
    sf.write(source, (0.3 * np.sin(2 * np.pi * 220 * t[:4000])).astype(np.float32), 8000)
    os.utime(source, ns=(stamp, stamp))
    summary = prepare_corpus(tmp_path / "fsdd", tmp_path / "out", "fsdd", sample_rate=8000, progress=False,
                             num_workers=0)
    durations = {u.id: u.duration for u in read_manifest(summary.manifest)}
    assert sorted(durations.values()) == [0.5, 1.0]


def test_names_that_fit_only_without_the_temporary_prefix_are_written(tmp_path):
    from vqspeech.fileio import inside, write_text_atomic

    name = "x" * 250 + ".json"  # 255 bytes: fits; ".<stem>.tmp<pid>.json" would not
    write_text_atomic(inside(tmp_path, name), "{}")
    assert (tmp_path / name).read_text() == "{}" and [p.name for p in tmp_path.iterdir()] == [name]
    with pytest.raises(UserError, match="longer than 255 bytes"):
        inside(tmp_path, "x" * 256)


def test_the_identical_command_after_a_killed_encode_runs(tmp_path, trained_tiny, demo_manifest):
    out = tmp_path / "codes"
    writer = CodesWriter(out)  # a run killed after its first utterance: mark and codes, no codes.json
    writer.add("first", Encoding(np.zeros(5, dtype=np.int16)))
    assert not (out / "codes.json").exists()
    assert run_cli(["encode", trained_tiny, demo_manifest, out]) == 0
    folder = CodesFolder.open(out)
    assert "first" not in folder.code_ids and len(folder.code_ids) == len(read_manifest(demo_manifest))
    assert run_cli(["encode", trained_tiny, demo_manifest, out]) == 2  # a finished folder is still protected


def test_the_identical_demo_data_command_after_a_killed_run_runs(tmp_path, capsys):
    from vqspeech.data.demo import make_demo_corpus

    out = tmp_path / "demo"
    make_demo_corpus(out, num_sentences=2, progress=False)
    shutil.rmtree(out / "alignments")  # as if killed before the end
    (out / "manifest.jsonl").unlink()
    assert run_cli(["demo-data", out, "--num_sentences", "2"]) == 0
    assert len(read_manifest(out / "manifest.jsonl")) == 2
    message = cli_error(capsys, ["demo-data", out, "--num_sentences", "3"], "demo-data")
    assert "other settings" in message  # another corpus is still protected


def test_export_of_a_prior_is_the_checkpoint_that_samples(tmp_path, codes):
    prior = tmp_path / "prior"
    assert run_cli(["prior", "train", prior, *PRIOR, f"data.codes={codes}", "train.max_steps=4"]) == 0
    best = torch.load(prior / "checkpoints" / "last.pt", weights_only=True)
    best["step"] = 2  # as if validation had kept an earlier step as the best
    torch.save(best, prior / "checkpoints" / "best.pt")
    assert run_cli(["export", prior, tmp_path / "p.pt"]) == 0
    assert torch.load(tmp_path / "p.pt", weights_only=True)["step"] == 2


def test_a_codes_file_that_cannot_be_written_is_one_sentence_naming_it(tmp_path, monkeypatch):
    writer = CodesWriter(tmp_path / "codes")

    def full_disk(*args, **kwargs):
        raise OSError("1072 requested and 992 written")  # what numpy says on a full disk

    monkeypatch.setattr(np, "save", full_disk)
    with pytest.raises(UserError, match=r"Cannot write .*first\.npy \(1072 requested and 992 written\)"):
        writer.add("first", Encoding(np.zeros(5, dtype=np.int16)))
    assert not any(p.name.endswith(".npy") for p in (tmp_path / "codes" / "codes").iterdir())


def test_codes_are_not_written_into_an_experiment_folder(tmp_path, capsys, trained_tiny, demo_manifest):
    before = files_under(trained_tiny)
    for flags in ([], ["--overwrite"]):
        message = cli_error(capsys, ["encode", trained_tiny, demo_manifest, trained_tiny, *flags], "encode")
        assert "experiment folder" in message
    assert files_under(trained_tiny) == before


# --- sixth pass -------------------------------------------------------------------------------


def test_decode_and_convert_never_write_into_a_prepared_corpus_or_their_input_folder(tmp_path, capsys, trained_tiny,
                                                                                     codes, demo_manifest):
    data = tmp_path / "data"
    shutil.copytree(demo_manifest.parent, data, ignore=NO_READERS)
    before = {p: p.read_bytes() for p in files_under(data)}
    speaker = VQSpeech.load(trained_tiny, "cpu").speakers[0]
    message = cli_error(capsys, ["decode", trained_tiny, codes, "-o", data / "wavs", "--overwrite"], "decode")
    assert "a prepared corpus" in message
    message = cli_error(capsys, ["convert", trained_tiny, data / "manifest.jsonl", "--speaker", speaker,
                                 "-o", data / "wavs", "--overwrite"], "convert")
    assert "a prepared corpus" in message
    corpus = tmp_path / "corpus"
    (corpus / "spk").mkdir(parents=True)
    shutil.copy(read_manifest(demo_manifest)[0].audio, corpus / "spk" / "a.wav")
    for out in (corpus, corpus / "spk", corpus / "converted"):
        message = cli_error(capsys, ["convert", trained_tiny, corpus, "--speaker", speaker, "-o", out], "convert")
        assert "input" in message
    assert files_under(corpus) == {corpus / "spk" / "a.wav"}
    assert {p: p.read_bytes() for p in files_under(data)} == before


def test_an_empty_target_speaker_is_refused_not_read_as_the_working_directory(tmp_path, capsys, trained_tiny,
                                                                             demo_manifest, monkeypatch):
    monkeypatch.chdir(tmp_path)
    wav = read_manifest(demo_manifest)[0].audio
    message = cli_error(capsys, ["convert", trained_tiny, wav, "--speaker", "", "-o", tmp_path / "o.wav"], "convert")
    assert "empty" in message and not (tmp_path / "o.wav").exists()
    with pytest.raises(UserError, match="empty"):
        VQSpeech.load(trained_tiny, "cpu").convert(np.zeros(800, np.float32), 8000, speaker="")


@pytest.mark.parametrize("name", ["g$^$", "$\\bogus{$", "bad\udcffname"])
def test_figures_draw_any_name_as_written(tmp_path, name):
    from vqspeech.plots import save_code_phone_heatmap, save_spectrograms

    save_spectrograms(tmp_path / "s.png", {f"conversion ({name} -> x)": np.zeros(800, np.float32)}, 8000)
    save_code_phone_heatmap(tmp_path / "h.png", np.ones((4, 2)), [name, "$a$"], title=name)
    assert (tmp_path / "s.png").read_bytes()[:4] == b"\x89PNG" and (tmp_path / "h.png").is_file()


def test_a_voice_name_is_checked_before_work(tmp_path, trained_tiny, demo_manifest):
    with pytest.raises(UserError, match="Voice name"):
        conversion_module.evaluate_conversion(trained_tiny, tmp_path / "e", manifest=demo_manifest, num=1,
                                              targets=["a/b"], voices={"a/b": str(tmp_path)}, progress=False)
    assert not (tmp_path / "e").exists()


@pytest.mark.parametrize("audio,rate,name,words", [
    (np.full(100, np.nan, np.float32), 8000, "n.wav", "NaN"),
    (np.ones(100, np.int16), 8000, "i.wav", "int16"),
    (np.zeros((100, 3), np.float32), 8000, "c.wav", "channel"),
    (np.zeros(100, np.float32), 8000, "z.mp3", ".wav"),
    (np.zeros(100, np.float32), float("nan"), "r.wav", "sample_rate"),
    (np.zeros(100, np.float32), 1, "r1.wav", "sample_rate"),
])
def test_save_wav_refuses_what_it_cannot_write_faithfully(tmp_path, audio, rate, name, words):
    from vqspeech.audio import save_wav

    with pytest.raises(UserError, match=words):
        save_wav(tmp_path / name, audio, rate)
    assert not any(tmp_path.iterdir())


def test_a_codes_file_whose_header_claims_a_huge_shape_is_one_sentence(tmp_path, capsys, trained_tiny):
    huge = tmp_path / "huge.npy"
    header = b"{'descr': '<i2', 'fortran_order': False, 'shape': (100000000000,), }".ljust(117) + b"\n"
    huge.write_bytes(b"\x93NUMPY\x01\x00v\x00" + header)
    speaker = VQSpeech.load(trained_tiny, "cpu").speakers[0]
    message = cli_error(capsys, ["decode", trained_tiny, huge, "--speaker", speaker, "-o", tmp_path / "h.wav"],
                        "decode")
    assert "huge.npy" in message and not (tmp_path / "h.wav").exists()


def test_a_sound_file_at_an_absurd_rate_is_refused_before_resampling(tmp_path, capsys, trained_tiny):
    low = tmp_path / "sr1.wav"
    sf.write(low, (np.random.default_rng(0).standard_normal(20000) * 0.1).astype(np.float32), 1, subtype="PCM_16")
    message = cli_error(capsys, ["encode", trained_tiny, low, tmp_path / "codes"], "encode")
    assert "1 Hz" in message and "sr1.wav" in message
    with pytest.raises(UserError, match="sample_rate"):
        VQSpeech.load(trained_tiny, "cpu").encode(np.zeros(20000, np.float32), 1)


@pytest.mark.parametrize("folder", ["my data, v2", "br[1]", "eq=1", "q'uote", "d${x}"])
def test_an_experiment_on_a_path_with_hydra_syntax_resumes(tmp_path, demo_manifest, folder):
    data = tmp_path / folder
    shutil.copytree(demo_manifest.parent, data, ignore=NO_READERS)
    rows = absolute_rows(demo_manifest)
    for row in rows:
        row["audio"] = str(data / Path(row["audio"]).relative_to(demo_manifest.parent.resolve()))
    manifest = write_lines(data / "manifest.jsonl", rows)
    exp = tmp_path / "exp"
    quoted = "'" + str(manifest).replace("'", "\\'").replace("${", "\\${") + "'"
    assert run_cli(["train", exp, *FAST_TRAIN, f"data.manifest={quoted}", "train.max_steps=1"]) == 0
    assert run_cli(["train", exp, "train.max_steps=2"]) == 0  # resumed from the saved overrides
    config = yaml_load(exp / "config.yaml")
    assert config["data"]["manifest"] == str(manifest) and config["train"]["max_steps"] == 2


def yaml_load(path: Path):
    import yaml

    return yaml.safe_load(path.read_text())


def test_demo_data_overwrite_deletes_only_its_own_files(tmp_path, capsys):
    from vqspeech.data.demo import make_demo_corpus

    corpus = make_demo_corpus(tmp_path / "demo", num_sentences=2, progress=False)
    mine = corpus / "wavs" / "anna" / "mine.wav"
    mine.parent.mkdir()
    sf.write(mine, np.zeros(800, np.float32), 8000)
    notes = corpus / "text" / "NOTES.txt"
    notes.write_text("my notes")
    with pytest.raises(UserError, match="is not a file"):
        make_demo_corpus(corpus, num_sentences=3, overwrite=True, progress=False)
    assert mine.is_file() and notes.read_text() == "my notes"
    assert len(read_manifest(corpus / "manifest.jsonl")) == 2  # untouched
    mine.unlink()
    notes.unlink()
    make_demo_corpus(corpus, num_sentences=3, overwrite=True, progress=False)
    assert len(read_manifest(corpus / "manifest.jsonl")) == 3
    assert not (corpus / "wavs" / "anna").exists()  # the empty folder left behind was removed
    # a demo.json that is not demo-data's record does not make a folder demo-data's
    user = tmp_path / "user"
    (user / "wavs").mkdir(parents=True)
    sf.write(user / "wavs" / "take.wav", np.zeros(800, np.float32), 8000)
    (user / "demo.json").write_text("{}")
    with pytest.raises(UserError):
        make_demo_corpus(user, num_sentences=2, overwrite=True, progress=False)
    assert (user / "wavs" / "take.wav").is_file()


def test_evaluate_conversion_overwrite_deletes_only_what_it_listed(tmp_path, trained_tiny, demo_manifest):
    out = tmp_path / "eval"
    run = dict(manifest=demo_manifest, split="test", num=1, num_reference=2, progress=False)
    conversion_module.evaluate_conversion(trained_tiny, out, **run)
    notes = out / "spectrograms" / "notes.txt"
    notes.write_text("keep")
    with pytest.raises(UserError, match="notes.txt"):
        conversion_module.evaluate_conversion(trained_tiny, out, overwrite=True, **run)
    assert notes.read_text() == "keep"
    notes.unlink()
    conversion_module.evaluate_conversion(trained_tiny, out, overwrite=True, **run)
    # a run that never finished (marked, no metrics.json): its own kinds of files go, others stay
    (out / "metrics.json").unlink()
    notes.write_text("keep")
    with pytest.raises(UserError, match="notes.txt"):
        conversion_module.evaluate_conversion(trained_tiny, out, overwrite=True, **run)


def test_a_bad_validation_file_is_found_before_the_first_step(tmp_path, capsys, demo_manifest):
    rows = absolute_rows(demo_manifest)
    valid = next(r for r in rows if r["split"] == "valid")
    audio, rate = sf.read(valid["audio"], dtype="float32")
    replaced = tmp_path / "valid16k.wav"
    sf.write(replaced, np.repeat(audio, 2), 2 * rate)
    valid["audio"] = str(replaced)
    manifest = write_lines(tmp_path / "data" / "manifest.jsonl", rows)
    exp = tmp_path / "exp"
    message = cli_error(capsys, ["train", exp, *FAST_TRAIN, f"data.manifest={manifest}", "train.max_steps=3"], "train")
    assert "valid16k.wav" in message and f"{2 * rate} Hz" in message
    assert not (exp / "checkpoints").exists()


def test_a_failing_validation_keeps_the_steps_trained_before_it(tmp_path, demo_manifest, monkeypatch):
    from vqspeech.training import vqvae_task
    from vqspeech.training.vqvae_task import train_vqvae

    def broken(self, model, device):
        raise RuntimeError("validation broke")

    monkeypatch.setattr(vqvae_task.VQVAETask, "validate", broken)
    exp = tmp_path / "exp"
    with pytest.raises(RuntimeError, match="validation broke"):
        train_vqvae(exp, [*FAST_TRAIN, f"data.manifest={demo_manifest}", "train.max_steps=10", "train.valid_every=4"])
    assert torch.load(exp / "checkpoints" / "last.pt", weights_only=True)["step"] == 4


def test_probe_refuses_alignments_of_other_audio(tmp_path, capsys, codes, demo_manifest):
    rows = absolute_rows(demo_manifest)
    grids = [r["alignment"] for r in rows]
    for row, grid in zip(rows, grids[1:] + grids[:1], strict=True):  # each gets another utterance's TextGrid
        row["alignment"] = grid
    manifest = write_lines(tmp_path / "m" / "manifest.jsonl", rows)
    message = cli_error(capsys, ["evaluate", "probe", "--codes", codes, "--manifest", manifest,
                                 "--out", tmp_path / "p.json", "--no_abx"], "evaluate probe")
    assert "alignment" in message and "not of the same recording" in message


def test_align_realigns_an_utterance_whose_transcript_or_audio_changed(tmp_path, demo_manifest):
    from vqspeech.data.align import align_corpus

    rows = absolute_rows(demo_manifest)[:2]
    manifest = write_lines(tmp_path / "data" / "manifest.jsonl", rows)
    out = tmp_path / "grids"
    first = align_corpus(manifest, out, num_workers=1, progress=False)
    assert first.aligned == 2 and first.reused == 0
    again = align_corpus(manifest, out, num_workers=1, progress=False)
    assert again.reused == 2
    rows[0]["text"] = "completely different words here"
    write_lines(manifest, rows)
    changed = align_corpus(manifest, out, num_workers=1, progress=False)
    assert changed.reused == 1
    grid = out / f"{rows[0]['id']}.TextGrid"  # aligned to the new words, or failed: never the old alignment
    assert "completely" in grid.read_text().lower() if grid.exists() else changed.failed == 1


@pytest.mark.parametrize("override,key", [
    ("model.decoder.layers=30 model.decoder.cycles=1", "model.decoder.cycles"),
])
def test_a_receptive_field_beyond_the_bound_is_refused(tmp_path, capsys, demo_manifest, override, key):
    message = cli_error(capsys, ["train", tmp_path / "exp", *FAST_TRAIN, f"data.manifest={demo_manifest}",
                                 *override.split()], "train")
    assert key in message and not (tmp_path / "exp").exists()


def test_a_codes_folder_missing_files_its_codes_json_lists_is_refused(tmp_path, capsys, trained_tiny, codes):
    partial = tmp_path / "codes"
    shutil.copytree(codes, partial)
    gone = sorted((partial / "codes").glob("*.npy"))[0]
    gone.unlink()
    message = cli_error(capsys, ["decode", trained_tiny, partial, "-o", tmp_path / "d"], "decode")
    assert gone.stem in message and "codes.json lists" in message
    os.mkfifo(gone)  # a FIFO in its place is not a codes file (reading it would block forever)
    message = cli_error(capsys, ["decode", trained_tiny, partial, "-o", tmp_path / "d"], "decode")
    assert gone.stem in message and not (tmp_path / "d").exists()


@pytest.mark.parametrize("where", ["prepared", "codes"])
def test_no_folder_writer_writes_into_another_verbs_folder(tmp_path, capsys, trained_tiny, codes, demo_manifest,
                                                           where):
    data = tmp_path / "data"
    shutil.copytree(demo_manifest.parent, data, ignore=NO_READERS)
    owned = data / "wavs" if where == "prepared" else codes
    before = files_under(owned)
    manifest = data / "manifest.jsonl"
    for argv, verb in [
        (["evaluate", "conversion", trained_tiny, "--num", "1", "--out", owned / "e"], "evaluate conversion"),
        (["baseline", "mfcc-kmeans", manifest, owned / "b"], "baseline"),
        (["encode", trained_tiny, manifest, owned / "x"], "encode"),
        (["train", owned / "exp", *FAST_TRAIN, f"data.manifest={manifest}", "train.max_steps=1"], "train"),
    ]:
        assert "that other commands read" in cli_error(capsys, argv, verb)
    assert files_under(owned) == before


def test_load_audio_refuses_a_target_rate_out_of_range(demo_manifest):
    from vqspeech.audio import load_audio

    with pytest.raises(UserError, match="sample_rate"):
        load_audio(read_manifest(demo_manifest)[0].audio, 0)


# --- seventh pass -----------------------------------------------------------------------------


def test_prepare_converts_sources_swapped_under_one_modification_time(tmp_path):
    """Files unpacked from one archive share a timestamp; swapping two of them with mv keeps both
    times, so only the record of what each cached wav was made from shows the change."""
    from vqspeech.data.prepare import prepare_corpus

    corpus = tmp_path / "corpus"
    t = np.arange(8000) / 8000
    for speaker, seconds in (("anna", 0.5), ("ben", 1.0)):
        (corpus / speaker).mkdir(parents=True)
        sf.write(corpus / speaker / "001.wav", (0.3 * np.sin(2 * np.pi * 220 * t[: int(8000 * seconds)])), 8000)
        os.utime(corpus / speaker / "001.wav", (1.6e9, 1.6e9))
    summary = prepare_corpus(corpus, tmp_path / "out", "folder", sample_rate=8000, progress=False, num_workers=0)
    assert {u.speaker: u.duration for u in read_manifest(summary.manifest)} == {"anna": 0.5, "ben": 1.0}
    (corpus / "anna" / "001.wav").rename(tmp_path / "swap.wav")
    (corpus / "ben" / "001.wav").rename(corpus / "anna" / "001.wav")
    (tmp_path / "swap.wav").rename(corpus / "ben" / "001.wav")
    summary = prepare_corpus(corpus, tmp_path / "out", "folder", sample_rate=8000, progress=False, num_workers=0)
    utts = read_manifest(summary.manifest)
    assert {u.speaker: u.duration for u in utts} == {"anna": 1.0, "ben": 0.5}
    for u in utts:  # the cache holds the new audio, not only the manifest
        assert sf.info(u.audio).frames == int(u.duration * 8000)


def test_decode_refuses_codes_of_another_code_rate(tmp_path, capsys, trained_tiny, codes):
    other = tmp_path / "codes16"
    shutil.copytree(codes, other)
    info = json.loads((other / "codes.json").read_text())
    rate = info["code_rate_hz"] * 2  # the same hop at twice the sample rate
    info.update(code_rate_hz=rate, frame_offset_s=0.5 / rate, sample_rate=info["sample_rate"] * 2)
    (other / "codes.json").write_text(json.dumps(info))
    message = cli_error(capsys, ["decode", trained_tiny, other, "-o", tmp_path / "out"], "decode")
    assert "code rate" in message and "decode them with the model that made them" in message
    one = sorted((other / "codes").glob("*.npy"))[0]
    assert "code rate" in cli_error(capsys, ["decode", trained_tiny, one, "-o", tmp_path / "one.wav"], "decode")
    assert not (tmp_path / "out").exists() and not (tmp_path / "one.wav").exists()


def test_evaluate_conversion_writes_neither_into_an_experiment_nor_over_a_foreign_metrics_file(
    tmp_path, capsys, trained_tiny
):
    exp = tmp_path / "exp"
    shutil.copytree(trained_tiny, exp)
    (exp / "metrics.json").write_text('{"split": "valid", "bits_per_sample": 5.0}\n')
    before = files_under(exp)
    message = cli_error(capsys, ["evaluate", "conversion", exp, "--out", exp, "--num", "1", "--overwrite"],
                        "evaluate conversion")
    assert "is an experiment folder" in message and "eval_convert" in message
    out = tmp_path / "eval"
    out.mkdir()
    (out / "metrics.json").write_text('{"split": "valid", "bits_per_sample": 5.0}\n')
    message = cli_error(capsys, ["evaluate", "conversion", exp, "--out", out, "--num", "1", "--overwrite"],
                        "evaluate conversion")
    assert "was not written by `evaluate conversion`" in message
    assert files_under(exp) == before and json.loads((out / "metrics.json").read_text())["bits_per_sample"] == 5.0
    assert sorted(p.name for p in out.iterdir()) == ["metrics.json"]


def test_a_stale_lock_taken_over_by_one_process_is_not_removed_by_another(tmp_path):
    """Two processes find the same dead holder's lock; the one that removes it second must not
    remove the lock the first one has taken meanwhile."""
    folder = tmp_path / "out"
    folder.mkdir()
    dead = {"pid": 2**22 + 12345, "host": socket.gethostname(), "verb": "encode", "started": time.time() - 100,
            "process_start": "1"}
    (folder / FolderLock.NAME).write_text(json.dumps(dead))
    first, second = FolderLock(folder, "encode"), FolderLock(folder, "encode")
    stale = second._read_holder()  # what the second process judged stale
    assert stale and not process_alive(stale)
    first.acquire()  # the first process takes the lock over
    second._remove_stale(stale)  # ... and the second one, late, removes what it judged stale
    assert json.loads((folder / FolderLock.NAME).read_text())["pid"] == os.getpid()
    with pytest.raises(UserError, match="is in use by `vqspeech encode`"):
        second.acquire()
    first.release()


def test_train_refuses_a_folder_whose_last_checkpoint_is_gone(tmp_path, capsys, demo_manifest):
    exp = tmp_path / "exp"
    common = [*FAST_TRAIN, f"data.manifest={demo_manifest}", "train.checkpoint_every=1"]
    assert run_cli(["train", exp, *common, "train.max_steps=2"]) == 0
    (exp / "checkpoints" / "last.pt").unlink()
    kept = {p.name: p.read_bytes() for p in (exp / "checkpoints").glob("*.pt")}
    assert set(kept) == {"step-1.pt", "step-2.pt"}
    message = cli_error(capsys, ["train", exp, *common, "train.max_steps=4"], "train")
    assert "holds step-2.pt but no last.pt" in message and "copy it to" in message
    assert {p.name: p.read_bytes() for p in (exp / "checkpoints").glob("*.pt")} == kept
    shutil.copy(exp / "checkpoints" / "step-2.pt", exp / "checkpoints" / "last.pt")  # the way the message names
    assert run_cli(["train", exp, "train.max_steps=3"]) == 0
    assert torch.load(exp / "checkpoints" / "last.pt", weights_only=True)["step"] == 3


def test_validation_utterances_of_unknown_speakers_are_named_when_left_out():
    from vqspeech.training.experiment import known_speakers_only

    utts = [dataclasses.make_dataclass("U", ["speaker"])(s) for s in ("anna", "lucas", "lucas", "zoe")]
    with pytest.warns(UserWarning, match=r"3 of the 4 valid utterances are by speakers absent .*lucas, zoe"):
        assert known_speakers_only(utts, {"anna": 0}) == utts[:1]
    with pytest.warns(UserWarning, match="there are no validation metrics"):
        assert known_speakers_only(utts[1:], {"anna": 0}) == []


def test_prepare_checks_held_out_speakers_before_converting_and_names_flags(tmp_path, capsys, monkeypatch):
    from vqspeech.data import prepare as prepare_module

    corpus = tmp_path / "corpus"
    for speaker in ("anna", "ben"):
        (corpus / speaker).mkdir(parents=True)
        sf.write(corpus / speaker / "a.wav", 0.3 * np.sin(np.arange(4000) / 5.0), 8000)
    monkeypatch.setattr(prepare_module, "_convert", lambda task: pytest.fail("converted before the check"))
    message = cli_error(capsys, ["prepare", corpus, tmp_path / "out", "--layout", "folder", "--split_by", "speaker",
                                 "--heldout_speakers", "anna,ben"], "prepare")
    assert "`--heldout_speakers`" not in message and "--heldout_speakers lists every speaker" in message
    message = cli_error(capsys, ["prepare", corpus, tmp_path / "out", "--layout", "folder",
                                 "--heldout_speakers", "anna"], "prepare")
    assert "--heldout_speakers only applies when --split_by is 'speaker'" in message
    assert not (tmp_path / "out" / "wavs").exists() or not any((tmp_path / "out" / "wavs").iterdir())


def test_prepare_says_which_sources_it_upsampled(tmp_path, capsys):
    from vqspeech.data.prepare import prepare_corpus

    corpus = tmp_path / "corpus" / "anna"
    corpus.mkdir(parents=True)
    for rate in (2000, 4000, 8000, 8000):
        sf.write(corpus / f"r{rate}_{len(list(corpus.iterdir()))}.wav", 0.3 * np.sin(np.arange(rate) / 3.0), rate)
    with pytest.warns(UserWarning, match=r"2 file\(s\) were recorded below 8000 Hz .*r2000_0.wav at 2000 Hz"):
        summary = prepare_corpus(tmp_path / "corpus", tmp_path / "out", "folder", sample_rate=8000,
                                 progress=False, num_workers=0)
    assert summary.num_utterances == 4 and summary.num_upsampled == 2
    capsys.readouterr()  # on the command line: one line like an error's, the parameter as its flag
    assert run_cli(["prepare", tmp_path / "corpus", tmp_path / "out2", "--layout", "folder", "--sample_rate", "8000"]) == 0
    warned = [line for line in capsys.readouterr().err.splitlines() if "warning" in line]
    assert len(warned) == 1 and warned[0].startswith("vqspeech prepare: warning: 2 file(s) were recorded below")
    assert "at a lower --sample_rate" in warned[0]


def test_a_sound_file_too_long_to_read_is_one_sentence_about_its_length(tmp_path, monkeypatch):
    from vqspeech import audio as audio_module

    huge = tmp_path / "huge.wav"
    n = 3_000_000_000  # bytes of 16-bit samples: a sparse file, no disk used
    header = (b"RIFF" + (36 + n).to_bytes(4, "little") + b"WAVEfmt " + (16).to_bytes(4, "little")
              + (1).to_bytes(2, "little") + (1).to_bytes(2, "little") + (8000).to_bytes(4, "little")
              + (16000).to_bytes(4, "little") + (2).to_bytes(2, "little") + (16).to_bytes(2, "little")
              + b"data" + n.to_bytes(4, "little"))
    with open(huge, "wb") as f:
        f.write(header)
        f.truncate(len(header) + n)
    with pytest.raises(UserError, match=r"holds 1,500,000,000 samples \(52.1 hours\).*split it into shorter files"):
        audio_module.load_audio(huge)
    small = tmp_path / "small.wav"
    sf.write(small, np.zeros(800), 8000)

    def no_memory(*args, **kwargs):
        raise MemoryError("Unable to allocate 5.59 GiB")

    monkeypatch.setattr(audio_module.sf, "read", no_memory)
    with pytest.raises(UserError, match="too long to read into the memory") as caught:
        audio_module.load_audio(small)
    assert "WAV or FLAC" not in str(caught.value)


def test_a_bad_entry_of_a_codes_mapping_is_named_not_printed_whole(tmp_path, capsys, trained_tiny, codes):
    bad = tmp_path / "codes"
    shutil.copytree(codes, bad)
    info = json.loads((bad / "codes.json").read_text())
    info["splits"] = {k: "bogus" for k in info["speakers"]}
    (bad / "codes.json").write_text(json.dumps(info))
    first = next(iter(info["splits"]))
    message = cli_error(capsys, ["decode", trained_tiny, bad, "-o", tmp_path / "out"], "decode")
    assert f"field splits['{first}'] is 'bogus'" in message and "train, valid, test" in message
    assert len(message) < 300 and message.count("bogus") == 1


def test_a_thread_count_above_the_cores_is_held_to_the_cores(tmp_path, monkeypatch, demo_manifest):
    from vqspeech.threads import usable_cores

    counts = []
    real = torch.set_num_threads
    monkeypatch.setattr(torch, "set_num_threads", lambda n: (counts.append(n), real(n)))
    assert run_cli(["train", tmp_path / "exp", *FAST_TRAIN, f"data.manifest={demo_manifest}", "train.max_steps=1",
                    "train.threads=1000"]) == 0
    assert counts and counts[0] == usable_cores()


def test_align_refuses_a_source_without_any_transcript(tmp_path, capsys, demo_manifest):
    rows = absolute_rows(demo_manifest)[:4]
    for row in rows:
        row.pop("text", None)
    manifest = write_lines(tmp_path / "m" / "manifest.jsonl", rows)
    message = cli_error(capsys, ["align", manifest, tmp_path / "al"], "align")
    assert "None of the 4 utterances" in message and "has a transcript" in message
    assert not (tmp_path / "al").exists()


def test_report_and_export_are_not_written_into_a_codes_folder_or_a_prepared_corpus(
    tmp_path, capsys, trained_tiny, codes, demo_manifest
):
    corpus = demo_manifest.parent
    for verb, argv in (("report", ["report", trained_tiny, "--out", codes / "x.html"]),
                       ("report", ["report", trained_tiny, "--out", corpus / "r.html"]),
                       ("export", ["export", trained_tiny, codes / "codes" / "m.pt"]),
                       ("export", ["export", trained_tiny, corpus / "m.pt"])):
        message = cli_error(capsys, argv, verb)
        assert "would be written into" in message and not Path(argv[-1]).exists()


def test_speakers_lists_those_of_a_prior_and_of_a_codes_folder(capsys, trained_tiny, codes):
    vq = VQSpeech.load(trained_tiny, "cpu")
    for folder in (trained_tiny, codes):
        capsys.readouterr()
        assert run_cli(["speakers", folder]) == 0
        assert set(capsys.readouterr().out.split()) <= set(vq.speakers)


# --- eighth pass ------------------------------------------------------------------------------


def tone_corpus(root: Path, seconds: dict[str, float], rate: int = 8000) -> Path:
    """A folder-layout corpus: one 220 Hz tone ``<speaker>/001.wav`` per speaker, of these lengths."""
    for speaker, length in seconds.items():
        (root / speaker).mkdir(parents=True, exist_ok=True)
        t = np.arange(int(rate * length)) / rate
        sf.write(root / speaker / "001.wav", 0.3 * np.sin(2 * np.pi * 220 * t), rate, subtype="PCM_16")
    return root


def test_prepare_converts_a_source_rewritten_in_place_with_its_times_restored(tmp_path):
    """Size, modification time and inode all stay; only the status-change time shows the write."""
    from vqspeech.data.prepare import prepare_corpus

    corpus = tone_corpus(tmp_path / "corpus", {"anna": 0.5, "ben": 0.5})
    options = dict(sample_rate=8000, progress=False, num_workers=0)
    prepare_corpus(corpus, tmp_path / "out", "folder", **options)
    source = corpus / "anna" / "001.wav"
    before = source.stat()
    audio, rate = sf.read(source)
    with open(source, "r+b") as f:  # the same bytes count, other samples: a quieter, higher tone
        f.seek(0)
        sf.write(f, 0.05 * np.sin(2 * np.pi * 440 * np.arange(len(audio)) / rate), rate, subtype="PCM_16",
                 format="WAV")
    os.utime(source, ns=(before.st_atime_ns, before.st_mtime_ns))
    after = source.stat()
    assert (after.st_size, after.st_mtime_ns, after.st_ino) == (before.st_size, before.st_mtime_ns, before.st_ino)
    summary = prepare_corpus(corpus, tmp_path / "out", "folder", **options)
    cached = {u.speaker: sf.read(u.audio)[0] for u in read_manifest(summary.manifest)}
    spectrum = np.abs(np.fft.rfft(cached["anna"]))
    assert np.argmax(spectrum) / len(cached["anna"]) * 8000 == pytest.approx(440, abs=5)  # the new audio


def test_prepare_removes_the_cached_audio_of_utterances_that_left_the_corpus(tmp_path):
    from vqspeech.data.prepare import prepare_corpus

    corpus = tone_corpus(tmp_path / "corpus", {"anna": 0.5, "ben": 0.5, "carl": 0.5})
    options = dict(sample_rate=8000, progress=False, num_workers=0)
    prepare_corpus(corpus, tmp_path / "out", "folder", **options)
    assert len(list((tmp_path / "out" / "wavs").glob("*.wav"))) == 3
    (corpus / "ben" / "001.wav").unlink()
    (corpus / "carl").rename(corpus / "karl")
    (tmp_path / "out" / "wavs" / "notes.txt").write_text("mine\n")  # not prepare's: kept
    summary = prepare_corpus(corpus, tmp_path / "out", "folder", **options, overwrite=True)
    wavs = {p.stem for p in (tmp_path / "out" / "wavs").glob("*.wav")}
    assert wavs == {u.id for u in read_manifest(summary.manifest)} and len(wavs) == 2
    assert (tmp_path / "out" / "wavs" / "notes.txt").read_text() == "mine\n"


def test_a_wav_cut_short_is_refused_not_read_as_a_short_recording(tmp_path, capsys, trained_tiny):
    from vqspeech.audio import load_audio, wav_truncation
    from vqspeech.data.prepare import prepare_corpus, read_rejects

    corpus = tone_corpus(tmp_path / "corpus", {"anna": 1.0, "ben": 1.0})
    whole = corpus / "ben" / "001.wav"
    assert wav_truncation(whole) is None
    cut = corpus / "anna" / "001.wav"
    cut.write_bytes(cut.read_bytes()[:4000])  # an interrupted copy
    assert wav_truncation(cut) == (8000, (4000 - 44) // 2)
    with pytest.raises(UserError, match="cut short: its header promises 8,000 samples, it holds 1,978"):
        load_audio(cut)
    summary = prepare_corpus(corpus, tmp_path / "out", "folder", sample_rate=8000, progress=False, num_workers=0)
    assert [u.speaker for u in read_manifest(summary.manifest)] == ["ben"]
    assert [(Path(f).name, "cut short" in reason) for f, reason in read_rejects(tmp_path / "out")] == [
        ("001.wav", True)]
    message = cli_error(capsys, ["encode", trained_tiny, cut, tmp_path / "codes"], "encode")
    assert "cut short" in message and str(cut) in message


def test_speakers_reads_a_prepared_corpus_and_refuses_what_holds_no_speakers(tmp_path, capsys, demo_manifest):
    corpus = demo_manifest.parent
    expected = sorted({u.speaker for u in read_manifest(demo_manifest)})
    for given in (corpus, demo_manifest):
        capsys.readouterr()
        assert run_cli(["speakers", given]) == 0
        assert capsys.readouterr().out.split() == expected
    wav = read_manifest(demo_manifest)[0].audio
    assert "is not a checkpoint" in cli_error(capsys, ["speakers", wav], "speakers")
    (tmp_path / "empty.jsonl").write_text("")
    assert "lists no utterances" in cli_error(capsys, ["speakers", tmp_path / "empty.jsonl"], "speakers")
    for argv in (["speakers", ""], ["encode", "", "x", tmp_path / "c"], ["prepare", "", tmp_path / "o"]):
        assert "is empty" in cli_error(capsys, argv, argv[0])  # not the working directory


def test_a_checkpoint_holding_code_is_refused_without_running_it(tmp_path, capsys):
    marker = tmp_path / "ran"

    class Payload:
        def __reduce__(self):
            return (Path.touch, (marker,))

    torch.save({"format_version": 1, "payload": Payload()}, tmp_path / "evil.pt")
    message = cli_error(capsys, ["speakers", tmp_path / "evil.pt"], "speakers")
    assert "can run code" in message and not marker.exists()


def test_a_refused_resume_names_the_changed_key_and_both_values(tmp_path, trained_tiny, capsys, demo_manifest):
    exp = tmp_path / "copy"
    shutil.copytree(trained_tiny, exp)
    message = cli_error(capsys, ["train", exp, "model.encoder.warp=0.1"], "train")
    assert "(model.encoder.warp 0.0 -> 0.1)" in message
    decoder = tmp_path / "decoder"
    message = cli_error(capsys, ["train", decoder, *FAST_TRAIN, f"data.manifest={demo_manifest}",
                                 f"train.units_from={trained_tiny}",
                                 "model.encoder.warp=0.1", "train.max_steps=1"], "train")
    assert "model.encoder.warp 0.0 -> 0.1" in message and len(message) < 400


# --- ninth pass -------------------------------------------------------------------------------


def test_no_folder_writer_but_training_writes_into_an_experiment_folder(tmp_path, capsys, trained_tiny, codes,
                                                                       demo_manifest):
    exp = tmp_path / "exp"
    shutil.copytree(trained_tiny, exp)
    before = files_under(exp)
    corpus = demo_manifest.parent
    wav = read_manifest(demo_manifest)[0].audio
    for verb, argv in (("prepare", ["prepare", corpus, exp, "--layout", "folder"]),
                       ("align", ["align", demo_manifest, exp, "--limit", "1"]),
                       ("convert", ["convert", trained_tiny, demo_manifest, "--split", "test", "--limit", "2",
                                    "--speaker", VQSpeech.load(trained_tiny, "cpu").speakers[0], "-o", exp]),
                       ("decode", ["decode", trained_tiny, codes, "-o", exp]),
                       ("demo-data", ["demo-data", exp, "--num_sentences", "1"]),
                       ("export", ["export", trained_tiny, exp / "checkpoints" / "step-9.pt"])):
        message = cli_error(capsys, argv, verb)
        assert ("experiment" in message or "is not empty" in message) and str(exp) in message, message
    assert files_under(exp) == before
    capsys.readouterr()
    assert run_cli(["convert", exp, wav, "--speaker", VQSpeech.load(trained_tiny, "cpu").speakers[0],
                    "-o", exp / "convert" / "one"]) == 0  # a subfolder of its own is fine


def test_demo_data_keeps_out_of_other_files_and_other_demo_corpora(tmp_path, capsys):
    folder = tmp_path / "fsdd"
    (folder / "recordings").mkdir(parents=True)
    assert "is not empty (it holds recordings)" in cli_error(capsys, ["demo-data", folder], "demo-data")
    assert run_cli(["demo-data", tmp_path / "demo", "--num_sentences", "1"]) == 0
    message = cli_error(capsys, ["demo-data", tmp_path / "demo" / "wavs" / "x", "--num_sentences", "1"], "demo-data")
    assert "lies inside the demo corpus" in message
    assert sorted(p.name for p in folder.iterdir()) == ["recordings"]


def test_speakers_of_an_experiment_holding_a_manifest_are_the_models(tmp_path, capsys, trained_tiny, demo_manifest):
    exp = tmp_path / "exp"
    shutil.copytree(trained_tiny, exp)
    shutil.copy(demo_manifest, exp / "manifest.jsonl")
    capsys.readouterr()
    assert run_cli(["speakers", exp]) == 0
    assert capsys.readouterr().out.split() == VQSpeech.load(trained_tiny, "cpu").speakers


def test_a_crafted_checkpoint_config_allocates_nothing_and_nan_weights_are_refused(tmp_path, capsys, trained_tiny):
    ckpt = torch.load(trained_tiny / "checkpoints" / "last.pt", weights_only=True)
    huge = copy.deepcopy(ckpt)
    huge["config"]["model"]["decoder"]["residual_channels"] = 10**7  # about 20 GB if it were built
    torch.save(huge, tmp_path / "huge.pt")
    message = cli_error(capsys, ["speakers", tmp_path / "huge.pt"], "speakers")
    assert "does not fit the config" in message
    broken = copy.deepcopy(ckpt)
    name = next(k for k, v in broken["model"].items() if v.is_floating_point())
    broken["model"][name] = broken["model"][name] * float("nan")
    torch.save(broken, tmp_path / "nan.pt")
    message = cli_error(capsys, ["evaluate", "loss", tmp_path / "nan.pt"], "evaluate loss")
    assert f"weight {name} holds values that are not finite numbers" in message


@pytest.mark.parametrize("verb,args,words", [
    ("baseline", ["--num_codes", "0"], "--num_codes must be"),
    ("baseline", ["--code_rate", "0"], "--code_rate must be"),
    ("align", ["--num_workers", "-1"], "--num_workers"),
    ("prepare", ["--heldout_speakers", ",", "--split_by", "speaker"], "names no speaker"),
])
def test_a_zero_or_empty_value_is_refused_not_replaced_by_the_default(tmp_path, capsys, demo_manifest, verb, args,
                                                                      words):
    where = {"baseline": ["baseline", "mfcc-kmeans", demo_manifest, tmp_path / "o"],
             "align": ["align", demo_manifest, tmp_path / "o"],
             "prepare": ["prepare", demo_manifest.parent, tmp_path / "o", "--layout", "folder"]}[verb]
    assert words in cli_error(capsys, [*where, *args], verb)
    assert not (tmp_path / "o").exists()


def test_decode_refuses_codes_of_another_codebook(tmp_path, capsys, trained_tiny, codes, demo_manifest):
    """Same K, rate and levels, but other codebook vectors: the indices mean other sounds."""
    other = tmp_path / "other"
    assert run_cli(["train", other, *FAST_TRAIN, f"data.manifest={demo_manifest}", "train.max_steps=2",
                    "seed=7"]) == 0
    speaker = VQSpeech.load(other, "cpu").speakers[0]
    message = cli_error(capsys, ["decode", other, codes, "--speaker", speaker, "-o", tmp_path / "out"], "decode")
    assert "index the codebook" in message and str(trained_tiny) in message
    enrolled = tmp_path / "enrolled"  # an enrolment shares its source's codebook: decodes
    voice = Path(read_manifest(demo_manifest)[0].audio).parent
    assert run_cli(["enroll", trained_tiny, "newcomer", voice, "-o", enrolled, "--steps", "1", "--minutes", "0",
                    "--device", "cpu"]) == 0
    assert run_cli(["decode", enrolled, codes, "--speaker", "newcomer", "-o", tmp_path / "dec"]) == 0


def test_a_prepare_rerun_keeps_the_alignments_of_unchanged_sources(tmp_path):
    from vqspeech.data.manifest import set_alignments
    from vqspeech.data.prepare import prepare_corpus

    corpus = tone_corpus(tmp_path / "corpus", {"anna": 0.5, "ben": 0.5})
    options = dict(sample_rate=8000, progress=False, num_workers=0)
    summary = prepare_corpus(corpus, tmp_path / "out", "folder", **options)
    grids = {}
    for u in read_manifest(summary.manifest):  # as `align --manifest` adds them
        grids[u.id] = tmp_path / "grids" / f"{u.id}.TextGrid"
        grids[u.id].parent.mkdir(exist_ok=True)
        grids[u.id].write_text("grid\n")
    set_alignments(summary.manifest, {k: str(v) for k, v in grids.items()})
    time.sleep(0.01)
    tone_corpus(corpus, {"ben": 0.6})  # ben's recording is replaced: its alignment no longer fits
    summary = prepare_corpus(corpus, tmp_path / "out", "folder", **options)
    kept = {u.speaker: u.alignment for u in read_manifest(summary.manifest)}
    assert kept["anna"] == str(grids[next(k for k in grids if k.startswith("anna"))]) and kept["ben"] is None


# --- tenth pass -------------------------------------------------------------------------------


def test_a_finished_run_is_not_relabelled_with_settings_that_train_nothing(tmp_path, capsys, trained_tiny):
    exp = tmp_path / "exp"
    shutil.copytree(trained_tiny, exp)
    before = {p: p.read_bytes() for p in (exp / "config.yaml", exp / "overrides.yaml", exp / "checkpoints" / "last.pt")}
    message = cli_error(capsys, ["train", exp, "train.lr=0.9", "train.batch_size=64"], "train")
    assert "has trained 30 steps, as many steps (or minutes) as these settings ask for or more" in message
    assert "train.batch_size 8 -> 64" in message and "train.max_steps" in message
    assert {p: p.read_bytes() for p in before} == before
    assert run_cli(["train", exp]) == 0  # the same settings: nothing to do, nothing relabelled
    assert run_cli(["train", exp, "train.max_steps=31"]) == 0  # a longer schedule trains on
    assert torch.load(exp / "checkpoints" / "last.pt", weights_only=True)["step"] == 31


def test_decode_refuses_codes_that_no_vqvae_made(tmp_path, capsys, trained_tiny, codes, demo_manifest):
    baseline = tmp_path / "kmeans"
    assert run_cli(["baseline", "mfcc-kmeans", demo_manifest, baseline, "--like", codes]) == 0
    message = cli_error(capsys, ["decode", trained_tiny, baseline, "-o", tmp_path / "out"], "decode")
    assert "made by mfcc-kmeans, not by a VQ-VAE" in message and not (tmp_path / "out").exists()


def test_a_demo_corpus_is_kept_as_demo_data_made_it(tmp_path, capsys, trained_tiny):
    from vqspeech.data.demo import is_complete_demo_corpus

    corpus = tmp_path / "demo"
    assert run_cli(["demo-data", corpus, "--num_sentences", "2"]) == 0
    wav = next((corpus / "wavs").rglob("*.wav"))
    before = wav.read_bytes()
    for verb, argv in (("convert", ["convert", trained_tiny, wav, "--speaker",
                                    VQSpeech.load(trained_tiny, "cpu").speakers[0], "-o", wav, "--overwrite"]),
                       ("encode", ["encode", trained_tiny, wav, corpus / "codes"]),
                       ("export", ["export", trained_tiny, corpus / "m.pt"])):
        assert "a demo corpus that other commands read" in cli_error(capsys, argv, verb)
    assert wav.read_bytes() == before
    sf.write(wav, np.zeros(800, dtype=np.float32), 8000)  # replaced from outside vqspeech
    assert not is_complete_demo_corpus(corpus)
    summary = json.loads(subprocess.run(
        [sys.executable, "-m", "vqspeech.cli", "prepare", corpus, tmp_path / "p", "--layout", "demo",
         "--sample_rate", "8000"], capture_output=True, text=True, check=True).stdout.splitlines()[-1])
    assert summary["num_rejected"] == 1
    assert run_cli(["demo-data", corpus, "--num_sentences", "2"]) == 0 and is_complete_demo_corpus(corpus)


def test_export_never_replaces_a_device_or_a_pipe(tmp_path, capsys, trained_tiny):
    fifo = tmp_path / "pipe.pt"
    os.mkfifo(fifo)
    message = cli_error(capsys, ["export", trained_tiny, fifo, "--overwrite"], "export")
    assert "not a regular file" in message and fifo.is_fifo()


def test_the_report_skips_a_section_whose_numbers_overflow(tmp_path, trained_tiny):
    from vqspeech.eval.report import write_report

    exp = tmp_path / "exp"
    shutil.copytree(trained_tiny, exp)
    summary = json.loads((exp / "train_summary.json").read_text())
    summary["parameters"] = 10**400  # valid JSON, beyond any float
    (exp / "train_summary.json").write_text(json.dumps(summary))
    page = write_report(exp).read_text()
    assert "Section skipped: its files have an unexpected shape (OverflowError" in page


@pytest.mark.parametrize("name", ["", "../../evil\nroot", "a/b"])
def test_codes_json_speaker_names_follow_the_manifest_rule(tmp_path, codes, name):
    copy_ = tmp_path / "codes"
    shutil.copytree(codes, copy_)
    info = json.loads((copy_ / "codes.json").read_text())
    first = next(iter(info["speakers"]))
    info["speakers"][first] = name
    (copy_ / "codes.json").write_text(json.dumps(info))
    with pytest.raises(UserError, match=rf"speakers\[{first!r}\] is .* speaker names \(no slashes"):
        CodesFolder.open(copy_)


def test_encode_refuses_a_manifest_line_that_its_audio_contradicts(tmp_path, capsys, trained_tiny, demo_manifest):
    lines = demo_manifest.read_text().splitlines()
    row = json.loads(lines[0])
    row["audio"] = str((demo_manifest.parent / row["audio"]).resolve())
    row["sample_rate"] = 16000
    (tmp_path / "m.jsonl").write_text(json.dumps(row) + "\n")
    message = cli_error(capsys, ["encode", trained_tiny, tmp_path / "m.jsonl", tmp_path / "c"], "encode")
    assert "holds audio at 8000 Hz but its manifest line" in message and not (tmp_path / "c").exists()


def test_what_an_audio_path_is_when_it_is_no_sound_file(tmp_path):
    from vqspeech.audio import load_audio

    os.mkfifo(tmp_path / "pipe.wav")
    (tmp_path / "loop_a.wav").symlink_to(tmp_path / "loop_b.wav")
    (tmp_path / "loop_b.wav").symlink_to(tmp_path / "loop_a.wav")
    for name, words in (("pipe.wav", "not a regular file"), ("loop_a.wav", "a link that leads nowhere"),
                        ("", "is a folder"), ("none.wav", "does not exist")):
        with pytest.raises(UserError, match=words):
            load_audio(tmp_path / name)


def test_prior_train_and_train_name_the_other_kind_of_experiment(tmp_path, capsys, trained_tiny, codes):
    message = cli_error(capsys, ["prior", "train", trained_tiny, f"data.codes={codes}"], "prior train")
    assert "is a VQ-VAE's experiment, not a prior's" in message


# --- eleventh pass ----------------------------------------------------------------------------

TOOLS = Path(__file__).resolve().parents[1] / "tools"


def run_tool(name: str, *args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(TOOLS / name), *map(str, args)], capture_output=True, text=True)


def test_the_tools_replace_no_file_without_overwrite_and_keep_out_of_owned_folders(tmp_path, demo_manifest, codes):
    probe = tmp_path / "probe.json"
    assert run_cli(["evaluate", "probe", "--codes", codes, "--manifest", demo_manifest, "--out", probe,
                    "--no_abx"]) == 0
    kept = tmp_path / "notes.md"
    kept.write_text("mine\n")
    result = run_tool("phoneme_probe.py", probe, "--out", kept)
    assert result.returncode == 2 and "exists; pass --overwrite" in result.stderr and kept.read_text() == "mine\n"
    assert run_tool("phoneme_probe.py", probe, "--out", kept, "--overwrite").returncode == 0
    manifest = demo_manifest.parent / "manifest.jsonl"
    before = manifest.read_bytes()
    result = run_tool("phoneme_probe.py", probe, "--out", manifest, "--overwrite")
    assert result.returncode == 2 and "should name a .md" in result.stderr and manifest.read_bytes() == before
    result = run_tool("phoneme_probe.py", probe, "--out", demo_manifest.parent / "table.md", "--overwrite")
    assert result.returncode == 2 and "a prepared corpus" in result.stderr
    result = run_tool("phoneme_probe.py", codes / "codes.json")
    assert result.returncode == 2 and "is not a probe result" in result.stderr and "Traceback" not in result.stderr


def test_a_prior_does_not_resume_on_codes_of_a_changed_codebook(tmp_path, capsys, trained_tiny, demo_manifest):
    exp, codes_dir, prior = tmp_path / "exp", tmp_path / "codes", tmp_path / "prior"
    shutil.copytree(trained_tiny, exp)
    assert run_cli(["encode", exp, demo_manifest, codes_dir]) == 0
    assert run_cli(["prior", "train", prior, *PRIOR, f"data.codes={codes_dir}", "train.max_steps=1"]) == 0
    assert run_cli(["train", exp, "train.max_steps=31"]) == 0  # the VQ-VAE trains on: a new codebook
    assert run_cli(["encode", exp, demo_manifest, codes_dir, "--overwrite"]) == 0
    message = cli_error(capsys, ["prior", "train", prior, "train.max_steps=2"], "prior train")
    assert "encoded again" in message and "codebook changed" in message


def test_a_huge_fft_is_refused_before_it_is_allocated(tmp_path, capsys, demo_manifest):
    message = cli_error(capsys, ["train", tmp_path / "e", *FAST_TRAIN, f"data.manifest={demo_manifest}",
                                 "model.encoder.n_fft=67108864"], "train")
    assert "model.encoder.n_fft" in message and "65536" in message


def test_learning_curve_refuses_minutes_that_are_not_finite(tmp_path, demo_manifest):
    for minutes in ("inf", "nan", "0", "1,-1"):
        result = run_tool("learning_curve.py", "--manifest", demo_manifest, "--out_dir", tmp_path / "c",
                          "--configs", "single", f"--minutes={minutes}")
        assert result.returncode == 2 and "positive finite numbers" in result.stderr, result.stderr


def test_align_refuses_a_manifest_that_shares_no_utterance_with_its_source(tmp_path, capsys, demo_manifest):
    other = tmp_path / "other.jsonl"
    rows = [json.loads(line) for line in demo_manifest.read_text().splitlines()]
    for row in rows:
        row["id"] = "x" + row["id"]
        row["audio"] = str((demo_manifest.parent / row["audio"]).resolve())
    other.write_text("".join(json.dumps(row) + "\n" for row in rows))
    before = other.read_bytes()
    message = cli_error(capsys, ["align", demo_manifest, tmp_path / "al", "--manifest", other], "align")
    assert "None of the utterances" in message and other.read_bytes() == before


def test_speaker_names_with_spaces_at_either_end_are_refused(tmp_path):
    from vqspeech.data.prepare import prepare_corpus, read_rejects

    corpus = tone_corpus(tmp_path / "corpus", {"anna": 0.5, " lead": 0.5, "trail ": 0.5})
    summary = prepare_corpus(corpus, tmp_path / "out", "folder", sample_rate=8000, progress=False, num_workers=0)
    assert [u.speaker for u in read_manifest(summary.manifest)] == ["anna"]
    assert len(read_rejects(tmp_path / "out")) == 2


def test_a_codes_file_claiming_more_than_a_day_is_refused_unread(tmp_path, codes):
    from numpy.lib import format as npy_format

    copy_ = tmp_path / "codes"
    shutil.copytree(codes, copy_)
    first = CodesFolder.open(copy_).code_ids[0]
    with open(copy_ / "codes" / f"{first}.npy", "wb") as f:  # a sparse file: 4 KB on disk, 400 MB claimed
        npy_format.write_array_header_1_0(f, {"descr": "<i2", "fortran_order": False, "shape": (200_000_000,)})
        f.truncate(f.tell() + 400_000_000)
    with pytest.raises(UserError, match="claims 200,000,000 frames, more than 24 hours"):
        CodesFolder.open(copy_).codes(first)


def test_a_loose_codes_file_is_decoded_with_a_warning(tmp_path, capsys, trained_tiny, codes):
    loose = tmp_path / "bare.npy"
    shutil.copy(next((codes / "codes").glob("*.npy")), loose)
    speaker = VQSpeech.load(trained_tiny, "cpu").speakers[0]
    assert run_cli(["decode", trained_tiny, loose, "--speaker", speaker, "-o", tmp_path / "b.wav"]) == 0
    err = capsys.readouterr().err
    assert "vqspeech decode: warning:" in err and "carries no record of the model that made it" in err


def test_the_report_says_when_its_evaluations_measured_an_earlier_state(tmp_path, trained_tiny):
    from vqspeech.eval.report import write_report

    exp = tmp_path / "exp"
    shutil.copytree(trained_tiny, exp)
    assert run_cli(["evaluate", "loss", exp, "--split", "test", "--out", exp / "metrics.json"]) == 0
    assert json.loads((exp / "metrics.json").read_text())["step"] == 30
    assert "were measured at step" not in write_report(exp).read_text()
    assert run_cli(["train", exp, "train.max_steps=31"]) == 0
    page = write_report(exp, overwrite=True).read_text()
    assert "These metrics were measured at step 30, but the model has trained to step 31 since" in page


def test_the_report_does_not_say_trained_on_when_another_model_went_back_in_steps(tmp_path, trained_tiny, demo_manifest):
    """Results of step 30, then another model at step 3 written into the experiment (as `enroll
    --overwrite` from another source does): the note must not claim it trained on since."""
    from vqspeech.eval.report import write_report

    exp, other = tmp_path / "exp", tmp_path / "other"
    shutil.copytree(trained_tiny, exp)
    assert run_cli(["evaluate", "loss", exp, "--split", "test", "--out", exp / "metrics.json"]) == 0
    assert run_cli(["train", other, *FAST_TRAIN, f"data.manifest={demo_manifest}", "train.max_steps=3"]) == 0
    shutil.copy(other / "checkpoints" / "last.pt", exp / "checkpoints" / "last.pt")
    page = write_report(exp).read_text()
    assert "These metrics were measured at step 30, but the model is now at step 3 (trained again, or another" in page
    assert "trained to step 3 since" not in page


def test_every_rank_of_a_distributed_run_gives_the_locks_refusal(tmp_path, trained_tiny):
    """Only rank 0 takes the lock; its refusal must reach the other ranks, or they wait at the next
    barrier and die there with the process group's traceback."""
    from helpers import run_torchrun

    exp = tmp_path / "exp"
    shutil.copytree(trained_tiny, exp)
    (exp / FolderLock.NAME).write_text(json.dumps({  # held by this (live) test process
        "pid": os.getpid(), "host": socket.gethostname(), "verb": "train", "started": time.time(),
        "process_start": process_start(os.getpid())}))
    proc, _ = run_torchrun(tmp_path, "import sys\nfrom vqspeech.cli import main\nsys.exit(main())\n",
                           ["train", exp, "train.max_steps=40"])
    output = proc.stdout + proc.stderr
    # rank 1 prints the refusal too, unless torchrun, seeing rank 0 end first, stops it before it can
    assert proc.returncode != 0 and output.count("vqspeech train: error: ") in (1, 2), output[-3000:]
    assert "is in use by `vqspeech train`" in output and "[rank1]: Traceback" not in output


# --- twelfth pass -----------------------------------------------------------------------------


def test_export_through_a_link_to_an_experiments_checkpoints_is_refused(tmp_path, capsys, trained_tiny):
    exp = tmp_path / "exp"
    shutil.copytree(trained_tiny, exp)
    (tmp_path / "link").symlink_to(exp / "checkpoints")
    before = (exp / "checkpoints" / "last.pt").read_bytes()
    for name in ("last.pt", "best.pt"):
        message = cli_error(capsys, ["export", trained_tiny, tmp_path / "link" / name, "--overwrite"], "export")
        assert "into the checkpoints of the experiment" in message and str(exp) in message
    assert (exp / "checkpoints" / "last.pt").read_bytes() == before and not (exp / "checkpoints" / "best.pt").exists()


def killed_convert(monkeypatch, vq, items, out: Path, after: int, **options) -> list[Path]:
    """``files.convert_items`` into ``out``, killed once it has written ``after`` outputs (a
    KeyboardInterrupt stands for kill -9; the lock a real kill leaves is taken over as stale).
    Returns the outputs it wrote."""
    from vqspeech.inference import files

    real_save, written = files.save_wav, []

    def save(path, audio, sr, **save_options):
        if len(written) == after:
            raise KeyboardInterrupt
        written.append(path)
        real_save(path, audio, sr, **save_options)

    monkeypatch.setattr(files, "save_wav", save)
    with pytest.raises(KeyboardInterrupt):
        files.convert_items(vq, items, out, **options)
    monkeypatch.setattr(files, "save_wav", real_save)
    return written


def test_the_identical_rerun_of_a_killed_convert_carries_on_where_it_stopped(tmp_path, monkeypatch, trained_tiny,
                                                                           demo_manifest):
    from vqspeech.inference import files

    vq = VQSpeech.load(trained_tiny, "cpu")
    items = files.collect_inputs(demo_manifest, limit=5)
    speaker = vq.speakers[0]
    whole = files.convert_items(vq, items, tmp_path / "whole", speaker=speaker, batch_size=2, seed=3)

    decoded, real_decode = [], vq.decode_batch
    killed_convert(monkeypatch, vq, items, tmp_path / "out", 3, speaker=speaker, batch_size=2, seed=3)
    assert len(list((tmp_path / "out").glob("*.wav"))) == 3
    monkeypatch.setattr(vq, "decode_batch", lambda codes, *a, **k: decoded.append(len(codes)) or real_decode(codes, *a, **k))
    with pytest.warns(UserWarning, match="carrying on an interrupted `vqspeech convert`, 3 of 5"):
        paths = files.convert_items(vq, items, tmp_path / "out", speaker=speaker, batch_size=2, seed=3)
    assert decoded == [2, 1]  # the finished first batch is not generated again; the broken second one is
    for done, reference in zip(paths, whole, strict=True):
        assert done.read_bytes() == reference.read_bytes()  # same batches, same draws: as if never killed
    assert not (tmp_path / "out" / files.RUN_RECORD).exists()
    with pytest.raises(UserError, match="already exists"):  # a finished run's outputs are no longer up for grabs
        files.convert_items(vq, items, tmp_path / "out", speaker=speaker, batch_size=2, seed=3)


def test_a_rerun_with_other_settings_replaces_a_killed_runs_outputs_only_with_overwrite(tmp_path, monkeypatch,
                                                                                      trained_tiny, demo_manifest):
    """A killed run's outputs are for its identical rerun to finish: another run names that run and
    replaces them only with ``overwrite`` (a record copied or forged into a folder cannot make a
    user's file replaceable)."""
    from vqspeech.inference import files

    vq = VQSpeech.load(trained_tiny, "cpu")
    items = files.collect_inputs(demo_manifest, limit=3)
    real_save = files.save_wav
    monkeypatch.setattr(files, "save_wav", lambda *a, **k: (_ for _ in ()).throw(KeyboardInterrupt))
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / f"{items[0].id}.wav").write_bytes(b"mine")  # not the killed run's: still protected
    with pytest.raises(UserError, match="already exists"):
        files.convert_items(vq, items, tmp_path / "out", speaker=vq.speakers[0], batch_size=2)
    (tmp_path / "out" / f"{items[0].id}.wav").unlink()
    monkeypatch.setattr(files, "save_wav", lambda p, a, sr, **k: real_save(p, a, sr, **k) if p.stem != items[1].id else
                        (_ for _ in ()).throw(KeyboardInterrupt))
    with pytest.raises(KeyboardInterrupt):
        files.convert_items(vq, items, tmp_path / "out", speaker=vq.speakers[0], batch_size=1)
    monkeypatch.setattr(files, "save_wav", real_save)
    with pytest.raises(UserError, match="is an output of an interrupted `vqspeech convert` with other settings"):
        files.convert_items(vq, items, tmp_path / "out", speaker=vq.speakers[1], batch_size=1)
    with pytest.warns(UserWarning, match="of an interrupted run with other settings; this run replaces them"):
        files.convert_items(vq, items, tmp_path / "out", speaker=vq.speakers[1], batch_size=1, overwrite=True)


def emptied_alignments(tmp_path: Path, manifest: Path, empty: set[str] | None = None) -> Path:
    """A copy of ``manifest`` whose alignments (all, or the ids in ``empty``) label nothing."""
    import re

    rows = absolute_rows(manifest)
    tmp_path.mkdir(parents=True, exist_ok=True)
    for row in rows:
        if row.get("alignment") and (empty is None or row["id"] in empty):
            text = Path(row["alignment"]).read_text()
            row["alignment"] = str(tmp_path / f"{row['id']}.TextGrid")
            Path(row["alignment"]).write_text(re.sub(r'text = "[^"]*"', 'text = ""', text))
    return write_lines(tmp_path / "manifest.jsonl", rows)


def test_alignments_that_label_nothing_are_refused_not_scored_as_silence(tmp_path, demo_manifest, codes):
    from vqspeech.eval.probe import run_probe

    with pytest.raises(UserError, match="No alignment labels any phone"):
        run_probe(codes, tmp_path / "a.json", manifest=emptied_alignments(tmp_path / "all", demo_manifest),
                  abx=False, plots=False, progress=False)
    first = manifest_lines(demo_manifest)[0]["id"]
    one = emptied_alignments(tmp_path / "one", demo_manifest, {first})
    with pytest.warns(UserWarning, match="1 alignment\\(s\\) label no phone"):
        result = run_probe(codes, tmp_path / "b.json", manifest=one, abx=False, plots=False, progress=False)
    assert result["skipped_utterances"]["empty_alignment"] == 1
    assert result["num_utterances"] == len(manifest_lines(demo_manifest)) - 1


def test_a_probe_of_one_phone_class_is_refused_and_pnmi_stays_in_its_range(tmp_path, demo_manifest, codes):
    from vqspeech.eval.code_metrics import pnmi
    from vqspeech.eval.frames import aligned_utterances, load_probe_data
    from vqspeech.eval.probe import frame_table, run_probe

    data = load_probe_data(CodesFolder.open(codes), aligned_utterances(manifest=demo_manifest))
    classes = sorted({p for lab in data.labels for p in set(lab.tolist())} - {"", "sil"})
    with pytest.raises(UserError, match="Every frame left is labelled 'sil'.*at least two classes"):
        frame_table(data, tuple(classes))
    with pytest.raises(UserError, match="at least two classes"):
        run_probe(codes, tmp_path / "p.json", manifest=demo_manifest, ignore=tuple(classes), abx=False, plots=False,
                  progress=False)
    assert pnmi(np.array([[3.0], [5.0], [2.0]])) == 0.0  # one phone: H(phone) is 0 up to rounding
    rng = np.random.default_rng(0)
    for _ in range(200):
        counts = rng.integers(0, 4, size=(rng.integers(1, 6), rng.integers(1, 6))).astype(float)
        if counts.sum():
            assert 0.0 <= pnmi(counts) <= 1.0


def test_alignment_segments_that_overlap_or_run_backwards_are_refused(tmp_path):
    from vqspeech.data.alignments import read_alignment

    phn = tmp_path / "sa1.phn"
    phn.write_text("0 3000 h#\n1500 3000 s\n3000 4500 iy\n")
    with pytest.raises(UserError, match=r"Line 2 of alignment file .*sa1.phn starts \(1500\) before the segment"):
        read_alignment(phn)
    phn.write_text("4500 6000 h#\n0 1500 s\n")
    with pytest.raises(UserError, match="Line 2 .* starts \\(0\\) before the segment above it ends \\(6000\\)"):
        read_alignment(phn)
    lab = tmp_path / "a.lab"
    lab.write_text("0 500000 sil\n400000 900000 a\n")
    with pytest.raises(UserError, match="Line 2 of alignment file .*a.lab starts"):
        read_alignment(lab)
    phn.write_text("0 1500 h#\n1500 3000 s\n3200 4500 iy\n")  # abutting and with a gap: fine
    assert [s.label for s in read_alignment(phn)] == ["h#", "s", "iy"]
    wrd = tmp_path / "sa1.wrd"
    wrd.write_text("0 2000 she\n1800 3000 had\n")  # TIMIT's words may share a phone
    assert [s.label for s in read_alignment(wrd, tier="words")] == ["she", "had"]


def test_a_corpus_whose_every_file_is_refused_names_the_reason(tmp_path):
    from vqspeech.data.corpora import find_utterances

    corpus = tmp_path / "corpus"
    folder = os.fsencode(corpus) + b"/\xff\xfe"
    os.makedirs(folder)
    sf.write(tmp_path / "a.wav", np.zeros(800), 8000, subtype="PCM_16")
    os.rename(tmp_path / "a.wav", folder + b"/a.wav")
    with pytest.raises(UserError, match=r"all 1 audio file\(s\) were refused, e.g. .*is not a name \("):
        find_utterances(corpus, "folder")


def test_codes_without_a_codebook_record_made_by_another_model_are_decoded_with_a_warning(tmp_path, capsys,
                                                                                         trained_tiny, codes):
    copy_ = tmp_path / "codes"
    shutil.copytree(codes, copy_)
    info = json.loads((copy_ / "codes.json").read_text())
    del info["codebook"]
    info["checkpoint"] = str(tmp_path / "other" / "checkpoints" / "last.pt")
    (copy_ / "codes.json").write_text(json.dumps(info))
    first = next((copy_ / "codes").glob("*.npy"))
    speaker = VQSpeech.load(trained_tiny, "cpu").speakers[0]
    assert run_cli(["decode", trained_tiny, first, "--speaker", speaker, "-o", tmp_path / "a.wav"]) == 0
    err = capsys.readouterr().err
    assert "warning:" in err and "records no codebook" in err and str(tmp_path / "other") in err
    info["checkpoint"] = str((trained_tiny / "checkpoints" / "last.pt").resolve())  # its own model: quiet
    (copy_ / "codes.json").write_text(json.dumps(info))
    assert run_cli(["decode", trained_tiny, first, "--speaker", speaker, "-o", tmp_path / "b.wav"]) == 0
    assert "records no codebook" not in capsys.readouterr().err


def test_a_report_keeps_out_of_other_experiments_and_their_reports(tmp_path, capsys, trained_tiny):
    from vqspeech.eval.report import write_report

    mine, theirs = tmp_path / "mine", tmp_path / "theirs"
    shutil.copytree(trained_tiny, mine)
    shutil.copytree(trained_tiny, theirs)
    message = cli_error(capsys, ["report", mine, "--out", theirs / "report.html"], "report")
    assert "would be written into the experiment" in message and not (theirs / "report.html").exists()
    cli_error(capsys, ["report", mine, "--out", theirs / "checkpoints" / "r.html"], "report")
    other = write_report(theirs, tmp_path / "shared.html")
    before = other.read_bytes()
    message = cli_error(capsys, ["report", mine, "--out", other], "report")
    assert "is the report of another experiment" in message and other.read_bytes() == before
    assert run_cli(["report", mine, "--out", other, "--overwrite"]) == 0
    assert run_cli(["report", mine, "--out", other]) == 0  # now its own report: replaced as before
    assert run_cli(["report", mine]) == 0 and run_cli(["report", mine]) == 0
    moved = tmp_path / "moved"
    mine.rename(moved)
    assert run_cli(["report", moved]) == 0  # a moved experiment still replaces its own report


def test_a_report_neither_links_files_outside_the_evaluation_nor_shows_nan_as_a_metric(tmp_path, trained_tiny):
    from vqspeech.eval.report import write_report

    exp = tmp_path / "exp"
    shutil.copytree(trained_tiny, exp)
    (exp / "eval_convert" / "original").mkdir(parents=True)
    sf.write(exp / "eval_convert" / "original" / "u.wav", np.zeros(800), 8000, subtype="PCM_16")
    (tmp_path / "secret.wav").write_bytes((exp / "eval_convert" / "original" / "u.wav").read_bytes())
    record = {"summary": {"num_items": 2, "conversion_speaker_accuracy": float("nan")},
              "items": [{"id": "u", "original": "original/u.wav", "reconstruction": "../../secret.wav"},
                        {"id": "v", "original": "../../../../etc/passwd"}]}
    (exp / "eval_convert" / "metrics.json").write_text(json.dumps(record))
    page = write_report(exp).read_text()
    assert 'src="eval_convert/original/u.wav"' in page  # its own files are linked
    assert "secret.wav\"" not in page and "passwd\"" not in page and "etc/passwd" in page
    assert page.count("left out: ") == 2
    assert '<td class="num">nan</td>' not in page and "not a number: nan" in page


def test_targets_equal_to_the_source_are_not_scored_as_conversions(tmp_path, trained_tiny, demo_manifest):
    from vqspeech.eval.conversion import evaluate_conversion, format_summary

    test_speakers = sorted({r["speaker"] for r in manifest_lines(demo_manifest) if r["split"] == "test"})
    with pytest.warns(UserWarning, match="have their own speaker as the target"):
        metrics = evaluate_conversion(trained_tiny, tmp_path / "ev", manifest=demo_manifest, split="test", num=2,
                                      num_reference=1, targets=[test_speakers[0]], progress=False)
    items = {item["source_speaker"]: item for item in metrics["items"]}
    own, converted = items[test_speakers[0]], items[test_speakers[1]]
    assert own["conversion"] is None and own["conversion_closer_to_target"] is None
    assert "conversion" not in own["word_errors"] and "conversion" not in own["mcd"]
    assert not (tmp_path / "ev" / "conversion" / f"{own['id']}.wav").exists()
    assert (tmp_path / "ev" / converted["conversion"]).is_file()
    summary = metrics["summary"]
    assert summary["num_conversions"] == 1
    words = converted["reference_words"]
    assert summary["recognition"]["error_rate"]["conversion"] == pytest.approx(converted["word_errors"]["conversion"] / words)
    assert summary["mcd"]["conversion"] == pytest.approx(converted["mcd"]["conversion"], abs=1e-4)
    summary = {**summary, "num_conversions": 0, "num_requested": 5}
    text = format_summary({**metrics, "summary": summary})
    assert "none: every target is the source's own speaker" in text and "(of 5 requested)" in text


def test_evaluate_loss_says_which_utterances_it_leaves_out(tmp_path, capsys, trained_tiny, demo_manifest):
    rows = absolute_rows(demo_manifest)
    valid = [r for r in rows if r["split"] == "test"]
    valid[0]["speaker"] = "stranger"
    manifest = write_lines(tmp_path / "m.jsonl", rows)
    assert run_cli(["evaluate", "loss", trained_tiny, "--manifest", manifest, "--split", "test"]) == 0
    out, err = capsys.readouterr()
    assert "warning: 1 of the" in err and "(stranger)" in err
    assert json.loads(out[out.index("{"):])["utterances_of_unknown_speakers"] == 1


def test_the_probe_table_takes_a_result_without_accuracy_and_says_when_columns_do_not_compare(tmp_path):
    base = {"system": "a", "accuracy": 0.5, "pnmi": 0.4, "num_frames": 100, "num_phone_classes": 17,
            "split": "test", "num_utterances": 3, "ignored_labels": [], "phone_set": "arpabet"}
    first, second = tmp_path / "a.json", tmp_path / "b.json"
    first.write_text(json.dumps(base))
    second.write_text(json.dumps({**base, "system": "b", "accuracy": None}))
    result = run_tool("phoneme_probe.py", first, second)
    assert result.returncode == 0 and "do not compare" not in result.stdout
    assert "| phone accuracy (code -> phone, held-out speakers) | higher | 0.500 | - |" in result.stdout
    second.write_text(json.dumps({**base, "system": "b", "num_phone_classes": 2, "ignored_labels": ["ah"]}))
    result = run_tool("phoneme_probe.py", first, second)
    assert result.returncode == 0 and "do not compare" in result.stdout and "num_phone_classes" in result.stdout


# --- thirteenth pass --------------------------------------------------------------------------


def test_a_changed_reference_voice_is_other_settings_for_a_killed_runs_rerun(tmp_path, trained_tiny, demo_manifest):
    from vqspeech.inference import files

    vq = VQSpeech.load(trained_tiny, "cpu")
    voice = tmp_path / "voice"
    voice.mkdir()
    wavs = [r.audio for r in read_manifest(demo_manifest)[:2]]
    shutil.copy(wavs[0], voice / "a.wav")
    before = {kind: files.run_settings(vq, "decode", [], [str(path)]) for kind, path in
              (("folder", voice), ("file", voice / "a.wav"))}
    shutil.copy(wavs[1], voice / "a.wav")  # the same names, another recording
    for kind, path in (("folder", voice), ("file", voice / "a.wav")):
        assert files.run_settings(vq, "decode", [], [str(path)]) != before[kind], kind
    name = vq.speakers[0]
    assert files.run_settings(vq, "decode", [], [name]) == files.run_settings(vq, "decode", [], [name])


def test_another_run_in_a_killed_runs_folder_leaves_it_to_be_carried_on(tmp_path, monkeypatch, trained_tiny,
                                                                        demo_manifest):
    from vqspeech.inference import files

    vq = VQSpeech.load(trained_tiny, "cpu")
    items = files.collect_inputs(demo_manifest, limit=4)
    first, other = items[:3], items[3:]
    killed_convert(monkeypatch, vq, first, tmp_path / "out", 2, speaker=vq.speakers[0], batch_size=1)
    files.convert_items(vq, other, tmp_path / "out", speaker=vq.speakers[1], batch_size=1)  # another run, finished
    with pytest.warns(UserWarning, match="carrying on an interrupted `vqspeech convert`, 2 of 3"):
        files.convert_items(vq, first, tmp_path / "out", speaker=vq.speakers[0], batch_size=1)
    assert not (tmp_path / "out" / files.RUN_RECORD).exists()
    assert {p.stem for p in (tmp_path / "out").glob("*.wav")} == {i.id for i in items}


def test_a_killed_runs_output_stays_its_own_until_another_run_replaces_it(tmp_path, monkeypatch, trained_tiny,
                                                                          demo_manifest):
    """An output is recorded as a run's once that run has written it: a second run with other
    settings, killed before it rewrote the first one's output, cannot leave the old voice's file
    to be 'carried on' as its own."""
    from vqspeech.inference import files

    vq = VQSpeech.load(trained_tiny, "cpu")
    items = files.collect_inputs(demo_manifest, limit=2)
    clean = files.convert_items(vq, items, tmp_path / "clean", speaker=vq.speakers[1], batch_size=1)
    real_save = files.save_wav
    monkeypatch.setattr(files, "save_wav", lambda p, a, sr, **k: real_save(p, a, sr, **k) if p.stem == items[0].id else
                        (_ for _ in ()).throw(KeyboardInterrupt))
    with pytest.raises(KeyboardInterrupt):  # writes items[0] in the first voice, then dies
        files.convert_items(vq, items, tmp_path / "out", speaker=vq.speakers[0], batch_size=1)
    monkeypatch.setattr(files, "save_wav", lambda *a, **k: (_ for _ in ()).throw(KeyboardInterrupt))
    with pytest.warns(UserWarning, match="with other settings"), pytest.raises(KeyboardInterrupt):
        files.convert_items(vq, items, tmp_path / "out", speaker=vq.speakers[1], batch_size=1, overwrite=True)
    monkeypatch.setattr(files, "save_wav", real_save)
    with pytest.warns(UserWarning, match="with other settings"):  # items[0] is still the first run's
        paths = files.convert_items(vq, items, tmp_path / "out", speaker=vq.speakers[1], batch_size=1,
                                    overwrite=True)
    for path, expected in zip(paths, clean, strict=True):
        assert path.read_bytes() == expected.read_bytes()


def test_a_recorded_output_replaced_since_is_an_ordinary_file(tmp_path, monkeypatch, trained_tiny, demo_manifest):
    from vqspeech.inference import files

    vq = VQSpeech.load(trained_tiny, "cpu")
    items = files.collect_inputs(demo_manifest, limit=3)
    mine = killed_convert(monkeypatch, vq, items, tmp_path / "out", 2, speaker=vq.speakers[0], batch_size=1)[0]
    shutil.copy(items[2].path, mine)  # the user's own recording now has that name
    with pytest.raises(UserError, match="already exists \\(1 output"):
        files.convert_items(vq, items, tmp_path / "out", speaker=vq.speakers[0], batch_size=1)
    replaced = [i for i in items if f"{i.id}.wav" == mine.name]
    with pytest.raises(UserError, match="already exists \\(1 output"):  # nor with other settings
        files.convert_items(vq, replaced, tmp_path / "out", speaker=vq.speakers[1], batch_size=1)
    assert mine.read_bytes() == Path(items[2].path).read_bytes()
    forged = tmp_path / "keep"
    forged.mkdir()
    shutil.copy(items[0].path, forged / f"{items[0].id}.wav")
    (forged / files.RUN_RECORD).write_text(json.dumps({"outputs": {f"{items[0].id}.wav": {
        "verb": "convert", "settings": "x"}}}))
    with pytest.raises(UserError, match="already exists"):
        files.convert_items(vq, items[:1], forged, speaker=vq.speakers[0], batch_size=1)


def test_results_of_one_model_are_not_written_into_another_experiment(tmp_path, capsys, trained_tiny, codes,
                                                                      demo_manifest):
    other = tmp_path / "other"
    shutil.copytree(trained_tiny, other)
    before = files_under(other)
    speaker = VQSpeech.load(trained_tiny, "cpu").speakers[0]
    wav = read_manifest(demo_manifest)[0].audio
    link = tmp_path / "link"
    link.symlink_to(other)
    for verb, argv in (
        ("evaluate loss", ["evaluate", "loss", trained_tiny, "--split", "test", "--out", other / "metrics.json"]),
        ("evaluate probe", ["evaluate", "probe", "--codes", codes, "--manifest", demo_manifest, "--no_abx",
                            "--out", other / "probe" / "vqvae.json"]),
        ("convert", ["convert", trained_tiny, wav, "--speaker", speaker, "-o", other / "convert" / "x"]),
        ("convert", ["convert", trained_tiny, wav, "--speaker", speaker, "-o", link / "convert" / "x"]),
        ("encode", ["encode", trained_tiny, wav, other / "codes"]),
        ("decode", ["decode", trained_tiny, next((codes / "codes").glob("*.npy")), "--speaker", speaker,
                    "-o", other / "decoded.wav"]),
    ):
        message = cli_error(capsys, argv, verb)
        assert "lies inside the experiment" in message and "whose report would show these results" in message
    assert files_under(other) == before
    # a model's own folder, and results outside any experiment, are fine
    assert run_cli(["evaluate", "loss", other, "--split", "test", "--out", other / "metrics.json"]) == 0
    assert run_cli(["evaluate", "loss", trained_tiny, "--split", "test", "--out", tmp_path / "m.json"]) == 0
    assert json.loads((tmp_path / "m.json").read_text())["manifest"] == str(demo_manifest.resolve())


def test_an_experiments_checkpoints_folder_takes_no_other_output(tmp_path, capsys, trained_tiny, codes,
                                                                demo_manifest):
    exp = tmp_path / "exp"
    shutil.copytree(trained_tiny, exp)
    before = files_under(exp)
    speaker = VQSpeech.load(exp, "cpu").speakers[0]
    for verb, argv in (
        ("decode", ["decode", exp, next((codes / "codes").glob("*.npy")), "--speaker", speaker, "-o",
                    exp / "checkpoints"]),
        ("evaluate probe", ["evaluate", "probe", "--codes", codes, "--manifest", demo_manifest, "--no_abx",
                            "--out", exp / "checkpoints" / "last.json"]),
        ("report", ["report", exp, "--out", exp / "checkpoints" / "r.html"]),
        ("export", ["export", exp, exp / "checkpoints" / "sub" / "m.pt"]),
    ):
        message = cli_error(capsys, argv, verb)
        assert "checkpoints" in message and str(exp) in message, message
    assert files_under(exp) == before


def test_the_probe_tool_replaces_no_explicit_out_without_overwrite(tmp_path, demo_manifest, codes):
    kept = tmp_path / "notes.md"
    kept.write_text("mine\n")
    result = run_tool("phoneme_probe.py", "--codes", codes, "--manifest", demo_manifest, "--out_dir",
                      tmp_path / "p", "--out", kept)
    assert result.returncode == 2 and "exists; pass --overwrite" in result.stderr and kept.read_text() == "mine\n"
    assert not (tmp_path / "p").exists()  # refused before any work


def test_encode_keeps_out_of_a_folder_of_prior_samples(tmp_path, capsys, trained_tiny, demo_manifest):
    from vqspeech.data.codes import SAMPLES_MARK

    samples = tmp_path / "samples"
    samples.mkdir()
    (samples / SAMPLES_MARK).write_text("")
    (samples / "sample_00.wav").write_bytes(b"RIFF")
    message = cli_error(capsys, ["encode", trained_tiny, read_manifest(demo_manifest)[0].audio, samples,
                                 "--overwrite"], "encode")
    assert "holds samples that `vqspeech prior sample` wrote" in message
    assert sorted(p.name for p in samples.iterdir()) == sorted([SAMPLES_MARK, "sample_00.wav"])


def test_a_probe_without_two_speech_classes_is_refused(tmp_path, demo_manifest, codes):
    from vqspeech.eval.frames import aligned_utterances, load_probe_data
    from vqspeech.eval.probe import frame_table

    data = load_probe_data(CodesFolder.open(codes), aligned_utterances(manifest=demo_manifest))
    classes = sorted({p for lab in data.labels for p in set(lab.tolist())} - {"", "sil"})
    with pytest.raises(UserError, match=r"1 speech phone class\(es\)"):
        frame_table(data, tuple(classes[1:]))
    assert len(frame_table(data, tuple(classes[2:]))[2]) == 3  # sil and two phones: a probe


def test_segment_alignments_in_the_wrong_time_unit_are_refused(tmp_path, demo_manifest, codes):
    from vqspeech.data.alignments import read_alignment
    from vqspeech.eval.probe import run_probe

    rows = absolute_rows(demo_manifest)
    for scale, folder in ((16000, "right"), (8000, "half")):
        for row in rows:
            if row.get("alignment"):
                segments = read_alignment(row["alignment"]) if scale == 16000 else read_alignment(
                    str(tmp_path / "right" / f"{row['id']}.phn"))
                factor = 1 if scale == 16000 else 0.5
                phn = tmp_path / folder / f"{row['id']}.phn"
                phn.parent.mkdir(exist_ok=True)
                phn.write_text("".join(f"{round(s.start * 16000 * factor)} {round(s.end * 16000 * factor)} "
                                       f"{s.label}\n" for s in segments))
        for row in rows:
            if row.get("alignment"):
                row["alignment"] = str(tmp_path / folder / f"{row['id']}.phn")
        manifest = write_lines(tmp_path / f"{folder}.jsonl", rows)
        if scale == 16000:
            run_probe(codes, tmp_path / "right.json", manifest=manifest, abx=False, plots=False, progress=False)
        else:
            with pytest.raises(UserError, match="end, by the median, at \\d+% of their audio.*another unit"):
                run_probe(codes, tmp_path / "half.json", manifest=manifest, abx=False, plots=False,
                          progress=False)


def test_a_fresh_start_clears_the_curves_of_a_start_killed_before_its_first_checkpoint(tmp_path, demo_manifest):
    exp = tmp_path / "exp"
    (exp / "tb").mkdir(parents=True)
    stale = exp / "tb" / "events.out.tfevents.1.killed"
    stale.write_bytes(b"\0" * 16)
    assert run_cli(["train", exp, *FAST_TRAIN, f"data.manifest={demo_manifest}", "train.max_steps=2"]) == 0
    assert not stale.exists() and list((exp / "tb").glob("events.out.tfevents.*"))
    kept = sorted((exp / "tb").glob("events.out.tfevents.*"))
    assert run_cli(["train", exp, "train.max_steps=3"]) == 0  # a resume keeps them
    assert set(kept) <= set((exp / "tb").glob("events.out.tfevents.*"))


# --- fourteenth pass --------------------------------------------------------------------------


def test_a_killed_overwrite_run_counts_only_what_it_wrote_as_done(tmp_path, monkeypatch, trained_tiny, demo_manifest):
    from vqspeech.inference import files

    vq = VQSpeech.load(trained_tiny, "cpu")
    items = files.collect_inputs(demo_manifest, limit=5)
    speaker = vq.speakers[0]
    files.convert_items(vq, items, tmp_path / "out", speaker=speaker, batch_size=2, seed=0)  # finished, seed 0
    reference = files.convert_items(vq, items, tmp_path / "seed1", speaker=speaker, batch_size=2, seed=1)
    killed_convert(monkeypatch, vq, items, tmp_path / "out", 2, speaker=speaker, batch_size=2, seed=1, overwrite=True)
    with pytest.warns(UserWarning, match="carrying on an interrupted `vqspeech convert`, 2 of 5"):
        paths = files.convert_items(vq, items, tmp_path / "out", speaker=speaker, batch_size=2, seed=1,
                                    overwrite=True)
    for path, expected in zip(paths, reference, strict=True):
        assert path.read_bytes() == expected.read_bytes(), path.name  # none is left from the seed-0 run


def test_export_keeps_out_of_other_experiments_and_names_a_pt_file(tmp_path, capsys, trained_tiny):
    other = tmp_path / "other"
    shutil.copytree(trained_tiny, other)
    before = {p: p.read_bytes() for p in files_under(other)}
    message = cli_error(capsys, ["export", trained_tiny, other / "a.pt"], "export")
    assert "lies inside the experiment" in message
    message = cli_error(capsys, ["export", other, other / "config.yaml", "--overwrite"], "export")
    assert "does not end in .pt" in message
    assert {p: p.read_bytes() for p in files_under(other)} == before
    assert run_cli(["export", other, tmp_path / "mine.pt"]) == 0  # outside any experiment: fine


def test_a_loose_checkpoint_inside_an_experiment_does_not_make_it_the_results_home(tmp_path, capsys, trained_tiny):
    other = tmp_path / "other"
    shutil.copytree(trained_tiny, other)
    shutil.copy(trained_tiny / "checkpoints" / "last.pt", other / "a_copy.pt")  # another model's weights, by hand
    message = cli_error(capsys, ["evaluate", "loss", other / "a_copy.pt", "--split", "test", "--out",
                                 other / "metrics.json"], "evaluate loss")
    assert "lies inside the experiment" in message and not (other / "metrics.json").exists()


def test_a_prior_inside_an_experiment_must_model_that_experiments_codes(tmp_path, capsys, trained_tiny, codes):
    other = tmp_path / "other"
    shutil.copytree(trained_tiny, other)
    message = cli_error(capsys, ["prior", "train", other / "prior", *PRIOR, f"data.codes={codes}",
                                 "train.max_steps=1"], "prior train")
    assert "lies inside the experiment" in message and not (other / "prior").exists()
    assert run_cli(["prior", "train", tmp_path / "prior", *PRIOR, f"data.codes={codes}", "train.max_steps=1"]) == 0


def test_a_reference_voice_that_overlaps_the_output_is_refused(tmp_path, capsys, trained_tiny, demo_manifest):
    rows = read_manifest(demo_manifest)
    voice = tmp_path / "voice"
    voice.mkdir()
    shutil.copy(rows[1].audio, voice / "ref.wav")
    for out in (voice, voice / "sub", voice / "ref.wav"):
        message = cli_error(capsys, ["convert", trained_tiny, rows[0].audio, "--speaker", voice, "-o", out,
                                     "--overwrite"], "convert")
        assert "overlaps the output" in message
    assert sorted(p.name for p in voice.iterdir()) == ["ref.wav"]
    from vqspeech.eval.conversion import evaluate_conversion

    with pytest.raises(UserError, match="overlaps the output folder"):
        evaluate_conversion(trained_tiny, voice / "eval", manifest=demo_manifest, targets=["v"],
                            voices={"v": str(voice)}, progress=False)


def test_training_files_and_a_conversion_evaluation_are_owned(tmp_path, capsys, trained_tiny, codes, demo_manifest):
    from vqspeech.fileio import CONVERSION_EVALUATION_MARK

    exp = tmp_path / "exp"
    shutil.copytree(trained_tiny, exp)
    evaluation = exp / "eval_convert"
    evaluation.mkdir()
    (evaluation / CONVERSION_EVALUATION_MARK).write_text("")
    before = {p: p.read_bytes() for p in files_under(exp)}
    speaker = VQSpeech.load(exp, "cpu").speakers[0]
    one = next((codes / "codes").glob("*.npy"))
    for verb, argv in (
        ("decode", ["decode", exp, one, "--speaker", speaker, "-o", evaluation]),
        ("decode", ["decode", exp, one, "--speaker", speaker, "-o", evaluation / "conversion" / "x.wav"]),
        ("evaluate loss", ["evaluate", "loss", exp, "--split", "test", "--out", evaluation / "metrics.json"]),
        ("evaluate loss", ["evaluate", "loss", exp, "--split", "test", "--out", exp / "train_summary.json",
                           "--overwrite"]),
        ("encode", ["encode", exp, read_manifest(demo_manifest)[0].audio, exp / "tb" / "codes"]),
    ):
        message = cli_error(capsys, argv, verb)
        assert "conversion evaluation" in message or "tb folder" in message or "training wrote" in message, message
    assert {p: p.read_bytes() for p in files_under(exp)} == before


# --- fifteenth pass ---------------------------------------------------------------------------


def test_a_model_whose_checkpoints_folder_is_a_link_writes_its_results_at_home(tmp_path, capsys, trained_tiny,
                                                                               demo_manifest):
    exp = tmp_path / "exp"
    shutil.copytree(trained_tiny, exp)
    shutil.move(exp / "checkpoints", tmp_path / "big_disk")
    (exp / "checkpoints").symlink_to(tmp_path / "big_disk")
    assert run_cli(["encode", exp, read_manifest(demo_manifest)[0].audio, exp / "codes"]) == 0
    message = cli_error(capsys, ["encode", trained_tiny, read_manifest(demo_manifest)[0].audio, exp / "codes2"],
                        "encode")
    assert "lies inside the experiment" in message


# --- sixteenth pass ---------------------------------------------------------------------------


def test_outputs_another_run_finished_meanwhile_are_found_under_the_lock(tmp_path, monkeypatch, trained_tiny,
                                                                        demo_manifest):
    """Run 2 checks its outputs, then (embedding a reference voice, say) run 1 finishes the same
    outputs before run 2 takes the lock: run 2 must still find them and refuse."""
    from vqspeech.inference import files

    vq = VQSpeech.load(trained_tiny, "cpu")
    items = files.collect_inputs(demo_manifest, limit=2)
    real_check, finished = files._check_generation, []

    def run_one_meanwhile(*args, **kwargs):
        real_check(*args, **kwargs)
        if not finished:
            finished.append([])  # run 1's own check comes here too
            finished[0] = files.convert_items(vq, items, tmp_path / "out", speaker=vq.speakers[0], batch_size=1)

    monkeypatch.setattr(files, "_check_generation", run_one_meanwhile)
    with pytest.raises(UserError, match="already exists \\(2 output"):
        files.convert_items(vq, items, tmp_path / "out", speaker=vq.speakers[1], batch_size=1)
    before = {p: p.read_bytes() for p in finished[0]}
    monkeypatch.setattr(files, "_check_generation", real_check)
    clean = files.convert_items(vq, items, tmp_path / "clean", speaker=vq.speakers[0], batch_size=1)
    assert [before[p] for p in finished[0]] == [p.read_bytes() for p in clean]  # run 1's outputs kept


def test_a_kill_right_after_an_output_is_renamed_into_place_is_carried_on(tmp_path, monkeypatch, trained_tiny,
                                                                           demo_manifest):
    from vqspeech.inference import files

    vq = VQSpeech.load(trained_tiny, "cpu")
    items = files.collect_inputs(demo_manifest, limit=3)
    real_save, saved = files.save_wav, []

    def killed_once_renamed(path, audio, sr, **options):
        real_save(path, audio, sr, **options)
        saved.append(path)
        if len(saved) == 2:
            raise KeyboardInterrupt  # the file is in place; nothing after the rename ran

    monkeypatch.setattr(files, "save_wav", killed_once_renamed)
    with pytest.raises(KeyboardInterrupt):
        files.convert_items(vq, items, tmp_path / "out", speaker=vq.speakers[0], batch_size=1)
    monkeypatch.setattr(files, "save_wav", real_save)
    with pytest.warns(UserWarning, match="carrying on an interrupted `vqspeech convert`, 2 of 3"):
        files.convert_items(vq, items, tmp_path / "out", speaker=vq.speakers[0], batch_size=1)


def test_evaluate_conversion_takes_no_folder_another_verb_filled(tmp_path, trained_tiny, demo_manifest):
    from vqspeech.eval.conversion import evaluate_conversion

    out = tmp_path / "decoded"
    out.mkdir()
    (out / "george_0_0.wav").write_bytes(b"RIFF")
    with pytest.raises(UserError, match="holds files that `evaluate conversion` did not write"):
        evaluate_conversion(trained_tiny, out, manifest=demo_manifest, num=1, progress=False, overwrite=True)
    assert sorted(p.name for p in out.iterdir()) == ["george_0_0.wav"]


def test_a_reference_voice_is_the_same_settings_however_its_path_is_spelled(tmp_path, monkeypatch, trained_tiny,
                                                                            demo_manifest):
    from vqspeech.inference import files

    vq = VQSpeech.load(trained_tiny, "cpu")
    voice = tmp_path / "voice"
    voice.mkdir()
    shutil.copy(read_manifest(demo_manifest)[0].audio, voice / "a.wav")
    digests = {files.run_settings(vq, "convert", [], [spelled]) for spelled in (str(voice), f"{voice}/")}
    monkeypatch.chdir(tmp_path)
    digests.add(files.run_settings(vq, "convert", [], ["voice"]))
    monkeypatch.chdir(voice)
    digests.add(files.run_settings(vq, "convert", [], ["."]))
    assert len(digests) == 1


def test_a_run_record_that_is_not_a_file_is_refused_before_any_output(tmp_path, capsys, trained_tiny, codes):
    from vqspeech.inference import files

    out = tmp_path / "out"
    (out / files.RUN_RECORD).mkdir(parents=True)
    speaker = VQSpeech.load(trained_tiny, "cpu").speakers[0]
    message = cli_error(capsys, ["decode", trained_tiny, codes, "--speaker", speaker, "-o", out], "decode")
    assert str(out / files.RUN_RECORD) in message and "not a file" in message
    assert sorted(p.name for p in out.iterdir()) == [files.RUN_RECORD]


def test_an_export_goes_outside_every_experiment(tmp_path, capsys, trained_tiny, codes):
    exp = tmp_path / "exp"
    shutil.copytree(trained_tiny, exp)
    message = cli_error(capsys, ["export", exp, exp / "a.pt"], "export")
    assert "outside any experiment" in message and not (exp / "a.pt").exists()
    assert run_cli(["export", exp, tmp_path / "a.pt"]) == 0
    speaker = VQSpeech.load(exp, "cpu").speakers[0]
    message = cli_error(capsys, ["decode", tmp_path / "a.pt", next((codes / "codes").glob("*.npy")), "--speaker",
                                 speaker, "-o", exp / "d.wav"], "decode")
    assert "belongs to no experiment" in message and "outside any experiment" in message


def test_taking_over_a_stale_lock_leaves_no_file_behind(tmp_path):
    folder = tmp_path / "out"
    folder.mkdir()
    (folder / f"{FolderLock.NAME}.takeover").write_text("")  # left by an earlier version
    dead = {"pid": 2**22 + 12345, "host": socket.gethostname(), "verb": "encode", "started": time.time() - 100,
            "process_start": "1"}
    (folder / FolderLock.NAME).write_text(json.dumps(dead))
    with FolderLock(folder, "encode"):
        pass
    assert list(folder.iterdir()) == []


# --- seventeenth pass -------------------------------------------------------------------------


def test_an_enrolled_model_is_not_written_inside_another_experiment(tmp_path, capsys, trained_tiny, demo_manifest):
    other = tmp_path / "other"
    shutil.copytree(trained_tiny, other)
    voice = Path(read_manifest(demo_manifest)[0].audio)
    message = cli_error(capsys, ["enroll", trained_tiny, "anna", voice, "-o", other / "anna", "--steps", "1",
                                 "--device", "cpu"], "enroll")
    assert "lies inside the experiment" in message and not (other / "anna").exists()


def test_an_export_never_makes_a_folder_an_experiment(tmp_path, capsys, trained_tiny):
    message = cli_error(capsys, ["export", trained_tiny, tmp_path / "c" / "checkpoints" / "last.pt"], "export")
    assert "checkpoints folder" in message and not (tmp_path / "c").exists()


def test_a_train_refused_for_an_export_writes_nothing(tmp_path, capsys, trained_tiny, demo_manifest):
    assert run_cli(["export", trained_tiny, tmp_path / "a.pt"]) == 0
    folder = tmp_path / "f"
    (folder / "checkpoints").mkdir(parents=True)
    shutil.copy(tmp_path / "a.pt", folder / "checkpoints" / "last.pt")
    message = cli_error(capsys, ["train", folder, *FAST_TRAIN, f"data.manifest={demo_manifest}", "train.max_steps=40"],
                        "train")
    assert "it is an export" in message and sorted(p.name for p in folder.iterdir()) == ["checkpoints"]


def test_a_single_output_file_waits_for_no_one_writing_its_folder(tmp_path, capsys, trained_tiny, demo_manifest,
                                                                 sleeper):
    folder = tmp_path / "busy"
    hold_lock(folder, sleeper.pid, "decode")
    message = cli_error(capsys, ["convert", trained_tiny, read_manifest(demo_manifest)[0].audio, "--speaker",
                                 VQSpeech.load(trained_tiny, "cpu").speakers[0], "-o", folder / "x.wav"], "convert")
    assert "is in use by `vqspeech decode`" in message and not (folder / "x.wav").exists()


def test_prepare_skips_another_verbs_folder_inside_the_corpus(tmp_path):
    from vqspeech.data.prepare import prepare_corpus

    corpus = tone_corpus(tmp_path / "corpus", {"anna": 0.5, "ben": 0.5})
    prepare_corpus(corpus, tmp_path / "prepared", "folder", sample_rate=8000, progress=False, num_workers=0)
    shutil.move(tmp_path / "prepared", corpus / "anna" / "prepared")  # a prepared copy now inside the corpus
    with pytest.warns(UserWarning, match="is a prepared corpus, not part of the corpus; it is skipped"):
        summary = prepare_corpus(corpus, tmp_path / "out", "folder", sample_rate=8000, progress=False, num_workers=0)
    assert sorted(u.speaker for u in read_manifest(summary.manifest)) == ["anna", "ben"]


def test_refused_results_leave_no_folder_in_another_experiment(tmp_path, capsys, trained_tiny, codes, demo_manifest):
    other = tmp_path / "other"
    shutil.copytree(trained_tiny, other)
    cli_error(capsys, ["evaluate", "probe", "--codes", codes, "--manifest", demo_manifest, "--no_abx", "--out",
                       other / "probe" / "v.json"], "evaluate probe")
    cli_error(capsys, ["evaluate", "loss", trained_tiny, "--split", "test", "--out", other / "loss" / "m.json"],
              "evaluate loss")
    assert not (other / "probe").exists() and not (other / "loss").exists()


def test_a_reference_voice_linking_into_the_output_is_refused(tmp_path, capsys, trained_tiny, demo_manifest):
    rows = read_manifest(demo_manifest)
    out, voice = tmp_path / "out", tmp_path / "voice"
    out.mkdir()
    voice.mkdir()
    shutil.copy(rows[1].audio, out / "taken.wav")
    (voice / "link.wav").symlink_to(out / "taken.wav")
    message = cli_error(capsys, ["convert", trained_tiny, rows[0].audio, "--speaker", voice, "-o", out,
                                 "--overwrite"], "convert")
    assert "overlaps the output" in message


def test_a_lock_that_is_a_folder_and_an_output_through_a_broken_link_are_named(tmp_path, capsys, trained_tiny,
                                                                               codes):
    folder = tmp_path / "out"
    (folder / FolderLock.NAME).mkdir(parents=True)
    message = cli_error(capsys, ["decode", trained_tiny, codes, "-o", folder], "decode")
    assert "is not a lock file" in message
    (tmp_path / "dangling").symlink_to(tmp_path / "nowhere")
    message = cli_error(capsys, ["decode", trained_tiny, codes, "-o", tmp_path / "dangling" / "sub"], "decode")
    assert "which does not exist; fix or remove the link" in message


# --- eighteenth pass --------------------------------------------------------------------------


def test_a_single_output_file_keeps_out_of_a_killed_runs_folder_and_takes_no_lock(tmp_path, capsys, monkeypatch,
                                                                                 trained_tiny, demo_manifest):
    from vqspeech.inference import files

    vq = VQSpeech.load(trained_tiny, "cpu")
    items = files.collect_inputs(demo_manifest, limit=3)
    killed_convert(monkeypatch, vq, items, tmp_path / "out", 1, speaker=vq.speakers[0], batch_size=1)
    message = cli_error(capsys, ["convert", trained_tiny, items[2].path, "--speaker", vq.speakers[0], "-o",
                                 tmp_path / "out" / "extra.wav"], "convert")
    # (the killed run's folder carries convert's mark since the nineteenth pass: refused as generated audio)
    assert "a folder of audio `vqspeech convert` generated" in message
    assert not (tmp_path / "out" / "extra.wav").exists()
    free = tmp_path / "free"  # several single-file runs may share a folder: none holds its lock
    assert run_cli(["convert", trained_tiny, items[2].path, "--speaker", vq.speakers[0], "-o", free / "x.wav"]) == 0
    assert sorted(p.name for p in free.iterdir()) == ["x.wav"]


def test_export_keeps_out_of_a_folder_a_run_is_writing(tmp_path, capsys, trained_tiny, sleeper):
    hold_lock(tmp_path / "busy", sleeper.pid, "convert")
    message = cli_error(capsys, ["export", trained_tiny, tmp_path / "busy" / "m.pt"], "export")
    assert "is in use by `vqspeech convert`" in message and not (tmp_path / "busy" / "m.pt").exists()


def test_prepare_skips_an_experiment_folder_inside_the_corpus(tmp_path, trained_tiny):
    from vqspeech.data.prepare import prepare_corpus

    corpus = tone_corpus(tmp_path / "corpus", {"anna": 0.5, "ben": 0.5})
    shutil.copytree(trained_tiny, corpus / "exp")
    tone_corpus(corpus / "exp" / "convert", {"anna": 0.5})  # a model's own conversions, say
    with pytest.warns(UserWarning, match="is an experiment folder, not part of the corpus"):
        summary = prepare_corpus(corpus, tmp_path / "out", "folder", sample_rate=8000, progress=False, num_workers=0)
    assert sorted(u.speaker for u in read_manifest(summary.manifest)) == ["anna", "ben"]


def test_a_nested_experiment_writes_its_report_at_home(tmp_path, capsys, trained_tiny):
    """EXP/units (two-stage training) is an experiment inside an experiment: its own folder is the
    nearest, so its report goes there; the outer experiment's folder is still refused."""
    outer = tmp_path / "exp"
    shutil.copytree(trained_tiny, outer)
    shutil.copytree(trained_tiny, outer / "units")
    assert run_cli(["report", outer / "units"]) == 0 and (outer / "units" / "report.html").is_file()
    assert "would be written into the experiment" in cli_error(
        capsys, ["report", outer / "units", "--out", outer / "r.html"], "report")


# --- eighteenth pass, the rest ----------------------------------------------------------------


def test_generated_audio_folders_are_marked_so_prepare_and_the_other_verb_keep_out(tmp_path, capsys, trained_tiny,
                                                                                   codes, demo_manifest):
    from vqspeech.data.prepare import prepare_corpus

    corpus = tone_corpus(tmp_path / "corpus", {"anna": 0.5, "ben": 0.5})
    speaker = VQSpeech.load(trained_tiny, "cpu").speakers[0]
    generated = corpus / "generated"
    assert run_cli(["convert", trained_tiny, demo_manifest, "--limit", "2", "--speaker", speaker,
                    "-o", generated]) == 0
    with pytest.warns(UserWarning, match="generated.* is a folder of audio `vqspeech convert` generated"):
        summary = prepare_corpus(corpus, tmp_path / "out", "folder", sample_rate=8000, progress=False, num_workers=0)
    assert sorted({u.speaker for u in read_manifest(summary.manifest)}) == ["anna", "ben"]
    before = {p: p.read_bytes() for p in files_under(generated)}
    for out in (generated, generated / "one.wav", generated / "sub"):
        argv = ["decode", trained_tiny, codes if out.suffix != ".wav" else next((codes / "codes").glob("*.npy")),
                "-o", out, "--speaker", speaker, "--overwrite"]
        assert "a folder of audio `vqspeech convert` generated" in cli_error(capsys, argv, "decode")
    assert {p: p.read_bytes() for p in files_under(generated)} == before


def test_decode_and_convert_keep_out_of_a_folder_of_other_files(tmp_path, capsys, trained_tiny, demo_manifest):
    corpus = tone_corpus(tmp_path / "corpus", {"anna": 0.5})
    before = {p: p.read_bytes() for p in files_under(corpus)}
    speaker = VQSpeech.load(trained_tiny, "cpu").speakers[0]
    message = cli_error(capsys, ["convert", trained_tiny, demo_manifest, "--limit", "2", "--speaker", speaker,
                                 "-o", corpus / "anna", "--overwrite"], "convert")
    assert "which `vqspeech convert` did not write" in message and "new or empty folder" in message
    assert {p: p.read_bytes() for p in files_under(corpus)} == before  # and no mark left behind
    # its own folder is taken back with --overwrite; without the mark, not even files named as its outputs
    out = tmp_path / "converted"
    argv = ["convert", trained_tiny, demo_manifest, "--limit", "2", "--speaker", speaker, "-o", out]
    assert run_cli(argv) == 0 and run_cli([*argv, "--overwrite"]) == 0
    (out / ".vqspeech-convert").unlink()
    assert "did not write" in cli_error(capsys, [*argv, "--overwrite"], "convert")


def test_train_on_an_enrolled_model_says_what_it_is(tmp_path, capsys, trained_tiny, demo_manifest):
    row = read_manifest(demo_manifest)[0]
    enrolled = tmp_path / "enrolled"
    assert run_cli(["enroll", trained_tiny, "newvoice", row.audio, "-o", enrolled, "--steps", "1"]) == 0
    message = cli_error(capsys, ["train", enrolled, f"data.manifest={demo_manifest}"], "train")
    assert "`vqspeech enroll` wrote" in message and "train in a new folder" in message


# --- nineteenth pass --------------------------------------------------------------------------


def test_a_single_output_file_is_refused_if_a_folder_run_claimed_its_folder_meanwhile(tmp_path, monkeypatch,
                                                                                      trained_tiny, demo_manifest,
                                                                                      sleeper):
    """The folder is checked before the work and again just before the file takes its name."""
    from vqspeech.inference import files

    vq = VQSpeech.load(trained_tiny, "cpu")
    items = files.collect_inputs(demo_manifest, limit=1)
    out = tmp_path / "shared" / "single.wav"
    real_decode = vq.decode_batch

    def claimed_meanwhile(*args, **kwargs):  # a `convert` into the folder starts while this one generates
        audio = real_decode(*args, **kwargs)
        hold_lock(out.parent, sleeper.pid, "convert")  # (its mark, written next, is refused as well)
        return audio

    monkeypatch.setattr(vq, "decode_batch", claimed_meanwhile)
    with pytest.raises(UserError, match="is in use by `vqspeech convert`"):
        files.convert_items(vq, items, out, speaker=vq.speakers[0])
    assert sorted(p.name for p in out.parent.iterdir()) == [FolderLock.NAME]


def test_overwrite_never_replaces_a_users_file_in_a_folder_decode_or_convert_did_not_write(tmp_path, capsys,
                                                                                           trained_tiny,
                                                                                           demo_manifest):
    row = read_manifest(demo_manifest)[0]
    speaker = VQSpeech.load(trained_tiny, "cpu").speakers[0]
    mine = tmp_path / "mine"
    mine.mkdir()
    shutil.copy(row.audio, mine / f"{row.id}.wav")  # a recording of the user's, named as the output would be
    before = {p.name: p.read_bytes() for p in mine.iterdir()}
    message = cli_error(capsys, ["convert", trained_tiny, demo_manifest, "--limit", "2", "--speaker", speaker,
                                 "-o", mine, "--overwrite"], "convert")
    assert "did not write" in message
    assert {p.name: p.read_bytes() for p in mine.iterdir()} == before  # not replaced, not marked
    # the file named alone is the user's explicit choice
    assert run_cli(["convert", trained_tiny, row.audio, "--speaker", speaker, "-o", mine / f"{row.id}.wav",
                    "--overwrite"]) == 0


def test_an_output_name_that_is_a_folder_is_refused_before_the_work(tmp_path, capsys, monkeypatch, trained_tiny,
                                                                     demo_manifest):
    from vqspeech.inference import files

    vq = VQSpeech.load(trained_tiny, "cpu")
    items = files.collect_inputs(demo_manifest, limit=2)
    out = tmp_path / "conv"
    assert run_cli(["convert", trained_tiny, demo_manifest, "--limit", "2", "--speaker", vq.speakers[0],
                    "-o", out]) == 0
    (out / f"{items[0].id}.wav").unlink()
    (out / f"{items[0].id}.wav").mkdir()
    monkeypatch.setattr(VQSpeech, "decode_batch", lambda *a, **k: pytest.fail("generated before refusing"))
    with pytest.raises(UserError, match="is not a regular file"):
        files.convert_items(vq, items, out, speaker=vq.speakers[0], overwrite=True)


def test_an_existing_folder_named_like_a_wav_is_a_folder_output(tmp_path, trained_tiny, demo_manifest):
    speaker = VQSpeech.load(trained_tiny, "cpu").speakers[0]
    row = read_manifest(demo_manifest)[0]
    out = tmp_path / "x.wav"
    out.mkdir()
    assert run_cli(["convert", trained_tiny, row.audio, "--speaker", speaker, "-o", out]) == 0
    assert (out / f"{row.id}.wav").is_file()


def test_a_failed_run_leaves_its_folder_unmarked_when_it_wrote_nothing(tmp_path, monkeypatch, trained_tiny,
                                                                        demo_manifest):
    from vqspeech.inference import files

    vq = VQSpeech.load(trained_tiny, "cpu")
    items = files.collect_inputs(demo_manifest, limit=2)
    out = tmp_path / "empty"
    out.mkdir()

    def fails(*args, **kwargs):
        raise RuntimeError("out of memory")

    monkeypatch.setattr(vq, "decode_batch", fails)
    with pytest.raises(RuntimeError):
        files.convert_items(vq, items, out, speaker=vq.speakers[0])
    assert list(out.iterdir()) == []  # a later decode may still use it
    with pytest.raises(RuntimeError):
        files.convert_items(vq, items, tmp_path / "new", speaker=vq.speakers[0])
    assert not (tmp_path / "new").exists()


def test_the_report_says_when_conversions_are_older_than_the_model_or_unfinished(tmp_path, monkeypatch,
                                                                                  trained_tiny, demo_manifest):
    from vqspeech.inference import files

    exp = tmp_path / "exp"
    shutil.copytree(trained_tiny, exp)
    for stale in ("eval_convert", "convert", "report.html"):
        shutil.rmtree(exp / stale, ignore_errors=True) if (exp / stale).is_dir() else (exp / stale).unlink(
            missing_ok=True)
    vq = VQSpeech.load(exp, "cpu")
    items = files.collect_inputs(demo_manifest, split="test", limit=2)
    files.convert_items(vq, items, exp / "convert" / vq.speakers[1], speaker=vq.speakers[1])
    marked = json.loads((exp / "convert" / vq.speakers[1] / ".vqspeech-convert").read_text())["outputs"]
    assert {name: entry["step"] for name, entry in marked.items()} == {f"{i.id}.wav": 30 for i in items}
    assert run_cli(["report", exp]) == 0
    assert "were made at step" not in (exp / "report.html").read_text()
    assert run_cli(["train", exp, "train.max_steps=32"]) == 0  # the model trains on
    killed_convert(monkeypatch, VQSpeech.load(exp, "cpu"), items, exp / "convert" / vq.speakers[2], 1,
                   speaker=vq.speakers[2], batch_size=1)
    assert run_cli(["report", exp, "--overwrite"]) == 0
    page = (exp / "report.html").read_text()
    assert f"The conversions into {vq.speakers[1]} were made at step 30, but the model has trained to step 32" in page
    assert f"The conversions into {vq.speakers[2]} are an unfinished run" in page


def test_evaluate_conversion_takes_a_folder_holding_only_hidden_files(tmp_path, trained_tiny):
    out = tmp_path / "ev"
    out.mkdir()
    (out / ".gitkeep").write_text("")
    assert run_cli(["evaluate", "conversion", trained_tiny, "--out", out, "--num", "1", "--num_reference", "1"]) == 0
    assert (out / "metrics.json").is_file() and (out / ".gitkeep").is_file()


def test_the_report_says_when_prior_samples_were_decoded_by_an_older_model(tmp_path, trained_tiny):
    exp = tmp_path / "exp"
    shutil.copytree(trained_tiny, exp)
    samples = exp / "prior_samples" / "anna"
    samples.mkdir(parents=True)
    record = {"speaker": "anna", "wavs": [], "kept_bits_per_code": [], "step": 12, "prior_step": 40}
    (samples / "samples.json").write_text(json.dumps(record))
    assert run_cli(["report", exp]) == 0
    assert "These samples were decoded at step 12, but the model has trained to step 30" in (
        exp / "report.html").read_text()


# --- twentieth pass ---------------------------------------------------------------------------


def test_a_generated_folder_takes_no_single_output_file_not_even_of_its_own_verb(tmp_path, capsys, trained_tiny,
                                                                                  demo_manifest):
    """A folder `convert` generated is written as a whole: its mark records which model made each
    file, and a file written alone (another checkpoint, another voice) would be taken for one of
    its conversions."""
    vq = VQSpeech.load(trained_tiny, "cpu")
    row = read_manifest(demo_manifest)[0]
    out = tmp_path / "exp_convert" / vq.speakers[0]
    assert run_cli(["convert", trained_tiny, demo_manifest, "--limit", "2", "--speaker", vq.speakers[0],
                    "-o", out]) == 0
    before = {p: p.read_bytes() for p in files_under(out)}
    for name in (f"{row.id}.wav", "extra.wav"):
        message = cli_error(capsys, ["convert", trained_tiny, row.audio, "--speaker", vq.speakers[1], "-o",
                                     out / name, "--overwrite"], "convert")
        assert "a folder of audio `vqspeech convert` generated" in message
    assert {p: p.read_bytes() for p in files_under(out)} == before


def test_a_single_output_file_written_meanwhile_is_not_replaced_without_overwrite(tmp_path, monkeypatch,
                                                                                  trained_tiny, demo_manifest):
    from vqspeech.inference import files

    vq = VQSpeech.load(trained_tiny, "cpu")
    items = files.collect_inputs(demo_manifest, limit=1)
    out = tmp_path / "out.wav"
    real_decode = vq.decode_batch

    def user_writes_meanwhile(*args, **kwargs):  # or a second run that finished first
        audio = real_decode(*args, **kwargs)
        out.write_text("my precious notes")
        return audio

    monkeypatch.setattr(vq, "decode_batch", user_writes_meanwhile)
    with pytest.raises(UserError, match="exists .written while this run worked"):
        files.convert_items(vq, items, out, speaker=vq.speakers[0])
    assert out.read_text() == "my precious notes"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.wav"]  # no temporary file left


def test_the_report_knows_the_models_step_after_an_interrupted_training_and_unknown_files(tmp_path, trained_tiny,
                                                                                         demo_manifest):
    """train_summary.json is written when a run ends; a killed run leaves last.pt further on, and
    that is the model every other verb loads."""
    exp = tmp_path / "exp"
    shutil.copytree(trained_tiny, exp)
    for stale in ("eval_convert", "convert", "report.html", "metrics.json"):
        shutil.rmtree(exp / stale) if (exp / stale).is_dir() else (exp / stale).unlink(missing_ok=True)
    summary = (exp / "train_summary.json").read_bytes()
    assert run_cli(["train", exp, "train.max_steps=32"]) == 0
    (exp / "train_summary.json").write_bytes(summary)  # as a run killed after its step-32 checkpoint leaves it
    speaker = VQSpeech.load(exp, "cpu").speakers[1]
    out = exp / "convert" / speaker
    assert run_cli(["convert", exp, demo_manifest, "--split", "test", "--limit", "2", "--speaker", speaker,
                    "-o", out]) == 0
    mark = json.loads((out / ".vqspeech-convert").read_text())
    assert {entry["step"] for entry in mark["outputs"].values()} == {32}
    assert run_cli(["report", exp]) == 0
    page = (exp / "report.html").read_text()
    assert "checkpoints/last.pt is at step 32" in page and "were made at step" not in page
    # a file changed or added by hand is of unknown origin; an absurd step in the mark reads as unknown
    first = sorted(out.glob("*.wav"))[0]
    shutil.copy(first, out / "added.wav")
    mark["outputs"][first.name]["step"] = 10**400
    (out / ".vqspeech-convert").write_text(json.dumps(mark))
    assert run_cli(["report", exp, "--overwrite"]) == 0
    page = (exp / "report.html").read_text()
    assert f"1 of the 3 conversions into {speaker} (e.g. added.wav) were not written there" in page
    assert "Section skipped" not in page


# --- twenty-first pass ------------------------------------------------------------------------


def test_overwrite_never_lets_encode_and_baseline_replace_each_others_codes(tmp_path, capsys, trained_tiny,
                                                                          demo_manifest, codes):
    model_codes = tmp_path / "codes"
    shutil.copytree(codes, model_codes)
    before = {p: p.read_bytes() for p in files_under(model_codes)}
    message = cli_error(capsys, ["baseline", "mfcc-kmeans", demo_manifest, model_codes, "--overwrite"], "baseline")
    assert "holds codes `vqspeech encode` (a VQ-VAE's codes) wrote" in message
    assert {p: p.read_bytes() for p in files_under(model_codes)} == before
    kmeans = tmp_path / "kmeans"
    assert run_cli(["baseline", "mfcc-kmeans", demo_manifest, kmeans, "--num_codes", "8"]) == 0
    message = cli_error(capsys, ["encode", trained_tiny, demo_manifest, kmeans, "--overwrite"], "encode")
    assert "holds codes `vqspeech baseline mfcc-kmeans` wrote" in message
    assert run_cli(["baseline", "mfcc-kmeans", demo_manifest, kmeans, "--num_codes", "8", "--overwrite"]) == 0


def test_probe_alignments_without_audio_may_leave_the_final_silence_out(tmp_path, capsys, codes, demo_manifest):
    """With --alignments (no audio), .lab segments that end before the codes do are accepted (as
    they are with the audio known); segments that reach past the codes are refused."""
    def write_labs(folder: Path, share: float) -> Path:
        folder.mkdir()
        for row in read_manifest(demo_manifest):
            seconds = share * len(np.load(codes / "codes" / f"{row.id}.npy")) / 100
            labels = ["sil", "dh", "ax", "k", "ae", "t", "sil"]
            lines = [f"{seconds * (k + 1) / len(labels):.4f} 125 {label}" for k, label in enumerate(labels)]
            (folder / f"{row.id}.lab").write_text("signal x\nnfields 1\n#\n" + "\n".join(lines) + "\n")
        return folder

    short = write_labs(tmp_path / "short", 0.85)
    assert run_cli(["evaluate", "probe", "--codes", codes, "--alignments", short, "--out", tmp_path / "p.json",
                    "--no_abx"]) == 0
    long = write_labs(tmp_path / "long", 1.5)
    message = cli_error(capsys, ["evaluate", "probe", "--codes", codes, "--alignments", long, "--out",
                                 tmp_path / "q.json", "--no_abx"], "evaluate probe")
    assert "code frames cover" in message and "do not belong together" in message


def test_the_report_says_when_conversions_are_of_an_earlier_enrolment(tmp_path, trained_tiny, demo_manifest):
    """An enrolment changes the voice, not the step: the mark records the checkpoint's digest too."""
    rows = read_manifest(demo_manifest)
    enrolled = tmp_path / "enrolled"
    voice = ["enroll", trained_tiny, "newvoice", rows[0].audio, "-o", enrolled]
    assert run_cli([*voice, "--steps", "1"]) == 0
    out = enrolled / "convert" / "newvoice"
    assert run_cli(["convert", enrolled, demo_manifest, "--limit", "2", "--speaker", "newvoice", "-o", out]) == 0
    assert run_cli(["report", enrolled]) == 0
    assert "earlier state of the model" not in (enrolled / "report.html").read_text()
    assert run_cli([*voice, "--steps", "3"]) == 0  # the enrolment carries on: same step, another voice
    assert run_cli(["report", enrolled, "--overwrite"]) == 0
    assert "2 of the conversions into newvoice were made by an earlier state of the model at the same step" in (
        enrolled / "report.html").read_text()


def test_small_mistakes_of_the_twenty_first_pass_get_one_clear_sentence(tmp_path, capsys, trained_tiny, codes,
                                                                        demo_manifest):
    from vqspeech.data.codes import CodesFolder

    assert run_cli(["export", trained_tiny, tmp_path / "model.pt"]) == 0
    message = cli_error(capsys, ["report", tmp_path / "model.pt"], "report")
    assert "is a file; a report is of an experiment folder" in message
    with pytest.raises(UserError, match="another command's output folder"):
        VQSpeech.load(codes, "cpu")
    vq = VQSpeech.load(trained_tiny, "cpu")
    folder = CodesFolder.open(codes)
    encoding = folder.read(folder.code_ids[0])
    assert len(vq.decode(encoding)) > 0  # the speaker the codes record
    with pytest.raises(UserError, match="No speaker is known"):
        vq.decode(encoding.codes)
    rows = read_manifest(demo_manifest)
    files = [rows[0].audio, rows[1].audio]
    out = tmp_path / "enrolled"
    assert run_cli(["enroll", trained_tiny, "newvoice", *files, "-o", out, "--steps", "1"]) == 0
    assert run_cli(["enroll", trained_tiny, "newvoice", *files[::-1], "-o", out, "--steps", "2"]) == 0


# --- twenty-second pass -----------------------------------------------------------------------


def test_the_report_says_when_the_probe_measured_an_earlier_codebook(tmp_path, trained_tiny, demo_manifest):
    exp = tmp_path / "exp"
    shutil.copytree(trained_tiny, exp)
    for stale in ("probe", "codes", "report.html"):
        shutil.rmtree(exp / stale) if (exp / stale).is_dir() else (exp / stale).unlink(missing_ok=True)
    assert run_cli(["encode", exp, demo_manifest, exp / "codes"]) == 0
    assert run_cli(["evaluate", "probe", "--codes", exp / "codes", "--manifest", demo_manifest, "--name", "vqvae",
                    "--out", exp / "probe" / "vqvae.json", "--no_abx"]) == 0
    assert run_cli(["report", exp]) == 0
    assert "measured codes of another codebook" not in (exp / "report.html").read_text()
    assert run_cli(["train", exp, "train.max_steps=34"]) == 0  # the codebook moves on
    assert run_cli(["report", exp, "--overwrite"]) == 0
    probe = (exp / "report.html").read_text().split('<section id="probe">')[1].split("</section>")[0]
    assert "The probe &#x27;vqvae&#x27; measured codes of another codebook than the model&#x27;s now" in probe


def test_encoding_does_not_depend_on_the_recordings_gain(tmp_path, trained_tiny, demo_manifest):
    """A model hears the level `prepare` gave its corpus: float audio 10^4 above full scale, or far
    below it, encodes as the recording does (before: one code for the whole of a loud file)."""
    vq = VQSpeech.load(trained_tiny, "cpu")
    audio, rate = sf.read(read_manifest(demo_manifest)[0].audio, dtype="float32")
    codes = vq.encode(audio, rate).codes
    assert len(set(codes.tolist())) > 3
    for gain in (1e4, 1e30, 1e-3):
        scaled = vq.encode((audio.astype(np.float64) * gain).astype(np.float32), rate).codes
        assert np.mean(scaled == codes) > 0.98, gain
    loud = tmp_path / "loud.wav"
    sf.write(loud, audio * 1e4, rate, subtype="FLOAT")
    assert run_cli(["encode", trained_tiny, loud, tmp_path / "codes"]) == 0
    assert np.mean(np.load(tmp_path / "codes" / "codes" / "loud.npy") == codes) > 0.98


def test_prepare_of_the_working_folder_names_its_speaker_as_its_full_path_would(tmp_path, monkeypatch):
    speaker = tmp_path / "anna"
    speaker.mkdir()
    sf.write(speaker / "x.wav", 0.1 * np.sin(np.arange(8000) / 5.0).astype(np.float32), 8000)
    monkeypatch.chdir(speaker)
    assert run_cli(["prepare", ".", tmp_path / "out", "--layout", "folder", "--sample_rate", "8000"]) == 0
    assert [(u.id, u.speaker) for u in read_manifest(tmp_path / "out" / "manifest.jsonl")] == [("anna_x", "anna")]


def test_a_pipe_named_like_audio_is_named_as_one(tmp_path, capsys, trained_tiny, demo_manifest):
    folder = tmp_path / "in"
    folder.mkdir()
    shutil.copy(read_manifest(demo_manifest)[0].audio, folder / "a.wav")
    os.mkfifo(folder / "pipe.wav")
    message = cli_error(capsys, ["encode", trained_tiny, folder / "pipe.wav", tmp_path / "c1"], "encode")
    assert "is neither a regular file nor a folder" in message
    assert run_cli(["encode", trained_tiny, folder, tmp_path / "c2"]) == 0
    rejects = (tmp_path / "c2" / "rejects.tsv").read_text()
    assert "pipe.wav" in rejects and "not a regular file" in rejects
    message = cli_error(capsys, ["enroll", trained_tiny, "anna", folder, "-o", tmp_path / "e", "--steps", "1"],
                        "enroll")
    assert "pipe.wav is not a regular file" in message


def test_speaker_names_that_cannot_be_listed_or_given_are_refused_by_prepare(tmp_path):
    corpus = tmp_path / "corpus"
    for name in ("x,y", "-h", "plain"):
        (corpus / name).mkdir(parents=True)
        for n in range(2):
            sf.write(corpus / name / f"u{n}.wav", 0.1 * np.sin(np.arange(8000) / (4.0 + n)).astype(np.float32), 8000)
    assert run_cli(["prepare", corpus, tmp_path / "out", "--layout", "folder", "--sample_rate", "8000"]) == 0
    assert {u.speaker for u in read_manifest(tmp_path / "out" / "manifest.jsonl")} == {"plain"}
    rejects = (tmp_path / "out" / "rejects.tsv").read_text()
    assert "speaker 'x,y' is not a name" in rejects and "speaker '-h' is not a name" in rejects
    assert not is_safe_speaker("a,b") and not is_safe_speaker("-h") and is_safe_speaker("a-b")


def test_speakers_and_model_verbs_say_what_a_folder_is(tmp_path, capsys, trained_tiny, demo_manifest):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    shutil.copy(read_manifest(demo_manifest)[0].audio, corpus / "a.wav")
    message = cli_error(capsys, ["speakers", corpus], "speakers")
    assert "is not an experiment folder" in message and "train it first" not in message
    message = cli_error(capsys, ["speakers", trained_tiny / "checkpoints"], "speakers")
    assert "is an experiment's checkpoints folder" in message
    message = cli_error(capsys, ["speakers", "/dev/null"], "speakers")
    assert "is neither an experiment folder nor a checkpoint file" in message
    (tmp_path / "empty").mkdir()
    assert "train it first" in cli_error(capsys, ["speakers", tmp_path / "empty"], "speakers")


def test_prepare_names_channels_that_cancel_and_refuses_a_constant_level(tmp_path):
    corpus = tmp_path / "corpus" / "anna"
    corpus.mkdir(parents=True)
    tone = 0.1 * np.sin(np.arange(8000) / 5.0).astype(np.float32)
    sf.write(corpus / "cancel.wav", np.stack([tone, -tone], axis=1), 8000)
    sf.write(corpus / "dc.wav", np.full(8000, 0.5, dtype=np.float32), 8000)
    sf.write(corpus / "fine.wav", tone, 8000)
    assert run_cli(["prepare", corpus.parent, tmp_path / "out", "--layout", "folder", "--sample_rate", "8000"]) == 0
    assert [u.id for u in read_manifest(tmp_path / "out" / "manifest.jsonl")] == ["anna_fine"]
    rejects = dict(line.split("\t", 1) for line in (tmp_path / "out" / "rejects.tsv").read_text().splitlines()[1:])
    reasons = {Path(k).name: v for k, v in rejects.items()}
    assert "channels cancel out when mixed to mono" in reasons["cancel.wav"]
    assert reasons["dc.wav"].startswith("silent") and "cancel" not in reasons["dc.wav"]


def test_sigterm_ends_training_in_one_line_and_the_next_run_replaces_its_curves(tmp_path, demo_manifest):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    exp = tmp_path / "exp"
    args = [sys.executable, "-m", "vqspeech.cli", "train", str(exp), *FAST_TRAIN, f"data.manifest={demo_manifest}",
            "train.log_every=1", "train.warmup_steps=2"]
    proc = subprocess.Popen([*args, "train.max_steps=100000"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=dict(os.environ, OMP_NUM_THREADS="1"))
    deadline = time.time() + 120
    while time.time() < deadline and not list((exp / "tb").glob("events*")):
        time.sleep(0.5)
    time.sleep(3)  # some steps logged
    proc.terminate()
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143 and "vqspeech train: terminated\n" in err and "Traceback" not in err, err[-2000:]
    assert "stopping after this step, which is saved" in err and not (exp / ".lock").exists()
    stopped = torch.load(exp / "checkpoints" / "last.pt", weights_only=True)["step"]  # the step it stopped after
    assert stopped >= 1
    assert subprocess.run([*args, f"train.max_steps={stopped + 2}"], capture_output=True,
                          env=dict(os.environ, OMP_NUM_THREADS="1")).returncode == 0
    events = EventAccumulator(str(exp / "tb"))
    events.Reload()
    assert sorted(e.step for e in events.Scalars("train/bits")) == list(range(1, stopped + 3))


def test_enroll_prints_one_short_line(tmp_path, capsys, trained_tiny, demo_manifest):
    files = [u.audio for u in read_manifest(demo_manifest)[:12]]
    capsys.readouterr()
    assert run_cli(["enroll", trained_tiny, "anna", *files, "-o", tmp_path / "e", "--steps", "1"]) == 0
    line = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert line["recordings"] == 12 and "files" not in line and "inputs" not in line
    assert len(json.loads((tmp_path / "e" / "enrolment.json").read_text())["files"]) == 12


def test_hydras_own_settings_are_refused_as_overrides(tmp_path, capsys, demo_manifest):
    message = cli_error(capsys, ["train", tmp_path / "exp", *FAST_TRAIN, f"data.manifest={demo_manifest}",
                                 "train.max_steps=1", "hydra.run.dir=/tmp/x"], "train")
    assert "Hydra's own settings" in message and "hydra.run.dir" in message
    assert not (tmp_path / "exp").exists()


# --- twenty-third pass ------------------------------------------------------------------------


def test_overwrite_never_lets_loss_and_probe_results_replace_each_other(tmp_path, capsys, trained_tiny, codes,
                                                                       demo_manifest):
    exp = tmp_path / "exp"
    shutil.copytree(trained_tiny, exp)
    codes = exp / "codes"  # its own
    shutil.rmtree(codes, ignore_errors=True)
    assert run_cli(["encode", exp, demo_manifest, codes]) == 0
    probe = exp / "probe" / "vqvae.json"
    assert run_cli(["evaluate", "probe", "--codes", codes, "--manifest", demo_manifest, "--out", probe,
                    "--no_abx", "--overwrite"]) == 0
    before = probe.read_bytes()
    message = cli_error(capsys, ["evaluate", "loss", exp, "--out", probe, "--overwrite"], "evaluate loss")
    assert "holds probe results, not loss results" in message and probe.read_bytes() == before
    metrics = exp / "metrics.json"
    assert run_cli(["evaluate", "loss", exp, "--out", metrics, "--overwrite"]) == 0
    before = metrics.read_bytes()
    message = cli_error(capsys, ["evaluate", "probe", "--codes", codes, "--manifest", demo_manifest, "--out",
                                 metrics, "--no_abx", "--overwrite"], "evaluate probe")
    assert "holds loss results, not probe results" in message and metrics.read_bytes() == before
    assert run_cli(["evaluate", "loss", exp, "--out", metrics, "--overwrite"]) == 0  # its own kind: replaced


def test_the_report_says_when_the_prior_learned_an_earlier_codebook(tmp_path, trained_tiny, demo_manifest):
    exp = tmp_path / "exp"
    shutil.copytree(trained_tiny, exp)
    shutil.rmtree(exp / "prior", ignore_errors=True)
    assert run_cli(["encode", exp, demo_manifest, tmp_path / "codes"]) == 0
    assert run_cli(["prior", "train", exp / "prior", *PRIOR, f"data.codes={tmp_path / 'codes'}",
                    "train.max_steps=2"]) == 0
    assert run_cli(["report", exp, "--overwrite"]) == 0
    assert "This prior learned codes of another codebook" not in (exp / "report.html").read_text()
    assert run_cli(["train", exp, "train.max_steps=34"]) == 0
    assert run_cli(["report", exp, "--overwrite"]) == 0
    assert "This prior learned codes of another codebook than the model" in (exp / "report.html").read_text()


def test_a_killed_prior_run_resumes_from_its_best_checkpoint_and_a_live_one_is_named(tmp_path, capsys, codes,
                                                                                    sleeper):
    """best.pt is written at every new best (every validation of the prior profile), last.pt with it:
    a run killed between two regular checkpoints leaves a state the rerun continues."""
    exp = tmp_path / "prior"
    assert run_cli(["prior", "train", exp, *PRIOR, f"data.codes={codes}", "train.max_steps=4",
                    "train.valid_every=2", "train.checkpoint_every=1000"]) == 0
    best = torch.load(exp / "checkpoints" / "best.pt", weights_only=True)
    last = torch.load(exp / "checkpoints" / "last.pt", weights_only=True)
    assert last["step"] == 4 and best["step"] in (2, 4)
    (exp / "checkpoints" / "last.pt").unlink()  # as an older run, killed before its first last.pt, leaves it
    (exp / ".vqspeech.lock").write_text(json.dumps({"pid": sleeper.pid, "host": socket.gethostname(),
                                                    "verb": "prior train", "started": time.time(),
                                                    "process_start": process_start(sleeper.pid)}))
    message = cli_error(capsys, ["prior", "train", exp, "train.max_steps=6"], "prior train")
    assert f"is in use by `vqspeech prior train` (process {sleeper.pid}" in message


def test_the_api_refuses_codes_of_another_codebook(tmp_path, trained_tiny, demo_manifest):
    other = tmp_path / "other"
    shutil.copytree(trained_tiny, other)
    for stale in ("probe", "codes", "prior", "convert", "eval_convert"):
        shutil.rmtree(other / stale, ignore_errors=True)
    assert run_cli(["train", other, "train.max_steps=34"]) == 0
    audio, rate = sf.read(read_manifest(demo_manifest)[0].audio, dtype="float32")
    mine, theirs = VQSpeech.load(trained_tiny, "cpu"), VQSpeech.load(other, "cpu")
    encoding = theirs.encode(audio, rate)
    with pytest.raises(UserError, match="another model's codebook"):
        mine.decode(encoding, speaker=mine.speakers[0])
    assert len(mine.decode(mine.encode(audio, rate), speaker=mine.speakers[0])) > 0
    assert len(mine.decode(encoding.codes, speaker=mine.speakers[0])) > 0  # a bare array says nothing of its model


def test_small_mistakes_of_the_twenty_third_pass_get_one_clear_sentence(tmp_path, capsys, trained_tiny, codes,
                                                                        demo_manifest):
    from vqspeech.data.align import transcript_words
    from vqspeech.data.alignments import read_alignment

    assert transcript_words("zéro 😀 one") == ["zéro", "one"]  # not "z ro one"
    (tmp_path / "folder.TextGrid").mkdir()
    with pytest.raises(UserError, match="is a folder, not a file"):
        read_alignment(tmp_path / "folder.TextGrid")
    os.symlink(tmp_path / "loop.TextGrid", tmp_path / "loop.TextGrid")
    with pytest.raises(UserError, match="leads nowhere"):
        read_alignment(tmp_path / "loop.TextGrid")
    message = cli_error(capsys, ["evaluate", "conversion", trained_tiny, "--out", tmp_path / "ev", "--manifest",
                                 demo_manifest, "--targets", "anna", "--voice", f"anna={tmp_path / 'nope.wav'}"],
                        "evaluate conversion")
    assert "nope.wav, does not exist" in message
    bad = tmp_path / "bad"
    shutil.copytree(codes, bad)
    first = sorted((bad / "codes").glob("*.npy"))[0]
    first.write_bytes(bytes(range(256)))  # no .npy header: numpy would offer to unpickle it
    with pytest.raises(UserError) as raised:
        CodesFolder.open(bad).codes(first.stem)
    assert "not an array of numbers" in str(raised.value) and "allow_pickle" not in str(raised.value)
    out = tmp_path / "probe.json"
    assert run_cli(["evaluate", "probe", "--codes", codes, "--manifest", demo_manifest, "--out", out, "--no_abx",
                    "--ignore", "SIL"]) == 0  # the alignments' case for the folded set's "sil"


@pytest.mark.parametrize("tool, args, words", [
    ("bench_train.py", ["--model", "tiny", "--steps", "0"], "argument --steps: 0 is not from 1"),
    ("bench_train.py", ["--model", "tiny", "--crop_seconds", "nan"], "argument --crop_seconds: nan is not from 0.01 to 60.0"),
    ("bench_train.py", ["--model", "tiny", "--stage", "nosuch"], "--stage nosuch: stage 'nosuch' is not one of"),
    ("bench_train.py", ["--model", "nosuch"], "available model configs"),
    ("bench_generate.py", ["--arch", "nosuch"], "available model configs"),
    ("bench_generate.py", ["--batch", "0"], "argument --batch: 0 is not from 1"),
    ("bench_abx.py", ["--utterances", "5"], "argument --utterances: 5 is not from 20"),
])
def test_the_benchmark_tools_refuse_absurd_arguments_in_one_sentence(tool, args, words):
    tools = Path(__file__).resolve().parents[1] / "tools"
    result = subprocess.run([sys.executable, str(tools / tool), *args], capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and words in result.stderr and "Traceback" not in result.stderr, result.stderr


def test_results_keep_out_of_an_alignment_folder(tmp_path, capsys, codes, demo_manifest):
    align = tmp_path / "align"
    align.mkdir()
    (align / "align.json").write_text(json.dumps({"source": "corpus", "layout": "demo", "summary": None}))
    message = cli_error(capsys, ["evaluate", "probe", "--codes", codes, "--manifest", demo_manifest, "--out",
                                 align / "probe.json", "--no_abx"], "evaluate probe")
    assert "an alignment folder `vqspeech align` wrote" in message
    assert sorted(p.name for p in align.iterdir()) == ["align.json"]


def test_codes_rewritten_with_fewer_levels_leave_no_empty_level_folder(tmp_path):
    from vqspeech.data.codes import CodesInfo, TopLevelInfo

    out = tmp_path / "codes"
    writer = CodesWriter(out, latents=True, top=True)
    writer.add("a", Encoding(np.zeros(8, dtype=np.int16), np.zeros(2, dtype=np.int16), np.zeros((8, 4), np.float32)))
    writer.finish(CodesInfo.for_rate(100.0, 16, top=TopLevelInfo(25.0, 16, 4)))
    writer = CodesWriter(out, overwrite=True)  # a one-level model's codes in its place
    writer.add("a", Encoding(np.zeros(8, dtype=np.int16)))
    writer.finish(CodesInfo.for_rate(100.0, 16))
    assert sorted(p.name for p in out.iterdir() if p.is_dir()) == ["codes"]
    assert CodesFolder.open(out).read("a").top is None


# --- twenty-fifth pass (the prior, the Python API, the tools) -----------------------------------


def test_a_prior_checkpoint_file_is_checked_against_the_decoder_as_its_folder_is(tmp_path, capsys, trained_tiny,
                                                                                codes):
    other = tmp_path / "other"
    shutil.copytree(trained_tiny, other)
    for stale in ("probe", "codes", "prior", "convert", "eval_convert"):
        shutil.rmtree(other / stale, ignore_errors=True)
    assert run_cli(["train", other, "train.max_steps=34"]) == 0  # another codebook
    prior = tmp_path / "prior"
    assert run_cli(["prior", "train", prior, *PRIOR, f"data.codes={codes}", "train.max_steps=2"]) == 0
    copied = tmp_path / "shared" / "prior.pt"  # a checkpoint file copied out of its folder (not an export)
    copied.parent.mkdir()
    shutil.copyfile(prior / "checkpoints" / "last.pt", copied)
    speaker = VQSpeech.load(trained_tiny, "cpu").speakers[0]
    for source in (prior / "checkpoints" / "last.pt", copied):
        message = cli_error(capsys, ["prior", "sample", source, "--speaker", speaker, "--seconds", "0.1", "--num",
                                     "1", "-o", tmp_path / "samples", "--vqvae", other], "prior sample")
        assert "has another codebook than the one whose codes the prior learned" in message
        assert not (tmp_path / "samples").exists()
    assert run_cli(["prior", "sample", copied, "--speaker", speaker, "--seconds", "0.1", "--num", "1", "-o",
                    tmp_path / "samples"]) == 0  # its codes' VQ-VAE is recorded in the checkpoint
    message = cli_error(capsys, ["prior", "sample", prior, "--speaker", speaker, "--seconds", "0.1", "--codes_only",
                                 "-o", tmp_path / "codes_only", "--vqvae", other], "prior sample")
    assert "--codes_only decodes none" in message


def test_resuming_on_data_changed_since_is_refused(tmp_path, capsys, trained_tiny, codes, demo_manifest):
    prior = tmp_path / "prior"
    moved = tmp_path / "codes"
    shutil.copytree(codes, moved)
    assert run_cli(["prior", "train", prior, *PRIOR, f"data.codes={moved}", "train.max_steps=2"]) == 0
    info = json.loads((moved / "codes.json").read_text())
    first = sorted(i for i, split in info["splits"].items() if split == "train")[0]
    info["splits"][first] = "valid"  # the same codes split otherwise: the validation set changed
    (moved / "codes.json").write_text(json.dumps(info))
    message = cli_error(capsys, ["prior", "train", prior, "train.max_steps=4"], "prior train")
    assert "was trained on other data than it is given now" in message
    exp = tmp_path / "exp"
    shutil.copytree(trained_tiny, exp)
    rows = absolute_rows(demo_manifest)
    dropped = next(i for i, row in enumerate(rows) if row["split"] == "train")
    fewer = write_lines(tmp_path / "fewer.jsonl", rows[:dropped] + rows[dropped + 1:])
    message = cli_error(capsys, ["train", exp, f"data.manifest={fewer}", "train.max_steps=34"], "train")
    assert "was trained on other data than it is given now" in message


def test_a_resume_with_another_number_of_processes_is_named(tmp_path, capsys, codes):
    prior = tmp_path / "prior"
    assert run_cli(["prior", "train", prior, *PRIOR, f"data.codes={codes}", "train.max_steps=2"]) == 0
    last = prior / "checkpoints" / "last.pt"
    state = torch.load(last, weights_only=True)
    assert state["world_size"] == 1
    state["world_size"] = 2  # as a torchrun run with two processes saves it
    torch.save(state, last)
    capsys.readouterr()
    assert run_cli(["prior", "train", prior, "train.max_steps=3"]) == 0
    assert "trained with 2 process(es) and resumes with 1" in capsys.readouterr().err


def test_the_sampling_api_checks_its_arguments_before_drawing(tmp_path, trained_tiny, codes):
    from vqspeech.inference.prior_sampling import sample_prior

    prior = tmp_path / "prior"
    assert run_cli(["prior", "train", prior, *PRIOR, f"data.codes={codes}", "train.max_steps=2"]) == 0
    speaker = VQSpeech.load(trained_tiny, "cpu").speakers[0]
    common = dict(speaker=speaker, device="cpu", codes_only=True)
    for bad, words in ((dict(seconds="2"), "`seconds` must be a number"), (dict(num=1.5), "`num` must be a whole"),
                       (dict(candidates=2.5), "`candidates` must be a whole"), (dict(seed=1.5), "`seed` must be"),
                       (dict(seed=2**70), "`seed` must be"), (dict(seed=-1), "`seed` must be")):
        with pytest.raises(UserError, match=words):
            sample_prior(prior, tmp_path / "bad", **{"seconds": 0.1, **common, **bad})
        assert not (tmp_path / "bad").exists()
    record = sample_prior(prior, tmp_path / "np", seconds=np.float32(0.1), num=np.int64(2), **common)
    assert record["num"] == 2 and json.loads((tmp_path / "np" / "samples.json").read_text())["num"] == 2


def test_the_inference_api_names_careless_arguments(trained_tiny, demo_manifest):
    vq = VQSpeech.load(trained_tiny, "cpu")
    audio, rate = sf.read(read_manifest(demo_manifest)[0].audio, dtype="float32")
    with pytest.raises(UserError, match="too large for 32-bit floats"):
        vq.encode(audio.astype(np.float64) * 1e45, rate)  # finite in float64, infinite once cast
    encoding = vq.encode(audio, rate)
    with pytest.raises(UserError, match="one speaker per code sequence"):
        vq.decode_batch([encoding, encoding], vq.speakers[0])
    with pytest.raises(UserError, match="not a Tensor"):
        vq.decode(encoding, vq.speakers[0], temperature=torch.tensor(1.0))


def test_the_tools_never_replace_their_inputs(tmp_path, demo_manifest, codes):
    probe = tmp_path / "probe.json"
    assert run_cli(["evaluate", "probe", "--codes", codes, "--manifest", demo_manifest, "--out", probe,
                    "--no_abx"]) == 0
    before = probe.read_bytes()
    result = run_tool("phoneme_probe.py", probe, "--out", probe, "--overwrite")
    assert result.returncode == 2 and "should name a .md" in result.stderr and probe.read_bytes() == before
    rows = absolute_rows(demo_manifest)
    manifest = write_lines(tmp_path / "mine" / "manifest.jsonl", rows)
    alignment = Path(rows[0]["alignment"])
    kept = {path: path.read_bytes() for path in (manifest, alignment)}
    for out in (manifest, alignment):
        result = run_tool("compare_alignments.py", manifest, alignment.parent, "--out", out, "--overwrite")
        assert result.returncode == 2 and "should name a .json file" in result.stderr
    assert {path: path.read_bytes() for path in kept} == kept
    result = run_tool("phoneme_probe.py", probe, "--seed", "-1")
    assert result.returncode == 2 and "argument --seed" in result.stderr and "Traceback" not in result.stderr
    crafted = tmp_path / "crafted.json"
    crafted.write_text(json.dumps({"accuracy": 1, "num_frames": 3, "baselines": []}))
    result = run_tool("phoneme_probe.py", crafted)
    assert result.returncode == 2 and "is not a probe result" in result.stderr and "Traceback" not in result.stderr


def test_overwrite_replaces_no_json_that_is_not_a_result(tmp_path, capsys, codes, demo_manifest):
    notes = tmp_path / "notes.json"
    notes.write_text(json.dumps({"my": "notes"}))
    message = cli_error(capsys, ["evaluate", "probe", "--codes", codes, "--manifest", demo_manifest, "--out", notes,
                                 "--no_abx", "--overwrite"], "evaluate probe")
    assert "holds no probe results of vqspeech" in message and json.loads(notes.read_text()) == {"my": "notes"}


@pytest.fixture
def study_tools(monkeypatch):
    """tools/ablate.py and tools/learning_curve.py as modules, whose training fails the test: what they
    refuse must be refused before any training."""
    sys.path.insert(0, str(TOOLS))
    import ablate
    import learning_curve

    def no_training(*args, **kwargs):
        raise AssertionError("trained before earlier results were checked")

    monkeypatch.setattr(ablate, "train_vqvae", no_training)
    monkeypatch.setattr(learning_curve, "train_vqvae", no_training)
    return ablate, learning_curve


def test_the_study_tools_refuse_earlier_results_of_other_settings(tmp_path, capsys, demo_manifest, study_tools):
    ablate, learning_curve = study_tools
    out = tmp_path / "ablation"
    out.mkdir()
    other = write_lines(tmp_path / "other.jsonl", absolute_rows(demo_manifest)[1:])
    args = ["--manifest", str(demo_manifest), "--out_dir", str(out), "--variants", "jitter", "--minutes", "1"]
    earlier_args = argparse.Namespace(manifest=str(other), minutes=1.0, model="small", units_share=0.5,
                                      max_steps=100_000, num_eval=20, probe_split="test", overrides=[])
    row = {"variant": "baseline", "settings": ablate.run_settings(earlier_args, *ablate.ABLATION_SETTINGS)}
    (out / "ablation.json").write_text(json.dumps([row]))
    assert ablate.main(args) == 2
    assert "holds the row 'baseline' made with other settings (manifest" in capsys.readouterr().err
    (out / "ablation.json").write_text(json.dumps([{"variant": "baseline"}]))
    assert ablate.main(args) == 2
    assert "records no settings" in capsys.readouterr().err
    curve = tmp_path / "curve"
    point = curve / "single" / "6min" / "score.json"
    point.parent.mkdir(parents=True)
    point.write_text(json.dumps({"config": "single", "minutes": 6.0}))
    assert learning_curve.main(["--manifest", str(demo_manifest), "--out_dir", str(curve), "--configs", "single",
                                "--minutes", "6"]) == 2
    assert "was scored with other settings" in capsys.readouterr().err
    assert learning_curve.main(["--manifest", str(demo_manifest), "--out_dir", str(curve), "--minutes", ""]) == 2
    assert "--minutes takes distinct positive finite numbers" in capsys.readouterr().err


# --- twenty-fourth pass (the recipes, the report) ----------------------------------------------


def test_the_report_names_results_of_another_model_state_other_data_or_a_model_gone(tmp_path, trained_tiny,
                                                                                   demo_manifest):
    exp = tmp_path / "exp"
    shutil.copytree(trained_tiny, exp)
    for stale in ("probe", "codes", "prior", "convert", "eval_convert", "metrics.json", "report.html"):
        shutil.rmtree(exp / stale, ignore_errors=True)
        (exp / stale).unlink(missing_ok=True)
    assert run_cli(["evaluate", "loss", exp, "--out", exp / "metrics.json", "--max_utterances", "1"]) == 0
    assert run_cli(["report", exp]) == 0
    page = (exp / "report.html").read_text()
    assert "another state of the model" not in page and "on other data" not in page
    again = tmp_path / "again"  # the same model trained again to the same step, with another seed
    assert run_cli(["train", again, *FAST_TRAIN, f"data.manifest={demo_manifest}", "train.max_steps=30",
                    "train.lr=1e-2", "train.warmup_steps=5", "train.schedule=constant", "seed=7"]) == 0
    assert torch.load(again / "checkpoints" / "last.pt", weights_only=True)["step"] == 30
    shutil.copyfile(again / "checkpoints" / "last.pt", exp / "checkpoints" / "last.pt")
    assert run_cli(["report", exp, "--overwrite"]) == 0
    assert "These metrics were measured by another state of the model" in (exp / "report.html").read_text()
    rows = absolute_rows(demo_manifest)
    dropped = next(i for i, row in enumerate(rows) if row["split"] == "train")
    other = write_lines(tmp_path / "other.jsonl", rows[:dropped] + rows[dropped + 1:])  # other data
    assert run_cli(["evaluate", "loss", exp, "--manifest", other, "--out", exp / "metrics.json", "--overwrite",
                    "--max_utterances", "1"]) == 0
    assert run_cli(["report", exp, "--overwrite"]) == 0
    page = (exp / "report.html").read_text()
    assert "These metrics were measured on other data" in page and "other.jsonl" in page
    shutil.rmtree(exp / "checkpoints")
    assert run_cli(["report", exp, "--overwrite"]) == 0
    assert "These metrics were measured by a model that is not in" in (exp / "report.html").read_text()


# --- twenty-sixth pass (preparation and alignment) ----------------------------------------------


def test_a_transcript_that_is_a_pipe_a_device_or_not_utf8_leaves_its_utterance_without_text(tmp_path):
    from corpus_builders import make_fsdd_corpus

    corpus = tmp_path / "corpus"
    fsdd = make_fsdd_corpus(tmp_path / "fsdd", speakers=("alice", "bob"), digits=range(2), takes=2)
    for wav in sorted(Path(fsdd["corpus_dir"]).glob("*.wav")):
        speaker = wav.stem.split("_")[1]
        (corpus / speaker).mkdir(parents=True, exist_ok=True)
        shutil.copyfile(wav, corpus / speaker / wav.name)
        (corpus / speaker / f"{wav.stem}.txt").write_text("\ufeffzero\r\n", encoding="utf-8")
    first, second, third = sorted((corpus / "alice").glob("*.txt"))[:3]
    first.unlink()
    os.mkfifo(first)  # reading it would block for ever
    second.unlink()
    os.symlink("/dev/zero", second)  # reading it would never end
    third.write_bytes(b"caf\xe9")  # Latin-1
    with pytest.warns(UserWarning) as caught:
        summary = prepare_corpus(corpus, tmp_path / "out", "folder", sample_rate=8000, num_workers=0, progress=False)
    said = " ".join(str(w.message) for w in caught)
    assert "is not a regular file" in said and "is not UTF-8 text" in said
    texts = {u.id: u.text for u in read_manifest(tmp_path / "out")}
    assert summary.num_utterances == 8
    assert [texts[f"alice_{p.stem}"] for p in (first, second, third)] == [None, None, None]
    assert all(t == "zero" for i, t in texts.items() if t is not None) and list(texts.values()).count("zero") == 5


def test_a_transcript_table_with_a_byte_order_mark_keeps_its_first_line(tmp_path):
    from corpus_builders import make_librispeech_corpus

    corpus = make_librispeech_corpus(tmp_path / "ls", speakers=("103",), utts_per_chapter=5)
    for table in (tmp_path / "ls").rglob("*.trans.txt"):
        table.write_bytes(b"\xef\xbb\xbf" + table.read_bytes().replace(b"\n", b"\r\n"))
    utts, _ = find_utterances(tmp_path / "ls" / "LibriSpeech", "librispeech")
    texts = {u.id: u.text for u in utts}
    assert corpus["texts"] and all(texts.get(i) for i in corpus["texts"])


def test_timit_split_folders_only_count_in_the_ldc_layout(tmp_path):
    from test_timit import make_ldc_timit, write_timit_utterance

    sample = tmp_path / "test"  # the user's folder happens to be called test
    for speaker, utts in (("dr1-fvmh0", ("sa1", "sx206")), ("dr3-madc0", ("sa1",))):
        for utt in utts:
            write_timit_utterance(sample / speaker, utt, upper=False)
    utts, _ = find_utterances(sample, "timit")
    assert all(u.split is None for u in utts)
    root = make_ldc_timit(tmp_path / "TIMIT")
    with pytest.warns(UserWarning, match="No utterance of .* is in the train split"):
        prepare_corpus(root / "TEST", tmp_path / "test_only", "timit", num_workers=0, progress=False)
    with pytest.warns(UserWarning, match="fixes its own test split, so test_fraction=0 is not used"):
        prepare_corpus(root, tmp_path / "all", "timit", test_fraction=0.0, num_workers=0, progress=False)


def test_prepare_and_align_keep_the_manifests_alignments_those_of_its_words_and_audio(tmp_path):
    from corpus_builders import make_fsdd_corpus

    corpus = make_fsdd_corpus(tmp_path / "fsdd", speakers=("alice", "bob"), digits=range(3), takes=1)["corpus_dir"]
    folder = tmp_path / "corpus"
    for wav in sorted(Path(corpus).glob("*.wav")):
        digit, speaker, _ = wav.stem.split("_")
        (folder / speaker).mkdir(parents=True, exist_ok=True)
        shutil.copyfile(wav, folder / speaker / f"u{digit}.wav")
        (folder / speaker / f"u{digit}.txt").write_text(["zero", "one", "two"][int(digit)])
    prepared, first, second = tmp_path / "prepared", tmp_path / "al1", tmp_path / "al2"
    prepare_corpus(folder, prepared, "folder", sample_rate=8000, num_workers=0, progress=False)
    align_corpus(folder, first, "folder", manifest=prepared, num_workers=1, progress=False)
    assert all(u.alignment and "al1" in u.alignment for u in read_manifest(prepared))
    (folder / "alice" / "u0.txt").write_text("seven")  # the words changed: the alignment is of the old ones
    prepare_corpus(folder, prepared, "folder", sample_rate=8000, num_workers=0, progress=False)
    lines = {u.id: u for u in read_manifest(prepared)}
    assert lines["alice_u0"].alignment is None and lines["alice_u0"].text == "seven"
    assert lines["bob_u0"].alignment is not None
    align_corpus(folder, second, "folder", manifest=prepared, num_workers=1, progress=False)
    pointed = [u.alignment for u in read_manifest(prepared) if u.id != "alice_u0"]  # ("seven" may not align)
    assert all(a and "al2" in a for a in pointed)  # not a mix of two runs
    (folder / "alice" / "u1.txt").write_text("xqzvvk qqq")  # fails to align: its old TextGrid is deleted
    prepare_corpus(folder, prepared, "folder", sample_rate=8000, num_workers=0, progress=False)
    align_corpus(folder, second, "folder", manifest=prepared, num_workers=1, progress=False)
    lines = {u.id: u for u in read_manifest(prepared)}
    assert not (second / "alice_u1.TextGrid").exists() and lines["alice_u1"].alignment is None
    other = tmp_path / "other"  # the same ids, other recordings
    shutil.copytree(folder, other)
    for wav in other.rglob("*.wav"):
        sf.write(wav, np.concatenate([sf.read(wav)[0], np.zeros(4000)]), 8000)
    with pytest.raises(UserError, match="the manifest was prepared from other recordings"):
        align_corpus(other, tmp_path / "al3", "folder", manifest=prepared, num_workers=1, progress=False)


def test_a_killed_alignment_run_is_continued_not_redone(tmp_path, monkeypatch):
    from corpus_builders import make_fsdd_corpus
    from vqspeech.data import align as align_module

    corpus = make_fsdd_corpus(tmp_path / "fsdd", speakers=("alice",), digits=range(4), takes=1)["root"]
    real, calls = align_module._align_item, []

    def killed_at_the_third(job):
        calls.append(job)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(job)

    monkeypatch.setattr(align_module, "_align_item", killed_at_the_third)
    with pytest.raises(KeyboardInterrupt):
        align_corpus(corpus, tmp_path / "al", "fsdd", num_workers=1, progress=False)
    monkeypatch.setattr(align_module, "_align_item", real)
    again = align_corpus(corpus, tmp_path / "al", "fsdd", num_workers=1, progress=False)
    assert again.reused == 2 and again.total == 4 and not (tmp_path / "al" / ".align-progress.jsonl").exists()


def test_small_mistakes_of_the_twenty_sixth_pass_get_one_clear_sentence(tmp_path, codes, demo_manifest):
    from corpus_builders import make_fsdd_corpus, make_vctk_corpus
    from vqspeech.eval.frames import aligned_utterances

    vctk = make_vctk_corpus(tmp_path / "vctk", version="0.80")
    with pytest.raises(UserError, match="VCTK 0.80 .* has one recording of each utterance"):
        find_utterances(vctk["root"], "vctk", mic="mic2")
    fsdd = make_fsdd_corpus(tmp_path / "fsdd", speakers=("alice", "bob"), digits=range(2), takes=2)
    recordings = Path(fsdd["corpus_dir"])
    first = sorted(recordings.glob("*_alice_*.wav"))[0]
    twin = first.with_name(first.name.replace("alice", "Alice"))
    shutil.copyfile(first, twin)
    utts, rejects = find_utterances(fsdd["root"], "fsdd")
    assert any("only in case" in reason for _, reason in rejects)
    twin.unlink()
    for wav in recordings.glob("*_bob_*.wav"):
        sf.write(wav, np.zeros(4000), 8000)  # silent: every file of bob is rejected
    with pytest.raises(UserError, match="Every file of the speakers not held out .*bob.* was rejected"):
        prepare_corpus(fsdd["root"], tmp_path / "held", "fsdd", split_by="speaker", heldout_speakers=["alice"],
                       sample_rate=8000, num_workers=0, progress=False)
    folder = tmp_path / "alignments"
    folder.mkdir()
    one = read_manifest(demo_manifest)[0]
    shutil.copyfile(one.alignment, folder / f"{one.id}.TextGrid")
    (folder / f"{one.id}.lab").write_text("0.5 125 sil\n")
    with pytest.raises(UserError, match="holds two alignments of"):
        aligned_utterances(alignments=folder)


# --- twenty-seventh pass (configuration and the model verbs) -----------------------------------


def test_a_voice_named_as_a_known_speaker_is_refused(tmp_path, capsys, trained_tiny, demo_manifest):
    speaker = VQSpeech.load(trained_tiny, "cpu").speakers[0]
    voice = read_manifest(demo_manifest)[-1].audio
    message = cli_error(capsys, ["evaluate", "conversion", trained_tiny, "--out", tmp_path / "ev", "--targets", speaker,
                                 "--voice", f"{speaker}={voice}"], "evaluate conversion")
    assert f"The voice name {speaker!r} is a speaker the model" in message and not (tmp_path / "ev").exists()


def test_audio_below_the_models_rate_is_refused_by_evaluations_and_named_by_inference(tmp_path, capsys, trained_tiny,
                                                                                   demo_manifest):
    rows = absolute_rows(demo_manifest)
    low = tmp_path / "low"
    low.mkdir()
    for row in rows:
        audio, rate = sf.read(row["audio"], dtype="float32")
        path = low / f"{row['id']}.wav"
        sf.write(path, audio[::2], rate // 2)
        row.update(audio=str(path), sample_rate=rate // 2, duration=len(audio[::2]) / (rate // 2))
        row.pop("alignment", None)
    manifest = write_lines(tmp_path / "low.jsonl", rows)
    message = cli_error(capsys, ["evaluate", "loss", trained_tiny, "--manifest", manifest], "evaluate loss")
    assert "below the model's 8000 Hz, so its scores would be of upsampled audio" in message
    message = cli_error(capsys, ["evaluate", "conversion", trained_tiny, "--manifest", manifest, "--out",
                                 tmp_path / "ev"], "evaluate conversion")
    assert "below the model's 8000 Hz" in message
    audio, rate = sf.read(rows[0]["audio"], dtype="float32")
    with pytest.warns(UserWarning, match="Audio at 4000 Hz is below the model's 8000 Hz"):
        VQSpeech.load(trained_tiny, "cpu").encode(audio, rate)


def test_override_syntax_hydra_has_but_vqspeech_does_not_take_is_named(tmp_path, capsys, demo_manifest):
    for override, words in (("~device=auto", "deletes a setting, which vqspeech does not support"),
                            ("~data.manifest", "set it instead: data.manifest=VALUE"),
                            (f"data.manifest={tmp_path}/ü/m.jsonl", "quote the value, as key='value'"),
                            ("train.max_steps=99999999999999999999999", "train.max_steps")):
        message = cli_error(capsys, ["train", tmp_path / "exp", *FAST_TRAIN, f"data.manifest={demo_manifest}",
                                     override], "train")
        assert words in message, message
    assert not (tmp_path / "exp").exists()


def test_a_run_that_cannot_learn_is_named(tmp_path, capsys, demo_manifest):
    common = ["train", tmp_path / "a", *FAST_TRAIN, f"data.manifest={demo_manifest}", "train.max_steps=2"]
    capsys.readouterr()
    assert run_cli([*common, "train.warmup_steps=100"]) == 0
    assert "so the learning rate never reaches train.lr" in capsys.readouterr().err
    assert run_cli(["train", tmp_path / "b", *FAST_TRAIN, f"data.manifest={demo_manifest}",
                    "train.max_minutes=1e-9"]) == 0
    assert "ended the run before its first step" in capsys.readouterr().err


def test_a_closed_pipe_ends_a_verb_quietly(trained_tiny):
    proc = subprocess.Popen([sys.executable, "-m", "vqspeech.cli", "speakers", str(trained_tiny)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.close()  # as `| head -0` does
    assert proc.wait(timeout=120) == 141 and proc.stderr.read() == b""


def test_a_reference_that_is_a_constant_level_or_cancelling_channels_is_named(tmp_path, demo_manifest):
    from vqspeech.data.reference import load_reference

    dc = tmp_path / "dc.wav"
    sf.write(dc, np.full(24000, 0.5), 8000)
    with pytest.raises(UserError, match="is silent"):
        load_reference([dc], 8000)
    speech, rate = sf.read(read_manifest(demo_manifest)[0].audio, dtype="float32")
    stereo = tmp_path / "stereo.wav"
    sf.write(stereo, np.stack([speech, -speech], 1), rate)
    with pytest.raises(UserError, match="channels that cancel out when mixed to mono"):
        load_reference([stereo], 8000, min_seconds=0.1)


def test_export_overwrite_replaces_only_an_export(tmp_path, capsys, trained_tiny):
    mine = tmp_path / "mine.pt"
    mine.write_text("precious")
    state = tmp_path / "state.pt"
    shutil.copyfile(trained_tiny / "checkpoints" / "last.pt", state)
    for path in (mine, state):
        before = path.read_bytes()
        message = cli_error(capsys, ["export", trained_tiny, path, "--overwrite"], "export")
        assert "is not an export of vqspeech" in message and path.read_bytes() == before
    export = tmp_path / "model.pt"
    assert run_cli(["export", trained_tiny, export]) == 0
    assert run_cli(["export", trained_tiny, export, "--overwrite"]) == 0


# --- twenty-eighth pass (interactions over time) ----------------------------------------------


def test_audio_replaced_by_audio_of_the_same_length_is_other_data_and_an_alignment_is_not(tmp_path, trained_tiny,
                                                                                      demo_manifest, capsys):
    data = tmp_path / "data"
    rows = absolute_rows(demo_manifest)
    (data / "wavs").mkdir(parents=True)
    for row in rows:
        shutil.copyfile(row["audio"], data / "wavs" / Path(row["audio"]).name)
        row["audio"] = str(data / "wavs" / Path(row["audio"]).name)
    manifest = write_lines(data / "manifest.jsonl", rows)
    exp = tmp_path / "exp"
    assert run_cli(["train", exp, *FAST_TRAIN, f"data.manifest={manifest}", "train.max_steps=2"]) == 0
    assert run_cli(["evaluate", "loss", exp, "--out", exp / "metrics.json", "--max_utterances", "1"]) == 0
    with manifest.open() as f:  # what `align --manifest` adds: no change to the data
        lines = [json.loads(line) for line in f]
    lines[0]["alignment"] = str(Path(absolute_rows(demo_manifest)[0]["alignment"]))
    write_lines(manifest, lines)
    assert run_cli(["report", exp]) == 0
    assert "on other data" not in (exp / "report.html").read_text()
    for row in rows:  # the same lengths, other audio (re-recorded, denoised: here reversed)
        audio, rate = sf.read(row["audio"], dtype="int16")
        sf.write(row["audio"], audio[::-1].copy(), rate, subtype="PCM_16")
    assert run_cli(["report", exp, "--overwrite"]) == 0
    assert "These metrics were measured on other data" in (exp / "report.html").read_text()
    message = cli_error(capsys, ["train", exp, "train.max_steps=4"], "train")
    assert "was trained on other data than it is given now" in message


def test_a_failure_reading_the_data_keeps_the_steps_trained(tmp_path, monkeypatch, capsys, demo_manifest):
    from vqspeech.training import vqvae_task

    real = vqvae_task.VQVAETask.batches

    def failing_after_three(self, start_step, rank, device):
        for i, batch in enumerate(real(self, start_step, rank, device)):
            if i == 3:
                raise UserError("Cannot read a file listed in the manifest (it was prepared again meanwhile).")
            yield batch

    monkeypatch.setattr(vqvae_task.VQVAETask, "batches", failing_after_three)
    exp = tmp_path / "exp"
    message = cli_error(capsys, ["train", exp, *FAST_TRAIN, f"data.manifest={demo_manifest}", "train.max_steps=50",
                                 "train.warmup_steps=2"],
                        "train")
    assert "Cannot read a file" in message
    assert torch.load(exp / "checkpoints" / "last.pt", weights_only=True)["step"] == 3


def test_a_prior_is_not_trained_on_codes_of_an_earlier_codebook(tmp_path, capsys, trained_tiny, demo_manifest):
    exp = tmp_path / "exp"
    shutil.copytree(trained_tiny, exp)
    shutil.rmtree(exp / "prior", ignore_errors=True)
    assert run_cli(["encode", exp, demo_manifest, tmp_path / "codes"]) == 0
    assert run_cli(["train", exp, "train.max_steps=34"]) == 0  # the codebook moves on
    message = cli_error(capsys, ["prior", "train", tmp_path / "prior", *PRIOR, f"data.codes={tmp_path / 'codes'}",
                                 "train.max_steps=2"], "prior train")
    assert "were encoded by an earlier state of" in message and not (tmp_path / "prior").exists()


# --- twenty-ninth pass (a prepared corpus is not rewritten under its readers) ----------------------


def prepared_corpus(tmp_path: Path, demo_manifest: Path) -> Path:
    """A prepared copy of part of the demo corpus; its manifest's path."""
    corpus = small_corpus(tmp_path / "corpus", demo_manifest, n=12)
    out = tmp_path / "prepared"
    assert run_cli(["prepare", corpus, out, "--layout", "folder", "--sample_rate", "8000", "--num_workers", "0"]) == 0
    return out / "manifest.jsonl"


@pytest.mark.parametrize("named", ["manifest", "folder", "absolute link"])
def test_prepare_refuses_a_corpus_that_a_training_reads(tmp_path, capsys, monkeypatch, demo_manifest, named):
    from vqspeech.training import vqvae_task

    manifest = prepared_corpus(tmp_path, demo_manifest)
    given = {"manifest": manifest, "folder": manifest.parent, "absolute link": tmp_path / "links" / "m.jsonl"}[named]
    if named == "absolute link":
        given.parent.mkdir()
        given.symlink_to(manifest.resolve())
    before = {p: p.read_bytes() for p in files_under(manifest.parent)}
    real = vqvae_task.VQVAETask.batches
    seen = {}

    def prepare_again_during_training(self, start_step, rank, device):
        for i, batch in enumerate(real(self, start_step, rank, device)):
            if i == 2:
                capsys.readouterr()
                seen["code"] = run_cli(["prepare", tmp_path / "corpus", manifest.parent, "--layout", "folder",
                                        "--sample_rate", "16000", "--num_workers", "0", "--overwrite"])
                seen["err"] = capsys.readouterr().err
            yield batch

    monkeypatch.setattr(vqvae_task.VQVAETask, "batches", prepare_again_during_training)
    exp = tmp_path / "exp"
    assert run_cli(["train", exp, *FAST_TRAIN, f"data.manifest={given}", "train.max_steps=4",
                    "train.warmup_steps=2"]) == 0
    assert seen["code"] == 2
    assert f"{manifest.parent} is being read by `vqspeech train` (process {os.getpid()}" in seen["err"]
    assert {p: p.read_bytes() for p in files_under(manifest.parent)} == before  # nothing rewritten
    assert torch.load(exp / "checkpoints" / "last.pt", weights_only=True)["step"] == 4
    assert not (manifest.parent / ".vqspeech-readers").exists()  # the training's entry left with it
    monkeypatch.setattr(vqvae_task.VQVAETask, "batches", real)
    assert run_cli(["prepare", tmp_path / "corpus", manifest.parent, "--layout", "folder", "--sample_rate", "16000",
                    "--num_workers", "0", "--overwrite"]) == 0


def test_readers_refuse_a_corpus_being_prepared(tmp_path, capsys, demo_manifest, trained_tiny, sleeper):
    manifest = prepared_corpus(tmp_path, demo_manifest)
    hold_lock(manifest.parent, sleeper.pid, verb="prepare")
    for command in (["encode", trained_tiny, manifest, tmp_path / "codes"],
                    ["train", tmp_path / "exp", *FAST_TRAIN, f"data.manifest={manifest}", "train.max_steps=2"],
                    ["baseline", "mfcc-kmeans", manifest, tmp_path / "base", "--num_codes", "4"]):
        message = cli_error(capsys, command, command[0])
        assert f"{manifest.parent} is being rewritten by `vqspeech prepare` (process {sleeper.pid}" in message
        assert not (tmp_path / "codes").exists() and not (tmp_path / "exp").exists()
    assert not (manifest.parent / ".vqspeech-readers").exists()


def test_a_killed_readers_entry_does_not_block_prepare(tmp_path, demo_manifest):
    manifest = prepared_corpus(tmp_path, demo_manifest)
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    entry = manifest.parent / ".vqspeech-readers" / f"{gone.stdout.strip()}-0.json"
    entry.parent.mkdir()
    entry.write_text(json.dumps({"pid": int(gone.stdout), "host": socket.gethostname(), "verb": "train",
                                 "started": time.time(), "process_start": None}))
    assert run_cli(["prepare", tmp_path / "corpus", manifest.parent, "--layout", "folder", "--sample_rate", "16000",
                    "--num_workers", "0", "--overwrite"]) == 0
    assert not entry.parent.exists()


@pytest.mark.parametrize("kind", ["file", "link"])
def test_a_readers_folder_that_is_not_a_folder_is_refused_by_both_sides(tmp_path, capsys, demo_manifest, kind):
    manifest = prepared_corpus(tmp_path, demo_manifest)
    readers = manifest.parent / ".vqspeech-readers"
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    readers.write_text("x") if kind == "file" else readers.symlink_to(elsewhere)
    for command in (["train", tmp_path / "exp", *FAST_TRAIN, f"data.manifest={manifest}", "train.max_steps=2"],
                    ["prepare", tmp_path / "corpus", manifest.parent, "--layout", "folder", "--sample_rate", "16000",
                     "--num_workers", "0", "--overwrite"]):
        message = cli_error(capsys, command, command[0])
        assert f"{readers} is not a folder of vqspeech's" in message
    assert not any(elsewhere.iterdir()) and not (tmp_path / "exp").exists()
    assert all(sf.info(u.audio).samplerate == 8000 for u in read_manifest(manifest))


def test_a_readers_entry_of_another_machine_names_the_file_to_delete(tmp_path, capsys, demo_manifest):
    manifest = prepared_corpus(tmp_path, demo_manifest)
    entry = manifest.parent / ".vqspeech-readers" / "4242-beef.json"
    entry.parent.mkdir()
    entry.write_text(json.dumps({"pid": 4242, "host": "another-machine", "verb": "train", "started": time.time(),
                                 "process_start": None}))
    message = cli_error(capsys, ["prepare", tmp_path / "corpus", manifest.parent, "--layout", "folder",
                                 "--num_workers", "0", "--overwrite"], "prepare")
    assert "process 4242 on another-machine" in message and f"delete {entry} if that process no longer runs" in message


def test_an_interrupt_during_the_final_validation_keeps_the_steps(tmp_path, monkeypatch, demo_manifest):
    from vqspeech.training import vqvae_task

    def interrupted_at_the_end(self, model, device):  # valid_every is past the run: only the final one runs
        raise KeyboardInterrupt  # Ctrl-C (or the CLI's SIGTERM) while the last validation runs

    monkeypatch.setattr(vqvae_task.VQVAETask, "validate", interrupted_at_the_end)
    exp = tmp_path / "exp"
    assert run_cli(["train", exp, *FAST_TRAIN, f"data.manifest={demo_manifest}", "train.max_steps=6",
                    "train.warmup_steps=2", "train.valid_every=1000", "train.checkpoint_every=1000"]) == 130
    assert torch.load(exp / "checkpoints" / "last.pt", weights_only=True)["step"] == 6


# --- thirtieth pass (the runtime environment: the C kernel's cache, the compiler, launch variables) ----


def build_kernel_in(cache: Path, **env: str) -> subprocess.CompletedProcess:
    """Build and load the C kernel in a fresh process with VQSPEECH_CACHE=cache (a damaged library
    loaded in this process would take the test run down with it)."""
    code = "from vqspeech.inference.fast_generate import load_kernel; load_kernel(); print('loaded')"
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "VQSPEECH_CACHE": str(cache), **env})


def test_a_damaged_cached_kernel_is_built_again(tmp_path):
    cache = tmp_path / "cache"
    assert build_kernel_in(cache).stdout.strip() == "loaded"
    [library] = cache.glob("wavenet_step_*.so")
    whole = library.read_bytes()
    library.write_bytes(whole[:5000])  # truncated (a full disk, a killed copy): dlopen of it was a bus error
    result = build_kernel_in(cache)
    assert result.returncode == 0 and result.stdout.strip() == "loaded", result.stderr
    assert library.stat().st_size == len(whole)
    assert not [p for p in cache.iterdir() if p.name.startswith(".")]  # no temporary file left


@pytest.mark.parametrize("case", ["cache is a file", "cache is a dangling link", "CC is not a compiler"])
def test_an_unusable_cache_or_compiler_falls_back_with_one_warning(tmp_path, monkeypatch, trained_tiny, case):
    from vqspeech.inference import fast_generate

    cache = tmp_path / "cache"
    if case == "cache is a file":
        cache.write_text("x")
    elif case == "cache is a dangling link":
        cache.symlink_to(tmp_path / "nowhere")
    else:
        monkeypatch.setenv("CC", str(tmp_path))  # a folder: OSError, as a missing program
    monkeypatch.setenv("VQSPEECH_CACHE", str(cache))
    monkeypatch.setattr(fast_generate, "_library", None)
    with pytest.raises(UserError, match="VQSPEECH_CACHE and CC"):
        fast_generate.load_kernel()
    vq = VQSpeech.load(trained_tiny, "cpu")
    codes = np.zeros(8, dtype=np.int64)
    with pytest.warns(UserWarning, match="Using the slower reference generator"):
        audio = vq.decode(codes, vq.speakers[0])
    assert audio.shape == (8 * vq.hop_length,) and np.isfinite(audio).all()
    assert vq.waveform_generator == "reference"  # what a speed measured with it must say (tools/ablate.py)
    monkeypatch.undo()
    assert VQSpeech.load(trained_tiny, "cpu").waveform_generator == "C kernel"


def test_the_cache_variable_is_expanded_and_made_absolute(tmp_path, monkeypatch):
    from vqspeech.inference.fast_generate import _cache_dir

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("VQSPEECH_CACHE", "relative/cache")
    assert _cache_dir() == tmp_path / "relative" / "cache"
    monkeypatch.setenv("VQSPEECH_CACHE", "~/vqc")
    assert _cache_dir() == Path.home() / "vqc"
    monkeypatch.setenv("VQSPEECH_CACHE", "")  # empty: unset, not the working folder
    assert _cache_dir() == Path.home() / ".cache" / "vqspeech"


def test_a_compiler_given_with_flags_builds(tmp_path):
    result = build_kernel_in(tmp_path / "cache", CC="cc -O1")
    assert result.returncode == 0 and result.stdout.strip() == "loaded", result.stderr


def test_a_decoder_too_wide_for_the_fast_generator_is_told_before_generating():
    from vqspeech.inference.fast_generate import FastWaveNet
    from vqspeech.models.wavenet import WaveNetDecoder

    decoder = WaveNetDecoder(residual_channels=260, gate_channels=32, skip_channels=16, kernel_size=16, layers=2,
                             cycles=1, local_channels=8, global_channels=8, num_speakers=2, latent_dim=8,
                             hop_length=80)
    with pytest.raises(UserError, match="too wide for the fast generator"):
        FastWaveNet(decoder)


@pytest.mark.parametrize("env,words", [
    ({"WORLD_SIZE": "abc"}, "WORLD_SIZE='abc' is not a whole number"),
    ({"WORLD_SIZE": "2"}, "WORLD_SIZE=2 is set but RANK, MASTER_ADDR, MASTER_PORT is not"),
    ({"WORLD_SIZE": "2", "RANK": "x1", "MASTER_ADDR": "localhost", "MASTER_PORT": "29999"}, "RANK='x1'"),
])
def test_launch_variables_left_in_the_shell_are_one_sentence(tmp_path, capsys, monkeypatch, demo_manifest, env, words):
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    message = cli_error(capsys, ["train", tmp_path / "exp", *FAST_TRAIN, f"data.manifest={demo_manifest}",
                                 "train.max_steps=2"], "train")
    assert words in message and not (tmp_path / "exp").exists()


def test_a_rank_without_a_world_prints_the_results(tmp_path, capsys, monkeypatch, demo_manifest):
    monkeypatch.setenv("RANK", "1")  # left over in the shell; one process trains, and says what it got
    capsys.readouterr()
    assert run_cli(["train", tmp_path / "exp", *FAST_TRAIN, f"data.manifest={demo_manifest}", "train.max_steps=2",
                    "train.warmup_steps=1"]) == 0
    assert "valid_" in capsys.readouterr().out


def test_the_benchmarks_load_ends_with_the_benchmark(tmp_path):
    bench = subprocess.Popen([sys.executable, str(TOOLS / "bench_train.py"), "--model", "tiny", "--load", "1",
                              "--steps", "100000", "--threads", "1"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.time() + 120
    spinners = []
    while time.time() < deadline and not spinners:
        time.sleep(0.5)
        spinners = [pid for pid in map(int, filter(str.isdigit, os.listdir("/proc")))
                    if _parent_of(pid) == bench.pid]
    assert spinners, "the benchmark started no load"
    bench.kill()  # SIGKILL: no cleanup runs in the benchmark
    bench.wait()
    deadline = time.time() + 10
    while time.time() < deadline and any(_spins(pid) for pid in spinners):
        time.sleep(0.2)
    left = [pid for pid in spinners if _spins(pid)]
    for pid in left:  # never leave a busy loop behind, even when the test fails
        os.kill(pid, 9)
    assert not left


def _spins(pid: int) -> bool:
    """Whether process ``pid`` still runs the benchmark's load (a zombie has an empty command line)."""
    try:
        return b"while" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


def _parent_of(pid: int) -> int:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, ValueError, IndexError):
        return 0


# --- thirty-first pass (standard output and error: closed, full) ----------------------------------

needs_dev_full = pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full")


def vqspeech_in_shell(arguments: list, redirections: str) -> subprocess.CompletedProcess:
    """`vqspeech ARGUMENTS REDIRECTIONS` in bash: what a shell user's `>&-` or `> /dev/full` does."""
    import shlex

    words = " ".join(shlex.quote(str(a)) for a in [sys.executable, "-m", "vqspeech.cli", *arguments])
    return subprocess.run(["bash", "-c", f"{words} {redirections}"], capture_output=True, text=True, timeout=600,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})


@needs_dev_full
def test_a_full_standard_output_is_named_in_one_sentence(trained_tiny):
    result = vqspeech_in_shell(["speakers", trained_tiny], "> /dev/full")
    assert result.returncode == 2
    assert result.stderr.splitlines() == [  # was: "No space left on device; check the path, its permissions ..."
        "vqspeech speakers: error: could not write to standard output (No space left on device); send it to a file "
        "or device that takes it."]


def test_closed_standard_streams(trained_tiny, tmp_path):
    result = vqspeech_in_shell(["speakers", trained_tiny], ">&-")
    assert (result.returncode, result.stderr) == (0, "")  # was a traceback: 'NoneType' object has no attribute
    result = vqspeech_in_shell(["speakers", tmp_path / "nowhere"], "2>&-")
    assert (result.returncode, result.stdout) == (2, "")  # the error no longer lands in the standard output


@pytest.mark.parametrize("redirections", [pytest.param("2>/dev/full", marks=needs_dev_full), ">&- 2>&-"])
def test_training_ends_whatever_becomes_of_its_progress_bar(tmp_path, demo_manifest, redirections):
    """A full or closed standard error loses the progress bar, not the training (tqdm's failed write
    ended it)."""
    exp = tmp_path / "exp"
    result = vqspeech_in_shell(["train", exp, *FAST_TRAIN, f"data.manifest={demo_manifest}", "train.max_steps=3"],
                               redirections)
    assert result.returncode == 0
    assert torch.load(exp / "checkpoints" / "last.pt", weights_only=True)["step"] == 3


def test_an_experiment_moved_during_training_is_one_sentence(tmp_path, demo_manifest):
    """The folder renamed under a running training: one sentence at the next step (it was
    TensorBoard's traceback from its writer thread), and once put back the command runs again."""
    exp, moved = tmp_path / "exp", tmp_path / "moved"
    command = ["train", exp, *FAST_TRAIN, f"data.manifest={demo_manifest}"]
    run = subprocess.Popen(
        [sys.executable, "-m", "vqspeech.cli", *map(str, command), "train.max_steps=100000", "train.max_minutes=3"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    try:
        deadline = time.time() + 180
        while not list((exp / "tb").glob("events.out.tfevents.*")) and time.time() < deadline:
            time.sleep(0.2)
        time.sleep(2)  # steps under way
        exp.rename(moved)
        stderr = run.communicate(timeout=180)[1]
    finally:
        run.kill()
    assert run.returncode == 2 and "Traceback" not in stderr, stderr
    assert stderr.splitlines()[-1].startswith(f"vqspeech train: error: {exp} was moved or deleted during training")
    moved.rename(exp)
    assert run_cli([*command, "train.max_steps=3"]) == 0
    assert torch.load(exp / "checkpoints" / "last.pt", weights_only=True)["step"] == 3


def test_a_lock_or_reader_entry_copied_with_its_folder_holds_only_the_original(tmp_path, demo_manifest):
    """`cp -a` of an experiment or a corpus while a verb runs in it copies the verb's lock or reader
    entry; the copy was refused as "in use by process N" as long as that process ran."""
    from vqspeech.fileio import CorpusReader, check_no_readers

    exp, copy = tmp_path / "exp", tmp_path / "copy"
    with FolderLock(exp, "train"):  # this test's process: alive while the copy is used
        shutil.copytree(exp, copy)
        assert (copy / FolderLock.NAME).is_file()
        assert run_cli(["train", copy, *FAST_TRAIN, f"data.manifest={demo_manifest}", "train.max_steps=1"]) == 0
        with pytest.raises(UserError, match="in use by"):
            FolderLock(exp, "train").acquire()
    corpus, corpus_copy = tmp_path / "corpus", tmp_path / "corpus_copy"
    shutil.copytree(demo_manifest.parent, corpus, ignore=NO_READERS)
    with CorpusReader(corpus / "manifest.jsonl", "train"):
        shutil.copytree(corpus, corpus_copy)
        assert list((corpus_copy / CorpusReader.FOLDER).glob("*.json"))
        check_no_readers(corpus_copy, "prepare")  # the copy is read by no one
        assert not (corpus_copy / CorpusReader.FOLDER).exists()
        with pytest.raises(UserError, match="is being read by"):
            check_no_readers(corpus, "prepare")


def test_speakers_of_an_experiment_that_holds_its_codes(tmp_path, capsys, trained_tiny):
    """`vqspeech encode EXP M EXP/codes` is the recipes' layout; `speakers EXP` took EXP for a codes
    folder then and said it held no codes.json."""
    exp = tmp_path / "exp"
    shutil.copytree(trained_tiny, exp, ignore=shutil.ignore_patterns(".vqspeech.lock"))
    (exp / "codes" / "codes").mkdir(parents=True)
    capsys.readouterr()
    assert run_cli(["speakers", exp]) == 0
    assert capsys.readouterr().out.split() == (exp / "speakers.txt").read_text().split()


@needs_dev_full
@pytest.mark.parametrize("body,redirections,status,message", [
    ("print('x' * 100000)", "> /dev/full", 2, "tool: error: could not write to standard output (No space left"),
    ("from tqdm import tqdm; [None for _ in tqdm(range(3))]", "2> /dev/full", 0, None),
    ("raise KeyboardInterrupt", "", 130, "tool: interrupted"),
    ("print('x' * 100000)", "| head -c 10 > /dev/null", 0, None),  # bash's status is head's; no traceback
])
def test_the_tools_end_as_a_verb_does(body, redirections, status, message):
    """tools/ablate.py and tools/learning_curve.py run under `streams.run_tool`: a full standard error
    no longer ends their trainings silently (tqdm's write failed), and Ctrl-C or a failing standard
    output is one line, not a traceback."""
    import shlex

    code = f"import sys; from vqspeech.streams import run_tool\ndef main():\n    {body}\n    return 0\n" \
           "sys.exit(run_tool('tool', main))"
    result = subprocess.run(["bash", "-c", f"{shlex.quote(sys.executable)} -c {shlex.quote(code)} {redirections}"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == status and "Traceback" not in result.stderr, result.stderr
    if message:
        assert result.stderr.strip().startswith(message)


def test_ablate_checks_its_probe_split_and_test_split_before_training(tmp_path, demo_manifest):
    """Both failed only after every variant had trained, encoded and been probed."""
    out = tmp_path / "ab"
    args = ["--out_dir", out, "--variants", "baseline", "--model", "tiny", "--minutes", "0", "--max_steps", "3",
            "--num_eval", "1"]
    result = run_tool("ablate.py", "--manifest", demo_manifest, *args, "--probe_split", "bogus")
    assert result.returncode == 2 and "--probe_split 'bogus' has no aligned utterance" in result.stderr
    rows = [{**r, "split": "train" if r["split"] == "test" else r["split"]} for r in absolute_rows(demo_manifest)]
    no_test = write_lines(tmp_path / "no_test.jsonl", rows)
    result = run_tool("ablate.py", "--manifest", no_test, *args, "--probe_split", "")
    assert result.returncode == 2 and "has no test utterances" in result.stderr
    assert not (out / "baseline").exists()  # refused before any training


# --- thirty-second pass (probe scope, hand-edited study results) -----------------------------------


def test_the_study_tools_refuse_a_hand_edited_row_before_training(tmp_path, capsys, demo_manifest, study_tools):
    """A row of the right settings but a value of another type used to fail in the table, after every
    new variant or point had trained."""
    ablate, learning_curve = study_tools
    out = tmp_path / "ablation"
    out.mkdir()
    now = argparse.Namespace(manifest=str(demo_manifest), minutes=1.0, model="small", units_share=0.5,
                             max_steps=100_000, num_eval=20, probe_split="test", overrides=[])
    row = {"variant": "baseline", "settings": ablate.run_settings(now, *ablate.ABLATION_SETTINGS), "steps": 40,
           "accuracy": "0.5"}
    (out / "ablation.json").write_text(json.dumps([row]))
    args = ["--manifest", str(demo_manifest), "--out_dir", str(out), "--variants", "jitter", "--minutes", "1"]
    assert ablate.main(args) == 2
    assert "holds a row this tool did not write (accuracy is '0.5')" in capsys.readouterr().err
    (out / "ablation.json").write_text(json.dumps([{**row, "accuracy": 0.5, "steps": 40.5}]))
    assert ablate.main(args) == 2
    assert "(steps is 40.5)" in capsys.readouterr().err

    curve = tmp_path / "curve"
    point = curve / "single" / "6min" / "score.json"
    point.parent.mkdir(parents=True)
    config = {**learning_curve.CONFIGS["single"]}
    settings = learning_curve.point_settings(config, argparse.Namespace(
        manifest=str(demo_manifest), num_eval=20, probe_split="test", overrides=[]))
    point.write_text(json.dumps({"config": "single", "minutes": 6.0, "settings": settings, "mcd": [24.0]}))
    assert learning_curve.main(["--manifest", str(demo_manifest), "--out_dir", str(curve), "--configs", "single",
                                "--minutes", "6"]) == 2
    assert "is not a score this tool wrote (mcd is [24.0])" in capsys.readouterr().err
    assert json.loads(point.read_text())["mcd"] == [24.0]  # refused, not replaced


def test_evaluate_conversion_skips_silent_or_constant_audio_of_a_hand_written_manifest(tmp_path, trained_tiny,
                                                                                        demo_manifest):
    """`prepare` rejects them; a hand-written manifest used to have them scored (similarity, words, MCD)."""
    from vqspeech.eval.conversion import evaluate_conversion

    rows = absolute_rows(demo_manifest)
    tests = [r for r in rows if r["split"] != "train"][:3]  # the demo's test split holds two or three
    for row in tests:
        row["split"] = "test"
    rate = tests[0]["sample_rate"]
    for row, value in zip(tests[1:], (0.0, 0.25), strict=True):  # silence, then a constant (DC) level
        path = tmp_path / f"{row['id']}.wav"
        sf.write(path, np.full(int(rate * row["duration"]), value, dtype=np.float32), rate)
        row["audio"] = str(path)
    manifest = write_lines(tmp_path / "hand.jsonl", [r for r in rows if r["split"] != "test"] + tests)
    assert len(tests) == 3
    metrics = evaluate_conversion(trained_tiny, tmp_path / "ev", manifest=manifest, split="test", num=3,
                                  num_reference=1, progress=False)
    skipped = {s["id"]: s["reason"] for s in metrics["summary"]["skipped"]}
    assert set(skipped) == {tests[1]["id"], tests[2]["id"]}
    assert all(reason.startswith("silent (RMS") and "`prepare` rejects" in reason for reason in skipped.values())
    assert [item["id"] for item in metrics["items"]] == [tests[0]["id"]]


def test_enrolment_refuses_a_source_in_training_and_reads_its_checkpoint_once(tmp_path, capsys, trained_tiny,
                                                                               demo_manifest, sleeper, monkeypatch):
    """An enrolment from an experiment still training recorded one step's fingerprint and another
    step's weights (the checkpoint was read twice, with the fingerprint taken between)."""
    import vqspeech.training.enroll as enroll_module

    exp = tmp_path / "exp"
    shutil.copytree(trained_tiny, exp)
    voice = Path(read_manifest(demo_manifest)[0].audio).parent
    command = ["enroll", exp, "newcomer", voice, "-o", tmp_path / "enrolled", "--steps", "1", "--minutes", "0",
               "--device", "cpu"]
    lock = hold_lock(exp, sleeper.pid)
    message = cli_error(capsys, command, "enroll")
    assert f"{exp} is in use by" in message and str(sleeper.pid) in message
    assert not (tmp_path / "enrolled").exists()
    lock.unlink()

    read = enroll_module.load_checkpoint

    def read_while_a_training_saves(path):
        ckpt = read(path)
        os.utime(path, ns=(time.time_ns(), time.time_ns() + 10**9))  # saved again meanwhile
        return ckpt

    monkeypatch.setattr(enroll_module, "load_checkpoint", read_while_a_training_saves)
    assert "changed while it was read" in cli_error(capsys, command, "enroll")
    monkeypatch.setattr(enroll_module, "load_checkpoint", read)
    assert run_cli(command) == 0
    record = torch.load(tmp_path / "enrolled" / "checkpoints" / "last.pt", weights_only=True)["enrolment"]
    source = exp / "checkpoints" / "last.pt"
    assert record["inputs"][0] == [str(source.resolve()), source.stat().st_size, source.stat().st_mtime_ns]


def test_a_recording_given_twice_through_a_link_or_a_voice_named_twice_is_refused(tmp_path, capsys, trained_tiny,
                                                                                  demo_manifest):
    audio = Path(read_manifest(demo_manifest)[0].audio)
    folder = tmp_path / "refs"
    folder.mkdir()
    shutil.copy(audio, folder / "a.wav")
    (folder / "link.wav").symlink_to(folder / "a.wav")
    message = cli_error(capsys, ["enroll", trained_tiny, "newcomer", folder, "-o", tmp_path / "enrolled",
                                 "--steps", "1", "--device", "cpu"], "enroll")
    assert "is given twice (also as" in message and not (tmp_path / "enrolled").exists()
    (folder / "link.wav").unlink()
    os.link(folder / "a.wav", folder / "hard.wav")  # the same file under a second name
    message = cli_error(capsys, ["enroll", trained_tiny, "newcomer", folder, "-o", tmp_path / "enrolled",
                                 "--steps", "1", "--device", "cpu"], "enroll")
    assert "hard.wav is given twice (also as" in message and not (tmp_path / "enrolled").exists()
    message = cli_error(capsys, ["evaluate", "conversion", trained_tiny, "--out", tmp_path / "ev", "--targets", "v",
                                 "--voice", f"v={audio}", "--voice", f"v={folder / 'a.wav'}"], "evaluate conversion")
    assert "--voice v is given twice" in message and not (tmp_path / "ev").exists()


def test_a_checkout_on_the_python_path_reads_its_own_configs(tmp_path):
    """With an editable install of another checkout, `vqspeech.conf` resolved to that checkout's
    conf/ while the code came from the one on PYTHONPATH: a new key then failed as the user's."""
    import vqspeech
    from vqspeech.config import config_dir

    source = Path(vqspeech.__file__).resolve().parent
    checkout = tmp_path / "checkout"
    shutil.copytree(source, checkout / "vqspeech", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(config_dir(), checkout / "conf", ignore=shutil.ignore_patterns("__pycache__"))
    (checkout / "pyproject.toml").write_text("[project]\nname = 'vqspeech'\n")
    code = "import vqspeech.config as c; print(c.config_dir()); print(c.__file__)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path,
                            env={**os.environ, "PYTHONPATH": str(checkout)}, timeout=120)
    assert result.returncode == 0, result.stderr
    conf, module = result.stdout.split()
    assert Path(module).resolve().parent == (checkout / "vqspeech").resolve()
    assert Path(conf).resolve() == (checkout / "conf").resolve()


def test_an_enrolled_model_says_what_it_is_in_the_report_and_when_its_enrolment_stopped(tmp_path, trained_tiny,
                                                                                       demo_manifest, capsys):
    from vqspeech.checkpoint import load_checkpoint, save_checkpoint
    from vqspeech.eval.report import write_report

    voice = Path(read_manifest(demo_manifest)[0].audio).parent
    first, second = tmp_path / "first", tmp_path / "second"
    assert run_cli(["enroll", trained_tiny, "anna", voice, "-o", first, "--steps", "1", "--device", "cpu"]) == 0
    assert run_cli(["enroll", first, "bert", voice, "-o", second, "--steps", "1", "--device", "cpu"]) == 0
    record = load_checkpoint(second / "checkpoints" / "last.pt")["enrolment"]
    assert record["name"] == "bert" and record["source_enrolment"]["name"] == "anna"  # the chain is kept
    summary = write_report(second).read_text().split('<section id="summary">')[1].split("</section>")[0]
    assert "<h3>Enrolment</h3>" in summary and "<tr><th>Speaker added</th><td>bert</td></tr>" in summary
    assert "<tr><th>Speakers enrolled before it</th><td>anna</td></tr>" in summary
    assert "No training summary" not in summary and "its training is that of its source experiment" in summary
    assert "stopped at step" not in summary

    ckpt = load_checkpoint(second / "checkpoints" / "last.pt")  # as Ctrl-C leaves it, one step in
    ckpt["enrolment"]["finished"] = False
    save_checkpoint(second / "checkpoints" / "last.pt", ckpt)
    stopped = json.loads((second / "enrolment.json").read_text())
    (second / "enrolment.json").write_text(json.dumps({**stopped, "finished": False}))
    summary = write_report(second, overwrite=True).read_text().split('<section id="summary">')[1]
    assert "The enrolment stopped at step 1 before its end" in summary.split("</section>")[0]
    capsys.readouterr()
    assert run_cli(["speakers", second]) == 0
    assert "holds an enrolment of 'bert' stopped at step 1, before its end" in capsys.readouterr().err


def test_launch_variables_left_in_the_shell_end_in_one_sentence_not_a_wait_for_ever(tmp_path, demo_manifest):
    """WORLD_SIZE, RANK, MASTER_ADDR and MASTER_PORT all left set: the process waited in the process
    group's rendezvous for a peer that never came, and Ctrl-C or SIGTERM could not end it."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "WORLD_SIZE": "2", "RANK": "0", "LOCAL_RANK": "0", "MASTER_ADDR": "127.0.0.1",
           "MASTER_PORT": str(port), "VQSPEECH_RENDEZVOUS_SECONDS": "2"}
    env.pop("TORCHELASTIC_RUN_ID", None)
    exp = tmp_path / "exp"
    result = subprocess.run([sys.executable, "-m", "vqspeech.cli", "train", str(exp), *map(str, FAST_TRAIN),
                             f"data.manifest={demo_manifest}", "train.max_steps=1"], env=env, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    assert "WORLD_SIZE=2 is set, but the 2 processes did not all meet" in result.stderr
    assert "torchrun" in result.stderr and not exp.exists()
    for wait in ("soon", "1e300", "1e12"):  # a wait of years would be for ever again, and deaf to signals
        bad = {**env, "VQSPEECH_RENDEZVOUS_SECONDS": wait}
        result = subprocess.run([sys.executable, "-m", "vqspeech.cli", "train", str(exp),
                                 f"data.manifest={demo_manifest}"], env=bad, capture_output=True, text=True, timeout=120)
        assert result.returncode == 2 and f"VQSPEECH_RENDEZVOUS_SECONDS='{wait}' is not a number of seconds from 0 " \
            "to 86400" in result.stderr, result.stderr


def test_a_decoder_stage_refuses_units_still_training(tmp_path, capsys, demo_manifest, sleeper):
    mel = ["model.objective=mel", "train.warmup_steps=1"]
    units = tmp_path / "units"
    assert run_cli(["train", units, *FAST_TRAIN, *mel, f"data.manifest={demo_manifest}", "train.max_steps=2",
                    "train.checkpoint_every=1"]) == 0
    lock = hold_lock(units, sleeper.pid)  # its training goes on
    decoder = tmp_path / "decoder"
    command = ["train", decoder, *FAST_TRAIN, *mel, f"data.manifest={demo_manifest}", "train.max_steps=1"]
    message = cli_error(capsys, [*command, f"train.units_from={units}"], "train")
    assert "are still changing" in message and str(sleeper.pid) in message and "step-N.pt" in message
    assert not (decoder / "checkpoints").exists()
    step = sorted((units / "checkpoints").glob("step-*.pt"))[0]  # a saved step does not change
    assert run_cli([*command, f"train.units_from={step}"]) == 0
    lock.unlink()


def test_codes_beyond_the_code_range_are_refused_before_they_turn_negative(tmp_path):
    """An unsigned 64-bit code of 2**63 or more became negative in the cast to int64, past the
    check, and `prior train` ended in a traceback in np.bincount."""
    from vqspeech.data.codes import MAX_CODES, read_codes_file

    for codes in (np.array([3, 2**64 - 1], dtype=np.uint64), np.array([3, MAX_CODES], dtype=np.int64)):
        path = tmp_path / "x.npy"
        np.save(path, codes)
        with pytest.raises(UserError, match=f"does not hold codes \\(integers from 0 to {MAX_CODES - 1}"):
            read_codes_file(path)
    np.save(path, np.array([3, MAX_CODES - 1], dtype=np.uint64))
    assert read_codes_file(path).tolist() == [3, MAX_CODES - 1]


def test_prior_samples_of_a_units_stage_point_to_a_decoder_of_its_units(tmp_path, capsys, demo_manifest):
    units = tmp_path / "units"
    assert run_cli(["train", units, *FAST_TRAIN, "model.objective=mel", f"data.manifest={demo_manifest}",
                    "train.max_steps=2"]) == 0
    assert run_cli(["encode", units, demo_manifest, units / "codes"]) == 0
    assert run_cli(["prior", "train", units / "prior", f"data.codes={units / 'codes'}", *PRIOR,
                    "train.max_steps=2"]) == 0
    speaker = read_manifest(demo_manifest)[0].speaker
    message = cli_error(capsys, ["prior", "sample", units / "prior", "--speaker", speaker, "--seconds", "0.2",
                                 "-o", tmp_path / "s"], "prior sample")
    assert "has learned units only" in message and "Or pass --vqvae: a decoder trained on these units" in message


# --- thirty-fifth pass ------------------------------------------------------------------------


def test_align_overwrite_never_attaches_the_earlier_runs_alignments(tmp_path, demo_manifest):
    """A first run aligned another source into OUT (other transcripts, other takes: what it holds is
    not known); `--overwrite --limit 1 --manifest M` used to leave its TextGrids, and M then pointed
    at them as if this run had made them."""
    from vqspeech.data.align import align_corpus

    rows = [{k: v for k, v in r.items() if k != "alignment"} for r in absolute_rows(demo_manifest)[:3]]
    other = write_lines(tmp_path / "other" / "manifest.jsonl", rows)
    right = write_lines(tmp_path / "right" / "manifest.jsonl", rows)
    out = tmp_path / "align"
    assert align_corpus(other, out, num_workers=1, progress=False).aligned == 3
    align_corpus(right, out, manifest=right, overwrite=True, limit=1, num_workers=1, progress=False)
    pointed = {u.id: u.alignment for u in read_manifest(right)}
    assert pointed[rows[0]["id"]] == str((out / f"{rows[0]['id']}.TextGrid").resolve())
    assert pointed[rows[1]["id"]] is None and pointed[rows[2]["id"]] is None
    assert sorted(p.stem for p in out.glob("*.TextGrid")) == [rows[0]["id"]]  # the earlier run's are gone

    # that manifest's alignments are the aligner's own: comparing them with the aligner is refused
    result = run_tool("compare_alignments.py", right, out)
    assert result.returncode == 2 and "were written by `vqspeech align`" in result.stderr, result.stderr


def test_the_probe_table_says_when_a_codes_folder_holds_other_codes_now(tmp_path, demo_manifest, codes):
    mine = tmp_path / "codes"
    shutil.copytree(codes, mine)
    probe = tmp_path / "vqvae.json"
    assert run_cli(["evaluate", "probe", "--codes", mine, "--manifest", demo_manifest, "--out", probe,
                    "--no_abx"]) == 0
    result = run_tool("phoneme_probe.py", probe)
    assert result.returncode == 0 and "Stale" not in result.stdout
    info = json.loads((mine / "codes.json").read_text())
    (mine / "codes.json").write_text(json.dumps({**info, "codebook": "0" * 16}))  # encoded again by another model
    result = run_tool("phoneme_probe.py", probe)
    assert result.returncode == 0 and "**Stale**" in result.stdout and "another codebook" in result.stdout
    shutil.rmtree(mine)
    assert "are not there any more" in run_tool("phoneme_probe.py", probe).stdout


def test_a_voice_name_that_differs_in_case_from_a_speaker_is_refused(tmp_path, capsys, trained_tiny):
    speaker = VQSpeech.load(trained_tiny, "cpu").speakers[0]
    other = speaker.upper() if speaker != speaker.upper() else speaker.lower()
    message = cli_error(capsys, ["evaluate", "conversion", trained_tiny, "--voice", f"{other}={tmp_path}",
                                 "--out", tmp_path / "ev"], "evaluate conversion")
    assert f"differs only in case from {speaker!r}" in message and not (tmp_path / "ev").exists()
    message = cli_error(capsys, ["evaluate", "conversion", trained_tiny, "--voice", f"new={tmp_path}",
                                 "--voice", f"NEW={tmp_path}", "--out", tmp_path / "ev"], "evaluate conversion")
    assert "--voice NEW is given twice" in message and "differ in case only" in message


def test_convert_warns_when_a_speaker_name_is_also_a_folder_here(tmp_path, capsys, monkeypatch, trained_tiny,
                                                                   demo_manifest):
    speaker = VQSpeech.load(trained_tiny, "cpu").speakers[0]
    source = str((demo_manifest.parent / read_manifest(demo_manifest)[0].audio).resolve())
    monkeypatch.chdir(tmp_path)
    (tmp_path / speaker).mkdir()
    assert run_cli(["convert", trained_tiny, "--speaker", speaker, source, "-o", tmp_path / "out.wav"]) == 0
    err = capsys.readouterr().err
    assert f"{speaker!r} is both a speaker the model knows and a path here" in err and f"./{speaker}" in err


def test_a_baseline_like_grouped_codes_warns_that_it_has_fewer_units(tmp_path, demo_manifest):
    from vqspeech.eval.baseline import settings_like

    exp = tmp_path / "grouped"
    assert run_cli(["train", exp, *FAST_TRAIN, f"data.manifest={demo_manifest}", "train.max_steps=1",
                    "model.quantizer.groups=2"]) == 0
    assert run_cli(["encode", exp, demo_manifest, exp / "codes", "--split", "test", "--limit", "3"]) == 0
    with pytest.warns(UserWarning, match="holds codes of 2 groups of K=.* give the number of units"):
        settings_like(exp / "codes")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        settings_like(exp / "codes", warn=False)


def test_small_mistakes_of_the_command_line_and_the_study_tools_are_named(tmp_path, capsys, trained_tiny, codes):
    result = subprocess.run([sys.executable, "-m", "vqspeech.cli", "decode", trained_tiny, codes, "-o",
                             tmp_path / "x", "--speaker", "a", "--split", "test"], capture_output=True, text=True)
    assert result.returncode == 2 and "vqspeech decode: error: unrecognized arguments: --split test" in result.stderr
    message = cli_error(capsys, ["baseline", "mfcc-kmeans", "m.jsonl", trained_tiny], "baseline")
    assert f"e.g. {trained_tiny / 'baseline'}" in message
    for minutes in ("10,,20", "10,10"):
        result = run_tool("learning_curve.py", "--manifest", "m.jsonl", "--out_dir", tmp_path / "lc",
                          "--minutes", minutes)
        assert result.returncode == 2 and "--minutes takes distinct" in result.stderr, result.stderr
    for flag, value in (("--minutes", "nan"), ("--max_steps", "0")):
        result = run_tool("ablate.py", "--manifest", "m.jsonl", "--out_dir", tmp_path / "ab", flag, value)
        assert result.returncode == 2 and f"{flag} must be" in result.stderr, result.stderr


# --- thirty-sixth pass ------------------------------------------------------------------------


def test_the_study_tools_refuse_to_continue_a_run_started_with_other_settings(tmp_path, capsys, demo_manifest,
                                                                              study_tools):
    """Killed before its row or score was written, a run was continued under new settings, which
    were then recorded as the whole run's."""
    ablate, learning_curve = study_tools
    out = tmp_path / "ablation"
    args = ["--manifest", str(demo_manifest), "--out_dir", str(out), "--variants", "jitter", "--minutes", "1"]
    started = argparse.Namespace(manifest=str(demo_manifest), minutes=1.0, model="small", units_share=0.5,
                                 max_steps=100_000, num_eval=20, probe_split="test", overrides=["train.lr=0.05"])
    ablate.record_run_settings(out / "jitter", {**ablate.run_settings(started, *ablate.ABLATION_SETTINGS),
                                                "variant_overrides": ["model.jitter=0.12"]})
    assert ablate.main(args) == 2
    assert "holds a run started with other settings (overrides ['train.lr=0.05'] -> []" in capsys.readouterr().err
    ablate.run_settings_file(out / "jitter").unlink()  # an earlier version's run: a checkpoint, no record
    (out / "jitter" / "checkpoints").mkdir(parents=True)
    (out / "jitter" / "checkpoints" / "last.pt").write_bytes(b"")
    assert ablate.main(args) == 2
    assert "it records no settings" in capsys.readouterr().err
    # such a run whose row recorded these settings goes on (and now has its record)
    now = ablate.variant_settings("jitter", argparse.Namespace(**{**vars(started), "overrides": []}))
    ablate.check_run_settings(out / "jitter", now, scored=now)
    assert json.loads(ablate.run_settings_file(out / "jitter").read_text()) == now

    curve = tmp_path / "curve"
    base = ["--manifest", str(demo_manifest), "--out_dir", str(curve), "--configs", "single"]
    (curve / "single" / "exp" / "checkpoints").mkdir(parents=True)
    (curve / "single" / "exp" / "checkpoints" / "last.pt").write_bytes(b"")
    assert learning_curve.main([*base, "--minutes", "6"]) == 2
    assert "holds a run started with other settings" in capsys.readouterr().err
    (curve / "single" / "6min").mkdir()
    (curve / "single" / "6min" / "score.json").write_text(json.dumps({"settings": {"config": "x"}}))
    assert learning_curve.earlier_score_settings(curve / "single") == {"config": "x"}  # such a run's record
    assert learning_curve.main([*base, "--minutes", "0.1,0.1000001"]) == 2  # one folder, 0.1min, for both
    assert "--minutes takes distinct" in capsys.readouterr().err


def test_the_report_names_the_codebooks_of_a_grouped_quantizer(tmp_path, demo_manifest):
    from vqspeech.eval.report import write_report

    exp = tmp_path / "grouped"
    assert run_cli(["train", exp, *FAST_TRAIN, f"data.manifest={demo_manifest}", "train.max_steps=1",
                    "model.quantizer.groups=2"]) == 0
    page = write_report(exp).read_text()
    assert "2 codebooks of K = " in page and "a unit is 2 codes" in page


def test_a_recipe_stage_after_the_last_is_refused(tmp_path):
    recipe = Path(__file__).resolve().parents[1] / "recipes" / "fsdd" / "run.sh"
    result = subprocess.run(["bash", str(recipe), "--stage", "10", "--exp_dir", str(tmp_path / "e"),
                             "--data_dir", str(tmp_path / "d")], capture_output=True, text=True)
    assert result.returncode == 1 and "comes after the last stage, 9" in result.stderr, result.stderr
    assert not (tmp_path / "e").exists()


def test_a_cache_folder_in_the_home_of_an_unknown_user_is_refused(tmp_path, monkeypatch):
    from vqspeech.inference.fast_generate import _cache_dir

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("VQSPEECH_CACHE", "~no_such_user_vqspeech/x")
    with pytest.raises(UserError, match="names the home of an unknown user"):
        _cache_dir()
    assert not any(tmp_path.iterdir())
