"""The test corpus builders: real layouts, read back by the project's readers and ``prepare``."""

from __future__ import annotations

import re
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from vqspeech.data.corpora import find_utterances
from vqspeech.data.manifest import read_manifest
from vqspeech.data.prepare import prepare_corpus, read_rejects

from corpus_builders import (DIGIT_WORDS, SENTENCES, VCTK_FIRST_SENTENCE, _assign_voices,
                             _messy_slots, make_fsdd_corpus, make_librispeech_corpus,
                             make_vctk_corpus)

MAX_BUILD_SECONDS = 3.0


def timed(builder, *args, **kwargs) -> dict:
    start = time.perf_counter()
    built = builder(*args, **kwargs)
    elapsed = time.perf_counter() - start
    assert elapsed < MAX_BUILD_SECONDS, f"{builder.__name__} took {elapsed:.2f} s"
    return built


def check_found(built: dict, corpus_dir: Path, **options) -> dict:
    """The reader finds every utterance the builder wrote (bad audio included), with its text."""
    utts, rejects = find_utterances(corpus_dir, built["layout"], **options)
    assert rejects == []
    assert [u.id for u in utts] == sorted(built["ids"] + built["rejected_ids"])
    by_id = {u.id: u for u in utts}
    for utt_id in built["missing_text"]:
        assert by_id[utt_id].text is None
    for utt_id, utt in by_id.items():
        assert utt.text == built["texts"].get(utt_id)
    assert {u.speaker for u in utts} == set(built["speakers"])
    return by_id


def check_prepared(built: dict, out: Path, sample_rate: int, **options) -> None:
    """prepare keeps exactly ``ids`` and rejects the corrupt and silent files with reasons."""
    summary = prepare_corpus(built["root"], out, built["layout"], sample_rate=sample_rate,
                             num_workers=0, progress=False, **options)
    utts = read_manifest(summary.manifest)
    assert sorted(u.id for u in utts) == built["ids"]
    assert summary.num_speakers == len(built["speakers"])
    for u in utts:
        assert u.sample_rate == sample_rate
        assert u.duration == pytest.approx(built["durations"][u.id], abs=0.01)
        assert u.text == built["texts"].get(u.id)
    rejects = dict(read_rejects(out))
    mic = options.get("mic", "mic1")
    expected_bad = [p for p in built["corrupt"] + built["silent"] if mic in p or "mic" not in p]
    assert sorted(rejects) == sorted(expected_bad)
    for path in built["corrupt"]:
        if path in rejects:
            assert "Cannot read audio file" in rejects[path]
    for path in built["silent"]:
        if path in rejects:
            assert rejects[path].startswith("silent")


# ----------------------------------------------------------------------------------------------
# VCTK


@pytest.fixture(scope="module")
def vctk_092(tmp_path_factory) -> dict:
    return timed(make_vctk_corpus, tmp_path_factory.mktemp("vctk092"))


def test_vctk_092_layout_and_files(vctk_092):
    root = vctk_092["root"]
    assert vctk_092["corpus_dir"] == root and vctk_092["layout"] == "vctk"
    assert vctk_092["speakers"] == ["p225", "p226", "p227"]
    assert len(vctk_092["ids"]) == 13 and len(vctk_092["rejected_ids"]) == 2
    assert set(vctk_092["missing_text"]) <= set(vctk_092["ids"])
    for name in ("speaker-info.txt", "README.txt", "license_text"):
        assert (root / name).is_file()
    assert not (root / "VCTK-Corpus-0.92").exists() and not (root / "wav48").exists()
    info = (root / "speaker-info.txt").read_text().splitlines()
    assert info[0].startswith("ID  AGE  GENDER  ACCENTS")
    assert [line.split()[:3] for line in info[1:]] == [["p225", "23", "F"], ["p226", "22", "M"],
                                                       ["p227", "38", "M"]]
    for spk in vctk_092["speakers"]:
        names = sorted(p.name for p in (root / "wav48_silence_trimmed" / spk).iterdir())
        assert names == [f"{spk}_{n:03d}_{m}.flac" for n in range(1, 6) for m in ("mic1", "mic2")]
        assert (root / "txt" / spk / f"{spk}_001.txt").read_text() == VCTK_FIRST_SENTENCE + "\n"
    for utt_id in vctk_092["missing_text"]:
        spk = utt_id.split("_")[0]
        assert not (root / "txt" / spk / f"{utt_id}.txt").exists()
    # the same sentence number is the same sentence for every speaker, as in VCTK
    texts = vctk_092["texts"]
    assert texts["p225_003"] == texts["p226_003"] == texts["p227_003"]


