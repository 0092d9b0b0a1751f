"""Tiny corpora in the real on-disk layouts of VCTK, LibriSpeech and FSDD, spoken by espeak-ng.

Each builder writes a few seconds of real-sounding English (espeak voices, a distinct voice, pitch
and rate per speaker, a little per-utterance variation) in exactly the folder structure, file
names, audio formats and side files of the corpus it imitates, so the readers, ``prepare`` and the
recipes can run on it offline. Transcripts are the words that were spoken (the forced aligner can
check them). Every corpus also holds the messy cases real downloads have: one utterance without a
transcript, one corrupt audio file (garbage bytes under an audio name) and one silent file (valid
audio, all zeros).

Every builder returns a dict:

- ``root``: the folder given (what to pass as the corpus folder);
- ``corpus_dir``: the folder that holds the corpus files themselves (``root`` for VCTK 0.92,
  ``root/VCTK-Corpus`` for 0.80, ``root/LibriSpeech/<subset>``, ``root/recordings`` for FSDD);
- ``layout``: the ``--layout`` name to read it with;
- ``speakers``: the speaker names, as given;
- ``ids``: sorted ids of the utterances with usable audio, the ones ``prepare`` keeps (with the
  default microphone or either one: VCTK's bad cases are bad on both microphones); this includes the
  ``missing_text`` ones, whose text reads as None;
- ``missing_text``: ids (in ``ids``) of utterances without a transcript;
- ``corrupt``, ``silent``: sorted paths (str) of the corrupt and silent audio files (VCTK 0.92:
  both microphones' files), which ``prepare`` rejects;
- ``rejected_ids``: ids of the corrupt and silent utterances (found by the reader, not in ``ids``);
- ``texts``: {id: transcript as written to disk} for every utterance that has one (bad ones too);
- ``sample_rate``: the rate of the audio files;
- ``durations``: {id: seconds} of the usable audio files (mic1 for VCTK 0.92).

Sizes are tiny by default (15 files for VCTK and LibriSpeech, 40 for FSDD); each build takes well
under a second after ``vqspeech`` is imported.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import soundfile as sf
import soxr

from vqspeech.data import espeak

DIGIT_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")

VCTK_FIRST_SENTENCE = "Please call Stella."
"""VCTK's ``<spk>_001``: every speaker starts with the elicitation paragraph's first sentence."""

SENTENCES = (
    "Ask her to bring these things with her from the store.",
    "We also need a small plastic snake.",
    "She can scoop these things into three red bags.",
    "The rainbow is a division of white light.",
    "When the sunlight strikes raindrops in the air.",
    "These take the shape of a long round arch.",
    "People look but no one ever finds it.",
    "The boat drifted slowly down the river.",
    "My brother lives in a quiet village.",
    "Open the window and let the cold air in.",
    "The children played football in the park.",
    "He bought a new car last summer.",
    "The train was late again this morning.",
    "Put the green book back on the shelf.",
    "I could not find my keys anywhere.",
    "The dog barked at the man at the door.",
    "We walked along the beach after dinner.",
    "The old house stood at the end of the road.",
    "Turn left at the next corner.",
    "She sang a song about the sea.",
    "The meeting will start at nine.",
    "Bring me a cup of hot tea.",
    "The wind blew the leaves across the yard.",
    "They painted the fence bright yellow.",
    "A bird sat on the branch outside.",
    "The doctor told him to rest for a week.",
    "Our teacher read us a story.",
    "The shop closes early on Sunday.",
    "He wrote a letter to his mother.",
    "The snow melted in the warm sun.",
    "Please close the door behind you.",
    "The water in the lake was very clear.",
)
"""Short sentences of common words (all in the CMU dictionary), 1-3 s at the voices' rates."""


@dataclass(frozen=True)
class Voice:
    """An espeak voice (``language[+variant]``) with a speaker's base pitch, range and rate."""

    voice: str
    pitch: int
    rate: int
    pitch_range: int = 50


