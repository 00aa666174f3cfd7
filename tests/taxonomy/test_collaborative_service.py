"""Collaborative vectors learned by the service from recorded events, end to end in-process."""

from __future__ import annotations

import random
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from taxonomy.engine import EngineConfig, InterestEngine
from taxonomy.models import Event, Item
from taxonomy.ports import Embedder
from taxonomy.recommendation.model_files import MODEL_FILE
from taxonomy.recommendation.rerank import RerankConfig
from taxonomy.recommendation.service import RecommendQuery
from taxonomy.recommendation.training import CollaborativeConfig, CooccurrenceConfig
from taxonomy.recommendation.transitions import TransitionConfig
from taxonomy.storage.sqlite import SqliteStore

from ..storage.backends import StoreBackend

START = datetime(2024, 1, 1, tzinfo=UTC)
GENRES = ["Jazz", "Rock", "Folk", "Opera"]


class HashEmbedder:
    """Deterministic text vectors: these tests are about the collaborative space, not text."""

    @property
    def dim(self) -> int:
        return 16

    @property
    def name(self) -> str:
        return "hash"

    async def embed(self, texts: Sequence[str]) -> NDArray[np.float32]:
        rows = []
        for text in texts:
            rng = np.random.default_rng(abs(hash(text)) % (2**32))
            row = rng.normal(size=self.dim)
            rows.append(row / np.linalg.norm(row))
        return np.asarray(rows, dtype=np.float32)


def catalog() -> list[Item]:
    return [
        Item(
            item_id=f"{genre.lower()}-{k}", title=f"{genre} album {k}", categories=["Music", genre]
        )
        for genre in GENRES
        for k in range(10)
    ]


def sequences(users: int, seed: int = 7) -> list[list[str]]:
    """Each user walks one genre's albums in order: album k is followed by album k+1."""
    rng = random.Random(seed)
    walks = []
    for _ in range(users):
        genre = rng.choice(GENRES).lower()
        start = rng.randrange(0, 4)
        walks.append([f"{genre}-{k}" for k in range(start, start + rng.randrange(4, 7))])
    return walks


async def make_engine(
    tmp_path: Path, embedder: Embedder, backend: StoreBackend | None = None
) -> InterestEngine:
    engine = InterestEngine(
        backend.open(tmp_path) if backend else SqliteStore(tmp_path / "db.sqlite3"),
        tmp_path,
        embedder,
        None,
        EngineConfig(
            collaborative=CollaborativeConfig(
                vectors=CooccurrenceConfig(dim=16), transitions=TransitionConfig(l2=1.0)
            ),
            collaborative_min_events=100,
            rerank=RerankConfig(k=20),
        ),
    )
    await engine.start()
    return engine


async def test_service_learns_sequences_and_attributes_exactly(
    tmp_path: Path, store_backend: StoreBackend
) -> None:
    embedder = HashEmbedder()
    engine = await make_engine(tmp_path, embedder, store_backend)
    await engine.catalog.upsert_items(catalog())
    events = [
        Event(user_id=f"u{u}", item_id=item, event_time=START + timedelta(hours=t))
        for u, walk in enumerate(sequences(300))
        for t, item in enumerate(walk)
    ]
    await engine.events.record_events(events, None)
    refreshed = await engine.refresher.refresh_models()
    assert refreshed.event_count == len(events)

    probe = [
        Event(user_id="probe", item_id=f"folk-{k}", event_time=START + timedelta(days=30, hours=k))
        for k in range(3)
    ]
    await engine.events.record_events(probe, None)
    result = await engine.recommender.recommend(RecommendQuery("probe", 3))
    top = [rec.item_id for rec in result.recommendations]
    assert top[0] == "folk-3", top
    assert all(item.startswith("folk-") for item in top[:2])
    for rec in result.recommendations:
        assert rec.nodes
        assert {n.node.node_id for n in rec.nodes} <= {
            n.node_id for n in (await engine.trees.get_tree("probe")).nodes
        }
    await engine.close()

    # The trained model is on disk: a restarted engine serves the same ranking.
    again = await make_engine(tmp_path, embedder, store_backend)
    second = await again.recommender.recommend(RecommendQuery("probe", 3))
    assert [rec.item_id for rec in second.recommendations] == top
    await again.close()


async def test_too_few_events_keep_the_text_space(
    tmp_path: Path, store_backend: StoreBackend
) -> None:
    engine = await make_engine(tmp_path, HashEmbedder(), store_backend)
    await engine.catalog.upsert_items(catalog())
    await engine.events.record_events(
        [Event(user_id="solo", item_id="jazz-1", event_time=START)], None
    )
    assert not await engine.refresher.refresh_if_stale()
    result = await engine.recommender.recommend(RecommendQuery("solo", 5))
    assert len(result.recommendations) == 5
    await engine.close()


async def test_runtime_refreshes_collaborative_vectors_in_the_background(tmp_path: Path) -> None:
    import asyncio

    from server.app import Runtime
    from server.config import Settings
    from taxonomy.trees.naming import NamingMode

    settings = Settings(
        data_dir=tmp_path / "data",
        embedded_llm=False,
        naming_mode=NamingMode.OFF,
        model_refresh_interval_s=0.2,
    )
    runtime = await Runtime.create(settings)
    try:
        await runtime.engine.catalog.upsert_items(catalog())
        events = [
            Event(user_id=f"u{u}", item_id=item, event_time=START + timedelta(hours=t))
            for u, walk in enumerate(sequences(260))
            for t, item in enumerate(walk)
        ]
        assert len(events) >= runtime.engine.config.collaborative_min_events
        await runtime.engine.events.record_events(events, None)
        assert runtime.engine.recommender.collaborative_event_count is None
        await runtime.start_background()
        for _ in range(300):
            if runtime.engine.recommender.collaborative_event_count is not None:
                break
            await asyncio.sleep(0.2)
        assert runtime.engine.recommender.collaborative_event_count == len(events)
    finally:
        await runtime.close()


async def test_erasure_below_the_training_floor_drops_the_model(
    tmp_path: Path, store_backend: StoreBackend
) -> None:
    """A model trained on users who were then erased must not keep serving once too few events
    remain to retrain it, and must not come back from disk after a restart."""
    engine = await make_engine(tmp_path, HashEmbedder(), store_backend)
    await engine.catalog.upsert_items(catalog())
    walks = sequences(40)
    events = [
        Event(user_id=f"u{u}", item_id=item, event_time=START + timedelta(hours=t))
        for u, walk in enumerate(walks)
        for t, item in enumerate(walk)
    ]
    assert len(events) >= 100
    await engine.events.record_events(events, None)
    await engine.refresher.refresh_models()
    assert engine.recommender.collaborative is not None
    model_file = tmp_path / "models" / MODEL_FILE
    assert model_file.exists()

    for user in range(len(walks) // 2 + 5):
        await engine.delete_user(f"u{user}")
    assert engine.store.event_count() < 100
    await engine.refresher.refresh_models()
    assert engine.recommender.collaborative is None
    assert not model_file.exists()
    await engine.close()

    again = await make_engine(tmp_path, HashEmbedder(), store_backend)
    assert again.recommender.collaborative is None
    await again.close()
