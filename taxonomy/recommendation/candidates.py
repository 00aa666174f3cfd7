"""Which items may be recommended (the caller's filters) and the nearest of them to a vector.

The index searches a selective filter exactly and a broad one through the HNSW graph with the
filter applied inside the walk (see `index.HnswIndex.query`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

from index import VectorIndex


@dataclass(frozen=True)
class ItemFilter:
    categories: tuple[tuple[str, ...], ...] = ()
    """Category path prefixes; an item matches one when its path starts with it."""
    exclude_items: frozenset[str] = frozenset()
    candidate_items: tuple[str, ...] | None = None
    """Only these items, when given."""

    @property
    def restricts(self) -> bool:
        return bool(self.categories) or self.candidate_items is not None


@dataclass(frozen=True)
class Pool:
    """The items a request may return: `allowed` None means the whole index."""

    exclude: set[str] = field(default_factory=set)
    allowed: set[str] | None = None

    def without(self, item_ids: Sequence[str]) -> Pool:
        return Pool(self.exclude | set(item_ids), self.allowed)


def nearest(index: VectorIndex, vector: NDArray[np.float64], k: int, pool: Pool) -> list[str]:
    """Up to k ids of the pool nearest to `vector`, best first."""
    norm = float(np.linalg.norm(vector))
    if k <= 0 or len(index) == 0 or not (np.isfinite(norm) and norm > 0):
        return []
    hits = index.query(vector, k, exclude=pool.exclude, allow=pool.allowed)
    return [item_id for item_id, _ in hits]
