"""The four services over the Connect protocol on the HTTP port (server/connect.py, served by
the `connectrpc` package), called with the real `curl` against a real server: the README's
examples as written, the Connect error JSON with its details, a server-streaming call in
Connect's envelopes, and the auth gate (keys, roles, tenants) as on the gRPC port."""

from __future__ import annotations

import asyncio
import base64
import json
import re
import shlex
import struct
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from google.protobuf import message
from google.rpc import error_details_pb2

from server.convert import largest_request_bytes

from ..conftest import data_only_settings
from ..http_server import ServerWithHttp, start_server_with_http
from .test_auth import Secured, secured_settings, start_secured

README = Path(__file__).resolve().parents[2] / "README.md"
MARKER = "<!-- connect-curl-examples:"
README_URL = "http://localhost:8080"
CATALOG = "/interesttree.v1.CatalogService"


async def curl_raw(args: list[str]) -> tuple[int, bytes]:
    """Runs curl (never in the event loop's thread: the server answers on this loop); the HTTP
    status and the body."""
    process = await asyncio.create_subprocess_exec(
        "curl", "-sS", "-m", "60", "-w", "\n%{http_code}", *args, stdout=asyncio.subprocess.PIPE
    )
    out, _ = await process.communicate()
    assert process.returncode == 0, out
    body, _, status = out.rpartition(b"\n")
    return int(status), body


async def curl(args: list[str]) -> tuple[int, Any]:
    """curl_raw, the body as JSON (None for an empty one)."""
    status, body = await curl_raw(args)
    return status, json.loads(body) if body else None


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


def detail(error: dict[str, Any], kind: type[message.Message]) -> Any:
    """The error's detail of a type, decoded from its `value` (unpadded base64, as Connect
    sends it), or None."""
    for packed in error.get("details", []):
        if packed["type"] == kind.DESCRIPTOR.full_name:
            value = packed["value"]
            assert not value.endswith("=")
            return kind.FromString(base64.b64decode(value + "=" * (-len(value) % 4)))
    return None


def violations(error: dict[str, Any]) -> list[tuple[str, str]]:
    decoded = detail(error, error_details_pb2.BadRequest)
    return [(v.field, v.description) for v in decoded.field_violations] if decoded else []


def reason(error: dict[str, Any]) -> str:
    info = detail(error, error_details_pb2.ErrorInfo)
    assert info is not None, error
    return str(info.reason)


def envelope(body: dict[str, Any]) -> bytes:
    """One message of Connect's streaming protocol: flags 0, the length, the JSON."""
    data = json.dumps(body).encode()
    return struct.pack(">BI", 0, len(data)) + data


def unenvelope(stream: bytes) -> list[tuple[int, Any]]:
    """The messages of a Connect stream: (flags, JSON); flags 2 is the end-of-stream message."""
    messages = []
    while stream:
        flags, size = struct.unpack(">BI", stream[:5])
        messages.append((flags, json.loads(stream[5 : 5 + size])))
        stream = stream[5 + size :]
    return messages


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


