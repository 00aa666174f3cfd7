"""The vector-index contract the rest of the service codes against.

HnswIndex is the in-process implementation; a distributed vector store can stand in for it as
long as it offers these methods with the same semantics (similarities, higher is better).
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Sequence
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt
from numpy.typing import NDArray

__all__ = ["VectorIndex"]


@runtime_checkable
class VectorIndex(Protocol):
    def upsert(self, ids: Sequence[str], vectors: npt.ArrayLike) -> None:
        """Add new ids, replace the vectors of existing ones; ValueError on bad shapes/values."""
        ...

    def delete(self, ids: Iterable[str]) -> int:
        """Remove ids, ignoring unknown ones; returns how many were removed."""
        ...

    def query(
        self,
        vector: npt.ArrayLike,
        k: int,
        exclude: Collection[str] = (),
        allow: Collection[str] | None = None,
    ) -> list[tuple[str, float]]:
        """Up to k (id, similarity) pairs, best first, never returning an excluded id, and
        with `allow` only allowed ids (exactly the best of them, however few are allowed)."""
        ...

    def exact_query(
        self, vector: npt.ArrayLike, k: int, exclude: Collection[str] = ()
    ) -> list[tuple[str, float]]:
        """Like `query`, by brute force: the ground truth approximate search is measured by."""
        ...

    def get_vectors(self, ids: Sequence[str]) -> NDArray[np.float32]:
        """Stored vectors in ids order; KeyError for ids not in the index."""
        ...

    def __len__(self) -> int: ...

    def __contains__(self, item_id: object) -> bool: ...

    def ids(self) -> list[str]: ...

    def save(self, directory: Path) -> None: ...
