"""Audio I/O and signal helpers: load/save (soundfile), resample (soxr), level, mu-law.

Waveforms are float32 numpy arrays in [-1, 1], shape [T] (mono) unless stated.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Callable
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr
import torch

from .errors import UserError, first_line
from .fileio import atomic_path, check_input_file

MU_LAW_CLASSES = 256
MIN_SAMPLE_RATE = 1000
"""Hz. Below it a file cannot hold speech, and resampling it to a model's rate would multiply its
length (a header that says 1 Hz turned 400 KB into 6 GB)."""
MAX_SAMPLE_RATE = 192_000
"""Hz, the highest rate of common audio hardware."""

MAX_AUDIO_SAMPLES = 2**29
"""Samples (all channels) of the longest file read at once: 2 GiB as float32, 9.3 hours of 16 kHz
mono. A longer file (or a header that claims one) is refused before anything is allocated."""


def sound_file(path: str | os.PathLike) -> str | bytes:
    """``path`` as soundfile should get it: the file system's bytes, so that a file name that is not
    UTF-8 opens too (soundfile encodes a str strictly); Windows paths stay str (wide-char open)."""
    return str(path) if os.name == "nt" else os.fsencode(path)


def load_audio(path: str | os.PathLike, sample_rate: int | None = None) -> tuple[np.ndarray, int]:
    """Read a sound file as mono float32, resampled to ``sample_rate`` when given.

    Returns (audio [T], sample_rate). Raises UserError naming the file when it cannot be read or
    holds NaN or infinite samples (a float file can; no model input may).
    """
    path = Path(path)
    if sample_rate is not None:
        check_sample_rate(sample_rate)
    check_input_file(path, "Audio file")
    try:
        info = sf.info(sound_file(path))
    except Exception:  # unreadable header: sf.read below says why
        info = None
    if info is not None and info.frames * info.channels > MAX_AUDIO_SAMPLES:
        hours = info.frames / max(info.samplerate, 1) / 3600
        raise UserError(
            f"Audio file {path} holds {info.frames * info.channels:,} samples ({hours:.1f} hours), more than the "
            f"{MAX_AUDIO_SAMPLES:,} vqspeech reads into memory at once; split it into shorter files."
        )
    truncated = wav_truncation(path)
    if truncated is not None:
        raise UserError(
            f"Audio file {path} is cut short: its header promises {truncated[0]:,} samples, it holds "
            f"{truncated[1]:,} (an interrupted copy or download?); copy it again."
        )
    try:
        audio, sr = sf.read(sound_file(path), dtype="float32", always_2d=True)
    except MemoryError:
        raise UserError(
            f"Audio file {path} is too long to read into the memory this process has; split it into shorter files."
        ) from None
    except Exception as exc:  # soundfile raises several types for corrupt/non-audio files
        raise UserError(
            f"Cannot read audio file {path} ({first_line(exc)}); convert it to WAV or FLAC and try again."
        ) from None
    if not MIN_SAMPLE_RATE <= sr <= MAX_SAMPLE_RATE:
        raise UserError(
            f"Audio file {path} says its sample rate is {sr} Hz, outside {MIN_SAMPLE_RATE}..{MAX_SAMPLE_RATE} Hz; "
            "it cannot be speech audio as it stands."
        )
    audio = audio.mean(axis=1)
    if not np.all(np.isfinite(audio)):
        raise UserError(f"Audio file {path} has NaN or infinite samples; it cannot be used as audio.")
    if sample_rate is not None and sr != sample_rate:
        audio = resample(audio, sr, sample_rate)
        sr = sample_rate
    return np.ascontiguousarray(audio, dtype=np.float32), int(sr)


def wav_truncation(path: str | os.PathLike) -> tuple[int, int] | None:
    """(frames the header promises, frames the file holds) of a RIFF WAV file cut short, else None
    (complete, not a RIFF WAV, or a streamed WAV whose header leaves its length open). soundfile
    reads what is there and says nothing, so an interrupted copy would pass as a short recording."""
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            head = f.read(12)
            if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
                return None
            block_align = 0
            while True:
                chunk = f.read(8)
                if len(chunk) < 8:
                    return None
                kind, length = chunk[:4], struct.unpack("<I", chunk[4:])[0]
                if kind == b"fmt ":
                    fmt = f.read(min(length, 16))
                    block_align = struct.unpack("<H", fmt[12:14])[0] if len(fmt) >= 14 else 0
                    f.seek(length - len(fmt) + (length & 1), os.SEEK_CUR)
                elif kind == b"data":
                    held = size - f.tell()
                    if length in (0, 0xFFFFFFFF) or length <= held or block_align == 0:
                        return None
                    return length // block_align, held // block_align
                else:
                    f.seek(length + (length & 1), os.SEEK_CUR)
    except OSError:
        return None


def check_sample_rate(sample_rate: float) -> None:
    """UserError unless ``sample_rate`` is a whole number of hertz from :data:`MIN_SAMPLE_RATE` to
    :data:`MAX_SAMPLE_RATE` (an int, or a float without a fraction)."""
    if isinstance(sample_rate, bool) or not isinstance(sample_rate, (int, np.integer, float, np.floating)):
        raise UserError(f"`sample_rate` must be a number of hertz, not {sample_rate!r}.")
    if not (
        np.isfinite(sample_rate)
        and float(sample_rate).is_integer()
        and MIN_SAMPLE_RATE <= sample_rate <= MAX_SAMPLE_RATE
    ):
        raise UserError(
            f"`sample_rate` must be a whole number of hertz from {MIN_SAMPLE_RATE} to {MAX_SAMPLE_RATE}, "
            f"not {sample_rate}."
        )


def check_audio(audio: np.ndarray, sample_rate: int) -> np.ndarray:
    """``audio`` as float32 samples [T] in about [-1, 1], or UserError: a mono array of floats
    (integer PCM must be scaled first), finite, at a rate :func:`check_sample_rate` accepts."""
    check_sample_rate(sample_rate)
    array = np.asarray(audio)
    if array.ndim == 2 and 1 in array.shape:
        array = array.reshape(-1)
    if array.ndim != 1:
        raise UserError(
            f"Audio of shape {array.shape} is not one channel of samples [T]; mix it down first "
            "(e.g. audio.mean(axis=1))."
        )
    if not np.issubdtype(array.dtype, np.floating):
        raise UserError(
            f"Audio samples of type {array.dtype} are not floats in [-1, 1]; scale integer PCM first "
            "(int16: divide by 32768)."
        )
    with np.errstate(over="ignore"):
        samples = array.astype(np.float32, copy=False)
    if not np.all(np.isfinite(samples)):  # after the cast: float64 beyond float32's range becomes infinite
        if np.all(np.isfinite(array)):
            raise UserError(
                "The audio has samples too large for 32-bit floats (above 3.4e38 in size); scale it to about "
                "[-1, 1] first."
            )
        raise UserError("The audio has NaN or infinite samples; it cannot be encoded.")
    return samples


def level(audio: np.ndarray) -> float:
    """RMS about the mean in float64: a constant (DC) level is no sound."""
    return float(np.std(audio, dtype=np.float64)) if audio.size else 0.0


def channels_cancel(path: str | os.PathLike, threshold: float) -> bool:
    """Whether the file at ``path`` has channels of sound (level >= ``threshold``) that cancel out
    when mixed to mono (opposite phase): what makes a loud stereo file read as silence."""
    try:
        channels = sf.read(sound_file(path), dtype="float32", always_2d=True)[0]
    except Exception:  # it was read before; only the wording of a refusal depends on this
        return False
    return channels.shape[1] > 1 and float(np.std(channels, axis=0, dtype=np.float64).max()) >= threshold


def resample(audio: np.ndarray, orig_sr: int, target_sr: int) -> np.ndarray:
    """Band-limited resampling with soxr (high quality). audio [T] -> [T * target/orig]."""
    if orig_sr == target_sr:
        return audio
    return soxr.resample(audio.astype(np.float32), orig_sr, target_sr, quality="HQ").astype(np.float32)


def save_wav(
    path: str | os.PathLike,
    audio: np.ndarray | torch.Tensor,
    sample_rate: int,
    before_rename: Callable[[Path], None] | None = None,
) -> None:
    """Write mono float samples [T] as 16-bit PCM WAV atomically (temporary file, then rename);
    UserError for audio :func:`check_audio` refuses or a name that does not end in .wav.
    ``before_rename(tmp)`` runs once the temporary file is complete, before it takes ``path``'s name
    (a rename keeps its size and time, so a record of them made then holds for ``path``)."""
    if Path(path).suffix.lower() != ".wav":
        raise UserError(f"{path} does not end in .wav; save_wav writes WAV files only.")
    if isinstance(audio, torch.Tensor):
        audio = audio.detach().float().cpu().numpy()
    audio = np.clip(check_audio(audio, sample_rate), -1.0, 1.0)
    try:
        with atomic_path(path) as tmp:
            sf.write(sound_file(tmp), audio, sample_rate, subtype="PCM_16", format="WAV")
            if before_rename is not None:
                before_rename(tmp)
    except (OSError, RuntimeError) as exc:  # soundfile's LibsndfileError for a full disk is a RuntimeError
        raise UserError(
            f"Cannot write {path} ({first_line(exc)}); check the free disk space and the folder's permissions."
        ) from None


def normalize_level(audio: np.ndarray, target_rms_db: float = -20.0, peak: float = 0.99) -> np.ndarray:
    """Scale to a target RMS level (dBFS), then down if needed so no sample exceeds ``peak``: what
    ``prepare`` does to every utterance, and the inference API to its input, so that a model sees
    audio at the level it was trained on whatever the recording's gain (float samples far above 1
    or far below included)."""
    rms = float(np.sqrt(np.mean(np.square(audio, dtype=np.float64)))) if audio.size else 0.0
    if rms <= 1e-8:
        return audio
    gain = 10.0 ** (target_rms_db / 20.0) / rms
    max_abs = float(np.max(np.abs(audio))) * gain
    if max_abs > peak:
        gain *= peak / max_abs
    return (audio * gain).astype(np.float32)


def mu_law_encode(audio: torch.Tensor, classes: int = MU_LAW_CLASSES) -> torch.Tensor:
    """Waveform in [-1, 1] -> integer classes in [0, classes). Shape preserved."""
    mu = classes - 1
    audio = audio.clamp(-1.0, 1.0)
    compressed = torch.sign(audio) * torch.log1p(mu * audio.abs()) / np.log1p(mu)
    return ((compressed + 1.0) / 2.0 * mu + 0.5).long().clamp(0, mu)


def mu_law_decode(classes_idx: torch.Tensor, classes: int = MU_LAW_CLASSES) -> torch.Tensor:
    """Integer classes in [0, classes) -> waveform in [-1, 1]. Shape preserved."""
    mu = classes - 1
    compressed = classes_idx.float() / mu * 2.0 - 1.0
    return torch.sign(compressed) * torch.expm1(compressed.abs() * np.log1p(mu)) / mu
