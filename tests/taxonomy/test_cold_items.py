"""Items without events are placed in the collaborative space from their text or caller
vectors: at training time (in the model and its index) and after it (`place`), and the map
that places them survives a save and load; in the service, an item upserted after training is
recommended before any event. Real trainer, real HNSW index."""

from __future__ import annotations

import random
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from taxonomy.engine import EngineConfig, InterestEngine
from taxonomy.models import Event, Item
from taxonomy.recommendation.collaborative_space import build_retrieval, train_collaborative
from taxonomy.recommendation.model_files import MODEL_FILE, load_model, save_model
from taxonomy.recommendation.service import RecommendQuery
from taxonomy.recommendation.training import CollaborativeConfig, CooccurrenceConfig
from taxonomy.recommendation.transitions import TransitionConfig
from taxonomy.storage.sqlite import SqliteStore

GROUPS = 12
PER_GROUP = 10
FEATURE_DIM = 24
T0 = datetime(2024, 1, 1, tzinfo=UTC)
CONFIG = CollaborativeConfig(
    vectors=CooccurrenceConfig(dim=16),
    transitions=TransitionConfig(window=3, profile_weight=0.0, l2=1.0),
)


def item(group: int, k: int) -> str:
    return f"g{group}i{k}"


def feature(rng: np.random.Generator, group: int) -> np.ndarray:
    """A group's direction plus noise: items of a group read alike."""
    centre = np.zeros(FEATURE_DIM)
    centre[group] = 1.0
    return (centre + 0.15 * rng.standard_normal(FEATURE_DIM)).astype(np.float32)


def world(seed: int = 1) -> tuple[list[list[Event]], list[str], np.ndarray]:
    """Users consume items of one group; item ``k = 0`` of every group has no events."""
    rng = random.Random(seed)
    sequences: list[list[Event]] = []
    for user in range(300):
        group = rng.randrange(GROUPS)
        items = [item(group, k) for k in range(1, PER_GROUP)]
        rng.shuffle(items)
        sequences.append(
            [
                Event(user_id=f"u{user}", item_id=i, event_time=T0 + timedelta(minutes=t))
                for t, i in enumerate(items[:5])
            ]
        )
    nrng = np.random.default_rng(seed)
    ids = [item(g, k) for g in range(GROUPS) for k in range(PER_GROUP)]
    matrix = np.stack([feature(nrng, g) for g in range(GROUPS) for _ in range(PER_GROUP)])
    return sequences, ids, matrix


def test_a_cold_item_is_in_the_model_and_retrievable() -> None:
    sequences, ids, matrix = world()
    model = train_collaborative(sequences, CONFIG, (ids, matrix))
    assert model.feature_map is not None and model.feature_map.shape == (FEATURE_DIM, 16)
    cold = [item(g, 0) for g in range(GROUPS)]
    assert all(model.index_of(c) is not None for c in cold)
    norms = np.linalg.norm(model.item_vectors, axis=1)
    cold_rows = [row for c in cold if (row := model.index_of(c)) is not None]
    learned = np.ones(len(model.item_ids), dtype=bool)
    learned[cold_rows] = False
    np.testing.assert_allclose(norms[learned], 1.0, atol=1e-5)
    # Placed vectors are shorter: as long as the map agrees with the learned vectors.
    assert 0.05 <= model.feature_scale < 1.0
    np.testing.assert_allclose(norms[cold_rows], model.feature_scale, atol=1e-5)
    retrieval = build_retrieval(model, 0, 64, set(model.item_ids))
    hits = 0
    for g in range(GROUPS):
        history = [item(g, k) for k in range(1, 6)]
        user = retrieval.space.query_vectors(history).sum(axis=0)
        found = [i for i, _ in retrieval.space.index.query(user, 5, exclude=set(history))]
        hits += item(g, 0) in found
    # The cold item is among the 5 best of its own group's users for nearly every group.
    assert hits >= GROUPS - 1


