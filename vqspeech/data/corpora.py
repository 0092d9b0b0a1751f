"""Corpus readers: find the utterances of a corpus on disk, one registry for every layout.

A reader walks a corpus folder and returns :class:`SourceUtterance` records (source audio path,
speaker, transcript, alignment, corpus-fixed split) plus the audio-looking files it had to skip,
each with a reason. Nothing is read or converted here; :mod:`vqspeech.data.prepare` does that.

Layouts (the ``--layout`` names):

- ``vctk``: ``wav48/<spk>/<spk>_<nnn>.wav`` (0.80) or
  ``wav48_silence_trimmed/<spk>/<spk>_<nnn>_mic1.flac`` (0.92, option ``mic``), with transcripts
  in ``txt/<spk>/<spk>_<nnn>.txt``; ids ``p225_001``.
- ``librispeech``: ``<spk>/<chapter>/<spk>-<chapter>-<utt>.flac`` with ``<spk>-<chapter>.trans.txt``;
  ids ``103-1240-0000``.
- ``libritts``: ``<spk>/<chapter>/<id>.wav`` with ``<id>.normalized.txt``.
- ``fsdd``: ``{digit}_{speaker}_{n}.wav``; ids ``<speaker>_<digit>_<n>``; indices 0-4 are "test".
- ``timit``: the LDC distribution ``TRAIN|TEST/DR1/FCJF0/SA1.WAV`` (NIST SPHERE, with ``.PHN``,
  ``.WRD``, ``.TXT``; any case, any folders above) or the sample layout ``dr1-fvmh0/sa1.wav``;
  ids ``dr1-fvmh0_sa1``, speakers ``dr1-fvmh0``; files under ``TEST`` are "test".
- ``folder``: any audio files, recursively; speaker = parent folder; ids ``<speaker>_<stem>``.
- ``demo``: a ``manifest.jsonl`` written by the demo corpus maker.

Hidden files and folders (names starting with ".") are never part of a corpus.
"""

from __future__ import annotations

import hashlib
import inspect
import os
import re
import stat
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from ..errors import UserError
from ..fileio import DEMO_MARK, OWNED_FOLDER_MARKS, is_experiment_folder, is_safe_name, user_path
from .manifest import SPEAKER_RULE, check_header, is_safe_speaker, read_manifest

AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".aiff", ".aif")
"""File extensions treated as audio (matched case-insensitively)."""

DIGIT_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")

_UNSAFE_CHARS = re.compile(r"[^A-Za-z0-9_.-]+")

Reject = tuple[str, str]
"""A skipped input: (file, reason)."""


@dataclass
class SourceUtterance:
    """An utterance found on disk before it is prepared: a corpus file, an input of the inference
    verbs, or an alignment of the probe. Corpus readers fill ``path`` and ``speaker`` always."""

    id: str
    """Unique, safe as a file name: characters ``[A-Za-z0-9_.-]`` only."""
    path: str | None
    """The sound file (None: an alignment whose audio is not known)."""
    speaker: str | None = None
    text: str | None = None
    alignment: str | None = None
    """Path to a TextGrid (or similar) when the corpus ships one."""
    split: str | None = None
    """A split the corpus itself fixes (fsdd: indices 0-4 are "test"), or the manifest's."""


@dataclass(frozen=True)
class CorpusLicence:
    """What to credit for a corpus and under which terms (shown by `vqspeech report`)."""

    name: str
    credit: str
    """Authors or source."""
    licence: str
    url: str
    """Where the corpus is published ("" when unknown)."""
    terms: str
    """What the terms mean for sharing audio derived from it."""


Reader = Callable[..., tuple[list[SourceUtterance], list[Reject]]]

LAYOUTS: dict[str, Reader] = {}
"""Layout name -> reader ``reader(root: Path, **options) -> (utterances, rejects)``."""

_EXPECTED: dict[str, str] = {}
"""Layout name -> a description of the files it looks for (used in error messages)."""

LICENCES: dict[str, CorpusLicence] = {}
"""Layout name -> the corpus's credit and licence, for the layouts that declare one."""