# Distinct voices per accent and sex; speakers of the same kind take the next one in turn.
_VOICES = {
    ("gb", "F"): (Voice("en+f1", 62, 168, 60), Voice("en+f4", 68, 178, 55),
                  Voice("en+f5", 58, 160, 65), Voice("en+f3", 72, 172, 50)),
    ("gb", "M"): (Voice("en+m1", 44, 165, 45), Voice("en+m3", 36, 158, 40),
                  Voice("en+m7", 48, 175, 50), Voice("en+m2", 40, 170, 45)),
    ("scot", "F"): (Voice("en-gb-scotland+f1", 64, 170, 60),),
    ("scot", "M"): (Voice("en-gb-scotland+m4", 40, 165, 50),),
    ("us", "F"): (Voice("en-us+f3", 60, 176, 60), Voice("en-us+f4", 66, 186, 55),
                  Voice("en-us+f1", 56, 168, 65), Voice("en-us+f5", 70, 180, 50)),
    ("us", "M"): (Voice("en-us+m3", 36, 160, 40), Voice("en-us", 46, 172, 50),
                  Voice("en-us+m7", 42, 152, 45), Voice("en-us+m1", 50, 180, 50)),
}

# Real VCTK speaker-info.txt rows: id -> (age, gender, accent, region).
_VCTK_SPEAKERS = {
    "p225": (23, "F", "English", "Southern England"),
    "p226": (22, "M", "English", "Surrey"),
    "p227": (38, "M", "English", "Cumbria"),
    "p228": (22, "F", "English", "Southern England"),
    "p229": (23, "F", "English", "Southern England"),
    "p230": (22, "F", "English", "Stockton-on-tees"),
    "p231": (23, "F", "English", "Southern England"),
    "p232": (23, "M", "English", "Southern England"),
    "p233": (23, "F", "English", "Staffordshire"),
    "p234": (22, "F", "Scottish", "West Dumfries"),
    "p236": (23, "F", "English", "Manchester"),
    "p237": (22, "M", "Scottish", "Fife"),
}

# Real LibriSpeech rows: reader -> (sex, subset, minutes, name, chapters).
_LIBRI_SPEAKERS = {
    "103": ("F", "train-clean-100", 23.72, "Karen Savage", (1240, 1241)),
    "1034": ("M", "train-clean-100", 16.71, "Kevin O'Coin", (121119,)),
    "1040": ("M", "train-clean-100", 15.70, "John Garvin", (133433, 133434)),
    "1069": ("F", "train-clean-100", 25.15, "Dawn", (133699, 133709)),
    "1081": ("M", "train-clean-100", 25.18, "Fracture", (125237, 128618)),
    "1088": ("F", "train-clean-100", 25.18, "Christabel", (129236, 134315)),
}

_SILENT_SECONDS = 1.5
VCTK_092_MARGINS = (0.15, 0.3)
"""Seconds of silence kept before and after the speech in VCTK 0.92's trimmed files (less makes
pocketsphinx drop the last word)."""
_CORRUPT_BYTES = 3000


# ----------------------------------------------------------------------------------------------
# VCTK