def test_vctk_092_audio(vctk_092):
    root = vctk_092["root"]
    for utt_id in vctk_092["ids"]:
        spk = utt_id.split("_")[0]
        mic1 = root / "wav48_silence_trimmed" / spk / f"{utt_id}_mic1.flac"
        mic2 = mic1.with_name(f"{utt_id}_mic2.flac")
        for path in (mic1, mic2):
            info = sf.info(str(path))
            assert (info.samplerate, info.channels, info.format) == (48000, 1, "FLAC")
            assert 1.0 < info.duration < 3.5
        a, _ = sf.read(str(mic1), dtype="float32")
        b, _ = sf.read(str(mic2), dtype="float32")
        assert len(a) == len(b) and not np.allclose(a, b)
        assert np.sqrt(np.mean(b ** 2)) < np.sqrt(np.mean(a ** 2))  # mic2 quieter, duller
        assert np.corrcoef(a[:-24], b[24:])[0, 1] > 0.5  # but the same speech
    for path in vctk_092["silent"]:
        audio, rate = sf.read(path)
        assert rate == 48000 and len(audio) > 0 and not audio.any()
    for path in vctk_092["corrupt"]:
        assert path.endswith(".flac") and Path(path).stat().st_size > 1000
        with pytest.raises(Exception):
            sf.info(path)


def test_vctk_092_reader_picks_mic1_by_default_and_mic2_on_request(vctk_092):
    by_id = check_found(vctk_092, vctk_092["root"])
    assert all(u.path.endswith("_mic1.flac") for u in by_id.values())
    by_id = check_found(vctk_092, vctk_092["root"], mic="mic2")
    assert all(u.path.endswith("_mic2.flac") for u in by_id.values())
    assert by_id["p225_001"].text == VCTK_FIRST_SENTENCE and by_id["p226_001"].speaker == "p226"


@pytest.mark.parametrize("mic", ["mic1", "mic2"])
def test_vctk_092_prepare_rejects_bad_files(vctk_092, tmp_path, mic):
    check_prepared(vctk_092, tmp_path / "prepared", 16000, mic=mic)


def test_vctk_080(tmp_path):
    built = timed(make_vctk_corpus, tmp_path / "vctk", version="0.80", speakers=("p225", "p234"),
                  utts_per_speaker=4)
    corpus = built["corpus_dir"]
    assert corpus == tmp_path / "vctk" / "VCTK-Corpus"  # as VCTK-Corpus.tar.gz unpacks
    assert (corpus / "README").is_file() and (corpus / "COPYING").is_file()
    assert (corpus / "speaker-info.txt").read_text().splitlines()[1].startswith("225  23  F")
    assert not (corpus / "wav48_silence_trimmed").exists()
    assert len(built["ids"]) == 6 and len(built["corrupt"]) == len(built["silent"]) == 1
    for utt_id in built["ids"]:
        info = sf.info(str(corpus / "wav48" / utt_id.split("_")[0] / f"{utt_id}.wav"))
        assert (info.samplerate, info.format, info.subtype) == (48000, "WAV", "PCM_16")
        assert 1.0 < info.duration < 3.5  # 0.80 keeps some silence around the speech
    for corpus_dir in (built["root"], corpus):  # the folder holding VCTK-Corpus/, or it
        check_found(built, corpus_dir)
    check_prepared(built, tmp_path / "prepared", 16000)


# ----------------------------------------------------------------------------------------------
# LibriSpeech


