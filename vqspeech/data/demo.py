"""The embedded demo corpus: English sentences spoken by espeak-ng voices, made offline in seconds.

:func:`make_demo_corpus` writes a small multi-speaker corpus with exact word and phone alignments,
so every stage of the toolkit (prepare, train, encode, probe, convert) can run without downloading
anything. Sentences come from a small built-in grammar (deterministic for a seed); each is spoken
by one of the :data:`SPEAKERS`, espeak voices and variants with their own base pitch and rate plus
a little per-utterance variation.

Layout under ``out_dir``::

    demo.json                  the settings the corpus was made with (written first)
    wavs/<speaker>/<id>.wav    16-bit PCM, 22,050 Hz, mono
    alignments/<id>.TextGrid   interval tiers ``words`` and ``phones`` (raw espeak mnemonics)
    text/<id>.txt              the sentence
    speakers.tsv               speaker, voice, pitch, rate, pitch_range
    README.md                  what this is and how it was made
    manifest.jsonl             one line per utterance (written last: a run that stopped early
                               leaves no manifest)
"""

from __future__ import annotations

import contextlib
import json
import os
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TypeVar

import numpy as np
from tqdm import tqdm

from ..audio import save_wav
from ..errors import UserError
from ..fileio import DEMO_MARK, TEMP_MARK, FolderLock, write_text_atomic
from . import alignments, espeak
from .manifest import Utterance, check_header, read_manifest, write_manifest

DEFAULT_NUM_SENTENCES = 240
FORMAT_VERSION = 1
MIN_WORDS, MAX_WORDS = 4, 12

RATE_JITTER = 0.08
"""Per-utterance speaking-rate variation: a uniform factor in [1 - RATE_JITTER, 1 + RATE_JITTER]."""
PITCH_JITTER = 4
"""Per-utterance pitch variation: a uniform integer offset in [-PITCH_JITTER, PITCH_JITTER]."""


@dataclass(frozen=True)
class DemoSpeaker:
    """One synthetic speaker: an espeak voice (``language[+variant]``) and its base prosody."""

    name: str
    voice: str
    pitch: int
    rate: int
    pitch_range: int = 50


SPEAKERS: tuple[DemoSpeaker, ...] = (
    DemoSpeaker("us_m1", "en-us", pitch=46, rate=170, pitch_range=50),
    DemoSpeaker("us_f3", "en-us+f3", pitch=58, rate=180, pitch_range=60),
    DemoSpeaker("us_m3", "en-us+m3", pitch=36, rate=158, pitch_range=40),
    DemoSpeaker("us_f4", "en-us+f4", pitch=66, rate=192, pitch_range=55),
    DemoSpeaker("us_m7", "en-us+m7", pitch=42, rate=150, pitch_range=45),
    DemoSpeaker("gb_m1", "en", pitch=50, rate=175, pitch_range=50),
    DemoSpeaker("gb_f2", "en+f2", pitch=62, rate=165, pitch_range=65),
    DemoSpeaker("sc_m4", "en-gb-scotland+m4", pitch=40, rate=168, pitch_range=50),
)
"""The demo speakers; their names are safe as file names and prefix the utterance ids."""

# ----------------------------------------------------------------------------------------------
# A small sentence grammar. The vocabulary is chosen to cover every English phoneme several times
# (th/dh in "thin"/"weather", zh in "treasure"/"vision", ng, ch, j, oy, aw, uh, er, y, w...).

