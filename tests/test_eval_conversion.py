"""Conversion and reconstruction metrics: WER, recognition, speaker similarity, MCD, end to end."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from helpers import shared_fsdd
from vqspeech.audio import load_audio
from vqspeech.errors import UserError
from vqspeech.eval.mcd import dtw_path, mel_cepstral_distortion
from vqspeech.eval.recognition import (DIGIT_WORDS, Recognizer, bigram_arpa, edit_distance, is_digit_transcript,
                                       normalize_words, word_error_rate, word_errors)

FSDD_SPEAKERS = ("george", "jackson", "lucas", "nicolas")


def fsdd_file(digit: int, speaker: str, index: int) -> Path:
    return shared_fsdd() / "recordings" / f"{digit}_{speaker}_{index}.wav"


@pytest.fixture(scope="module")
def fsdd_available():
    files = [fsdd_file(d, s, i) for d in range(10) for s in FSDD_SPEAKERS for i in range(20)]
    if not all(f.is_file() for f in files):
        pytest.skip(f"real FSDD recordings not found under {shared_fsdd()} (set VQSPEECH_SHARED_DATA)")


@pytest.fixture(scope="module")
def embedder():
    from vqspeech.eval.speaker_similarity import SpeakerEmbedder

    return SpeakerEmbedder()


# ---- word error rate


def test_edit_distance_hand_cases():
    assert edit_distance([], []) == 0
    assert edit_distance("a b c".split(), "a b c".split()) == 0
    assert edit_distance("a b c".split(), "a x c".split()) == 1  # substitution
    assert edit_distance("a b c".split(), "a c".split()) == 1  # deletion
    assert edit_distance("a b c".split(), "a b b c".split()) == 1  # insertion
    assert edit_distance("a b c".split(), []) == 3
    assert edit_distance([], "a b".split()) == 2
    assert edit_distance("the cat sat".split(), "cat sat down".split()) == 2
    assert edit_distance("kitten", "sitting") == 3  # any sequences
    assert word_errors(["one"], ["two", "one"]) == (1, 1)
    # corpus level: all edits over all reference words, not a mean of per-utterance rates
    assert word_error_rate([["a", "b", "c", "d"], ["e"]], [["a", "b", "c", "d"], ["x"]]) == pytest.approx(0.2)
    assert np.isnan(word_error_rate([[]], [["a"]]))


def test_digit_normalisation():
    assert normalize_words("Oh", digits=True) == ["zero"]
    assert normalize_words("7", digits=True) == ["seven"]
    assert normalize_words("42", digits=True) == ["four", "two"]
    assert normalize_words("Seven, eight!", digits=False) == ["seven", "eight"]
    assert normalize_words(None) == []
    assert is_digit_transcript("nine") and is_digit_transcript("0")
    assert not is_digit_transcript("nine one") and not is_digit_transcript("hello") and not is_digit_transcript("")


def test_recognizes_real_fsdd_digits(fsdd_available):
    recognizer = Recognizer(digits=True, single_word=True)
    refs, hyps = [], []
    for k in range(20):  # two of each digit, spread over the four speakers
        digit, speaker = k % 10, FSDD_SPEAKERS[k % 4]
        audio, sr = load_audio(fsdd_file(digit, speaker, 30 + k))
        refs.append([DIGIT_WORDS[digit]])
        hyps.append(recognizer.transcribe(audio, sr))
    assert all(len(h) == 1 and h[0] in DIGIT_WORDS for h in hyps)  # the grammar holds
    error = word_error_rate(refs, hyps)
    assert error < 0.4, (error, hyps)  # chance is 0.9; measured about 0.17 on FSDD


def _read_arpa(text: str):
    unigrams, bigrams, section = {}, {}, None
    for line in text.splitlines():
        if line.startswith("\\"):
            section = line
        elif line.strip() and section in ("\\1-grams:", "\\2-grams:"):
            fields = line.split("\t")
            if section == "\\1-grams:":
                unigrams[fields[1]] = (10 ** float(fields[0]), 10 ** float(fields[2]) if len(fields) > 2 else 1.0)
            else:
                bigrams[tuple(fields[1].split())] = 10 ** float(fields[0])
    return unigrams, bigrams


def test_bigram_language_model_is_a_distribution_after_every_word():
    sentences = [["the", "cat", "sat"], ["the", "dog", "sat"], ["a", "cat", "ran"], ["the", "cat"]]
    unigrams, bigrams = _read_arpa(bigram_arpa(sentences, discount=0.5))
    words = [w for w in unigrams if w != "<s>"]
    assert unigrams["the"][0] == pytest.approx(3 / 15)  # 11 words + 4 sentence ends
    assert bigrams[("the", "cat")] == pytest.approx((2 - 0.5) / 3)
    for history in unigrams:  # seen pairs + backed-off unseen words = 1
        if history == "</s>":
            continue
        total = sum(bigrams[(history, w)] if (history, w) in bigrams else unigrams[history][1] * unigrams[w][0]
                    for w in words)
        assert total == pytest.approx(1.0), history


def test_corpus_language_model_recognizes_held_out_demo_sentences(demo_manifest):
    from vqspeech.data.manifest import read_manifest
    from vqspeech.eval.recognition import normalize_words, word_error_rate

    utts = read_manifest(demo_manifest)
    train = [u.text for u in utts if u.split == "train"]
    held_out = [u for u in utts if u.split != "train"][:3]
    closed, general = Recognizer(sentences=train), Recognizer()
    refs = [normalize_words(u.text) for u in held_out]
    audio = [load_audio(u.audio) for u in held_out]
    closed_wer = word_error_rate(refs, [closed.transcribe(a, sr) for a, sr in audio])
    general_wer = word_error_rate(refs, [general.transcribe(a, sr) for a, sr in audio])
    assert closed_wer < 0.85 and closed_wer < general_wer - 0.15, (closed_wer, general_wer)


def test_recognizer_survives_silence_and_tiny_input():
    recognizer = Recognizer(digits=True, single_word=True)
    for audio in (np.zeros(8000, np.float32), np.zeros(3, np.float32)):
        words = recognizer.transcribe(audio, 8000)
        assert all(w in DIGIT_WORDS for w in words)


# ---- speaker similarity


def test_speaker_similarity_separates_real_speakers(fsdd_available, embedder):
    from vqspeech.eval.speaker_similarity import cosine_similarity

    def signals(speaker, indices):
        return [load_audio(fsdd_file(d, speaker, i)) for d, i in indices]

    # references: five utterances per speaker (indices 10-14); tests: three others (indices 0-2)
    centroids = embedder.centroids({s: signals(s, [(d, 10 + d) for d in range(5)]) for s in FSDD_SPEAKERS})
    assert set(centroids) == set(FSDD_SPEAKERS)
    assert all(np.linalg.norm(c) == pytest.approx(1.0, abs=1e-5) for c in centroids.values())
    correct = total = 0
    for speaker in FSDD_SPEAKERS:
        for audio, sr in signals(speaker, [(5 + i, i) for i in range(3)]):
            e = embedder.embed(audio, sr)
            sims = {s: cosine_similarity(e, c) for s, c in centroids.items()}
            correct += max(sims, key=sims.get) == speaker
            total += 1
    assert correct / total >= 0.75, f"{correct} of {total} closest to their own speaker"


def test_embedding_of_silent_or_short_audio_does_not_fail(embedder):
    for audio in (np.zeros(0), np.zeros(10), np.zeros(16000), 0.01 * np.ones(400)):
        e = embedder.embed(audio.astype(np.float32), 8000)
        assert e.shape == (256,) and np.isfinite(e).all()


# ---- MCD


def _speechlike(sample_rate: int = 8000, seconds: float = 1.0) -> np.ndarray:
    """Harmonics of a gliding f0 with a moving spectral envelope, in syllable-like bursts."""
    t = np.arange(int(sample_rate * seconds)) / sample_rate
    f0 = 120 + 40 * np.sin(2 * np.pi * 1.5 * t)
    phase = 2 * np.pi * np.cumsum(f0) / sample_rate
    envelope = np.clip(np.sin(2 * np.pi * 2 * t), 0, None)
    x = sum(np.sin(k * phase) / k * (1 + np.cos(2 * np.pi * k * f0 / 900)) for k in range(1, 25))
    return (0.1 * x * envelope).astype(np.float32)


def test_dtw_path_is_the_minimum_cost_path():
    rng = np.random.default_rng(0)
    for n, m in [(1, 1), (1, 6), (6, 1), (7, 9), (15, 11)]:
        cost = rng.random((n, m))
        best = np.full((n + 1, m + 1), np.inf)
        best[0, 0] = 0
        for i in range(1, n + 1):
            for j in range(1, m + 1):
                best[i, j] = cost[i - 1, j - 1] + min(best[i - 1, j], best[i, j - 1], best[i - 1, j - 1])
        rows, cols = dtw_path(cost)
        assert (rows[0], cols[0], rows[-1], cols[-1]) == (0, 0, n - 1, m - 1)
        assert np.all(np.diff(rows) >= 0) and np.all(np.diff(cols) >= 0)
        assert np.all(np.diff(rows) + np.diff(cols) >= 1)
        assert cost[rows, cols].sum() == pytest.approx(best[n, m])


def test_mcd_identical_shifted_noisy():
    sr = 8000
    x = _speechlike(sr)
    assert mel_cepstral_distortion(x, x, sr) == pytest.approx(0.0, abs=1e-9)
    shifted = np.roll(x, sr // 100)  # one 10 ms frame later
    aligned, locked = mel_cepstral_distortion(x, shifted, sr), mel_cepstral_distortion(x, shifted, sr, dtw=False)
    assert aligned < 1.0 < 3.0 < locked  # DTW undoes the shift; frame-locked comparison does not
    half = mel_cepstral_distortion(x, np.roll(x, 37), sr)  # not a whole frame: small, not zero
    assert 0.0 < half < 5.0
    rng = np.random.default_rng(0)
    noise = rng.standard_normal(len(x)).astype(np.float32) * np.sqrt(np.mean(x ** 2))
    values = [mel_cepstral_distortion(x, x + noise * 10 ** (-snr / 20), sr) for snr in (40, 30, 20, 10)]
    assert all(a < b for a, b in zip(values, values[1:])), values
    assert values[1] > half
    # another rate for the test signal is resampled to the reference's
    assert mel_cepstral_distortion(x, x, sr, test_sample_rate=sr) == 0.0
    assert np.isnan(mel_cepstral_distortion(x, x[:10], sr))


# ---- end to end


def test_selection_targets_and_references():
    from vqspeech.data.manifest import Utterance
    from vqspeech.eval.conversion import _assign_targets, _reference_utterances, _select
    from vqspeech.inference import VQSpeech

    class FakeModel:
        speakers = voiced_speakers = ["a", "b", "c", "d"]
        untrained_speakers: set = set()
        model = SimpleNamespace(speaker_encoder=None)
        speaker_id = VQSpeech.speaker_id

    splits = ["test"] * 4 + ["train"] * 5
    utts = [Utterance(f"{s}_{i}", "x.wav", s, 1.0, 8000, split) for s in "abce" for i, split in enumerate(splits)]
    picked = _select(utts, "test", 5, FakeModel.speakers, 0, Path("m"))
    assert [u.speaker for u in picked] == ["a", "b", "c", "a", "b"]  # in turn; e is unknown to the model
    assert [u.id for u in _select(list(reversed(utts)), "test", 5, FakeModel.speakers, 0, Path("m"))] == \
        [u.id for u in picked]  # independent of file order
    assert [u.id for u in _select(utts, "test", 5, FakeModel.speakers, 1, Path("m"))] != [u.id for u in picked]
    targets = _assign_targets(picked, None, FakeModel())
    assert [targets[u.id] for u in picked] == ["b", "a", "a", "c", "c"]  # rotation over the others
    assert set(_assign_targets(picked, ["d"], FakeModel()).values()) == {"d"}
    with pytest.raises(UserError, match="Unknown speaker 'z'"):
        _assign_targets(picked, ["d", "z"], FakeModel())
    refs = _reference_utterances(utts, ["a", "b"], {u.id for u in picked}, 3, 0)
    assert sorted(refs) == ["a", "b"] and all(len(r) == 3 for r in refs.values())
    assert all(r.split == "train" and r.id not in {u.id for u in picked} for rs in refs.values() for r in rs)
    with pytest.raises(UserError, match="speaker this model knows"):
        _select([u for u in utts if u.speaker == "e"], "test", 5, FakeModel.speakers, 0, Path("m"))


# ---- end to end


@pytest.fixture(scope="module")
def evaluated(trained_tiny, demo_manifest, tmp_path_factory):
    from vqspeech.eval.conversion import evaluate_conversion

    out = tmp_path_factory.mktemp("eval_convert")
    metrics = evaluate_conversion(trained_tiny, out, manifest=demo_manifest, split="test", num=2,
                                  num_reference=2, progress=False)
    return out, metrics


def test_evaluate_conversion_writes_files_and_metrics(evaluated, trained_tiny):
    from vqspeech.inference import VQSpeech

    out, metrics = evaluated
    saved = json.loads((out / "metrics.json").read_text())
    assert saved["summary"]["num_items"] == 2 == len(saved["items"])
    assert saved["items"] == json.loads(json.dumps(metrics["items"]))
    summary = saved["summary"]
    for key in ("model", "manifest", "split", "speaker_similarity", "conversion_speaker_accuracy",
                "recognition", "mcd", "timing_seconds", "reference", "skipped"):
        assert key in summary, key
    assert summary["split"] == "test"
    assert summary["recognition"]["unit"] == "word"  # demo sentences are not digits
    assert set(summary["speaker_similarity"]) == {"original", "reconstruction", "conversion"}
    assert summary["timing_seconds"]["total"] > 0
    speakers = VQSpeech.load(trained_tiny).speakers
    sources = [item["source_speaker"] for item in saved["items"]]
    assert len(set(sources)) == 2  # spread across speakers (the demo test split has two)
    unreferenced = set(summary["reference"]["speakers_without_reference"])
    for item in saved["items"]:
        assert item["target_speaker"] in speakers and item["target_speaker"] != item["source_speaker"]
        for kind in ("original", "reconstruction", "conversion", "spectrogram"):
            path = out / item[kind]
            assert not Path(item[kind]).is_absolute() and path.is_file() and path.stat().st_size > 0
        lengths = {kind: len(load_audio(out / item[kind])[0]) for kind in ("original", "reconstruction", "conversion")}
        assert len(set(lengths.values())) == 1, lengths  # whole frames, same length throughout
        for kind in ("original", "reconstruction", "conversion"):
            sims = item["speaker_similarity"][kind]
            for side in ("source", "target"):
                if item[f"{side}_speaker"] in unreferenced:
                    assert sims[side] is None
            reference = normalize_words(item["text"])
            assert item["word_errors"][kind] == edit_distance(reference, item["transcripts"][kind].split())
        assert item["mcd"]["reconstruction"] > 0
        conv = item["speaker_similarity"]["conversion"]
        if conv["source"] is not None and conv["target"] is not None:
            assert item["conversion_closer_to_target"] == (conv["target"] > conv["source"])
        original = item["speaker_similarity"]["original"]
        if original["source"] is not None and original["target"] is not None:
            assert original["source"] > original["target"]  # real speech is closest to its own voice
    recognition = summary["recognition"]
    assert recognition["language_model"] == "bigram of the train transcripts" and recognition["lm_sentences"] > 0
    # the originals are real (espeak) speech compared with their own speaker's centroid
    assert summary["speaker_similarity"]["original"]["source"] > 0.5
    # a second run picks the same utterances (deterministic selection)
    from vqspeech.eval.conversion import _select
    from vqspeech.data.manifest import read_manifest

    again = _select(read_manifest(summary["manifest"]), "test", 2, speakers, 0, Path("m"))
    assert [u.id for u in again] == [item["id"] for item in saved["items"]]


def test_evaluate_conversion_refuses_to_overwrite(evaluated, trained_tiny, demo_manifest):
    from vqspeech.eval.conversion import evaluate_conversion

    out, _ = evaluated
    before = (out / "metrics.json").read_bytes()
    with pytest.raises(UserError, match=r"metrics\.json.*`overwrite=True`"):
        evaluate_conversion(trained_tiny, out, manifest=demo_manifest, split="test", num=1, progress=False)
    assert (out / "metrics.json").read_bytes() == before


def test_evaluate_conversion_user_errors(trained_tiny, demo_manifest, tmp_path):
    from vqspeech.eval.conversion import evaluate_conversion

    with pytest.raises(UserError, match="Unknown speaker 'nobody'"):
        evaluate_conversion(trained_tiny, tmp_path / "a", manifest=demo_manifest, split="train", num=1,
                            targets=["nobody"], progress=False)
    with pytest.raises(UserError, match="no utterances in split 'dev'"):
        evaluate_conversion(trained_tiny, tmp_path / "b", manifest=demo_manifest, split="dev", num=1,
                            progress=False)
    with pytest.raises(UserError, match="`num` must be positive"):
        evaluate_conversion(trained_tiny, tmp_path / "c", manifest=demo_manifest, num=0, progress=False)
    with pytest.raises(UserError, match="`temperature` must be 0"):
        evaluate_conversion(trained_tiny, tmp_path / "d", manifest=demo_manifest, temperature=float("nan"),
                            progress=False)
    assert not any(tmp_path.iterdir())  # refused before writing anything


def test_evaluate_conversion_samples_at_the_given_temperature(evaluated, trained_tiny, demo_manifest, tmp_path):
    """Argmax decoding (temperature 0) gives other audio than sampling, and the summary records it."""
    from vqspeech.audio import load_audio
    from vqspeech.eval.conversion import _relpath, evaluate_conversion

    out, metrics = evaluated
    assert metrics["summary"]["temperature"] == 1.0
    greedy = evaluate_conversion(trained_tiny, tmp_path / "greedy", manifest=demo_manifest, split="test", num=2,
                                 num_reference=2, temperature=0, progress=False)
    assert greedy["summary"]["temperature"] == 0
    uid = greedy["items"][0]["id"]
    sampled, _ = load_audio(out / _relpath("reconstruction", uid))
    argmax, _ = load_audio(tmp_path / "greedy" / _relpath("reconstruction", uid))
    assert len(sampled) == len(argmax) and not (sampled == argmax).all()
