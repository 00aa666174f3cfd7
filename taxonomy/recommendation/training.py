"""Training of the service's collaborative model from recorded event sequences (numpy/scipy).

Everything is deterministic (seeded randomized linear algebra, sorted vocabulary). The recipe
(``train_collaborative_model``, tuned on MovieLens validation by ``bench/movielens_offline.py``):

* index space = item2vec-style vectors: windowed, distance-decayed co-occurrence counts
  -> PPMI (context smoothing 0.75) -> randomized truncated SVD, ``U * s**0.5``, rows
  L2-normalised. Symmetric: ``context_vectors is item_vectors``. The fused user vector is a
  weighted combination of these rows with the weights of ``weights_for(history)`` (strong
  recency: ``0.6**age`` over the last 50 events), queried by inner product.
* re-ranking = the full-rank next-item matrix ``transitions`` of
  :mod:`taxonomy.recommendation.transitions`; ``rerank`` re-scores the top fused candidates
  with it, weighting the history as the trainer weighted its contexts.

The research trainers that only the benchmarks use (the reduced-rank transition space, the
stand-alone co-occurrence trainer) are in ``bench/research_trainers.py``.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt
import scipy.sparse as sp

from taxonomy.recommendation.collaborative_model import CollaborativeModel, Weighting
from taxonomy.recommendation.transitions import (
    TransitionConfig,
    check_transition_config,
    fit_transitions,
    transition_weighting,
)

F32 = npt.NDArray[np.float32]
F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]

__all__ = [
    "CollaborativeConfig",
    "CooccurrenceConfig",
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
    max_items: int = 50_000
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
    max_items: int = 10_000
    """Vocabulary cap (most frequent items): the transition solve is dense, O(n^3) time and about
    4-5 n^2 float64 of memory (estimate for 10,000 items: ~4 GB peak, a few minutes on 2 cores;
    measured for 3,650 items: 1.15 GB peak RSS, ~16 s single-threaded)."""


def vocabulary(
    sequences: Sequence[Sequence[str]], min_count: int, max_items: int
) -> tuple[tuple[str, ...], dict[str, int]]:
    counts: Counter[str] = Counter()
    for seq in sequences:
        counts.update(seq)
    kept = [item for item, c in counts.items() if c >= min_count]
    if len(kept) > max_items:
        kept.sort(key=lambda item: (-counts[item], item))
        kept = kept[:max_items]
    kept.sort()
    return tuple(kept), {item: k for k, item in enumerate(kept)}


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


def fix_signs(v: F64) -> F64:
    """Make each column's largest-magnitude entry positive (eigenvector sign is arbitrary)."""
    idx = np.argmax(np.abs(v), axis=0)
    signs = np.sign(v[idx, np.arange(v.shape[1])])
    signs[signs == 0] = 1.0
    out: F64 = v * signs[None, :]
    return out


def orthonormalise(x: F64) -> F64:
    """Orthonormal basis of the columns of ``x`` via the eigen-decomposition of ``x'x`` (twice)."""
    for _ in range(2):
        w, u = np.linalg.eigh(x.T @ x)
        w = np.maximum(w, 1e-12 * max(float(w.max()), 1e-300))
        x = x @ (u / np.sqrt(w)[None, :])
    return x