_NAMES = (
    "Anna",
    "Thomas",
    "Joseph",
    "Judy",
    "Charles",
    "Sarah",
    "Victor",
    "Rachel",
    "George",
    "Martha",
    "Oliver",
    "Zoe",
    "Peter",
    "Lucy",
    "Hugo",
    "Nora",
    "Walter",
    "Yvonne",
    "Kevin",
    "Bella",
    "Mike",
    "Ruth",
    "Simon",
    "Olga",
    "Frank",
    "Ivy",
    "Dorothy",
    "Sam",
)
_ADJECTIVES = (
    "small",
    "large",
    "bright",
    "quiet",
    "noisy",
    "heavy",
    "purple",
    "yellow",
    "golden",
    "broken",
    "shiny",
    "careful",
    "gentle",
    "smooth",
    "rough",
    "thick",
    "thin",
    "cheap",
    "strange",
    "young",
    "ancient",
    "joyful",
    "cloudy",
    "wooden",
    "curious",
    "usual",
    "pleasant",
    "loud",
    "soft",
    "warm",
    "frozen",
    "lazy",
    "clever",
    "brave",
    "foolish",
    "wet",
    "dusty",
    "modern",
    "orange",
    "tiny",
    "enormous",
    "green",
    "beige",
    "sharp",
)
_NOUNS = (
    ("dog", "dogs"),
    ("cat", "cats"),
    ("house", "houses"),
    ("mouse", "mice"),
    ("book", "books"),
    ("boy", "boys"),
    ("girl", "girls"),
    ("child", "children"),
    ("judge", "judges"),
    ("church", "churches"),
    ("ship", "ships"),
    ("fish", "fish"),
    ("cheese", "cheeses"),
    ("garage", "garages"),
    ("treasure", "treasures"),
    ("bird", "birds"),
    ("nurse", "nurses"),
    ("coin", "coins"),
    ("toy", "toys"),
    ("cloud", "clouds"),
    ("king", "kings"),
    ("song", "songs"),
    ("thief", "thieves"),
    ("teacher", "teachers"),
    ("farmer", "farmers"),
    ("engine", "engines"),
    ("window", "windows"),
    ("bottle", "bottles"),
    ("letter", "letters"),
    ("basket", "baskets"),
    ("village", "villages"),
    ("mountain", "mountains"),
    ("river", "rivers"),
    ("orange", "oranges"),
    ("umbrella", "umbrellas"),
    ("jacket", "jackets"),
    ("pencil", "pencils"),
    ("doctor", "doctors"),
    ("garden", "gardens"),
    ("kitchen", "kitchens"),
    ("sailor", "sailors"),
    ("picture", "pictures"),
    ("machine", "machines"),
    ("puzzle", "puzzles"),
    ("wolf", "wolves"),
    ("goose", "geese"),
    ("voice", "voices"),
    ("shoe", "shoes"),
    ("chair", "chairs"),
    ("beach", "beaches"),
    ("bridge", "bridges"),
    ("vision", "visions"),
    ("measure", "measures"),
    ("fox", "foxes"),
    ("key", "keys"),
)
_PLACES = (
    "the market",
    "the station",
    "the forest",
    "the harbour",
    "the museum",
    "the zoo",
    "the kitchen",
    "the garden",
    "the village",
    "the church",
    "the shore",
    "the theatre",
    "the bathroom",
    "the north",
    "the valley",
    "the school",
    "the office",
    "the jungle",
)
_PREPOSITIONS = (
    "near",
    "behind",
    "under",
    "beside",
    "inside",
    "outside",
    "above",
    "beyond",
    "through",
    "towards",
    "across",
    "along",
    "without",
    "with",
)
_TRANSITIVE = (
    ("find", "found"),
    ("bring", "brought"),
    ("catch", "caught"),
    ("choose", "chose"),
    ("push", "pushed"),
    ("wash", "washed"),
    ("throw", "threw"),
    ("touch", "touched"),
    ("measure", "measured"),
    ("judge", "judged"),
    ("enjoy", "enjoyed"),
    ("borrow", "borrowed"),
    ("paint", "painted"),
    ("watch", "watched"),
    ("follow", "followed"),
    ("carry", "carried"),
    ("build", "built"),
    ("hide", "hid"),
    ("sell", "sold"),
    ("buy", "bought"),
    ("fix", "fixed"),
    ("move", "moved"),
    ("visit", "visited"),
    ("hear", "heard"),
    ("see", "saw"),
    ("take", "took"),
    ("keep", "kept"),
    ("open", "opened"),
    ("share", "shared"),
    ("teach", "taught"),
    ("love", "loved"),
    ("thank", "thanked"),
)
_INTRANSITIVE = (
    ("sing", "sang"),
    ("laugh", "laughed"),
    ("sleep", "slept"),
    ("run", "ran"),
    ("swim", "swam"),
    ("wait", "waited"),
    ("shout", "shouted"),
    ("jump", "jumped"),
    ("smile", "smiled"),
    ("work", "worked"),
    ("travel", "travelled"),
    ("whisper", "whispered"),
    ("vanish", "vanished"),
    ("breathe", "breathed"),
    ("yawn", "yawned"),
    ("grow", "grew"),
    ("fall", "fell"),
    ("shine", "shone"),
)
_ADVERBS = (
    "quickly",
    "slowly",
    "quietly",
    "loudly",
    "happily",
    "badly",
    "gently",
    "rarely",
    "often",
    "early",
    "late",
    "together",
    "again",
    "carefully",
    "easily",
    "warmly",
)
_TIMES = (
    "today",
    "yesterday",
    "tomorrow",
    "at noon",
    "last Thursday",
    "every morning",
    "in the evening",
    "on Sunday",
    "this autumn",
    "before dinner",
    "after lunch",
    "in June",
    "at midnight",
    "next year",
    "every day",
)
_NUMBERS = (
    "two",
    "three",
    "four",
    "five",
    "six",
    "seven",
    "eight",
    "nine",
    "ten",
    "twelve",
    "twenty",
    "a hundred",
    "several",
    "many",
    "a few",
    "both",
)
_PRONOUNS = ("we", "they", "I", "you", "she", "he")
_MODALS = ("will", "should", "might", "could", "would", "must", "cannot")
_RELATIVES = ("mother", "father", "brother", "sister", "uncle", "aunt", "cousin", "neighbour", "grandmother", "friend")
_DETERMINERS = ("the", "this", "that", "my", "her", "his", "our", "their", "your", "a")
_THINK = ("thinks", "says", "knows", "believes", "hopes", "heard")

