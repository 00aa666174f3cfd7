"""Recommend while another client deletes items: a hit deleted between the index query and the
vector lookup is dropped, never a KeyError (deterministic versions of the race)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from numpy.typing import NDArray

from index import HnswIndex
from taxonomy.models import InterestNode, InterestTree
from taxonomy.recommendation.candidates import Pool
from taxonomy.recommendation.lists import UserQuery, flat_list
from taxonomy.recommendation.profile import build_profile
from taxonomy.recommendation.scoring import Recommendation
from taxonomy.recommendation.spaces import VectorSpace, present_vectors, text_space

from .helpers import START

VECTORS = {
    "seen-1": [1.0, 0.0, 0.0, 0.0],
    "seen-2": [1.0, 0.2, 0.0, 0.0],
    "doomed": [1.0, 0.1, 0.0, 0.0],  # the best hit for the history above
    "near": [1.0, 0.5, 0.0, 0.0],
    "far": [0.0, 1.0, 0.0, 0.0],
    "farther": [0.0, 0.0, 1.0, 0.0],
}
SEEN = {"seen-1", "seen-2"}


class DeletedAfterQuery(HnswIndex):
    """An index where another client deletes `doomed` just after each query returns it."""

    def query(self, *args: Any, **kwargs: Any) -> list[tuple[str, float]]:
        hits = super().query(*args, **kwargs)
        self.delete(["doomed"])
        return hits


def make_index(index_type: type[HnswIndex] = HnswIndex) -> HnswIndex:
    index = index_type(4, space="cosine", ef_search=32)
    index.upsert(list(VECTORS), np.asarray(list(VECTORS.values()), dtype=np.float32))
    return index


def tree() -> InterestTree:
    node = InterestNode(
        node_id="n1",
        parent_id=None,
        level=1,
        label="Firsts",
        explanation="You like the first axis.",
        weight=1.0,
        evidence_items=sorted(SEEN),
    )
    return InterestTree(user_id="u", revision=1, nodes=[node], create_time=START, event_count=2)


def recommend(
    tree: InterestTree,
    weights: list[float],
    item_weights: dict[str, float],
    space: VectorSpace,
    *,
    page_size: int,
    exclude: set[str],
) -> list[Recommendation]:
    profile = build_profile(tree, weights, [item_weights] * tree.depth, space)
    assert profile is not None
    return flat_list(UserQuery(profile, space, None), page_size, Pool(exclude=exclude))


def test_a_hit_deleted_after_the_query_is_dropped() -> None:
    index = make_index(DeletedAfterQuery)
    assert index.query(np.asarray(VECTORS["seen-2"]), 1, SEEN)[0][0] == "doomed"
    index.upsert(["doomed"], np.asarray([VECTORS["doomed"]], dtype=np.float32))
    results = recommend(
        tree(), [1.0], dict.fromkeys(SEEN, 1.0), text_space(index), page_size=3, exclude=SEEN
    )
    assert [rec.item_id for rec in results] == ["near", "far"]
    assert all(rec.nodes and rec.nodes[0].node.node_id == "n1" for rec in results)


def test_a_history_item_deleted_after_has_vector_is_left_out() -> None:
    index = make_index()

    def query_vectors(ids: Sequence[str]) -> NDArray[np.float32]:
        index.delete(["seen-2"])  # deleted after has_vector said yes
        return index.get_vectors(ids)

    space = VectorSpace("text", index, query_vectors, index.__contains__)
    results = recommend(tree(), [1.0], dict.fromkeys(SEEN, 1.0), space, page_size=2, exclude=SEEN)
    assert [rec.item_id for rec in results] == ["doomed", "near"]


def test_present_vectors_keeps_order_and_skips_missing_ids() -> None:
    index = make_index()
    index.delete(["near"])
    found = present_vectors(index.get_vectors, ["far", "near", "seen-1"])
    assert list(found) == ["far", "seen-1"]
    np.testing.assert_allclose(found["far"], [0.0, 1.0, 0.0, 0.0])
    assert present_vectors(index.get_vectors, []) == {}