def test_an_item_upserted_after_training_is_placed_and_retrievable(tmp_path: Path) -> None:
    sequences, ids, matrix = world()
    keep = [k for k, i in enumerate(ids) if not i.endswith("i0")]
    model = train_collaborative(sequences, CONFIG, ([ids[k] for k in keep], matrix[keep]))
    assert model.index_of(item(3, 0)) is None

    save_model(tmp_path, model, 1500)
    with np.load(tmp_path / MODEL_FILE) as saved:
        assert "context_vectors" not in saved.files  # symmetric: saved once
    loaded = load_model(tmp_path)
    assert loaded is not None
    again, count = loaded
    assert count == 1500 and again.feature_map is not None and model.feature_map is not None
    np.testing.assert_array_equal(again.feature_map, model.feature_map)
    assert again.feature_scale == model.feature_scale
    np.testing.assert_array_equal(again.context_vectors, model.context_vectors)

    retrieval = build_retrieval(again, count, 64, set(again.item_ids))
    new = np.stack([feature(np.random.default_rng(9), 3)])
    # A learned item keeps its learned vector; only the unknown one is placed.
    assert retrieval.place([item(3, 0), item(3, 1)], np.concatenate([new, new])) == [item(3, 0)]
    assert retrieval.space.has_vector(item(3, 0))
    history = [item(3, k) for k in range(1, 6)]
    user = retrieval.space.query_vectors(history).sum(axis=0)
    found = [i for i, _ in retrieval.space.index.query(user, 5, exclude=set(history))]
    assert item(3, 0) in found
    # A placed item in a history is part of the query, like any other.
    assert retrieval.space.query_vectors([item(3, 0), "never-seen", item(3, 1)]).shape == (2, 16)
    retrieval.forget([item(3, 0)])
    assert not retrieval.space.has_vector(item(3, 0))
    assert retrieval.place(["x"], np.ones((1, FEATURE_DIM + 1), np.float32)) == []


class GenreEmbedder:
    """Text vectors that say which genre an item is (its title's first word), plus noise;
    other texts (tree labels) are noise alone."""

    genres = ("Jazz", "Rock", "Folk", "Opera")

    @property
    def dim(self) -> int:
        return 8

    @property
    def name(self) -> str:
        return "genre"

    async def embed(self, texts: Sequence[str]) -> NDArray[np.float32]:
        rows = []
        for text in texts:
            rng = np.random.default_rng(sum(map(ord, text)))
            row = 0.2 * rng.standard_normal(self.dim)
            first = text.split()[0] if text else ""
            if first in self.genres:
                row[self.genres.index(first)] += 1.0
            rows.append(row / np.linalg.norm(row))
        return np.asarray(rows, dtype=np.float32)


async def test_an_item_upserted_to_the_service_is_recommended_before_any_event(
    tmp_path: Path,
) -> None:
    genres = GenreEmbedder.genres
    engine = InterestEngine(
        SqliteStore(tmp_path / "db.sqlite3"),
        tmp_path,
        GenreEmbedder(),
        None,
        EngineConfig(
            collaborative=CollaborativeConfig(
                vectors=CooccurrenceConfig(dim=8), transitions=TransitionConfig(l2=1.0)
            ),
            collaborative_min_events=100,
        ),
    )
    await engine.start()
    try:
        await engine.catalog.upsert_items(
            [
                Item(item_id=f"{g.lower()}-{k}", title=f"{g} album {k}")
                for g in genres
                for k in range(8)
            ]
        )
        rng = random.Random(3)
        events = []
        for user in range(200):
            genre = rng.choice(genres).lower()
            walk = [f"{genre}-{k}" for k in rng.sample(range(8), 5)]
            events += [
                Event(user_id=f"u{user}", item_id=item, event_time=T0 + timedelta(hours=t))
                for t, item in enumerate(walk)
            ]
        await engine.events.record_events(events, None)
        await engine.refresher.refresh_models()
        retrieval = engine.recommender.collaborative
        assert retrieval is not None and retrieval.model.feature_map is not None

        await engine.catalog.upsert_items([Item(item_id="folk-new", title="Folk album new")])
        assert retrieval.space.has_vector("folk-new")
        probe = [
            Event(user_id="probe", item_id=f"folk-{k}", event_time=T0 + timedelta(days=30, hours=k))
            for k in range(8)
        ]
        await engine.events.record_events(probe, None)
        result = await engine.recommender.recommend(RecommendQuery("probe", 3))
        assert "folk-new" in [rec.item_id for rec in result.recommendations]
        # Once taken, the placed item is part of the user's history and query.
        await engine.events.record_events(
            [Event(user_id="probe", item_id="folk-new", event_time=T0 + timedelta(days=31))], None
        )
        again = await engine.recommender.recommend(RecommendQuery("probe", 3, include_seen=True))
        assert again.recommendations
    finally:
        await engine.close()