T = TypeVar("T")


def _pick(rng: np.random.Generator, options: tuple[T, ...]) -> T:
    return options[int(rng.integers(len(options)))]


def _noun_phrase(rng: np.random.Generator, adjective_prob: float = 0.5, determiner: str | None = None) -> str:
    """``[det] [adjective] noun`` with ``a``/``an`` chosen by the next word's first letter."""
    noun = _pick(rng, _NOUNS)[0]
    words = [_pick(rng, _ADJECTIVES)] if rng.random() < adjective_prob else []
    words.append(noun)
    det = determiner or _pick(rng, _DETERMINERS)
    if det == "a" and words[0][0] in "aeio":
        det = "an"
    return " ".join([det, *words])


def _place_phrase(rng: np.random.Generator) -> str:
    return f"{_pick(rng, _PREPOSITIONS)} {_pick(rng, _PLACES)}"


def _sentence(rng: np.random.Generator) -> str:
    """One sentence from a randomly chosen template (may be outside the word-count limits)."""
    name, other = _pick(rng, _NAMES), _pick(rng, _NAMES)
    optional_time = f" {_pick(rng, _TIMES)}" if rng.random() < 0.4 else ""
    template = int(rng.integers(12))
    if template == 0:
        text = f"{_noun_phrase(rng, 0.7, 'the')} {_pick(rng, _TRANSITIVE)[1]} {_noun_phrase(rng)} {_place_phrase(rng)}."
    elif template == 1:
        text = f"{name} {_pick(rng, _TRANSITIVE)[1]} {_noun_phrase(rng, 0.8)} {_pick(rng, _TIMES)}."
    elif template == 2:
        text = f"Did {name} {_pick(rng, _TRANSITIVE)[0]} {_noun_phrase(rng)} {_place_phrase(rng)}?"
    elif template == 3:
        text = f"Why did {_noun_phrase(rng, 0.5, 'the')} {_pick(rng, _INTRANSITIVE)[0]} so {_pick(rng, _ADVERBS)}?"
    elif template == 4:
        text = (
            f"{name} and {other} {_pick(rng, _TRANSITIVE)[1]} {_pick(rng, _NUMBERS)} "
            f"{_pick(rng, _ADJECTIVES)} {_pick(rng, _NOUNS)[1]}{optional_time}."
        )
    elif template == 5:
        text = (
            f"{_noun_phrase(rng, 0.0, 'the')} {_pick(rng, _PREPOSITIONS)} the "
            f"{_pick(rng, _NOUNS)[0]} was {_pick(rng, _ADJECTIVES)}, but "
            f"{_noun_phrase(rng, 0.0, 'the')} was {_pick(rng, _ADJECTIVES)}."
        )
    elif template == 6:
        text = f"Please {_pick(rng, _TRANSITIVE)[0]} {_noun_phrase(rng, 0.8, 'the')}{optional_time}."
    elif template == 7:
        text = (
            f"{_pick(rng, _PRONOUNS)} {_pick(rng, _MODALS)} {_pick(rng, _TRANSITIVE)[0]} "
            f"{_noun_phrase(rng)} {_place_phrase(rng)}{optional_time}."
        )
    elif template == 8:
        text = f"There are {_pick(rng, _NUMBERS)} {_pick(rng, _NOUNS)[1]} {_place_phrase(rng)}."
    elif template == 9:
        text = (
            f"My {_pick(rng, _RELATIVES)} {_pick(rng, _INTRANSITIVE)[1]} {_pick(rng, _ADVERBS)} {_place_phrase(rng)}."
        )
    elif template == 10:
        text = f"How many {_pick(rng, _NOUNS)[1]} did {name} {_pick(rng, _TRANSITIVE)[0]}{optional_time}?"
    else:
        text = (
            f"{name} {_pick(rng, _THINK)} that {_noun_phrase(rng, 0.3, 'the')} is "
            f"{_pick(rng, _ADJECTIVES)}{optional_time}."
        )
    return text[0].upper() + text[1:]


