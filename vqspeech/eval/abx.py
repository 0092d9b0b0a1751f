"""ABX phone discriminability (the ZeroSpeech / Libri-light metric), vectorised.

An ABX triplet takes two items A and B of different phone categories and a third item X of A's
category; the triplet is an error when X is closer to B than to A: 1 if d(A, X) > d(B, X), 0.5 if
equal, 0 otherwise. Items are compared by dynamic time warping of their frames.

Protocols (``build_items``):

- any-context (Libri-light): an item is one phone occurrence, its own frames, no context condition;
- triphone (ZeroSpeech 2017): an item is a centre phone with its left and right neighbours, its
  frames span all three phones, and A, B, X must share the same (left, right) context.

Conditions (``abx_error``): *within* speaker, A, B, X come from one speaker and X is another item
of A's cell; *across* speakers, A and B come from one speaker and X from another.

Matched to facebookresearch/libri-light ``eval/eval_ABX.py``, ``eval/ABX_src/abx_iterators.py``,
``abx_group_computation.py`` and ``dtw.pyx``:

- a cell is (category, context, speaker); each is subsampled to ``max_items_per_cell`` items
  (``max_size_group``, default 10); across, each A cell draws at most ``max_x_across`` X speakers
  (default 5). Libri-light redraws a cell's sample at every use; here each cell and each A cell's
  X speakers are drawn once from ``numpy.random.default_rng(seed)``.
- within needs at least two items in A's cell (A != X). A scored cell is (a, b, context, speaker)
  within and (a, b, context, A/B speaker, X speaker) across; its error is the mean over its triplets.
- aggregation: within, the mean over contexts for each (speaker, a, b); across, the mean over
  (context, X speaker) jointly for each (A speaker, a, b); then the mean over speakers for each
  (a, b); then the mean over the ordered category pairs (a, b) (both orders count).
- frame distance ``angular``: arccos(cosine) / pi, cosine clipped to [-1, 1]; as libri-light's
  ``normalize_with_singularity``, a zero frame is at distance 1 from a non-zero one and 0 from
  another zero frame. Cosines are rounded to 1e-12 so that duplicated vectors (e.g. VQ code vectors)
  are at distance exactly 0 whatever the summation order. ``euclidean`` is on the raw frames.
- DTW with steps (1,0), (0,1), (1,1); the cumulative cost is divided by the length (in cells) of the
  optimal path, backtracked with libri-light's tie order: diagonal, then (i, j-1), then (i-1, j).
  The sequence distance of two items is the DTW with the earlier item (in sampled order) as rows;
  libri-light puts X as rows across, which differs only in the path length of tied paths.

Implementation: the distance of every item pair a scored cell needs is computed once, by DTW over
anti-diagonals vectorised across batches of padded, length-sorted pairs (frame distances come from
a table when the frames hold few distinct vectors, as one-hot discrete units do); each cell's
triplets are then compared at once as an [X, A, B] tensor. ``abx_error_bruteforce`` is the same
metric by plain loops, kept as the reference the tests check against.
"""

from __future__ import annotations

import functools
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from ..errors import UserError

DISTANCES = ("angular", "euclidean")


@dataclass(frozen=True)
class ItemSet:
    """ABX items, all arrays int [N]; category/context/speaker index the name tuples."""

    utt: np.ndarray
    start: np.ndarray
    end: np.ndarray
    category: np.ndarray
    context: np.ndarray
    speaker: np.ndarray
    categories: tuple[str, ...]
    contexts: tuple[str, ...]
    speakers: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.utt)


