"""Mel-cepstral distortion (MCD) between a reference and a test signal, aligned by DTW.

    mel_cepstral_distortion(reference, test, sample_rate)   # dB-like units, 0 for equal signals

Features: the MFCCs of :func:`vqspeech.eval.features.mfcc` (the orthonormal DCT-II of the
log-mel power spectrum of LogMelFrontend: 10 ms hop, 25 ms Hann window, 40 mel bands, power floored
at 1e-5), halved to be the cepstrum of the log *amplitude*; coefficients 1..24 are kept (c0, the
frame energy, is left out, so a level difference does not count). The distance between two frames
is the usual

    MCD = (10 / ln 10) * sqrt(2 * sum_{d=1..24} (c_ref[d] - c_test[d])^2)

averaged over the frame pairs of a dynamic time warping path.

This is a *mel-cepstral* distortion computed from the mel spectrum (MFCC-like), not SPTK's
``mcep`` (all-pass warped cepstrum from the linear spectrum): its values are comparable only with
other values from this module, not with MCDs published elsewhere.

Alignment: a reconstruction is nearly time-aligned with its original but not sample-exact (the
decoder may drift by a few milliseconds), so frames are paired along the minimum-cost DTW path
over the Euclidean distance between the cepstra, with steps (1, 0), (0, 1) and (1, 1), all of
weight 1, from the first frame pair to the last. The MCD is the mean over the path's pairs. DTW
can only lower the distance compared with a frame-by-frame comparison, and for signals of
different content it still finds the best warping, so a low MCD between unrelated signals is not
excluded; use it to compare systems on the same references.
"""

from __future__ import annotations

import math

import numpy as np

from ..audio import resample
from .features import mfcc

N_MELS = 40
N_COEFFS = 24
MCD_SCALE = 10.0 / math.log(10.0) * math.sqrt(2.0)
"""(10 / ln 10) * sqrt(2): per-frame MCD = MCD_SCALE * ||c_ref - c_test||."""


def mel_cepstrum(audio: np.ndarray, sample_rate: int, n_coeffs: int = N_COEFFS, n_mels: int = N_MELS) -> np.ndarray:
    """audio [T] -> mel cepstra [frames, n_coeffs] (coefficients 1..n_coeffs, c0 excluded), 10 ms hop."""
    if n_coeffs >= n_mels:
        raise ValueError(f"n_coeffs={n_coeffs} must be below n_mels={n_mels}")
    hop = max(1, sample_rate // 100)
    audio = np.asarray(audio, dtype=np.float32).reshape(-1)
    if len(audio) < hop:
        return np.zeros((0, n_coeffs), dtype=np.float64)
    # MFCCs are the DCT of the log *power*; halving gives the cepstrum of the log amplitude
    return 0.5 * mfcc(audio, sample_rate, hop, n_mfcc=n_coeffs + 1, n_mels=n_mels)[:, 1:].astype(np.float64)


def dtw_path(cost: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Minimum-cost monotone path through ``cost`` [N, M] from (0, 0) to (N-1, M-1).

    Steps (1, 0), (0, 1), (1, 1), each adding the cost of the cell entered. Returns the row and
    column indices of the path's cells, in order. Each row is computed at once: with
    a_j = cost[i, j] + min(D[i-1, j-1], D[i-1, j]) and S the prefix sums of cost[i],
    D[i, j] = min_{k <= j} (a_k + S_j - S_k) = S_j + cummin(a - S)_j.
    """
    cost = np.asarray(cost, dtype=np.float64)
    n, m = cost.shape
    if n == 0 or m == 0:
        raise ValueError(f"DTW needs a non-empty cost matrix, got shape {cost.shape}")
    acc = np.empty((n, m))
    acc[0] = np.cumsum(cost[0])
    for i in range(1, n):
        above = acc[i - 1]
        diagonal = np.concatenate(([np.inf], above[:-1]))
        a = cost[i] + np.minimum(above, diagonal)
        prefix = np.cumsum(cost[i])
        acc[i] = prefix + np.minimum.accumulate(a - prefix)
    rows, cols = [n - 1], [m - 1]
    i, j = n - 1, m - 1
    while i > 0 or j > 0:
        if i == 0:
            j -= 1
        elif j == 0:
            i -= 1
        else:
            step = int(np.argmin((acc[i - 1, j - 1], acc[i - 1, j], acc[i, j - 1])))
            i, j = (i - 1, j - 1) if step == 0 else (i - 1, j) if step == 1 else (i, j - 1)
        rows.append(i)
        cols.append(j)
    return np.array(rows[::-1]), np.array(cols[::-1])


def mcd_from_cepstra(reference: np.ndarray, test: np.ndarray, dtw: bool = True) -> float:
    """MCD between cepstra [N, D] and [M, D]: mean over the DTW path's pairs (or over the first
    min(N, M) frames, pairwise, without ``dtw``). NaN when either has no frames."""
    reference, test = np.asarray(reference, np.float64), np.asarray(test, np.float64)
    if len(reference) == 0 or len(test) == 0:
        return float("nan")
    if not dtw:
        n = min(len(reference), len(test))
        return float(MCD_SCALE * np.linalg.norm(reference[:n] - test[:n], axis=1).mean())
    sq = np.square(reference).sum(1)[:, None] + np.square(test).sum(1)[None] - 2.0 * reference @ test.T
    distance = np.sqrt(np.maximum(sq, 0.0))
    rows, cols = dtw_path(distance)
    return float(MCD_SCALE * np.linalg.norm(reference[rows] - test[cols], axis=1).mean())


def mel_cepstral_distortion(
    reference: np.ndarray,
    test: np.ndarray,
    sample_rate: int,
    test_sample_rate: int | None = None,
    *,
    dtw: bool = True,
    n_coeffs: int = N_COEFFS,
) -> float:
    """MCD of ``test`` against ``reference`` (both [T], float); ``test`` is resampled to the
    reference's rate when ``test_sample_rate`` differs. NaN when either is shorter than 10 ms."""
    test = np.asarray(test, dtype=np.float32)
    if test_sample_rate is not None and test_sample_rate != sample_rate:
        test = resample(test, test_sample_rate, sample_rate)
    return mcd_from_cepstra(
        mel_cepstrum(reference, sample_rate, n_coeffs), mel_cepstrum(test, sample_rate, n_coeffs), dtw=dtw
    )
