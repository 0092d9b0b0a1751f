"""ABX discriminability: the vectorised metric against its brute-force reference, the DTW, the
item protocols, the aggregation, and behaviour on features of known discriminability."""

from __future__ import annotations

import numpy as np
import pytest

from vqspeech.errors import UserError
from vqspeech.eval.abx import (_aggregate, abx_error, abx_error_bruteforce, abx_scores, build_items,
                               dtw_batch, dtw_reference, frame_distances)

LABELS = ("a", "b", "c")


def alignments(seed: int, num_utt: int = 24, num_spk: int = 3, phones: int = 10, min_len: int = 0,
               max_len: int = 5, labels=LABELS):
    """Random frame alignments, "sil" at both ends, phones of min_len..max_len-1 frames (0 = empty),
    no phone repeated back to back (a triphone a+a+b would be indistinguishable from a+b+b)."""
    rng = np.random.default_rng(seed)
    spans, speakers = [], []
    for u in range(num_utt):
        t, segs = 0, []
        for k in range(phones):
            choices = [x for x in labels if not segs or x != segs[-1][2]] or labels
            label = "sil" if k in (0, phones - 1) else choices[rng.integers(len(choices))]
            n = int(rng.integers(min_len, max_len))
            segs.append((t, t + n, label))
            t += n
        spans.append(segs)
        speakers.append(f"spk{u % num_spk}")
    return spans, speakers


def frame_features(spans, speakers, fn, dim: int = 8):
    """Per utterance [T, dim]: row t = fn(label of frame t, speaker)."""
    return [np.array([fn(label, spk) for s, e, label in segs for _ in range(s, e)]).reshape(-1, dim)
            for segs, spk in zip(spans, speakers)]


def direction(index: int, dim: int = 8) -> np.ndarray:
    return np.eye(dim)[index]


@pytest.mark.parametrize("context", [False, True], ids=["any", "triphone"])
@pytest.mark.parametrize("across", [False, True], ids=["within", "across"])
@pytest.mark.parametrize("cap", [100, 2], ids=["all", "subsampled"])
@pytest.mark.parametrize("kind", ["normal", "onehot", "euclidean"])
def test_vectorised_matches_bruteforce(context, across, cap, kind):
    spans, speakers = alignments(seed=1)
    rng = np.random.default_rng(2)
    lengths = [segs[-1][1] for segs in spans]
    if kind == "onehot":  # discrete codes: many exactly tied distances
        features = [np.eye(4)[rng.integers(4, size=n)] for n in lengths]
    else:
        features = [rng.normal(size=(n, 5)) for n in lengths]
    items = build_items(spans, speakers, context=context)
    kw = dict(across=across, max_items_per_cell=cap, max_x_across=1, seed=7,
              distance="euclidean" if kind == "euclidean" else "angular")
    fast, slow = abx_error(features, items, **kw), abx_error_bruteforce(features, items, **kw)
    assert fast["num_pairs"] > 5 and fast["error"] is not None
    assert fast["error"] == pytest.approx(slow["error"], abs=1e-9)
    assert {k: v for k, v in fast.items() if k != "error"} == {k: v for k, v in slow.items() if k != "error"}
    if cap == 2:
        assert fast["num_items"] < len(items)


def test_subsampling_caps_cells_and_depends_on_seed():
    spans, speakers = alignments(seed=3, num_utt=30)
    rng = np.random.default_rng(0)
    features = [rng.normal(size=(segs[-1][1], 4)) for segs in spans]
    items = build_items(spans, speakers, context=False)
    num_cells = len({(c, s) for c, s in zip(items.category, items.speaker)})
    runs = [abx_error(features, items, across=False, max_items_per_cell=3, seed=s) for s in range(4)]
    assert all(r["num_items"] == 3 * num_cells for r in runs)
    assert len({r["error"] for r in runs}) > 1
    assert abx_error(features, items, across=False, max_items_per_cell=3, seed=1) == runs[1]
    # across, each A cell takes X from at most max_x_across of the 2 other speakers
    one, both = (abx_error(features, items, across=True, max_x_across=k)["num_pairs"] for k in (1, 2))
    assert 2 * one == both > 0


def test_dtw_hand_examples():
    # costs: [[1, 3, 6], [5, 1, 7]]; path (0,0) -> (1,1) -> (1,2): 7 / 3 cells
    dist = np.array([[1.0, 2, 3], [4, 0, 6]])
    assert dtw_reference(dist) == pytest.approx(7 / 3)
    # cost 1 along tied paths: libri-light's backtracking prefers the diagonal over (i, j-1) and
    # (i-1, j), giving 3 cells where (i, j-1) first would give 4 and (i-1, j) first 5
    tie_left = np.array([[0.0, 0, 0], [0, 0, 1]])
    tie_up = np.array([[0.0, 0, 0], [0, 0, 0], [0, 1, 1]])
    for d in (dist, tie_left, tie_up):
        assert dtw_batch(d[None], np.array([d.shape[0]]), np.array([d.shape[1]]))[0] == dtw_reference(d)
    assert dtw_reference(tie_left) == dtw_reference(tie_up) == pytest.approx(1 / 3)
    assert dtw_reference(np.array([[2.0]])) == 2.0