def make_vctk_corpus(root: Path, *, version: str = "0.92",
                     speakers: Sequence[str] = ("p225", "p226", "p227"), utts_per_speaker: int = 5,
                     seed: int = 0) -> dict:
    """Build a tiny VCTK corpus under ``root`` as the real download unpacks; return its description.

    ``version="0.92"`` (the ``VCTK-Corpus-0.92.zip`` of 2019, unpacked into ``root`` itself)::

        wav48_silence_trimmed/<spk>/<spk>_<nnn>_mic1.flac   48 kHz 16-bit FLAC, silence trimmed
        wav48_silence_trimmed/<spk>/<spk>_<nnn>_mic2.flac   the other microphone (duller, quieter)
        txt/<spk>/<spk>_<nnn>.txt                           the sentence, e.g. "Please call Stella."
        speaker-info.txt  README.txt  license_text  update.txt

    ``version="0.80"`` (``VCTK-Corpus.tar.gz`` of 2017, which unpacks into ``VCTK-Corpus/``)::

        VCTK-Corpus/wav48/<spk>/<spk>_<nnn>.wav   48 kHz 16-bit WAV with the recording's silences
        VCTK-Corpus/txt/<spk>/<spk>_<nnn>.txt
        VCTK-Corpus/speaker-info.txt  VCTK-Corpus/README  VCTK-Corpus/COPYING

    As in VCTK, ``<nnn>`` counts from 001, ``001`` is "Please call Stella." for everyone and the
    other numbers are the same sentence for every speaker (drawn by ``seed``). Known speaker ids
    (p225...) get their real sex and speaker-info row; Scottish speakers speak with espeak's
    Scottish voice, the others with US voices (pocketsphinx's US model aligns espeak's British
    voices about three times less reliably). Messy cases: one utterance has no txt file, one is
    garbage bytes, one is all zeros (both microphones for 0.92).
    """
    if version not in ("0.92", "0.80"):
        raise ValueError(f"version must be '0.92' or '0.80', not {version!r}")
    speakers = list(speakers)
    _check_sizes(speakers, utts_per_speaker, limit=len(SENTENCES) + 1)
    root = Path(root)
    corpus_dir = root if version == "0.92" else root / "VCTK-Corpus"
    rng = np.random.default_rng([seed, 92])
    order = rng.permutation(len(SENTENCES))
    sentences = [VCTK_FIRST_SENTENCE] + [SENTENCES[i] for i in order[: utts_per_speaker - 1]]
    slots = [(s, u) for s in range(len(speakers)) for u in range(utts_per_speaker)]
    missing, corrupt, silent = _messy_slots(len(speakers), utts_per_speaker, slots)

    info = {spk: _VCTK_SPEAKERS.get(spk, _made_up_vctk_speaker(spk)) for spk in speakers}
    # US voices for English speakers: pocketsphinx's US model aligns British espeak voices worse
    voices = _assign_voices(speakers, [("scot" if info[s][2] == "Scottish" else "us", info[s][1])
                                       for s in speakers])
    result = _result(root, corpus_dir, "vctk", speakers, 48000)
    for s_index, spk in enumerate(speakers):
        for u_index in range(utts_per_speaker):
            utt_id = f"{spk}_{u_index + 1:03d}"
            text = sentences[u_index]
            if (s_index, u_index) != missing:
                _write_text(corpus_dir / "txt" / spk / f"{utt_id}.txt", text + "\n")
                result["texts"][utt_id] = text
            else:
                result["missing_text"].append(utt_id)
            if version == "0.92":
                paths = [corpus_dir / "wav48_silence_trimmed" / spk / f"{utt_id}_{mic}.flac"
                         for mic in ("mic1", "mic2")]
            else:
                paths = [corpus_dir / "wav48" / spk / f"{utt_id}.wav"]
            for path in paths:
                path.parent.mkdir(parents=True, exist_ok=True)
            if (s_index, u_index) in (corrupt, silent):
                kind = "corrupt" if (s_index, u_index) == corrupt else "silent"
                for path in paths:
                    _write_bad(path, kind, 48000, rng)
                    result[kind].append(str(path))
                result["rejected_ids"].append(utt_id)
                continue
            audio = _speak(text, voices[spk], rng)
            if version == "0.92":
                trimmed = _pad(_trim(audio, espeak.SAMPLE_RATE, 0.05), espeak.SAMPLE_RATE,
                               lead=VCTK_092_MARGINS[0], tail=VCTK_092_MARGINS[1])
                mic1 = soxr.resample(trimmed, espeak.SAMPLE_RATE, 48000)
                mic1 = _add_noise(mic1, rng, level=3e-4)
                sf.write(str(paths[0]), mic1, 48000, subtype="PCM_16", format="FLAC")
                sf.write(str(paths[1]), _other_microphone(mic1, rng), 48000, subtype="PCM_16",
                         format="FLAC")
                seconds = len(mic1) / 48000
            else:
                wav = soxr.resample(_pad(_trim(audio, espeak.SAMPLE_RATE, 0.05), espeak.SAMPLE_RATE,
                                         lead=0.3, tail=0.25), espeak.SAMPLE_RATE, 48000)
                wav = _add_noise(wav, rng, level=1e-3)
                sf.write(str(paths[0]), wav, 48000, subtype="PCM_16", format="WAV")
                seconds = len(wav) / 48000
            result["ids"].append(utt_id)
            result["durations"][utt_id] = seconds

    rows = [f"{spk if version == '0.92' else spk.lstrip('p')}  {age}  {sex}    {accent}    {region}"
            for spk, (age, sex, accent, region) in sorted(info.items())]
    header = "ID  AGE  GENDER  ACCENTS  REGION COMMENTS " if version == "0.92" else \
        "ID  AGE  GENDER  ACCENTS  REGION"
    _write_text(corpus_dir / "speaker-info.txt", "\n".join([header, *rows]) + "\n")
    readme, license_name, license_text = _vctk_readme(version, len(speakers))
    _write_text(corpus_dir / ("README.txt" if version == "0.92" else "README"), readme)
    _write_text(corpus_dir / license_name, license_text)
    if version == "0.92":
        _write_text(corpus_dir / "update.txt",
                    "Version 0.92: the audio is now in FLAC with leading and trailing silence "
                    "trimmed, and recordings from both microphones (mic1, mic2) are included.\n")
    return _finish(result)


