"""`ReplicaSync` in process: two engines over one PostgreSQL schema, each with its own caches;
catch-ups bring one engine's indexes and model in line with the other's writes."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest

from taxonomy.engine import EngineConfig, InterestEngine
from taxonomy.models import Event, Item
from taxonomy.recommendation.training import CollaborativeConfig, CooccurrenceConfig
from taxonomy.recommendation.transitions import TransitionConfig
from taxonomy.storage.postgres import PostgresStore
from taxonomy.storage.postgres_replica import ReplicaSync

from ..taxonomy.helpers import START, catalog, make_engine, sample_events
from .backends import StoreBackend
from .postgres_server import PostgresServer

CONFIG = EngineConfig(
    collaborative=CollaborativeConfig(
        vectors=CooccurrenceConfig(dim=8), transitions=TransitionConfig(l2=1.0)
    ),
    collaborative_min_events=100,
)


async def replica(backend: StoreBackend, directory: Path) -> tuple[InterestEngine, ReplicaSync]:
    engine = await make_engine(directory, config=CONFIG, backend=backend)
    assert isinstance(engine.store, PostgresStore)
    sync = ReplicaSync(engine, engine.store, directory / "models")
    await sync.catch_up()
    return engine, sync


@pytest.fixture
def backend(postgres_server: PostgresServer) -> StoreBackend:
    return StoreBackend("postgres", postgres_server)


async def test_catch_up_applies_the_other_replicas_writes(
    backend: StoreBackend, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    a, sync_a = await replica(backend, tmp_path / "a")
    b, sync_b = await replica(backend, tmp_path / "b")
    try:
        await a.catalog.upsert_items(catalog())
        await a.events.record_events(sample_events(), None)
        assert len(b.catalog.index.index) == 0
        await sync_b.catch_up()
        assert sorted(b.catalog.index.index.ids()) == sorted(i.item_id for i in catalog())

        await a.catalog.delete_items(["scifi-space-0"], allow_missing=False)
        await a.catalog.upsert_items([Item(item_id="new", title="scifi time new")])
        await sync_b.catch_up()
        ids = set(b.catalog.index.index.ids())
        assert "scifi-space-0" not in ids and "new" in ids

        # A changed vector is applied; a replica's own writes are not inserted twice.
        vector = [0.0] * b.embedder.dim
        vector[3] = 1.0
        await a.catalog.upsert_items([Item(item_id="new", title="moved", vector=vector)])
        inserted: list[list[str]] = []
        own = a.catalog.index.index.upsert

        def counted(ids: list[str], matrix: object) -> None:
            inserted.append(list(ids))
            own(ids, matrix)  # type: ignore[arg-type]

        monkeypatch.setattr(a.catalog.index.index, "upsert", counted)
        await sync_a.catch_up()
        assert inserted == []
        await sync_b.catch_up()
        assert np.allclose(b.catalog.index.index.get_vectors(["new"])[0], vector)

        # Taxonomy labels of a tree built on A reach B's label index.
        await a.trees.build_tree("alice")
        assert len(b.taxonomy.index.index) == 0
        await sync_b.catch_up()
        assert sorted(b.taxonomy.index.index.ids()) == sorted(a.taxonomy.index.index.ids())
        assert (await b.trees.get_tree("alice")).nodes == (await a.trees.get_tree("alice")).nodes
    finally:
        await a.close()
        await b.close()
        a.store.close()
        b.store.close()


async def test_a_model_trained_on_one_replica_is_loaded_by_the_other(
    backend: StoreBackend, tmp_path: Path
) -> None:
    a, sync_a = await replica(backend, tmp_path / "a")
    b, sync_b = await replica(backend, tmp_path / "b")
    try:
        await a.catalog.upsert_items(catalog())
        items = [item.item_id for item in catalog()]
        events = [
            Event(
                user_id=f"u{u}",
                item_id=items[(u + step) % len(items)],
                event_time=START + timedelta(hours=step),
            )
            for u in range(40)
            for step in range(5)
        ]
        await a.events.record_events(events, None)
        assert await sync_a.refresh_if_stale()
        assert a.recommender.collaborative_event_count == len(events)
        assert b.recommender.collaborative_event_count is None

        # B holds no lock and trains nothing: it loads the stored model.
        assert not await sync_b.refresh_if_stale()
        assert b.recommender.collaborative_event_count == len(events)
        assert (tmp_path / "b" / "models").is_dir()
        # While A holds the training lock, B does not train even with new events.
        await b.events.record_events(events[:3], None)
        held = a.store.try_training_lock()  # type: ignore[attr-defined]
        assert held is not None
        try:
            assert not await sync_b.refresh_if_stale()
        finally:
            held.close()
        assert b.recommender.collaborative_event_count == len(events)
    finally:
        await a.close()
        await b.close()
        a.store.close()
        b.store.close()
