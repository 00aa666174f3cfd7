"""Research trainers that only the benchmarks and their tests use, kept out of the service.

- ``train_transition_vectors``: the SLIST-like transition model factorised by reduced-rank
  regression into an asymmetric vector space. On MovieLens it retrieves worse than the
  co-occurrence space the service uses (``bench/movielens_offline.py``).
- ``train_cooccurrence_vectors``: the co-occurrence space alone, without re-ranking.
- ``truncated``: a model cut to fewer dimensions, for the dimension sweeps.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace

import numpy as np
import numpy.typing as npt

from taxonomy.recommendation.collaborative_model import CollaborativeModel
from taxonomy.recommendation.training import (
    CooccurrenceConfig,
    encode_sequences,
    fix_signs,
    orthonormalise,
    ppmi_svd_vectors,
    vocabulary,
)
from taxonomy.recommendation.transitions import (
    TransitionConfig,
    check_transition_config,
    fit_transitions,
)

F32 = npt.NDArray[np.float32]
F64 = npt.NDArray[np.float64]

__all__ = ["train_cooccurrence_vectors", "train_transition_vectors", "truncated"]


def _top_eigvecs(apply: Callable[[F64], F64], n: int, dim: int, power_iters: int, seed: int) -> F64:
    """Top ``dim`` eigenvectors of a PSD operator by seeded randomized subspace iteration."""
    k = min(n, dim + max(16, dim // 4))
    rng = np.random.default_rng(seed)
    q = orthonormalise(rng.standard_normal((n, k)))
    for _ in range(power_iters):
        q = orthonormalise(apply(q))
    small = q.T @ apply(q)
    small = 0.5 * (small + small.T)
    _, u = np.linalg.eigh(small)
    v = q @ u[:, ::-1][:, :dim]
    return fix_signs(np.ascontiguousarray(v))


def _unit_index_vectors(target: F64, context: F64) -> tuple[F32, F32]:
    """Append the coordinate that turns inner-product search into cosine search."""
    norms = np.linalg.norm(target, axis=1)
    big = float(norms.max()) if norms.size else 1.0
    big = big if big > 0.0 else 1.0
    extra = np.sqrt(np.maximum(big * big - norms * norms, 0.0))
    item = np.hstack([target, extra[:, None]]) / big
    ctx = np.hstack([context * big, np.zeros((context.shape[0], 1))])
    return item.astype(np.float32), ctx.astype(np.float32)


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
    check_transition_config(cfg)
    item_ids, index = vocabulary(sequences, cfg.min_count, cfg.max_items)
    n_items = len(item_ids)
    if n_items == 0:
        raise ValueError("no items to train on")
    b, gram = fit_transitions(encode_sequences(sequences, weights, index), n_items, cfg)
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
    item_ids, index = vocabulary(sequences, cfg.min_count, cfg.max_items)
    n_items = len(item_ids)
    if n_items < 2:
        raise ValueError("need at least two items")
    vec = ppmi_svd_vectors(encode_sequences(sequences, weights, index), n_items, cfg)
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


def truncated(model: CollaborativeModel, dim: int) -> CollaborativeModel:
    """The same model with a rank-``dim`` factorisation (leading eigen-directions).

    Needs ``transitions``; symmetric (co-occurrence) models are cut to ``dim`` columns and
    re-normalised.
    """
    if dim >= model.dim - (0 if model.symmetric else 1):
        return model
    if model.symmetric:
        vec = model.item_vectors[:, :dim].astype(np.float64)
        norms = np.linalg.norm(vec, axis=1, keepdims=True)
        vec32 = (vec / np.where(norms > 0, norms, 1.0)).astype(np.float32)
        item, ctx = vec32, vec32
    else:
        if model.transitions is None:
            raise ValueError("truncating an asymmetric model needs its transitions")
        v = model.item_vectors[:, :dim].astype(np.float64)
        item, ctx = _unit_index_vectors(v, model.transitions.astype(np.float64) @ v)
    return replace(model, item_vectors=item, context_vectors=ctx, _index={})
