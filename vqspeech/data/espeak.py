"""A thin ctypes binding to libespeak-ng (from the ``espeakng-loader`` wheel) with phone timings.

``espeakng_loader`` only ships the shared library and its data folder; everything else here is
ctypes against the C API in ``speak_lib.h`` (espeak-ng 1.52). The engine runs in synchronous mode
with phoneme events switched on: one ``espeak_Synth`` call invokes our callback with chunks of
16-bit audio and lists of events, all within the call. Event times are taken from the event's
``sample`` field, the index of the output sample at which the event happens (``audio_position``
is the same instant truncated to milliseconds).

:func:`synthesize` returns the waveform (float32, 22,050 Hz) with two tiers of intervals:

- ``phones``: every phoneme event with its raw espeak mnemonic, stress marks kept (``'oU``,
  ``,oU``, ``@2``), pauses included (``_``, ``_:``); each phone lasts until the next phone starts
  (the last one until the end of the audio), so from the first phone on they tile the utterance.
  Zero-length phones (espeak emits a ``_`` at the very end) are dropped.
- ``words``: the words of the text in order, each from the start of its first phoneme to the end
  of its last non-pause phoneme; pauses between words belong to no word.

The library is not thread-safe and has one global state, so it is initialised once per process and
every call holds a module-level lock.

Reproducibility: voices with breathiness (``f2``, ``f3``...) draw noise from the C library's
``rand()``, so :func:`synthesize` takes a ``seed`` that reseeds it (and espeak's own generator)
before speaking. The phase of espeak's pitch flutter also outlives a call, so the same text can
come out a few samples longer or shorter depending on what the process spoke before; the same
sequence of seeded calls in a fresh process gives identical audio.
"""

from __future__ import annotations

import ctypes
import functools
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path

import espeakng_loader
import numpy as np

from ..errors import UserError

SAMPLE_RATE = 22050
"""The output rate of libespeak-ng (checked at initialisation)."""

# espeak_AUDIO_OUTPUT, initialisation options and synthesis flags (speak_lib.h).
_AUDIO_OUTPUT_SYNCHRONOUS = 2
_INITIALIZE_PHONEME_EVENTS = 0x0001
_CHARS_UTF8 = 1
_ENDPAUSE = 0x1000
_POS_CHARACTER = 1

# espeak_PARAMETER
_PARAM_RATE = 1
_PARAM_VOLUME = 2
_PARAM_PITCH = 3
_PARAM_RANGE = 4

# espeak_EVENT_TYPE
EVENT_LIST_TERMINATED = 0
EVENT_WORD = 1
EVENT_SENTENCE = 2
EVENT_MARK = 3
EVENT_PLAY = 4
EVENT_END = 5
EVENT_MSG_TERMINATED = 6
EVENT_PHONEME = 7
EVENT_SAMPLERATE = 8

# Accepted parameter ranges (espeak clamps silently; we refuse instead).
RATE_RANGE = (80, 450)
PITCH_RANGE = (0, 100)


class _EventId(ctypes.Union):
    _fields_ = [("number", ctypes.c_int), ("name", ctypes.c_char_p), ("string", ctypes.c_char * 8)]


class _Event(ctypes.Structure):
    _fields_ = [
        ("type", ctypes.c_int),
        ("unique_identifier", ctypes.c_uint),
        ("text_position", ctypes.c_int),
        ("length", ctypes.c_int),
        ("audio_position", ctypes.c_int),
        ("sample", ctypes.c_int),
        ("user_data", ctypes.c_void_p),
        ("id", _EventId),
    ]


_SynthCallback = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.POINTER(_Event))


@dataclass
class SynthResult:
    """One synthesised utterance.

    ``audio``: float32 [T] in [-1, 1]; ``words`` and ``phones``: lists of (start_s, end_s, label),
    ordered and non-overlapping, times in seconds within the audio.
    """

    audio: np.ndarray
    sample_rate: int
    words: list[tuple[float, float, str]] = field(default_factory=list)
    phones: list[tuple[float, float, str]] = field(default_factory=list)

    @property
    def duration(self) -> float:
        """Length of the audio in seconds."""
        return len(self.audio) / self.sample_rate


def is_pause(label: str) -> bool:
    """True for espeak's pause/silence phonemes (``_``, ``_:``, ``_!``, ...)."""
    return label.startswith("_")


def library_version() -> str:
    """The version string of the loaded libespeak-ng, e.g. ``1.52.0``."""
    with _LOCK:
        lib = _engine()
        path = ctypes.c_char_p()
        return lib.espeak_Info(ctypes.byref(path)).decode()


def data_path() -> Path:
    """The espeak-ng-data folder shipped with ``espeakng-loader``."""
    return Path(espeakng_loader.get_data_path())


@functools.lru_cache(maxsize=1)
def voice_variants() -> tuple[str, ...]:
    """Names of the voice variants usable after ``+`` in a voice name (``m3``, ``f2``...)."""
    folder = data_path() / "voices" / "!v"
    return tuple(sorted(p.name for p in folder.iterdir() if p.is_file()))


