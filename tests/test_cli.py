"""The `vqspeech` command on a briefly trained tiny model: encode, decode, convert, evaluate, errors.

Generation is sample by sample, so every decode/convert here uses clips of a few hundred ms.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from conftest import cli_error, run_cli
from vqspeech.audio import load_audio, resample
from vqspeech.cli import build_parser
from vqspeech.data.manifest import Utterance, read_manifest, write_manifest
from vqspeech.inference import VQSpeech
from vqspeech.eval.loss import teacher_forced_metrics

HOP, SR = 80, 8000  # model=tiny


def mtimes_and_bytes(folder: Path) -> dict:
    return {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def clips(tmp_path_factory, demo_manifest) -> dict:
    """Short real-speech clips cut from the demo corpus (8 kHz unless stated)."""
    root = tmp_path_factory.mktemp("clips")
    utts = read_manifest(demo_manifest, "train")
    audio = [load_audio(u.audio)[0] for u in utts[:3]]
    start = SR // 2  # skip the leading silence
    paths = {
        "a": root / "folder" / "a.wav",           # 1650 samples: 20 frames + a partial one
        "b": root / "folder" / "sub" / "b.wav",   # 1200 samples: 15 frames
        "c16k": root / "c16k.wav",                # 0.1 s at 16 kHz
    }
    paths["b"].parent.mkdir(parents=True)
    sf.write(paths["a"], audio[0][start:start + 1650], SR)
    sf.write(paths["b"], audio[1][start:start + 1200], SR)
    sf.write(paths["c16k"], resample(audio[2][start:start + 800], SR, 16000), 16000)
    (root / "folder" / "notes.txt").write_text("not audio\n")
    bad = root / "bad.wav"
    bad.write_bytes(b"RIFF\x00\x00\x00\x00WAVEthis is no sound file" * 4)
    paths["bad"] = bad
    paths["folder"] = root / "folder"
    # A manifest of the two short clips with their speakers, for decode's speaker lookup.
    manifest = root / "clips.jsonl"
    write_manifest(manifest, [
        Utterance("clip_a", str(paths["a"]), utts[0].speaker, 1650 / SR, SR, "test"),
        Utterance("clip_b", str(paths["b"]), utts[1].speaker, 1200 / SR, SR, "test")])
    paths["manifest"] = manifest
    paths["speakers"] = {"clip_a": utts[0].speaker, "clip_b": utts[1].speaker}
    return paths


@pytest.fixture(scope="module")
def vq(trained_tiny) -> VQSpeech:
    return VQSpeech.load(trained_tiny, "cpu")


def read_units(path: Path) -> dict[str, list[int]]:
    units = {}
    for line in path.read_text().splitlines():
        utt_id, *codes = line.split()
        units[utt_id] = [int(c) for c in codes]
    return units


# --- encode ----------------------------------------------------------------------------------

def check_codes_json(out: Path, trained_tiny: Path) -> dict:
    meta = json.loads((out / "codes.json").read_text())
    assert meta["code_rate_hz"] == pytest.approx(SR / HOP)
    assert meta["frame_offset_s"] == pytest.approx(0.5 * HOP / SR)  # centre of the first frame
    assert meta["K"] == 128
    assert Path(meta["checkpoint"]).resolve() == (trained_tiny / "checkpoints" / "last.pt").resolve()
    return meta


def test_encode_file(tmp_path, trained_tiny, clips, vq):
    out = tmp_path / "enc"
    assert run_cli(["encode", trained_tiny, clips["a"], out]) == 0
    codes = np.load(out / "codes" / "a.npy")
    assert codes.dtype == np.int16 and codes.shape == (1650 // HOP,)
    assert 0 <= codes.min() and codes.max() < 128
    assert read_units(out / "units.txt") == {"a": codes.tolist()}
    check_codes_json(out, trained_tiny)
    audio, sr = load_audio(clips["a"])
    np.testing.assert_array_equal(vq.encode(audio, sr).codes, codes)
    # Another sample rate is resampled to the model's: 0.1 s at 16 kHz is 10 frames.
    out16 = tmp_path / "enc16"
    assert run_cli(["encode", trained_tiny, clips["c16k"], out16]) == 0
    assert np.load(out16 / "codes" / "c16k.npy").shape == (10,)


def test_encode_folder_with_latents_and_a_corrupt_file(tmp_path, trained_tiny, clips, vq):
    folder = tmp_path / "in"
    folder.mkdir()
    for name, src in (("a.wav", clips["a"]), ("sub/b.wav", clips["b"]), ("bad.wav", clips["bad"])):
        (folder / name).parent.mkdir(exist_ok=True)
        (folder / name).symlink_to(src)
    out = tmp_path / "enc"
    assert run_cli(["encode", trained_tiny, folder, out, "--latents"]) == 0
    assert sorted(p.name for p in (out / "codes").iterdir()) == ["a.npy", "sub_b.npy"]
    rejects = (out / "rejects.tsv").read_text().splitlines()
    assert rejects[0] == "file\treason" and len(rejects) == 2 and rejects[1].startswith(str(folder / "bad.wav"))
    units = read_units(out / "units.txt")
    assert set(units) == {"a", "sub_b"}
    codebook = vq.model.quantizer.codebook.detach()
    for utt_id, frames in (("a", 20), ("sub_b", 15)):
        codes = np.load(out / "codes" / f"{utt_id}.npy")
        latents = np.load(out / "latents" / f"{utt_id}.npy")
        assert codes.dtype == np.int16 and codes.shape == (frames,)
        assert units[utt_id] == codes.tolist()
        assert latents.dtype == np.float32 and latents.shape == (frames, 16)
        # Each code is the nearest codebook vector to its latent (before quantisation).
        nearest = torch.cdist(torch.from_numpy(latents), codebook).argmin(dim=1).numpy()
        np.testing.assert_array_equal(nearest, codes)
    meta = check_codes_json(out, trained_tiny)
    assert meta.get("num_utterances", 2) == 2


def test_encode_manifest_and_refuse_to_overwrite(tmp_path, trained_tiny, demo_manifest, capsys):
    out = tmp_path / "enc"
    assert run_cli(["encode", trained_tiny, demo_manifest, out]) == 0
    utts = read_manifest(demo_manifest)
    units = read_units(out / "units.txt")
    assert set(units) == {u.id for u in utts}
    for u in utts:
        codes = np.load(out / "codes" / f"{u.id}.npy")
        assert codes.dtype == np.int16 and codes.shape == (u.num_samples // HOP,)
        assert units[u.id] == codes.tolist()
    meta = check_codes_json(out, trained_tiny)
    assert meta["speakers"] == {u.id: u.speaker for u in utts}

    before = mtimes_and_bytes(out)
    message = cli_error(capsys, ["encode", trained_tiny, demo_manifest, out], "encode")
    assert "--overwrite" in message and str(out) in message
    assert mtimes_and_bytes(out) == before
    assert run_cli(["encode", trained_tiny, demo_manifest, out, "--overwrite"]) == 0
    assert read_units(out / "units.txt") == units  # encoding is deterministic


def test_encode_folder_with_colliding_ids(tmp_path, trained_tiny, clips, capsys):
    """`b.wav`/`b.flac` and `x/a.wav`/`x_a.wav` map to the same id: no input may silently replace another."""
    folder = tmp_path / "in"
    (folder / "x").mkdir(parents=True)
    audio, _ = sf.read(clips["a"], dtype="float32")
    sf.write(folder / "b.wav", audio, SR)
    sf.write(folder / "b.flac", audio[:800], SR)
    sf.write(folder / "x" / "a.wav", audio[:1200], SR)
    sf.write(folder / "x_a.wav", audio[:400], SR)
    out = tmp_path / "enc"
    capsys.readouterr()
    code = run_cli(["encode", trained_tiny, folder, out])
    if code == 2:  # refusing with a clear message is fine ...
        err = capsys.readouterr().err
        assert "Traceback" not in err
        assert any(name in err for name in ("b.wav", "b.flac", "a.wav", "x_a.wav")), err
        assert not (out / "units.txt").exists()
        return
    assert code == 0  # ... and so is giving every input its own id.
    ids = [line.split()[0] for line in (out / "units.txt").read_text().splitlines()]
    assert len(ids) == len(set(ids)) == 4, ids
    assert len(list((out / "codes").glob("*.npy"))) == 4
    assert sorted(len(np.load(out / "codes" / f"{i}.npy")) for i in ids) == [5, 10, 15, 20]


def test_encode_overwrite_leaves_no_stale_codes(tmp_path, trained_tiny, clips):
    """After --overwrite, codes/ and latents/ hold exactly the utterances of units.txt and codes.json."""
    out = tmp_path / "enc"
    assert run_cli(["encode", trained_tiny, clips["folder"], out, "--latents"]) == 0
    assert len(list((out / "codes").glob("*.npy"))) == 2
    assert run_cli(["encode", trained_tiny, clips["c16k"], out, "--overwrite"]) == 0
    ids = [line.split()[0] for line in (out / "units.txt").read_text().splitlines()]
    assert ids == ["c16k"]
    assert json.loads((out / "codes.json").read_text())["num_utterances"] == 1
    assert sorted(p.stem for p in (out / "codes").glob("*.npy")) == ids  # decode reads every file here
    assert not list((out / "latents").glob("*.npy"))  # no --latents this time: none may be left over


# --- decode ----------------------------------------------------------------------------------

def test_decode_folder_uses_the_utterance_speakers(tmp_path, trained_tiny, clips, vq):
    codes_dir = tmp_path / "enc"
    assert run_cli(["encode", trained_tiny, clips["manifest"], codes_dir]) == 0
    out = tmp_path / "wav"
    assert run_cli(["decode", trained_tiny, codes_dir, "-o", out]) == 0
    assert sorted(p.name for p in out.iterdir()) == [".vqspeech-decode", "clip_a.wav", "clip_b.wav"]
    for utt_id, frames in (("clip_a", 20), ("clip_b", 15)):
        info = sf.info(out / f"{utt_id}.wav")
        assert (info.samplerate, info.frames, info.channels, info.subtype) == (SR, frames * HOP, 1, "PCM_16")
    audio, _ = sf.read(out / "clip_a.wav", dtype="float32")
    assert np.all(np.isfinite(audio)) and np.abs(audio).max() > 0
    # The speakers came from codes.json: the library call with those speakers gives the same audio.
    codes = [np.load(codes_dir / "codes" / f"{i}.npy") for i in ("clip_a", "clip_b")]
    expected = vq.decode_batch(codes, [clips["speakers"]["clip_a"], clips["speakers"]["clip_b"]], seed=0)
    np.testing.assert_allclose(audio, expected[0], atol=1.5 / 32768)
    # One file of the folder: its speaker comes from the folder's codes.json too.
    one = tmp_path / "one.wav"
    assert run_cli(["decode", trained_tiny, codes_dir / "codes" / "clip_b.npy", "-o", one]) == 0
    alone = vq.decode_batch([codes[1]], [clips["speakers"]["clip_b"]], seed=0)[0]
    np.testing.assert_allclose(sf.read(one, dtype="float32")[0], alone, atol=1.5 / 32768)


def test_decode_one_npy_file(tmp_path, trained_tiny, vq, capsys):
    codes = np.array([3, 3, 7, 7, 100, 5, 5, 0, 127, 64], dtype=np.int16)
    path = tmp_path / "utt.npy"
    np.save(path, codes)
    speaker = vq.speakers[-1]
    message = cli_error(capsys, ["decode", trained_tiny, path, "-o", tmp_path / "x.wav"], "decode")
    assert "--speaker" in message  # a bare .npy has no speaker
    assert not (tmp_path / "x.wav").exists()
    out = tmp_path / "utt.wav"
    assert run_cli(["decode", trained_tiny, path, "--speaker", speaker, "-o", out, "--temperature", "0"]) == 0
    info = sf.info(out)
    assert (info.samplerate, info.frames) == (SR, len(codes) * HOP)

    bad = tmp_path / "bad.npy"
    np.save(bad, np.array([1, 2, 500], dtype=np.int16))
    message = cli_error(capsys, ["decode", trained_tiny, bad, "--speaker", speaker, "-o", tmp_path / "b.wav"],
                        "decode")
    assert "128" in message
    assert not (tmp_path / "b.wav").exists()


# --- convert ---------------------------------------------------------------------------------

def test_convert_file_to_file(tmp_path, trained_tiny, clips, vq):
    out = tmp_path / "out.wav"
    assert run_cli(["convert", trained_tiny, clips["a"], "--speaker", vq.speakers[0], "-o", out]) == 0
    info = sf.info(out)
    assert (info.samplerate, info.frames, info.subtype) == (SR, 1600, "PCM_16")  # whole frames only
    out16 = tmp_path / "from16k.wav"
    assert run_cli(["convert", trained_tiny, clips["c16k"], "--speaker", vq.speakers[0], "-o", out16]) == 0
    info = sf.info(out16)
    assert (info.samplerate, info.frames) == (SR, 800)  # resampled to the model rate


def test_convert_folder_to_folder(tmp_path, trained_tiny, clips, vq):
    out = tmp_path / "converted"
    assert run_cli(["convert", trained_tiny, clips["folder"], "--speaker", vq.speakers[1], "-o", out]) == 0
    frames = {p.name: sf.info(p).frames for p in out.glob("*.wav")}
    assert frames == {"a.wav": 1600, "sub_b.wav": 1200}
    assert sorted(p.name for p in out.glob(".*")) == [".vqspeech-convert"]  # the folder's mark, nothing else


def test_convert_unknown_speaker(tmp_path, trained_tiny, clips, vq, capsys):
    out = tmp_path / "out.wav"
    message = cli_error(capsys, ["convert", trained_tiny, clips["a"], "--speaker", "nobody", "-o", out], "convert")
    assert "nobody" in message
    assert all(s in message for s in vq.speakers)
    assert not out.exists() and list(tmp_path.iterdir()) == []


def test_convert_refuses_to_overwrite(tmp_path, trained_tiny, clips, vq, capsys):
    out = tmp_path / "out.wav"
    sf.write(out, np.zeros(10, dtype=np.float32), SR)
    before = (out.stat().st_mtime_ns, out.read_bytes())
    message = cli_error(capsys, ["convert", trained_tiny, clips["b"], "--speaker", vq.speakers[0], "-o", out],
                        "convert")
    assert "--overwrite" in message and str(out) in message
    assert (out.stat().st_mtime_ns, out.read_bytes()) == before
    assert run_cli(["convert", trained_tiny, clips["b"], "--speaker", vq.speakers[0], "-o", out,
                    "--overwrite"]) == 0
    assert sf.info(out).frames == 1200


def test_convert_speaker_matters_and_seed_reproduces(tmp_path, trained_tiny, clips, vq):
    def convert(speaker: str, name: str) -> np.ndarray:
        out = tmp_path / name
        assert run_cli(["convert", trained_tiny, clips["b"], "--speaker", speaker, "-o", out, "--seed", "7"]) == 0
        return sf.read(out, dtype="float32")[0]

    first, again = convert(vq.speakers[0], "s0.wav"), convert(vq.speakers[0], "s0_again.wav")
    other = convert(vq.speakers[1], "s1.wav")
    np.testing.assert_array_equal(first, again)
    assert first.shape == other.shape and not np.array_equal(first, other)


# --- evaluate, speakers, help ----------------------------------------------------------------

def test_evaluate_prints_metrics(tmp_path, trained_tiny, demo_manifest, vq, capsys):
    capsys.readouterr()
    out = tmp_path / "metrics.json"
    assert run_cli(["evaluate", "loss", trained_tiny, "--split", "test", "--out", out, "--device", "cpu"]) == 0
    metrics = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert json.loads(out.read_text()) == metrics
    test_utts = read_manifest(demo_manifest, "test")
    assert metrics["split"] == "test" and metrics["utterances"] == len(test_utts)
    assert 0 < metrics["bits_per_sample"] < 8.5
    assert 1 <= metrics["perplexity"] <= 128 and 1 <= metrics["codes_used"] <= 128
    ids = {s: i for i, s in enumerate(vq.speakers)}
    expected = teacher_forced_metrics(vq.model, test_utts, ids, torch.device("cpu"))
    assert metrics["bits_per_sample"] == pytest.approx(expected["bits_per_sample"], rel=1e-6)
    assert metrics["codes_used"] == expected["codes_used"]

    assert run_cli(["evaluate", "loss", trained_tiny, "--manifest", demo_manifest, "--split", "valid",
                    "--max_utterances", "1"]) == 0
    metrics = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert metrics["split"] == "valid" and metrics["utterances"] == 1


def test_evaluate_refuses_to_overwrite_its_output(tmp_path, trained_tiny, capsys):
    out = tmp_path / "metrics.json"
    out.write_text("keep me")
    message = cli_error(capsys, ["evaluate", "loss", trained_tiny, "--out", out, "--max_utterances", "1"], "evaluate loss")
    assert "--overwrite" in message and out.read_text() == "keep me"
    message = cli_error(capsys, ["evaluate", "loss", trained_tiny, "--out", out, "--max_utterances", "1",
                                 "--overwrite"], "evaluate loss")  # not a result: someone's file
    assert "holds no loss results" in message and out.read_text() == "keep me"
    out.unlink()
    assert run_cli(["evaluate", "loss", trained_tiny, "--out", out, "--max_utterances", "1"]) == 0
    assert run_cli(["evaluate", "loss", trained_tiny, "--out", out, "--max_utterances", "1", "--overwrite"]) == 0
    assert "bits_per_sample" in json.loads(out.read_text())


def test_batched_decoding_does_not_depend_on_batch_partners(vq):
    """A short utterance decoded beside a longer one equals the same utterance decoded alone."""
    rng = np.random.default_rng(0)
    short, long = rng.integers(0, 128, 3), rng.integers(0, 128, 6)
    speaker = vq.speakers[0]
    alone = vq.decode_batch([short], [speaker], temperature=0)[0]
    together = vq.decode_batch([long, short], [speaker, speaker], temperature=0)[1]
    assert len(alone) == len(together) == 3 * HOP
    np.testing.assert_allclose(alone, together, atol=1e-6)


def test_speakers_lists_the_speakers(trained_tiny, demo_manifest, capsys):
    capsys.readouterr()
    assert run_cli(["speakers", trained_tiny]) == 0
    listed = capsys.readouterr().out.split()
    assert listed == sorted({u.speaker for u in read_manifest(demo_manifest, "train")})
    assert listed == (trained_tiny / "speakers.txt").read_text().split()


def verbs() -> list[str]:
    parser = build_parser()
    action = next(a for a in parser._actions if a.dest == "verb")
    return sorted(action.choices)


def test_verbs_are_there():
    assert {"prepare", "demo-data", "train", "evaluate", "export", "encode", "decode", "convert",
            "speakers"} <= set(verbs())


@pytest.mark.parametrize("argv", [["--help"]] + [[verb, "--help"] for verb in verbs()])
def test_help_exits_zero(argv, capsys):
    with pytest.raises(SystemExit) as info:
        run_cli(argv)
    assert info.value.code == 0
    assert "usage: vqspeech" in capsys.readouterr().out


def test_console_script_and_module_help():
    script = Path(sys.executable).parent / "vqspeech"
    commands = [[sys.executable, "-m", "vqspeech.cli", "--help"]]
    if script.is_file():
        commands.append([str(script), "--help"])
    for command in commands:
        proc = subprocess.run(command, capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0 and "encode" in proc.stdout, proc.stderr


def test_missing_arguments_exit_two(capsys):
    with pytest.raises(SystemExit) as info:
        run_cli(["encode"])
    assert info.value.code == 2


# --- user errors: exit 2, one sentence, nothing written --------------------------------------

def test_missing_input_file(tmp_path, trained_tiny, vq, capsys):
    missing = tmp_path / "missing.wav"
    message = cli_error(capsys, ["encode", trained_tiny, missing, tmp_path / "out"], "encode")
    assert str(missing) in message
    message = cli_error(capsys, ["convert", trained_tiny, missing, "--speaker", vq.speakers[0],
                                 "-o", tmp_path / "o.wav"], "convert")
    assert str(missing) in message
    assert sorted(tmp_path.iterdir()) == []


def test_corrupt_audio_as_the_only_input(tmp_path, trained_tiny, clips, vq, capsys):
    message = cli_error(capsys, ["encode", trained_tiny, clips["bad"], tmp_path / "out"], "encode")
    assert str(clips["bad"]) in message
    assert not (tmp_path / "out" / "codes.json").exists() and not (tmp_path / "out" / "units.txt").exists()
    out = tmp_path / "o.wav"
    message = cli_error(capsys, ["convert", trained_tiny, clips["bad"], "--speaker", vq.speakers[0], "-o", out],
                        "convert")
    assert str(clips["bad"]) in message and not out.exists()


def test_missing_or_untrained_experiment(tmp_path, clips, capsys):
    missing = tmp_path / "no_such_exp"
    for verb, argv in (("speakers", ["speakers", missing]),
                       ("encode", ["encode", missing, clips["a"], tmp_path / "out"]),
                       ("evaluate loss", ["evaluate", "loss", missing]),
                       ("convert", ["convert", missing, clips["a"], "--speaker", "x", "-o", tmp_path / "o.wav"]),
                       ("export", ["export", missing, tmp_path / "e.pt"])):
        assert str(missing) in cli_error(capsys, argv, verb)
    assert not missing.exists() and not (tmp_path / "out").exists() and not (tmp_path / "o.wav").exists()
    empty = tmp_path / "empty_exp"
    empty.mkdir()
    message = cli_error(capsys, ["speakers", empty], "speakers")
    assert str(empty) in message and "train" in message


def test_prepare_errors(tmp_path, capsys):
    missing = tmp_path / "no_corpus"
    message = cli_error(capsys, ["prepare", missing, tmp_path / "out", "--layout", "fsdd"], "prepare")
    assert str(missing) in message
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    message = cli_error(capsys, ["prepare", corpus, tmp_path / "out", "--layout", "nolayout"], "prepare")
    assert "nolayout" in message and "fsdd" in message  # names the layouts there are
    assert not (tmp_path / "out").exists()


def test_train_without_manifest(tmp_path, capsys):
    exp = tmp_path / "exp"
    message = cli_error(capsys, ["train", exp, "model=tiny"], "train")
    assert "data.manifest" in message
    assert not exp.exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a CUDA GPU")
def test_cuda_requested_on_a_cpu_machine(tmp_path, trained_tiny, clips, demo_manifest, capsys):
    for verb, argv in (("encode", ["encode", trained_tiny, clips["a"], tmp_path / "out", "--device", "cuda"]),
                       ("evaluate loss", ["evaluate", "loss", trained_tiny, "--device", "cuda"]),
                       ("convert", ["convert", trained_tiny, clips["a"], "--speaker", "x", "-o", tmp_path / "o.wav",
                                    "--device", "cuda"]),
                       ("train", ["train", tmp_path / "exp", "model=tiny", f"data.manifest={demo_manifest}",
                                  "device=cuda"])):
        message = cli_error(capsys, argv, verb)
        assert "cuda" in message.lower() and "cpu" in message, message
    message = cli_error(capsys, ["encode", trained_tiny, clips["a"], tmp_path / "out", "--device", "tpu"], "encode")
    assert "tpu" in message and "cpu" in message
    assert not (tmp_path / "out").exists() and not (tmp_path / "o.wav").exists()
