"""The chat model as an OpenAI-compatible HTTP server that misbehaves: malformed replies and a
server that never answers leave the tree with its data labels, within the tree's time budget."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from aiohttp import web

from taxonomy.engine import EngineConfig
from taxonomy.errors import ModelOutputError
from taxonomy.llm import OpenAIChatModel
from taxonomy.models import InterestTree, TextSource
from taxonomy.trees.naming import NamingMode

from .helpers import catalog, make_engine, sample_events

MALFORMED = {
    "text-plain": ("text/plain", "Sure! Here is your label: Space opera"),
    "broken-json": ("application/json", '{"choices": [{"message": '),
    "no-choices": ("application/json", json.dumps({"id": "c1", "object": "chat.completion"})),
    "empty-choices": ("application/json", json.dumps({"id": "c1", "choices": []})),
    "null-message": ("application/json", json.dumps({"choices": [{"index": 0}]})),
    "json-array": ("application/json", "[]"),
}


@dataclass
class ScriptedServer:
    """Answers POST /{case}/v1/chat/completions with the malformed body of `case`; the case
    "hang" never answers (until the test ends)."""

    port: int = 0
    requests: dict[str, int] = field(default_factory=dict)
    release: asyncio.Event = field(default_factory=asyncio.Event)

    def url(self, case: str) -> str:
        return f"http://127.0.0.1:{self.port}/{case}/v1"

    async def handle(self, request: web.Request) -> web.Response:
        case = request.match_info["case"]
        self.requests[case] = self.requests.get(case, 0) + 1
        if case == "hang":
            await self.release.wait()
            return web.Response(status=503)
        content_type, body = MALFORMED[case]
        return web.Response(status=200, text=body, content_type=content_type)


@pytest.fixture
async def model_server() -> AsyncIterator[ScriptedServer]:
    server = ScriptedServer()
    app = web.Application()
    app.router.add_post("/{case}/v1/chat/completions", server.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    server.port = runner.addresses[0][1]
    yield server
    server.release.set()
    await runner.cleanup()


def chat_for(server: ScriptedServer, case: str) -> OpenAIChatModel:
    # No transport retries and a short transport timeout, so the tests stay fast either way.
    return OpenAIChatModel(server.url(case), "scripted", timeout_s=5, max_retries=0)


def assert_data_tree(tree: InterestTree) -> None:
    assert tree.nodes
    assert {node.label_source for node in tree.nodes} == {TextSource.DATA}
    assert {node.explanation_source for node in tree.nodes} == {TextSource.DATA}
    assert not any(node.reviewed for node in tree.nodes)
    assert tree.model == ""


@pytest.mark.parametrize("case", list(MALFORMED))
async def test_a_malformed_reply_is_model_output_error(
    model_server: ScriptedServer, case: str
) -> None:
    chat = chat_for(model_server, case)
    with pytest.raises(ModelOutputError):
        await chat.complete_json(
            [{"role": "user", "content": "label this"}],
            schema_name="node_naming",
            schema={"type": "object"},
            max_tokens=8,
        )
    await chat.close()


@pytest.mark.parametrize("case", ["text-plain", "broken-json", "no-choices", "empty-choices"])
async def test_malformed_replies_leave_the_data_labels(
    model_server: ScriptedServer, case: str, tmp_path: Path
) -> None:
    chat = chat_for(model_server, case)
    engine = await make_engine(
        tmp_path, chat=chat, config=EngineConfig(collaborative=None, naming_mode=NamingMode.FREE)
    )
    await engine.catalog.upsert_items(catalog())
    await engine.events.record_events(sample_events(), None)
    result = await engine.trees.build_tree("alice")
    assert model_server.requests[case] >= 1
    assert result.naming.failures == len(result.tree.nodes)
    # Every model request failed, so the tree is a data tree and names no model.
    assert_data_tree(result.tree)
    await engine.close()
    await chat.close()


async def test_a_model_that_never_answers_is_cut_off_by_the_trees_budget(
    model_server: ScriptedServer, tmp_path: Path
) -> None:
    chat = chat_for(model_server, "hang")
    config = EngineConfig(collaborative=None, naming_mode=NamingMode.FREE, naming_budget_s=0.2)
    engine = await make_engine(tmp_path, chat=chat, config=config)
    await engine.catalog.upsert_items(catalog())
    await engine.events.record_events(sample_events(), None)
    result = await engine.trees.build_tree("alice")
    assert model_server.requests["hang"] >= 1
    assert result.naming.timed_out == len(result.tree.nodes)
    assert result.tree.build_stats.failures == len(result.tree.nodes)
    assert_data_tree(result.tree)
    # The tree was stored, and the next build asks the model again (nothing was reviewed).
    assert (await engine.trees.get_tree("alice")).revision == result.tree.revision
    await engine.close()
    await chat.close()