def make_sentences(num_sentences: int, seed: int = 0) -> list[str]:
    """``num_sentences`` distinct English sentences of 4-12 words, the same for the same seed."""
    if num_sentences < 1:
        raise UserError(f"num_sentences must be at least 1, not {num_sentences}.")
    rng = np.random.default_rng([seed, 1])
    sentences: list[str] = []
    seen: set[str] = set()
    attempts = 0
    while len(sentences) < num_sentences:
        attempts += 1
        if attempts > 100 * num_sentences + 1000:
            raise UserError(f"The demo grammar cannot make {num_sentences} distinct sentences; ask for fewer.")
        text = _sentence(rng)
        if MIN_WORDS <= len(text.split()) <= MAX_WORDS and text not in seen:
            seen.add(text)
            sentences.append(text)
    return sentences


# ----------------------------------------------------------------------------------------------
# The corpus


"""Marks a folder as a demo corpus (:data:`vqspeech.fileio.OWNED_FOLDER_MARKS`): other verbs keep out."""

_OWN_ENTRIES = ("demo.json", "manifest.jsonl", "speakers.tsv", "README.md", "wavs", "alignments", "text")


def demo_settings(num_sentences: int = DEFAULT_NUM_SENTENCES, seed: int = 0) -> dict:
    """Everything that decides the corpus content; stored as ``demo.json``, compared on reruns."""
    return {
        "format": FORMAT_VERSION,
        "num_sentences": int(num_sentences),
        "seed": int(seed),
        "sample_rate": espeak.SAMPLE_RATE,
        "espeak_ng_version": espeak.library_version(),
        "rate_jitter": RATE_JITTER,
        "pitch_jitter": PITCH_JITTER,
        "speakers": [asdict(s) for s in SPEAKERS],
    }