def register_layout(
    name: str, *, expected: str = "", licence: CorpusLicence | None = None
) -> Callable[[Reader], Reader]:
    """Decorator adding a reader to :data:`LAYOUTS` under ``name``.

    A reader takes the corpus root (an existing folder, as a Path) and its options as keyword-only
    arguments, and returns (utterances, rejects). ``expected`` describes the files it looks for,
    e.g. ``"{digit}_{speaker}_{n}.wav"``; it is quoted when a corpus holds none. ``licence``, what
    to credit for the corpus, goes to :data:`LICENCES`.
    """

    def decorate(reader: Reader) -> Reader:
        LAYOUTS[name] = reader
        _EXPECTED[name] = expected or "audio files"
        if licence is not None:
            LICENCES[name] = licence
        return reader

    return decorate


def corpus_licence(layout: str) -> CorpusLicence | None:
    """The credit and licence of the corpus read with ``layout``; None for an unknown layout."""
    return LICENCES.get(layout)


def find_utterances(
    corpus_dir: str | os.PathLike, layout: str, **options
) -> tuple[list[SourceUtterance], list[Reject]]:
    """Find the utterances of the corpus at ``corpus_dir`` read with the reader ``layout``.

    Returns (utterances sorted by id, rejects as (file, reason) sorted by file). Utterances whose id
    is not file-name safe or repeats an earlier id are moved to the rejects. Raises UserError for an
    unknown layout or option, a missing corpus folder, or a corpus in which nothing usable is found.
    """
    if layout not in LAYOUTS:
        raise UserError(f"Unknown corpus layout '{layout}'; choose one of: {', '.join(sorted(LAYOUTS))}.")
    reader = LAYOUTS[layout]
    _check_options(layout, options)
    root = user_path(corpus_dir)
    if not root.is_dir():
        raise UserError(
            f"Corpus folder {root} does not exist; check the path "
            "(it should be the folder that holds the corpus files)."
        )
    found, rejects = reader(root, **options)

    utts: list[SourceUtterance] = []
    seen: dict[str, tuple[str, str]] = {}  # id case-folded -> (id, file): ids name files, on any file system
    for utt in sorted(found, key=lambda u: (u.id, u.path)):
        path = source_path(utt)
        earlier = seen.get(utt.id.casefold())
        if not is_safe_name(utt.id):
            rejects.append((path, f"id '{utt.id}' is not safe as a file name"))
        elif not is_safe_speaker(utt.speaker):
            rejects.append((path, f"speaker {utt.speaker!r} is not a name ({SPEAKER_RULE})"))
        elif earlier is not None and earlier[0] == utt.id:
            rejects.append((path, f"duplicate id '{utt.id}' (also used by {earlier[1]})"))
        elif earlier is not None:  # a case-insensitive file system (macOS, Windows) stores both as one file
            rejects.append((path, f"id '{utt.id}' differs from '{earlier[0]}' ({earlier[1]}) only in case"))
        else:
            seen[utt.id.casefold()] = (utt.id, path)
            utts.append(utt)
    rejects.sort()
    if not utts:
        if rejects:  # the reason the files were refused says more than what the layout expects
            raise UserError(
                f"No usable utterances for layout '{layout}' in {root}: all {len(rejects)} audio file(s) were "
                f"refused, e.g. {rejects[0][0]}: {rejects[0][1]}; expected {_EXPECTED[layout]}."
            )
        raise UserError(f"No usable utterances for layout '{layout}' in {root}; expected {_EXPECTED[layout]}.")
    return utts, rejects


def source_path(utt: SourceUtterance) -> str:
    """The sound file of an utterance a corpus reader found. Readers always fill it: None is a bug."""
    if utt.path is None:
        raise ValueError(f"Corpus utterance '{utt.id}' has no path; a corpus reader must fill path and speaker.")
    return utt.path


def source_speaker(utt: SourceUtterance) -> str:
    """The speaker of an utterance a corpus reader found. Readers always fill it: None is a bug."""
    if utt.speaker is None:
        raise ValueError(f"Corpus utterance '{utt.id}' has no speaker; a corpus reader must fill path and speaker.")
    return utt.speaker


def layout_options(layout: str) -> dict[str, object]:
    """The options a layout accepts, with their defaults (e.g. ``{"mic": "mic1"}`` for vctk)."""
    if layout not in LAYOUTS:
        raise UserError(f"Unknown corpus layout '{layout}'; choose one of: {', '.join(sorted(LAYOUTS))}.")
    params = inspect.signature(LAYOUTS[layout]).parameters.values()
    return {p.name: p.default for p in params if p.kind is inspect.Parameter.KEYWORD_ONLY}


