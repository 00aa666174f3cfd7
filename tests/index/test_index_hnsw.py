from __future__ import annotations

import numpy as np
import pytest
from numpy.typing import NDArray

from index import HnswIndex, VectorIndex
from index.hnsw import Space


def _vectors(n: int, dim: int, seed: int = 0) -> NDArray[np.float32]:
    return np.random.default_rng(seed).normal(size=(n, dim)).astype(np.float32)


def _ids(n: int, prefix: str = "item") -> list[str]:
    return [f"{prefix}-{i}" for i in range(n)]


def _filled(n: int = 200, dim: int = 16, space: Space = "cosine", **kwargs: int) -> HnswIndex:
    index = HnswIndex(dim, space=space, **kwargs)
    index.upsert(_ids(n), _vectors(n, dim))
    return index


def test_is_a_vector_index() -> None:
    index: VectorIndex = HnswIndex(4)
    assert isinstance(index, VectorIndex)


def test_empty_index() -> None:
    index = HnswIndex(4)
    assert len(index) == 0
    assert index.ids() == []
    assert index.query(np.ones(4), 5) == []
    assert index.exact_query(np.ones(4), 5) == []
    assert "x" not in index


def test_upsert_query_and_membership() -> None:
    vectors = _vectors(50, 8)
    index = HnswIndex(8)
    index.upsert(_ids(50), vectors)
    assert len(index) == 50
    assert index.ids() == _ids(50)
    assert "item-3" in index
    assert 3 not in index
    top = index.query(vectors[7], 3)
    assert len(top) == 3
    assert top[0][0] == "item-7"
    assert top[0][1] == pytest.approx(1.0, abs=1e-5)
    assert [s for _, s in top] == sorted((s for _, s in top), reverse=True)


def test_upsert_replaces_existing_vector() -> None:
    index = HnswIndex(3, space="l2")
    index.upsert(["a", "b"], np.array([[0.0, 0.0, 0.0], [10.0, 10.0, 10.0]]))
    index.upsert(["a"], np.array([[10.0, 10.0, 11.0]]))
    assert len(index) == 2
    assert np.array_equal(index.get_vectors(["a"]), [[10.0, 10.0, 11.0]])
    assert index.query(np.zeros(3), 1)[0][0] == "b"
    assert index.query(np.array([10.0, 10.0, 11.0]), 1) == [("a", -0.0)]


def test_similarity_semantics_per_space() -> None:
    a = np.array([1.0, 2.0, 2.0], dtype=np.float32)
    q = np.array([2.0, 0.0, 1.0], dtype=np.float32)
    for space, expected in (
        ("cosine", float(a @ q / (np.linalg.norm(a) * np.linalg.norm(q)))),
        ("ip", float(a @ q)),
        ("l2", -float(((a - q) ** 2).sum())),
    ):
        index = HnswIndex(3, space=space)  # type: ignore[arg-type]
        index.upsert(["a"], a[None, :])
        [(item_id, approx)] = index.query(q, 1)
        [(_, exact)] = index.exact_query(q, 1)
        assert item_id == "a"
        assert approx == pytest.approx(expected, abs=1e-5), space
        assert exact == pytest.approx(expected, abs=1e-5), space


def test_cosine_get_vectors_are_unit_normalised() -> None:
    index = HnswIndex(2)
    index.upsert(["a"], np.array([[3.0, 4.0]]))
    assert np.allclose(index.get_vectors(["a"]), [[0.6, 0.8]])


def test_delete_semantics() -> None:
    vectors = _vectors(20, 8)
    index = HnswIndex(8)
    index.upsert(_ids(20), vectors)
    assert index.delete(["item-0", "item-0", "nope", "item-1"]) == 2
    assert index.delete(["item-0"]) == 0
    assert len(index) == 18
    assert "item-0" not in index
    assert "item-0" not in index.ids()
    returned = {item_id for item_id, _ in index.query(vectors[0], 18)}
    assert returned == set(index.ids())
    with pytest.raises(KeyError):
        index.get_vectors(["item-0"])


def test_reupserting_a_deleted_id_revives_it_in_place() -> None:
    vectors = _vectors(10, 8)
    index = HnswIndex(8, initial_capacity=10)
    index.upsert(_ids(10), vectors)
    index.delete(["item-4"])
    index.upsert(["item-4"], vectors[5:6] * 2)
    assert len(index) == 10
    assert "item-4" in index
    assert index.capacity == 10
    assert {i for i, _ in index.query(vectors[5], 2)} == {"item-4", "item-5"}


def test_get_vectors_order_and_unknown_ids() -> None:
    vectors = _vectors(5, 4)
    index = HnswIndex(4, space="ip")
    index.upsert(_ids(5), vectors)
    assert np.array_equal(index.get_vectors(["item-3", "item-1"]), vectors[[3, 1]])
    assert index.get_vectors([]).shape == (0, 4)
    with pytest.raises(KeyError):
        index.get_vectors(["item-1", "missing"])


@pytest.mark.parametrize("space", ["cosine", "ip", "l2"])
def test_query_matches_exact_query_on_small_data(space: Space) -> None:
    index = _filled(300, 16, space=space, ef_search=200)
    for query in _vectors(20, 16, seed=1):
        approx = index.query(query, 10)
        exact = index.exact_query(query, 10)
        assert [i for i, _ in approx] == [i for i, _ in exact]
        assert np.allclose([s for _, s in approx], [s for _, s in exact], atol=1e-4)