def build_items(
    spans: list[list[tuple[int, int, str]]],
    speakers: list[str],
    *,
    context: bool,
    ignore: tuple[str, ...] = ("sil", "spn"),
) -> ItemSet:
    """Items of the any-context (context=False) or triphone (context=True) protocol.

    spans: per utterance, time-ordered (start_frame, end_frame exclusive, label); speakers: per
    utterance. Empty spans, centre phones in ``ignore`` and excluded labels ("") are not items,
    nor are triphones with an excluded neighbour; a triphone's context key is "left+right" and its
    frames run from the left phone's start to the right's end.
    """
    if len(spans) != len(speakers):
        raise UserError(f"ABX needs one speaker per utterance, got {len(speakers)} for {len(spans)}.")
    rows: list[tuple[int, ...]] = []
    names: tuple[dict[str, int], dict[str, int], dict[str, int]] = ({}, {}, {})  # label, context, speaker -> index
    for u, (segs, spk) in enumerate(zip(spans, speakers, strict=True)):
        for k, (s, e, _) in enumerate(segs):
            if not 0 <= s <= e or (k and s < segs[k - 1][1]):
                raise UserError(f"Utterance {u} has a bad or overlapping phone span ({s}, {e}).")
        for k, (s, e, label) in enumerate(segs):
            if e == s or not label or label in ignore:
                continue
            if context and not (0 < k < len(segs) - 1 and segs[k - 1][2] and segs[k + 1][2]):
                continue
            key = f"{segs[k - 1][2]}+{segs[k + 1][2]}" if context else ""
            s, e = (segs[k - 1][0], segs[k + 1][1]) if context else (s, e)
            indices = tuple(n.setdefault(v, len(n)) for n, v in zip(names, (label, key, spk), strict=True))
            rows.append((u, s, e) + indices)
    arr = np.array(rows, dtype=np.int64).reshape(-1, 6)
    return ItemSet(*arr.T, *(tuple(n) for n in names))


def frame_distances(a: np.ndarray, b: np.ndarray, distance: str = "angular") -> np.ndarray:
    """Frame-to-frame distances: a [..., La, D], b [..., Lb, D] -> [..., La, Lb]."""
    dot = a @ np.swapaxes(b, -1, -2)
    sa, sb = np.einsum("...d,...d->...", a, a)[..., :, None], np.einsum("...d,...d->...", b, b)[..., None, :]
    if distance == "euclidean":
        return np.sqrt(np.maximum(sa + sb - 2 * dot, 0.0))
    za, zb = sa == 0, sb == 0
    cos = dot / np.sqrt(np.where(za, 1, sa) * np.where(zb, 1, sb))
    d = np.arccos(np.clip(np.round(cos, 12), -1.0, 1.0)) / np.pi
    return np.where(za | zb, (za != zb).astype(d.dtype), d) if za.any() or zb.any() else d


def dtw_batch(dist: np.ndarray, len_a: np.ndarray, len_b: np.ndarray) -> np.ndarray:
    """Path-length-normalised DTW of P padded pairs at once, over anti-diagonals.

    dist: [P, La, Lb] frame distances (entries past a pair's lengths are never read);
    len_a, len_b: int [P] true lengths -> [P] cost(len_a-1, len_b-1) / optimal path length.
    """
    P, La, Lb = dist.shape
    out, last = np.empty(P), len_a + len_b - 2
    # three rotating anti-diagonals: cell (i, k - i) of diagonal k at column i + 1 of buffer k % 3,
    # inf outside the diagonal (column 0 stands for i = -1); path lengths alongside
    cost, steps = np.full((3, P, La + 1), np.inf), np.zeros((3, P, La + 1))
    for k in range(La + Lb - 1):
        lo, hi = max(0, k - Lb + 1), min(k, La - 1) + 1
        i = np.arange(lo, hi)
        c, c1, c2 = cost[k % 3], cost[(k - 1) % 3], cost[(k - 2) % 3]
        n, n1, n2 = steps[k % 3], steps[(k - 1) % 3], steps[(k - 2) % 3]
        c[:, 1 : lo + 1] = np.inf
        if k == 0:
            c[:, 1], n[:, 1] = dist[:, 0, 0], 1
        else:
            cd, cl, cu = c2[:, lo:hi], c1[:, lo + 1 : hi + 1], c1[:, lo:hi]  # (i-1, j-1), (i, j-1), (i-1, j)
            best = np.minimum(np.minimum(cd, cl), cu)
            # libri-light's backtracking prefers the diagonal, then (i, j-1), then (i-1, j)
            n[:, lo + 1 : hi + 1] = 1 + np.where(
                cd == best, n2[:, lo:hi], np.where(cl == best, n1[:, lo + 1 : hi + 1], n1[:, lo:hi])
            )
            np.add(dist[:, i, k - i], best, out=c[:, lo + 1 : hi + 1])
        done = np.flatnonzero(last == k)
        out[done] = c[done, len_a[done]] / n[done, len_a[done]]
    return out