def make_demo_corpus(
    out_dir: str | os.PathLike,
    *,
    num_sentences: int = DEFAULT_NUM_SENTENCES,
    seed: int = 0,
    overwrite: bool = False,
    progress: bool = True,
) -> Path:
    """Synthesise the demo corpus into ``out_dir`` and return the folder.

    A folder already holding a complete corpus made with the same settings is returned as it is;
    an incomplete one made with the same settings (an interrupted run) is rebuilt. A folder holding
    a corpus made with other settings is rebuilt only with ``overwrite=True`` (which
    deletes the corpus's own files and folders, nothing else); otherwise UserError is raised, and
    always for a folder whose files carry the corpus's names but no ``demo.json`` (not ours).
    """
    out_dir = Path(out_dir)
    if num_sentences < 1:
        raise UserError(f"num_sentences must be at least 1, not {num_sentences}.")
    if out_dir.exists() and not out_dir.is_dir():
        raise UserError(f"{out_dir} is a file, not a folder; choose a folder for the demo corpus.")
    settings = demo_settings(num_sentences, seed)
    if is_complete_demo_corpus(out_dir, settings):
        if not (out_dir / DEMO_MARK).is_file():  # a corpus an older vqspeech made: mark it as ours now
            write_text_atomic(out_dir / DEMO_MARK, "")
        return out_dir
    for parent in Path(os.path.abspath(out_dir)).parents:
        if _read_settings(parent) is not None:  # its --overwrite would find our files as foreign
            raise UserError(f"{out_dir} lies inside the demo corpus {parent}; choose a folder outside it.")
    present = [name for name in _OWN_ENTRIES if (out_dir / name).exists()]
    stored = _read_settings(out_dir)
    if not (out_dir / "demo.json").is_file() and out_dir.is_dir():
        others = sorted(p.name for p in out_dir.iterdir() if not p.name.startswith(".") and p.name not in _OWN_ENTRIES)
        if others:  # a new corpus goes into a folder of its own, not beside someone's files
            raise UserError(
                f"{out_dir} is not empty (it holds {others[0]}); make the demo corpus in a new or empty folder."
            )
    if present and stored is None and (out_dir / "demo.json").is_file() and not overwrite:
        raise UserError(
            f"{out_dir} holds files named like the demo corpus's parts ({', '.join(present)}) beside an "
            "unreadable demo.json; rebuild it with `overwrite=True` or choose another folder."
        )
    if present and not (out_dir / "demo.json").is_file():  # demo.json is written first: these are not ours
        raise UserError(
            f"{out_dir} holds files named like the demo corpus's parts ({', '.join(present)}) that "
            "`vqspeech demo-data` did not write; choose a new or empty folder."
        )
    if present and not overwrite and stored != settings:
        raise UserError(
            f"{out_dir} holds a demo corpus made with other settings "
            f"({_settings_difference(stored or {}, settings)}); rebuild it with "
            "`overwrite=True` or choose another folder."
        )
    with FolderLock(out_dir, "demo-data"):
        own, foreign = _corpus_files(out_dir)
        if foreign:
            raise UserError(
                f"{foreign[0]} ({len(foreign)} file(s) in all) is not a file `vqspeech demo-data` writes; "
                "move it out of the corpus folder, or choose another folder."
            )
        _remove(own, out_dir)

        out_dir.mkdir(parents=True, exist_ok=True)
        write_text_atomic(out_dir / DEMO_MARK, "")  # no other verb writes into the corpus
        write_text_atomic(out_dir / "demo.json", json.dumps(settings, indent=2) + "\n")
        sentences = make_sentences(num_sentences, seed)
        prosody_rng = np.random.default_rng([seed, 2])
        width = max(4, len(str(num_sentences)))
        utts: list[Utterance] = []
        for index, text in enumerate(tqdm(sentences, desc="demo corpus", unit="utt", disable=not progress)):
            speaker = SPEAKERS[index % len(SPEAKERS)]
            rate = int(round(speaker.rate * prosody_rng.uniform(1 - RATE_JITTER, 1 + RATE_JITTER)))
            pitch = int(np.clip(speaker.pitch + prosody_rng.integers(-PITCH_JITTER, PITCH_JITTER + 1), 0, 100))
            result = espeak.synthesize(
                text,
                voice=speaker.voice,
                rate=rate,
                pitch=pitch,
                pitch_range=speaker.pitch_range,
                seed=int(prosody_rng.integers(2**31)),
            )
            utt_id = f"{speaker.name}_{index + 1:0{width}d}"
            wav_path = out_dir / "wavs" / speaker.name / f"{utt_id}.wav"
            grid_path = out_dir / "alignments" / f"{utt_id}.TextGrid"
            save_wav(wav_path, result.audio, result.sample_rate)
            write_textgrid(grid_path, result)
            write_text_atomic(out_dir / "text" / f"{utt_id}.txt", text + "\n")
            utts.append(
                Utterance(
                    id=utt_id,
                    audio=str(wav_path),
                    speaker=speaker.name,
                    duration=round(result.duration, 6),
                    sample_rate=result.sample_rate,
                    split="train",
                    text=text,
                    alignment=str(grid_path),
                )
            )
        rows = ["speaker\tvoice\tpitch\trate\tpitch_range"]
        rows += [f"{s.name}\t{s.voice}\t{s.pitch}\t{s.rate}\t{s.pitch_range}" for s in SPEAKERS]
        write_text_atomic(out_dir / "speakers.tsv", "\n".join(rows) + "\n")
        write_text_atomic(out_dir / "README.md", _readme(settings, utts))
        write_manifest(out_dir / "manifest.jsonl", utts)
    return out_dir


