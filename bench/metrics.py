"""Full-ranking metrics for one held-out target per user (LlamaRec protocol).

All items are ranked; items in the user's history are excluded (they can never be recommended);
the target is never in the history shown to the system. A target's rank is the number of eligible
items scored strictly higher, plus the eligible items with an equal score and a smaller index
(a deterministic tie break, the same one a stable arg-sort gives).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

METRIC_NAMES: tuple[str, ...] = ("NDCG@5", "NDCG@10", "Recall@5", "Recall@10", "MRR@10")


def history_mask(histories: Sequence[Sequence[int]], n_items: int) -> npt.NDArray[np.bool_]:
    """(n_users, n_items) boolean mask, True where the item is in the user's history."""
    mask = np.zeros((len(histories), n_items), dtype=bool)
    for u, hist in enumerate(histories):
        mask[u, np.fromiter(hist, dtype=np.int64)] = True
    return mask


def target_ranks(
    scores: npt.NDArray[np.floating],
    histories: Sequence[Sequence[int]],
    targets: Sequence[int],
    mask: npt.NDArray[np.bool_] | None = None,
) -> npt.NDArray[np.int64]:
    """0-based rank of each user's target among items outside that user's history.

    ``scores`` is (n_users, n_items). Non-finite scores rank last. The target must not be in the
    history. ``mask`` (optional) is :func:`history_mask` of ``histories``, to save rebuilding it.
    """
    s = np.asarray(scores, dtype=np.float64)
    if s.ndim != 2 or s.shape[0] != len(targets) or len(histories) != len(targets):
        raise ValueError("scores must be (n_users, n_items) and match histories/targets")
    n_users, n_items = s.shape
    hist = history_mask(histories, n_items) if mask is None else mask
    tgt = np.asarray(targets, dtype=np.int64)
    rows = np.arange(n_users)
    if bool(np.any(hist[rows, tgt])):
        raise ValueError("a target is in its user's history")
    s = np.where(np.isfinite(s), s, -np.inf)
    t = s[rows, tgt][:, None]
    idx = np.arange(n_items)[None, :]
    better = (s > t) | ((s == t) & (idx < tgt[:, None]))
    ranks: npt.NDArray[np.int64] = np.count_nonzero(better & ~hist, axis=1).astype(np.int64)
    return ranks


@dataclass(frozen=True)
class Metrics:
    """Means over users."""

    ndcg5: float
    ndcg10: float
    recall5: float
    recall10: float
    mrr10: float

    def as_tuple(self) -> tuple[float, float, float, float, float]:
        return (self.ndcg5, self.ndcg10, self.recall5, self.recall10, self.mrr10)


def metrics_from_ranks(ranks: npt.NDArray[np.int64]) -> Metrics:
    """NDCG@5/10, Recall@5/10, MRR@10 for single-target ranks (0-based)."""
    r = np.asarray(ranks, dtype=np.float64)
    gain = 1.0 / np.log2(r + 2.0)
    return Metrics(
        ndcg5=float(np.mean(np.where(r < 5, gain, 0.0))),
        ndcg10=float(np.mean(np.where(r < 10, gain, 0.0))),
        recall5=float(np.mean(r < 5)),
        recall10=float(np.mean(r < 10)),
        mrr10=float(np.mean(np.where(r < 10, 1.0 / (r + 1.0), 0.0))),
    )


def evaluate(
    scores: npt.NDArray[np.floating],
    histories: Sequence[Sequence[int]],
    targets: Sequence[int],
    mask: npt.NDArray[np.bool_] | None = None,
) -> Metrics:
    """Rank all items per user (history excluded) and average the metrics over users."""
    return metrics_from_ranks(target_ranks(scores, histories, targets, mask))


def recall_at(ranks: npt.NDArray[np.int64], k: int) -> float:
    """Share of users whose target is in the top ``k``."""
    return float(np.mean(np.asarray(ranks) < k))
