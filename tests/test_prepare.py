"""prepare_corpus: conversion cache, manifest, rejects, splits, settings guard, real FSDD."""

from __future__ import annotations

import json
import os
import random
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from vqspeech.data.corpora import SourceUtterance, find_utterances
from vqspeech.data.manifest import read_manifest
from vqspeech.data.prepare import PrepareSummary, assign_splits, prepare_corpus, read_rejects
from vqspeech.errors import UserError

from helpers import shared_fsdd


def write_clip(path: Path, seconds: float = 0.3, sample_rate: int = 16000, freq: float = 220.0,
               channels: int = 1, amplitude: float = 0.3) -> Path:
    """A sine clip with a little noise; the format follows the extension."""
    path.parent.mkdir(parents=True, exist_ok=True)
    n = int(round(seconds * sample_rate))
    t = np.arange(n) / sample_rate
    rng = np.random.default_rng(len(path.name))
    mono = amplitude * np.sin(2 * np.pi * freq * t) + 0.01 * rng.standard_normal(n)
    sf.write(str(path), np.stack([mono] * channels, axis=1), sample_rate)
    return path


def make_messy_folder(root: Path) -> Path:
    """A folder corpus with good clips in several formats and every kind of bad input."""
    write_clip(root / "alice" / "a1.wav")
    write_clip(root / "alice" / "a2.flac", seconds=0.5, sample_rate=24000)
    (root / "alice" / "a2.txt").write_text("hello world\n")
    write_clip(root / "bob" / "b1.wav", sample_rate=44100, channels=2)
    write_clip(root / "bob" / "b2.wav", seconds=0.4, sample_rate=8000)
    rng = np.random.default_rng(0)
    (root / "bob" / "corrupt.wav").write_bytes(rng.integers(0, 256, 2000, dtype=np.uint8).tobytes())
    (root / "bob" / "notes.flac").write_text("these are my notes, not audio\n")
    (root / "carol").mkdir()
    sf.write(str(root / "carol" / "empty.wav"), np.zeros(0), 16000)
    sf.write(str(root / "carol" / "silent.wav"), np.zeros(8000), 16000)
    write_clip(root / "carol" / "short.wav", seconds=0.05)
    write_clip(root / "carol" / "c1.wav", seconds=0.6)
    return root


def test_prepare_folder_corpus(tmp_path):
    corpus = make_messy_folder(tmp_path / "corpus")
    out = tmp_path / "out"
    summary = prepare_corpus(corpus, out, "folder", num_workers=0, progress=False,
                             valid_fraction=0.0, test_fraction=0.0)
    assert isinstance(summary, PrepareSummary)
    assert (summary.num_utterances, summary.num_rejected, summary.num_speakers) == (5, 5, 3)
    assert summary.manifest == str(out / "manifest.jsonl")
    assert summary.splits == {"train": 5, "valid": 0, "test": 0}

    utts = read_manifest(out / "manifest.jsonl")
    assert [u.id for u in utts] == ["alice_a1", "alice_a2", "bob_b1", "bob_b2", "carol_c1"]
    by_id = {u.id: u for u in utts}
    assert by_id["alice_a2"].text == "hello world" and by_id["alice_a1"].text is None
    for u in utts:
        assert u.audio == str((out / "wavs" / f"{u.id}.wav").resolve())
        assert u.sample_rate == 16000 and u.split == "train"
        info = sf.info(u.audio)
        assert (info.samplerate, info.channels, info.subtype) == (16000, 1, "PCM_16")
        assert u.duration == info.frames / 16000
    assert sf.info(by_id["alice_a2"].audio).frames == 8000      # 0.5 s at 24 kHz -> 16 kHz
    assert sf.info(by_id["bob_b2"].audio).frames == 6400        # 0.4 s at 8 kHz -> 16 kHz
    level = sf.read(by_id["bob_b1"].audio)[0]
    assert abs(20 * np.log10(np.sqrt(np.mean(level ** 2))) + 20) < 0.5  # normalised to -20 dBFS

    row = json.loads((out / "manifest.jsonl").read_text().splitlines()[0])
    assert set(row) == {"id", "audio", "speaker", "duration", "sample_rate", "split"}
    assert row["audio"] == "wavs/alice_a1.wav"

    reasons = dict(read_rejects(out))
    assert set(reasons) == {str(corpus / "bob" / n) for n in ("corrupt.wav", "notes.flac")} | {
        str(corpus / "carol" / n) for n in ("empty.wav", "silent.wav", "short.wav")}
    assert "Cannot read audio file" in reasons[str(corpus / "bob" / "corrupt.wav")]
    assert "Cannot read audio file" in reasons[str(corpus / "bob" / "notes.flac")]
    assert reasons[str(corpus / "carol" / "empty.wav")] == "empty (0 samples)"
    assert reasons[str(corpus / "carol" / "silent.wav")].startswith("silent")
    assert reasons[str(corpus / "carol" / "short.wav")].startswith("too short (0.050 s")
    assert not (out / "wavs" / "carol_short.wav").exists()

    assert (out / "speakers.tsv").read_text().splitlines() == [
        "speaker\tnum_utterances\tseconds\tsplits",
        "alice\t2\t0.80\ttrain", "bob\t2\t0.70\ttrain", "carol\t1\t0.60\ttrain"]
    settings = json.loads((out / "prepare.json").read_text())
    assert settings["layout"] == "folder" and settings["sample_rate"] == 16000
    assert settings["corpus_dir"] == str(corpus.resolve())