def _randomized_svd(mat: sp.csr_matrix, dim: int, power_iters: int, seed: int) -> tuple[F64, F64]:
    """Leading left singular vectors and values of a sparse matrix (seeded, Halko et al.)."""
    n_rows, n_cols = mat.shape
    k = min(n_rows, n_cols, dim + max(16, dim // 4))
    rng = np.random.default_rng(seed)
    q = orthonormalise(np.asarray(mat @ rng.standard_normal((n_cols, k))))
    for _ in range(power_iters):
        q = orthonormalise(np.asarray(mat.T @ q))
        q = orthonormalise(np.asarray(mat @ q))
    small = np.asarray((mat.T @ q).T)  # (k, n_cols) = q' mat
    u_small, s, _ = np.linalg.svd(small, full_matrices=False)
    return q @ u_small[:, :dim], s[:dim]


def _cooccurrence(
    encoded: list[tuple[I64, F64]], n_items: int, window: int, decay: float
) -> sp.csr_matrix:
    rows: list[I64] = []
    cols: list[I64] = []
    vals: list[F64] = []
    for items, e in encoded:
        n = int(items.size)
        for d in range(1, min(window, n - 1) + 1):
            a, b = items[:-d], items[d:]
            w = (decay ** (d - 1)) * e[:-d] * e[d:]
            rows.extend((a, b))
            cols.extend((b, a))
            vals.extend((w, w))
    if not rows:
        return sp.csr_matrix((n_items, n_items), dtype=np.float64)
    mat = sp.csr_matrix(
        (np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))),
        shape=(n_items, n_items),
        dtype=np.float64,
    )
    mat.sum_duplicates()
    return mat


def ppmi_svd_vectors(encoded: list[tuple[I64, F64]], n_items: int, cfg: CooccurrenceConfig) -> F32:
    co = _cooccurrence(encoded, n_items, cfg.window, cfg.decay).tocoo()
    total = float(co.data.sum())
    if total <= 0.0:
        raise ValueError("no co-occurrences: every sequence has a single event")
    row_sum = np.asarray(co.sum(axis=1)).ravel()
    ctx = row_sum**cfg.context_smoothing
    ctx_p = ctx / ctx.sum()
    row_p = row_sum / total
    pmi = np.log(co.data / total) - np.log(row_p[co.row]) - np.log(ctx_p[co.col])
    pmi -= math.log(cfg.shift)
    keep = pmi > 0
    ppmi = sp.csr_matrix(
        (pmi[keep], (co.row[keep], co.col[keep])), shape=(n_items, n_items), dtype=np.float64
    )
    dim = min(cfg.dim, n_items - 1)
    u, s = _randomized_svd(ppmi, dim, cfg.power_iters, cfg.seed)
    order = np.argsort(-s)
    u = fix_signs(np.ascontiguousarray(u[:, order]))
    vec = u * (s[order] ** cfg.eig_power)[None, :]
    norms = np.linalg.norm(vec, axis=1, keepdims=True)
    out: F32 = (vec / np.where(norms > 0, norms, 1.0)).astype(np.float32)
    return out


def train_collaborative_model(
    sequences: Sequence[Sequence[str]],
    weights: Sequence[Sequence[float]] | None = None,
    config: CollaborativeConfig | None = None,
) -> CollaborativeModel:
    """Train the service's collaborative model from time-ordered per-user item sequences.

    - ``item_vectors`` = ``context_vectors``: PPMI-SVD vectors (unit norm, symmetric; cosine or
      inner product). Fused user vector = sum of ``weights_for(history)`` x vectors (recency
      decay ``query_decay`` per event).
    - ``transitions``: the full-rank next-item matrix for
      :func:`taxonomy.recommendation.rerank.rerank`, which weighs the history with
      ``rerank_weights_for`` (the transition trainer's context).

    ``weights`` (optional, aligned with ``sequences``) are per-event strengths.
    """
    cfg = config if config is not None else CollaborativeConfig()
    if cfg.transitions is not None:
        check_transition_config(cfg.transitions)
    item_ids, index = vocabulary(sequences, cfg.min_count, cfg.max_items)
    n_items = len(item_ids)
    if n_items < 2:
        raise ValueError("need at least two items")
    encoded = encode_sequences(sequences, weights, index)
    vec = ppmi_svd_vectors(encoded, n_items, cfg.vectors)
    transitions: F32 | None = None
    rerank_weighting: Weighting | None = None
    if cfg.transitions is not None:
        b, _ = fit_transitions(encoded, n_items, cfg.transitions)
        transitions = b.astype(np.float32)
        rerank_weighting = transition_weighting(cfg.transitions)
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
    )
