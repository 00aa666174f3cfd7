"""Caller vectors and the item index: what validation accepts the index holds, an upsert is all
or nothing, and a stored vector the index cannot hold never stops the engine from starting."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import numpy as np
import pytest
from pydantic import ValidationError

from taxonomy.engine import EngineConfig
from taxonomy.errors import InternalError
from taxonomy.models import Item, unit_vector
from taxonomy.ports import CATALOG_VERSION_KEY, vectors_version_key
from taxonomy.recommendation.service import RecommendQuery
from taxonomy.recommendation.training import CollaborativeConfig, CooccurrenceConfig
from taxonomy.recommendation.transitions import TransitionConfig

from ..storage.backends import StoreBackend
from .helpers import DB_NAME, HashEmbedder, catalog, make_engine, sample_events

DIM = 384


@pytest.mark.parametrize("value", [1e20, 3.4e38, 1e-30, 1e-45])
def test_extreme_but_finite_vectors_have_a_direction(value: float) -> None:
    """float32 norms of these overflow (inf) or underflow (0); normalised in float64 they are
    all the same direction."""
    Item(item_id="a", title="A", vector=[value] * DIM)
    unit = unit_vector([value] * DIM)
    assert unit.dtype == np.float32
    np.testing.assert_allclose(unit, np.full(DIM, DIM**-0.5), rtol=1e-6)


def test_mixed_extremes_normalise_without_overflow() -> None:
    unit = unit_vector([3.4e38, -3.4e38] * (DIM // 2))
    np.testing.assert_allclose(np.linalg.norm(unit.astype(np.float64)), 1.0, rtol=1e-6)


def test_vectors_without_a_float32_direction_are_refused() -> None:
    refused = {
        "beyond-float32": [1e39] * DIM,  # inf as float32, the proto's type
        "below-float32": [1e-50] * DIM,  # 0 as float32
        "minus-zero": [-0.0] * DIM,
        "nan": [float("nan")] + [1.0] * (DIM - 1),
        "inf": [float("inf")] + [1.0] * (DIM - 1),
    }
    accepted = []
    for case, values in refused.items():
        try:
            Item(item_id="a", title="A", vector=values)
        except ValidationError as error:
            if error.errors()[0]["loc"] != ("vector",):
                accepted.append(f"{case} refused for another field")
        else:
            accepted.append(case)
    assert accepted == []


async def test_extreme_caller_vectors_are_stored_and_indexed_as_unit_vectors(
    tmp_path: Path, store_backend: StoreBackend
) -> None:
    engine = await make_engine(tmp_path, embedder=HashEmbedder(DIM), backend=store_backend)
    values = {"big": 1e20, "huge": 3.4e38, "tiny": 1e-30}
    items = [Item(item_id=k, title=k, vector=[v] * DIM) for k, v in values.items()]
    await engine.catalog.upsert_items(items)
    stored = engine.catalog.index.index.get_vectors(list(values))
    np.testing.assert_allclose(np.linalg.norm(stored, axis=1), 1.0, rtol=1e-5)
    assert set(await engine.catalog.get_items(list(values))) == set(values)
    await engine.close()


async def test_an_upsert_the_index_would_refuse_stores_nothing(
    tmp_path: Path, store_backend: StoreBackend
) -> None:
    engine = await make_engine(
        tmp_path, embedder=HashEmbedder(zero_for="void"), backend=store_backend
    )
    before = engine.store.version(CATALOG_VERSION_KEY)
    good = Item(item_id="good", title="Good book")
    with pytest.raises(InternalError):
        await engine.catalog.upsert_items([good, Item(item_id="void", title="void")])
    assert await engine.catalog.get_items(["good", "void"]) == {}
    assert engine.store.version(CATALOG_VERSION_KEY) == before
    assert len(engine.catalog.index.index) == 0
    await engine.close()


async def test_an_index_failure_after_the_commit_leaves_store_and_index_agreeing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, store_backend: StoreBackend
) -> None:
    engine = await make_engine(tmp_path, backend=store_backend)
    await engine.catalog.upsert_items(catalog()[:2])

    def broken_upsert(*args: object) -> None:
        raise RuntimeError("index out of memory")

    monkeypatch.setattr(engine.catalog.index.index, "upsert", broken_upsert)
    await engine.catalog.upsert_items(catalog()[2:4])
    stored = {item.item_id for item in await engine.catalog.list_items("", 100)}
    assert stored == {item.item_id for item in catalog()[:4]}
    assert set(engine.catalog.index.index.ids()) == stored
    await engine.close()


def poison(db: Path, dim: int) -> None:
    """Writes vectors no index can hold straight into the file, as a bad version might have."""
    bad = {
        "zero": np.zeros(dim, dtype=np.float32).tobytes(),
        "nan": np.full(dim, np.nan, dtype=np.float32).tobytes(),
        "short": np.ones(3, dtype=np.float32).tobytes(),
        "ragged": b"\x00\x01\x02",
    }
    with sqlite3.connect(db) as conn:
        for item_id, blob in bad.items():
            conn.execute(
                "INSERT INTO items (item_id, title, description, categories, tags, update_time) "
                "VALUES (?, ?, '', '[]', '[]', 0)",
                (item_id, item_id),
            )
            conn.execute(
                "INSERT INTO item_vectors (item_id, space, vector) VALUES (?, 'text', ?)",
                (item_id, blob),
            )
        for key in (CATALOG_VERSION_KEY, vectors_version_key("text")):
            conn.execute("UPDATE meta SET value = value + 1 WHERE key = ?", (key,))
        # And the event the request stored: float seconds of year 10000.
        conn.execute(
            "INSERT INTO events (user_id, item_id, event_type, event_time) "
            "VALUES ('alice', 'scifi-space-0', 1, 253402300800.0)"
        )


async def test_poisoned_rows_never_stop_the_engine(tmp_path: Path) -> None:
    embedder = HashEmbedder()
    config = EngineConfig(
        collaborative=CollaborativeConfig(
            vectors=CooccurrenceConfig(dim=8), transitions=TransitionConfig(l2=1.0)
        ),
        collaborative_min_events=1,
    )
    engine = await make_engine(tmp_path, embedder=embedder, config=config)
    await engine.catalog.upsert_items(catalog())
    await engine.events.record_events(sample_events(), None)
    await engine.close()  # saves the index clean, at the store's version
    engine.store.close()
    poison(tmp_path / DB_NAME, embedder.dim)

    again = await make_engine(tmp_path, embedder=embedder, config=config)
    assert set(again.catalog.index.index.ids()) == {item.item_id for item in catalog()}
    for user_id in ("alice", "bob"):
        result = await again.recommender.recommend(RecommendQuery(user_id, 3))
        assert len(result.recommendations) == 3
    tree = await again.trees.get_tree("alice")
    assert tree.event_count == 5  # the unreadable event is skipped
    # Training reads every user's events, the unreadable one included.
    assert (await again.refresher.refresh_models()).event_count == 11
    await again.close()
    again.store.close()
