"""Negative feedback (EVENT_TYPE_DISLIKE, EVENT_TYPE_HIDE), pinned by property tests:

- a hidden item never comes back: not in Recommend (include_seen, candidate_items, an interest
  quota) nor in any RecommendByInterest slate, even when the user later likes it;
- a disliked item pushes similar items down: against the same user without the dislike, every
  item's score drops by λ·W·(d·x), W > 0, so the more similar to the disliked item, the larger
  the drop (Qdrant's negative examples), and the most similar item never ranks higher;
- negative events are no interest: the tree is the same with and without them.

Each example runs a fresh engine (SQLite, HNSW, caller vectors) through the Recommender.
"""

from __future__ import annotations

import asyncio
import tempfile
from datetime import timedelta
from pathlib import Path

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from taxonomy.engine import EngineConfig, InterestEngine
from taxonomy.events.history import negative_feedback, summarize_history
from taxonomy.models import Event, EventType, Item
from taxonomy.recommendation.candidates import ItemFilter
from taxonomy.recommendation.negative import DEFAULT_DISLIKE_WEIGHT
from taxonomy.recommendation.service import InterestSlatesQuery, RecommendQuery

from .helpers import START, HashEmbedder, make_engine

DIM = 16
N_ITEMS = 32
GENRES = ("jazz", "rock", "folk", "opera")
IDS = [f"i{k}" for k in range(N_ITEMS)]


def _catalog(seed: int) -> list[Item]:
    rng = np.random.default_rng(seed)
    return [
        Item(
            item_id=IDS[k],
            title=f"item {k}",
            categories=["Music", GENRES[k % 4], f"sub{k % 8}"],
            vector=rng.normal(size=DIM).tolist(),
        )
        for k in range(N_ITEMS)
    ]


def _events(user: str, items: list[int], kind: EventType, first_minute: int) -> list[Event]:
    return [
        Event(
            user_id=user,
            item_id=IDS[k],
            event_type=kind,
            event_time=START + timedelta(minutes=first_minute + n),
        )
        for n, k in enumerate(items)
    ]


async def _engine(folder: Path, seed: int) -> InterestEngine:
    engine = await make_engine(folder, embedder=HashEmbedder(DIM))
    await engine.catalog.upsert_items(_catalog(seed))
    return engine


histories = st.lists(st.integers(0, N_ITEMS - 1), min_size=4, max_size=12, unique=True)


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.integers(0, 2**16),
    liked=histories,
    hidden=st.lists(st.integers(0, N_ITEMS - 1), min_size=1, max_size=5, unique=True),
    liked_again=st.booleans(),
)
def test_a_hidden_item_never_comes_back(
    seed: int, liked: list[int], hidden: list[int], liked_again: bool
) -> None:
    async def scenario(folder: Path) -> None:
        engine = await _engine(folder, seed)
        try:
            events = _events("u", liked, EventType.LIKE, 0)
            events += _events("u", hidden, EventType.HIDE, 100)
            if liked_again:  # a later like does not bring a hidden item back
                events += _events("u", hidden, EventType.LIKE, 200)
            await engine.events.record_events(events, None)
            gone = {IDS[k] for k in hidden}
            everything = tuple(IDS)
            for query in (
                RecommendQuery("u", N_ITEMS),
                RecommendQuery("u", N_ITEMS, include_seen=True),
                RecommendQuery(
                    "u",
                    N_ITEMS,
                    include_seen=True,
                    item_filter=ItemFilter(candidate_items=everything),
                ),
                RecommendQuery("u", 5, include_seen=True, interest_quota=3),
                RecommendQuery(
                    "u",
                    N_ITEMS,
                    include_seen=True,
                    item_filter=ItemFilter(categories=(("Music",),)),
                ),
            ):
                result = await engine.recommender.recommend(query)
                returned = {rec.item_id for rec in result.recommendations}
                assert not returned & gone, (query, returned & gone)
                if query.include_seen and query.item_filter.candidate_items:
                    # Everything else may come back: hiding removes exactly the hidden items.
                    assert returned == set(IDS) - gone
            for level in (0, 1):
                slates = await engine.recommender.recommend_by_interest(
                    InterestSlatesQuery("u", level, 10, N_ITEMS, include_seen=True)
                )
                for slate in slates.slates:
                    assert not {rec.item_id for rec in slate.recommendations} & gone
        finally:
            await engine.close()
            engine.store.close()

    with tempfile.TemporaryDirectory() as folder:
        asyncio.run(scenario(Path(folder)))


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**16), liked=histories, disliked=st.integers(0, N_ITEMS - 1))
def test_a_disliked_item_pushes_similar_items_down(
    seed: int, liked: list[int], disliked: int
) -> None:
    liked = [k for k in liked if k != disliked] or [(disliked + 1) % N_ITEMS]

    async def scenario(folder: Path) -> None:
        engine = await _engine(folder, seed)
        try:
            positive_a = _events("plain", liked, EventType.LIKE, 0)
            positive_b = _events("picky", liked, EventType.LIKE, 0)
            dislike = _events("picky", [disliked], EventType.DISLIKE, 50)
            await engine.events.record_events(positive_a + positive_b + dislike, None)
            plain_tree = (await engine.trees.build_tree("plain")).tree
            picky_tree = (await engine.trees.build_tree("picky")).tree
            # A dislike is no interest: the same tree, node for node.
            assert [(n.label, n.weight, n.evidence_items) for n in plain_tree.nodes] == [
                (n.label, n.weight, n.evidence_items) for n in picky_tree.nodes
            ]
            assert IDS[disliked] not in {i for n in picky_tree.nodes for i in n.evidence_items}
            others = tuple(i for k, i in enumerate(IDS) if k not in liked and k != disliked)
            only = ItemFilter(candidate_items=others)
            plain = await engine.recommender.recommend(
                RecommendQuery("plain", len(others), item_filter=only)
            )
            picky = await engine.recommender.recommend(
                RecommendQuery("picky", len(others), item_filter=only)
            )
            before = {rec.item_id: rec.score for rec in plain.recommendations}
            after = {rec.item_id: rec.score for rec in picky.recommendations}
            assert set(before) == set(after) == set(others)
            # Contributions still add up to every score.
            for rec in picky.recommendations:
                assert abs(sum(n.contribution for n in rec.nodes) - rec.score) < 1e-6
            vectors = dict(zip(IDS, engine.catalog.index.index.get_vectors(IDS), strict=True))
            target = vectors[IDS[disliked]].astype(np.float64)
            similarity = {i: float(vectors[i].astype(np.float64) @ target) for i in others}
            drop = {i: before[i] - after[i] for i in others}
            # drop(x) = λ·W·(d·x) with one W > 0 for all items: fit it on the most similar item.
            anchor = max(others, key=lambda i: abs(similarity[i]))
            scale = drop[anchor] / similarity[anchor]
            assert scale > 0
            assert scale >= DEFAULT_DISLIKE_WEIGHT * 0.01
            for i in others:
                assert abs(drop[i] - scale * similarity[i]) < 1e-4, (i, drop[i], similarity[i])
            # So the ranking moves against the disliked item's neighbours: the most similar
            # item never ranks higher than it did without the dislike.
            closest = max(others, key=lambda i: similarity[i])
            rank_before = [r.item_id for r in plain.recommendations].index(closest)
            rank_after = [r.item_id for r in picky.recommendations].index(closest)
            assert rank_after >= rank_before
        finally:
            await engine.close()
            engine.store.close()

    with tempfile.TemporaryDirectory() as folder:
        asyncio.run(scenario(Path(folder)))


