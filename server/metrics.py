"""Prometheus metrics of one server: RPC latency, tree builds, index sizes, model health, the
process (CPU, memory, file descriptors, GC), the build, and each tenant's items, users and events.

Every server owns a `CollectorRegistry`, so several servers in one process (as in the tests)
never mix their numbers. `/metrics` on the HTTP port (server/http.py) exposes it.
"""

from __future__ import annotations

import asyncio
import logging
import platform
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from importlib import metadata
from typing import TYPE_CHECKING

import grpc
import httpx
from prometheus_client import (
    GC_COLLECTOR,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from taxonomy.engine import InterestEngine
from taxonomy.trees.service import BuildResult

if TYPE_CHECKING:
    from server.vllm_supervisor import VllmSupervisor

logger = logging.getLogger("interest_tree.metrics")

# `*_created` series double the output and no dashboard here reads them (process-wide switch).
disable_created_metrics()  # type: ignore[no-untyped-call]

# Calls range from a millisecond (a page of items) to minutes (a tree named by a CPU model).
RPC_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
BUILD_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)


def package_version() -> str:
    """The installed interest-tree's version ("unknown" when run from a bare checkout)."""
    try:
        return metadata.version("interest-tree")
    except metadata.PackageNotFoundError:
        return "unknown"


class ServiceMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        # process_* (CPU seconds, resident and virtual memory, open and max file descriptors,
        # start time; read from /proc at scrape time), python_info and python_gc_*.
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        self.registry.register(GC_COLLECTOR)
        self.build_info = Gauge(
            "interesttree_build_info",
            "Always 1; the labels say which interest-tree, Python and grpcio this server runs.",
            ["version", "python", "grpc"],
            registry=self.registry,
        )
        self.build_info.labels(package_version(), platform.python_version(), grpc.__version__).set(
            1
        )
        self.items = Gauge(
            "interesttree_items",
            "Items in each tenant's catalog.",
            ["tenant"],
            registry=self.registry,
        )
        self.users = Gauge(
            "interesttree_users",
            "Users with at least one recorded event, per tenant.",
            ["tenant"],
            registry=self.registry,
        )
        self.events = Gauge(
            "interesttree_events",
            "Recorded events, per tenant.",
            ["tenant"],
            registry=self.registry,
        )
        self.rpc_duration = Histogram(
            "interesttree_rpc_duration_seconds",
            "Server-side latency of interesttree.v1 RPCs, by method and status code.",
            ["method", "code"],
            buckets=RPC_BUCKETS,
            registry=self.registry,
        )
        self.tenant_rpcs = Counter(
            "interesttree_tenant_rpcs",
            "interesttree.v1 RPCs by tenant, method and status code ('-': no valid key).",
            ["tenant", "method", "code"],
            registry=self.registry,
        )
        self.tree_builds = Counter(
            "interesttree_tree_builds",
            "Interest tree builds, by outcome (ok, or the error reason).",
            ["outcome"],
            registry=self.registry,
        )
        self.tree_build_duration = Histogram(
            "interesttree_tree_build_duration_seconds",
            "Time to build and store one tree revision, model naming included.",
            buckets=BUILD_BUCKETS,
            registry=self.registry,
        )
        self.model_requests = Counter(
            "interesttree_model_requests",
            "Structured-output requests sent to the language model while building trees.",
            registry=self.registry,
        )
        self.model_tokens = Counter(
            "interesttree_model_tokens",
            "Language-model tokens spent building trees: direction=in (prompt) or out.",
            ["direction"],
            registry=self.registry,
        )
        self.structured_output_retries = Counter(
            "interesttree_structured_output_retries",
            "Model requests retried because the output failed the schema or the checks.",
            registry=self.registry,
        )
        self.structured_output_failures = Counter(
            "interesttree_structured_output_failures",
            "Nodes whose model request failed for good and kept their data-derived text.",
            registry=self.registry,
        )
        self.llm_up = Gauge(
            "interesttree_llm_backend_up",
            "1 if the vLLM (OpenAI-compatible) backend answered its last probe, else 0.",
            ["backend"],
            registry=self.registry,
        )
        self.llm_probe_duration = Gauge(
            "interesttree_llm_backend_probe_seconds",
            "How long the last probe of the vLLM backend took.",
            ["backend"],
            registry=self.registry,
        )
        for direction in ("in", "out"):
            self.model_tokens.labels(direction)
        self.tree_builds.labels("ok")

    def watch_engine(self, engine: InterestEngine) -> None:
        """Counts and times every tree build, including the ones Recommend and
        ExplainInterests start for users without a tree, and reports index sizes."""
        engine.trees.observers.append(self.observe_build)
        self.registry.register(_EngineCollector(engine))

    def watch_supervisor(self, supervisor: VllmSupervisor) -> None:
        self.registry.register(_SupervisorCollector(supervisor))

    def observe_rpc(
        self, method: str, code: grpc.StatusCode, seconds: float, tenant: str = "default"
    ) -> None:
        self.rpc_duration.labels(method, code.name).observe(seconds)
        self.tenant_rpcs.labels(tenant, method, code.name).inc()

    def observe_build(self, result: BuildResult | None, seconds: float, outcome: str) -> None:
        self.tree_builds.labels(outcome).inc()
        self.tree_build_duration.observe(seconds)
        if result is None:
            return
        stats = result.naming
        self.model_requests.inc(stats.requests)
        self.model_tokens.labels("in").inc(stats.prompt_tokens)
        self.model_tokens.labels("out").inc(stats.completion_tokens)
        self.structured_output_retries.inc(stats.retries)
        self.structured_output_failures.inc(stats.failures)

    async def count_data(self, engines: Mapping[str, InterestEngine]) -> None:
        """Sets the item, user and event gauges of every open tenant's engine (`/metrics` calls
        this before each scrape; the counts are store queries, run off the event loop)."""
        for tenant, engine in sorted(engines.items()):
            items, users, events = await asyncio.to_thread(_counts, engine)
            self.items.labels(tenant).set(items)
            self.users.labels(tenant).set(users)
            self.events.labels(tenant).set(events)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