def _check(features, items: ItemSet, distance: str, max_items_per_cell: int, max_x_across: int) -> None:
    if distance not in DISTANCES:
        raise UserError(f"ABX distance must be one of {DISTANCES}, not {distance!r}.")
    if max_items_per_cell < 1 or max_x_across < 1:
        raise UserError(
            f"ABX needs at least 1 item per cell (`max_items_per_cell`, given {max_items_per_cell}) "
            f"and at least 1 X speaker (given {max_x_across})."
        )
    if any(np.ndim(f) != 2 for f in features) or len({np.shape(f)[1] for f in features}) > 1:
        raise UserError("ABX features must be 2-D [frames, dim] arrays of one common dim.")
    if not all(np.isfinite(f).all() for f in features):
        raise UserError("ABX features contain NaN or infinite values.")
    if len(items) and items.utt.max() >= len(features):
        raise UserError(f"ABX items refer to utterance {items.utt.max()}, beyond the {len(features)} given.")
    if len(items) and np.any(items.end > np.array([len(f) for f in features])[items.utt]):
        raise UserError("An ABX item ends after its utterance's last feature frame.")


def _sample(items: ItemSet, cap: int, max_x: int, seed: int, across: bool):
    """The shared random draw: kept item indices, sorted by (context, speaker, category, index), and
    for each A cell (category, context, speaker) its X speakers (across only)."""
    rng = np.random.default_rng(seed)
    ctx, spk, cat = items.context, items.speaker, items.category
    order = np.lexsort((rng.permutation(len(items)), cat, spk, ctx))
    starts = _runs(ctx[order], spk[order], cat[order])
    rank = np.arange(len(order)) - np.repeat(starts, np.diff(np.r_[starts, len(order)]))
    keep = order[rank < cap]
    keep = keep[np.lexsort((keep, cat[keep], spk[keep], ctx[keep]))]
    xspk = {}
    if across:
        present = defaultdict(list)  # (category, context) -> the speakers with that cell
        for i in keep[_runs(ctx[keep], spk[keep], cat[keep])]:
            present[cat[i], ctx[i]].append(spk[i])
        for (a, c), spks in present.items():
            for s in spks:
                other = [x for x in spks if x != s]
                if len(other) > max_x:
                    other = sorted(rng.choice(other, max_x, replace=False))
                xspk[a, c, s] = other
    return keep, xspk


def _runs(*keys: np.ndarray) -> np.ndarray:
    """Start indices of the runs of equal (key, ...) in sorted int key arrays [N]."""
    return np.flatnonzero(np.r_[len(keys[0]) > 0, np.any(np.diff(np.stack(keys)) != 0, 0)])


def _aggregate(cells: list[tuple], errors: Iterable[float]) -> float | None:
    """Libri-light's nested mean; cells are (speaker, a, b, condition...)."""
    if not cells:
        return None
    by_sab, by_ab = defaultdict(list), defaultdict(list)
    for key, e in zip(cells, errors, strict=True):
        by_sab[key[:3]].append(e)
    for (_, a, b), es in by_sab.items():
        by_ab[a, b].append(np.mean(es))
    return float(np.mean([np.mean(v) for v in by_ab.values()]))


