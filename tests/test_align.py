"""Forced alignment with pocketsphinx (`vqspeech align`): words come out, times are sane, coverage
is reported, runs resume, the manifest points at the alignments."""

from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import run_cli
from corpus_builders import make_fsdd_corpus
from helpers import shared_fsdd
from vqspeech.data.align import (AlignmentFailed, PocketsphinxAligner, align_corpus, attach_alignments,
                            espeak_pronunciation, transcript_words)
from vqspeech.data import espeak
from vqspeech.data.alignments import read_alignment
from vqspeech.data.manifest import read_manifest
from vqspeech.data.phones import PHONE_CLASSES, PhoneFolding
from vqspeech.data.prepare import prepare_corpus
from vqspeech.errors import UserError


@pytest.fixture(scope="module")
def aligner() -> PocketsphinxAligner:
    return PocketsphinxAligner()


def test_transcript_words():
    assert transcript_words("Please call Stella.  Ask her to bring these things") == \
        ["please", "call", "stella", "ask", "her", "to", "bring", "these", "things"]
    assert transcript_words("'Don't' -- the SIX spoons, of 42 peas!") == \
        ["don't", "the", "six", "spoons", "of", "42", "peas"]
    assert transcript_words("...") == []


def test_aligns_synthetic_speech_close_to_the_truth(aligner):
    result = espeak.synthesize("one two three four", voice="en-us")
    words, phones, attempt = aligner.align(result.audio, result.sample_rate, "One, two; three four.")
    assert [w.label for w in words] == ["one", "two", "three", "four"]
    # word boundaries within 60 ms of espeak's own (exact) word timings
    truth = [(s, e) for s, e, _ in result.words]
    assert len(truth) == 4
    for w, (start, end) in zip(words, truth):
        assert abs(w.start - start) < 0.06 and abs(w.end - end) < 0.06, (w, start, end)
    # phones tile the audio in order, inside its duration, and are ARPAbet (+ sil)
    assert phones[0].start == 0.0 and phones[-1].end <= result.duration + 1e-6
    assert all(a.end == pytest.approx(b.start) for a, b in zip(phones, phones[1:]))
    folding = PhoneFolding.load("arpabet")
    assert {folding.fold(p.label) for p in phones} <= set(PHONE_CLASSES)
    assert [p.label for p in phones if p.label != "sil"][:3] == ["W", "AH", "N"]


def test_word_missing_from_the_dictionary_gets_an_espeak_pronunciation(aligner):
    assert espeak_pronunciation("zorblax") is not None
    phones = espeak_pronunciation("zorblax").split()
    assert phones[0] == "Z" and {"B", "L", "K", "S"} <= set(phones)
    result = espeak.synthesize("seven zorblax", voice="en-us")
    words, _, _ = aligner.align(result.audio, result.sample_rate, "seven zorblax")
    assert [w.label for w in words] == ["seven", "zorblax"]


def test_silence_does_not_align(aligner):
    with pytest.raises(AlignmentFailed):
        aligner.align(np.zeros(16000, dtype=np.float32), 16000, "hello world")
    with pytest.raises(AlignmentFailed, match="no words"):
        aligner.align(np.zeros(16000, dtype=np.float32), 16000, "?!")


@pytest.fixture(scope="module")
def digits_corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("digits")
    return make_fsdd_corpus(root / "fsdd", speakers=("alice", "bob"), digits=range(10), takes=1)


def test_align_corpus_writes_textgrids_resumes_and_reports(tmp_path, digits_corpus):
    out = tmp_path / "align"
    summary = align_corpus(digits_corpus["root"], out, "fsdd", num_workers=2, progress=False)
    assert summary.total == 20 and summary.aligned + summary.failed == 20
    assert summary.coverage == pytest.approx(summary.aligned / 20) and summary.coverage >= 0.8
    assert summary.seconds_per_file > 0
    grids = sorted(out.glob("*.TextGrid"))
    assert len(grids) == summary.aligned
    for grid in grids:
        words = read_alignment(grid, tier="words")
        assert [w.label for w in words] == [digits_corpus["texts"][grid.stem]]
        assert read_alignment(grid)  # a phones tier
    record = json.loads((out / "align.json").read_text())
    assert record["summary"]["aligned"] == summary.aligned and record["layout"] == "fsdd"

    # a second run reuses every TextGrid; a deleted one is aligned again
    grids[0].unlink()
    again = align_corpus(digits_corpus["root"], out, "fsdd", num_workers=1, progress=False)
    assert again.reused == summary.aligned - 1 and again.aligned == summary.aligned
    assert grids[0].is_file()

    # another source into the same folder is refused
    with pytest.raises(UserError, match="`overwrite=True`"):
        align_corpus(digits_corpus["root"], out, "folder", progress=False)


def test_failures_are_listed_and_the_manifest_points_at_alignments(tmp_path, digits_corpus):
    prepared = tmp_path / "prepared"
    prepare_corpus(digits_corpus["root"], prepared, "fsdd", sample_rate=8000, num_workers=0,
                   progress=False)
    utts = read_manifest(prepared / "manifest.jsonl")
    utts[0].text = None  # one utterance without a transcript
    from vqspeech.data.manifest import write_manifest
    write_manifest(prepared / "manifest.jsonl", utts)

    out = tmp_path / "align"
    summary = align_corpus(prepared / "manifest.jsonl", out, manifest=prepared / "manifest.jsonl",
                           num_workers=1, progress=False)
    assert summary.total == 20 and summary.failed >= 1
    failed = (out / "failed.tsv").read_text().splitlines()
    assert failed[0] == "id\tfile\treason"
    assert any(line.startswith(f"{utts[0].id}\t") and line.endswith("no transcript") for line in failed)
    pointed = {u.id: u.alignment for u in read_manifest(prepared / "manifest.jsonl")}
    assert pointed[utts[0].id] is None
    aligned = {p.stem for p in out.glob("*.TextGrid")}
    assert {i for i, a in pointed.items() if a} == aligned
    assert all(read_alignment(a, tier="words") for a in pointed.values() if a)
    assert attach_alignments(prepared, out) == len(aligned)  # idempotent


def test_cli_prints_one_json_line(tmp_path, digits_corpus, capsys):
    code = run_cli(["align", digits_corpus["root"], tmp_path / "out", "--layout", "fsdd",
                    "--limit", "4", "--num_workers", "1"])
    assert code == 0
    lines = capsys.readouterr().out.strip().splitlines()
    record = json.loads(lines[-1])
    assert {"total", "aligned", "coverage", "seconds_per_file"} <= set(record)
    assert record["total"] == 4
    code = run_cli(["align", tmp_path / "missing", tmp_path / "out2", "--layout", "fsdd"])
    assert code == 2
    assert "does not exist" in capsys.readouterr().err


@pytest.mark.slow
def test_real_fsdd_coverage(tmp_path):
    """Every 8th file of ../shared/data/fsdd (250 real recordings at 8 kHz): at least 98% align."""
    root = shared_fsdd()
    if not root.is_dir():
        pytest.skip(f"real FSDD not found at {root}")
    from vqspeech.data.corpora import find_utterances

    utts, _ = find_utterances(root, "fsdd")
    folder = tmp_path / "subset" / "recordings"
    folder.mkdir(parents=True)
    for utt in utts[::8]:
        (folder / utt.path.rsplit("/", 1)[1]).symlink_to(utt.path)
    summary = align_corpus(folder.parent, tmp_path / "align", "fsdd", progress=False)
    assert summary.total == len(utts[::8])
    assert summary.coverage >= 0.98, summary