def test_rerun_reuses_cache_and_max_duration(tmp_path):
    corpus = tmp_path / "corpus"
    for i in range(3):
        write_clip(corpus / "s" / f"u{i}.wav", seconds=0.2 + 0.3 * i)
    out = tmp_path / "out"
    prepare_corpus(corpus, out, "folder", num_workers=0, progress=False)
    cached = out / "wavs" / "s_u0.wav"
    stamp = cached.stat().st_mtime_ns
    first = (out / "manifest.jsonl").read_text()
    prepare_corpus(corpus, out, "folder", num_workers=0, progress=False)
    assert cached.stat().st_mtime_ns == stamp
    assert (out / "manifest.jsonl").read_text() == first
    assert read_rejects(out) == []
    assert (out / "rejects.tsv").read_text() == "file\treason\n"

    os.utime(corpus / "s" / "u0.wav", ns=(stamp + 10**9, stamp + 10**9))  # source changed
    prepare_corpus(corpus, out, "folder", num_workers=0, progress=False)
    assert cached.stat().st_mtime_ns != stamp

    out2 = tmp_path / "out2"
    summary = prepare_corpus(corpus, out2, "folder", max_duration=0.6, num_workers=0,
                             progress=False)
    assert summary.num_utterances == 2
    assert read_rejects(out2) == [(str(corpus / "s" / "u2.wav"),
                                   "too long (0.8 s > max_duration 0.6 s)")]


def test_parallel_workers_match_in_process(tmp_path):
    corpus = make_messy_folder(tmp_path / "corpus")
    prepare_corpus(corpus, tmp_path / "a", "folder", num_workers=0, progress=False)
    prepare_corpus(corpus, tmp_path / "b", "folder", num_workers=2, progress=False)
    assert (tmp_path / "a/manifest.jsonl").read_text() == (tmp_path / "b/manifest.jsonl").read_text()
    assert read_rejects(tmp_path / "a") == read_rejects(tmp_path / "b")
    for wav in (tmp_path / "a" / "wavs").iterdir():
        assert np.array_equal(sf.read(wav)[0], sf.read(tmp_path / "b" / "wavs" / wav.name)[0])


def test_settings_guard(tmp_path):
    corpus = tmp_path / "corpus"
    write_clip(corpus / "s" / "u.wav", sample_rate=24000)
    out = tmp_path / "out"
    prepare_corpus(corpus, out, "folder", num_workers=0, progress=False)
    with pytest.raises(UserError, match=r"different settings \(sample_rate 16000 -> 8000\); pass "
                                        r"`overwrite=True`"):
        prepare_corpus(corpus, out, "folder", sample_rate=8000, num_workers=0, progress=False)
    assert read_manifest(out)[0].sample_rate == 16000  # untouched
    prepare_corpus(corpus, out, "folder", sample_rate=8000, overwrite=True, num_workers=0,
                   progress=False)
    utt = read_manifest(out)[0]
    assert utt.sample_rate == 8000 and sf.info(utt.audio).samplerate == 8000
    assert sf.info(utt.audio).frames == 2400

    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "manifest.jsonl").write_text("")
    with pytest.raises(UserError, match="no readable prepare.json"):
        prepare_corpus(corpus, foreign, "folder", num_workers=0, progress=False)