def abx_error(
    features: list[np.ndarray],
    items: ItemSet,
    *,
    across: bool,
    distance: str = "angular",
    max_items_per_cell: int = 10,
    max_x_across: int = 5,
    seed: int = 0,
    chunk_elements: int = 1 << 22,
) -> dict:
    """ABX error rate, vectorised; see the module docstring for the protocol.

    features: per utterance [T_u, D]; items: from ``build_items``. Returns {"error": float or None
    when no cell can be scored, "num_pairs": scored (a, b, condition) cells, "num_category_pairs",
    "num_triplets", "num_items": items after subsampling}.
    """
    _check(features, items, distance, max_items_per_cell, max_x_across)
    keep, xspk = _sample(items, max_items_per_cell, max_x_across, seed, across)
    cat, ctx, spk = items.category[keep], items.context[keep], items.speaker[keep]
    start = _runs(ctx, spk, cat)
    size = np.diff(np.r_[start, len(keep)])
    c_cat, c_ctx, c_spk = cat[start], ctx[start], spk[start]
    # scored cells (A, B, X) as cell ids: B shares A's block (context, speaker); X is A within
    block, cell_of = defaultdict(list), {}
    for c in range(len(start)):
        block[c_ctx[c], c_spk[c]].append(c)
        cell_of[c_cat[c], c_ctx[c], c_spk[c]] = c
    triples = []
    for cells in block.values():
        for A in cells:
            key = (c_cat[A], c_ctx[A], c_spk[A])
            xs = [cell_of[key[0], key[1], s] for s in xspk.get(key, ())] if across else [A] * int(size[A] > 1)
            triples += [(A, B, X) for B in cells if B != A for X in xs]
    out = {"num_pairs": len(triples), "num_items": len(keep)}
    if not triples:
        return {"error": None, "num_category_pairs": 0, "num_triplets": 0, **out}
    tA, tB, tX = np.array(triples).T
    # item distances of each needed unordered cell pair (P <= Q) once, flat row-major blocks
    # [size P, size Q] from off[q]; within one cell only the upper triangle is computed, then mirrored
    C = len(start)
    lo, hi = np.minimum(tX, np.stack([tA, tB])), np.maximum(tX, np.stack([tA, tB]))
    pairs, q = np.unique((lo * C + hi).ravel(), return_inverse=True)
    qa, qb = q.reshape(2, -1)
    nr, nc = size[pairs // C], size[pairs % C]
    off = np.r_[0, np.cumsum(nr * nc)]
    pq = np.repeat(np.arange(len(pairs)), nr * nc)
    local = np.arange(off[-1]) - off[pq]
    pr, pc = local // nc[pq], local % nc[pq]
    same = (pairs // C == pairs % C)[pq]
    todo = ~same | (pr < pc)
    D = np.full(off[-1], np.nan)
    D[todo] = _item_distances(
        features,
        items,
        keep,
        start[pairs[pq[todo]] // C] + pr[todo],
        start[pairs[pq[todo]] % C] + pc[todo],
        distance,
        chunk_elements,
    )
    mirror = same & (pr > pc)
    D[mirror] = D[off[pq[mirror]] + pc[mirror] * nc[pq[mirror]] + pr[mirror]]
    # triplet comparisons per scored cell, in chunks of cells sorted by their largest cell
    order = np.argsort(np.maximum(size[tX], np.maximum(size[tA], size[tB])), kind="stable")
    errors, m = np.empty(len(triples)), size.max()
    num_trip = size[tX] * (size[tA] - (tX == tA)) * size[tB]
    step = max(1, chunk_elements // m**3)
    for i in range(0, len(order), step):
        t = order[i : i + step]
        mc = max(size[tX[t]].max(), size[tA[t]].max(), size[tB[t]].max())
        dxa = _block(D, off, nr, nc, qa[t], tX[t] > tA[t], mc)
        dxb = _block(D, off, nr, nc, qb[t], tX[t] > tB[t], mc)
        a, b = dxa[:, :, :, None], dxb[:, :, None, :]  # NaN pads and the X = A diagonal count as neither
        score = ((a > b) + 0.5 * (a == b)).sum((1, 2, 3))
        errors[t] = score / num_trip[t]
    keys = list(zip(c_spk[tA], c_cat[tA], c_cat[tB], c_ctx[tA], c_spk[tX], strict=True))
    return {
        "error": _aggregate(keys, errors),
        "num_category_pairs": len(set(zip(c_cat[tA], c_cat[tB], strict=True))),
        "num_triplets": int(num_trip.sum()),
        **out,
    }


def _block(D, off, nr, nc, q, flip, mc) -> np.ndarray:
    """Distances [T, mc, mc] from X items (rows) to another cell's items, NaN-padded; blocks stored
    with X's cell as columns (flip) are read transposed."""
    x, y = np.arange(mc)[None, :, None], np.arange(mc)[None, None, :]
    f = flip[:, None, None]
    r, c, q = np.where(f, y, x), np.where(f, x, y), q[:, None, None]
    valid = (r < nr[q]) & (c < nc[q])
    return np.where(valid, D[np.where(valid, off[q] + r * nc[q] + c, 0)], np.nan)


def _item_distances(features, items, keep, rows, cols, distance, chunk_elements) -> np.ndarray:
    """DTW distance of sampled items keep[rows[p]] (as rows) and keep[cols[p]] -> [P]."""
    lengths = items.end[keep] - items.start[keep]
    used = np.unique(items.utt[keep])
    offset = np.r_[0, np.cumsum([len(features[u]) for u in used])][np.searchsorted(used, items.utt[keep])]
    offset += items.start[keep]
    table, codes = _distinct_table([features[u] for u in used], distance)
    frames = np.concatenate([features[u] for u in used]) if table is None else None
    la, lb = lengths[rows], lengths[cols]
    order = np.argsort(np.maximum(la, lb), kind="stable")
    out, dim, i = np.empty(len(rows)), 0 if frames is None else frames.shape[1], 0

    def fits(p: int) -> int:  # pairs per chunk when padded to pair p's lengths
        L = max(la[p], lb[p])
        return max(1, chunk_elements // (L * (2 * dim + 4 * L)))

    while i < len(order):
        n = fits(order[min(i + fits(order[i]), len(order)) - 1])  # sized by its longest pair
        t = order[i : i + n]
        ia = offset[rows[t], None] + np.minimum(np.arange(la[t].max()), la[t, None] - 1)
        ib = offset[cols[t], None] + np.minimum(np.arange(lb[t].max()), lb[t, None] - 1)
        if frames is not None:  # no table of distinct vectors
            dist = frame_distances(frames[ia].astype(np.float64), frames[ib].astype(np.float64), distance)
        else:
            dist = table[codes[ia][:, :, None], codes[ib][:, None, :]]
        out[t] = dtw_batch(dist, la[t], lb[t])
        i += n
    return out


def _distinct_table(feats: list[np.ndarray], distance: str, limit: int = 2048):
    """Discrete units: if the frames (concatenated [N, D]) hold at most ``limit`` distinct vectors,
    return (distances between them [U, U], vector index of each frame [N]), else (None, None)."""
    probe = np.random.default_rng(0).normal(size=feats[0].shape[1])
    keys = np.concatenate([f.astype(np.float64) @ probe for f in feats])
    _, first, codes = np.unique(keys, return_index=True, return_inverse=True)
    if len(first) > limit:
        return None, None
    starts = np.cumsum([0] + [len(f) for f in feats])
    u = np.searchsorted(starts, first, side="right") - 1
    distinct = np.stack([feats[k][j] for k, j in zip(u, first - starts[u], strict=True)]).astype(np.float64)
    # a projection key is not a proof: any two distinct vectors sharing one fall back to the general path
    if not all(np.array_equal(f, distinct[codes[a:b]]) for f, a, b in zip(feats, starts[:-1], starts[1:], strict=True)):
        return None, None
    return frame_distances(distinct, distinct, distance), codes


def dtw_reference(dist: np.ndarray) -> float:
    """Plain DTW of one [N, M] frame-distance matrix, a line-by-line port of libri-light's _dtw."""
    N, M = dist.shape
    cost = np.empty((N, M))
    cost[0, 0] = dist[0, 0]
    for i in range(1, N):
        cost[i, 0] = dist[i, 0] + cost[i - 1, 0]
    for j in range(1, M):
        cost[0, j] = dist[0, j] + cost[0, j - 1]
    for i in range(1, N):
        for j in range(1, M):
            cost[i, j] = dist[i, j] + min(cost[i - 1, j], cost[i - 1, j - 1], cost[i, j - 1])
    i, j, length = N - 1, M - 1, 1
    while i > 0 and j > 0:
        up, left, diag = cost[i - 1, j], cost[i, j - 1], cost[i - 1, j - 1]
        if diag <= left and diag <= up:
            i, j = i - 1, j - 1
        elif left <= up:
            j -= 1
        else:
            i -= 1
        length += 1
    return cost[N - 1, M - 1] / (length + i + j)


def abx_error_bruteforce(
    features: list[np.ndarray],
    items: ItemSet,
    *,
    across: bool,
    distance: str = "angular",
    max_items_per_cell: int = 10,
    max_x_across: int = 5,
    seed: int = 0,
) -> dict:
    """The same metric by explicit triplet loops and per-pair DTW: slow, a reference for tests."""
    _check(features, items, distance, max_items_per_cell, max_x_across)
    keep, xspk = _sample(items, max_items_per_cell, max_x_across, seed, across)
    rank = {int(i): r for r, i in enumerate(keep)}
    cells = defaultdict(list)
    for i in keep:
        cells[items.category[i], items.context[i], items.speaker[i]].append(int(i))

    @functools.cache
    def d(x: int, y: int) -> float:
        if rank[x] > rank[y]:
            return d(y, x)
        fx, fy = (features[items.utt[k]][items.start[k] : items.end[k]].astype(np.float64) for k in (x, y))
        return dtw_reference(frame_distances(fx, fy, distance))

    keys, errors, num_trip = [], [], 0
    for (a, c, s), A in cells.items():
        for (b, c2, s2), B in cells.items():
            if b == a or c2 != c or s2 != s:
                continue
            for sx in xspk.get((a, c, s), []) if across else [s] * (len(A) > 1):
                trip = [(x, y, z) for x in cells[a, c, sx] for y in A if y != x for z in B]
                errs = [1.0 if d(y, x) > d(z, x) else 0.5 if d(y, x) == d(z, x) else 0.0 for x, y, z in trip]
                keys.append((s, a, b, c, sx))
                errors.append(sum(errs) / len(errs))
                num_trip += len(trip)
    return {
        "error": _aggregate(keys, errors),
        "num_pairs": len(keys),
        "num_triplets": num_trip,
        "num_category_pairs": len({k[1:3] for k in keys}),
        "num_items": len(keep),
    }


def abx_scores(
    features: list[np.ndarray],
    spans: list[list[tuple[int, int, str]]],
    speakers: list[str],
    *,
    ignore: tuple[str, ...] = ("sil", "spn"),
    **kw,
) -> dict:
    """ABX within/across speakers, any-context (un-suffixed keys) and triphone ("_triphone").

    kw go to ``abx_error``. Also returns "num_items[_triphone]" (all items) and "num_pairs_<key>".
    """
    out = {}
    for suffix, context in (("", False), ("_triphone", True)):
        items = build_items(spans, speakers, context=context, ignore=ignore)
        out[f"num_items{suffix}"] = len(items)
        for mode in ("within", "across"):
            res = abx_error(features, items, across=mode == "across", **kw)
            out[f"abx_{mode}{suffix}"] = res["error"]
            out[f"num_pairs_{mode}{suffix}"] = res["num_pairs"]
    return out
