"""The four services as Connect JSON routes on the HTTP port (server/connect.py), called with
the real `curl` against a real server: the README's examples as written, the Connect error
JSON with its details, and the auth gate (keys, roles, tenants) as on the gRPC port."""

from __future__ import annotations

import asyncio
import base64
import json
import re
import shlex
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from google.rpc import error_details_pb2

from ..conftest import data_only_settings
from ..http_server import ServerWithHttp, start_server_with_http
from .test_auth import Secured, secured_settings, start_secured

README = Path(__file__).resolve().parents[2] / "README.md"
MARKER = "<!-- connect-curl-examples:"
README_URL = "http://localhost:8080"
CATALOG = "/interesttree.v1.CatalogService"


async def curl(args: list[str]) -> tuple[int, Any]:
    """Runs curl (never in the event loop's thread: the server answers on this loop); the HTTP
    status and the JSON body."""
    process = await asyncio.create_subprocess_exec(
        "curl", "-sS", "-w", "\n%{http_code}", *args, stdout=asyncio.subprocess.PIPE
    )
    out, _ = await process.communicate()
    assert process.returncode == 0, out
    body, _, status = out.decode().rpartition("\n")
    return int(status), json.loads(body)


async def post(
    base_url: str, path: str, body: dict[str, Any], key: str | None = None
) -> tuple[int, Any]:
    args = ["-X", "POST", f"{base_url}{path}", "-H", "Content-Type: application/json"]
    if key is not None:
        args += ["-H", f"Authorization: Bearer {key}"]
    return await curl([*args, "-d", json.dumps(body)])


def readme_commands() -> list[list[str]]:
    """The README's Connect curl examples, one argument list per command."""
    text = README.read_text()
    block = text[text.index(MARKER) :]
    block = block[block.index("```sh\n") + len("```sh\n") :]
    block = block[: block.index("```")]
    joined = block.replace("\\\n", " ")
    commands = [line for line in joined.splitlines() if line.strip() and not line.startswith("#")]
    # A command's JSON body spans lines: join every line that does not start a command.
    merged: list[str] = []
    for line in commands:
        if line.startswith("curl ") or not merged:
            merged.append(line)
        else:
            merged[-1] += " " + line.strip()
    return [shlex.split(command) for command in merged]


def violations(error: dict[str, Any]) -> list[tuple[str, str]]:
    for detail in error.get("details", []):
        if detail["type"] == "google.rpc.BadRequest":
            value = detail["value"]
            decoded = error_details_pb2.BadRequest.FromString(
                base64.b64decode(value + "=" * (-len(value) % 4))
            )
            return [(v.field, v.description) for v in decoded.field_violations]
    return []


def reason(error: dict[str, Any]) -> str:
    return next(
        str(d["debug"]["reason"]) for d in error["details"] if d["type"] == "google.rpc.ErrorInfo"
    )


@pytest.fixture
async def served(tmp_path: Path) -> AsyncIterator[ServerWithHttp]:
    running = await start_server_with_http(data_only_settings(tmp_path / "data"))
    try:
        yield running
    finally:
        await running.stop()


async def test_the_readme_examples_run_as_written(served: ServerWithHttp) -> None:
    commands = readme_commands()
    assert [re.sub(r".*/", "", next(a for a in c if a.startswith("http"))) for c in commands] == [
        "UpsertItems",
        "RecordEvents",
        "BuildInterestTree",
        "Recommend",
        "GetItem",
    ]
    answers = []
    for command in commands:
        assert command[0] == "curl"
        args = [a.replace(README_URL, served.base_url) for a in command[1:]]
        answers.append(await curl(args))
    (upsert_status, upserted), (record_status, recorded) = answers[0], answers[1]
    assert upsert_status == 200
    assert [item["name"] for item in upserted["items"]] == [
        "items/dune",
        "items/hyperion",
        "items/foundation",
        "items/dracula",
    ]
    assert (record_status, recorded) == (200, {"recordedCount": 2})

    build_status, built = answers[2]
    assert build_status == 200
    tree = built["tree"]
    assert tree["name"] == "users/ann/interestTree"
    evidence = {item for node in tree["nodes"] for item in node.get("evidenceItems", [])}
    assert evidence == {"items/dune", "items/hyperion"}

    recommend_status, recommended = answers[3]
    assert recommend_status == 200
    recommendations = recommended["recommendations"]
    assert [rec["item"] for rec in recommendations][:1] == ["items/foundation"]
    assert all(rec["reason"] and rec["nodeIds"] for rec in recommendations)

    bad_status, error = answers[4]
    assert bad_status == 400
    assert error["code"] == "invalid_argument"
    assert reason(error) == "INVALID_RESOURCE_NAME"
    assert [field for field, _ in violations(error)] == ["name"]

    # The same data is there for gRPC callers: one implementation behind both protocols.
    scraped = await curl([f"{served.base_url}/api/users/ann"])
    assert scraped[0] == 200
    assert scraped[1]["tree"]["revision"] == 1