def _made_up_vctk_speaker(spk: str) -> tuple[int, str, str, str]:
    """A speaker-info row for an id VCTK does not have (sex fixed by the id)."""
    return 22 + zlib.crc32(spk.encode()) % 6, "FM"[zlib.crc32(spk.encode()) % 2], "English", \
        "Southern England"


def _vctk_readme(version: str, num_speakers: int) -> tuple[str, str, str]:
    """(README text, licence file name, licence text) in the style of the real release."""
    title = ("CSTR VCTK Corpus\nEnglish Multi-speaker Corpus for CSTR Voice Cloning Toolkit\n\n"
             f"(Version {version})\n\n")
    body = (
        "Overview\n"
        "This CSTR VCTK Corpus includes speech data uttered by 110 English speakers with various "
        "accents.\nEach speaker reads out about 400 sentences, which were selected from a "
        "newspaper,\nthe rainbow passage and an elicitation paragraph used for the speech accent "
        "archive.\n\n"
        f"(This is a synthetic stand-in with {num_speakers} speakers, made by the vqspeech tests "
        "with espeak-ng in the same layout.)\n\n")
    if version == "0.92":
        body += ("The audio is in wav48_silence_trimmed/<spk>/<spk>_<nnn>_mic1.flac and _mic2.flac "
                 "(48 kHz FLAC),\nthe text in txt/<spk>/<spk>_<nnn>.txt.\n")
        return title + body, "license_text", (
            "This corpus is licensed under the Creative Commons License: Attribution 4.0 "
            "International\nhttp://creativecommons.org/licenses/by/4.0/legalcode\n")
    body += "The audio is in wav48/<spk>/<spk>_<nnn>.wav (48 kHz), the text in txt/<spk>/.\n"
    return title + body, "COPYING", (
        "This corpus is licensed under Open Data Commons Attribution License (ODC-By) v1.0.\n"
        "http://opendatacommons.org/licenses/by/1.0/\n")


# ----------------------------------------------------------------------------------------------
# LibriSpeech


