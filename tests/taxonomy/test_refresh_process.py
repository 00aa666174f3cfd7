"""Training in a child process: a training that dies or is cancelled leaves the previous model
serving and its file as it was; the next refresh trains again."""

from __future__ import annotations

import asyncio
import os
import signal
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from taxonomy.engine import InterestEngine
from taxonomy.errors import UnavailableError
from taxonomy.models import Event, Item
from taxonomy.recommendation.collaborative_space import build_retrieval
from taxonomy.recommendation.model_files import MODEL_FILE, load_index
from taxonomy.recommendation.service import RecommendQuery
from taxonomy.refresh.worker import StoreSpec

from ..storage.backends import StoreBackend
from .test_collaborative_service import START, HashEmbedder, catalog, make_engine, sequences


async def trained_engine(tmp_path: Path, backend: StoreBackend | None = None) -> InterestEngine:
    engine = await make_engine(tmp_path, HashEmbedder(), backend)
    await engine.catalog.upsert_items(catalog())
    await engine.events.record_events(walk_events(sequences(300)), None)
    await engine.refresher.refresh_models()
    assert engine.recommender.collaborative is not None
    probe = [
        Event(user_id="probe", item_id=f"folk-{k}", event_time=START + timedelta(days=30, hours=k))
        for k in range(3)
    ]
    await engine.events.record_events(probe, None)
    return engine


def walk_events(walks: list[list[str]], prefix: str = "u") -> list[Event]:
    return [
        Event(user_id=f"{prefix}{u}", item_id=item, event_time=START + timedelta(hours=t))
        for u, walk in enumerate(walks)
        for t, item in enumerate(walk)
    ]


async def ranking(engine: InterestEngine) -> list[tuple[str, float]]:
    result = await engine.recommender.recommend(RecommendQuery("probe", 5))
    return [(rec.item_id, rec.score) for rec in result.recommendations]


def written_pid(pause: Path) -> int | None:
    text = pause.read_text() if pause.exists() else ""
    return int(text) if text else None


async def paused_child(pause: Path, refresh: asyncio.Future[Any]) -> int:
    """The training child's pid, once it has trained and waits before saving."""
    for _ in range(1200):
        if (pid := written_pid(pause)) is not None:
            return pid
        if refresh.done():
            refresh.result()
            raise AssertionError("the refresh ended without pausing")
        await asyncio.sleep(0.05)
    raise AssertionError("the training child never paused")


def gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


async def test_a_killed_training_leaves_the_previous_model_serving(
    tmp_path: Path, store_backend: StoreBackend
) -> None:
    engine = await trained_engine(tmp_path, store_backend)
    serving = engine.recommender.collaborative
    before = await ranking(engine)
    model_file = tmp_path / "models" / MODEL_FILE
    saved = model_file.read_bytes()
    await engine.events.record_events(walk_events(sequences(100, seed=3), prefix="late"), None)

    engine.refresher.pause_file = tmp_path / "pause"
    refresh = asyncio.create_task(engine.refresher.refresh_models())
    pid = await paused_child(tmp_path / "pause", refresh)
    assert pid != os.getpid()  # trained in another process
    os.kill(pid, signal.SIGKILL)
    with pytest.raises(UnavailableError, match="previous model keeps serving"):
        await refresh

    assert engine.recommender.collaborative is serving
    assert await ranking(engine) == before
    assert model_file.read_bytes() == saved

    engine.refresher.pause_file = None
    result = await engine.refresher.refresh_models()
    assert result.event_count == engine.store.event_count()
    swapped = engine.recommender.collaborative
    assert swapped is not None and swapped.event_count == result.event_count
    assert model_file.read_bytes() != saved
    await engine.close()


async def test_a_training_that_raises_is_unavailable_and_the_next_one_trains(
    tmp_path: Path,
) -> None:
    engine = await trained_engine(tmp_path)
    serving = engine.recommender.collaborative
    await engine.events.record_events(walk_events(sequences(50, seed=5), prefix="late"), None)
    spec = engine.refresher._store_spec
    engine.refresher._store_spec = StoreSpec()  # names no store: the child raises on open
    with pytest.raises(UnavailableError) as raised:
        await engine.refresher.refresh_models()
    assert raised.value.reason == "MODEL_TRAINING_FAILED"
    assert engine.recommender.collaborative is serving

    engine.refresher._store_spec = spec
    await engine.refresher.refresh_models()
    current = engine.recommender.collaborative
    assert current is not None and current.event_count == engine.store.event_count()
    await engine.close()


async def test_a_cancelled_refresh_kills_its_training(tmp_path: Path) -> None:
    engine = await trained_engine(tmp_path)
    serving = engine.recommender.collaborative
    saved = (tmp_path / "models" / MODEL_FILE).read_bytes()
    await engine.events.record_events(walk_events(sequences(50, seed=5), prefix="late"), None)
    engine.refresher.pause_file = tmp_path / "pause"
    refresh = asyncio.create_task(engine.refresher.refresh_models())
    pid = await paused_child(tmp_path / "pause", refresh)
    refresh.cancel()
    with pytest.raises(asyncio.CancelledError):
        await refresh
    assert gone(pid)  # killed and reaped, not left to save a model nobody loads
    (tmp_path / "pause").unlink()
    assert engine.recommender.collaborative is serving
    assert (tmp_path / "models" / MODEL_FILE).read_bytes() == saved
    await engine.close()


async def test_an_item_upserted_while_the_child_trains_is_placed_in_the_new_model(
    tmp_path: Path,
) -> None:
    engine = await trained_engine(tmp_path)
    await engine.events.record_events(walk_events(sequences(50, seed=9), prefix="late"), None)
    engine.refresher.pause_file = tmp_path / "pause"
    refresh = asyncio.create_task(engine.refresher.refresh_models())
    await paused_child(tmp_path / "pause", refresh)
    # The child's snapshot is taken: this item reaches only the old model, by placement.
    await engine.catalog.upsert_items(
        [Item(item_id="folk-new", title="Folk album new", categories=["Music", "Folk"])]
    )
    old = engine.recommender.collaborative
    assert old is not None and "folk-new" in old.space.index
    (tmp_path / "pause").unlink()
    await refresh

    swapped = engine.recommender.collaborative
    assert swapped is not None and swapped is not old
    assert swapped.model.index_of("folk-new") is None  # not in the child's snapshot
    assert "folk-new" in swapped.space.index
    await engine.close()


async def test_the_child_builds_the_index_and_the_server_only_loads_it(tmp_path: Path) -> None:
    engine = await trained_engine(tmp_path)
    serving = engine.recommender.collaborative
    assert serving is not None
    saved = load_index(tmp_path / "models")
    assert saved is not None and set(saved.ids()) == set(serving.model.item_ids)

    live = set(serving.model.item_ids) - {"folk-0"}
    reused = build_retrieval(serving.model, serving.event_count, 64, live, saved)
    assert reused.space.index is saved  # the graph is loaded, not rebuilt
    assert "folk-0" not in saved and len(saved) == len(live)
    # An index of other items (another training's) is not trusted: the server builds its own.
    stale = load_index(tmp_path / "models")
    assert stale is not None
    stale.delete(["folk-1"])
    rebuilt = build_retrieval(serving.model, serving.event_count, 64, live, stale)
    assert rebuilt.space.index is not stale and set(rebuilt.space.index.ids()) == live
    await engine.close()
