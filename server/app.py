"""Server assembly: `create_server(address, …) -> (server, port)`, the runtime that owns the
models and the store, and `serve()` with graceful shutdown on SIGINT/SIGTERM."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import grpc
from grpc_health.v1 import health, health_pb2_grpc

from server import reflection
from server.auth.gate import Gate
from server.auth.keys import KeyStore, keys_path
from server.auth.oidc import OidcVerifier
from server.auth.quotas import QuotaConfig, Quotas
from server.auth.tenants import TenantEngines, tenant_schema
from server.auth.tls import TlsFiles, is_loopback
from server.config import EMBEDDED_MODEL_NAME, Settings, engine_config
from server.convert import largest_request_bytes
from server.health import ServiceHealth
from server.http import HttpServer, create_http_app, start_http
from server.interceptors import ServiceInterceptor
from server.metrics import LlmBackend, ServiceMetrics
from server.processes import free_port
from server.servicers import SERVICE_NAMES, add_services
from taxonomy.embedder import (
    OpenAIEmbedder,
    SentenceTransformerEmbedder,
    packaged_minilm_path,
)
from taxonomy.engine import InterestEngine
from taxonomy.llm import OpenAIChatModel
from taxonomy.ports import ChatModel, Embedder, Store
from taxonomy.storage.sqlite import SqliteStore
from taxonomy.trees.naming import NamingMode

if TYPE_CHECKING:
    from server.vllm_supervisor import VllmSupervisor
    from taxonomy.storage.postgres_replica import ReplicaSync

logger = logging.getLogger("interest_tree")

MAX_SEND_BYTES = 64 * 1024 * 1024
_MIB = 1024 * 1024


def receive_limit(embedding_dim: int) -> int:
    """The default receive limit: the largest legal request, rounded up to whole MiB."""
    return -(-largest_request_bytes(embedding_dim) // _MIB) * _MIB


def create_server(
    address: str,
    engine: InterestEngine,
    health_servicer: health.aio.HealthServicer,
    *,
    metrics: ServiceMetrics | None = None,
    max_receive_bytes: int | None = None,
    gate: Gate | None = None,
    tls: TlsFiles | None = None,
) -> tuple[grpc.aio.Server, int]:
    """Builds a server with every service, health and reflection, bound to `address`. A
    request over `max_receive_bytes` (default: `receive_limit` of the engine's embedding
    dimension) is refused with RESOURCE_EXHAUSTED before it is read into memory. A `gate`
    authenticates calls and routes them to their tenant's engine (server/auth/); `tls` binds a
    TLS port (mutual TLS with a client CA) instead of an insecure one."""
    server = grpc.aio.server(
        interceptors=[
            ServiceInterceptor(
                on_rpc_done=metrics.observe_rpc if metrics is not None else None, gate=gate
            )
        ],
        options=[
            (
                "grpc.max_receive_message_length",
                max_receive_bytes or receive_limit(engine.embedder.dim),
            ),
            ("grpc.max_send_message_length", MAX_SEND_BYTES),
        ],
    )
    add_services(server, engine)
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection((*SERVICE_NAMES, health.SERVICE_NAME), server)
    if tls is not None:
        port = server.add_secure_port(address, tls.grpc_credentials())
    else:
        port = server.add_insecure_port(address)
    return server, port


@dataclass
class Runtime:
    """Owns the store, the embedder, the chat model (and the embedded vLLM) and the engine."""

    settings: Settings
    engine: InterestEngine
    health: health.aio.HealthServicer
    chat: ChatModel | None
    service_health: ServiceHealth
    supervisor: VllmSupervisor | None = None
    metrics: ServiceMetrics = field(default_factory=ServiceMetrics)
    llm_backend: LlmBackend | None = None
    tenants: TenantEngines | None = None
    """Every tenant's engine; `engine` is the default tenant's."""
    gate: Gate | None = None
    keys: KeyStore | None = None
    replica: ReplicaSync | None = None
    """With a PostgreSQL store: keeps this replica's indexes and model in line with others'."""
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)

    @classmethod
    async def create(cls, settings: Settings) -> Runtime:
        data_dir = settings.data_dir
        data_dir.mkdir(parents=True, exist_ok=True)
        embedder = await asyncio.to_thread(_make_embedder, settings)
        health_servicer = health.aio.HealthServicer()
        service_health = ServiceHealth(health_servicer, SERVICE_NAMES)
        await service_health.set_services(False)
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
                on_state_change=service_health.model_state_changed,
            )
            metrics.watch_supervisor(supervisor)
            chat = OpenAIChatModel(
                supervisor.base_url, EMBEDDED_MODEL_NAME, timeout_s=settings.llm_timeout_s
            )
            llm_backend = LlmBackend("embedded", supervisor.base_url)
        store = await asyncio.to_thread(open_store, settings)
        config = engine_config(settings, naming=chat is not None)
        engine = InterestEngine(store, data_dir, embedder, chat, config)
        metrics.watch_engine(engine)
        await engine.start()
        replica = _replica_sync(settings, engine)

        async def open_tenant(tenant: str, directory: Path) -> InterestEngine:
            tenant_store = await asyncio.to_thread(open_tenant_store, settings, tenant, directory)
            opened = InterestEngine(tenant_store, directory, embedder, chat, config)
            await opened.start()
            return opened

        tenants = TenantEngines(data_dir, engine, open_tenant)
        keys = KeyStore(keys_path(data_dir))
        gate = Gate(
            tenants,
            keys,
            oidc=_oidc(settings),
            require_auth=settings.require_auth,
            close_reflection=settings.close_reflection,
            quotas=Quotas(
                QuotaConfig(
                    rate_per_s=settings.rate_limit_per_s,
                    burst=settings.rate_burst,
                    max_items=settings.max_items,
                    max_events=settings.max_events,
                    max_users=settings.max_users,
                )
            ),
        )
        if chat is not None:
            await service_health.set_model(False)
        return cls(
            settings,
            engine,
            health_servicer,
            chat,
            service_health,
            supervisor=supervisor,
            metrics=metrics,
            llm_backend=llm_backend,
            tenants=tenants,
            gate=gate,
            keys=keys,
            replica=replica,
        )

    async def start_server(self, address: str) -> tuple[grpc.aio.Server, int]:
        """Creates and starts the gRPC server on `address`, as the settings say."""
        server, port = create_server(
            address,
            self.engine,
            self.health,
            metrics=self.metrics,
            max_receive_bytes=self.settings.max_receive_message_bytes,
            gate=self.gate,
            tls=self.tls,
        )
        await server.start()
        return server, port

    @property
    def tls(self) -> TlsFiles | None:
        s = self.settings
        return TlsFiles.from_paths(s.tls_cert, s.tls_key, s.tls_client_ca)

    def engines(self) -> list[InterestEngine]:
        """Every open tenant's engine, the default first."""
        return list(self.tenants.all().values()) if self.tenants else [self.engine]

    async def start_background(self) -> None:
        """Brings the model up and keeps probing it (server/health.py says what health
        reports), retrains event-derived models, and saves indexes."""
        self._tasks.append(asyncio.create_task(self._bring_up_model()))
        self._tasks.append(asyncio.create_task(self._save_periodically()))
        self._tasks.append(asyncio.create_task(self._refresh_periodically()))
        if self.replica is not None:
            self._tasks.append(asyncio.create_task(self.replica.run()))

    async def _bring_up_model(self) -> None:
        if self.supervisor is not None:
            await self.supervisor.start()
            await self.supervisor.wait_ready(self.settings.embedded_llm_ready_timeout_s)
        if self.chat is None:
            await self.service_health.set_services(True)
            return
        await self.service_health.watch_model(
            self.chat,
            interval_s=self.settings.llm_probe_interval_s,
            timeout_s=self.settings.llm_probe_timeout_s,
        )

    async def _refresh_periodically(self) -> None:
        """Retrains event-derived models in the background once new events arrived."""
        while True:
            await asyncio.sleep(self.settings.model_refresh_interval_s)
            for engine in self.engines():
                try:
                    if self.replica is not None and engine is self.engine:
                        # Replicas sharing a store train once, under an advisory lock.
                        refreshed = await self.replica.refresh_if_stale()
                    else:
                        refreshed = await engine.refresher.refresh_if_stale()
                    if refreshed:
                        logger.info("collaborative vectors refreshed in the background")
                except Exception:
                    logger.exception("background model refresh failed; will retry")

    async def _save_periodically(self) -> None:
        while True:
            await asyncio.sleep(self.settings.index_save_interval_s)
            for engine in self.engines():
                try:
                    await engine.flush()
                except Exception:
                    logger.exception("saving indexes failed; will retry")

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self.tenants is not None:
            await self.tenants.close()
        if self.keys is not None:
            self.keys.close()
        await self.engine.close()
        self.engine.store.close()
        if self.chat is not None:
            await self.chat.close()
        if self.supervisor is not None:
            await self.supervisor.stop()


