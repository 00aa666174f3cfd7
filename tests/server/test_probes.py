"""Kubernetes' probes on the HTTP port (`/healthz`, `/readyz`) and server reflection v1.

- `/healthz` is liveness: 200 whenever the process answers, key or no key.
- `/readyz` is readiness: 200 only with the store answering, the models loaded and the
  services in rotation (as the gRPC health's `""` says), else 503; the body names each check.
- Reflection answers on `grpc.reflection.v1` as well as `grpc.reflection.v1alpha`.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
from google.protobuf import descriptor_pb2
from grpc_health.v1 import health
from grpc_reflection.v1alpha import reflection_pb2

from server.health import ServiceHealth
from server.http import HttpServer, _needed_role, create_http_app, start_http
from server.reflection import V1_SERVICE_NAME, V1ALPHA_SERVICE_NAME
from server.servicers import SERVICE_NAMES

from ..conftest import RunningServer


@pytest.fixture
async def http_probe(data_only_server: RunningServer) -> AsyncIterator[tuple[str, RunningServer]]:
    runtime = data_only_server.runtime
    app = create_http_app(runtime.engine, runtime.metrics, service_health=runtime.service_health)
    served: HttpServer = await start_http(app, "127.0.0.1", 0)
    try:
        yield f"http://127.0.0.1:{served.port}", data_only_server
    finally:
        await served.stop()


async def _ready(base_url: str) -> httpx.Response:
    """/readyz, once the background start-up has put the services in rotation (bounded)."""
    async with httpx.AsyncClient(base_url=base_url) as client:
        for _ in range(200):
            response = await client.get("/readyz")
            if response.status_code == 200:
                return response
            await asyncio.sleep(0.05)
        return response


async def test_healthz_is_liveness(http_probe: tuple[str, RunningServer]) -> None:
    base_url, _ = http_probe
    async with httpx.AsyncClient(base_url=base_url) as client:
        response = await client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}
    assert response.headers["Cache-Control"] == "no-store"


async def test_readyz_reports_store_models_and_model_state(
    http_probe: tuple[str, RunningServer],
) -> None:
    base_url, running = http_probe
    response = await _ready(base_url)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["status"] == "ready"
    checks = body["checks"]
    assert checks["store"] == {"ok": True}
    assert checks["models"]["ok"] is True
    assert checks["models"]["embedder"] == running.runtime.engine.embedder.name
    indexes = checks["models"]["indexes"]
    assert indexes == {name: n for name, (n, _) in running.runtime.engine.index_sizes().items()}
    # No language model configured: the services serve at once, and the state says so.
    assert checks["llm"] == {"ok": True, "state": "none"}


async def test_readyz_is_503_when_the_store_fails(
    http_probe: tuple[str, RunningServer], monkeypatch: pytest.MonkeyPatch
) -> None:
    base_url, running = http_probe
    assert (await _ready(base_url)).status_code == 200

    def broken(key: str) -> int:
        raise OSError("disk I/O error")

    monkeypatch.setattr(running.runtime.engine.store, "version", broken)
    async with httpx.AsyncClient(base_url=base_url) as client:
        response = await client.get("/readyz")
        alive = await client.get("/healthz")
    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "not ready"
    assert body["checks"]["store"] == {"ok": False, "error": "disk I/O error"}
    assert body["checks"]["models"]["ok"] is True
    # Liveness does not depend on the store: restarting would not help.
    assert alive.status_code == 200


async def test_readyz_follows_the_model_like_grpc_health(
    data_only_server: RunningServer,
) -> None:
    """With a model: 503 until it first answers, then 200, and 200 through a later outage
    (trees still come from the data), with the model's state in the body."""
    service_health = ServiceHealth(health.aio.HealthServicer(), SERVICE_NAMES)
    await service_health.set_services(False)
    app = create_http_app(data_only_server.runtime.engine, service_health=service_health)
    served = await start_http(app, "127.0.0.1", 0)
    states: list[tuple[int, dict[str, Any]]] = []
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{served.port}") as client:

            async def probe() -> None:
                response = await client.get("/readyz")
                states.append((response.status_code, response.json()["checks"]["llm"]))

            await probe()
            await service_health.set_model(False)
            await probe()
            await service_health.set_model(True)
            await service_health.set_services(True)
            await probe()
            await service_health.set_model(False)
            await probe()
    finally:
        await served.stop()
    assert states == [
        (503, {"ok": False, "state": "waiting"}),
        (503, {"ok": False, "state": "not_serving"}),
        (200, {"ok": True, "state": "serving"}),
        (200, {"ok": True, "state": "not_serving"}),
    ]


def test_probes_need_no_key() -> None:
    """With `require_auth`, the gate asks no key of the probes (as of gRPC health)."""
    assert _needed_role("/healthz") is None
    assert _needed_role("/readyz") is None
    assert _needed_role("/api/users") is not None


async def _reflect(
    channel: grpc.aio.Channel, service: str, requests: list[reflection_pb2.ServerReflectionRequest]
) -> list[reflection_pb2.ServerReflectionResponse]:
    call = channel.stream_stream(
        f"/{service}/ServerReflectionInfo",
        request_serializer=reflection_pb2.ServerReflectionRequest.SerializeToString,
        response_deserializer=reflection_pb2.ServerReflectionResponse.FromString,
    )
    return [response async for response in call(iter(requests))]


@pytest.mark.parametrize("service", [V1_SERVICE_NAME, V1ALPHA_SERVICE_NAME])
async def test_reflection_v1_and_v1alpha(data_only_server: RunningServer, service: str) -> None:
    listed, ours, itself = await _reflect(
        data_only_server.stubs.channel,
        service,
        [
            reflection_pb2.ServerReflectionRequest(list_services=""),
            reflection_pb2.ServerReflectionRequest(
                file_containing_symbol="interesttree.v1.RecommendationService"
            ),
            reflection_pb2.ServerReflectionRequest(file_containing_symbol=V1_SERVICE_NAME),
        ],
    )
    names = {entry.name for entry in listed.list_services_response.service}
    assert names >= {*SERVICE_NAMES, "grpc.health.v1.Health", V1_SERVICE_NAME}
    assert V1ALPHA_SERVICE_NAME in names
    files = [
        descriptor_pb2.FileDescriptorProto.FromString(raw)
        for raw in ours.file_descriptor_response.file_descriptor_proto
    ]
    assert "interesttree/v1/recommendation.proto" in {file.name for file in files}
    [v1] = [
        descriptor_pb2.FileDescriptorProto.FromString(raw)
        for raw in itself.file_descriptor_response.file_descriptor_proto
    ]
    assert v1.package == "grpc.reflection.v1"
    [method] = v1.service[0].method
    assert method.input_type == ".grpc.reflection.v1.ServerReflectionRequest"
    assert method.client_streaming and method.server_streaming


async def test_reflection_v1_tolerates_a_second_server(tmp_path: Path) -> None:
    """The v1 descriptor goes into the pool once; another server in the process reuses it."""
    from ..conftest import data_only_settings, start_server

    second = await start_server(data_only_settings(tmp_path / "data"))
    try:
        [listed] = await _reflect(
            second.stubs.channel,
            V1_SERVICE_NAME,
            [reflection_pb2.ServerReflectionRequest(list_services="")],
        )
    finally:
        await second.stop()
    assert V1_SERVICE_NAME in {entry.name for entry in listed.list_services_response.service}
