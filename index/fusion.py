"""Pure numpy helpers that turn weighted node or level vectors into one query vector.

Everything here is linear on purpose: when u = sum_i c_i * v_i, an item's score u . x splits
exactly into per-node terms c_i * (v_i . x), which is what makes a recommendation explainable.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt
from numpy.typing import NDArray

__all__ = ["fuse_levels", "node_contributions", "weighted_mean"]


def _check_weights(weights: Sequence[float], what: str) -> NDArray[np.float64]:
    values = [float(weight) for weight in weights]
    for position, weight in enumerate(values):
        if not math.isfinite(weight):
            raise ValueError(f"{what}[{position}] is not finite: {weight!r}")
        if weight < 0.0:
            raise ValueError(f"{what}[{position}] is negative: {weight!r}")
    return np.asarray(values, dtype=np.float64)


def _as_matrix(values: npt.ArrayLike, what: str) -> NDArray[np.float64]:
    matrix = np.asarray(values, dtype=np.float64)
    if matrix.ndim != 2:
        raise ValueError(f"{what} must be 2-D (n, d), got shape {matrix.shape}")
    if not np.isfinite(matrix).all():
        raise ValueError(f"{what} contains non-finite values")
    return matrix


def _as_vector(values: npt.ArrayLike, what: str) -> NDArray[np.float64]:
    vector = np.asarray(values, dtype=np.float64)
    if vector.ndim != 1 or vector.shape[0] == 0:
        raise ValueError(f"{what} must be a non-empty 1-D vector, got shape {vector.shape}")
    if not np.isfinite(vector).all():
        raise ValueError(f"{what} contains non-finite values")
    return vector


def weighted_mean(vectors: npt.ArrayLike, weights: Sequence[float]) -> NDArray[np.float32]:
    """Weighted mean of the rows of ``vectors`` (n, d); weights are normalised by their sum."""
    matrix = _as_matrix(vectors, "vectors")
    if matrix.shape[0] == 0 or matrix.shape[1] == 0:
        raise ValueError(f"vectors must have at least one row and column, got {matrix.shape}")
    w = _check_weights(weights, "weights")
    if w.shape[0] != matrix.shape[0]:
        raise ValueError(f"got {w.shape[0]} weights for {matrix.shape[0]} vectors")
    total = float(w.sum())
    if total <= 0.0:
        raise ValueError("weights must have a positive sum")
    # Accumulate in float64: the inputs are often many near-parallel float32 embeddings.
    mean: NDArray[np.float64] = (w / total) @ matrix
    return mean.astype(np.float32)


def fuse_levels(
    level_vectors: Sequence[npt.ArrayLike], level_weights: Sequence[float]
) -> NDArray[np.float32]:
    """u = sum_l w_l * v_l with the weights used as given (no renormalisation).

    Levels past the end of ``level_weights`` get weight 0 and weights past the last level are
    ignored, so one configured weight profile works for trees of any depth. Weights are not
    renormalised because callers attribute scores through this sum and must see the same
    coefficients they configured.
    """
    if len(level_vectors) == 0:
        raise ValueError("at least one level vector is required")
    vectors = [_as_vector(v, f"level_vectors[{i}]") for i, v in enumerate(level_vectors)]
    dim = vectors[0].shape[0]
    for position, vector in enumerate(vectors):
        if vector.shape[0] != dim:
            raise ValueError(
                f"level_vectors[{position}] has dimension {vector.shape[0]}, expected {dim}"
            )
    weights = _check_weights(level_weights, "level_weights")
    effective = np.zeros(len(vectors), dtype=np.float64)
    used = min(len(vectors), weights.shape[0])
    effective[:used] = weights[:used]
    if not effective.any():
        raise ValueError("all effective level weights are zero")
    fused: NDArray[np.float64] = effective @ np.stack(vectors)
    return fused.astype(np.float32)


def node_contributions(
    item_vector: npt.ArrayLike,
    node_vectors: npt.ArrayLike,
    node_coefficients: npt.ArrayLike,
) -> NDArray[np.float64]:
    """Per-node share c_i * (v_i . x) of an item's score under u = sum_i c_i * v_i.

    The terms sum to u . x exactly (up to rounding), so they can be shown as "why this item".
    Kept in float64 so the parts add up to the whole more tightly than the float32 index does.
    """
    item = _as_vector(item_vector, "item_vector")
    nodes = _as_matrix(node_vectors, "node_vectors")
    coefficients = np.asarray(node_coefficients, dtype=np.float64)
    if coefficients.ndim != 1:
        raise ValueError(f"node_coefficients must be 1-D, got shape {coefficients.shape}")
    if not np.isfinite(coefficients).all():
        raise ValueError("node_coefficients contains non-finite values")
    if coefficients.shape[0] != nodes.shape[0]:
        raise ValueError(
            f"got {coefficients.shape[0]} coefficients for {nodes.shape[0]} node vectors"
        )
    if nodes.shape[1] != item.shape[0]:
        raise ValueError(f"node vectors have dimension {nodes.shape[1]}, item has {item.shape[0]}")
    contributions: NDArray[np.float64] = coefficients * (nodes @ item)
    return contributions