async def test_bad_bodies_and_methods_get_connect_errors(served: ServerWithHttp) -> None:
    status, error = await post(served.base_url, f"{CATALOG}/GetItem", {"nme": "items/a"})
    assert (status, error["code"], reason(error)) == (400, "invalid_argument", "MALFORMED_REQUEST")
    assert [field for field, _ in violations(error)] == ["body"]

    status, error = await curl(
        ["-X", "POST", f"{served.base_url}{CATALOG}/GetItem", "-d", '{"name": "items/a"}']
    )
    assert (status, error["code"], reason(error)) == (
        400,
        "invalid_argument",
        "UNSUPPORTED_CONTENT_TYPE",
    )

    status, error = await post(served.base_url, f"{CATALOG}/GetItem", {"name": "items/nope"})
    assert (status, error["code"], reason(error)) == (404, "not_found", "ITEM_NOT_FOUND")

    status, error = await post(
        served.base_url, "/interesttree.v1.InterestService/BatchBuildInterestTrees", {}
    )
    assert (status, error["code"]) == (501, "unimplemented")

    # Counted as RPCs, as gRPC calls are.
    process = await asyncio.create_subprocess_exec(
        "curl", "-sS", f"{served.base_url}/metrics", stdout=asyncio.subprocess.PIPE
    )
    metrics, _ = await process.communicate()
    assert (
        'interesttree_rpc_duration_seconds_count{code="NOT_FOUND",'
        'method="/interesttree.v1.CatalogService/GetItem"} 1.0'
    ) in metrics.decode()


@pytest.fixture
async def secured(tmp_path: Path) -> AsyncIterator[Secured]:
    running = await start_secured(secured_settings(tmp_path / "data"))
    try:
        yield running
    finally:
        await running.stop()


ITEM = {"items": [{"name": "items/dune", "title": "Dune", "categories": ["Books", "SF"]}]}


async def test_the_gate_applies_as_on_the_grpc_port(secured: Secured) -> None:
    url, keys = secured.base_url, secured.keys
    status, error = await post(url, f"{CATALOG}/UpsertItems", ITEM)
    assert (status, error["code"], reason(error)) == (401, "unauthenticated", "API_KEY_MISSING")

    status, error = await post(url, f"{CATALOG}/UpsertItems", ITEM, keys["revoked"])
    assert (status, error["code"], reason(error)) == (401, "unauthenticated", "API_KEY_INVALID")

    status, error = await post(url, f"{CATALOG}/UpsertItems", ITEM, keys["acme:reader"])
    assert (status, error["code"], reason(error)) == (403, "permission_denied", "ROLE_TOO_WEAK")

    status, _ = await post(url, f"{CATALOG}/UpsertItems", ITEM, keys["acme:writer"])
    assert status == 200
    status, got = await post(url, f"{CATALOG}/GetItem", {"name": "items/dune"}, keys["acme:reader"])
    assert (status, got["item"]["title"]) == (200, "Dune")

    # Another tenant's key sees its own (empty) catalog.
    status, error = await post(
        url, f"{CATALOG}/GetItem", {"name": "items/dune"}, keys["rival:reader"]
    )
    assert (status, error["code"]) == (404, "not_found")