def sanitize_id(text: str) -> str:
    """Make ``text`` safe as a file name: runs of other characters become "_" (``sub/take 2`` ->
    ``sub_take_2``); where letters of other scripts were replaced, a short hash of ``text`` keeps
    names apart that would otherwise be one (speakers 张三 and 李四 would both be "_"); a leading dot
    or dash gets a "_" before it."""
    safe = _UNSAFE_CHARS.sub("_", text.strip()) or "_"
    if not text.isascii():
        safe = f"{safe}_{hashlib.sha1(text.encode('utf-8', 'surrogateescape')).hexdigest()[:8]}"
    return "_" + safe if safe[0] in ".-" else safe


def is_audio_file(path: str | os.PathLike) -> bool:
    """True when the file name has one of :data:`AUDIO_EXTENSIONS`."""
    return Path(path).suffix.lower() in AUDIO_EXTENSIONS


# ----------------------------------------------------------------------------------------------
# Readers


@register_layout(
    "vctk",
    expected="wav48/<spk>/<spk>_<nnn>.wav (VCTK 0.80) or wav48_silence_trimmed/<spk>/<spk>_<nnn>_mic1.flac (VCTK 0.92)",
    licence=CorpusLicence(
        name="CSTR VCTK Corpus, version 0.92",
        credit="J. Yamagishi, C. Veaux and K. MacDonald, Centre for Speech Technology Research "
        "(CSTR), University of Edinburgh",
        licence="CC BY 4.0 (Creative Commons Attribution 4.0); the older 0.80 release: ODC-By 1.0",
        url="https://doi.org/10.7488/ds/2645",
        terms="Attribution required when sharing the audio or audio derived from it.",
    ),
)
def _read_vctk(root: Path, *, mic: str = "mic1") -> tuple[list[SourceUtterance], list[Reject]]:
    """VCTK 0.80 (``wav48``) or 0.92 (``wav48_silence_trimmed``, one of two microphones)."""
    if mic not in ("mic1", "mic2"):
        raise UserError(f"VCTK option mic='{mic}' is not valid; use mic='mic1' or mic='mic2'.")
    base = root
    if not _has_vctk_audio(root) and _has_vctk_audio(root / "VCTK-Corpus"):
        base = root / "VCTK-Corpus"
    if (base / "wav48_silence_trimmed").is_dir():
        wav_dir = base / "wav48_silence_trimmed"
        pattern = re.compile(r"^(?P<spk>[A-Za-z0-9]+)_(?P<num>\d+)_(?P<mic>mic[12])\.flac$")
        description = f"<spk>_<nnn>_{mic}.flac"
    elif (base / "wav48").is_dir():
        if mic != "mic1":
            raise UserError(
                f"VCTK 0.80 (wav48/ in {base}) has one recording of each utterance, so mic='{mic}' would not be "
                "used; leave the mic option out (it chooses between the two of VCTK 0.92)."
            )
        wav_dir = base / "wav48"
        pattern = re.compile(r"^(?P<spk>[A-Za-z0-9]+)_(?P<num>\d+)\.wav$")
        description = "<spk>_<nnn>.wav"
    else:
        return [], []

    utts, rejects = [], []
    for path in walk_audio(wav_dir):
        m = pattern.match(path.name)
        if not m:
            rejects.append((str(path), f"name does not match {description}"))
            continue
        if m.groupdict().get("mic", mic) != mic:
            continue  # the other microphone's recording of the same utterance
        spk, num = m["spk"], m["num"]
        text = _read_text(base / "txt" / spk / f"{spk}_{num}.txt")
        utts.append(SourceUtterance(id=f"{spk}_{num}", path=str(path), speaker=spk, text=text))
    return utts, rejects


def _has_vctk_audio(folder: Path) -> bool:
    return (folder / "wav48_silence_trimmed").is_dir() or (folder / "wav48").is_dir()


