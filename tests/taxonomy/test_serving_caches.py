"""The hot path's caches (the parsed tree per stored revision, the decoded events per user's
event stamp) never serve what the store no longer says: a new event, a new revision, a deleted
item, a deleted and re-created user each show at the next Recommend, on both backends."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from taxonomy.engine import InterestEngine
from taxonomy.models import Event
from taxonomy.recommendation.service import RecommendQuery

from ..storage.backends import StoreBackend
from .helpers import START, catalog, history, make_engine, sample_events


async def _engine(tmp_path: Path, store_backend: StoreBackend) -> InterestEngine:
    engine = await make_engine(tmp_path, backend=store_backend)
    await engine.catalog.upsert_items(catalog())
    await engine.events.record_events(sample_events(), None)
    return engine


def _query(user: str = "alice") -> RecommendQuery:
    return RecommendQuery(user_id=user, page_size=12)


async def test_a_new_event_changes_the_recommendations(
    tmp_path: Path, store_backend: StoreBackend
) -> None:
    engine = await _engine(tmp_path, store_backend)
    try:
        first = await engine.recommender.recommend(_query())
        seen = first.recommendations[0].item_id
        later = Event(user_id="alice", item_id=seen, event_time=START + timedelta(days=3))
        await engine.events.record_events([later], None)
        second = await engine.recommender.recommend(_query())
        assert seen not in {rec.item_id for rec in second.recommendations}
        assert second.tree_revision == first.tree_revision
    finally:
        await engine.close()


async def test_a_new_revision_is_served_at_once(
    tmp_path: Path, store_backend: StoreBackend
) -> None:
    engine = await _engine(tmp_path, store_backend)
    try:
        first = await engine.recommender.recommend(_query())
        built = await engine.trees.build_tree("alice")
        assert built.tree.revision == first.tree_revision + 1
        assert (await engine.recommender.recommend(_query())).tree_revision == built.tree.revision
        assert (await engine.trees.get_tree("alice")).revision == built.tree.revision
    finally:
        await engine.close()


async def test_a_deleted_item_is_never_cited_by_a_cached_tree(
    tmp_path: Path, store_backend: StoreBackend
) -> None:
    engine = await _engine(tmp_path, store_backend)
    try:
        first = await engine.recommender.recommend(_query())
        tree = await engine.trees.get_tree("alice")  # cached now
        cited = tree.nodes[0].evidence_items[0]
        await engine.catalog.delete_items([cited], allow_missing=False)
        served = await engine.trees.get_tree("alice")
        assert served.revision == first.tree_revision + 1
        assert all(cited not in node.evidence_items for node in served.nodes)
        after = await engine.recommender.recommend(_query())
        assert after.tree_revision == served.revision
        for rec in after.recommendations:
            assert rec.item_id != cited and cited not in rec.because
            assert all(cited not in scored.node.evidence_items for scored in rec.nodes)
    finally:
        await engine.close()


async def test_a_recreated_user_gets_a_tree_of_the_new_history(
    tmp_path: Path, store_backend: StoreBackend
) -> None:
    engine = await _engine(tmp_path, store_backend)
    try:
        await engine.recommender.recommend(_query())  # alice's science fiction tree, cached
        await engine.delete_user("alice")
        horror = [item.item_id for item in catalog() if item.item_id.startswith("horror")][:5]
        await engine.events.record_events(history("alice", horror), None)
        result = await engine.recommender.recommend(_query())
        tree = await engine.trees.get_tree("alice")
        # Revision numbers start again after DeleteUser: the cache must not match on them.
        assert result.tree_revision == tree.revision == 1
        cited = {item for node in tree.nodes for item in node.evidence_items}
        assert cited <= set(horror)
        assert not {rec.item_id for rec in result.recommendations} & set(horror)
    finally:
        await engine.close()
