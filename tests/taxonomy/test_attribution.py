"""Every returned score is explained by the nodes named: contributions add up to the score,
scores come in the returned order, and the linear re-rank ranks like the z-score blend."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from numpy.typing import NDArray

from index import HnswIndex
from taxonomy.events.history import summarize_history
from taxonomy.models import Event, Item
from taxonomy.recommendation.candidates import Pool
from taxonomy.recommendation.levels import LevelTimeScales, level_item_weights
from taxonomy.recommendation.lists import UserQuery, flat_list, slates
from taxonomy.recommendation.profile import build_profile
from taxonomy.recommendation.scoring import Reranker, node_scores
from taxonomy.recommendation.spaces import VectorSpace
from taxonomy.trees.builder import build_data_tree
from taxonomy.trees.graph import tree_from_graph

GENRES = ["jazz", "rock", "folk", "opera"]
N_ITEMS = 60
DIM = 8
START = datetime(2024, 1, 1, tzinfo=UTC)


def world(seed: int) -> tuple[dict[str, Item], NDArray[np.float32], NDArray[np.float64]]:
    rng = np.random.default_rng(seed)
    items = {
        f"i{k}": Item(
            item_id=f"i{k}",
            title=f"item {k}",
            categories=["Music", GENRES[k % 4]],
            tags=[f"t{k % 3}"],
        )
        for k in range(N_ITEMS)
    }
    vectors = rng.normal(size=(N_ITEMS, DIM)).astype(np.float32)
    transitions = rng.normal(size=(N_ITEMS, N_ITEMS))
    return items, vectors, transitions


def query_for(
    seed: int, history: Sequence[int], weights: Sequence[float], rerank: bool
) -> tuple[UserQuery, list[str]]:
    items, vectors, transitions = world(seed)
    ids = list(items)
    index = HnswIndex(DIM, space="ip", ef_search=64)
    index.upsert(ids, vectors)
    position = {item_id: k for k, item_id in enumerate(ids)}
    space = VectorSpace(
        "test",
        index,
        lambda wanted: vectors[[position[i] for i in wanted]],
        lambda item_id: item_id in position,
    )
    events = [
        Event(user_id="u", item_id=ids[k], event_time=START + timedelta(minutes=n))
        for n, k in enumerate(history)
    ]
    graph = build_data_tree("u", summarize_history(events, half_life_events=50), items)
    tree = tree_from_graph(
        graph, user_id="u", revision=1, create_time=START, event_count=1, model=""
    )
    scales = LevelTimeScales()
    per_level = [
        level_item_weights(
            events, scales.for_level(level, tree.depth), lambda _: 1.0, space.has_vector
        )
        for level in range(1, tree.depth + 1)
    ]
    level_weights = [
        weights[level - 1] if level <= len(weights) else 0.0 for level in range(1, tree.depth + 1)
    ]
    profile = build_profile(tree, level_weights, per_level, space)
    assert profile is not None
    history_ids = list(dict.fromkeys(ids[k] for k in history))
    reranker = None
    if rerank:
        reranker = Reranker(
            history=history_ids,
            weights=np.linspace(0.5, 1.5, len(history_ids)),
            transitions=lambda rows, cols: transitions[
                np.ix_([position[r] for r in rows], [position[c] for c in cols])
            ],
            blend=0.6,
            candidates=30,
        )
    return UserQuery(profile, space, reranker), history_ids


histories = st.lists(st.integers(0, N_ITEMS - 1), min_size=3, max_size=25)
# The API's domain: each weight 0 or in [1e-6, 1e6] (smaller ones underflow the fused vector).
level_weight = st.one_of(st.just(0.0), st.floats(1e-6, 5.0))
level_weights = st.lists(level_weight, min_size=1, max_size=3).filter(lambda w: w[0] > 0)


@settings(max_examples=60, deadline=None, derandomize=True)
@given(seed=st.integers(0, 5), history=histories, weights=level_weights, rerank=st.booleans())
def test_contributions_add_up_to_the_score_in_the_returned_order(
    seed: int, history: list[int], weights: list[float], rerank: bool
) -> None:
    query, seen = query_for(seed, history, weights, rerank)
    results = flat_list(query, 10, Pool(exclude=set(seen)))
    assert results
    scores = [rec.score for rec in results]
    assert scores == sorted(scores, reverse=True)
    for rec in results:
        assert rec.item_id not in seen
        total = sum(node.contribution for node in rec.nodes)
        assert abs(total - rec.score) <= 1e-9 * max(1.0, abs(rec.score))
        assert all(node.contribution != 0 for node in rec.nodes)


@settings(max_examples=30, deadline=None, derandomize=True)
@given(seed=st.integers(0, 5), history=histories, weights=level_weights)
def test_the_linear_rerank_ranks_like_the_standardised_blend(
    seed: int, history: list[int], weights: list[float]
) -> None:
    query, seen = query_for(seed, history, weights, True)
    profile, index = query.profile, query.space.index
    candidates = [item_id for item_id, _ in index.query(profile.user_vector, 30, exclude=seen)]
    scores = node_scores(profile, index, candidates, query.reranker)
    fused, exact = scores.fused.sum(axis=0), scores.exact.sum(axis=0)
    linear = scores.contributions(scores.beta(0.6)).sum(axis=0)

    def z(x: NDArray[np.float64]) -> NDArray[np.float64]:
        spread = float(x.std())
        standard: NDArray[np.float64] = (x - x.mean()) / (spread if spread > 0 else 1.0)
        return standard

    blended = 0.6 * z(fused) + 0.4 * z(exact) if exact.std() > 0 else z(fused)
    assert (
        np.argsort(-linear, kind="stable").tolist() == np.argsort(-blended, kind="stable").tolist()
    )


@settings(max_examples=30, deadline=None, derandomize=True)
@given(seed=st.integers(0, 5), history=histories)
def test_slates_name_their_node_first_and_never_share_an_item(
    seed: int, history: list[int]
) -> None:
    query, seen = query_for(seed, history, [1.0, 1.0], True)
    result = slates(query, 1, 4, 5, Pool(exclude=set(seen)))
    assert result
    shown = [rec.item_id for slate in result for rec in slate.recommendations]
    assert len(shown) == len(set(shown))
    for slate in result:
        for rec in slate.recommendations:
            assert rec.nodes[0].node.node_id == slate.node.node_id
            assert abs(sum(n.contribution for n in rec.nodes) - rec.score) <= 1e-9 * max(
                1.0, abs(rec.score)
            )


def test_level_weights_change_what_comes_back() -> None:
    """With each level on its own time scale, the coarsest and the deepest level alone give
    different lists (every level on one scale gave the same list)."""
    history = [k % N_ITEMS for k in range(0, 120, 7)] + [1, 5, 9, 13, 17, 21]
    coarse, seen = query_for(1, history, [1.0, 0.0], False)
    fine, _ = query_for(1, history, [0.0, 1.0], False)
    first = [rec.item_id for rec in flat_list(coarse, 10, Pool(exclude=set(seen)))]
    second = [rec.item_id for rec in flat_list(fine, 10, Pool(exclude=set(seen)))]
    assert first != second


def test_interest_quota_gives_the_top_interests_a_place() -> None:
    history = [0, 4, 8, 12, 16, 20, 24, 1, 2, 3]
    query, seen = query_for(2, history, [1.0, 1.0], False)
    top = sorted((n for n in query.profile.nodes if n.level == 1), key=lambda n: -n.weight)[:3]
    results = flat_list(query, 5, Pool(exclude=set(seen)), interest_quota=3)
    rows = {node.node_id: k for k, node in enumerate(query.profile.nodes)}
    present = set()
    for rec in results:
        totals: dict[str, float] = {}
        for scored in rec.nodes:
            interest = query.profile.interests[rows[scored.node.node_id]]
            totals[interest] = totals.get(interest, 0.0) + scored.contribution
        present.add(max(totals, key=lambda i: totals[i]))
    assert {node.node_id for node in top} <= present
    assert [rec.score for rec in results] == sorted((rec.score for rec in results), reverse=True)