@register_layout(
    "librispeech",
    expected="<spk>/<chapter>/<spk>-<chapter>-<utt>.flac in a subset folder (or LibriSpeech/<subset>/)",
    licence=CorpusLicence(
        name="LibriSpeech ASR corpus",
        credit="V. Panayotov, G. Chen, D. Povey and S. Khudanpur, \u201cLibrispeech: an ASR corpus "
        "based on public domain audio books\u201d, ICASSP 2015 (recordings from LibriVox)",
        licence="CC BY 4.0 (Creative Commons Attribution 4.0)",
        url="https://www.openslr.org/12",
        terms="Attribution required when sharing the audio or audio derived from it.",
    ),
)
def _read_librispeech(root: Path, *, subset: str | None = None) -> tuple[list[SourceUtterance], list[Reject]]:
    """LibriSpeech: flac files with one ``<spk>-<chapter>.trans.txt`` per chapter folder."""
    pattern = re.compile(r"^(?P<spk>\d+)-(?P<chapter>\d+)-(?P<utt>\d+)\.flac$")
    utts, rejects = [], []
    for subset_dir in _libri_subsets(root, "LibriSpeech", subset):
        transcripts: dict[Path, dict[str, str | None]] = {}
        for path in walk_audio(subset_dir):
            m = pattern.match(path.name)
            if not m:
                rejects.append((str(path), "name does not match <spk>-<chapter>-<utt>.flac"))
                continue
            if path.parent not in transcripts:
                trans = path.parent / f"{m['spk']}-{m['chapter']}.trans.txt"
                transcripts[path.parent] = _read_trans(trans)
            utt_id = path.name[: -len(".flac")]
            utts.append(
                SourceUtterance(id=utt_id, path=str(path), speaker=m["spk"], text=transcripts[path.parent].get(utt_id))
            )
    return utts, rejects


@register_layout(
    "libritts",
    expected="<spk>/<chapter>/<spk>_<chapter>_<n>_<m>.wav in a subset folder (or LibriTTS/<subset>/)",
    licence=CorpusLicence(
        name="LibriTTS corpus",
        credit="H. Zen, V. Dang, R. Clark, Y. Zhang, R. J. Weiss, Y. Jia, Z. Chen and Y. Wu, "
        "\u201cLibriTTS: a corpus derived from LibriSpeech for text-to-speech\u201d, "
        "Interspeech 2019",
        licence="CC BY 4.0 (Creative Commons Attribution 4.0)",
        url="https://www.openslr.org/60",
        terms="Attribution required when sharing the audio or audio derived from it.",
    ),
)
def _read_libritts(root: Path, *, subset: str | None = None) -> tuple[list[SourceUtterance], list[Reject]]:
    """LibriTTS (and LibriTTS-R): 24 kHz wavs with ``<id>.normalized.txt`` transcripts."""
    pattern = re.compile(r"^(?P<spk>\d+)_(?P<chapter>\d+)_(?P<n>\d+)_(?P<m>\d+)\.wav$")
    utts, rejects = [], []
    for subset_dir in _libri_subsets(root, "LibriTTS", subset):
        for path in walk_audio(subset_dir):
            m = pattern.match(path.name)
            if not m:
                rejects.append((str(path), "name does not match <spk>_<chapter>_<n>_<m>.wav"))
                continue
            utt_id = path.name[: -len(".wav")]
            text = _read_text(path.with_name(f"{utt_id}.normalized.txt"))
            utts.append(SourceUtterance(id=utt_id, path=str(path), speaker=m["spk"], text=text))
    return utts, rejects


@register_layout(
    "fsdd",
    expected="{digit}_{speaker}_{n}.wav in the folder or its recordings/",
    licence=CorpusLicence(
        name="Free Spoken Digit Dataset (FSDD)",
        credit="Z. Jackson, C. Souza, J. Flaks, Y. Pan, H. Nicolas and A. Thite",
        licence="CC BY-SA 4.0 (Creative Commons Attribution-ShareAlike 4.0)",
        url="https://github.com/Jakobovski/free-spoken-digit-dataset",
        terms="Share-alike: audio derived from it (reconstructions, conversions, samples) may be "
        "shared under CC BY-SA 4.0 with this attribution.",
    ),
)
def _read_fsdd(root: Path) -> tuple[list[SourceUtterance], list[Reject]]:
    """Free Spoken Digit Dataset: the transcript is the digit's word; indices 0-4 are "test"."""
    folder = root / "recordings" if (root / "recordings").is_dir() else root
    pattern = re.compile(r"^(?P<digit>\d)_(?P<spk>[A-Za-z0-9]+)_(?P<n>\d+)\.wav$")
    utts, rejects = [], []
    for path in sorted(folder.iterdir()):
        if path.name.startswith(".") or not path.is_file() or not is_audio_file(path):
            continue
        m = pattern.match(path.name)
        if not m:
            rejects.append((str(path), "name does not match {digit}_{speaker}_{n}.wav"))
            continue
        digit, spk, n = int(m["digit"]), m["spk"], int(m["n"])
        utts.append(
            SourceUtterance(
                id=f"{spk}_{digit}_{n}",
                path=str(path),
                speaker=spk,
                text=DIGIT_WORDS[digit],
                split="test" if n < 5 else None,
            )
        )
    return utts, rejects


