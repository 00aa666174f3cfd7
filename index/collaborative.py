"""Collaborative item vectors trained from recorded event sequences (pure numpy/scipy).

Everything is deterministic (seeded randomized linear algebra, sorted vocabulary).

Service recipe: ``train_collaborative_model`` (tuned on MovieLens validation, see
``bench/movielens_offline.py``)
    * index space = item2vec-style vectors: windowed, distance-decayed co-occurrence counts
      -> PPMI (context smoothing 0.75) -> randomized truncated SVD, ``U * s**0.5``, rows
      L2-normalised. Symmetric: ``context_vectors is item_vectors``. The fused user vector is a
      weighted combination of these rows with the weights of ``weights_for(history)`` (strong
      recency: ``0.6**age`` over the last 50 events), queried by cosine / inner product.
      Defaults: 256 dimensions, co-occurrence window 5 with distance decay 0.7.
    * re-ranking = the full-rank next-item matrix ``transitions`` of the transition model below;
      ``index.rerank`` re-scores the top-K fused candidates with it, weighting the history with
      ``rerank_weights_for(history)`` (the transition model's own context weighting).

Transition model (``train_transition_vectors``; also used for ``transitions`` above)
    A linear next-item model fitted in closed form (ridge regression, in the spirit of SLIT /
    SLIST, Choi et al., WWW 2021). For every event ``t`` of every user sequence the *context* is
    a weighted bag of the user's earlier events and the *target* is the event itself:

        context_t = sum_{k<t} e_k * (decay**(t-1-k) [t-k <= window] + beta / m_t**power [t-k <= L])

    (``e_k`` = optional per-event weight, ``m_t = min(t, L)`` = profile size, ``L`` =
    ``profile_window``). ``B = (S'S + l2 I)^-1 S'T`` maps a context to next-item scores; the
    same weighting of a user's history is the query: ``score(j) = sum_i a_i B[i, j]``.

    ``train_transition_vectors`` also factorises ``B`` by reduced-rank regression (top ``dim``
    eigenvectors ``V`` of ``B' S'S B``, seeded randomized subspace iteration):
    ``B_d = (B V) V'``. That space is asymmetric: user vectors are sums of ``context_vectors``
    (``B V``), the index holds ``item_vectors`` (``V`` plus one coordinate that makes every row
    unit norm, the inner-product -> cosine reduction, so that ``u . item_vectors[j]`` equals
    ``sum_i a_i B_d[i, j]`` and cosine ranks like inner product). Do not L2-normalise context
    vectors before combining them. On MovieLens this space retrieves worse than the
    co-occurrence space (see the benchmark), hence the recipe above.

Cost: the transition solve is dense, O(n_items^3) time and O(n_items^2) memory (``max_items``
caps the vocabulary at the most frequent items); accumulation is O(sum of n_u^2 * window).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

import numpy as np
import numpy.typing as npt
import scipy.linalg
import scipy.sparse as sp

F32 = npt.NDArray[np.float32]
F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]

__all__ = [
    "CollaborativeConfig",
    "CollaborativeModel",
    "CooccurrenceConfig",
    "TransitionConfig",
    "Weighting",
    "context_weights",
    "train_collaborative_model",
    "train_cooccurrence_vectors",
    "train_transition_vectors",
]


@dataclass(frozen=True)
class TransitionConfig:
    """Hyper-parameters of :func:`train_transition_vectors` (defaults tuned on MovieLens)."""

    dim: int = 256
    """Rank of the factorisation; vectors have ``dim + 1`` coordinates."""
    window: int = 20
    """Recent-context window in events."""
    decay: float = 0.8
    """Per-event decay inside the window (the newest earlier event has weight 1)."""
    profile_weight: float = 2.0
    """``beta``: weight of the long-term profile (all earlier events within ``profile_window``)."""
    profile_power: float = 0.5
    """Profile item weight is ``beta / m**profile_power`` for a profile of ``m`` events."""
    profile_window: int | None = None
    """Profile covers at most this many most recent earlier events (``None`` = all)."""
    l2: float = 100.0
    """Ridge penalty of the regression."""
    max_sequence_length: int | None = None
    """Train on at most the last this-many events of each sequence (bounds cost; ``None`` = all)."""
    min_count: int = 1
    """Items seen fewer times are left out of the vocabulary."""
    max_items: int = 20_000
    """Keep at most the this-many most frequent items (the solve is dense, O(n_items^3))."""
    keep_transitions: bool = True
    """Keep the full-rank matrix ``B`` (n_items^2 float32) for exact re-ranking."""
    power_iters: int = 4
    """Subspace iterations of the randomized eigen-solver of the factorisation."""
    seed: int = 0


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
class CollaborativeModel:
    """Item vectors for the fused-vector index plus what re-ranking needs.

    ``item_vectors[k]`` and ``context_vectors[k]`` belong to ``item_ids[k]``.
    """

    item_ids: tuple[str, ...]
    item_vectors: F32
    """Index-side vectors, unit L2 norm, shape (n_items, dim')."""
    context_vectors: F32
    """Query-side vectors: a user vector is a weighted sum of these rows."""
    transitions: F32 | None
    """Full-rank next-item matrix ``B`` (row = context item, column = candidate), or ``None``."""
    window: int = 10
    """``window`` .. ``profile_window``: the query weighting of :meth:`weights_for` (the item
    weights of the fused user vector), see :func:`context_weights`."""
    decay: float = 0.85
    profile_weight: float = 0.0
    profile_power: float = 0.5
    profile_window: int | None = None
    symmetric: bool = False
    """``context_vectors`` equal ``item_vectors`` (co-occurrence space)."""
    rerank_weighting: Weighting | None = None
    """History weighting of the exact ``transitions`` scores (``None``: the query weighting)."""
    _index: dict[str, int] = field(default_factory=dict, repr=False, compare=False)

    def __post_init__(self) -> None:
        self._index.update({item: k for k, item in enumerate(self.item_ids)})

    @property
    def dim(self) -> int:
        return int(self.item_vectors.shape[1])

    def truncated(self, dim: int) -> CollaborativeModel:
        """The same model with a rank-``dim`` factorisation (leading eigen-directions).

        Needs ``transitions``; symmetric (co-occurrence) models are cut to ``dim`` columns and
        re-normalised.
        """
        if dim >= self.dim - (0 if self.symmetric else 1):
            return self
        if self.symmetric:
            vec = self.item_vectors[:, :dim].astype(np.float64)
            norms = np.linalg.norm(vec, axis=1, keepdims=True)
            vec32 = (vec / np.where(norms > 0, norms, 1.0)).astype(np.float32)
            item, ctx = vec32, vec32
        else:
            if self.transitions is None:
                raise ValueError("truncating an asymmetric model needs its transitions")
            v = self.item_vectors[:, :dim].astype(np.float64)
            item, ctx = _unit_index_vectors(v, self.transitions.astype(np.float64) @ v)
        return replace(self, item_vectors=item, context_vectors=ctx, _index={})

    def index_of(self, item_id: str) -> int | None:
        """Row of ``item_id`` or ``None`` when the item has no vector."""
        return self._index.get(item_id)

    @property
    def query_weighting(self) -> Weighting:
        """How :meth:`weights_for` weighs a history for the fused user vector."""
        return Weighting(
            self.window, self.decay, self.profile_weight, self.profile_power, self.profile_window
        )

    def weights_for(
        self, history: Sequence[str], event_weights: Sequence[float] | None = None
    ) -> dict[int, float]:
        """Per-row query weights of a time-ordered history for the fused user vector.

        Unknown items are skipped; repeated items accumulate.
        """
        return self._weights(self.query_weighting, history, event_weights)

    def rerank_weights_for(
        self, history: Sequence[str], event_weights: Sequence[float] | None = None
    ) -> dict[int, float]:
        """Per-row weights of a time-ordered history for the exact ``transitions`` scores
        (the transition trainer's context weighting)."""
        weighting = self.rerank_weighting or self.query_weighting
        return self._weights(weighting, history, event_weights)

    def _weights(
        self, weighting: Weighting, history: Sequence[str], event_weights: Sequence[float] | None
    ) -> dict[int, float]:
        pos = weighting.weights(len(history))
        if event_weights is not None:
            pos = pos * np.asarray(event_weights, dtype=np.float64)
        out: dict[int, float] = {}
        for item, w in zip(history, pos.tolist(), strict=True):
            row = self._index.get(item)
            if row is not None and w != 0.0:
                out[row] = out.get(row, 0.0) + float(w)
        return out

    def user_vector(
        self, history: Sequence[str], event_weights: Sequence[float] | None = None
    ) -> F32:
        """Query vector of a time-ordered history: sum of weighted ``context_vectors`` rows."""
        weights = self.weights_for(history, event_weights)
        u = np.zeros(self.context_vectors.shape[1], dtype=np.float64)
        if weights:
            rows = np.fromiter(weights.keys(), dtype=np.int64)
            w = np.fromiter(weights.values(), dtype=np.float64)
            u = w @ self.context_vectors[rows].astype(np.float64)
        return u.astype(np.float32)


@dataclass(frozen=True)
class Weighting:
    """A history weighting, see :func:`context_weights`."""

    window: int
    decay: float
    profile_weight: float = 0.0
    profile_power: float = 0.5
    profile_window: int | None = None

    def weights(self, n: int) -> F64:
        return context_weights(
            n,
            window=self.window,
            decay=self.decay,
            profile_weight=self.profile_weight,
            profile_power=self.profile_power,
            profile_window=self.profile_window,
        )


def context_weights(
    n: int,
    *,
    window: int,
    decay: float,
    profile_weight: float = 0.0,
    profile_power: float = 0.5,
    profile_window: int | None = None,
) -> F64:
    """Weights of the ``n`` events of a time-ordered history (oldest first) as one query.

    Recency part: ``decay**age`` for the ``window`` newest events (age 0 = newest). Profile part:
    ``profile_weight / m**profile_power`` for each of the ``m`` newest events in the profile
    window. This is exactly the context a training row uses for the event that follows.
    """
    w = np.zeros(n, dtype=np.float64)
    if n == 0:
        return w
    age = np.arange(n - 1, -1, -1, dtype=np.float64)
    recent = age < window
    w[recent] += decay ** age[recent]
    if profile_weight > 0.0:
        m = n if profile_window is None else min(n, profile_window)
        w[n - m :] += profile_weight / float(m) ** profile_power
    return w


# ---------------------------------------------------------------------------------------------
# Vocabulary


def _vocabulary(
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


def _encode(
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


# ---------------------------------------------------------------------------------------------
# Transition model


_DENSE_GRAM_MAX = 200


def _sequence_blocks(n: int, e: F64, cfg: TransitionConfig) -> tuple[F64, F64]:
    """Gram ``S'S`` (n, n) and context matrix ``S`` (n-1, n) of one sequence, by position.

    Row ``t-1`` of ``S`` is the context of target position ``t``. ``S = R + P`` with a banded
    recency part ``R`` and a profile part ``P`` (``P[t-1, k] = d_t`` for ``t-L <= k < t``), so the
    Gram is ``R'S + (R'P)' + P'P`` where ``P'P`` has a prefix-sum closed form: O(n^2 W), not O(n^3).
    """
    t = np.arange(1, n, dtype=np.int64)
    k = np.arange(n, dtype=np.int64)
    gap = t[:, None] - k[None, :]  # t - k, >= 1 for earlier events
    lp = n if cfg.profile_window is None else cfg.profile_window
    use_profile = cfg.profile_weight > 0.0
    d = cfg.profile_weight / np.minimum(t, lp).astype(np.float64) ** cfg.profile_power
    rec_mask = (gap >= 1) & (gap <= cfg.window)
    s = np.where(rec_mask, cfg.decay ** np.clip(gap - 1, 0, None), 0.0)
    prof = np.where((gap >= 1) & (gap <= lp), d[:, None], 0.0) if use_profile else None
    if n <= _DENSE_GRAM_MAX:  # small: one dense product is cheapest
        if prof is not None:
            s += prof
        gram = s.T @ s
    else:  # large: banded recency part, closed-form profile part
        rec = sp.csr_matrix(s)
        gram = np.asarray((rec.T @ rec).toarray())
        if prof is not None:
            s += prof
            cross = np.asarray(rec.T @ prof)
            # P'P[k, k'] = sum of d_t^2 over max(k, k') < t <= min(min(k, k') + L, n - 1)
            cs = np.concatenate([[0.0], np.cumsum(d * d)])  # cs[j] = sum_{t<=j} d_t^2
            hi = np.minimum(np.minimum.outer(k, k) + lp, n - 1)
            lo = np.maximum.outer(k, k)
            pp = np.where(hi > lo, cs[np.minimum(hi, n - 1)] - cs[np.minimum(lo, n - 1)], 0.0)
            gram += cross + cross.T + pp
    ew = e[None, :]
    return gram * ew * e[:, None], s * ew


def _accumulate(
    encoded: list[tuple[I64, F64]], n_items: int, cfg: TransitionConfig
) -> tuple[F64, F64]:
    """Gram ``S'S`` and cross ``S'T`` summed over sequences (no penalty), by item."""
    size = n_items * n_items
    gram = np.zeros(size, dtype=np.float64)
    cross = np.zeros(size, dtype=np.float64)
    pending: list[tuple[I64, F64, I64, F64]] = []
    pending_size = 0

    def flush() -> None:
        nonlocal pending_size
        if pending:
            gram[:] += np.bincount(
                np.concatenate([p[0] for p in pending]),
                weights=np.concatenate([p[1] for p in pending]),
                minlength=size,
            )
            cross[:] += np.bincount(
                np.concatenate([p[2] for p in pending]),
                weights=np.concatenate([p[3] for p in pending]),
                minlength=size,
            )
        pending.clear()
        pending_size = 0

    for items, e in encoded:
        if cfg.max_sequence_length is not None and items.size > cfg.max_sequence_length:
            items = items[-cfg.max_sequence_length :]
            e = e[-cfg.max_sequence_length :]
        n = int(items.size)
        if n < 2:
            continue
        g_pos, s_pos = _sequence_blocks(n, e, cfg)
        g_flat = (items[:, None] * n_items + items[None, :]).ravel()
        # cross[item_k, item_t] += S[t-1, k]; S is strictly lower-triangular in (t, k)
        rows, cols = np.nonzero(s_pos)
        c_flat = items[cols] * n_items + items[rows + 1]
        pending.append((g_flat, g_pos.ravel(), c_flat, s_pos[rows, cols]))
        pending_size += g_flat.size + c_flat.size
        if pending_size > 20_000_000:
            flush()
    flush()
    return gram.reshape(n_items, n_items), cross.reshape(n_items, n_items)


def _fix_signs(v: F64) -> F64:
    """Make each column's largest-magnitude entry positive (eigenvector sign is arbitrary)."""
    idx = np.argmax(np.abs(v), axis=0)
    signs = np.sign(v[idx, np.arange(v.shape[1])])
    signs[signs == 0] = 1.0
    out: F64 = v * signs[None, :]
    return out


def _orthonormalise(x: F64) -> F64:
    """Orthonormal basis of the columns of ``x`` via the eigen-decomposition of ``x'x`` (twice)."""
    for _ in range(2):
        w, u = np.linalg.eigh(x.T @ x)
        w = np.maximum(w, 1e-12 * max(float(w.max()), 1e-300))
        x = x @ (u / np.sqrt(w)[None, :])
    return x


def _top_eigvecs(apply: Callable[[F64], F64], n: int, dim: int, power_iters: int, seed: int) -> F64:
    """Top ``dim`` eigenvectors of a PSD operator by seeded randomized subspace iteration."""
    k = min(n, dim + max(16, dim // 4))
    rng = np.random.default_rng(seed)
    q = _orthonormalise(rng.standard_normal((n, k)))
    for _ in range(power_iters):
        q = _orthonormalise(apply(q))
    small = q.T @ apply(q)
    small = 0.5 * (small + small.T)
    _, u = np.linalg.eigh(small)
    v = q @ u[:, ::-1][:, :dim]
    return _fix_signs(np.ascontiguousarray(v))


def _randomized_svd(mat: sp.csr_matrix, dim: int, power_iters: int, seed: int) -> tuple[F64, F64]:
    """Leading left singular vectors and values of a sparse matrix (seeded, Halko et al.)."""
    n_rows, n_cols = mat.shape
    k = min(n_rows, n_cols, dim + max(16, dim // 4))
    rng = np.random.default_rng(seed)
    q = _orthonormalise(np.asarray(mat @ rng.standard_normal((n_cols, k))))
    for _ in range(power_iters):
        q = _orthonormalise(np.asarray(mat.T @ q))
        q = _orthonormalise(np.asarray(mat @ q))
    small = np.asarray((mat.T @ q).T)  # (k, n_cols) = q' mat
    u_small, s, _ = np.linalg.svd(small, full_matrices=False)
    return q @ u_small[:, :dim], s[:dim]


def _unit_index_vectors(target: F64, context: F64) -> tuple[F32, F32]:
    """Append the coordinate that turns inner-product search into cosine search."""
    norms = np.linalg.norm(target, axis=1)
    big = float(norms.max()) if norms.size else 1.0
    big = big if big > 0.0 else 1.0
    extra = np.sqrt(np.maximum(big * big - norms * norms, 0.0))
    item = np.hstack([target, extra[:, None]]) / big
    ctx = np.hstack([context * big, np.zeros((context.shape[0], 1))])
    return item.astype(np.float32), ctx.astype(np.float32)


def _check_transition_config(cfg: TransitionConfig) -> None:
    if cfg.dim < 1 or cfg.window < 1 or not 0.0 < cfg.decay <= 1.0 or cfg.l2 <= 0.0:
        raise ValueError(f"invalid config {cfg}")


def _fit_transitions(
    encoded: list[tuple[I64, F64]], n_items: int, cfg: TransitionConfig
) -> tuple[F64, F64]:
    """Ridge solution ``B = (S'S + l2 I)^-1 S'T`` and the Gram ``S'S``."""
    gram, cross = _accumulate(encoded, n_items, cfg)
    lhs = gram.copy()
    lhs[np.diag_indices(n_items)] += cfg.l2
    factor = scipy.linalg.cho_factor(lhs, overwrite_a=True, check_finite=False)
    b = scipy.linalg.cho_solve(factor, cross, check_finite=False, overwrite_b=True)
    return np.asarray(b), gram


def _transition_weighting(cfg: TransitionConfig) -> Weighting:
    return Weighting(
        cfg.window, cfg.decay, cfg.profile_weight, cfg.profile_power, cfg.profile_window
    )


def train_transition_vectors(
    sequences: Sequence[Sequence[str]],
    weights: Sequence[Sequence[float]] | None = None,
    config: TransitionConfig | None = None,
) -> CollaborativeModel:
    """Fit the next-item model on time-ordered per-user sequences and factorise it.

    ``weights`` (optional, aligned with ``sequences``) scale how much each event counts as
    context (e.g. a rating or dwell strength); every event is a target with weight 1.
    Asymmetric space: build user vectors from ``context_vectors``, index ``item_vectors``.
    """
    cfg = config if config is not None else TransitionConfig()
    _check_transition_config(cfg)
    item_ids, index = _vocabulary(sequences, cfg.min_count, cfg.max_items)
    n_items = len(item_ids)
    if n_items == 0:
        raise ValueError("no items to train on")
    b, gram = _fit_transitions(_encode(sequences, weights, index), n_items, cfg)
    dim = min(cfg.dim, n_items)
    v = _top_eigvecs(lambda x: b.T @ (gram @ (b @ x)), n_items, dim, cfg.power_iters, cfg.seed)
    item_vecs, ctx_vecs = _unit_index_vectors(v, b @ v)
    return CollaborativeModel(
        item_ids=item_ids,
        item_vectors=item_vecs,
        context_vectors=ctx_vecs,
        transitions=b.astype(np.float32) if cfg.keep_transitions else None,
        window=cfg.window,
        decay=cfg.decay,
        profile_weight=cfg.profile_weight,
        profile_power=cfg.profile_power,
        profile_window=cfg.profile_window,
    )


# ---------------------------------------------------------------------------------------------
# item2vec-style co-occurrence model


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


def _ppmi_svd_vectors(encoded: list[tuple[I64, F64]], n_items: int, cfg: CooccurrenceConfig) -> F32:
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
    u = _fix_signs(np.ascontiguousarray(u[:, order]))
    vec = u * (s[order] ** cfg.eig_power)[None, :]
    norms = np.linalg.norm(vec, axis=1, keepdims=True)
    out: F32 = (vec / np.where(norms > 0, norms, 1.0)).astype(np.float32)
    return out


def train_cooccurrence_vectors(
    sequences: Sequence[Sequence[str]],
    weights: Sequence[Sequence[float]] | None = None,
    config: CooccurrenceConfig | None = None,
) -> CollaborativeModel:
    """item2vec-style vectors: SVD of shifted PPMI of windowed, distance-decayed co-occurrence.

    Symmetric: ``context_vectors`` is ``item_vectors`` (rows L2-normalised). The returned model
    has no ``transitions``; its query weighting is recency only (``window``, ``decay`` of the
    config, which are the co-occurrence window/decay; see :func:`train_collaborative_model` for
    the tuned query weighting).
    """
    cfg = config if config is not None else CooccurrenceConfig()
    item_ids, index = _vocabulary(sequences, cfg.min_count, cfg.max_items)
    n_items = len(item_ids)
    if n_items < 2:
        raise ValueError("need at least two items")
    vec = _ppmi_svd_vectors(_encode(sequences, weights, index), n_items, cfg)
    return CollaborativeModel(
        item_ids=item_ids,
        item_vectors=vec,
        context_vectors=vec,
        transitions=None,
        window=cfg.window,
        decay=cfg.decay,
        profile_weight=0.0,
        symmetric=True,
    )


# ---------------------------------------------------------------------------------------------
# The service recipe: co-occurrence vectors for the index + transition matrix for re-ranking


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


def train_collaborative_model(
    sequences: Sequence[Sequence[str]],
    weights: Sequence[Sequence[float]] | None = None,
    config: CollaborativeConfig | None = None,
) -> CollaborativeModel:
    """Train the service's collaborative model from time-ordered per-user item sequences.

    - ``item_vectors`` = ``context_vectors``: PPMI-SVD vectors (unit norm, symmetric; cosine or
      inner product). Fused user vector = sum of ``weights_for(history)`` x vectors (recency
      decay ``query_decay`` per event).
    - ``transitions``: the full-rank next-item matrix for :func:`index.rerank.rerank`, which
      weighs the history with ``rerank_weights_for`` (the transition trainer's context).

    ``weights`` (optional, aligned with ``sequences``) are per-event strengths.
    """
    cfg = config if config is not None else CollaborativeConfig()
    if cfg.transitions is not None:
        _check_transition_config(cfg.transitions)
    item_ids, index = _vocabulary(sequences, cfg.min_count, cfg.max_items)
    n_items = len(item_ids)
    if n_items < 2:
        raise ValueError("need at least two items")
    encoded = _encode(sequences, weights, index)
    vec = _ppmi_svd_vectors(encoded, n_items, cfg.vectors)
    transitions: F32 | None = None
    rerank_weighting: Weighting | None = None
    if cfg.transitions is not None:
        b, _ = _fit_transitions(encoded, n_items, cfg.transitions)
        transitions = b.astype(np.float32)
        rerank_weighting = _transition_weighting(cfg.transitions)
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