def make_librispeech_corpus(root: Path, *, subset: str = "train-clean-100",
                            speakers: Sequence[str] = ("103", "1034", "1040"),
                            chapters_per_speaker: int = 1, utts_per_chapter: int = 5,
                            seed: int = 0) -> dict:
    """Build a tiny LibriSpeech subset under ``root`` as the real tarball unpacks; return it.

    Layout (``train-clean-100.tar.gz`` unpacks into ``LibriSpeech/``)::

        LibriSpeech/<subset>/<spk>/<chapter>/<spk>-<chapter>-<nnnn>.flac   16 kHz 16-bit FLAC
        LibriSpeech/<subset>/<spk>/<chapter>/<spk>-<chapter>.trans.txt     "<id> UPPER CASE WORDS"
        LibriSpeech/SPEAKERS.TXT  CHAPTERS.TXT  LICENSE.TXT  README.TXT

    ``<nnnn>`` counts from 0000 in each chapter; transcripts are upper case without punctuation
    (apostrophes kept), one line per utterance sorted by id. Known readers (103, 1034, 1040...)
    keep their real sex and chapter ids; other ids get made-up ones. Speakers read different
    sentences (drawn by ``seed``). Messy cases: one utterance is left out of its trans.txt, one
    flac is garbage bytes, one is all zeros.
    """
    speakers = [str(s) for s in speakers]
    for spk in speakers:
        if not spk.isdigit():
            raise ValueError(f"LibriSpeech speaker ids are numbers, not {spk!r}")
    if chapters_per_speaker < 1:
        raise ValueError("chapters_per_speaker must be at least 1")
    per_speaker = chapters_per_speaker * utts_per_chapter
    _check_sizes(speakers, per_speaker, limit=10_000)
    root = Path(root)
    base = root / "LibriSpeech"
    corpus_dir = base / subset
    rng = np.random.default_rng([seed, 12])
    chapters = {spk: _libri_chapters(spk, chapters_per_speaker) for spk in speakers}
    slots = [(s, c * utts_per_chapter + u) for s in range(len(speakers))
             for c in range(chapters_per_speaker) for u in range(utts_per_chapter)]
    missing, corrupt, silent = _messy_slots(len(speakers), per_speaker, slots)
    sexes = [_LIBRI_SPEAKERS[s][0] if s in _LIBRI_SPEAKERS else "FM"[zlib.crc32(s.encode()) % 2]
             for s in speakers]
    voices = _assign_voices(speakers, [("us", sex) for sex in sexes])

    result = _result(root, corpus_dir, "librispeech", speakers, 16000)
    chapter_rows, minutes = [], {}
    pool = list(SENTENCES)
    next_sentence = 0
    order = rng.permutation(len(pool))
    for s_index, spk in enumerate(speakers):
        for c_index, chapter in enumerate(chapters[spk]):
            folder = corpus_dir / spk / str(chapter)
            folder.mkdir(parents=True, exist_ok=True)
            lines, seconds_in_chapter = [], 0.0
            for u_index in range(utts_per_chapter):
                slot = (s_index, c_index * utts_per_chapter + u_index)
                utt_id = f"{spk}-{chapter}-{u_index:04d}"
                text = _libri_text(pool[order[next_sentence % len(pool)]])
                next_sentence += 1
                path = folder / f"{utt_id}.flac"
                result["texts"][utt_id] = text
                if slot == missing:
                    result["missing_text"].append(utt_id)
                    del result["texts"][utt_id]
                else:
                    lines.append(f"{utt_id} {text}")
                if slot in (corrupt, silent):
                    kind = "corrupt" if slot == corrupt else "silent"
                    _write_bad(path, kind, 16000, rng)
                    result[kind].append(str(path))
                    result["rejected_ids"].append(utt_id)
                    continue
                audio = _pad(_trim(_speak(text.lower(), voices[spk], rng), espeak.SAMPLE_RATE,
                                   0.05), espeak.SAMPLE_RATE, lead=0.15, tail=0.4)
                audio = _add_noise(soxr.resample(audio, espeak.SAMPLE_RATE, 16000), rng, 5e-4)
                sf.write(str(path), audio, 16000, subtype="PCM_16", format="FLAC")
                result["ids"].append(utt_id)
                result["durations"][utt_id] = len(audio) / 16000
                seconds_in_chapter += len(audio) / 16000
            _write_text(folder / f"{spk}-{chapter}.trans.txt", "\n".join(lines) + "\n")
            minutes[spk] = minutes.get(spk, 0.0) + seconds_in_chapter / 60
            chapter_rows.append(
                f"{chapter:<8}| {spk:<5}| {seconds_in_chapter / 60:5.2f} | {subset:<17}| "
                f"{10000 + chapter % 9000:<5}| {20000 + chapter % 9000:<6}| "
                f"Chapter {c_index + 1:<26}| A Synthetic Reading")

    speaker_rows = [
        f"{spk:<5}| {sex} | {subset:<17}| {minutes[spk]:5.2f} | "
        f"{_LIBRI_SPEAKERS[spk][3] if spk in _LIBRI_SPEAKERS else 'Reader ' + spk}"
        for spk, sex in zip(speakers, sexes)]
    _write_text(base / "SPEAKERS.TXT", _LIBRI_SPEAKERS_HEADER + "\n".join(speaker_rows) + "\n")
    _write_text(base / "CHAPTERS.TXT", _LIBRI_CHAPTERS_HEADER + "\n".join(chapter_rows) + "\n")
    _write_text(base / "LICENSE.TXT", _LIBRI_LICENSE)
    _write_text(base / "README.TXT", _LIBRI_README.format(subset=subset))
    return _finish(result)


