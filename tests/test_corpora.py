"""Corpus readers: every layout on a tiny corpus built in tmp_path, plus the real FSDD if present."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from vqspeech.data.corpora import (LAYOUTS, SourceUtterance, find_utterances, layout_options,
                                   register_layout, sanitize_id)
from vqspeech.data.manifest import Utterance, write_manifest
from vqspeech.errors import UserError
from vqspeech.fileio import is_safe_name

from helpers import shared_fsdd


def write_tone(path: Path, seconds: float = 0.2, sample_rate: int = 16000, freq: float = 220.0,
               fmt: str | None = None) -> Path:
    """A short sine clip; the format follows the extension unless ``fmt`` is given."""
    path.parent.mkdir(parents=True, exist_ok=True)
    t = np.arange(int(seconds * sample_rate)) / sample_rate
    sf.write(str(path), 0.3 * np.sin(2 * np.pi * freq * t), sample_rate, format=fmt)
    return path


def write_text(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


# ----------------------------------------------------------------------------------------------
# vctk


def make_vctk_092(root: Path) -> Path:
    for spk in ("p225", "p226", "p315"):
        for num in ("001", "002"):
            for mic in ("mic1", "mic2"):
                write_tone(root / "wav48_silence_trimmed" / spk / f"{spk}_{num}_{mic}.flac",
                           sample_rate=48000)
            if spk != "p315":  # VCTK p315 ships no transcripts
                write_text(root / "txt" / spk / f"{spk}_{num}.txt", f"Text {spk} {num}.\n")
    write_tone(root / "wav48_silence_trimmed" / "p225" / "p225_extra.flac", sample_rate=48000)
    write_text(root / "wav48_silence_trimmed" / "log.txt", "not audio, ignored")
    return root


def test_vctk_092_mic1_default(tmp_path):
    root = make_vctk_092(tmp_path / "vctk")
    utts, rejects = find_utterances(root, "vctk")
    assert [u.id for u in utts] == ["p225_001", "p225_002", "p226_001", "p226_002",
                                    "p315_001", "p315_002"]
    assert all(u.path.endswith("_mic1.flac") for u in utts)
    by_id = {u.id: u for u in utts}
    assert by_id["p226_002"].speaker == "p226"
    assert by_id["p226_002"].text == "Text p226 002."
    assert by_id["p315_001"].text is None
    assert all(u.split is None and u.alignment is None for u in utts)
    assert rejects == [(str(root / "wav48_silence_trimmed/p225/p225_extra.flac"),
                        "name does not match <spk>_<nnn>_mic1.flac")]


def test_vctk_092_mic2_and_bad_mic(tmp_path):
    root = make_vctk_092(tmp_path / "vctk")
    utts, _ = find_utterances(root, "vctk", mic="mic2")
    assert len(utts) == 6 and all(u.path.endswith("_mic2.flac") for u in utts)
    assert utts[0].id == "p225_001"
    with pytest.raises(UserError, match="mic='mic1' or mic='mic2'"):
        find_utterances(root, "vctk", mic="mic3")


def test_vctk_080_and_nested_corpus_folder(tmp_path):
    root = tmp_path / "download" / "VCTK-Corpus"
    for spk in ("p225", "p226"):
        write_tone(root / "wav48" / spk / f"{spk}_001.wav", sample_rate=48000)
        write_text(root / "txt" / spk / f"{spk}_001.txt", "Please call Stella.")
    for corpus_dir in (root, root.parent):  # the corpus folder or the folder holding VCTK-Corpus/
        utts, rejects = find_utterances(corpus_dir, "vctk")
        assert [(u.id, u.speaker, u.text) for u in utts] == [
            ("p225_001", "p225", "Please call Stella."), ("p226_001", "p226", "Please call Stella.")]
        assert rejects == []


# ----------------------------------------------------------------------------------------------
# librispeech / libritts


def make_librispeech_subset(subset: Path, speakers=("103", "1034")) -> Path:
    for spk in speakers:
        chapter = subset / spk / "1240"
        lines = []
        for utt in ("0000", "0001"):
            write_tone(chapter / f"{spk}-1240-{utt}.flac")
            lines.append(f"{spk}-1240-{utt} CHAPTER {spk} UTTERANCE {utt}")
        write_text(chapter / f"{spk}-1240.trans.txt", "\n".join(lines) + "\n")
    return subset


def test_librispeech_subset_folder(tmp_path):
    subset = make_librispeech_subset(tmp_path / "train-clean-100")
    write_tone(subset / "103" / "1240" / "stray.flac")
    utts, rejects = find_utterances(subset, "librispeech")
    assert [u.id for u in utts] == ["103-1240-0000", "103-1240-0001",
                                    "1034-1240-0000", "1034-1240-0001"]
    assert utts[1].speaker == "103"
    assert utts[1].text == "CHAPTER 103 UTTERANCE 0001"
    assert rejects == [(str(subset / "103/1240/stray.flac"),
                        "name does not match <spk>-<chapter>-<utt>.flac")]


def test_librispeech_parent_folder_and_subset_option(tmp_path):
    make_librispeech_subset(tmp_path / "LibriSpeech" / "train-clean-100", speakers=("103",))
    make_librispeech_subset(tmp_path / "LibriSpeech" / "dev-clean", speakers=("84",))
    utts, _ = find_utterances(tmp_path, "librispeech")
    assert sorted({u.speaker for u in utts}) == ["103", "84"]
    utts, _ = find_utterances(tmp_path, "librispeech", subset="dev-clean")
    assert {u.speaker for u in utts} == {"84"}
    with pytest.raises(UserError, match="subset 'test-other' is not in"):
        find_utterances(tmp_path, "librispeech", subset="test-other")


def test_libritts(tmp_path):
    subset = tmp_path / "LibriTTS" / "dev-clean"
    for spk in ("84", "174"):
        utt_id = f"{spk}_121123_000008_000000"
        write_tone(subset / spk / "121123" / f"{utt_id}.wav", sample_rate=24000)
        write_text(subset / spk / "121123" / f"{utt_id}.normalized.txt", "Hello there.")
        write_text(subset / spk / "121123" / f"{utt_id}.original.txt", "Hello there!")
    utts, rejects = find_utterances(tmp_path, "libritts")
    assert [(u.id, u.speaker, u.text) for u in utts] == [
        ("174_121123_000008_000000", "174", "Hello there."),
        ("84_121123_000008_000000", "84", "Hello there.")]
    assert rejects == []


# ----------------------------------------------------------------------------------------------
# fsdd / folder / demo


def test_fsdd_layout(tmp_path):
    rec = tmp_path / "fsdd" / "recordings"
    for name in ("0_george_0.wav", "7_george_4.wav", "7_george_5.wav", "9_lucas_49.wav"):
        write_tone(rec / name, sample_rate=8000)
    write_tone(rec / "george_extra.wav", sample_rate=8000)
    write_text(rec / "README.md", "not audio")
    for corpus_dir in (tmp_path / "fsdd", rec):
        utts, rejects = find_utterances(corpus_dir, "fsdd")
        assert [(u.id, u.speaker, u.text, u.split) for u in utts] == [
            ("george_0_0", "george", "zero", "test"), ("george_7_4", "george", "seven", "test"),
            ("george_7_5", "george", "seven", None), ("lucas_9_49", "lucas", "nine", None)]
        assert rejects == [(str(rec / "george_extra.wav"),
                            "name does not match {digit}_{speaker}_{n}.wav")]


def test_folder_layout(tmp_path):
    root = tmp_path / "my corpus"
    write_tone(root / "alice" / "hello.wav")
    write_text(root / "alice" / "hello.txt", "  hello   world \n")
    write_tone(root / "alice" / "take 2 (final).flac")
    write_tone(root / "bob" / "session1" / "a.ogg", fmt="OGG")
    write_tone(root / "bob" / "x.wav")
    write_tone(root / "bob" / "x.flac")          # same id as x.wav
    write_tone(root / ".hidden" / "skip.wav")    # hidden folders are not part of a corpus
    write_text(root / "bob" / "notes.md", "not audio")
    utts, rejects = find_utterances(root, "folder")
    assert [(u.id, u.speaker) for u in utts] == [
        ("alice_hello", "alice"), ("alice_take_2_final_", "alice"),
        ("bob_x", "bob"), ("session1_a", "session1")]
    assert utts[0].text == "hello world" and utts[1].text is None
    assert utts[2].path.endswith("x.flac")
    assert rejects == [(str(root / "bob" / "x.wav"),
                        f"duplicate id 'bob_x' (also used by {root / 'bob' / 'x.flac'})")]


def test_folder_reads_librispeech_excerpt_naming(tmp_path):
    write_tone(tmp_path / "103" / "103-1240-0000.flac")
    utts, _ = find_utterances(tmp_path, "folder")
    assert [(u.id, u.speaker) for u in utts] == [("103_103-1240-0000", "103")]


def test_demo_layout(tmp_path):
    root = tmp_path / "demo"
    wav = write_tone(root / "wavs" / "s1_0001.wav")
    grid = write_text(root / "alignments" / "s1_0001.TextGrid", "grid")
    write_manifest(root / "manifest.jsonl", [
        Utterance(id="s1_0001", audio=str(wav), speaker="s1", duration=0.2, sample_rate=16000,
                  text="a test", alignment=str(grid))])
    utts, rejects = find_utterances(root, "demo")
    assert utts == [SourceUtterance(id="s1_0001", path=str(wav.resolve()), speaker="s1",
                                    text="a test", alignment=str(grid.resolve()), split=None)]
    assert rejects == []


# ----------------------------------------------------------------------------------------------
# registry and errors


def test_registry_and_ids():
    assert {"vctk", "librispeech", "libritts", "fsdd", "folder", "demo"} <= set(LAYOUTS)
    assert layout_options("vctk") == {"mic": "mic1"}
    assert layout_options("fsdd") == {}
    assert sanitize_id("a_b-c.d") == "a_b-c.d"  # plain names stay as they are
    assert sanitize_id("a b/c:d") == "a_b_c_d"  # ASCII punctuation: an underscore, readable
    assert sanitize_id(".hidden") == "_.hidden" and sanitize_id("-x") == "_-x"
    assert len({sanitize_id(f"{name}_5") for name in ("张三", "李四", "王五")}) == 3  # kept apart by a hash
    assert all(is_safe_name(sanitize_id(name)) for name in ("张三_5", " a", "-", ".", "a\udcffb"))


def test_register_layout_and_unsafe_ids(tmp_path):
    @register_layout("test-unsafe", expected="anything")
    def read(root: Path):
        return [SourceUtterance(id="ok", path="a.wav", speaker="s"),
                SourceUtterance(id="bad/id", path="b.wav", speaker="s")], []

    try:
        utts, rejects = find_utterances(tmp_path, "test-unsafe")
        assert [u.id for u in utts] == ["ok"]
        assert rejects == [("b.wav", "id 'bad/id' is not safe as a file name")]
    finally:
        del LAYOUTS["test-unsafe"]


def test_errors(tmp_path):
    with pytest.raises(UserError, match=r"Unknown corpus layout 'nope'; choose one of: .*fsdd"):
        find_utterances(tmp_path, "nope")
    with pytest.raises(UserError, match="does not exist"):
        find_utterances(tmp_path / "missing", "fsdd")
    with pytest.raises(UserError, match=r"expected \{digit\}_\{speaker\}_\{n\}\.wav"):
        find_utterances(tmp_path, "fsdd")
    write_tone(tmp_path / "hello.wav")
    with pytest.raises(UserError, match=r"all 1 audio file\(s\) were refused, e.g. .*hello.wav: name does not match"):
        find_utterances(tmp_path, "fsdd")
    with pytest.raises(UserError, match="has no option mic"):
        find_utterances(tmp_path, "fsdd", mic="mic1")
    with pytest.raises(UserError, match="expected manifest.jsonl"):
        find_utterances(tmp_path, "demo")


def test_real_fsdd():
    fsdd = shared_fsdd()
    if not (fsdd / "recordings").is_dir():
        pytest.skip(f"real FSDD data not found at {fsdd}")
    utts, rejects = find_utterances(fsdd, "fsdd")
    assert len(utts) == 2000 and rejects == []
    assert {u.speaker for u in utts} == {"george", "jackson", "lucas", "nicolas"}
    assert sum(u.split == "test" for u in utts) == 200
    assert {u.text for u in utts} == {"zero", "one", "two", "three", "four", "five", "six",
                                     "seven", "eight", "nine"}