def _counts(engine: InterestEngine) -> tuple[int, int, int]:
    store = engine.store
    return store.item_count(), store.user_count(), store.event_count()


class _EngineCollector(Collector):
    """Sizes read at scrape time, so they are never stale and cost nothing between scrapes."""

    def __init__(self, engine: InterestEngine) -> None:
        self._engine = engine

    def collect(self) -> Iterator[Metric]:
        dim = GaugeMetricFamily(
            "interesttree_embedding_dimension", "Dimension of the item and label embeddings."
        )
        dim.add_metric([], self._engine.embedder.dim)
        yield dim
        vectors = GaugeMetricFamily(
            "interesttree_index_vectors", "Vectors in each HNSW index.", labels=["index"]
        )
        disk = GaugeMetricFamily(
            "interesttree_index_bytes",
            "Bytes of each HNSW index's files on disk (as of its last save).",
            labels=["index"],
        )
        for name, (count, size) in sorted(self._engine.index_sizes().items()):
            vectors.add_metric([name], count)
            disk.add_metric([name], size)
        yield vectors
        yield disk


class _SupervisorCollector(Collector):
    def __init__(self, supervisor: VllmSupervisor) -> None:
        self._supervisor = supervisor

    def collect(self) -> Iterator[Metric]:
        ready = GaugeMetricFamily(
            "interesttree_llm_embedded_ready",
            "1 while the supervised embedded vLLM process is up and ready, else 0.",
        )
        ready.add_metric([], int(self._supervisor.ready))
        yield ready
        restarts = CounterMetricFamily(
            "interesttree_llm_embedded_restarts",
            "Times the supervisor restarted the embedded vLLM process.",
        )
        restarts.add_metric([], self._supervisor.restarts)
        yield restarts


@dataclass(frozen=True)
class LlmBackend:
    """Where the chat model is served: `embedded` (the supervised local vLLM) or `remote`."""

    kind: str
    base_url: str
    api_key: str = "EMPTY"


async def probe_llm(metrics: ServiceMetrics, backend: LlmBackend, timeout_s: float = 2.0) -> None:
    """Sets the health gauges from `GET /v1/models`, which every OpenAI-compatible server
    (vLLM included) answers without running the model."""
    started = time.perf_counter()
    up = 0
    try:
        async with httpx.AsyncClient(timeout=timeout_s) as client:
            response = await client.get(
                f"{backend.base_url.rstrip('/')}/models",
                headers={"Authorization": f"Bearer {backend.api_key}"},
            )
        up = int(response.status_code == 200)
    except httpx.HTTPError as error:
        logger.debug("vLLM probe of %s failed: %s", backend.base_url, error)
    metrics.llm_up.labels(backend.kind).set(up)
    metrics.llm_probe_duration.labels(backend.kind).set(time.perf_counter() - started)
