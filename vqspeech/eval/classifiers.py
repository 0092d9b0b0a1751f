"""Linear probes: what a logistic regression can read off a representation.

- ``linear_probe_accuracy``: phone classification of frame features (the encoder's output before
  quantisation), cross-validated over speakers so the probe is scored on unseen voices.
- ``speaker_id_accuracy``: speaker identification from one vector per utterance (a code histogram,
  or statistics of the input features), cross-validated over utterances. Lower on code
  histograms than on the input means the codes carry less speaker information.
"""

from __future__ import annotations

import warnings

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GroupKFold, StratifiedKFold
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler


def _classifier(max_iter: int):
    return make_pipeline(StandardScaler(), LogisticRegression(max_iter=max_iter, C=1.0))


def _fit(model, x: np.ndarray, y: np.ndarray):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return model.fit(x, y)


def linear_probe_accuracy(
    features: np.ndarray,
    labels: np.ndarray,
    groups: np.ndarray,
    *,
    max_train_frames: int = 20000,
    max_test_frames: int = 20000,
    max_iter: int = 200,
    seed: int = 0,
) -> float | None:
    """Frame accuracy of a logistic regression features [N, D] -> labels [N], pooled over folds.

    Folds leave out whole groups (speakers; at most 5 folds). Each fold trains on at most
    ``max_train_frames`` random frames and scores at most ``max_test_frames``. None with fewer
    than two groups.
    """
    num_groups = len(np.unique(groups))
    if num_groups < 2:
        return None
    rng = np.random.default_rng(seed)
    right = total = 0
    for train, test in GroupKFold(n_splits=min(5, num_groups)).split(features, labels, groups):
        train = rng.permutation(train)[:max_train_frames]
        test = rng.permutation(test)[:max_test_frames]
        if len(np.unique(labels[train])) < 2:
            predictions = np.full(len(test), labels[train][0])
        else:
            predictions = _fit(_classifier(max_iter), features[train], labels[train]).predict(features[test])
        right += int(np.sum(predictions == labels[test]))
        total += len(test)
    return right / total


def speaker_id_accuracy(
    features: np.ndarray, speakers: np.ndarray, *, max_iter: int = 500, seed: int = 0
) -> float | None:
    """Cross-validated speaker-ID accuracy from per-utterance vectors features [U, F].

    Stratified folds over utterances (at most 5; as many as the rarest speaker allows). None when
    there are fewer than two speakers or a speaker has a single utterance.
    """
    _, counts = np.unique(speakers, return_counts=True)
    if len(counts) < 2 or counts.min() < 2:
        return None
    folds = StratifiedKFold(n_splits=min(5, int(counts.min())), shuffle=True, random_state=seed)
    right = 0
    for train, test in folds.split(features, speakers):
        model = _fit(_classifier(max_iter), features[train], speakers[train])
        right += int(np.sum(model.predict(features[test]) == speakers[test]))
    return right / len(speakers)


def code_histograms(codes: list[np.ndarray], num_codes: int) -> np.ndarray:
    """Relative code frequencies per utterance: [U, num_codes]."""
    return np.stack([np.bincount(c, minlength=num_codes) / max(len(c), 1) for c in codes])


def feature_statistics(frames: list[np.ndarray]) -> np.ndarray:
    """Mean and standard deviation over time of frame features [T_u, D] -> [U, 2 * D]."""
    return np.stack([np.concatenate([f.mean(0), f.std(0)]) for f in frames])
