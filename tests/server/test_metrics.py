"""Prometheus metrics on the HTTP port, read back by scraping a real server.

The language model here is an OpenAI-compatible HTTP server started by the test (the real
vLLM runs in the e2e tests only): it answers every naming request with a valid choice, except
the first, which is not JSON, so that retries and token counts have known values.
"""

from __future__ import annotations

import json
import platform
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
from aiohttp import web
from interesttree.v1 import admin_pb2, catalog_pb2, interest_pb2, recommendation_pb2
from prometheus_client.parser import text_string_to_metric_families

from server.config import Settings
from server.demo import sample_requests
from server.metrics import package_version
from taxonomy.trees.naming import NamingMode

from ..conftest import data_only_settings
from ..http_server import ServerWithHttp, start_server_with_http
from .test_api import START, load_sample
from .test_auth import load_tenant, secured_settings, start_secured

PROMPT_TOKENS = 120
COMPLETION_TOKENS = 9


@dataclass
class FakeOpenAI:
    """What the model server was asked."""

    naming_requests: int = 0
    invalid_answers: int = 0
    seen_models: list[str] = field(default_factory=list)

    async def chat(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.seen_models.append(body["model"])
        spec = body["response_format"]["json_schema"]
        properties = spec["schema"]["properties"]
        if spec["name"] != "node_naming":
            answer: dict[str, Any] = {key: True for key in properties}
            content = json.dumps(answer)
        else:
            self.naming_requests += 1
            if self.naming_requests == 1:
                self.invalid_answers += 1
                content = "this is not JSON"
            else:
                choices = properties["label"].get("enum")
                answer = {"label": choices[0] if choices else "Reading"}
                if "explanation" in properties:
                    answer["explanation"] = "You read these."
                content = json.dumps(answer)
        return web.json_response(
            {
                "id": "cmpl-1",
                "object": "chat.completion",
                "created": 0,
                "model": body["model"],
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": content},
                        "finish_reason": "stop",
                    }
                ],
                "usage": {
                    "prompt_tokens": PROMPT_TOKENS,
                    "completion_tokens": COMPLETION_TOKENS,
                    "total_tokens": PROMPT_TOKENS + COMPLETION_TOKENS,
                },
            }
        )

    async def models(self, request: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [{"id": "fake", "object": "model"}]})


