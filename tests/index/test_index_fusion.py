from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from numpy.typing import NDArray

from index import fuse_levels, node_contributions, weighted_mean

_finite = st.floats(min_value=-10.0, max_value=10.0, allow_nan=False, allow_infinity=False)
_weight = st.floats(min_value=0.0, max_value=10.0, allow_nan=False, allow_infinity=False)


@st.composite
def _levels_and_weights(
    draw: st.DrawFn,
) -> tuple[list[NDArray[np.float64]], list[float], list[float]]:
    n_levels = draw(st.integers(min_value=1, max_value=5))
    dim = draw(st.integers(min_value=1, max_value=8))
    levels = [
        np.array(draw(st.lists(_finite, min_size=dim, max_size=dim)), dtype=np.float64)
        for _ in range(n_levels)
    ]
    n_weights = draw(st.integers(min_value=1, max_value=6))
    w1 = draw(st.lists(_weight, min_size=n_weights, max_size=n_weights))
    w2 = draw(st.lists(_weight, min_size=n_weights, max_size=n_weights))
    return levels, w1, w2


def _effective_sum(weights: list[float], n_levels: int) -> float:
    return math.fsum(weights[:n_levels])


def test_pinned_example() -> None:
    levels = [
        np.array([0.1, 0.2, 0.3, 0.4]),
        np.array([0.2, 0.3, 0.4, 0.5]),
        np.array([0.3, 0.4, 0.5, 0.6]),
    ]
    fused = fuse_levels(levels, (0.5, 0.3, 0.2))
    assert fused.dtype == np.float32
    assert np.allclose(fused, [0.17, 0.27, 0.37, 0.47])


def test_weights_are_not_renormalised() -> None:
    levels = [np.array([1.0, 0.0]), np.array([0.0, 1.0])]
    assert np.allclose(fuse_levels(levels, [2.0, 3.0]), [2.0, 3.0])


def test_extra_levels_get_zero_weight_and_extra_weights_are_ignored() -> None:
    levels = [np.array([1.0, 0.0]), np.array([0.0, 1.0]), np.array([5.0, 5.0])]
    assert np.allclose(fuse_levels(levels, [0.5, 0.25]), [0.5, 0.25])
    assert np.allclose(fuse_levels(levels[:1], [0.5, 0.25, 0.125]), [0.5, 0.0])


@settings(max_examples=200, deadline=None)
@given(
    data=_levels_and_weights(),
    a=st.floats(min_value=0.0, max_value=5.0),
    b=st.floats(min_value=0.0, max_value=5.0),
)
def test_fuse_levels_is_linear_in_the_weights(
    data: tuple[list[NDArray[np.float64]], list[float], list[float]], a: float, b: float
) -> None:
    levels, w1, w2 = data
    n = len(levels)
    combined = [a * x + b * y for x, y in zip(w1, w2, strict=True)]
    assume(_effective_sum(w1, n) > 1e-3 and _effective_sum(w2, n) > 1e-3)
    assume(_effective_sum(combined, n) > 1e-3)
    expected = a * fuse_levels(levels, w1).astype(np.float64) + b * fuse_levels(levels, w2).astype(
        np.float64
    )
    got = fuse_levels(levels, combined).astype(np.float64)
    scale = 1.0 + np.abs(expected).max()
    assert np.allclose(got, expected, rtol=1e-5, atol=1e-5 * scale * (1.0 + a + b))


@settings(max_examples=100, deadline=None)
@given(data=_levels_and_weights())
def test_fuse_levels_is_linear_in_the_vectors(
    data: tuple[list[NDArray[np.float64]], list[float], list[float]],
) -> None:
    levels, w1, _ = data
    assume(_effective_sum(w1, len(levels)) > 1e-3)
    shifted = [level[::-1].copy() for level in levels]
    summed = [x + y for x, y in zip(levels, shifted, strict=True)]
    expected = fuse_levels(levels, w1).astype(np.float64) + fuse_levels(shifted, w1)
    got = fuse_levels(summed, w1)
    assert np.allclose(got, expected, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize(
    ("levels", "weights"),
    [
        ([np.ones(3)], [-0.1]),
        ([np.ones(3)], [float("nan")]),
        ([np.ones(3)], [float("inf")]),
        ([np.ones(3), np.ones(3)], [0.0, 0.0]),
        ([np.ones(3), np.ones(3)], [0.0]),
        ([np.ones(3), np.ones(4)], [0.5, 0.5]),
        ([np.ones(3), np.array([1.0, np.nan, 1.0])], [0.5, 0.5]),
        ([np.ones((2, 3))], [1.0]),
        ([], [1.0]),
        ([np.ones(3)], [1.0, -1.0]),
    ],
)
def test_fuse_levels_rejects_invalid_input(
    levels: list[NDArray[np.float64]], weights: list[float]
) -> None:
    with pytest.raises(ValueError, match=r"."):
        fuse_levels(levels, weights)


def test_weighted_mean_normalises_by_the_weight_sum() -> None:
    vectors = np.array([[1.0, 0.0], [0.0, 1.0], [3.0, 3.0]])
    mean = weighted_mean(vectors, [1.0, 1.0, 2.0])
    assert mean.dtype == np.float32
    assert np.allclose(mean, [1.75, 1.75])
    assert np.allclose(weighted_mean(vectors, [10.0, 10.0, 20.0]), mean)
    assert np.allclose(weighted_mean(vectors, [0.0, 1.0, 0.0]), [0.0, 1.0])


@pytest.mark.parametrize(
    ("vectors", "weights"),
    [
        (np.ones((2, 3)), [0.0, 0.0]),
        (np.ones((2, 3)), [1.0]),
        (np.ones((2, 3)), [1.0, -1.0]),
        (np.ones((2, 3)), [1.0, float("nan")]),
        (np.ones(3), [1.0]),
        (np.empty((0, 3)), []),
        (np.array([[1.0, np.inf]]), [1.0]),
    ],
)
def test_weighted_mean_rejects_invalid_input(
    vectors: NDArray[np.float64], weights: list[float]
) -> None:
    with pytest.raises(ValueError, match=r"."):
        weighted_mean(vectors, weights)


@settings(max_examples=100, deadline=None)
@given(
    n=st.integers(min_value=1, max_value=6),
    dim=st.integers(min_value=1, max_value=8),
    seed=st.integers(min_value=0, max_value=2**32 - 1),
)
def test_node_contributions_sum_to_the_fused_score(n: int, dim: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    nodes = rng.normal(size=(n, dim))
    coefficients = rng.uniform(0.05, 2.0, size=n)
    item = rng.normal(size=dim)
    parts = node_contributions(item, nodes, coefficients)
    assert parts.shape == (n,)
    fused = fuse_levels(list(nodes), list(coefficients))
    assert np.isclose(parts.sum(), float(fused.astype(np.float64) @ item), rtol=1e-5, atol=1e-4)
    assert np.allclose(parts, coefficients * (nodes @ item))


def test_node_contributions_rejects_invalid_input() -> None:
    with pytest.raises(ValueError, match="dimension"):
        node_contributions(np.ones(3), np.ones((2, 4)), np.ones(2))
    with pytest.raises(ValueError, match="coefficients"):
        node_contributions(np.ones(3), np.ones((2, 3)), np.ones(3))
    with pytest.raises(ValueError, match="non-finite"):
        node_contributions(np.array([1.0, np.nan, 0.0]), np.ones((2, 3)), np.ones(2))
    assert node_contributions(np.ones(3), np.empty((0, 3)), np.empty(0)).shape == (0,)