def test_exclude_is_never_returned_and_does_not_shrink_k() -> None:
    index = _filled(300, 16)
    query = _vectors(1, 16, seed=2)[0]
    nearest = [i for i, _ in index.exact_query(query, 30)]
    excluded = set(nearest[:25])
    result = index.query(query, 10, exclude=excluded)
    assert len(result) == 10
    assert not excluded & {i for i, _ in result}
    assert [i for i, _ in result] == [i for i, _ in index.exact_query(query, 10, exclude=excluded)]


def test_exclude_clamps_k_to_the_eligible_items() -> None:
    index = _filled(5, 4)
    query = np.ones(4)
    result = index.query(query, 10, exclude=["item-0", "item-1", "item-2", "unknown"])
    assert {i for i, _ in result} == {"item-3", "item-4"}
    assert index.query(query, 10, exclude=_ids(5)) == []
    index.delete(["item-3"])
    assert [i for i, _ in index.query(query, 10, exclude=["item-0", "item-1", "item-2"])] == [
        "item-4"
    ]


def test_k_above_ef_search_still_returns_k_and_keeps_ef() -> None:
    index = _filled(100, 8, ef_search=5)
    result = index.query(np.ones(8), 60)
    assert len(result) == 60
    assert len({i for i, _ in result}) == 60
    assert index.params.ef_search == 5


def test_heavy_deletion_still_fills_k() -> None:
    vectors = _vectors(300, 8)
    index = HnswIndex(8, ef_search=10)
    index.upsert(_ids(300), vectors)
    index.delete(_ids(290))
    result = index.query(vectors[0], 10)
    assert sorted(i for i, _ in result) == sorted(_ids(300)[290:])


def test_zero_and_negative_k() -> None:
    index = _filled(5, 4)
    assert index.query(np.ones(4), 0) == []
    with pytest.raises(ValueError, match="non-negative"):
        index.query(np.ones(4), -1)


def test_resize_grows_past_initial_capacity() -> None:
    vectors = _vectors(100, 8)
    index = HnswIndex(8, initial_capacity=4)
    for start in range(0, 100, 7):
        index.upsert(_ids(100)[start : start + 7], vectors[start : start + 7])
    assert len(index) == 100
    assert index.capacity == 128
    for n in range(0, 100, 9):
        assert index.query(vectors[n], 1)[0][0] == f"item-{n}"


def test_one_big_batch_resizes_once() -> None:
    index = HnswIndex(4, initial_capacity=3)
    index.upsert(_ids(50), _vectors(50, 4))
    assert index.capacity == 96
    assert len(index) == 50


@pytest.mark.parametrize(
    "vectors",
    [
        np.ones((2, 5)),
        np.ones((3, 4)),
        np.ones(4),
        np.array([[1.0, 2.0, np.nan, 0.0], [1.0, 1.0, 1.0, 1.0]]),
        np.array([[1.0, 2.0, np.inf, 0.0], [1.0, 1.0, 1.0, 1.0]]),
        np.array([[1e39, 0.0, 0.0, 0.0], [1.0, 1.0, 1.0, 1.0]]),
        np.array([[0.0, 0.0, 0.0, 0.0], [1.0, 1.0, 1.0, 1.0]]),
    ],
)
def test_upsert_rejects_bad_vectors(vectors: NDArray[np.float64]) -> None:
    index = HnswIndex(4)
    with pytest.raises(ValueError, match=r"."):
        index.upsert(["a", "b"], vectors)
    assert len(index) == 0


def test_upsert_rejects_bad_ids() -> None:
    index = HnswIndex(2)
    with pytest.raises(ValueError, match="unique"):
        index.upsert(["a", "a"], np.ones((2, 2)))
    with pytest.raises(ValueError, match="empty"):
        index.upsert([""], np.ones((1, 2)))
    with pytest.raises(TypeError):
        index.upsert("ab", np.ones((2, 2)))
    with pytest.raises(TypeError):
        index.delete("a")
    with pytest.raises(TypeError):
        index.query(np.ones(2), 1, exclude="a")
    assert len(index) == 0


def test_query_rejects_bad_vectors() -> None:
    index = _filled(5, 4)
    for bad in (np.ones(3), np.ones((2, 4)), np.array([np.nan, 1.0, 1.0, 1.0]), np.zeros(4)):
        with pytest.raises(ValueError, match=r"."):
            index.query(bad, 1)
        with pytest.raises(ValueError, match=r"."):
            index.exact_query(bad, 1)
    assert index.query(np.ones((1, 4)), 1)


def test_zero_vectors_are_fine_outside_cosine() -> None:
    index = HnswIndex(2, space="l2")
    index.upsert(["z"], np.zeros((1, 2)))
    assert index.query(np.zeros(2), 1) == [("z", -0.0)]


@pytest.mark.parametrize(
    "kwargs",
    [
        {"dim": 0},
        {"dim": 4, "m": 1},
        {"dim": 4, "ef_search": 0},
        {"dim": 4, "initial_capacity": 0},
        {"dim": 4, "space": "hamming"},
    ],
)
def test_constructor_validates_params(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError, match=r"."):
        HnswIndex(**kwargs)  # type: ignore[arg-type]


def test_set_ef() -> None:
    index = _filled(20, 4)
    index.set_ef(7)
    assert index.params.ef_search == 7
    with pytest.raises(ValueError, match="ef"):
        index.set_ef(0)