@pytest.fixture
async def fake_openai() -> AsyncIterator[tuple[str, FakeOpenAI, web.AppRunner]]:
    state = FakeOpenAI()
    app = web.Application()
    app.router.add_post("/v1/chat/completions", state.chat)
    app.router.add_get("/v1/models", state.models)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    yield f"http://127.0.0.1:{port}/v1", state, runner
    await runner.cleanup()


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample of an exposition, keyed by name and labels."""
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(
    scraped: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str
) -> float:
    return scraped.get((name, frozenset(labels.items())), 0.0)


async def scrape(served: ServerWithHttp) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    async with httpx.AsyncClient() as client:
        response = await client.get(f"{served.base_url}/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    return samples(response.text)


RPC = "interesttree_rpc_duration_seconds_count"


async def test_rpc_build_index_and_model_metrics(
    tmp_path: Path, fake_openai: tuple[str, FakeOpenAI, web.AppRunner]
) -> None:
    llm_url, model_server, runner = fake_openai
    settings = Settings(
        data_dir=tmp_path / "data",
        llm_url=llm_url,
        llm_model="fake",
        naming_mode=NamingMode.CHOOSE,
        embedded_llm=False,
        port=0,
    )
    served = await start_server_with_http(settings)
    try:
        stubs = served.running.stubs
        await load_sample(served.running)
        await stubs.interests.BuildInterestTree(
            interest_pb2.BuildInterestTreeRequest(user="users/alice")
        )
        # A build that Recommend starts on its own counts as a build too.
        await stubs.recommender.Recommend(recommendation_pb2.RecommendRequest(user="users/bob"))
        with pytest.raises(grpc.aio.AioRpcError):
            await stubs.catalog.GetItem(catalog_pb2.GetItemRequest(name="books/1"))

        scraped = await scrape(served)
        catalog, interests = "/interesttree.v1.CatalogService", "/interesttree.v1.InterestService"
        assert value(scraped, RPC, method=f"{catalog}/UpsertItems", code="OK") == 1
        assert value(scraped, RPC, method=f"{interests}/BuildInterestTree", code="OK") == 1
        assert value(scraped, RPC, method=f"{catalog}/GetItem", code="INVALID_ARGUMENT") == 1
        assert (
            value(
                scraped,
                "interesttree_rpc_duration_seconds_bucket",
                method=f"{catalog}/GetItem",
                code="INVALID_ARGUMENT",
                le="+Inf",
            )
            == 1
        )

        assert value(scraped, "interesttree_tree_builds_total", outcome="ok") == 2
        assert value(scraped, "interesttree_tree_build_duration_seconds_count") == 2
        requests = model_server.naming_requests
        assert requests > 0
        assert value(scraped, "interesttree_model_requests_total") == requests
        assert value(scraped, "interesttree_model_tokens_total", direction="in") == (
            requests * PROMPT_TOKENS
        )
        assert value(scraped, "interesttree_model_tokens_total", direction="out") == (
            requests * COMPLETION_TOKENS
        )
        assert value(scraped, "interesttree_structured_output_retries_total") == (
            model_server.invalid_answers
        )
        assert value(scraped, "interesttree_structured_output_failures_total") == 0

        assert value(scraped, "interesttree_embedding_dimension") == 384
        assert value(scraped, "interesttree_index_vectors", index="items-text") == 49
        # Index files are written on save; RefreshModels saves them.
        await stubs.admin.RefreshModels(admin_pb2.RefreshModelsRequest())
        scraped = await scrape(served)
        assert value(scraped, "interesttree_index_bytes", index="items-text") > 0

        assert value(scraped, "interesttree_llm_backend_up", backend="remote") == 1
        await runner.cleanup()
        scraped = await scrape(served)
        assert value(scraped, "interesttree_llm_backend_up", backend="remote") == 0
    finally:
        await served.stop()


async def test_streaming_rpcs_are_measured_and_carry_the_request_id(tmp_path: Path) -> None:
    served = await start_server_with_http(data_only_settings(tmp_path / "data"))
    try:
        stubs = served.running.stubs
        await load_sample(served.running)
        call = stubs.interests.BatchBuildInterestTrees(
            interest_pb2.BatchBuildInterestTreesRequest(users=["users/alice", "users/bob"]),
            metadata=(("x-request-id", "batch-42"),),
        )
        results = [response async for response in call]
        assert len(results) == 2 and not any(r.error for r in results)
        assert ("x-request-id", "batch-42") in tuple(await call.initial_metadata())

        # A stream the servicer aborts itself is measured with the code it aborted with.
        bad = stubs.interests.BatchBuildInterestTrees(
            interest_pb2.BatchBuildInterestTreesRequest(users=["not a user"])
        )
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            _ = [response async for response in bad]
        assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT

        scraped = await scrape(served)
        method = "/interesttree.v1.InterestService/BatchBuildInterestTrees"
        assert value(scraped, RPC, method=method, code="OK") == 1
        assert value(scraped, RPC, method=method, code="INVALID_ARGUMENT") == 1
        assert value(scraped, "interesttree_tree_builds_total", outcome="ok") == 2
        # Without a language model nothing is spent, and no backend is probed.
        assert value(scraped, "interesttree_model_tokens_total", direction="in") == 0
        assert not any(name == "interesttree_llm_backend_up" for name, _ in scraped)
    finally:
        await served.stop()


async def test_http_responses_carry_request_ids_and_a_strict_csp(tmp_path: Path) -> None:
    served = await start_server_with_http(data_only_settings(tmp_path / "data"))
    try:
        async with httpx.AsyncClient(base_url=served.base_url) as client:
            given = await client.get("/metrics", headers={"x-request-id": "scrape-7"})
            assert given.headers["x-request-id"] == "scrape-7"
            fresh = await client.get("/")
            assert len(fresh.headers["x-request-id"]) == 32
            csp = fresh.headers["content-security-policy"]
            assert "default-src 'none'" in csp and "script-src 'self'" in csp
            # Read-only: nothing but GET is routed.
            assert (await client.post("/api/users/alice")).status_code == 405
    finally:
        await served.stop()


async def test_process_build_info_and_data_gauges(tmp_path: Path) -> None:
    served = await start_server_with_http(data_only_settings(tmp_path / "data"))
    try:
        scraped = await scrape(served)
        assert value(scraped, "process_resident_memory_bytes") > 0
        assert value(scraped, "process_open_fds") > 0
        assert value(scraped, "process_cpu_seconds_total") > 0
        assert any(name == "python_gc_collections_total" for name, _ in scraped)
        info = [labels for name, labels in scraped if name == "interesttree_build_info"]
        assert len(info) == 1
        build = dict(info[0])
        assert build["python"] == platform.python_version()
        assert build["grpc"] == grpc.__version__
        assert build["version"] == package_version() != ""
        assert value(scraped, "interesttree_items", tenant="default") == 0

        items, events = await load_sample(served.running)
        users = {event.user for event in events.events}
        await served.running.stubs.catalog.DeleteItems(
            catalog_pb2.DeleteItemsRequest(names=[items.items[0].name])
        )
        scraped = await scrape(served)
        assert value(scraped, "interesttree_items", tenant="default") == len(items.items) - 1
        assert value(scraped, "interesttree_users", tenant="default") == len(users) == 3
        assert value(scraped, "interesttree_events", tenant="default") == len(events.events)
    finally:
        await served.stop()


async def test_data_gauges_name_every_open_tenant(tmp_path: Path) -> None:
    secured = await start_secured(secured_settings(tmp_path / "data"), ("acme", "default"))
    try:
        await load_tenant(secured.stubs, secured.keys["acme:writer"])
        items, events = sample_requests(START)
        async with httpx.AsyncClient() as client:
            response = await client.get(
                f"{secured.base_url}/metrics",
                headers={"Authorization": f"Bearer {secured.keys['default:admin']}"},
            )
        assert response.status_code == 200
        scraped = samples(response.text)
        assert value(scraped, "interesttree_items", tenant="acme") == len(items.items)
        assert value(scraped, "interesttree_events", tenant="acme") == len(events.events)
        assert value(scraped, "interesttree_users", tenant="acme") == 3
        assert value(scraped, "interesttree_items", tenant="default") == 0
    finally:
        await secured.stop()
