"""Training of the service's collaborative model from recorded event sequences (numpy/scipy).

Everything is deterministic (seeded randomized linear algebra, sorted vocabulary). The recipe
(``train_collaborative_model``, tuned on MovieLens validation by ``bench/movielens_offline.py``):

* index space = item2vec-style vectors for every item with events: windowed,
  distance-decayed co-occurrence counts (sparse) -> PPMI (context smoothing 0.75) ->
  randomized truncated SVD, ``U * s**0.5``, rows L2-normalised. Symmetric:
  ``context_vectors is item_vectors``. Cost grows with the number of distinct co-occurring
  pairs (at most ``2 * window`` per event) and with items x dim, not with items^2. The fused
  user vector is a weighted combination of these rows with the weights of
  ``weights_for(history)`` (strong recency: ``0.6**age`` over the last 50 events), queried
  by inner product.
* re-ranking = the full-rank next-item matrix ``transitions`` of
  :mod:`taxonomy.recommendation.transitions` over the ``rerank_max_items`` most frequent
  items (dense, so bounded); ``rerank`` re-scores the top fused candidates with it, weighting
  the history as the trainer weighted its contexts. Other items get no next-item score and
  are ranked by the fused score. Measured on MovieLens (bench/rerank_variants.py), a head
  of 1,000 of the 3,650 items loses 0.0006 NDCG@10 and no Recall@10, while EASE (what sparse
  EASE approximates) as the re-ranker loses 0.002 to 0.009 NDCG@10.
* items without events: with ``features`` (text or caller vectors), a ridge map from them
  to the vectors above, fitted on the items that have both, places the others.

The research trainers that only the benchmarks use (the reduced-rank transition space, the
stand-alone co-occurrence trainer) are in ``bench/research_trainers.py``.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TypeVar

import numpy as np
import numpy.typing as npt
import scipy.linalg
import scipy.sparse as sp

from taxonomy.recommendation.collaborative_model import (
    CollaborativeModel,
    Weighting,
    place_vectors,
    unit_rows,
)
from taxonomy.recommendation.transitions import (
    TransitionConfig,
    check_transition_config,
    fit_transitions,
    transition_weighting,
)

F32 = npt.NDArray[np.float32]
F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]
FloatT = TypeVar("FloatT", np.float32, np.float64)

PLACED_LENGTH = 0.9
"""Tuned on MovieLens with bench/cold_items.py --seed 1 --lengths 0.6 0.7 0.8 0.9 (reported on
seed 0): the length at which placed items' share of users' top 10 comes nearest their share of
events (0.9: 13.1 % against 9.8 %; 0.8: 3.9 %; unit length: 27.2 %)."""

_FEATURE_BLOCK = 50_000
"""Rows per block of the cold-item map's normal equations."""

_F64_SVD_MAX_ENTRIES = 32_000_000
"""(items x SVD width) up to which the randomized SVD runs in float64 (100,000 items at 320)."""

__all__ = [
    "CollaborativeConfig",
    "CooccurrenceConfig",
    "fit_feature_map",
    "train_collaborative_model",
]


@dataclass(frozen=True)
class CooccurrenceConfig:
    """Hyper-parameters of :func:`train_cooccurrence_vectors` (item2vec-style PPMI-SVD); defaults
    tuned on MovieLens validation."""

    dim: int = 256
    window: int = 5
    """Events up to this far apart in a sequence co-occur."""
    decay: float = 0.7
    """Co-occurrence weight ``decay**(distance-1)`` for two events ``distance`` apart."""
    shift: float = 1.0
    """PPMI shift ``log(shift)`` (1.0 = plain PPMI; word2vec's k negatives = ``shift=k``)."""
    context_smoothing: float = 0.75
    eig_power: float = 0.5
    """Vectors are ``U * s**eig_power``."""
    min_count: int = 1
    max_items: int | None = None
    """Vocabulary cap (most frequent items); ``None``: every item with events. Memory is
    O(non-zero co-occurrences + items x dim), so no cap is needed for 10^6 items."""
    power_iters: int = 4
    """Power iterations of the seeded randomized SVD."""
    seed: int = 0


