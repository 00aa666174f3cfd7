"""Server assembly: `create_server(address, …) -> (server, port)`, the runtime that owns the
models and the store, and `serve()` with graceful shutdown on SIGINT/SIGTERM."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from interesttree.v1 import (
    admin_pb2,
    admin_pb2_grpc,
    catalog_pb2,
    catalog_pb2_grpc,
    interest_pb2,
    interest_pb2_grpc,
    recommendation_pb2,
    recommendation_pb2_grpc,
)

from server.config import EMBEDDED_MODEL_NAME, Settings
from server.http import HttpServer, create_http_app, start_http
from server.interceptors import ServiceInterceptor
from server.metrics import LlmBackend, ServiceMetrics
from server.servicers import (
    AdminServicer,
    CatalogServicer,
    InterestServicer,
    RecommendationServicer,
)
from taxonomy.embedder import (
    OpenAIEmbedder,
    SentenceTransformerEmbedder,
    packaged_minilm_path,
)
from taxonomy.engine import EngineConfig, InterestEngine
from taxonomy.llm import OpenAIChatModel
from taxonomy.ports import ChatModel, Embedder
from taxonomy.storage.sqlite import SqliteStore
from taxonomy.trees.naming import NamingMode

if TYPE_CHECKING:
    from server.vllm_supervisor import VllmSupervisor

logger = logging.getLogger("interest_tree")

SERVICE_NAMES = (
    catalog_pb2.DESCRIPTOR.services_by_name["CatalogService"].full_name,
    interest_pb2.DESCRIPTOR.services_by_name["InterestService"].full_name,
    recommendation_pb2.DESCRIPTOR.services_by_name["RecommendationService"].full_name,
    admin_pb2.DESCRIPTOR.services_by_name["AdminService"].full_name,
)
MAX_MESSAGE_BYTES = 64 * 1024 * 1024


def create_server(
    address: str,
    engine: InterestEngine,
    health_servicer: health.aio.HealthServicer,
    *,
    metrics: ServiceMetrics | None = None,
) -> tuple[grpc.aio.Server, int]:
    """Builds a server with every service, health and reflection, bound to `address`."""
    server = grpc.aio.server(
        interceptors=[
            ServiceInterceptor(on_rpc_done=metrics.observe_rpc if metrics is not None else None)
        ],
        options=[
            ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
            ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
        ],
    )
    catalog_pb2_grpc.add_CatalogServiceServicer_to_server(CatalogServicer(engine), server)
    interest_pb2_grpc.add_InterestServiceServicer_to_server(InterestServicer(engine), server)
    recommendation_pb2_grpc.add_RecommendationServiceServicer_to_server(
        RecommendationServicer(engine), server
    )
    admin_pb2_grpc.add_AdminServiceServicer_to_server(AdminServicer(engine), server)
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection(
        (*SERVICE_NAMES, health.SERVICE_NAME, reflection.SERVICE_NAME), server
    )
    port = server.add_insecure_port(address)
    return server, port


async def set_serving(health_servicer: health.aio.HealthServicer, serving: bool) -> None:
    status = (
        health_pb2.HealthCheckResponse.SERVING
        if serving
        else health_pb2.HealthCheckResponse.NOT_SERVING
    )
    for name in ("", *SERVICE_NAMES):
        await health_servicer.set(name, status)


@dataclass
class Runtime:
    """Owns the store, the embedder, the chat model (and the embedded vLLM) and the engine."""

    settings: Settings
    engine: InterestEngine
    health: health.aio.HealthServicer
    chat: ChatModel | None
    supervisor: VllmSupervisor | None = None
    metrics: ServiceMetrics = field(default_factory=ServiceMetrics)
    llm_backend: LlmBackend | None = None
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)

    @classmethod
    async def create(cls, settings: Settings) -> Runtime:
        data_dir = settings.data_dir
        data_dir.mkdir(parents=True, exist_ok=True)
        embedder = await asyncio.to_thread(_make_embedder, settings)
        health_servicer = health.aio.HealthServicer()
        await set_serving(health_servicer, False)
        pending: set[asyncio.Task[None]] = set()

        def on_model_state(ready: bool) -> None:
            # Called on the loop by the supervisor; the set keeps the task referenced.
            task = asyncio.get_running_loop().create_task(set_serving(health_servicer, ready))
            pending.add(task)
            task.add_done_callback(pending.discard)

        metrics = ServiceMetrics()
        chat: ChatModel | None = None
        supervisor: VllmSupervisor | None = None
        llm_backend: LlmBackend | None = None
        if settings.llm_url:
            llm_backend = LlmBackend("remote", settings.llm_url, settings.llm_api_key)
            chat = OpenAIChatModel(
                settings.llm_url,
                settings.llm_model or EMBEDDED_MODEL_NAME,
                api_key=settings.llm_api_key,
                timeout_s=settings.llm_timeout_s,
            )
        elif settings.embedded_llm and settings.naming_mode is not NamingMode.OFF:
            from server.vllm_supervisor import VllmSupervisor

            supervisor = VllmSupervisor(
                await asyncio.to_thread(_embedded_checkpoint, settings),
                EMBEDDED_MODEL_NAME,
                port=settings.embedded_llm_port or free_port(),
                log_path=data_dir / "vllm.log",
                on_state_change=on_model_state,
            )
            metrics.watch_supervisor(supervisor)
            chat = OpenAIChatModel(
                supervisor.base_url, EMBEDDED_MODEL_NAME, timeout_s=settings.llm_timeout_s
            )
            llm_backend = LlmBackend("embedded", supervisor.base_url)
        store = SqliteStore(data_dir / "interest-tree.sqlite3")
        engine = InterestEngine(
            store,
            data_dir,
            embedder,
            chat,
            EngineConfig(
                half_life_events=settings.half_life_events,
                default_level_weights=settings.level_weights,
                naming_mode=settings.naming_mode if chat is not None else NamingMode.OFF,
                llm_concurrency=settings.llm_concurrency,
                hnsw_ef_search=settings.hnsw_ef_search,
            ),
        )
        metrics.watch_engine(engine)
        await engine.start()
        return cls(settings, engine, health_servicer, chat, supervisor, metrics, llm_backend)

    async def start_background(self) -> None:
        """Brings the model up (health turns SERVING once it answers) and saves indexes."""
        self._tasks.append(asyncio.create_task(self._bring_up_model()))
        self._tasks.append(asyncio.create_task(self._save_periodically()))
        self._tasks.append(asyncio.create_task(self._refresh_periodically()))

    async def _bring_up_model(self) -> None:
        if self.supervisor is not None:
            await self.supervisor.start()
            await self.supervisor.wait_ready(self.settings.embedded_llm_ready_timeout_s)
        delay = 1.0
        while self.chat is not None:
            try:
                await self.chat.complete_json(
                    [{"role": "user", "content": "Say ok."}],
                    schema_name="probe",
                    schema={
                        "type": "object",
                        "properties": {"ok": {"type": "boolean"}},
                        "required": ["ok"],
                        "additionalProperties": False,
                    },
                    max_tokens=8,
                )
                break
            except Exception as error:
                logger.warning("language model not answering yet: %s", error)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 30.0)
        logger.info("model answers; serving")
        await set_serving(self.health, True)

    async def _refresh_periodically(self) -> None:
        """Retrains event-derived models in the background once new events arrived."""
        while True:
            await asyncio.sleep(self.settings.model_refresh_interval_s)
            try:
                if await self.engine.refresher.refresh_if_stale():
                    logger.info("collaborative vectors refreshed in the background")
            except Exception:
                logger.exception("background model refresh failed; will retry")

    async def _save_periodically(self) -> None:
        while True:
            await asyncio.sleep(self.settings.index_save_interval_s)
            try:
                await self.engine.flush()
            except Exception:
                logger.exception("saving indexes failed; will retry")

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self.engine.close()
        self.engine.store.close()
        if self.chat is not None:
            await self.chat.close()
        if self.supervisor is not None:
            await self.supervisor.stop()


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])


def _make_embedder(settings: Settings) -> Embedder:
    if settings.embedding_url:
        return OpenAIEmbedder(
            settings.embedding_url,
            settings.embedding_model or "sentence-transformers/all-MiniLM-L6-v2",
            settings.embedding_dim,
        )
    return SentenceTransformerEmbedder(packaged_minilm_path())


def _embedded_checkpoint(settings: Settings) -> Path:
    from server.model_cache import default_cache_dir, ensure_hf_checkpoint, packaged_gguf_path

    return ensure_hf_checkpoint(packaged_gguf_path(), settings.cache_dir or default_cache_dir())


async def serve(settings: Settings, *, ready: asyncio.Event | None = None) -> None:
    """Runs until SIGINT or SIGTERM, then drains in-flight calls and saves everything."""
    runtime = await Runtime.create(settings)
    server, port = create_server(
        f"{settings.host}:{settings.port}",
        runtime.engine,
        runtime.health,
        metrics=runtime.metrics,
    )
    await server.start()
    logger.info("listening on %s:%d", settings.host, port)
    print(f"interest-tree listening on {settings.host}:{port}", flush=True)
    http: HttpServer | None = None
    if settings.http_port is not None:
        http_host = settings.http_host or settings.host
        http = await start_http(
            create_http_app(runtime.engine, runtime.metrics, runtime.llm_backend),
            http_host,
            settings.http_port,
        )
        logger.info("review page and metrics on http://%s:%d/", http_host, http.port)
        print(f"interest-tree review page on http://{http_host}:{http.port}/", flush=True)
    await runtime.start_background()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    if ready is not None:
        ready.set()
    await stop.wait()
    logger.info("shutting down")
    await runtime.health.enter_graceful_shutdown()
    if http is not None:
        await http.stop()
    await server.stop(settings.grace_period_s)
    await runtime.close()
