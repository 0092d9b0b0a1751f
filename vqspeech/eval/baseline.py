"""The reference every unit metric stands beside: MFCCs + deltas clustered by k-means.

``mfcc_kmeans_baseline`` writes the same codes layout as ``vqspeech encode`` (``codes/``,
``latents/`` = the standardised MFCC features, ``units.txt``, ``codes.json``), so the phoneme
probe, ABX and the speaker probes run on it unchanged. The k-means (K clusters, the same K and
code rate as the model it is compared with) is fitted on the ``fit_split`` utterances only.
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import numpy as np
from sklearn.cluster import MiniBatchKMeans
from tqdm import tqdm

from ..data.codes import (
    CODE_DTYPE,
    MAX_CODE_RATE_HZ,
    MAX_CODES,
    CodesFolder,
    CodesInfo,
    CodesWriter,
    Encoding,
    refuse_existing_codes,
)
from ..data.manifest import Utterance, load_utterance, read_manifest
from ..errors import UserError
from ..fileio import CorpusReader, FolderLock, atomic_path
from .features import mfcc_with_deltas


def settings_like(codes_dir: str | Path, warn: bool = True) -> tuple[int | None, float]:
    """K and the code rate of the codes in ``codes_dir``, for a baseline that compares with them.
    Grouped codes (``groups`` G > 1: a unit is G codes of K each) get a warning: K clusters are
    fewer units than the model's, and PNMI and purity grow with the number of units (``warn``
    False: the caller chose K itself)."""
    info = CodesFolder.open(codes_dir).info
    if info.groups > 1 and warn:
        warnings.warn(
            f"{codes_dir} holds codes of {info.groups} groups of K={info.num_codes} each (up to "
            f"{info.num_codes}^{info.groups} distinct units), but the baseline clusters into K={info.num_codes}; "
            "give the number of units the probe counts in `codes_used` as --num_codes for a baseline of as many "
            "units.",
            stacklevel=2,
        )
    return info.num_codes, info.code_rate_hz


def mfcc_kmeans_baseline(
    manifest: str | Path,
    out_dir: str | Path,
    *,
    num_codes: int = 128,
    code_rate_hz: float = 100.0,
    fit_split: str = "train",
    split: str | None = None,
    max_fit_frames: int = 200_000,
    seed: int = 0,
    overwrite: bool = False,
    progress: bool = True,
) -> dict:
    """Fit k-means on MFCC frames of ``fit_split`` and write codes for ``split`` (None = all) into
    the codes folder ``out_dir``, holding its lock."""
    out = Path(out_dir)
    refuse_existing_codes(out, overwrite, system="mfcc-kmeans")
    if isinstance(num_codes, bool) or not isinstance(num_codes, (int, np.integer)) or not 2 <= num_codes <= MAX_CODES:
        raise UserError(
            f"`num_codes` must be a whole number from 2 to {MAX_CODES} (codes are stored as "
            f"{np.dtype(CODE_DTYPE)}), not {num_codes}."
        )
    num_codes = int(num_codes)  # codes.json is JSON
    if not (math.isfinite(code_rate_hz) and 0 < code_rate_hz <= MAX_CODE_RATE_HZ):
        raise UserError(
            f"`code_rate` must be a positive number of codes per second, at most {MAX_CODE_RATE_HZ:g}, "
            f"not {code_rate_hz}."
        )
    utts = read_manifest(manifest)
    targets = [u for u in utts if split is None or u.split == split]
    fit = [u for u in utts if u.split == fit_split]
    if not targets or not fit:
        missing = split if not targets else fit_split
        raise UserError(f"Manifest {manifest} has no '{missing}' utterances; choose another split.")
    rates = {u.sample_rate for u in utts}
    if len(rates) != 1:
        raise UserError(f"Manifest {manifest} mixes sample rates {sorted(rates)}; prepare it at one rate.")
    sample_rate = rates.pop()
    hop = sample_rate / code_rate_hz
    if hop != int(hop) or hop < 1:
        raise UserError(
            f"A code rate of {code_rate_hz} Hz is not a whole number of samples at "
            f"{sample_rate} Hz; choose a rate that divides it."
        )
    hop = int(hop)
    with CorpusReader(manifest, "baseline"), FolderLock(out, "baseline"):
        encoded = utts if split is None else fit + [u for u in targets if u.split != fit_split]
        features = _mfcc_features(encoded, sample_rate, hop, progress)
        fitted = [features[u.id] for u in fit if u.id in features and len(features[u.id])]
        if not fitted:
            raise UserError(
                f"No '{fit_split}' utterance is as long as one code ({hop} samples at {code_rate_hz} codes "
                "per second); choose a faster code rate."
            )
        fit_frames = np.concatenate(fitted)
        fit_frames = fit_frames[np.random.default_rng(seed).permutation(len(fit_frames))[:max_fit_frames]]
        if len(fit_frames) < num_codes:
            raise UserError(f"The '{fit_split}' split has {len(fit_frames)} frames, fewer than K={num_codes}.")
        mean, std = fit_frames.mean(0), fit_frames.std(0) + 1e-8
        kmeans = MiniBatchKMeans(n_clusters=num_codes, batch_size=4096, n_init=3, random_state=seed)
        kmeans.fit((fit_frames - mean) / std)

        writer = CodesWriter(out, latents=True, overwrite=overwrite, system="mfcc-kmeans")
        speakers, splits = {}, {}
        for u in targets:
            if u.id not in features:
                continue
            normalised = ((features[u.id] - mean) / std).astype(np.float32)
            writer.add(u.id, Encoding(kmeans.predict(normalised), latents=normalised))
            speakers[u.id], splits[u.id] = u.speaker, u.split
        with atomic_path(out / "kmeans.npz") as tmp:
            np.savez(tmp, centroids=kmeans.cluster_centers_, mean=mean, std=std)
        extra = {
            "system": "mfcc-kmeans",
            "features": "13 MFCC + deltas + delta-deltas, standardised",
            "fit_split": fit_split,
            "fit_frames": len(fit_frames),
            "manifest": str(Path(manifest).resolve()),
        }
        info = writer.finish(
            CodesInfo.for_rate(
                code_rate_hz,
                num_codes,
                sample_rate=sample_rate,
                hop_length=hop,
                speakers=speakers,
                splits=splits,
                extra=extra,
            )
        )
    return {"encoded": info.num_utterances, "fit_frames": len(fit_frames), "K": num_codes, "out_dir": str(out)}


def _mfcc_features(utts: list[Utterance], sample_rate: int, hop: int, progress: bool) -> dict[str, np.ndarray]:
    """MFCCs with deltas [T, 39] on the code-frame grid, by utterance id (utterances shorter than
    one frame are left out)."""
    features: dict[str, np.ndarray] = {}
    for u in tqdm(utts, desc="mfcc", unit="utt", disable=not progress):
        audio = load_utterance(u)
        if len(audio) >= hop:
            features[u.id] = mfcc_with_deltas(audio, sample_rate, hop)
    return features