@dataclass(frozen=True)
class CollaborativeConfig:
    """Hyper-parameters of :func:`train_collaborative_model` (tuned on MovieLens validation)."""

    vectors: CooccurrenceConfig = field(default_factory=CooccurrenceConfig)
    """The index space (item2vec-style PPMI-SVD)."""
    transitions: TransitionConfig | None = field(default_factory=TransitionConfig)
    """The re-ranking model (only its ``B`` is kept; ``dim`` is unused); ``None`` = no re-rank."""
    query_window: int = 50
    query_decay: float = 0.6
    """Fused-vector item weights: ``query_decay**age`` over the ``query_window`` newest events."""
    min_count: int = 1
    max_items: int | None = None
    """Cap on the items that get a vector (most frequent first); ``None``: every item with
    events, so a long-tail item can be retrieved."""
    rerank_max_items: int = 10_000
    """The re-ranker's next-item matrix covers only this many most frequent items: its solve is
    dense, O(n^3) time and about 4-5 n^2 float64 of memory (10,000 items: ~4 GB peak, a few
    minutes on 2 cores; 3,650 items: 1.15 GB, ~16 s). Other items are scored by the fused
    vector alone (their next-item score is 0)."""
    feature_l2: float = 1.0
    """Ridge penalty of the map from text or caller vectors to the collaborative space that
    places items without events (relative to the mean squared feature norm, so it does not
    depend on the feature scale)."""
    placed_length: float = PLACED_LENGTH
    """Length of a placed vector (learned ones have length 1), see
    :func:`taxonomy.recommendation.collaborative_model.place_vectors`."""
    feature_min_items: int = 20
    """Fit that map only when at least this many items have both a feature and a vector."""


def vocabulary(
    sequences: Sequence[Sequence[str]], min_count: int, max_items: int | None
) -> tuple[tuple[str, ...], dict[str, int]]:
    """Items seen at least ``min_count`` times (the ``max_items`` most frequent when capped),
    sorted by id."""
    counts = _counts(sequences)
    kept = [item for item, c in counts.items() if c >= min_count]
    if max_items is not None and len(kept) > max_items:
        kept.sort(key=lambda item: (-counts[item], item))
        kept = kept[:max_items]
    kept.sort()
    return tuple(kept), {item: k for k, item in enumerate(kept)}


def _counts(sequences: Sequence[Sequence[str]]) -> Counter[str]:
    counts: Counter[str] = Counter()
    for seq in sequences:
        counts.update(seq)
    return counts


def head_first_vocabulary(
    sequences: Sequence[Sequence[str]],
    min_count: int,
    head_items: int,
    max_items: int | None = None,
) -> tuple[tuple[str, ...], dict[str, int], int]:
    """Every item seen at least ``min_count`` times (the ``max_items`` most frequent when
    capped): the ``head_items`` most frequent first (sorted by id), then the rest (sorted by
    id); and the size of the head.

    The re-ranker's matrix covers the head only, so putting it first lets its rows be the
    model's first rows. When every item fits in the head this is :func:`vocabulary`.
    """
    counts = _counts(sequences)
    kept = [item for item, c in counts.items() if c >= min_count]
    if max_items is not None and len(kept) > max_items:
        kept.sort(key=lambda item: (-counts[item], item))
        kept = kept[:max_items]
    if len(kept) <= head_items:
        kept.sort()
        return tuple(kept), {item: k for k, item in enumerate(kept)}, len(kept)
    kept.sort(key=lambda item: (-counts[item], item))
    ordered = sorted(kept[:head_items]) + sorted(kept[head_items:])
    return tuple(ordered), {item: k for k, item in enumerate(ordered)}, head_items


def encode_sequences(
    sequences: Sequence[Sequence[str]],
    weights: Sequence[Sequence[float]] | None,
    index: dict[str, int],
) -> list[tuple[I64, F64]]:
    if weights is not None and len(weights) != len(sequences):
        raise ValueError("weights must have one entry per sequence")
    out: list[tuple[I64, F64]] = []
    for s, seq in enumerate(sequences):
        wseq = weights[s] if weights is not None else None
        if wseq is not None and len(wseq) != len(seq):
            raise ValueError(f"sequence {s}: {len(seq)} events but {len(wseq)} weights")
        rows: list[int] = []
        ws: list[float] = []
        for e, item in enumerate(seq):
            k = index.get(item)
            if k is None:
                continue
            rows.append(k)
            ws.append(1.0 if wseq is None else float(wseq[e]))
        out.append((np.asarray(rows, dtype=np.int64), np.asarray(ws, dtype=np.float64)))
    return out