def test_user_errors(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        prepare_corpus(tmp_path / "missing", tmp_path / "out", "fsdd", progress=False)
    with pytest.raises(UserError, match="choose one of: .*folder"):
        prepare_corpus(tmp_path, tmp_path / "out", "nope", progress=False)
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    with pytest.raises(UserError, match=r"expected \{digit\}_\{speaker\}_\{n\}\.wav"):
        prepare_corpus(corpus, tmp_path / "out", "fsdd", progress=False)
    sf.write(str(corpus / "1_bob_7.wav"), np.zeros(800), 8000)
    with pytest.raises(UserError, match="None of the 1 audio file"):
        prepare_corpus(corpus, tmp_path / "out", "fsdd", num_workers=0, progress=False)
    assert read_rejects(tmp_path / "out")[0][1].startswith("silent")
    assert not (tmp_path / "out" / "manifest.jsonl").exists()
    with pytest.raises(UserError, match="separate output folder"):
        prepare_corpus(corpus, corpus, "fsdd", progress=False)
    with pytest.raises(UserError, match="sum to less than 1"):
        prepare_corpus(corpus, tmp_path / "o", "fsdd", valid_fraction=0.5, test_fraction=0.5)
    with pytest.raises(UserError, match="`heldout_speakers` only applies when `split_by` is 'speaker'"):
        prepare_corpus(corpus, tmp_path / "o", "fsdd", heldout_speakers=["bob"])
    with pytest.raises(UserError, match="Held-out speaker.* zed are not in"):
        prepare_corpus(corpus, tmp_path / "o", "fsdd", split_by="speaker", heldout_speakers=["zed"])


def test_out_dir_inside_folder_corpus(tmp_path):
    """An output folder inside the corpus would be read back as corpus audio on the next run (and
    the corpus around an output folder deleted by --overwrite): refused, nothing written."""
    write_clip(tmp_path / "spk" / "a.wav")
    out = tmp_path / "prepared"
    for _ in range(2):
        with pytest.raises(UserError, match="overlap"):
            prepare_corpus(tmp_path, out, "folder", num_workers=0, progress=False)
        assert not out.exists()


# ----------------------------------------------------------------------------------------------
# Splits


def fake_utterances(num_speakers: int = 8, per_speaker: int = 25) -> list[SourceUtterance]:
    return [SourceUtterance(id=f"s{s}_{i:03d}", path=f"/x/s{s}_{i}.wav", speaker=f"s{s}")
            for s in range(num_speakers) for i in range(per_speaker)]


def test_utterance_splits_reproducible():
    utts = fake_utterances()
    splits = assign_splits(utts, valid_fraction=0.1, test_fraction=0.1, seed=3)
    assert set(splits.values()) == {"train", "valid", "test"}
    assert 5 <= sum(v == "test" for v in splits.values()) <= 40
    shuffled = utts[:]
    random.Random(1).shuffle(shuffled)
    assert assign_splits(shuffled, valid_fraction=0.1, test_fraction=0.1, seed=3) == splits
    fewer = assign_splits(utts[7:], valid_fraction=0.1, test_fraction=0.1, seed=3)
    assert all(splits[k] == v for k, v in fewer.items())
    assert assign_splits(utts, valid_fraction=0.1, test_fraction=0.1, seed=4) != splits


def test_corpus_fixed_split_takes_precedence():
    utts = [SourceUtterance(id=f"g_{d}_{n}", path="x", speaker="g", split="test" if n < 5 else None)
            for d in range(10) for n in range(50)]
    splits = assign_splits(utts, valid_fraction=0.1, test_fraction=0.1)
    assert all((splits[u.id] == "test") == (u.split == "test") for u in utts)
    assert sum(v == "valid" for v in splits.values()) > 20


def test_small_corpus_gets_every_requested_split():
    utts = fake_utterances(num_speakers=1, per_speaker=3)
    splits = assign_splits(utts, valid_fraction=0.01, test_fraction=0.01)
    assert sorted(splits.values()) == ["test", "train", "valid"]
    single = assign_splits(utts[:1], valid_fraction=0.01, test_fraction=0.01)
    assert list(single.values()) == ["train"]


def test_speaker_splits():
    utts = fake_utterances(num_speakers=6, per_speaker=4)
    splits = assign_splits(utts, split_by="speaker", valid_fraction=0.05, test_fraction=0.05)
    per_speaker = {}
    for u in utts:
        per_speaker.setdefault(u.speaker, set()).add(splits[u.id])
    assert all(len(s) == 1 for s in per_speaker.values())  # whole speakers
    chosen = [s.pop() for s in per_speaker.values()]
    assert chosen.count("test") >= 1 and chosen.count("valid") >= 1 and "train" in chosen
    shuffled = utts[::-1]
    assert assign_splits(shuffled, split_by="speaker", valid_fraction=0.05,
                         test_fraction=0.05) == splits

    held = assign_splits(utts, split_by="speaker", heldout_speakers=["s2", "s4"],
                         valid_fraction=0.0)
    assert {u.speaker for u in utts if held[u.id] == "test"} == {"s2", "s4"}
    assert {held[u.id] for u in utts if u.speaker not in ("s2", "s4")} == {"train"}
    with pytest.raises(UserError, match="every speaker"):
        assign_splits(utts, split_by="speaker", heldout_speakers=[f"s{i}" for i in range(6)])


def test_prepare_fsdd_layout_splits(tmp_path):
    rec = tmp_path / "fsdd" / "recordings"
    for spk in ("ann", "ben", "cy"):
        for n in range(0, 12):
            write_clip(rec / f"{n % 10}_{spk}_{n}.wav", seconds=0.15, sample_rate=8000)
    out = tmp_path / "out"
    summary = prepare_corpus(tmp_path / "fsdd", out, "fsdd", sample_rate=8000, num_workers=0,
                             progress=False, valid_fraction=0.1)
    utts = read_manifest(out)
    assert summary.splits["test"] == 15 and summary.splits["valid"] >= 1
    assert all((u.split == "test") == (int(u.id.split("_")[2]) < 5) for u in utts)
    assert {u.id: u.split for u in utts} == assign_splits(
        find_utterances(tmp_path / "fsdd", "fsdd")[0], valid_fraction=0.1, test_fraction=0.05)
    assert utts[0].text == "zero" and utts[0].sample_rate == 8000

    by_spk = tmp_path / "by_speaker"
    prepare_corpus(tmp_path / "fsdd", by_spk, "fsdd", sample_rate=8000, split_by="speaker",
                   heldout_speakers=["ben"], num_workers=0, progress=False)
    assert {(u.speaker, u.split) for u in read_manifest(by_spk) if u.split == "test"} == {
        ("ben", "test")}
    rows = (by_spk / "speakers.tsv").read_text().splitlines()
    assert rows[2].startswith("ben\t12\t") and rows[2].endswith("\ttest")


def test_prepare_real_fsdd_subset(tmp_path):
    fsdd = shared_fsdd()
    if not (fsdd / "recordings").is_dir():
        pytest.skip(f"real FSDD data not found at {fsdd}")
    names = [f"{d}_{spk}_{n}.wav" for spk in ("george", "lucas") for d in (3, 8)
             for n in (0, 4, 5, 20, 49)]
    corpus = tmp_path / "recordings"
    corpus.mkdir()
    for name in names:
        (corpus / name).symlink_to(fsdd / "recordings" / name)
    summary = prepare_corpus(corpus, tmp_path / "out", "fsdd", sample_rate=8000, num_workers=2,
                             progress=False)
    assert (summary.num_utterances, summary.num_rejected, summary.num_speakers) == (20, 0, 2)
    assert summary.splits["test"] == 8
    utts = read_manifest(tmp_path / "out")
    assert {u.text for u in utts} == {"three", "eight"}
    for u in utts:
        info = sf.info(u.audio)
        assert info.samplerate == 8000 and info.frames == u.num_samples
        digit, n = u.id.split("_")[1:]
        source = fsdd / "recordings" / f"{digit}_{u.speaker}_{n}.wav"
        assert info.frames == sf.info(source).frames  # already 8 kHz: no resampling