@pytest.fixture(scope="module")
def libri(tmp_path_factory) -> dict:
    return timed(make_librispeech_corpus, tmp_path_factory.mktemp("libri"))


def test_librispeech_layout_and_transcripts(libri):
    base = libri["root"] / "LibriSpeech"
    assert libri["corpus_dir"] == base / "train-clean-100" and libri["layout"] == "librispeech"
    for name in ("SPEAKERS.TXT", "CHAPTERS.TXT", "LICENSE.TXT", "README.TXT"):
        assert (base / name).is_file()
    assert (base / "SPEAKERS.TXT").read_text().startswith("; Some pipe(|) separated metadata")
    speakers_txt = (base / "SPEAKERS.TXT").read_text()
    assert re.search(r"^103 +\| F \| train-clean-100 ", speakers_txt, re.M)
    assert len(libri["ids"]) == 13 and len(libri["rejected_ids"]) == 2
    chapters = sorted(p.relative_to(libri["corpus_dir"]).as_posix()
                      for p in libri["corpus_dir"].glob("*/*") if p.is_dir())
    assert chapters == ["103/1240", "1034/121119", "1040/133433"]
    for folder in libri["corpus_dir"].glob("*/*"):
        spk, chapter = folder.parent.name, folder.name
        flacs = sorted(p.name for p in folder.glob("*.flac"))
        assert flacs == [f"{spk}-{chapter}-{n:04d}.flac" for n in range(5)]
        lines = (folder / f"{spk}-{chapter}.trans.txt").read_text().splitlines()
        assert lines == sorted(lines)
        for line in lines:
            utt_id, text = line.split(" ", 1)
            assert re.fullmatch(r"[A-Z' ]+", text) and libri["texts"][utt_id] == text
        listed = {line.split()[0] for line in lines}
        missing = {p[: -len(".flac")] for p in flacs} - listed
        assert missing <= set(libri["missing_text"])
    for utt_id in libri["ids"]:
        spk, chapter, _ = utt_id.split("-")
        info = sf.info(str(libri["corpus_dir"] / spk / chapter / f"{utt_id}.flac"))
        assert (info.samplerate, info.channels, info.format) == (16000, 1, "FLAC")
        assert 1.0 < info.duration < 3.5


def test_librispeech_reader_finds_it_from_any_level(libri):
    base = libri["root"] / "LibriSpeech"
    for corpus_dir in (libri["root"], base, libri["corpus_dir"]):
        check_found(libri, corpus_dir)
    check_found(libri, libri["root"], subset="train-clean-100")


def test_librispeech_prepare_rejects_bad_files(libri, tmp_path):
    check_prepared(libri, tmp_path / "prepared", 16000)


def test_librispeech_more_chapters_and_other_speakers(tmp_path):
    built = timed(make_librispeech_corpus, tmp_path / "c", subset="dev-clean",
                  speakers=("84", "1069"), chapters_per_speaker=2, utts_per_chapter=3, seed=3)
    assert built["corpus_dir"] == tmp_path / "c" / "LibriSpeech" / "dev-clean"
    assert len(built["ids"]) == 2 * 2 * 3 - 2
    assert sorted(p.name for p in (built["corpus_dir"] / "1069").iterdir()) == ["133699",
                                                                                "133709"]
    check_found(built, built["root"], subset="dev-clean")


# ----------------------------------------------------------------------------------------------
# FSDD