def _libri_chapters(spk: str, count: int) -> list[int]:
    known = list(_LIBRI_SPEAKERS[spk][4]) if spk in _LIBRI_SPEAKERS else []
    start = known[-1] + 1 if known else 10_000 + zlib.crc32(spk.encode()) % 190_000
    return (known + list(range(start, start + count)))[:count]


def _libri_text(sentence: str) -> str:
    """LibriSpeech style: upper case, punctuation removed except apostrophes."""
    kept = "".join(c if c.isalnum() or c in "' " else " " for c in sentence)
    return " ".join(kept.upper().split())


_LIBRI_SPEAKERS_HEADER = """\
; Some pipe(|) separated metadata about all LibriVox readers, whose work was used
; in the corpus.
;
; The meaning of the fields in left-to-right order is as follows:
;
; reader_id: the ID of the reader in the LibriVox's database
; gender: 'F' for female, 'M' for male
; subset: the corpus subset to which the reader's audio is assigned
; duration: total number of minutes of speech by the reader, included in the corpus
; name: the name under which the reader is registered in LibriVox
;
;ID  |SEX| SUBSET           |MINUTES| NAME
"""

_LIBRI_CHAPTERS_HEADER = """\
; Some pipe(|) separated metadata about the LibriVox chapters, included in the corpus
;
; The meaning of the fields in left-to-right order is as follows:
;
; chapter_id: the ID of the chapter in the LibriVox's database
; reader_id: the ID of the reader in LibriVox's database
; duration: the duration of the chapter, in minutes
; subset: the corpus subset to which the chapter's audio is assigned
; project_id: the ID of LibriVox's project, which the chapter is part of
; book_id: the ID of the book in Project Gutenberg's database
; chapter_title: chapter's title
; project_title: LibriVox project's title
;
;ID      |READER|MINUTES| SUBSET           |PROJ.|BOOK ID| CH. TITLE                          | PROJECT TITLE
"""

_LIBRI_LICENSE = """\
LibriSpeech (c) 2014 by Vassil Panayotov

LibriSpeech ASR corpus is licensed under a
Creative Commons Attribution 4.0 International License.

See <http://creativecommons.org/licenses/by/4.0/>.
"""

_LIBRI_README = """\
LibriSpeech ASR corpus
======================

Identifier: SLR12
Summary: Large-scale (1000 hours) corpus of read English speech
Category: Speech
License: CC BY 4.0

This is a synthetic stand-in for the {subset} subset, made by the vqspeech tests with
espeak-ng in the same layout: <subset>/<reader>/<chapter>/<reader>-<chapter>-<utt>.flac
(16 kHz FLAC) with one <reader>-<chapter>.trans.txt per chapter.
"""


# ----------------------------------------------------------------------------------------------
# FSDD


