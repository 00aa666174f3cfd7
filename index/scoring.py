"""hnswlib distances as similarities, and the brute-force scan that scores the same way."""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from index.validation import Space

__all__ = ["exact_top_k", "similarity"]


def similarity(distance: float, space: Space) -> float:
    """Higher is better: ``1 - distance`` for cosine and ip (the cosine similarity / dot
    product) and ``-distance`` for l2, where hnswlib's l2 distance is the SQUARED euclidean one.
    """
    if space == "l2":
        return -distance
    return 1.0 - distance


def exact_top_k(
    query: NDArray[np.float32],
    labels: NDArray[np.uint64],
    vectors: NDArray[np.float32],
    k: int,
    blocked: set[int],
    space: Space,
) -> list[tuple[int, float]]:
    """The best ``k`` (label, similarity) pairs among ``labels``/``vectors``, best first.

    For the cosine space ``vectors`` must be unit length, as hnswlib stores them.
    """
    if space == "l2":
        diff = vectors - query
        scores = -np.einsum("ij,ij->i", diff, diff)
    elif space == "cosine":
        scores = vectors @ (query / np.linalg.norm(query))
    else:
        scores = vectors @ query
    candidates = np.arange(labels.shape[0])
    if blocked:
        blocked_array = np.fromiter(blocked, dtype=np.uint64, count=len(blocked))
        candidates = candidates[~np.isin(labels, blocked_array)]
    k = min(k, int(candidates.shape[0]))
    if k <= 0:
        return []
    if k < candidates.shape[0]:
        candidates = candidates[np.argpartition(-scores[candidates], k - 1)[:k]]
    top = candidates[np.argsort(-scores[candidates], kind="stable")]
    return [(int(labels[i]), float(scores[i])) for i in top]
