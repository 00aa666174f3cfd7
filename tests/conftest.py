"""Shared fixtures: a real in-process gRPC server on a real port over real files."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from interesttree.v1 import (
    admin_pb2_grpc,
    catalog_pb2_grpc,
    interest_pb2_grpc,
    recommendation_pb2_grpc,
)

from server.app import Runtime, create_server
from server.config import Settings
from taxonomy.trees.naming import NamingMode

# Every backend of the Store port: `store_backend` runs a test on SQLite and on PostgreSQL.
from .storage.backends import StoreBackend, postgres_server, store_backend

__all__ = ["postgres_server", "store_backend"]

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


@dataclass
class Stubs:
    channel: grpc.aio.Channel
    catalog: catalog_pb2_grpc.CatalogServiceAsyncStub
    interests: interest_pb2_grpc.InterestServiceAsyncStub
    recommender: recommendation_pb2_grpc.RecommendationServiceAsyncStub
    admin: admin_pb2_grpc.AdminServiceAsyncStub


@dataclass
class RunningServer:
    runtime: Runtime
    server: grpc.aio.Server
    port: int
    stubs: Stubs

    async def stop(self) -> None:
        await self.stubs.channel.close()
        await self.server.stop(1)
        await self.runtime.close()


def data_only_settings(data_dir: Path, backend: StoreBackend | None = None) -> Settings:
    """The service without a language model: trees come from the data alone. With a
    `backend`, its store (SQLite in data_dir, or a PostgreSQL schema of the test's own)."""
    return Settings(
        data_dir=data_dir,
        embedded_llm=False,
        naming_mode=NamingMode.OFF,
        port=0,
        store_url=backend.store_url if backend else None,
        store_schema=backend.store_schema if backend else None,
    )


def make_stubs(channel: grpc.aio.Channel) -> Stubs:
    return Stubs(
        channel,
        catalog_pb2_grpc.CatalogServiceStub(channel),
        interest_pb2_grpc.InterestServiceStub(channel),
        recommendation_pb2_grpc.RecommendationServiceStub(channel),
        admin_pb2_grpc.AdminServiceStub(channel),
    )


async def start_server(settings: Settings) -> RunningServer:
    runtime = await Runtime.create(settings)
    server, port = create_server("127.0.0.1:0", runtime.engine, runtime.health)
    await server.start()
    await runtime.start_background()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    return RunningServer(runtime, server, port, make_stubs(channel))


@pytest.fixture
async def data_only_server(
    tmp_path: Path, request: pytest.FixtureRequest
) -> AsyncIterator[RunningServer]:
    """A server on SQLite; in a module marked `usefixtures("store_backend")`, on each backend."""
    backend: StoreBackend | None = None
    if "store_backend" in request.fixturenames:
        backend = request.getfixturevalue("store_backend")
    running = await start_server(data_only_settings(tmp_path / "data", backend))
    yield running
    await running.stop()