@register_layout(
    "timit",
    expected="TRAIN|TEST/DR<n>/<speaker>/SA1.WAV with .PHN/.WRD/.TXT "
    "(LDC TIMIT) or dr<n>-<speaker>/sa1.wav (TIMIT sample)",
    licence=CorpusLicence(
        name="TIMIT Acoustic-Phonetic Continuous Speech Corpus (LDC93S1)",
        credit="J. S. Garofolo, L. F. Lamel, W. M. Fisher, J. G. Fiscus, D. S. Pallett, "
        "N. L. Dahlgren and V. Zue, Linguistic Data Consortium, 1993",
        licence="LDC User Agreement (licensed to LDC members and licensees; not an open licence)",
        url="https://catalog.ldc.upenn.edu/LDC93S1",
        terms="The audio must not be redistributed: do not publish this page with its audio "
        "(originals, reconstructions, conversions or samples) outside the licensee's "
        "organisation.",
    ),
)
def _read_timit(root: Path) -> tuple[list[SourceUtterance], list[Reject]]:
    """TIMIT: the LDC distribution (``DR1/FCJF0/SA1.WAV``) or the sample (``dr1-fcjf0/sa1.wav``).

    Names may be upper or lower case. The text is the ``.TXT`` file without its two leading
    sample numbers; the alignment is the ``.PHN`` file. Some copies hold RIFF conversions
    ``SA1.WAV.wav`` next to the NIST SPHERE originals; a conversion is used only when its
    original is missing, so no utterance is read twice.
    """
    utts, rejects = [], []
    for path in walk_audio(root):
        name = path.name
        if name.lower().endswith(".wav.wav"):
            if path.with_suffix("").is_file():
                continue  # a RIFF copy of the SPHERE file beside it, which is read instead
            name = name[: -len(".wav")]
        utt = _TIMIT_UTTERANCE.match(name)
        if not utt:
            rejects.append((str(path), "name does not match SA1.WAV, SI<n>.WAV or SX<n>.WAV"))
            continue
        folders = _timit_speaker(path)
        if folders is None:
            rejects.append((str(path), "folder is not DR<n>/<speaker> (LDC TIMIT) or dr<n>-<speaker> (TIMIT sample)"))
            continue
        (dialect, speaker), split_folder = folders
        stem = path.parent / utt["utt"]
        text = _read_text(_timit_sibling(stem, ".txt"))
        if text is not None:
            text = _TIMIT_TEXT_TIMES.sub("", text) or None
        alignment = _timit_sibling(stem, ".phn")
        utts.append(
            SourceUtterance(
                id=f"{dialect}-{speaker}_{utt['utt']}".lower(),
                path=str(path),
                speaker=f"{dialect}-{speaker}".lower(),
                text=text,
                alignment=str(alignment) if alignment.is_file() else None,
                split="test" if split_folder.lower() == "test" else None,
            )
        )
    return utts, rejects


_TIMIT_UTTERANCE = re.compile(r"^(?P<utt>s[aix]\d+)\.wav$", re.IGNORECASE)
_TIMIT_SAMPLE_SPEAKER = re.compile(r"^(?P<dr>dr\d+)-(?P<spk>[mf][a-z]{3}\d)$", re.IGNORECASE)
_TIMIT_DIALECT = re.compile(r"^dr\d+$", re.IGNORECASE)
_TIMIT_SPEAKER = re.compile(r"^[mf][a-z]{3}\d$", re.IGNORECASE)
_TIMIT_TEXT_TIMES = re.compile(r"^\d+\s+\d+\s*")


