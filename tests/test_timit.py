"""The TIMIT corpus layout: LDC distribution and sample layout, NIST SPHERE audio, alignments."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from vqspeech.audio import load_audio
from vqspeech.data.alignments import Segment, read_alignment
from vqspeech.data.corpora import LAYOUTS, find_utterances
from vqspeech.data.manifest import read_manifest
from vqspeech.data.phones import PhoneFolding
from vqspeech.data.prepare import prepare_corpus, read_rejects

SA1_TEXT = "She had your dark suit in greasy wash water all year."


def write_sphere(path: Path, seconds: float = 0.3, freq: float = 200.0) -> Path:
    """A 16 kHz NIST SPHERE clip (16-bit PCM), as in the LDC TIMIT distribution."""
    path.parent.mkdir(parents=True, exist_ok=True)
    t = np.arange(int(seconds * 16000)) / 16000
    sf.write(str(path), 0.3 * np.sin(2 * np.pi * freq * t), 16000, format="NIST",
             subtype="PCM_16")
    return path


def write_timit_utterance(folder: Path, utt: str, upper: bool, riff_copy: bool = False) -> Path:
    """``utt`` audio (SPHERE) with its .PHN, .WRD and .TXT files, named in one case."""
    def name(suffix: str) -> str:
        return (utt + suffix).upper() if upper else (utt + suffix).lower()

    wav = write_sphere(folder / name(".wav"))
    if riff_copy:  # some copies carry a RIFF conversion next to the SPHERE file
        sf.write(str(folder / (name(".wav") + ".wav")), np.zeros(800), 16000)
    (folder / name(".txt")).write_text(f"0 4800 {SA1_TEXT}\n" if utt.lower() == "sa1"
                                       else f"0 4800 Utterance {utt}.\n")
    (folder / name(".phn")).write_text("0 2400 h#\n2400 3000 sh\n3000 4800 iy\n")
    (folder / name(".wrd")).write_text("2400 4800 she\n")
    return wav


def make_ldc_timit(root: Path, upper: bool = True) -> Path:
    """TIMIT/TRAIN|TEST/DR<n>/<speaker>/ with two speakers in train and one in test."""
    case = str.upper if upper else str.lower
    for split, dialect, speaker, utts in (("train", "dr1", "fcjf0", ("sa1", "si1027")),
                                          ("train", "dr2", "mkah0", ("sx12",)),
                                          ("test", "dr1", "mdab0", ("sa1",))):
        folder = root / case(split) / case(dialect) / case(speaker)
        for utt in utts:
            write_timit_utterance(folder, utt, upper, riff_copy=upper and utt == "sa1")
    return root


def test_sphere_files_read_through_load_audio(tmp_path):
    path = write_sphere(tmp_path / "SA1.WAV", seconds=0.25)
    assert path.read_bytes().startswith(b"NIST_1A")
    audio, sr = load_audio(path)
    assert sr == 16000 and audio.shape == (4000,)
    t = np.arange(4000) / 16000
    assert np.abs(audio - 0.3 * np.sin(2 * np.pi * 200 * t)).max() < 1e-3


def test_ldc_layout_upper_case_with_riff_copies(tmp_path):
    root = make_ldc_timit(tmp_path / "timit" / "TIMIT")
    riff_only = root / "TRAIN" / "DR2" / "MKAH0" / "SX99.WAV.wav"  # a conversion without original
    sf.write(str(riff_only), np.zeros(800), 16000)
    write_sphere(root / "TRAIN" / "DR1" / "FCJF0" / "NOTES.WAV")
    write_sphere(root / "TRAIN" / "DR1" / "SA1.WAV")                 # no speaker folder
    for corpus_dir in (tmp_path, tmp_path / "timit", root, root / "TRAIN"):
        utts, rejects = find_utterances(corpus_dir, "timit")
        ids = [u.id for u in utts]
        assert len(ids) == len(set(ids))                              # no .WAV.wav duplicates
        assert all(not u.path.endswith(".WAV.wav") or u.id == "dr2-mkah0_sx99" for u in utts)
        assert sorted(r[1] for r in rejects) == [
            "folder is not DR<n>/<speaker> (LDC TIMIT) or dr<n>-<speaker> (TIMIT sample)",
            "name does not match SA1.WAV, SI<n>.WAV or SX<n>.WAV"]
    utts, _ = find_utterances(tmp_path, "timit")
    assert [u.id for u in utts] == ["dr1-fcjf0_sa1", "dr1-fcjf0_si1027", "dr1-mdab0_sa1",
                                    "dr2-mkah0_sx12", "dr2-mkah0_sx99"]
    by_id = {u.id: u for u in utts}
    sa1 = by_id["dr1-fcjf0_sa1"]
    assert sa1.path == str(root / "TRAIN" / "DR1" / "FCJF0" / "SA1.WAV")
    assert sa1.speaker == "dr1-fcjf0" and sa1.text == SA1_TEXT and sa1.split is None
    assert sa1.alignment == str(root / "TRAIN" / "DR1" / "FCJF0" / "SA1.PHN")
    assert by_id["dr1-mdab0_sa1"].split == "test"
    assert by_id["dr2-mkah0_sx12"].text == "Utterance sx12."
    sx99 = by_id["dr2-mkah0_sx99"]
    assert sx99.path == str(riff_only) and sx99.text is None and sx99.alignment is None
    assert read_alignment(sa1.alignment) == [Segment(0.0, 0.15, "h#"),
                                             Segment(0.15, 0.1875, "sh"),
                                             Segment(0.1875, 0.3, "iy")]
    assert read_alignment(sa1.alignment, "words") == [Segment(0.15, 0.3, "she")]


def test_ldc_layout_lower_case(tmp_path):
    make_ldc_timit(tmp_path / "data", upper=False)
    utts, rejects = find_utterances(tmp_path, "timit")
    assert rejects == []
    assert [(u.id, u.speaker, u.split) for u in utts] == [
        ("dr1-fcjf0_sa1", "dr1-fcjf0", None), ("dr1-fcjf0_si1027", "dr1-fcjf0", None),
        ("dr1-mdab0_sa1", "dr1-mdab0", "test"), ("dr2-mkah0_sx12", "dr2-mkah0", None)]
    assert utts[0].alignment == str(tmp_path / "data/train/dr1/fcjf0/sa1.phn")
    assert utts[0].text == SA1_TEXT


def test_sample_layout(tmp_path):
    root = tmp_path / "timit"
    for speaker, utts in (("dr1-fvmh0", ("sa1", "sx206")), ("dr3-madc0", ("sa1",))):
        for utt in utts:
            write_timit_utterance(root / speaker, utt, upper=False)
    write_sphere(root / "dr1-fvmh0" / "extra.wav")
    (root / "spkrinfo.txt").write_text("not audio\n")
    utts, rejects = find_utterances(root, "timit")
    assert [(u.id, u.speaker, u.text, u.split) for u in utts] == [
        ("dr1-fvmh0_sa1", "dr1-fvmh0", SA1_TEXT, None),
        ("dr1-fvmh0_sx206", "dr1-fvmh0", "Utterance sx206.", None),
        ("dr3-madc0_sa1", "dr3-madc0", SA1_TEXT, None)]
    assert utts[1].alignment == str(root / "dr1-fvmh0" / "sx206.phn")
    assert rejects == [(str(root / "dr1-fvmh0" / "extra.wav"),
                        "name does not match SA1.WAV, SI<n>.WAV or SX<n>.WAV")]
    folded = PhoneFolding.load("timit61").fold_segments(read_alignment(utts[0].alignment))
    assert [s.label for s in folded] == ["sil", "sh", "iy"]


def test_prepare_reads_sphere(tmp_path):
    assert "timit" in LAYOUTS
    corpus = make_ldc_timit(tmp_path / "corpus" / "TIMIT")
    out = tmp_path / "prepared"
    summary = prepare_corpus(tmp_path / "corpus", out, "timit", sample_rate=8000,
                             valid_fraction=0.0, test_fraction=0.0, num_workers=0,
                             progress=False)
    # The silent RIFF copies next to the SA1 files are neither read nor rejected.
    assert (summary.num_utterances, summary.num_rejected, summary.num_speakers) == (4, 0, 3)
    utts = read_manifest(out / "manifest.jsonl")
    assert [u.id for u in utts] == ["dr1-fcjf0_sa1", "dr1-fcjf0_si1027", "dr1-mdab0_sa1",
                                    "dr2-mkah0_sx12"]
    assert summary.splits == {"train": 3, "valid": 0, "test": 1}
    assert read_rejects(out) == []
    by_id = {u.id: u for u in utts}
    sa1 = by_id["dr1-fcjf0_sa1"]
    assert sa1.speaker == "dr1-fcjf0" and sa1.text == SA1_TEXT
    assert sa1.duration == pytest.approx(0.3) and sa1.sample_rate == 8000
    assert Path(sa1.alignment) == corpus / "TRAIN" / "DR1" / "FCJF0" / "SA1.PHN"
    assert by_id["dr1-mdab0_sa1"].split == "test"
    audio, sr = sf.read(sa1.audio)
    assert sr == 8000 and len(audio) == 2400 and np.abs(audio).max() > 0.05