def check_voice(voice: str) -> None:
    """Raise UserError unless ``voice`` (``language[+variant]``) names an installed voice.

    espeak itself ignores an unknown variant silently, so the variant is checked against the data
    folder; the language part is checked by selecting it.
    """
    _check_variant(voice)
    with _LOCK:
        _select_voice(_engine(), voice.partition("+")[0])


def synthesize(
    text: str,
    voice: str = "en-us",
    rate: int = 175,
    pitch: int = 50,
    pitch_range: int = 50,
    volume: int = 100,
    seed: int | None = None,
) -> SynthResult:
    """Speak ``text`` with espeak-ng; return audio at 22,050 Hz with word and phone intervals.

    ``voice`` is ``language[+variant]`` (``en-us``, ``en`` for British, ``en-us+f3``...); ``rate``
    in words per minute (80-450); ``pitch`` and ``pitch_range`` 0-100 (espeak's defaults are 50);
    ``volume`` in percent (100 is espeak's default level). ``seed`` reseeds the noise generators
    first (the C library's ``rand()``, shared with the rest of the process, and espeak's own);
    None leaves them running.
    """
    if not text or not text.strip():
        raise UserError("Cannot synthesise empty text; give at least one word.")
    for name, value, (low, high) in (
        ("rate", rate, RATE_RANGE),
        ("pitch", pitch, PITCH_RANGE),
        ("pitch_range", pitch_range, PITCH_RANGE),
        ("volume", volume, (0, 200)),
    ):
        if not low <= int(value) <= high:
            raise UserError(f"espeak {name} {value} is out of range; use {low} to {high}.")
    _check_variant(voice)
    encoded = text.encode("utf-8")
    with _LOCK:
        lib = _engine()
        _select_voice(lib, voice)
        for param, value in (
            (_PARAM_RATE, rate),
            (_PARAM_PITCH, pitch),
            (_PARAM_RANGE, pitch_range),
            (_PARAM_VOLUME, volume),
        ):
            lib.espeak_SetParameter(param, int(value), 0)
        if seed is not None:
            _LIBC.srand(int(seed) & 0xFFFFFFFF)
            lib.espeak_ng_SetRandSeed(int(seed))
        _STATE.chunks, _STATE.events = [], []
        try:
            status = lib.espeak_Synth(
                encoded, len(encoded) + 1, 0, _POS_CHARACTER, 0, _CHARS_UTF8 | _ENDPAUSE, None, None
            )
            if status != 0:
                raise RuntimeError(f"espeak_Synth failed with status {status} for text {text!r}")
            chunks, events = _STATE.chunks, _STATE.events
        finally:
            _STATE.chunks, _STATE.events = [], []
    pcm = np.concatenate(chunks) if chunks else np.zeros(0, dtype=np.int16)
    audio = pcm.astype(np.float32) / 32768.0
    phones, words = _intervals(text, events, len(audio))
    return SynthResult(audio=audio, sample_rate=SAMPLE_RATE, words=words, phones=phones)


def _intervals(
    text: str, events: list[tuple[int, int, int, int, str]], num_samples: int
) -> tuple[list[tuple[float, float, str]], list[tuple[float, float, str]]]:
    """Turn raw (type, sample, text_position, length, label) events into phone and word tiers."""
    sr = float(SAMPLE_RATE)
    # Phones: each lasts until the next one starts; the last until the end of the audio.
    phone_events = [
        (min(max(sample, 0), num_samples), label) for kind, sample, _, _, label in events if kind == EVENT_PHONEME
    ]
    starts = [start for start, _ in phone_events]
    ends = starts[1:] + [num_samples]
    phones = [
        (start / sr, end / sr, label) for (start, label), end in zip(phone_events, ends, strict=True) if end > start
    ]

    # Words: the phonemes that follow a word event (until the next word event) belong to it.
    # espeak's word length stops at an apostrophe ("Don't" -> 3), it splits numbers into several
    # word events, and it speaks some pairs as one word with one event ("There are", "do not").
    # So a word interval is labelled with the whitespace-delimited tokens from the one at its
    # event's position up to the next event's token: split events are merged, and merged words
    # share one interval.
    groups: list[dict] = []
    phone = 0
    for kind, sample, position, _, label in events:
        if kind == EVENT_WORD:
            token_start = _token_start(text, position - 1)
            if groups and groups[-1]["token"] == token_start:
                continue
            groups.append({"token": token_start, "sample": sample, "spans": []})
        elif kind == EVENT_PHONEME:
            start, end = starts[phone], ends[phone]
            phone += 1
            if groups and not is_pause(label) and end > start:
                groups[-1]["spans"].append((start, end))
    words: list[tuple[float, float, str]] = []
    last_end = 0
    for i, group in enumerate(groups):
        next_token = groups[i + 1]["token"] if i + 1 < len(groups) else len(text)
        tokens = (t.strip(_PUNCTUATION) for t in text[group["token"] : next_token].split())
        word = " ".join(t for t in tokens if t)
        if not word:
            continue
        if group["spans"]:
            start, end = group["spans"][0][0], group["spans"][-1][1]
        else:  # a word without phonemes of its own: the gap up to the next word event
            start = min(max(group["sample"], 0), num_samples)
            end = groups[i + 1]["sample"] if i + 1 < len(groups) else num_samples
        start = max(start, last_end)
        if end > start:
            words.append((start / sr, end / sr, word))
            last_end = end
    return phones, words