def _timit_speaker(path: Path) -> tuple[tuple[str, str], str] | None:
    """((dialect region, speaker), the LDC split folder above them, or "" in the sample layout) from an
    audio path; None if neither."""
    speaker_dir = path.parent
    sample = _TIMIT_SAMPLE_SPEAKER.match(speaker_dir.name)
    if sample:  # the sample has no TRAIN/TEST level: the folder above is the user's, no split
        return (sample["dr"], sample["spk"]), ""
    dialect_dir = speaker_dir.parent
    if _TIMIT_SPEAKER.match(speaker_dir.name) and _TIMIT_DIALECT.match(dialect_dir.name):
        return (dialect_dir.name, speaker_dir.name), dialect_dir.parent.name
    return None


def _timit_sibling(stem: Path, suffix: str) -> Path:
    """``stem`` + ``suffix`` in the stem's case (``SA1.PHN``, ``sa1.phn``), else the other case."""
    same_case = suffix.upper() if stem.name.isupper() else suffix.lower()
    for candidate in (stem.with_name(stem.name + same_case), stem.with_name(stem.name + same_case.swapcase())):
        if candidate.is_file():
            return candidate
    return stem.with_name(stem.name + same_case)


@register_layout(
    "folder",
    expected="audio files (" + ", ".join(AUDIO_EXTENSIONS) + ") in speaker folders",
    licence=CorpusLicence(
        name="Your own data (a folder of audio files)",
        credit="unknown: add the recordings' authors here before sharing",
        licence="unknown: whatever terms apply to your recordings",
        url="",
        terms="Check that you may share the recordings before publishing this page with its audio.",
    ),
)
def _read_folder(root: Path) -> tuple[list[SourceUtterance], list[Reject]]:
    """Any audio files below ``root``; the speaker is the parent folder's name.

    A ``.txt`` file with the same stem next to an audio file gives its transcript.
    """
    utts = []
    for path in walk_audio(root):
        speaker = Path(os.path.abspath(path.parent)).name  # the same for `prepare . OUT` as for its full path
        utts.append(
            SourceUtterance(
                id=sanitize_id(f"{speaker}_{path.stem}"),
                path=str(path),
                speaker=speaker,
                text=_read_text(path.with_suffix(".txt")),
            )
        )
    return utts, []


@register_layout(
    "demo",
    expected="manifest.jsonl (written by the demo corpus maker)",
    licence=CorpusLicence(
        name="vqspeech demo corpus (synthetic speech)",
        credit="synthesised by `vqspeech demo-data` with the espeak-ng speech engine",
        licence="espeak-ng engine: GPL-3.0-or-later; the synthetic audio itself is produced by this toolkit",
        url="https://github.com/espeak-ng/espeak-ng",
        terms="No third-party recordings are involved.",
    ),
)
def _read_demo(root: Path) -> tuple[list[SourceUtterance], list[Reject]]:
    """The embedded synthetic corpus: its ``manifest.jsonl`` lists the utterances; one whose audio no
    longer has the rate and length listed (its alignment would not fit) is rejected."""
    manifest = root / "manifest.jsonl"
    if not manifest.is_file():
        return [], []
    utts, rejects = [], []
    for u in read_manifest(manifest):
        try:
            check_header(u)
        except UserError:
            reason = (
                "its audio no longer has the rate and length the corpus lists; rebuild it with `demo-data --overwrite`"
            )
            rejects.append((u.audio, reason))
            continue
        utts.append(SourceUtterance(id=u.id, path=u.audio, speaker=u.speaker, text=u.text, alignment=u.alignment))
    return utts, rejects


# ----------------------------------------------------------------------------------------------
# Helpers


def _check_options(layout: str, options: dict) -> None:
    known = layout_options(layout)
    unknown = sorted(set(options) - set(known))
    if unknown:
        accepted = ", ".join(known) if known else "none"
        raise UserError(f"Layout '{layout}' has no option {', '.join(unknown)}; its options are: {accepted}.")


OUTPUT_MARKS = {mark: what for mark, what in OWNED_FOLDER_MARKS.items() if mark != DEMO_MARK}
"""Folders another verb wrote (a prepared corpus, codes, a conversion evaluation): never corpus audio."""


