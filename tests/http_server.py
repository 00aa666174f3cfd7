"""A real in-process server with its HTTP port (review page, /metrics) on free ports, for
tests/server/test_metrics.py and tests/server/test_review_page.py."""

from __future__ import annotations

from dataclasses import dataclass

import grpc

from server.app import Runtime, create_server
from server.config import Settings
from server.http import HttpServer, create_http_app, start_http

from .conftest import RunningServer, make_stubs


@dataclass
class ServerWithHttp:
    running: RunningServer
    http: HttpServer

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.http.port}"

    async def stop(self) -> None:
        await self.http.stop()
        await self.running.stop()


async def start_server_with_http(settings: Settings) -> ServerWithHttp:
    """Assembled as `server.app.serve` does it, RPC metrics and HTTP port included."""
    runtime = await Runtime.create(settings)
    server, port = create_server(
        "127.0.0.1:0", runtime.engine, runtime.health, metrics=runtime.metrics
    )
    await server.start()
    await runtime.start_background()
    http = await start_http(
        create_http_app(runtime.engine, runtime.metrics, runtime.llm_backend), "127.0.0.1", 0
    )
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    return ServerWithHttp(RunningServer(runtime, server, port, make_stubs(channel)), http)