class ExposureError(ValueError):
    """The settings would serve data to the network without authentication."""


def check_exposure(settings: Settings) -> None:
    """Refuses to bind a non-loopback address without `require_auth`, unless `insecure`."""
    try:
        TlsFiles.from_paths(settings.tls_cert, settings.tls_key, settings.tls_client_ca)
    except ValueError as error:
        raise ExposureError(str(error)) from None
    if settings.require_auth or settings.insecure:
        return
    hosts = {settings.host}
    if settings.http_port is not None:
        hosts.add(settings.http_host or settings.host)
    exposed = sorted(host for host in hosts if not is_loopback(host))
    if exposed:
        raise ExposureError(
            f"refusing to serve {', '.join(exposed)} without authentication: pass "
            "--require-auth (and create keys with `interest-tree keys create`), or --insecure"
        )


def open_store(settings: Settings) -> Store:
    """PostgreSQL at `store_url` (shared by replicas), else SQLite in the data directory."""
    if settings.store_url:
        from taxonomy.storage.postgres import PostgresStore

        return PostgresStore(settings.store_url, schema=settings.store_schema)
    return SqliteStore(settings.data_dir / "interest-tree.sqlite3")


def _oidc(settings: Settings) -> OidcVerifier | None:
    """The OIDC token verifier the settings ask for (all three of issuer, audience, JWKS)."""
    wanted = (settings.oidc_issuer, settings.oidc_audience, settings.oidc_jwks_file)
    if not any(wanted):
        return None
    if (
        settings.oidc_issuer is None
        or settings.oidc_audience is None
        or settings.oidc_jwks_file is None
    ):
        raise ExposureError("OIDC needs --oidc-issuer, --oidc-audience and --oidc-jwks-file")
    return OidcVerifier(
        settings.oidc_issuer,
        settings.oidc_audience,
        settings.oidc_jwks_file,
        tenant_claim=settings.oidc_tenant_claim,
        role_claim=settings.oidc_role_claim,
    )