def walk_audio(root: Path) -> Iterator[Path]:
    """Audio files below ``root`` in sorted order; skips hidden names. A link to a folder outside
    the corpus is followed (once); one to a folder inside it is not, since that folder is walked
    under its own name (a link must not rename its speaker or count its files twice)."""
    top = Path(os.path.realpath(root))
    visited: set[str] = set()

    def walk(folder: Path) -> Iterator[Path]:
        real = os.path.realpath(folder)
        if real in visited:
            return
        visited.add(real)
        try:
            entries = sorted(os.scandir(folder), key=lambda e: e.name)
        except OSError:
            return
        for entry in entries:
            if entry.name.startswith("."):
                continue
            try:
                is_dir = entry.is_dir()
            except OSError:  # a link that loops or cannot be followed: not a folder to walk
                is_dir = False
            if is_dir and entry.is_symlink() and Path(os.path.realpath(entry.path)).is_relative_to(top):
                continue
            # a folder another verb wrote (a link to one is followed: prepare refuses one into its own output)
            plain = is_dir and not entry.is_symlink()
            owned = next(
                (what for mark, what in OUTPUT_MARKS.items() if plain and Path(entry.path, mark).exists()), None
            )
            if owned is None and plain and is_experiment_folder(entry.path):
                owned = "an experiment folder"
            if owned is not None:  # e.g. a prepared copy of this corpus: its audio again, under a made-up speaker
                warnings.warn(f"{entry.path} is {owned}, not part of the corpus; it is skipped.", stacklevel=2)
                continue
            if is_dir:
                yield from walk(Path(entry.path))
            elif is_audio_file(entry.name):
                yield Path(entry.path)  # a file that cannot be read becomes a reject, with the reason

    yield from walk(root)


def _libri_subsets(root: Path, corpus_name: str, subset: str | None) -> list[Path]:
    """Subset folders (holding numeric speaker folders) for ``root``.

    ``root`` may be a subset folder (``train-clean-100``), the corpus folder holding subsets
    (``LibriSpeech``), or a folder containing ``LibriSpeech/<subset>/``. ``subset`` keeps one.
    """

    def is_subset(folder: Path) -> bool:
        return any(p.is_dir() and p.name.isdigit() for p in folder.iterdir())

    if is_subset(root):
        return [root] if subset in (None, root.name) else []
    base = root / corpus_name if (root / corpus_name).is_dir() else root
    subsets = [p for p in sorted(base.iterdir()) if p.is_dir() and not p.name.startswith(".") and is_subset(p)]
    if subset is not None:
        subsets = [p for p in subsets if p.name == subset]
        if not subsets:
            raise UserError(
                f"{corpus_name} subset '{subset}' is not in {base}; "
                "check the subset name or leave it out to read every subset."
            )
    return subsets


MAX_TRANSCRIPT_BYTES = 1 << 20
"""The largest transcript file read (a LibriSpeech chapter's ``.trans.txt`` is about 20 kB)."""


def _transcript_text(path: Path) -> str | None:
    """A transcript file's text (UTF-8, a byte-order mark dropped); None when it is missing, and
    None with a warning naming it when it cannot be a transcript: not a regular file (a pipe, a
    link to a device: reading would block or never end), larger than :data:`MAX_TRANSCRIPT_BYTES`
    or not UTF-8 (its utterance then has no transcript, which `align` reports)."""
    try:
        info = path.stat()
    except OSError:
        return None
    problem = None
    if not stat.S_ISREG(info.st_mode):
        problem = "is not a regular file (a folder, a pipe or a device)"
    elif info.st_size > MAX_TRANSCRIPT_BYTES:
        problem = f"holds {info.st_size:,} bytes, more than a transcript ({MAX_TRANSCRIPT_BYTES:,} at most)"
    else:
        try:
            return path.read_bytes()[: MAX_TRANSCRIPT_BYTES + 1].decode("utf-8-sig")
        except UnicodeDecodeError:
            problem = "is not UTF-8 text (save it as UTF-8)"
        except OSError:
            return None
    warnings.warn(f"The transcript {path} {problem}; its utterance has no transcript.", stacklevel=3)
    return None


def _read_text(path: Path) -> str | None:
    """A transcript file's stripped text, or None when it is missing, empty or unreadable."""
    text = _transcript_text(path)
    if text is None:
        return None
    return " ".join(text.split()) or None


def _read_trans(path: Path) -> dict[str, str | None]:
    """A LibriSpeech ``.trans.txt``: lines ``<id> TEXT`` -> {id: text}; {} when missing or unreadable."""
    text = _transcript_text(path)
    table: dict[str, str | None] = {}
    for line in (text or "").splitlines():
        utt_id, _, words = line.strip().partition(" ")
        if utt_id:
            table[utt_id] = words.strip() or None
    return table