def make_fsdd_corpus(root: Path, *, speakers: Sequence[str] = ("alice", "bob"),
                     digits: Iterable[int] = range(10), takes: int = 2, seed: int = 0) -> dict:
    """Build a tiny Free Spoken Digit Dataset under ``root``; return its description.

    Layout (the ``recordings/`` folder of the FSDD repository)::

        recordings/{digit}_{speaker}_{n}.wav   8 kHz mono 16-bit PCM, one spoken digit word

    Each file is the digit's word ("zero".."nine") trimmed to within ~10 ms of the speech, like
    FSDD; ``n`` counts takes from 0 (FSDD's own split puts indices 0-4 in test, so with the
    default ``takes=2`` everything is "test"). Speakers alternate female and male voices. FSDD has
    no messy cases, so ``missing_text``, ``corrupt`` and ``silent`` are empty.
    """
    speakers = list(speakers)
    digits = list(digits)
    for spk in speakers:
        if not spk.isalnum():
            raise ValueError(f"FSDD speaker names are letters and digits only, not {spk!r}")
    if not digits or any(d not in range(10) for d in digits) or takes < 1:
        raise ValueError("digits must be a non-empty subset of 0-9 and takes at least 1")
    root = Path(root)
    corpus_dir = root / "recordings"
    corpus_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng([seed, 8])
    voices = _assign_voices(speakers, [("us", "FM"[i % 2]) for i in range(len(speakers))])
    result = _result(root, corpus_dir, "fsdd", speakers, 8000)
    for spk in speakers:
        for digit in digits:
            for n in range(takes):
                word = DIGIT_WORDS[digit]
                audio = _trim(_speak(word, voices[spk], rng), espeak.SAMPLE_RATE, 0.01)
                audio = _add_noise(soxr.resample(audio, espeak.SAMPLE_RATE, 8000), rng, 5e-4)
                sf.write(str(corpus_dir / f"{digit}_{spk}_{n}.wav"), audio, 8000,
                         subtype="PCM_16", format="WAV")
                utt_id = f"{spk}_{digit}_{n}"
                result["ids"].append(utt_id)
                result["texts"][utt_id] = word
                result["durations"][utt_id] = len(audio) / 8000
    return _finish(result)


# ----------------------------------------------------------------------------------------------
# Helpers


def _result(root: Path, corpus_dir: Path, layout: str, speakers: list[str],
            sample_rate: int) -> dict:
    return {"root": root, "corpus_dir": corpus_dir, "layout": layout, "speakers": list(speakers),
            "ids": [], "missing_text": [], "corrupt": [], "silent": [], "rejected_ids": [],
            "texts": {}, "sample_rate": sample_rate, "durations": {}}


def _finish(result: dict) -> dict:
    for key in ("ids", "missing_text", "corrupt", "silent", "rejected_ids"):
        result[key] = sorted(result[key])
    return result


def _check_sizes(speakers: list[str], per_speaker: int, limit: int) -> None:
    if not speakers or len(set(speakers)) != len(speakers):
        raise ValueError("give at least one speaker, each once")
    if not 1 <= per_speaker <= limit:
        raise ValueError(f"utterances per speaker must be 1-{limit}, not {per_speaker}")
    if len(speakers) * per_speaker < 4:
        raise ValueError("need at least 4 utterances in all: 3 messy cases and 1 usable one")


def _messy_slots(num_speakers: int, per_speaker: int,
                 slots: list[tuple[int, int]]) -> tuple[tuple[int, int], ...]:
    """Distinct (speaker index, utterance index) for (missing text, corrupt, silent).

    Preferred: the corrupt file is the first speaker's last utterance, the silent one the second
    speaker's last, the missing text the last speaker's second; taken slots fall back to the
    latest free one, so small corpora still keep a usable utterance at the start.
    """
    last = per_speaker - 1
    wanted = [(num_speakers - 1, min(1, last)), (0, last), (min(1, num_speakers - 1), last)]
    chosen: list[tuple[int, int]] = []
    for slot in wanted:
        if slot in chosen:
            slot = next(s for s in reversed(slots) if s not in chosen)
        chosen.append(slot)
    return tuple(chosen)


