"""The language model's own health status: NOT_SERVING while its probes fail, SERVING once
they pass again, while the interesttree.v1 services stay in rotation throughout."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from aiohttp import web
from grpc_health.v1 import health_pb2, health_pb2_grpc

from server.config import Settings
from server.health import MODEL_SERVICE
from taxonomy.trees.naming import NamingMode

from ..conftest import RunningServer, start_server

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


@dataclass
class FlakyModel:
    """An OpenAI-compatible chat endpoint that answers every probe, or fails every request."""

    up: bool = True

    async def chat(self, request: web.Request) -> web.Response:
        if not self.up:
            return web.json_response({"error": {"message": "down"}}, status=400)
        body = await request.json()
        return web.json_response(
            {
                "id": "cmpl-1",
                "object": "chat.completion",
                "created": 0,
                "model": body["model"],
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": json.dumps({"ok": True})},
                        "finish_reason": "stop",
                    }
                ],
                "usage": {"prompt_tokens": 5, "completion_tokens": 3, "total_tokens": 8},
            }
        )


@pytest.fixture
async def flaky_model() -> AsyncIterator[tuple[str, FlakyModel]]:
    model = FlakyModel()
    app = web.Application()
    app.router.add_post("/v1/chat/completions", model.chat)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    yield f"http://127.0.0.1:{runner.addresses[0][1]}/v1", model
    await runner.cleanup()


async def wait_for(
    watch: grpc.aio.UnaryStreamCall[health_pb2.HealthCheckRequest, health_pb2.HealthCheckResponse],
    status: int,
) -> None:
    async for response in watch:
        if response.status == status:
            return
    raise AssertionError("the health stream ended")


async def test_model_outage_shows_on_its_own_service_only(
    tmp_path: Path, flaky_model: tuple[str, FlakyModel]
) -> None:
    url, model = flaky_model
    settings = Settings(
        data_dir=tmp_path / "data",
        llm_url=url,
        llm_model="fake",
        naming_mode=NamingMode.CHOOSE,
        embedded_llm=False,
        port=0,
        llm_probe_interval_s=0.05,
        llm_probe_timeout_s=5.0,
    )
    running: RunningServer = await start_server(settings)
    try:
        health = health_pb2_grpc.HealthStub(running.stubs.channel)
        watch = health.Watch(health_pb2.HealthCheckRequest(service=MODEL_SERVICE), timeout=60)
        await wait_for(watch, SERVING)
        overall = await health.Check(health_pb2.HealthCheckRequest(service=""))
        assert overall.status == SERVING

        model.up = False
        await wait_for(watch, NOT_SERVING)
        for service in ("", "interesttree.v1.InterestService"):
            checked = await health.Check(health_pb2.HealthCheckRequest(service=service))
            assert checked.status == SERVING, service

        model.up = True
        await wait_for(watch, SERVING)
        watch.cancel()
    finally:
        await running.stop()


async def test_without_a_model_there_is_no_model_service(data_only_server: RunningServer) -> None:
    health = health_pb2_grpc.HealthStub(data_only_server.stubs.channel)
    watch = health.Watch(health_pb2.HealthCheckRequest(service=""), timeout=60)
    await wait_for(watch, SERVING)
    watch.cancel()
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await health.Check(health_pb2.HealthCheckRequest(service=MODEL_SERVICE))
    assert raised.value.code() == grpc.StatusCode.NOT_FOUND
