"""Recordings of one voice given by a user (enrolment audio): files or folders in, checked audio out.

Every check names the file and the fix: a file that cannot be read, holds NaN samples, is silent,
or was recorded at a lower sample rate than the model's (upsampling cannot add the missing band);
and the recordings together must last at least ``min_seconds``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import soundfile as sf

from ..audio import channels_cancel, level, load_audio, normalize_level, sound_file
from ..errors import UserError, first_line
from ..fileio import check_input_file
from .corpora import AUDIO_EXTENSIONS, walk_audio

SILENCE_RMS = 1e-4
"""A recording whose RMS level is below this (-80 dBFS) is treated as silent."""


def reference_files(paths: Sequence[str | Path]) -> list[Path]:
    """Sound files and folders (walked as a corpus folder is: sorted, hidden names skipped) -> the
    sound files, in the order given."""
    if not paths:
        raise UserError("No recordings given; name sound files or folders of them.")
    files: list[Path] = []
    if any(str(given) == "" for given in paths):  # Path("") is the working directory
        raise UserError("A recording path is empty; name sound files or folders of them.")
    for given in map(Path, paths):
        if given.is_dir():
            found = list(walk_audio(given))
            if not found:
                raise UserError(f"Folder {given} holds no sound files ({', '.join(AUDIO_EXTENSIONS)}).")
            files.extend(found)
        else:
            files.append(given)
    for file in files:  # before any is opened: reading a pipe would block
        check_input_file(file, "Recording")
    seen: dict[tuple[int, int], Path] = {}
    for file in files:
        stat = os.stat(file)  # one recording reached through a symbolic or hard link counts once
        if (stat.st_dev, stat.st_ino) in seen:
            first = seen[stat.st_dev, stat.st_ino]
            also = "" if first == file else f" (also as {first})"
            raise UserError(f"Recording {file} is given twice{also}; name each file once.")
        seen[stat.st_dev, stat.st_ino] = file
    return files


def load_reference(paths: Sequence[str | Path], sample_rate: int, min_seconds: float = 2.0) -> list[np.ndarray]:
    """The recordings in ``paths`` (files or folders) as float32 arrays at ``sample_rate``; UserError
    naming the file for an unreadable, silent or lower-rate one, or when all of them together last
    less than ``min_seconds``."""
    audio, files = [], reference_files(paths)
    for path in files:
        try:
            rate = sf.info(sound_file(path)).samplerate
        except Exception as exc:  # soundfile raises several types for corrupt/non-audio files
            raise UserError(
                f"Cannot read audio file {path} ({first_line(exc)}); convert it to WAV or FLAC and try again."
            ) from None
        if rate < sample_rate:
            raise UserError(
                f"{path} is recorded at {rate} Hz, below the model's {sample_rate} Hz; give a recording at "
                f"{sample_rate} Hz or more."
            )
        samples, _ = load_audio(path, sample_rate)
        if level(samples) < SILENCE_RMS and channels_cancel(path, SILENCE_RMS):
            raise UserError(
                f"{path} has channels that cancel out when mixed to mono (opposite phase); give one channel of it."
            )
        audio.append(samples)
    return check_reference(audio, sample_rate, min_seconds, [str(p) for p in files])


def check_reference(
    audio: list[np.ndarray], sample_rate: int, min_seconds: float, names: Sequence[str] | None = None
) -> list[np.ndarray]:
    """``audio`` (recordings [T_i] at ``sample_rate``, named ``names``) brought to the level of a
    prepared corpus (:func:`vqspeech.audio.normalize_level`), unless one is silent or all of them
    together last less than ``min_seconds``: UserError naming the problem."""
    for i, samples in enumerate(audio):
        if level(samples) < SILENCE_RMS:  # about the mean: a constant level is no voice
            name = names[i] if names is not None else "The reference audio"
            raise UserError(f"{name} is silent (or empty); give a recording of the voice speaking.")
    seconds = sum(len(a) for a in audio) / sample_rate
    if seconds < min_seconds:
        raise UserError(
            f"The recordings last {seconds:.2f} s in all, too short to learn a voice from; give at least "
            f"{min_seconds:g} s of speech."
        )
    return [normalize_level(a) for a in audio]