def _token_start(text: str, index: int) -> int:
    """Where the whitespace-delimited token containing ``text[index]`` starts."""
    start = min(max(index, 0), len(text))
    while start > 0 and not text[start - 1].isspace():
        start -= 1
    return start


_PUNCTUATION = "\"'.,;:!?()[]{}<>-‘’“”…"


class _State:
    """What the callback collects during one espeak_Synth call (guarded by _LOCK)."""

    def __init__(self) -> None:
        self.chunks: list[np.ndarray] = []
        self.events: list[tuple[int, int, int, int, str]] = []


_STATE = _State()
_LOCK = threading.Lock()
_LIB: ctypes.CDLL | None = None
_LIBC = ctypes.CDLL(None)  # the C library libespeak-ng links against, for srand()
_LIBC.srand.argtypes = [ctypes.c_uint]
_LIBC.srand.restype = None


def _on_synth(wav, num_samples, events) -> int:
    """espeak's callback: copy the audio chunk and the event list; return 0 to continue."""
    if num_samples > 0 and wav:
        _STATE.chunks.append(np.ctypeslib.as_array(wav, shape=(num_samples,)).copy())
    i = 0
    while events[i].type != EVENT_LIST_TERMINATED:
        event = events[i]
        if event.type in (EVENT_PHONEME, EVENT_WORD):
            is_phoneme = event.type == EVENT_PHONEME
            label = event.id.string.decode("utf-8", "replace") if is_phoneme else ""
            _STATE.events.append((event.type, event.sample, event.text_position, event.length, label))
        i += 1
    return 0


_CALLBACK = _SynthCallback(_on_synth)  # kept alive for the lifetime of the process


def _engine() -> ctypes.CDLL:
    """Load and initialise libespeak-ng once per process (call with _LOCK held)."""
    global _LIB
    if _LIB is not None:
        return _LIB
    lib = ctypes.CDLL(espeakng_loader.get_library_path())
    lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
    lib.espeak_Initialize.restype = ctypes.c_int
    lib.espeak_SetSynthCallback.argtypes = [_SynthCallback]
    lib.espeak_SetSynthCallback.restype = None
    lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
    lib.espeak_SetVoiceByName.restype = ctypes.c_int
    lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
    lib.espeak_SetParameter.restype = ctypes.c_int
    lib.espeak_Synth.argtypes = [
        ctypes.c_char_p,
        ctypes.c_size_t,
        ctypes.c_uint,
        ctypes.c_int,
        ctypes.c_uint,
        ctypes.c_uint,
        ctypes.c_void_p,
        ctypes.c_void_p,
    ]
    lib.espeak_Synth.restype = ctypes.c_int
    lib.espeak_Info.argtypes = [ctypes.POINTER(ctypes.c_char_p)]
    lib.espeak_Info.restype = ctypes.c_char_p
    lib.espeak_ng_SetRandSeed.argtypes = [ctypes.c_long]
    lib.espeak_ng_SetRandSeed.restype = None
    rate = lib.espeak_Initialize(
        _AUDIO_OUTPUT_SYNCHRONOUS, 0, os.fsencode(espeakng_loader.get_data_path()), _INITIALIZE_PHONEME_EVENTS
    )
    if rate != SAMPLE_RATE:
        raise RuntimeError(f"libespeak-ng initialisation returned {rate}, not {SAMPLE_RATE} Hz")
    lib.espeak_SetSynthCallback(_CALLBACK)
    _LIB = lib
    return lib


def _check_variant(voice: str) -> None:
    """UserError when the ``+variant`` part of ``voice`` is not an installed variant."""
    variant = voice.partition("+")[2]
    if variant and variant not in voice_variants():
        raise UserError(
            f"espeak-ng has no voice variant {variant!r} (in {voice!r}); "
            f"choose one of {', '.join(voice_variants()[:12])}, ..."
        )


def _select_voice(lib: ctypes.CDLL, voice: str) -> None:
    """Select ``voice`` by name (call with _LOCK held); UserError when espeak does not know it."""
    if lib.espeak_SetVoiceByName(voice.encode("utf-8")) != 0:
        raise UserError(
            f"espeak-ng has no voice {voice!r}; use a language code such as "
            "'en-us' or 'en' (British), optionally with a variant like '+f3'."
        )


def _reset_lock_after_fork() -> None:
    """A child forked while another thread held the lock must not inherit it locked."""
    global _LOCK
    _LOCK = threading.Lock()


os.register_at_fork(after_in_child=_reset_lock_after_fork)