def fix_signs(v: npt.NDArray[FloatT]) -> npt.NDArray[FloatT]:
    """Make each column's largest-magnitude entry positive (eigenvector sign is arbitrary)."""
    idx = np.argmax(np.abs(v), axis=0)
    signs = np.sign(v[idx, np.arange(v.shape[1])])
    signs[signs == 0] = 1.0
    v *= signs[None, :]
    return v


def orthonormalise(x: npt.NDArray[FloatT]) -> npt.NDArray[FloatT]:
    """Orthonormal basis of the columns of ``x`` via the eigen-decomposition of ``x'x`` (twice),
    in ``x``'s precision (the small eigen-problem in float64)."""
    floor = 1e-12 if x.dtype == np.float64 else 1e-6
    for _ in range(2):
        w, u = np.linalg.eigh((x.T @ x).astype(np.float64))
        w = np.maximum(w, floor * max(float(w.max()), 1e-300))
        x = x @ (u / np.sqrt(w)[None, :]).astype(x.dtype)
    return x


def _randomized_svd(
    mat: sp.csr_matrix, dim: int, power_iters: int, seed: int
) -> tuple[npt.NDArray[np.floating], F64]:
    """Leading left singular vectors (float64, or float32 for very many rows) and values of a
    sparse matrix (seeded, Halko et al.)."""
    n_rows, n_cols = mat.shape
    k = min(n_rows, n_cols, dim + max(16, dim // 4))
    # Above a few hundred thousand items the (items, k) blocks dominate memory (10^6 items:
    # 2.6 GB each in float64, and three are alive at once), so they are kept in float32 there;
    # below, float64 keeps the vectors the benchmarks were tuned with.
    dtype = np.float64 if n_rows * k <= _F64_SVD_MAX_ENTRIES else np.float32
    mat = mat.astype(dtype, copy=False)
    rng = np.random.default_rng(seed)
    q = orthonormalise(np.asarray(mat @ rng.standard_normal((n_cols, k)).astype(dtype)))
    for _ in range(power_iters):
        q = orthonormalise(np.asarray(mat.T @ q))
        q = orthonormalise(np.asarray(mat @ q))
    small = np.asarray((mat.T @ q).T)  # (k, n_cols) = q' mat
    if dtype == np.float64:
        u_small, s, _ = np.linalg.svd(small, full_matrices=False)
    else:
        # LAPACK's SVD of a (k, 10^6) block also builds its (k, 10^6) right factor and a
        # workspace as large: measured 9.1 GB RSS at 10^6 items. The left factor and the
        # values alone come from the (k, k) Gram matrix.
        eig, u_small = np.linalg.eigh((small @ small.T).astype(np.float64))
        order = np.argsort(-eig)
        u_small, s = u_small[:, order], np.sqrt(np.maximum(eig[order], 0.0))
    del small
    u: npt.NDArray[np.floating] = q @ u_small[:, :dim].astype(dtype)
    return u, s[:dim]


def _cooccurrence(
    encoded: list[tuple[I64, F64]], n_items: int, window: int, decay: float
) -> sp.csr_matrix:
    """Symmetric windowed co-occurrence counts, ``decay**(d-1) e_a e_b`` per pair ``d`` apart.

    One pass per distance over the concatenated sequences, each summed into a CSR matrix
    before the next: peak memory is about one distance's pairs plus the result, not every
    pair of every distance at once (10^8 entries at 10^7 events and window 5).
    """
    index_type = np.int32 if n_items < 2**31 else np.int64
    items = np.concatenate([i for i, _ in encoded] or [np.zeros(0, np.int64)]).astype(index_type)
    strength = np.concatenate([e for _, e in encoded] or [np.zeros(0)])
    lengths = np.fromiter((i.size for i, _ in encoded), dtype=np.int64, count=len(encoded))
    sequence = np.repeat(np.arange(lengths.size, dtype=np.int64), lengths)
    upper = sp.csr_matrix((n_items, n_items), dtype=np.float64)
    for d in range(1, window + 1):
        if items.size <= d:
            break
        same = np.flatnonzero(sequence[:-d] == sequence[d:])
        if same.size == 0:
            break
        a, b = items[same], items[same + d]
        w = (decay ** (d - 1)) * strength[same] * strength[same + d]
        part = sp.coo_matrix((w, (a, b)), shape=(n_items, n_items)).tocsr()
        del a, b, w, same
        upper = upper + part
        del part
    mat: sp.csr_matrix = (upper + upper.T).tocsr()
    mat.sum_duplicates()
    return mat


def ppmi_svd_vectors(encoded: list[tuple[I64, F64]], n_items: int, cfg: CooccurrenceConfig) -> F32:
    ppmi = _cooccurrence(encoded, n_items, cfg.window, cfg.decay)
    total = float(ppmi.data.sum())
    if total <= 0.0:
        raise ValueError("no co-occurrences: every sequence has a single event")
    row_sum = np.asarray(ppmi.sum(axis=1)).ravel()
    ctx = row_sum**cfg.context_smoothing
    ctx_p = ctx / ctx.sum()
    row_p = row_sum / total
    # PMI in place on the CSR arrays: one copy of the non-zeros, not the three of COO.
    rows = np.repeat(np.arange(n_items, dtype=ppmi.indices.dtype), np.diff(ppmi.indptr))
    data = ppmi.data
    np.log(data / total, out=data)
    data -= np.log(row_p)[rows]
    del rows
    data -= np.log(ctx_p)[ppmi.indices]
    data -= math.log(cfg.shift)
    data[data < 0] = 0.0
    ppmi.eliminate_zeros()
    dim = min(cfg.dim, n_items - 1)
    u, s = _randomized_svd(ppmi, dim, cfg.power_iters, cfg.seed)
    del ppmi
    order = np.argsort(-s)
    u = fix_signs(np.ascontiguousarray(u[:, order]))
    u *= (s[order] ** cfg.eig_power)[None, :].astype(u.dtype)
    norms = np.linalg.norm(u, axis=1, keepdims=True)
    u /= np.where(norms > 0, norms, 1.0)
    out: F32 = u.astype(np.float32)
    return out


def train_collaborative_model(
    sequences: Sequence[Sequence[str]],
    weights: Sequence[Sequence[float]] | None = None,
    config: CollaborativeConfig | None = None,
    features: tuple[Sequence[str], F32] | None = None,
) -> CollaborativeModel:
    """Train the service's collaborative model from time-ordered per-user item sequences.

    - ``item_vectors`` = ``context_vectors``: PPMI-SVD vectors (unit norm, symmetric; cosine or
      inner product) for every item with events. Fused user vector = sum of
      ``weights_for(history)`` x vectors (recency decay ``query_decay`` per event).
    - ``transitions``: the full-rank next-item matrix for
      :func:`taxonomy.recommendation.rerank.rerank` over the ``rerank_max_items`` most
      frequent items, which are the model's first rows; ``rerank_weights_for`` weighs the
      history as the transition trainer weighed its contexts.
    - ``feature_map``: with ``features`` (item ids and their text or caller vectors), a ridge
      map from those vectors to the collaborative ones, fitted on the items that have both;
      items in ``features`` without events are appended to the model with mapped vectors, and
      items upserted later can be placed with :meth:`CollaborativeModel.place`.

    ``weights`` (optional, aligned with ``sequences``) are per-event strengths.
    """
    cfg = config if config is not None else CollaborativeConfig()
    if cfg.transitions is not None:
        check_transition_config(cfg.transitions)
    item_ids, index, n_head = head_first_vocabulary(
        sequences, cfg.min_count, cfg.rerank_max_items, cfg.max_items
    )
    n_items = len(item_ids)
    if n_items < 2:
        raise ValueError("need at least two items")
    encoded = encode_sequences(sequences, weights, index)
    vec = ppmi_svd_vectors(encoded, n_items, cfg.vectors)
    transitions: F32 | None = None
    rerank_weighting: Weighting | None = None
    if cfg.transitions is not None:
        head = encoded if n_head == n_items else _restrict(encoded, n_head)
        b, _ = fit_transitions(head, n_head, cfg.transitions)
        del head
        transitions = b.astype(np.float32)
        del b
        rerank_weighting = transition_weighting(cfg.transitions)
    del encoded
    feature_map: F32 | None = None
    feature_scale = 1.0
    if features is not None:
        feature_map, feature_scale, cold_ids, cold_vectors = _place_cold(features, index, vec, cfg)
        if cold_ids:
            item_ids = item_ids + tuple(cold_ids)
            vec = np.concatenate([vec, cold_vectors])
    return CollaborativeModel(
        item_ids=item_ids,
        item_vectors=vec,
        context_vectors=vec,
        transitions=transitions,
        window=cfg.query_window,
        decay=cfg.query_decay,
        profile_weight=0.0,
        symmetric=True,
        rerank_weighting=rerank_weighting,
        feature_map=feature_map,
        feature_scale=feature_scale,
    )


def _restrict(encoded: list[tuple[I64, F64]], n_head: int) -> list[tuple[I64, F64]]:
    """The sequences with only the head's events (rows below ``n_head``), as the transition
    model saw them when the vocabulary was capped at the head."""
    out: list[tuple[I64, F64]] = []
    for items, e in encoded:
        keep = items < n_head
        out.append((items[keep], e[keep]))
    return out


def fit_feature_map(
    features: F32,
    vectors: F32,
    l2: float,
    feature_rows: I64 | None = None,
    vector_rows: I64 | None = None,
) -> F32:
    """Ridge map ``W = (X'X + l2 mean|x|^2 I)^-1 X'V`` from unit-normalised feature rows
    ``X`` (``features[feature_rows]``) to collaborative vectors ``V``
    (``vectors[vector_rows]``).

    The normal equations are summed over blocks of rows: converting all of a 10^6 x 384
    feature matrix to float64 at once took about 8 GB (measured peak 14.6 GB at 10^6 items).
    """
    f_rows = np.arange(features.shape[0]) if feature_rows is None else feature_rows
    v_rows = np.arange(vectors.shape[0]) if vector_rows is None else vector_rows
    gram = np.zeros((features.shape[1], features.shape[1]))
    rhs = np.zeros((features.shape[1], vectors.shape[1]))
    squared = 0.0
    for start in range(0, f_rows.size, _FEATURE_BLOCK):
        x = unit_rows(features[f_rows[start : start + _FEATURE_BLOCK]].astype(np.float64))
        gram += x.T @ x
        rhs += x.T @ vectors[v_rows[start : start + _FEATURE_BLOCK]].astype(np.float64)
        squared += float(np.sum(x * x))
    gram[np.diag_indices_from(gram)] += l2 * max(squared / max(f_rows.size, 1), 1e-12)
    w = scipy.linalg.solve(gram, rhs, assume_a="pos", check_finite=False)
    out: F32 = np.asarray(w, dtype=np.float32)
    return out


def _place_cold(
    features: tuple[Sequence[str], F32],
    index: dict[str, int],
    vectors: F32,
    cfg: CollaborativeConfig,
) -> tuple[F32 | None, float, list[str], F32]:
    feature_ids, matrix = features
    if len(feature_ids) != matrix.shape[0]:
        raise ValueError("features: one vector per item id")
    empty = np.zeros((0, vectors.shape[1]), dtype=np.float32)
    known = [(k, index[item]) for k, item in enumerate(feature_ids) if item in index]
    if len(known) < cfg.feature_min_items or matrix.ndim != 2 or matrix.shape[1] == 0:
        return None, 1.0, [], empty
    feature_rows = np.fromiter((k for k, _ in known), dtype=np.int64, count=len(known))
    model_rows = np.fromiter((r for _, r in known), dtype=np.int64, count=len(known))
    feature_map = fit_feature_map(matrix, vectors, cfg.feature_l2, feature_rows, model_rows)
    scale = cfg.placed_length
    seen: set[str] = set()
    cold: list[int] = []
    for k, item in enumerate(feature_ids):
        if item not in index and item not in seen:
            seen.add(item)
            cold.append(k)
    if not cold:
        return feature_map, scale, [], empty
    cold_vectors = place_vectors(matrix[cold], feature_map, scale)
    return feature_map, scale, [feature_ids[k] for k in cold], cold_vectors