async def test_bad_bodies_and_methods_get_connect_errors(
    served: ServerWithHttp, tmp_path: Path
) -> None:
    status, error = await post(served.base_url, f"{CATALOG}/GetItem", {"nme": "items/a"})
    assert (status, error["code"], reason(error)) == (400, "invalid_argument", "MALFORMED_REQUEST")
    assert [field for field, _ in violations(error)] == ["body"]

    # curl's default form content type is no Connect codec: HTTP 415, as the protocol has it.
    status, error = await curl(
        ["-X", "POST", f"{served.base_url}{CATALOG}/GetItem", "-d", '{"name": "items/a"}']
    )
    assert (status, error) == (415, None)

    status, error = await post(served.base_url, f"{CATALOG}/GetItem", {"name": "items/nope"})
    assert (status, error["code"], reason(error)) == (404, "not_found", "ITEM_NOT_FOUND")

    # A server-streaming method wants Connect's streaming content type, not unary JSON.
    status, error = await post(
        served.base_url, "/interesttree.v1.InterestService/BatchBuildInterestTrees", {}
    )
    assert (status, error) == (415, None)

    # A body over the largest request the caps allow is refused before it is all read.
    huge = tmp_path / "huge.json"
    huge.write_bytes(
        b'{"name": "items/a"'
        + b" " * largest_request_bytes(served.running.runtime.engine.embedder.dim)
        + b"}"
    )
    status, error = await curl(
        [
            *["-X", "POST", f"{served.base_url}{CATALOG}/GetItem"],
            *["-H", "Content-Type: application/json", "--data-binary", f"@{huge}"],
        ]
    )
    assert (status, error["code"]) == (429, "resource_exhausted")

    # The HTTP port's headers are on the Connect answers too: the request id echoed back.
    head = tmp_path / "headers.txt"
    status, _ = await curl(
        [
            *["-X", "POST", f"{served.base_url}{CATALOG}/GetItem", "-D", str(head)],
            *["-H", "Content-Type: application/json", "-H", "X-Request-Id: connect-1"],
            *["-d", '{"name": "items/nope"}'],
        ]
    )
    headers = head.read_text().lower()
    assert status == 404
    assert "x-request-id: connect-1" in headers
    assert "x-content-type-options: nosniff" in headers

    # Counted as RPCs, as gRPC calls are.
    process = await asyncio.create_subprocess_exec(
        "curl", "-sS", f"{served.base_url}/metrics", stdout=asyncio.subprocess.PIPE
    )
    metrics, _ = await process.communicate()
    assert (
        'interesttree_rpc_duration_seconds_count{code="NOT_FOUND",'
        'method="/interesttree.v1.CatalogService/GetItem"} 2.0'
    ) in metrics.decode()


async def test_batch_builds_stream_in_connect_envelopes(
    served: ServerWithHttp, tmp_path: Path
) -> None:
    url = served.base_url
    items = [
        {"name": f"items/{name}", "title": name.title(), "categories": ["Books", "SF"]}
        for name in ("dune", "hyperion", "foundation")
    ]
    assert (await post(url, f"{CATALOG}/UpsertItems", {"items": items}))[0] == 200
    events = [
        {"user": user, "item": "items/dune", "type": "EVENT_TYPE_LIKE", "eventTime": when}
        for user, when in (
            ("users/ann", "2024-03-01T10:00:00Z"),
            ("users/bo", "2024-03-02T10:00:00Z"),
        )
    ]
    path = "/interesttree.v1.InterestService"
    assert (await post(url, f"{path}/RecordEvents", {"events": events}))[0] == 200

    async def stream(body: dict[str, Any]) -> tuple[int, list[tuple[int, Any]]]:
        request = tmp_path / "request.bin"
        request.write_bytes(envelope(body))
        status, raw = await curl_raw(
            [
                "-X",
                "POST",
                f"{url}{path}/BatchBuildInterestTrees",
                "-H",
                "Content-Type: application/connect+json",
                "--data-binary",
                f"@{request}",
            ]
        )
        return status, unenvelope(raw)

    status, messages = await stream({"users": ["users/ann", "users/bo", "users/nobody"]})
    assert status == 200
    *results, (end_flags, end) = messages
    assert (end_flags, end) == (2, {})
    assert all(flags == 0 for flags, _ in results)
    by_user = {result["user"]: result for _, result in results}
    assert sorted(by_user) == ["users/ann", "users/bo", "users/nobody"]
    assert sorted(result["completedCount"] for _, result in results) == [1, 2, 3]
    assert by_user["users/ann"]["tree"]["name"] == "users/ann/interestTree"
    assert by_user["users/bo"]["tree"]["nodes"]
    assert "NOT_FOUND" in by_user["users/nobody"]["error"]

    # A bad request ends the stream with the Connect error (HTTP 200, as streams do).
    status, messages = await stream({})
    assert status == 200
    [(flags, end)] = messages
    assert flags == 2
    assert end["error"]["code"] == "invalid_argument"
    assert [field for field, _ in violations(end["error"])] == ["users"]


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