@pytest.mark.parametrize("integer", [False, True], ids=["real", "tied"])
def test_dtw_batch_matches_per_pair_dtw(integer):
    rng = np.random.default_rng(0)
    for _ in range(50):
        P, La, Lb = 9, int(rng.integers(1, 10)), int(rng.integers(1, 10))
        dist = rng.integers(0, 3, size=(P, La, Lb)).astype(float) if integer else rng.random((P, La, Lb))
        la, lb = rng.integers(1, La + 1, P), rng.integers(1, Lb + 1, P)
        la[0], lb[0] = La, Lb
        expected = [dtw_reference(dist[p, :la[p], :lb[p]]) for p in range(P)]
        np.testing.assert_array_equal(dtw_batch(dist, la, lb), expected)


def test_frame_distances():
    a = np.array([[1.0, 0], [0, 0], [2, 2]])
    b = np.array([[0.0, 3], [-1, 0], [0, 0], [1, 1]])
    expected = [[0.5, 1, 1, 0.25], [1, 1, 0, 1], [0.25, 0.75, 1, 0]]  # zero frames as in libri-light
    np.testing.assert_allclose(frame_distances(a, b), expected, atol=1e-12)
    assert frame_distances(np.array([[0.0, 0]]), np.array([[3.0, 4]]), "euclidean")[0, 0] == pytest.approx(5)
    batch = np.random.default_rng(0).normal(size=(2, 3, 4, 6))
    assert np.all(frame_distances(batch, batch) * np.eye(4) == 0)  # duplicates exactly at 0
    np.testing.assert_allclose(frame_distances(batch, batch[:, :, :2])[1, 2],
                               frame_distances(batch[1, 2], batch[1, 2, :2]))


def test_triphone_items_from_a_hand_alignment():
    spans = [[(0, 2, "sil"), (2, 5, "a"), (5, 5, "b"), (5, 8, "c"), (8, 10, "sil")],
             [(0, 3, "sil"), (3, 4, "a"), (4, 6, "spn"), (6, 9, "a"), (9, 12, "t")]]
    items = build_items(spans, ["s1", "s2"], context=True)
    got = [(int(u), int(s), int(e), items.categories[c], items.contexts[x], items.speakers[k])
           for u, s, e, c, x, k in zip(items.utt, items.start, items.end, items.category, items.context,
                                       items.speaker)]
    # the empty "b" and the ignored "spn" are not centres; utterance-edge phones have no triphone
    assert got == [(0, 0, 5, "a", "sil+b", "s1"), (0, 5, 10, "c", "b+sil", "s1"),
                   (1, 0, 6, "a", "sil+spn", "s2"), (1, 4, 12, "a", "spn+t", "s2")]
    plain = build_items(spans, ["s1", "s2"], context=False)
    assert list(zip(plain.start, plain.end)) == [(2, 5), (5, 8), (3, 4), (6, 9), (9, 12)]
    assert set(plain.contexts) == {""} and plain.categories == ("a", "c", "t")


def one_frame_corpus(angles_by_speaker: dict[str, dict[str, list[float]]]):
    """One single-frame utterance per item, the frame at the given angle (degrees) in the plane."""
    features, spans, speakers = [], [], []
    for spk, by_label in angles_by_speaker.items():
        for label, angles in by_label.items():
            for deg in angles:
                features.append(np.array([[np.cos(np.radians(deg)), np.sin(np.radians(deg))]]))
                spans.append([(0, 1, label)])
                speakers.append(spk)
    return features, spans, speakers


def test_aggregation_order():
    # cells (speaker, a, b, context, X speaker): contexts are averaged per (speaker, a, b), then
    # speakers per (a, b), then the (a, b) pairs: (mean(1/3, 1) + 0) / 2, where pooling the
    # speakers' cells would give 0.25 and pooling all cells 0.4
    cells = [("s1", "a", "b", "c1", "s1"), ("s1", "a", "b", "c2", "s1"), ("s1", "a", "b", "c3", "s1"),
             ("s2", "a", "b", "c1", "s2"), ("s1", "b", "a", "c1", "s1")]
    assert _aggregate(cells, [1.0, 0.0, 0.0, 1.0, 0.0]) == pytest.approx(1 / 3)
    assert _aggregate([], []) is None