def is_complete_demo_corpus(out_dir: str | os.PathLike, settings: dict | None = None) -> bool:
    """True when ``out_dir`` holds a finished demo corpus (made with ``settings``, when given)."""
    out_dir = Path(out_dir)
    stored = _read_settings(out_dir)
    if stored is None or (settings is not None and stored != settings):
        return False
    if not (out_dir / "manifest.jsonl").is_file():
        return False
    try:
        utts = read_manifest(out_dir / "manifest.jsonl")
    except UserError:
        return False
    if len(utts) != stored.get("num_sentences"):
        return False
    try:
        for u in utts:  # a wav replaced since (another rate or length) would not fit its alignment
            check_header(u)
    except UserError:
        return False
    return all(u.alignment and Path(u.alignment).is_file() for u in utts)


def write_textgrid(path: str | os.PathLike, result: espeak.SynthResult) -> None:
    """Save ``words`` and ``phones`` interval tiers covering the whole audio (gaps left blank)."""
    alignments.write_textgrid(path, {"words": result.words, "phones": result.phones}, result.duration)


def _read_settings(out_dir: Path) -> dict | None:
    """The settings ``demo.json`` records, or None when it is missing or not such a record."""
    try:
        stored = json.loads((out_dir / "demo.json").read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError):
        return None
    return stored if isinstance(stored, dict) and set(stored) == set(demo_settings(1)) else None


def _corpus_files(out_dir: Path) -> tuple[list[Path], list[Path]]:
    """(the files of ``out_dir`` named as the demo corpus names its own, the other files inside its
    folders ``wavs/``, ``alignments/`` and ``text/``). Temporary files of a killed run count as its own."""
    speakers = "|".join(re.escape(s.name) for s in SPEAKERS)
    utterance = rf"\.?(?P<speaker>{speakers})_\d+(?:{re.escape(TEMP_MARK)}\d+)?"
    patterns = {
        "wavs": re.compile(rf"(?P<folder>{speakers})/{utterance}\.wav"),
        "alignments": re.compile(rf"{utterance}\.TextGrid"),
        "text": re.compile(rf"{utterance}\.txt"),
    }
    own = [out_dir / name for name in _OWN_ENTRIES if name not in patterns and (out_dir / name).is_file()]
    foreign: list[Path] = []
    for folder, pattern in patterns.items():
        root = out_dir / folder
        if root.is_symlink() or (root.exists() and not root.is_dir()):
            foreign.append(root)
            continue
        for dirpath, dirnames, filenames in os.walk(root):
            links = [d for d in dirnames if Path(dirpath, d).is_symlink()]
            for name in [*filenames, *links]:
                path = Path(dirpath, name)
                match = pattern.fullmatch(path.relative_to(root).as_posix())
                mine = match is not None and match.groupdict().get("folder", match["speaker"]) == match["speaker"]
                (own if mine else foreign).append(path)
    return own, foreign