def _assign_voices(speakers: list[str], kinds: list[tuple[str, str]]) -> dict[str, Voice]:
    """A voice per speaker: the next unused voice of its (accent, sex), with a pitch nudge on reuse."""
    used: dict[tuple[str, str], int] = {}
    voices = {}
    for spk, kind in zip(speakers, kinds):
        options = _VOICES[kind]
        count = used.get(kind, 0)
        used[kind] = count + 1
        base = options[count % len(options)]
        nudge = 5 * (count // len(options))
        voices[spk] = Voice(base.voice, min(100, base.pitch + nudge), base.rate, base.pitch_range)
    return voices


def _speak(text: str, voice: Voice, rng: np.random.Generator) -> np.ndarray:
    """``text`` in ``voice`` with a little rate and pitch variation; float32 at 22,050 Hz."""
    rate = int(round(voice.rate * rng.uniform(0.95, 1.05)))
    pitch = int(np.clip(voice.pitch + rng.integers(-3, 4), 0, 100))
    result = espeak.synthesize(text, voice=voice.voice, rate=rate, pitch=pitch,
                               pitch_range=voice.pitch_range, seed=int(rng.integers(2 ** 31)))
    return result.audio


def _trim(audio: np.ndarray, sample_rate: int, margin: float, threshold_db: float = -40.0) -> np.ndarray:
    """Cut leading and trailing silence (10 ms frames below the peak + ``threshold_db``), keeping
    ``margin`` seconds either side."""
    frame = max(1, sample_rate // 100)
    count = len(audio) // frame
    if count == 0:
        return audio
    energy = np.sqrt(np.mean(audio[: count * frame].reshape(count, frame) ** 2, axis=1))
    loud = np.flatnonzero(energy > energy.max() * 10 ** (threshold_db / 20))
    keep = int(margin * sample_rate)
    start = max(0, loud[0] * frame - keep)
    end = min(len(audio), (loud[-1] + 1) * frame + keep)
    return audio[start:end]


def _pad(audio: np.ndarray, sample_rate: int, lead: float, tail: float) -> np.ndarray:
    return np.concatenate([np.zeros(int(lead * sample_rate), np.float32), audio,
                           np.zeros(int(tail * sample_rate), np.float32)])


def _add_noise(audio: np.ndarray, rng: np.random.Generator, level: float) -> np.ndarray:
    """A faint noise floor, as any real recording has (no sample is exactly zero for long)."""
    noisy = audio + level * rng.standard_normal(len(audio))
    return np.clip(noisy, -1.0, 1.0).astype(np.float32)


def _other_microphone(mic1: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """VCTK's second microphone: the same speech, duller (one-pole low-pass), 5 dB quieter, with a
    slightly higher noise floor and a 0.5 ms later arrival."""
    weights = 0.35 * 0.65 ** np.arange(64)  # a one-pole low-pass, truncated
    out = np.convolve(mic1, weights / weights.sum())[: len(mic1)]
    delay = 24  # samples at 48 kHz
    out = np.concatenate([np.zeros(delay, np.float32), out[:-delay]]) * 10 ** (-5 / 20)
    return _add_noise(out, rng, level=8e-4)


def _write_bad(path: Path, kind: str, sample_rate: int, rng: np.random.Generator) -> None:
    """A corrupt file (random bytes, no audio header) or a silent one (valid audio, all zeros)."""
    if kind == "corrupt":
        path.write_bytes(b"\x00\x17garbage" + rng.bytes(_CORRUPT_BYTES))
        return
    zeros = np.zeros(int(_SILENT_SECONDS * sample_rate), np.float32)
    fmt = "FLAC" if path.suffix == ".flac" else "WAV"
    sf.write(str(path), zeros, sample_rate, subtype="PCM_16", format=fmt)


def _write_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
