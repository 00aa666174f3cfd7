"""RefreshModels trains in a child process and swaps the model in while Recommend calls run: no
call fails, and a training that dies answers UNAVAILABLE with the old model still serving."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import grpc
import numpy as np
from interesttree.v1 import admin_pb2, catalog_pb2, interest_pb2, recommendation_pb2

from taxonomy.recommendation.model_files import MODEL_FILE

from ..conftest import RunningServer, data_only_settings, start_server
from ..taxonomy.test_collaborative_service import catalog, sequences
from ..taxonomy.test_refresh_process import paused_child
from .helpers import expect_code, reason

START = datetime(2024, 1, 1, tzinfo=UTC)
CLIENTS = 8


async def load(running: RunningServer, walks: list[list[str]], prefix: str) -> None:
    events = interest_pb2.RecordEventsRequest()
    for u, walk in enumerate(walks):
        for t, item in enumerate(walk):
            event = events.events.add(
                user=f"users/{prefix}{u}", item=f"items/{item}", type=interest_pb2.EVENT_TYPE_LIKE
            )
            event.event_time.FromDatetime(START + timedelta(hours=t))
    await running.stubs.interests.RecordEvents(events)


async def trained_server(tmp_path: Path) -> RunningServer:
    running = await start_server(data_only_settings(tmp_path / "data"))
    dim = running.runtime.engine.embedder.dim
    rng = np.random.default_rng(3)
    items = catalog_pb2.UpsertItemsRequest()
    for item in catalog():
        items.items.add(
            name=f"items/{item.item_id}",
            title=item.title,
            categories=item.categories,
            vector=rng.normal(size=dim).astype(np.float32).tolist(),
        )
    await running.stubs.catalog.UpsertItems(items)
    await load(running, sequences(260), "u")
    await running.stubs.admin.RefreshModels(admin_pb2.RefreshModelsRequest())
    assert running.runtime.engine.recommender.collaborative is not None
    await load(running, sequences(40, seed=9), "late")
    return running


async def test_a_model_swap_under_load_fails_no_request(tmp_path: Path) -> None:
    running = await trained_server(tmp_path)
    engine = running.runtime.engine
    before = engine.recommender.collaborative_event_count
    stop = asyncio.Event()
    answered: list[tuple[float, int]] = []
    failed: list[BaseException] = []

    async def client(n: int) -> None:
        while not stop.is_set():
            try:
                response = await running.stubs.recommender.Recommend(
                    recommendation_pb2.RecommendRequest(user=f"users/u{n}", page_size=5),
                    timeout=30,
                )
            except Exception as error:
                failed.append(error)
                continue
            answered.append((time.monotonic(), len(response.recommendations)))

    try:
        pause = tmp_path / "pause"
        engine.refresher.pause_file = pause
        clients = [asyncio.create_task(client(n)) for n in range(CLIENTS)]
        refresh = asyncio.ensure_future(
            running.stubs.admin.RefreshModels(admin_pb2.RefreshModelsRequest(), timeout=120)
        )
        await paused_child(pause, refresh)
        await asyncio.sleep(0.5)  # requests run against the old model while the child waits
        assert engine.recommender.collaborative_event_count == before
        pause.unlink()
        response = await refresh
        swapped_at = time.monotonic()
        await asyncio.sleep(0.5)  # and against the new one
        stop.set()
        await asyncio.gather(*clients)
    finally:
        stop.set()
        await running.stop()

    assert not failed, failed[:3]
    assert engine.recommender.collaborative_event_count == response.event_count != before
    assert all(count == 5 for _, count in answered)
    assert any(at > swapped_at for at, _ in answered)
    assert len(answered) > 2 * CLIENTS


async def test_a_killed_training_answers_unavailable_and_keeps_the_model(tmp_path: Path) -> None:
    running = await trained_server(tmp_path)
    engine = running.runtime.engine
    try:
        serving = engine.recommender.collaborative
        request = recommendation_pb2.RecommendRequest(user="users/u1", page_size=5)
        before = await running.stubs.recommender.Recommend(request)
        model_file = tmp_path / "data" / "models" / MODEL_FILE
        saved = model_file.read_bytes()
        pause = tmp_path / "pause"
        engine.refresher.pause_file = pause
        refresh = asyncio.ensure_future(
            running.stubs.admin.RefreshModels(admin_pb2.RefreshModelsRequest(), timeout=120)
        )
        os.kill(await paused_child(pause, refresh), signal.SIGKILL)
        error = await expect_code(refresh, grpc.StatusCode.UNAVAILABLE)
        assert reason(error) == "MODEL_TRAINING_FAILED"
        assert engine.recommender.collaborative is serving
        assert await running.stubs.recommender.Recommend(request) == before
        assert model_file.read_bytes() == saved

        engine.refresher.pause_file = None
        await running.stubs.admin.RefreshModels(admin_pb2.RefreshModelsRequest())
        assert engine.recommender.collaborative is not serving
    finally:
        await running.stop()