def test_aggregation_end_to_end():
    # within s1, both A-X distances (60) exceed B-X (30): cell error 1 over 2 triplets; within s2,
    # A-X <= 20 < B-X >= 70: error 0 over 6 triplets. "b" cells hold one item, so (b, a) is never
    # scored. Speakers weigh equally: 0.5, where pooling the triplets would give 0.25.
    features, spans, speakers = one_frame_corpus({"s1": {"a": [0, 60], "b": [30]},
                                                  "s2": {"a": [0, 10, 20], "b": [90]}})
    result = abx_error(features, build_items(spans, speakers, context=False), across=False)
    assert result["error"] == pytest.approx(0.5) and result["num_pairs"] == 2 and result["num_triplets"] == 8
    # across, cells (A speaker, a, b, X speaker): (s1, a, b, s2) 0, (s1, a, b, s3) 1, (s1, b, a, s2) 0,
    # (s2, a, b, s1) 0, (s2, a, b, s3) 1, (s2, b, a, s1) 0; s3 has no "b" so is never A's speaker.
    # (a, b) -> 0.5, (b, a) -> 0: 0.25, where pooling the cells would give 1/3
    features, spans, speakers = one_frame_corpus({"s1": {"a": [0], "b": [30]}, "s2": {"a": [5], "b": [35]},
                                                  "s3": {"a": [25]}})
    result = abx_error(features, build_items(spans, speakers, context=False), across=True)
    assert result["error"] == pytest.approx(0.25) and result["num_pairs"] == 6


@pytest.mark.parametrize("context", [False, True], ids=["any", "triphone"])
def test_separated_categories_score_zero(context):
    spans, speakers = alignments(seed=4, num_utt=30, min_len=1)
    rng = np.random.default_rng(0)
    noisy = frame_features(spans, speakers, lambda label, spk: direction("sil abc".index(label)) +
                           0.01 * rng.normal(size=8))
    onehot = frame_features(spans, speakers, lambda label, spk: direction("sil abc".index(label)))
    items = build_items(spans, speakers, context=context)
    for features in (noisy, onehot):
        for across in (False, True):
            result = abx_error(features, items, across=across)
            assert result["num_pairs"] > 0 and result["error"] == 0.0


def test_identical_features_score_one_half():
    spans, speakers = alignments(seed=5)
    features = [np.full((segs[-1][1], 3), 0.7) for segs in spans]
    scores = abx_scores(features, spans, speakers)
    for key in ("abx_within", "abx_across", "abx_within_triphone", "abx_across_triphone"):
        assert scores[key] == 0.5


def test_speaker_only_features_do_not_discriminate_phones():
    spans, speakers = alignments(seed=6, num_utt=60, min_len=1)
    rng = np.random.default_rng(0)
    speaker_only = lambda _, spk: 3 * direction(int(spk[-1])) + rng.normal(size=8)  # noqa: E731
    features = frame_features(spans, speakers, speaker_only)
    items = build_items(spans, speakers, context=False)
    within, across = (abx_error(features, items, across=a)["error"] for a in (False, True))
    assert abs(within - 0.5) < 0.05
    assert across > 0.45


def test_no_valid_cell_gives_none():
    spans, speakers = alignments(seed=7, labels=("a",))
    features = [np.ones((segs[-1][1], 2)) for segs in spans]
    single = build_items(spans, speakers, context=False)
    assert abx_error(features, single, across=False) == abx_error_bruteforce(features, single, across=False)
    assert abx_error(features, single, across=False)["error"] is None
    spans, _ = alignments(seed=7)
    features = [np.ones((segs[-1][1], 2)) for segs in spans]
    one_speaker = build_items(spans, ["s"] * len(spans), context=False)
    assert abx_error(features, one_speaker, across=True)["error"] is None
    silent = [[(0, 3, "sil")], [(0, 2, "spn")]]
    scores = abx_scores([np.ones((3, 2)), np.ones((2, 2))], silent, ["s", "t"])
    assert scores["abx_within"] is None and scores["abx_across_triphone"] is None and scores["num_items"] == 0


def test_user_errors():
    spans, speakers = alignments(seed=8, num_utt=4)
    features = [np.ones((segs[-1][1], 2)) for segs in spans]
    items = build_items(spans, speakers, context=False)
    with pytest.raises(UserError):
        build_items(spans, speakers[:-1], context=False)
    with pytest.raises(UserError):
        build_items([[(0, 3, "a"), (2, 4, "b")]], ["s"], context=False)
    with pytest.raises(UserError):
        abx_error(features, items, across=False, distance="kl")
    with pytest.raises(UserError):
        abx_error([f[:1] for f in features], items, across=False)
    with pytest.raises(UserError):
        abx_error(features[:2], items, across=False)
    with pytest.raises(UserError):
        abx_error(features, items, across=False, max_items_per_cell=0)
