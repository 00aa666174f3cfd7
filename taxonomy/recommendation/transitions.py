"""The linear next-item (transition) model the service re-ranks with, fitted in closed form.

A ridge regression in the spirit of SLIT / SLIST (Choi et al., WWW 2021). For every event
``t`` of every user sequence the *context* is a weighted bag of the user's earlier events and
the *target* is the event itself:

    context_t = sum_{k<t} e_k * (decay**(t-1-k) [t-k <= window] + beta / m_t**power [t-k <= L])

(``e_k`` = optional per-event weight, ``m_t = min(t, L)`` = profile size, ``L`` =
``profile_window``). ``B = (S'S + l2 I)^-1 S'T`` maps a context to next-item scores; the same
weighting of a user's history is the query: ``score(j) = sum_i a_i B[i, j]``.

Cost: dense, O(n_items^3) time and O(n_items^2) memory; accumulation is
O(sum of n_u^2 * window).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import scipy.linalg
import scipy.sparse as sp

from taxonomy.recommendation.collaborative_model import Weighting

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]

__all__ = ["TransitionConfig", "fit_transitions", "transition_weighting"]

_DENSE_GRAM_MAX = 200


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
    max_sequence_length: int | None = 3000
    """Train on at most the last this-many events of each sequence (``None`` = all). A sequence
    costs O(n^2) time and memory, so one user with 20,000 events would stall every refresh
    (the fuzz found it); 3,000 keeps every ml-latest-small user whole (the longest has 2,698)."""
    min_count: int = 1
    """Items seen fewer times are left out of the vocabulary."""
    max_items: int = 20_000
    """Keep at most the this-many most frequent items (the solve is dense, O(n_items^3))."""
    keep_transitions: bool = True
    """Keep the full-rank matrix ``B`` (n_items^2 float32) for exact re-ranking."""
    power_iters: int = 4
    """Subspace iterations of the randomized eigen-solver of the factorisation."""
    seed: int = 0


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


def check_transition_config(cfg: TransitionConfig) -> None:
    if cfg.dim < 1 or cfg.window < 1 or not 0.0 < cfg.decay <= 1.0 or cfg.l2 <= 0.0:
        raise ValueError(f"invalid config {cfg}")


def fit_transitions(
    encoded: list[tuple[I64, F64]], n_items: int, cfg: TransitionConfig
) -> tuple[F64, F64]:
    """Ridge solution ``B = (S'S + l2 I)^-1 S'T`` and the Gram ``S'S``."""
    gram, cross = _accumulate(encoded, n_items, cfg)
    lhs = gram.copy()
    lhs[np.diag_indices(n_items)] += cfg.l2
    factor = scipy.linalg.cho_factor(lhs, overwrite_a=True, check_finite=False)
    b = scipy.linalg.cho_solve(factor, cross, check_finite=False, overwrite_b=True)
    return np.asarray(b), gram


def transition_weighting(cfg: TransitionConfig) -> Weighting:
    return Weighting(
        cfg.window, cfg.decay, cfg.profile_weight, cfg.profile_power, cfg.profile_window
    )
