"""Argument checks shared by vector-index implementations: ids, k and float32 vectors."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Literal

import numpy as np
import numpy.typing as npt
from numpy.typing import NDArray

__all__ = ["Space", "check_ids", "check_k", "check_matrix", "check_query"]

# hnswlib's metric spaces; a cosine index needs vectors with a direction (non-zero).
Space = Literal["cosine", "ip", "l2"]


def check_ids(ids: Iterable[str], what: str) -> list[str]:
    """The ids as a list; TypeError for a bare string or non-str items, ValueError for ''."""
    # A bare str is itself a Sequence[str]; treating "abc" as ["a", "b", "c"] is always a bug.
    if isinstance(ids, str | bytes):
        raise TypeError(f"{what} must be a collection of string ids, not a single string")
    id_list = list(ids)
    for item_id in id_list:
        if not isinstance(item_id, str):
            raise TypeError(f"{what} must contain str ids, got {type(item_id).__name__}")
        if not item_id:
            raise ValueError(f"{what} must not contain empty ids")
    return id_list


def check_k(k: int) -> int:
    """``k`` as a plain non-negative int."""
    if isinstance(k, bool) or not isinstance(k, int | np.integer):
        raise TypeError(f"k must be an int, got {type(k).__name__}")
    if k < 0:
        raise ValueError(f"k must be non-negative, got {k}")
    return int(k)


def check_matrix(
    vectors: npt.ArrayLike, rows: int, *, dim: int, space: Space
) -> NDArray[np.float32]:
    """``rows`` finite vectors of length ``dim`` as a C-contiguous float32 matrix."""
    # Out-of-range float64 values become inf here and are rejected just below.
    with np.errstate(over="ignore"):
        matrix = np.ascontiguousarray(vectors, dtype=np.float32)
    if rows == 0 and matrix.size == 0:
        return matrix.reshape(0, dim)
    if matrix.shape != (rows, dim):
        raise ValueError(f"vectors must have shape ({rows}, {dim}), got {matrix.shape}")
    if not np.isfinite(matrix).all():
        raise ValueError("vectors contain non-finite values")
    if space == "cosine" and not np.linalg.norm(matrix, axis=1).all():
        raise ValueError("zero vectors have no direction in the cosine space")
    return matrix


def check_query(vector: npt.ArrayLike, *, dim: int, space: Space) -> NDArray[np.float32]:
    """One finite query vector of length ``dim`` (a ``(1, dim)`` matrix is accepted)."""
    with np.errstate(over="ignore"):
        query = np.ascontiguousarray(vector, dtype=np.float32)
    if query.shape == (1, dim):
        query = query[0]
    if query.shape != (dim,):
        raise ValueError(f"query must have shape ({dim},), got {query.shape}")
    if not np.isfinite(query).all():
        raise ValueError("query contains non-finite values")
    if space == "cosine" and not np.linalg.norm(query):
        raise ValueError("a zero query has no direction in the cosine space")
    return query