def _remove(files: list[Path], out_dir: Path) -> None:
    """Delete ``files``, then the corpus's folders that are left empty."""
    for path in files:
        path.unlink()
    for folder in ("wavs", "alignments", "text"):
        root = out_dir / folder
        if not root.is_dir():
            continue
        for dirpath, _, _ in sorted(os.walk(root), key=lambda entry: -len(entry[0])):  # deepest first
            with contextlib.suppress(OSError):  # not empty: someone else's folder
                os.rmdir(dirpath)


def _settings_difference(stored: dict, wanted: dict) -> str:
    keys = sorted(k for k in set(stored) | set(wanted) if stored.get(k) != wanted.get(k))
    parts = [f"{k} {stored.get(k)!r} instead of {wanted.get(k)!r}" for k in keys if k != "speakers"]
    if "speakers" in keys:
        parts.append("a different speaker table")
    return ", ".join(parts)


def _readme(settings: dict, utts: list[Utterance]) -> str:
    minutes = sum(u.duration for u in utts) / 60.0
    speaker_rows = "\n".join(
        f"| {s['name']} | `{s['voice']}` | {s['pitch']} | {s['rate']} | {s['pitch_range']} |"
        for s in settings["speakers"]
    )
    lines = [
        "# vqspeech demo corpus",
        "",
        "Synthetic English speech, made offline by `vqspeech.data.demo.make_demo_corpus` with the "
        f"espeak-ng speech synthesiser (libespeak-ng {settings['espeak_ng_version']}, loaded from "
        "the `espeakng-loader` wheel). It lets every vqspeech stage run without downloading a "
        "corpus; it is not natural speech.",
        "",
        f"- {len(utts)} utterances, {len(settings['speakers'])} speakers, {minutes:.1f} minutes of audio.",
        f"- Sentences: {settings['num_sentences']} distinct sentences of {MIN_WORDS}-{MAX_WORDS} "
        f"words from a small built-in grammar, seed {settings['seed']}; the speakers take turns.",
        "- Prosody: each speaker's base rate (words per minute) is scaled per utterance by a "
        f"random factor within +/-{settings['rate_jitter']:.0%}, and its base pitch (espeak's "
        f"0-100 scale) shifted by up to +/-{settings['pitch_jitter']}.",
        f"- Audio: 16-bit PCM WAV, mono, {settings['sample_rate']} Hz, at espeak's own level. "
        "Breath noise is seeded per utterance, but espeak carries its pitch-flutter phase from "
        "one utterance to the next, so a rebuild in a process that spoke other text first can "
        "differ by a few samples per file; a fresh process reproduces the corpus exactly.",
        "- Alignments: Praat TextGrids with interval tiers `words` and `phones`, from espeak's "
        "word and phoneme events (exact for the synthesiser). Phone labels are raw espeak "
        "mnemonics with stress marks (`'` primary, `,` secondary); `_` and `_:` are pauses; "
        "unlabelled intervals are the short gaps before the first phone and the pauses between "
        "words. "
        "espeak speaks some word pairs as one word (`there are`, `that the`); such a pair shares "
        "one word interval.",
        "",
        "| speaker | espeak voice | pitch | rate | pitch range |",
        "|---|---|---|---|---|",
        speaker_rows,
        "",
        "Files: `wavs/<speaker>/<id>.wav`, `alignments/<id>.TextGrid`, `text/<id>.txt`, "
        "`speakers.tsv`, `manifest.jsonl` (the vqspeech manifest; `--layout demo`) and "
        "`demo.json` (the settings: a rerun with the same settings leaves the folder as it is).",
    ]
    return "\n".join(lines) + "\n"