def open_tenant_store(settings: Settings, tenant: str, directory: Path) -> Store:
    """A tenant's own store: SQLite in its directory, or its own PostgreSQL schema
    (`tenant_schema`) beside the default tenant's."""
    if settings.store_url:
        from taxonomy.storage.postgres import PostgresStore

        return PostgresStore(
            settings.store_url, schema=tenant_schema(settings.store_schema or "public", tenant)
        )
    return SqliteStore(directory / "interest-tree.sqlite3")


def _replica_sync(settings: Settings, engine: InterestEngine) -> ReplicaSync | None:
    if not settings.store_url:
        return None  # psycopg is only needed (and maybe only installed) for PostgreSQL
    from taxonomy.storage.postgres import PostgresStore
    from taxonomy.storage.postgres_replica import ReplicaSync

    if not isinstance(engine.store, PostgresStore):
        return None

    return ReplicaSync(
        engine,
        engine.store,
        settings.data_dir / "models",
        poll_interval_s=settings.replica_poll_interval_s,
    )


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


def _one_blas_thread() -> None:
    """A request's math is small products (nodes x dim by dim x 200 candidates) on many
    request threads at once; OpenBLAS threads on top of those only contend for the cores
    (measured on 2 loaded cores: such a product took 24 ms with OpenBLAS's 2 threads, 0.3 ms
    with 1, and Recommend at concurrency 16 spent 60% of its time there). Model training runs
    in a child process, which sets its own limit (taxonomy/refresh/worker.py)."""
    from threadpoolctl import threadpool_limits  # type: ignore[import-untyped]

    threadpool_limits(1, user_api="blas")


async def serve(settings: Settings, *, ready: asyncio.Event | None = None) -> None:
    """Runs until SIGINT or SIGTERM, then drains in-flight calls and saves everything."""
    check_exposure(settings)
    _one_blas_thread()
    runtime = await Runtime.create(settings)
    server, port = await runtime.start_server(f"{settings.host}:{settings.port}")
    logger.info("listening on %s:%d", settings.host, port)
    print(f"interest-tree listening on {settings.host}:{port}", flush=True)
    http: HttpServer | None = None
    if settings.http_port is not None:
        http_host = settings.http_host or settings.host
        tls = runtime.tls
        http = await start_http(
            create_http_app(
                runtime.engine,
                runtime.metrics,
                runtime.llm_backend,
                runtime.gate,
                service_health=runtime.service_health,
            ),
            http_host,
            settings.http_port,
            ssl_context=tls.ssl_context() if tls is not None else None,
        )
        scheme = "https" if tls is not None else "http"
        logger.info("review page and metrics on %s://%s:%d/", scheme, http_host, http.port)
        print(f"interest-tree review page on {scheme}://{http_host}:{http.port}/", flush=True)
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
