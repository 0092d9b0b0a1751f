"""Hand-crafted reference features: MFCCs with deltas, on the same frame grid as the codes.

Frames follow the encoder's convention (vqspeech.models.frontend): frame t covers samples
[t * hop, (t + 1) * hop) and is centred at (t + 0.5) * hop, so T // hop frames per signal. The
analysis window is the usual 25 ms, or 2 * hop when that is longer, so that a fine code grid
(e.g. 4 ms at 250 codes/s) does not starve the baseline of spectral resolution.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy.fft import dct

from ..models.frontend import LogMelFrontend

WINDOW_SECONDS = 0.025


def mfcc(audio: np.ndarray, sample_rate: int, hop_length: int, n_mfcc: int = 13, n_mels: int = 40) -> np.ndarray:
    """audio [T] -> MFCCs [T // hop, n_mfcc] (DCT-II of the log-mel spectrum, c0 included)."""
    window = max(2 * hop_length, round(WINDOW_SECONDS * sample_rate))
    frontend = LogMelFrontend(sample_rate, hop_length, n_mels=n_mels, win_length=window)
    with torch.no_grad():
        log_mel = frontend(torch.as_tensor(audio, dtype=torch.float32)[None])[0].numpy()
    return dct(log_mel, type=2, axis=0, norm="ortho")[:n_mfcc].T.astype(np.float32)


def deltas(features: np.ndarray, width: int = 2) -> np.ndarray:
    """Regression deltas over +-``width`` frames (edges repeated): [T, D] -> [T, D]."""
    padded = np.pad(features, ((width, width), (0, 0)), mode="edge")
    n = len(features)
    num = sum(w * (padded[width + w : width + w + n] - padded[width - w : width - w + n]) for w in range(1, width + 1))
    return (num / (2 * sum(w * w for w in range(1, width + 1)))).astype(np.float32)


def mfcc_with_deltas(audio: np.ndarray, sample_rate: int, hop_length: int, n_mfcc: int = 13) -> np.ndarray:
    """audio [T] -> [T // hop, 3 * n_mfcc]: MFCCs, deltas and delta-deltas."""
    static = mfcc(audio, sample_rate, hop_length, n_mfcc)
    delta = deltas(static)
    return np.concatenate([static, delta, deltas(delta)], axis=1)