def test_fsdd(tmp_path):
    built = timed(make_fsdd_corpus, tmp_path / "fsdd")
    assert built["corpus_dir"] == tmp_path / "fsdd" / "recordings"
    names = sorted(p.name for p in built["corpus_dir"].iterdir())
    assert names == sorted(f"{d}_{s}_{n}.wav" for d in range(10) for s in ("alice", "bob")
                           for n in range(2))
    assert built["missing_text"] == built["corrupt"] == built["silent"] == []
    for name in names:
        info = sf.info(str(built["corpus_dir"] / name))
        assert (info.samplerate, info.channels, info.subtype) == (8000, 1, "PCM_16")
        assert 0.2 < info.duration < 1.0  # trimmed tightly, as in FSDD
        audio, _ = sf.read(str(built["corpus_dir"] / name))
        frames = audio[: len(audio) // 80 * 80].reshape(-1, 80)  # 10 ms
        rms = np.sqrt(np.mean(frames ** 2, axis=1))
        loud = np.flatnonzero(rms > rms.max() * 10 ** (-40 / 20))
        assert loud[0] <= 3 and loud[-1] >= len(rms) - 4  # at most 30 ms of silence at each end
    by_id = check_found(built, built["root"])
    assert by_id["bob_7_1"].text == "seven" and by_id["alice_0_0"].split == "test"
    summary = prepare_corpus(built["root"], tmp_path / "prepared", "fsdd", sample_rate=8000,
                             num_workers=0, progress=False)
    assert summary.num_utterances == 40 and summary.num_rejected == 0


# ----------------------------------------------------------------------------------------------
# Shared properties


def test_vocabulary_is_in_the_aligner_dictionary():
    pocketsphinx = pytest.importorskip("pocketsphinx")
    dictionary = Path(pocketsphinx.__file__).parent / "model" / "en-us" / "cmudict-en-us.dict"
    if not dictionary.is_file():
        pytest.skip("pocketsphinx has no cmudict-en-us.dict")
    known = {line.split()[0] for line in dictionary.read_text(errors="replace").splitlines()
             if line.strip()}
    words = {w.strip(".,?!").lower() for s in (*SENTENCES, VCTK_FIRST_SENTENCE) for w in s.split()}
    assert sorted(words - known) == []
    assert set(DIGIT_WORDS) <= known


def test_speakers_get_distinct_voices():
    voices = _assign_voices(["a", "b", "c", "d", "e"], [("gb", "F")] * 5)
    assert len({(v.voice, v.pitch) for v in voices.values()}) == 5


def test_messy_cases_stay_distinct_on_small_corpora(tmp_path):
    for speakers, per in ((1, 4), (2, 2), (3, 5), (4, 1)):
        slots = [(s, u) for s in range(speakers) for u in range(per)]
        assert len(set(_messy_slots(speakers, per, slots))) == 3
    built = make_vctk_corpus(tmp_path / "one", speakers=("p225",), utts_per_speaker=4)
    assert built["ids"] == ["p225_001", "p225_002"] and built["missing_text"] == ["p225_002"]
    check_found(built, built["root"])
    with pytest.raises(ValueError):
        make_vctk_corpus(tmp_path / "tiny", speakers=("p225",), utts_per_speaker=3)


def test_same_seed_same_corpus(tmp_path):
    a = make_librispeech_corpus(tmp_path / "a", speakers=("103",), utts_per_chapter=4)
    b = make_librispeech_corpus(tmp_path / "b", speakers=("103",), utts_per_chapter=4)
    c = make_librispeech_corpus(tmp_path / "c", speakers=("103",), utts_per_chapter=4, seed=1)
    assert a["texts"] == b["texts"] and a["ids"] == b["ids"]
    assert a["texts"] != c["texts"]


@pytest.mark.slow
def test_transcripts_match_the_audio_for_the_aligner(vctk_092, libri, tmp_path):
    """pocketsphinx finds every transcript's words in order (the phone pass may still fail on a
    few utterances; that is the aligner's business, so only most must align fully)."""
    align = pytest.importorskip("vqspeech.data.align")
    from vqspeech.audio import load_audio

    aligner = align.PocketsphinxAligner()
    fsdd = make_fsdd_corpus(tmp_path / "fsdd", digits=(0, 3, 7))
    for built in (vctk_092, libri, fsdd):
        utts, _ = find_utterances(built["root"], built["layout"])
        usable = [u for u in utts if u.id in built["ids"] and u.text]
        failures = []
        for utt in usable:
            audio, rate = load_audio(utt.path)
            try:
                aligner.align(audio, rate, utt.text)
            except align.AlignmentFailed as exc:
                failures.append((utt.id, str(exc)))
        assert not [f for f in failures if "words came out" in f[1]], failures
        assert len(failures) <= 0.2 * len(usable), failures