def test_negative_feedback_reads_hides_dislikes_and_revocations() -> None:
    events = (
        _events("u", [1, 2, 3], EventType.DISLIKE, 0)
        + _events("u", [4], EventType.HIDE, 10)
        + _events("u", [2], EventType.LIKE, 20)  # revokes the dislike of i2
        + _events("u", [3], EventType.VIEW, 30)  # a view does not
        + [
            Event(
                user_id="u",
                item_id="i5",
                event_type=EventType.DISLIKE,
                event_time=START + timedelta(minutes=40),
                weight=3.0,
            )
        ]
    )
    feedback = negative_feedback(events)
    assert feedback.hidden == {"i4"}
    assert dict(feedback.disliked) == {"i1": 1.0, "i3": 1.0, "i5": 3.0}
    history = summarize_history(events, half_life_events=50)
    # Only interest counts: the like of i2 and the view of i3, neither dislike nor hide.
    assert {entry.item_id for entry in history} == {"i2", "i3"}


def test_dislike_weight_sets_how_hard_a_dislike_pushes() -> None:
    """`dislike_weight` (the `dislike_weight` setting) scales the push linearly: 0 leaves every
    score as it is without the dislike, and doubling it doubles every item's drop."""
    liked, disliked = [0, 1, 2, 3, 4], 5
    others = tuple(i for k, i in enumerate(IDS) if k not in liked and k != disliked)

    async def drops(folder: Path, weight: float) -> dict[str, float]:
        engine = await make_engine(
            folder,
            embedder=HashEmbedder(DIM),
            config=EngineConfig(collaborative=None, dislike_weight=weight),
        )
        try:
            await engine.catalog.upsert_items(_catalog(7))
            await engine.events.record_events(
                _events("plain", liked, EventType.LIKE, 0)
                + _events("picky", liked, EventType.LIKE, 0)
                + _events("picky", [disliked], EventType.DISLIKE, 50),
                None,
            )
            only = ItemFilter(candidate_items=others)
            scores = []
            for user in ("plain", "picky"):
                result = await engine.recommender.recommend(
                    RecommendQuery(user, len(others), item_filter=only)
                )
                scores.append({rec.item_id: rec.score for rec in result.recommendations})
            return {i: scores[0][i] - scores[1][i] for i in others}
        finally:
            await engine.close()
            engine.store.close()

    measured = {}
    for weight in (0.0, 0.5, 1.0):
        with tempfile.TemporaryDirectory() as folder:
            measured[weight] = asyncio.run(drops(Path(folder), weight))
    assert max(abs(d) for d in measured[0.0].values()) < 1e-9
    assert max(abs(d) for d in measured[0.5].values()) > 1e-4
    for i in others:
        assert abs(measured[1.0][i] - 2 * measured[0.5][i]) < 1e-6, i
