"""How well discrete codes match phones, from the code-by-phone frame counts.

- ``mapping_accuracy``: the VQ-VAE paper's probe (each code -> its most frequent phone), made
  speaker-independent: the mapping is learned on the other speakers' frames and scored on the
  held-out speaker's, for every speaker in turn, pooled over frames.
- ``pnmi``, ``phone_purity``, ``cluster_purity``: as defined in the HuBERT paper (Hsu et al. 2021):
  PNMI = I(phone; code) / H(phone), phone purity = E_code[max_phone p(phone | code)],
  cluster purity = E_phone[max_code p(code | phone)], all from the joint frame distribution.
"""

from __future__ import annotations

import numpy as np


def contingency(codes: np.ndarray, phones: np.ndarray, num_codes: int, num_phones: int) -> np.ndarray:
    """Frame counts [num_codes, num_phones] of (code, phone) pairs; codes, phones int [N]."""
    flat = np.bincount(codes * num_phones + phones, minlength=num_codes * num_phones)
    return flat.reshape(num_codes, num_phones)


def pnmi(counts: np.ndarray) -> float:
    """Phone-normalised mutual information I(phone; code) / H(phone), in [0, 1] (0 with fewer than
    two phones, where H(phone) is 0 up to rounding)."""
    joint = counts / counts.sum()
    p_code = joint.sum(1, keepdims=True)
    p_phone = joint.sum(0, keepdims=True)
    nz = joint > 0
    mutual = np.sum(joint[nz] * np.log(joint[nz] / (p_code @ p_phone)[nz]))
    p = p_phone[p_phone > 0]
    entropy = -np.sum(p * np.log(p))
    if p.size < 2 or entropy <= 0:
        return 0.0
    return float(np.clip(mutual / entropy, 0.0, 1.0))  # rounding can step just outside


def phone_purity(counts: np.ndarray) -> float:
    """Frame accuracy of labelling each code with its most frequent phone (on the same frames)."""
    return float(counts.max(1).sum() / counts.sum())


def cluster_purity(counts: np.ndarray) -> float:
    """Fraction of frames whose code is their phone's most frequent code."""
    return float(counts.max(0).sum() / counts.sum())


def mapping_accuracy(
    codes: np.ndarray, phones: np.ndarray, groups: np.ndarray, num_codes: int, num_phones: int
) -> tuple[float | None, np.ndarray]:
    """Leave-one-group-out code -> phone mapping; returns (pooled accuracy, predictions [N]).

    codes, phones, groups: int [N] per frame. For each group g the mapping is the most frequent
    phone of every code over the frames of all other groups; a code those frames never use maps
    to their most frequent phone. With fewer than two groups nothing is held out: (None, -1s).
    """
    if len(np.unique(groups)) < 2:
        return None, np.full_like(phones, -1)
    total = contingency(codes, phones, num_codes, num_phones)
    predictions = np.empty_like(phones)
    for g in np.unique(groups):
        mask = groups == g
        others = total - contingency(codes[mask], phones[mask], num_codes, num_phones)
        mapping = others.argmax(1)
        mapping[others.sum(1) == 0] = others.sum(0).argmax()
        predictions[mask] = mapping[codes[mask]]
    return float(np.mean(predictions == phones)), predictions


def per_phone_accuracy(phones: np.ndarray, predictions: np.ndarray, num_phones: int) -> np.ndarray:
    """Recall of each phone class [num_phones] (NaN for classes without frames)."""
    frames = np.bincount(phones, minlength=num_phones)
    right = np.bincount(phones[predictions == phones], minlength=num_phones)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(frames > 0, right / np.maximum(frames, 1), np.nan)


def code_scores(codes: np.ndarray, phones: np.ndarray, groups: np.ndarray, num_codes: int, num_phones: int) -> dict:
    """accuracy (held-out mapping), pnmi, phone_purity, cluster_purity for one labelling."""
    return code_scores_and_predictions(codes, phones, groups, num_codes, num_phones)[0]


def code_scores_and_predictions(
    codes: np.ndarray, phones: np.ndarray, groups: np.ndarray, num_codes: int, num_phones: int
) -> tuple[dict, np.ndarray]:
    """:func:`code_scores` and the held-out mapping's prediction for every frame [N]."""
    counts = contingency(codes, phones, num_codes, num_phones)
    accuracy, predictions = mapping_accuracy(codes, phones, groups, num_codes, num_phones)
    return {
        "accuracy": accuracy,
        "pnmi": pnmi(counts),
        "phone_purity": phone_purity(counts),
        "cluster_purity": cluster_purity(counts),
    }, predictions


def chance_baselines(phones: np.ndarray, groups: np.ndarray, num_codes: int, num_phones: int, seed: int = 0) -> dict:
    """The same scores for uniformly random codes (same K) and for a single code (majority phone)."""
    random_codes = np.random.default_rng(seed).integers(0, num_codes, len(phones))
    return {
        "random_codes": code_scores(random_codes, phones, groups, num_codes, num_phones),
        "majority_phone": code_scores(np.zeros_like(phones), phones, groups, 1, num_phones),
    }
