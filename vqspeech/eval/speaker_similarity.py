"""Speaker similarity with a pretrained speaker encoder (resemblyzer's GE2E VoiceEncoder).

    embedder = SpeakerEmbedder()                       # CPU; resemblyzer is imported here
    e = embedder.embed(audio, sample_rate)             # np.float32 [256], unit length
    centroids = embedder.centroids({"george": [(a1, sr1), (a2, sr2)], ...})
    cosine_similarity(e, centroids["george"])

The embedding is resemblyzer's: 16 kHz audio (resampled here with soxr), volume normalised, long
silences cut with webrtcvad, 1.6 s partials averaged and L2-normalised. Audio too short or too
quiet for the silence trimming to leave anything usable is embedded untrimmed instead, so very
short or silent input never fails. A centroid is the normalised mean of utterance embeddings.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Mapping

import numpy as np

from ..audio import resample
from ..errors import UserError

EMBED_RATE = 16000
"""resemblyzer's sample rate."""

EMBED_DIM = 256

MIN_TRIMMED_SECONDS = 0.2
"""When silence trimming leaves less than this, the untrimmed audio is embedded instead."""

_TARGET_DBFS = -30.0
"""resemblyzer's volume normalisation target (raise-only)."""


def _import_resemblyzer():
    """Import resemblyzer, an optional extra, lazily (librosa and numba take seconds to import), quietly."""
    try:
        with warnings.catch_warnings():
            # webrtcvad imports pkg_resources, which warns about its own deprecation
            warnings.filterwarnings("ignore", message=r".*pkg_resources", category=UserWarning)
            warnings.filterwarnings("ignore", category=DeprecationWarning)
            import resemblyzer  # noqa: PLC0415
            from resemblyzer import audio as resemblyzer_audio  # noqa: PLC0415
    except ImportError as exc:
        raise UserError(
            f'Speaker similarity needs resemblyzer ({exc}); install it with `pip install resemblyzer "setuptools<81"`.'
        ) from None
    return resemblyzer, resemblyzer_audio


class SpeakerEmbedder:
    """Utterance embeddings and speaker centroids from resemblyzer's VoiceEncoder."""

    def __init__(self, device: str = "cpu"):
        resemblyzer, self._audio = _import_resemblyzer()
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=FutureWarning)  # torch.load defaults
            self.encoder = resemblyzer.VoiceEncoder(device=device, verbose=False)

    def preprocess(self, audio: np.ndarray, sample_rate: int) -> np.ndarray:
        """audio [T] at any rate -> 16 kHz float32, volume raised to -30 dBFS, long silences cut.

        Falls back to the untrimmed audio when trimming leaves less than MIN_TRIMMED_SECONDS;
        exact digital silence is left as it is (no gain)."""
        wav = resample(np.asarray(audio, dtype=np.float32).reshape(-1), sample_rate, EMBED_RATE)
        wav = np.nan_to_num(wav, nan=0.0, posinf=0.0, neginf=0.0)
        rms = float(np.sqrt(np.mean(np.square(wav, dtype=np.float64)))) if wav.size else 0.0
        if rms > 1e-6:
            gain = 10.0 ** (_TARGET_DBFS / 20.0) / rms
            if gain > 1.0:
                wav = wav * np.float32(gain)
        wav = np.clip(wav, -1.0, 1.0).astype(np.float32)
        try:
            trimmed = self._audio.trim_long_silences(wav)
        except Exception:  # webrtcvad rejects odd lengths; the untrimmed audio still embeds
            trimmed = wav
        return trimmed if len(trimmed) >= MIN_TRIMMED_SECONDS * EMBED_RATE else wav

    def embed(self, audio: np.ndarray, sample_rate: int) -> np.ndarray:
        """audio [T] -> unit-length embedding np.float32 [256]."""
        wav = self.preprocess(audio, sample_rate)
        if len(wav) < EMBED_RATE // 100:  # less than one 10 ms frame: pad with silence
            wav = np.pad(wav, (0, EMBED_RATE // 100 - len(wav)))
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=RuntimeWarning)
            embedding = np.asarray(self.encoder.embed_utterance(wav), dtype=np.float32)
        return _normalize(embedding)

    def embed_many(self, signals: Iterable[tuple[np.ndarray, int]]) -> np.ndarray:
        """(audio, sample_rate) pairs -> [N, 256]."""
        rows = [self.embed(a, sr) for a, sr in signals]
        return np.stack(rows) if rows else np.zeros((0, EMBED_DIM), dtype=np.float32)

    def centroids(self, signals: Mapping[str, Iterable[tuple[np.ndarray, int]]]) -> dict[str, np.ndarray]:
        """{speaker: [(audio, sample_rate), ...]} -> {speaker: centroid [256]} (speakers with no audio left out)."""
        out = {}
        for speaker, items in signals.items():
            embeddings = self.embed_many(items)
            if len(embeddings):
                out[speaker] = centroid(embeddings)
        return out


def centroid(embeddings: np.ndarray) -> np.ndarray:
    """[N, D] utterance embeddings -> the normalised mean [D]."""
    embeddings = np.asarray(embeddings, dtype=np.float32)
    if embeddings.ndim != 2 or len(embeddings) == 0:
        raise ValueError(f"expected a non-empty [N, D] array, got shape {embeddings.shape}")
    return _normalize(embeddings.mean(axis=0))


def cosine_similarity(a: np.ndarray, b: np.ndarray) -> float:
    """Cosine of the angle between two vectors (0 when either is zero)."""
    a, b = np.asarray(a, dtype=np.float64).ravel(), np.asarray(b, dtype=np.float64).ravel()
    norm = np.linalg.norm(a) * np.linalg.norm(b)
    return float(a @ b / norm) if norm > 0 else 0.0


def _normalize(v: np.ndarray) -> np.ndarray:
    v = np.nan_to_num(np.asarray(v, dtype=np.float32))
    norm = float(np.linalg.norm(v))
    return (v / norm).astype(np.float32) if norm > 0 else v
