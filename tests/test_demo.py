"""The espeak-ng binding and the embedded demo corpus (small sizes; a few seconds in total)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from vqspeech.data import demo, espeak
from vqspeech.data.manifest import read_manifest
from vqspeech.errors import UserError

SENTENCE = "The quick brown fox jumps over the lazy dog, then it sleeps."
SMALL = 12


def _median_f0(audio: np.ndarray, sr: int) -> float:
    """Median autocorrelation pitch over loud 40 ms frames."""
    n = int(0.04 * sr)
    lo, hi = int(sr / 400), int(sr / 60)
    pitches = []
    for i in range(0, len(audio) - n, n):
        frame = audio[i:i + n] - audio[i:i + n].mean()
        if np.sqrt(np.mean(frame ** 2)) < 0.05:
            continue
        ac = np.correlate(frame, frame, "full")[n - 1:]
        pitches.append(sr / (lo + int(np.argmax(ac[lo:hi]))))
    return float(np.median(pitches))


def _words_of(text: str) -> list[str]:
    return [t.strip(".,?!;:") for t in text.split()]


@pytest.fixture(scope="module")
def small_corpus(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo") / "corpus"
    return demo.make_demo_corpus(out, num_sentences=SMALL, seed=3, progress=False)


# ---------------------------------------------------------------------------------------------
# espeak binding


def test_two_voices_speak_and_differ():
    low = espeak.synthesize(SENTENCE, voice="en-us")
    high = espeak.synthesize(SENTENCE, voice="en-us+f3")
    for result in (low, high):
        assert result.sample_rate == espeak.SAMPLE_RATE == 22050
        assert result.audio.dtype == np.float32 and result.audio.ndim == 1
        assert 1.5 < result.duration < 8.0
        assert np.sqrt(np.mean(result.audio ** 2)) > 0.02
        assert np.abs(result.audio).max() <= 1.0
    assert _median_f0(high.audio, 22050) > 1.3 * _median_f0(low.audio, 22050)


def test_phones_tile_the_utterance_and_pauses_are_silent():
    result = espeak.synthesize(SENTENCE, voice="en", rate=190, pitch=40)
    phones = result.phones
    assert len(phones) > 25
    for start, end, label in phones:
        assert 0.0 <= start < end <= result.duration + 1e-9
        assert label and label == label.strip()
    for (_, end, _), (start, _, _) in zip(phones, phones[1:]):
        assert end == pytest.approx(start)  # contiguous: ordered, no overlap, no gap
    assert phones[0][0] < 0.05 and phones[-1][1] == pytest.approx(result.duration)
    covered = sum(end - start for start, end, _ in phones)
    assert covered > 0.95 * result.duration
    # Stress marks are kept as espeak gives them; the comma and the full stop give pauses.
    assert any(label.startswith("'") for _, _, label in phones)
    pauses = [(s, e) for s, e, label in phones if espeak.is_pause(label) and e - s > 0.05]
    assert len(pauses) >= 2
    level = np.sqrt(np.mean(result.audio ** 2))
    for start, end in pauses:
        segment = result.audio[int(start * 22050):int(end * 22050)]
        assert np.sqrt(np.mean(segment ** 2)) < 0.1 * level
    assert phones[-1][2].startswith("_")  # the trailing pause


def test_word_tier_lists_the_words_in_order():
    text = "Don't worry, there are three purple birds near the garage."
    result = espeak.synthesize(text, voice="en-us+m3")
    labels = [w for _, _, w in result.words]
    # espeak speaks some pairs as one word ("there are"); they share one interval.
    assert " ".join(labels).split() == _words_of(text)
    assert labels[0] == "Don't"
    phone_span = (result.phones[0][0], result.phones[-1][1])
    for (s1, e1, _), (s2, _, _) in zip(result.words, result.words[1:]):
        assert s1 < e1 <= s2 + 1e-9
    assert phone_span[0] <= result.words[0][0] and result.words[-1][1] <= phone_span[1]
    # Words hold no pause: the pause after "worry," lies between two word intervals.
    gap = result.words[2][0] - result.words[1][1]
    assert gap > 0.05


def test_bad_requests_raise_user_errors():
    with pytest.raises(UserError):
        espeak.synthesize("hello", voice="xx-nowhere")
    with pytest.raises(UserError):
        espeak.check_voice("en-us+nosuchvariant")
    with pytest.raises(UserError):
        espeak.synthesize("   ")
    with pytest.raises(UserError):
        espeak.synthesize("hello", rate=10)


def test_concurrent_calls_match_serial_ones():
    # espeak keeps its pitch-flutter phase between calls, so the same text may come out a few
    # samples longer or shorter depending on what was spoken before; labels do not change.
    texts = [f"Sentence number {w} is spoken here." for w in ("one", "two", "three", "four")]
    serial = [espeak.synthesize(t, voice="en-us+f4") for t in texts]
    results: dict[int, espeak.SynthResult] = {}

    def work(i: int) -> None:
        results[i] = espeak.synthesize(texts[i], voice="en-us+f4")

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(texts))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for i, expected in enumerate(serial):
        got = results[i]
        assert abs(len(got.audio) - len(expected.audio)) < 0.01 * len(expected.audio)
        assert [p[2] for p in got.phones] == [p[2] for p in expected.phones]
        assert [w[2] for w in got.words] == [w[2] for w in expected.words]


# ---------------------------------------------------------------------------------------------
# Speakers and sentences


def test_speaker_table():
    names = [s.name for s in demo.SPEAKERS]
    assert len(names) >= 6 and len(set(names)) == len(names)
    assert all(re.fullmatch(r"[a-z]+_[a-z0-9]+", n) for n in names)
    assert len({(s.voice, s.pitch, s.rate) for s in demo.SPEAKERS}) == len(names)
    assert len({s.rate for s in demo.SPEAKERS}) >= 4 and len({s.pitch for s in demo.SPEAKERS}) >= 4
    for speaker in demo.SPEAKERS:
        espeak.check_voice(speaker.voice)


def test_sentences_are_deterministic_and_varied():
    first = demo.make_sentences(50, seed=7)
    assert first == demo.make_sentences(50, seed=7)
    assert first != demo.make_sentences(50, seed=8)
    assert first[:10] == demo.make_sentences(10, seed=7)
    assert len(set(first)) == 50
    for sentence in first:
        assert demo.MIN_WORDS <= len(sentence.split()) <= demo.MAX_WORDS
        assert sentence[0].isupper() and sentence[-1] in ".?"
    vocabulary = {w.lower() for s in demo.make_sentences(240) for w in _words_of(s)}
    assert len(vocabulary) > 250


# ---------------------------------------------------------------------------------------------
# The corpus


def test_corpus_manifest_and_files(small_corpus):
    utts = read_manifest(small_corpus / "manifest.jsonl")
    assert len(utts) == SMALL
    assert len({u.id for u in utts}) == SMALL
    speakers = {s.name for s in demo.SPEAKERS}
    assert {u.speaker for u in utts} == {s.name for s in demo.SPEAKERS[:SMALL]}
    for utt in utts:
        assert re.fullmatch(rf"{utt.speaker}_\d{{4}}", utt.id) and utt.speaker in speakers
        assert utt.sample_rate == 22050 and utt.split == "train" and utt.text
        info = sf.info(utt.audio)
        assert info.samplerate == 22050 and info.subtype == "PCM_16" and info.channels == 1
        assert info.frames == utt.num_samples
        assert utt.audio.endswith(f"wavs/{utt.speaker}/{utt.id}.wav")
        assert (small_corpus / "text" / f"{utt.id}.txt").read_text().strip() == utt.text
    texts = [u.text for u in utts]
    assert texts == demo.make_sentences(SMALL, seed=3)
    table = (small_corpus / "speakers.tsv").read_text().splitlines()
    assert table[0].split("\t") == ["speaker", "voice", "pitch", "rate", "pitch_range"]
    assert len(table) == len(demo.SPEAKERS) + 1
    assert "espeak-ng" in (small_corpus / "README.md").read_text()
    assert json.loads((small_corpus / "demo.json").read_text())["num_sentences"] == SMALL


def test_textgrids_read_back(small_corpus):
    from praatio import textgrid

    for utt in read_manifest(small_corpus):
        grid = textgrid.openTextgrid(utt.alignment, includeEmptyIntervals=False)
        assert list(grid.tierNames) == ["words", "phones"]
        assert grid.maxTimestamp == pytest.approx(utt.duration, abs=1e-6)
        words = grid.getTier("words").entries
        phones = grid.getTier("phones").entries
        assert " ".join(w.label for w in words).split() == _words_of(utt.text)
        assert sum(p.end - p.start for p in phones) > 0.95 * utt.duration
        assert all(a.end <= b.start + 1e-9 for a, b in zip(phones, phones[1:]))
        full = textgrid.openTextgrid(utt.alignment, includeEmptyIntervals=True)
        for tier in (full.getTier("words"), full.getTier("phones")):
            assert tier.entries[0].start == 0.0
            assert tier.entries[-1].end == pytest.approx(utt.duration)


def test_rerun_with_same_settings_is_a_no_op(small_corpus):
    manifest = small_corpus / "manifest.jsonl"
    wav = small_corpus / read_manifest(manifest)[0].audio
    before = (manifest.stat().st_mtime_ns, wav.stat().st_mtime_ns)
    assert demo.make_demo_corpus(small_corpus, num_sentences=SMALL, seed=3,
                                 progress=False) == small_corpus
    assert (manifest.stat().st_mtime_ns, wav.stat().st_mtime_ns) == before


def test_other_settings_are_refused(small_corpus):
    with pytest.raises(UserError, match="other settings"):
        demo.make_demo_corpus(small_corpus, num_sentences=SMALL + 1, seed=3, progress=False)
    with pytest.raises(UserError, match="seed"):
        demo.make_demo_corpus(small_corpus, num_sentences=SMALL, seed=4, progress=False)
    assert len(read_manifest(small_corpus)) == SMALL


def test_partial_corpus_is_rebuilt_by_the_same_command_and_others_need_overwrite(tmp_path):
    out = demo.make_demo_corpus(tmp_path / "c", num_sentences=3, seed=0, progress=False)
    (out / "notes.txt").write_text("mine")
    (out / "manifest.jsonl").unlink()  # as if the run had been interrupted
    assert not demo.is_complete_demo_corpus(out)
    demo.make_demo_corpus(out, num_sentences=3, seed=0, progress=False)  # the same command: rebuilt
    assert demo.is_complete_demo_corpus(out) and len(read_manifest(out)) == 3
    (out / "manifest.jsonl").unlink()
    with pytest.raises(UserError, match="other settings"):
        demo.make_demo_corpus(out, num_sentences=2, seed=1, progress=False)
    demo.make_demo_corpus(out, num_sentences=2, seed=1, overwrite=True, progress=False)
    assert demo.is_complete_demo_corpus(out)
    assert len(read_manifest(out)) == 2
    assert len(list((out / "wavs").rglob("*.wav"))) == 2
    assert (out / "notes.txt").read_text() == "mine"


def test_fresh_processes_build_identical_corpora(tmp_path):
    root = Path(__file__).resolve().parents[1]
    code = ("import sys; from vqspeech.data.demo import make_demo_corpus; "
            "make_demo_corpus(sys.argv[1], num_sentences=4, seed=5, progress=False)")
    for name in ("a", "b"):
        subprocess.run([sys.executable, "-c", code, str(tmp_path / name)], cwd=root, check=True)
    first = tmp_path / "a"
    files = sorted(p.relative_to(first) for p in first.rglob("*") if p.is_file())
    assert len(files) == 4 * 3 + 5  # wav, TextGrid, text per sentence; manifest, README, speakers, demo.json, mark
    for rel in files:
        assert (first / rel).read_bytes() == (tmp_path / "b" / rel).read_bytes(), rel
