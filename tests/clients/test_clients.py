"""The Python SDK (clients/python) against real servers.

- The blocking client against `interest-tree serve` started here as its own process (JSON
  logs on), as a recommender backend would use it; the README's example runs the same way.
- The asyncio client against the in-process server.
- Retries and deadlines of both clients against a gRPC server that fails on purpose, and that
  the retries are gRPC's own, from the service config the clients give their channels.
- The TypeScript SDK's own tests (`npm test` in clients/typescript) are run by `make sdk-ts`.
"""

from __future__ import annotations

import json
import os
import queue
import re
import shutil
import subprocess
import sys
import threading
import time
import zipfile
from collections.abc import AsyncIterator, Iterator
from concurrent import futures
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import grpc
import pytest
from interesttree import (
    DEFAULT_DEADLINES_S,
    AsyncInterestTreeClient,
    InterestTreeClient,
    InvalidArgumentError,
    NotFoundError,
    RetryPolicy,
    UnavailableError,
    channel_options,
    item_name,
    service_config,
    user_name,
)
from interesttree.v1 import catalog_pb2, catalog_pb2_grpc, interest_pb2, interest_pb2_grpc

from server.demo import sample_requests

from ..conftest import RunningServer

REPO = Path(__file__).resolve().parents[2]
START = datetime(2024, 1, 1, tzinfo=UTC)
FAST_RETRY = RetryPolicy(initial_backoff_s=0.01, max_backoff_s=0.04)


@dataclass
class ServerProcess:
    target: str
    http_url: str
    log_path: Path

    def log_records(self) -> list[dict[str, Any]]:
        records = []
        for line in self.log_path.read_text().splitlines():
            if line.startswith("{"):
                records.append(json.loads(line))
        return records


def _read_ports(process: subprocess.Popen[str], timeout_s: float) -> tuple[str, str]:
    """Reads the gRPC and HTTP addresses the server prints once it listens."""
    lines: queue.Queue[str] = queue.Queue()

    def pump() -> None:
        # A thread, because a buffered pipe can hold both lines after one readiness event.
        assert process.stdout is not None
        for line in process.stdout:
            lines.put(line)

    threading.Thread(target=pump, daemon=True).start()
    target = http_url = ""
    deadline = time.monotonic() + timeout_s
    while not (target and http_url):
        try:
            line = lines.get(timeout=max(deadline - time.monotonic(), 0.01))
        except queue.Empty:
            raise RuntimeError(f"server did not start (exit code {process.poll()})") from None
        if found := re.search(r"listening on (\S+)", line):
            target = found.group(1)
        if found := re.search(r"review page on (http://\S+?)/?$", line.strip()):
            http_url = found.group(1)
    return target, http_url


@pytest.fixture(scope="module")
def server_process(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """`interest-tree serve --no-llm` in its own process, on free ports, logging JSON lines."""
    folder = tmp_path_factory.mktemp("server-process")
    log_path = folder / "server.log"
    command = [
        str(Path(sys.executable).parent / "interest-tree"),
        "--log-format",
        "json",
        "serve",
        "--no-llm",
        "--port",
        "0",
        "--http-port",
        "0",
        "--data-dir",
        str(folder / "data"),
    ]
    with log_path.open("w") as log:
        process = subprocess.Popen(
            command,
            stdout=subprocess.PIPE,
            stderr=log,
            text=True,
            env={**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"},
        )
        try:
            target, http_url = _read_ports(process, timeout_s=240)
            yield ServerProcess(target, http_url, log_path)
        finally:
            process.terminate()
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def test_blocking_client_against_a_server_process(server_process: ServerProcess) -> None:
    items, events = sample_requests(START)
    with InterestTreeClient(server_process.target) as client:
        stored = client.upsert_items(items.items)
        assert [item.name for item in stored] == [item.name for item in items.items]
        assert all(item.update_time.seconds > 0 for item in stored)
        assert client.record_events(events.events) == len(events.events)
        # A batch retried with its key (the client sets one per call) records nothing twice.
        assert client.record_events(events.events[:3], request_id="retry-me") == 3
        assert client.record_events(events.events[:3], request_id="retry-me") == 0

        alice = user_name("alice")
        tree = client.build_interest_tree(alice)
        assert tree.name == "users/alice/interestTree"
        assert tree.revision == 1
        assert "Space opera" in {node.label for node in tree.nodes}
        assert client.get_interest_tree(alice) == tree
        explained = client.explain_interests(alice)
        assert [level.level for level in explained.levels] == list(
            range(1, len(explained.levels) + 1)
        )

        response = client.recommend(alice, page_size=5)
        assert len(response.recommendations) == 5
        seen = {event.item for event in events.events if event.user == alice}
        node_ids = {node.id for node in tree.nodes}
        for rec in response.recommendations:
            assert rec.item not in seen
            assert rec.node_ids and set(rec.node_ids) <= node_ids
            assert rec.reason.startswith("Because of your interest in")

        names = [item.name for item in client.iter_items(page_size=7)]
        assert names == sorted(item.name for item in items.items)

        client.build_interest_tree(alice)
        revisions = [
            r.tree.revision for r in client.iter_interest_tree_revisions(alice, page_size=1)
        ]
        assert revisions == [2, 1]

        with pytest.raises(InvalidArgumentError) as raised:
            client.upsert_items(
                [
                    catalog_pb2.Item(name="items/ok", title="Fine"),
                    catalog_pb2.Item(name="items/dracula", title="x" * 513),
                    catalog_pb2.Item(name="items/bad id", title="Spaces"),
                ]
            )
        error = raised.value
        assert error.code == grpc.StatusCode.INVALID_ARGUMENT
        assert (error.domain, error.reason) == ("interesttree.v1", "INVALID_ARGUMENT")
        assert [v.field for v in error.field_violations] == ["items[1].title", "items[2].name"]
        assert all(v.description for v in error.field_violations)
        assert error.attempts == 1
        assert re.fullmatch(r"[0-9a-f]{32}", error.request_id)

        with pytest.raises(NotFoundError) as missing:
            client.get_item(item_name("no-such-item"))
        assert missing.value.reason == "ITEM_NOT_FOUND"
        assert missing.value.resource_name == "items/no-such-item"

    # The request id the client sent is the one in the server's structured log of that call.
    logged = [r for r in server_process.log_records() if r.get("request_id") == error.request_id]
    assert logged, "no JSON log line carries the client's request id"
    assert logged[-1]["rpc_method"] == "/interesttree.v1.CatalogService/UpsertItems"
    assert logged[-1]["grpc_code"] == "INVALID_ARGUMENT"
    assert {"time", "level", "logger", "message"} <= set(logged[-1])


def test_a_generic_grpc_client_works_through_reflection(server_process: ServerProcess) -> None:
    """`buf curl` (as in the README) knows nothing of our protos but what reflection says."""
    buf = REPO / "node_modules" / ".bin" / "buf"
    if not buf.exists():
        pytest.skip("node_modules/.bin/buf is missing (run `npm ci`)")
    items, events = sample_requests(START)
    with InterestTreeClient(server_process.target) as client:
        client.upsert_items(items.items)
        client.record_events(event for event in events.events if event.user == "users/carol")
    base = f"http://{server_process.target}"
    curl = [str(buf), "curl", "--protocol", "grpc", "--http2-prior-knowledge"]
    # Both reflection protocols are served; `buf curl` asks v1 first by default.
    for protocol in ("grpc-v1", "grpc-v1alpha"):
        listed = subprocess.run(
            [*curl, "--reflect-protocol", protocol, "--list-methods", base],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert listed.returncode == 0, listed.stderr
        assert "interesttree.v1.RecommendationService/Recommend" in listed.stdout.split()
    called = subprocess.run(
        [
            *curl,
            "--data",
            '{"user": "users/carol", "pageSize": 3}',
            f"{base}/interesttree.v1.RecommendationService/Recommend",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    recommendations = json.loads(called.stdout)["recommendations"]
    assert len(recommendations) == 3
    assert all(rec["nodeIds"] and rec["reason"] for rec in recommendations)


def _readme_examples() -> list[str]:
    readme = (REPO / "clients" / "python" / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", readme, flags=re.DOTALL)
    assert blocks, "the README has no Python example"
    return [str(block) for block in blocks]


def test_readme_example_runs(server_process: ServerProcess, tmp_path: Path) -> None:
    """Every block of the README, in order, on one server (the later ones use the data of
    the first)."""
    outputs = []
    for number, code in enumerate(_readme_examples()):
        script = tmp_path / f"example_{number}.py"
        script.write_text(code)
        result = subprocess.run(
            [sys.executable, str(script)],
            capture_output=True,
            text=True,
            timeout=120,
            env={**os.environ, "INTEREST_TREE_TARGET": server_process.target},
            check=False,
        )
        assert result.returncode == 0, result.stderr
        outputs.append(result.stdout)
    first, later = outputs[0], outputs[1]
    assert "Space opera" in first
    assert "recommended: items/" in first
    assert "rejected: INVALID_RESOURCE_NAME ['name']" in first
    assert "similar: items/hyperion Like \u201cDune\u201d: " in later
    assert "session: ['items/" in later
    assert "fallback: True ['items/" in later
    assert "hidden gone: True" in later


async def test_async_client_against_the_in_process_server(
    data_only_server: RunningServer,
) -> None:
    items, events = sample_requests(START)
    async with AsyncInterestTreeClient(f"127.0.0.1:{data_only_server.port}") as client:
        await client.upsert_items(items.items)
        assert await client.record_events(events.events) == len(events.events)
        names = [item.name async for item in client.iter_items(page_size=10)]
        assert names == sorted(item.name for item in items.items)
        carol = user_name("carol")
        # Recommend builds the missing tree first.
        response = await client.recommend(carol, page_size=3)
        assert response.tree_revision == 1
        tree = await client.get_interest_tree(carol)
        assert {n for rec in response.recommendations for n in rec.node_ids} <= {
            node.id for node in tree.nodes
        }
        revisions = [r.tree.revision async for r in client.iter_interest_tree_revisions(carol)]
        assert revisions == [1]
        with pytest.raises(NotFoundError) as raised:
            await client.recommend(user_name("nobody"))
        assert raised.value.reason == "USER_NOT_FOUND"
        assert raised.value.resource_name == "users/nobody"


# Retries and deadlines ---------------------------------------------------------------------


@dataclass
class Flaky:
    """What the failing server saw, and how many more GetItem calls it should fail."""

    fail_get_item: int = 0
    delay_s: float = 0.0
    get_item_deadlines: list[float] = field(default_factory=list)
    get_item_request_ids: list[str] = field(default_factory=list)
    # The header gRPC's own retries add: "1" on the first retry, and so on.
    get_item_previous_attempts: list[str] = field(default_factory=list)
    list_items: int = 0
    builds: int = 0
    deletes: int = 0
    event_keys: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


class FlakyCatalog(catalog_pb2_grpc.CatalogServiceServicer):
    def __init__(self, state: Flaky) -> None:
        self.state = state

    def GetItem(  # noqa: N802
        self, request: catalog_pb2.GetItemRequest, context: grpc.ServicerContext
    ) -> catalog_pb2.GetItemResponse:
        with self.state.lock:
            remaining = context.time_remaining()
            self.state.get_item_deadlines.append(remaining if remaining is not None else -1)
            metadata = dict(context.invocation_metadata())
            self.state.get_item_request_ids.append(str(metadata.get("x-request-id", "")))
            previous = str(metadata.get("grpc-previous-rpc-attempts", ""))
            self.state.get_item_previous_attempts.append(previous)
            if request.name == "items/invalid":
                context.abort(grpc.StatusCode.INVALID_ARGUMENT, "bad name")
            if self.state.fail_get_item > 0:
                self.state.fail_get_item -= 1
                time.sleep(self.state.delay_s)
                context.abort(grpc.StatusCode.UNAVAILABLE, "try again")
        return catalog_pb2.GetItemResponse(item=catalog_pb2.Item(name=request.name, title="Found"))

    def ListItems(  # noqa: N802
        self, request: catalog_pb2.ListItemsRequest, context: grpc.ServicerContext
    ) -> catalog_pb2.ListItemsResponse:
        with self.state.lock:
            self.state.list_items += 1
            if self.state.list_items == 1:
                context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, "busy")
        return catalog_pb2.ListItemsResponse(items=[catalog_pb2.Item(name="items/a", title="A")])

    def DeleteItems(  # noqa: N802
        self, request: catalog_pb2.DeleteItemsRequest, context: grpc.ServicerContext
    ) -> catalog_pb2.DeleteItemsResponse:
        with self.state.lock:
            self.state.deletes += 1
        context.abort(grpc.StatusCode.UNAVAILABLE, "down")


class FlakyInterests(interest_pb2_grpc.InterestServiceServicer):
    def __init__(self, state: Flaky) -> None:
        self.state = state

    def BuildInterestTree(  # noqa: N802
        self, request: interest_pb2.BuildInterestTreeRequest, context: grpc.ServicerContext
    ) -> interest_pb2.BuildInterestTreeResponse:
        with self.state.lock:
            self.state.builds += 1
        context.abort(grpc.StatusCode.UNAVAILABLE, "down")

    def RecordEvents(  # noqa: N802
        self, request: interest_pb2.RecordEventsRequest, context: grpc.ServicerContext
    ) -> interest_pb2.RecordEventsResponse:
        with self.state.lock:
            self.state.event_keys.append(request.request_id)
            if len(self.state.event_keys) == 1:
                context.abort(grpc.StatusCode.UNAVAILABLE, "down")
        return interest_pb2.RecordEventsResponse(recorded_count=len(request.events))


@pytest.fixture
def flaky_server() -> Iterator[tuple[str, Flaky]]:
    """A thread-pool gRPC server, so that both the blocking and the asyncio client (on the
    test's event loop) can call it."""
    state = Flaky()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    # Only the RPCs under test are implemented; the others answer UNIMPLEMENTED.
    catalog = FlakyCatalog(state)  # type: ignore[abstract]
    interests = FlakyInterests(state)  # type: ignore[abstract]
    catalog_pb2_grpc.add_CatalogServiceServicer_to_server(catalog, server)
    interest_pb2_grpc.add_InterestServiceServicer_to_server(interests, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield f"127.0.0.1:{port}", state
    server.stop(None)


def test_blocking_client_retries_only_idempotent_calls_on_retryable_codes(
    flaky_server: tuple[str, Flaky],
) -> None:
    target, state = flaky_server
    with InterestTreeClient(target, retry=FAST_RETRY) as client:
        state.fail_get_item = 2
        assert client.get_item("items/x").title == "Found"
        assert len(state.get_item_deadlines) == 3
        # GetItem's documented default deadline is 5 s (gRPC's timeout header may round it up
        # a little: a server saw 5.008 s).
        assert 4.0 < state.get_item_deadlines[0] < 5.1
        assert len(set(state.get_item_request_ids)) == 1, "one request id for all attempts"

        # All attempts share one deadline: after two failures that took 0.2 s each, the
        # third attempt has at least 0.4 s less left.
        state.get_item_deadlines.clear()
        state.fail_get_item, state.delay_s = 2, 0.2
        client.get_item("items/x", timeout=2.0)
        state.delay_s = 0.0
        first, _, third = state.get_item_deadlines
        assert first > 1.5 and third < first - 0.35

        state.fail_get_item = 10
        with pytest.raises(UnavailableError) as exhausted:
            client.get_item("items/x")
        assert exhausted.value.attempts == 4
        state.fail_get_item = 0

        assert len(client.list_items().items) == 1
        assert state.list_items == 2, "RESOURCE_EXHAUSTED is retried"

        calls = len(state.get_item_deadlines)
        with pytest.raises(InvalidArgumentError):
            client.get_item("items/invalid")
        assert len(state.get_item_deadlines) == calls + 1, "INVALID_ARGUMENT is not retried"

        with pytest.raises(UnavailableError) as not_retried:
            client.build_interest_tree("users/a")
        assert (not_retried.value.attempts, state.builds) == (1, 1)
        with pytest.raises(UnavailableError):
            client.delete_items(["items/a"])
        assert state.deletes == 1
        with pytest.raises(UnavailableError):
            client.delete_items(["items/a"], allow_missing=True)
        assert state.deletes == 5

        assert client.record_events([interest_pb2.Event(user="users/a", item="items/a")]) == 1
        assert len(state.event_keys) == 2
        assert state.event_keys[0] and state.event_keys[0] == state.event_keys[1]

        before = len(state.get_item_deadlines)
        client.get_item("items/x", timeout=0.3)
        # Far below the 5 s default (the wire format may round the 0.3 s up a little).
        assert state.get_item_deadlines[before] < 0.5


async def test_async_client_retries_only_idempotent_calls_on_retryable_codes(
    flaky_server: tuple[str, Flaky],
) -> None:
    target, state = flaky_server
    async with AsyncInterestTreeClient(target, retry=FAST_RETRY) as client:
        state.fail_get_item = 2
        assert (await client.get_item("items/x")).title == "Found"
        assert len(state.get_item_deadlines) == 3
        assert 4.0 < state.get_item_deadlines[0] < 5.1  # gRPC rounds the timeout up

        assert len((await client.list_items()).items) == 1
        assert state.list_items == 2

        with pytest.raises(UnavailableError) as not_retried:
            await client.build_interest_tree("users/a")
        assert (not_retried.value.attempts, state.builds) == (1, 1)

        assert await client.record_events([interest_pb2.Event(user="users/a", item="items/a")]) == 1
        assert len(state.event_keys) == 2 and state.event_keys[0] == state.event_keys[1]


def test_retry_gives_up_when_the_pause_would_pass_the_deadline() -> None:
    policy = RetryPolicy(initial_backoff_s=10, max_backoff_s=10)
    deadline = time.monotonic() + 0.5
    pauses = [policy.pause(grpc.StatusCode.UNAVAILABLE, 1, deadline) for _ in range(50)]
    # Full jitter draws from [0, 10 s): nearly all draws pass the deadline and are refused.
    assert all(p is None or p < 0.5 for p in pauses)
    assert policy.pause(grpc.StatusCode.INTERNAL, 1, time.monotonic() + 60) is None
    assert policy.pause(grpc.StatusCode.RESOURCE_EXHAUSTED, 1, time.monotonic() + 60) is not None


# gRPC's own retries, from the service config ---------------------------------------------


def test_blocking_client_retries_are_grpcs(flaky_server: tuple[str, Flaky]) -> None:
    target, state = flaky_server
    with InterestTreeClient(target, retry=FAST_RETRY) as client:
        state.fail_get_item = 2
        assert client.get_item("items/x").title == "Found"
    # Only gRPC's retries send this header: the client's own code makes one attempt.
    assert state.get_item_previous_attempts == ["", "1", "2"]
    assert len(set(state.get_item_request_ids)) == 1


@dataclass
class Attempt:
    previous_attempts: str
    time_remaining: float
    request_id: str


@pytest.fixture
async def aio_flaky_server() -> AsyncIterator[tuple[str, dict[str, list[Attempt]]]]:
    """A grpc.aio server: GetInterestTree fails twice with UNAVAILABLE, BuildInterestTree
    always does, and ExplainInterests always does after sending response headers first."""
    seen: dict[str, list[Attempt]] = {}

    def failing(method: str, failures: int, *, headers: bool = False) -> Any:
        async def handle(request: bytes, context: grpc.aio.ServicerContext[bytes, bytes]) -> bytes:
            metadata = {key: str(value) for key, value in context.invocation_metadata() or ()}
            attempts = seen.setdefault(method, [])
            attempts.append(
                Attempt(
                    metadata.get("grpc-previous-rpc-attempts", ""),
                    context.time_remaining() or -1.0,
                    metadata.get("x-request-id", ""),
                )
            )
            if headers:
                await context.send_initial_metadata((("x-request-id", "echoed"),))
            if len(attempts) <= failures:
                await context.abort(grpc.StatusCode.UNAVAILABLE, "try again")
            return b""  # an empty response message

        return grpc.unary_unary_rpc_method_handler(handle)

    handlers = {
        "GetInterestTree": failing("GetInterestTree", 2),
        "BuildInterestTree": failing("BuildInterestTree", 100),
        "ExplainInterests": failing("ExplainInterests", 100, headers=True),
    }
    server = grpc.aio.server()
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler("interesttree.v1.InterestService", handlers),)
    )
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    yield f"127.0.0.1:{port}", seen
    await server.stop(None)


async def test_grpc_retries_the_idempotent_calls_named_in_the_service_config(
    aio_flaky_server: tuple[str, dict[str, list[Attempt]]],
) -> None:
    target, seen = aio_flaky_server
    async with AsyncInterestTreeClient(target, retry=FAST_RETRY) as client:
        await client.get_interest_tree("users/a")
        attempts = seen["GetInterestTree"]
        assert [a.previous_attempts for a in attempts] == ["", "1", "2"]
        assert len({a.request_id for a in attempts}) == 1 and attempts[0].request_id
        # GetInterestTree's documented 5 s deadline is sent (gRPC's timeout header may round
        # it up a little).
        assert all(4.0 < a.time_remaining < 5.1 for a in attempts), attempts

        with pytest.raises(UnavailableError) as not_retried:
            await client.build_interest_tree("users/a")
        assert not_retried.value.attempts == 1
        [build] = seen["BuildInterestTree"]
        assert build.previous_attempts == ""
        # Its documented 120 s, rounded up a little like the 5 s above.
        assert 115.0 < build.time_remaining < 121.5

        # Response headers commit a call to its attempt: gRPC retries it no more.
        with pytest.raises(UnavailableError) as committed:
            await client.explain_interests("users/a")
        assert committed.value.attempts == 1
        assert len(seen["ExplainInterests"]) == 1


def test_the_service_config_retries_the_idempotent_rpcs_only() -> None:
    options = dict(channel_options(FAST_RETRY, [("grpc.max_receive_message_length", 1 << 20)]))
    assert options["grpc.enable_retries"] == 1
    assert options["grpc.max_receive_message_length"] == 1 << 20
    [config] = json.loads(str(options["grpc.service_config"]))["methodConfig"]
    never = {"BuildInterestTree", "BatchBuildInterestTrees"}
    # DeleteItems is retried by the client, and only with allow_missing.
    assert {name["method"] for name in config["name"]} == set(DEFAULT_DEADLINES_S) - {
        "DeleteItems",
        *never,
    }
    assert config["retryPolicy"] == {
        "maxAttempts": 4,
        "initialBackoff": "0.01s",
        "maxBackoff": "0.04s",
        "backoffMultiplier": 2.0,
        "retryableStatusCodes": ["RESOURCE_EXHAUSTED", "UNAVAILABLE"],
    }
    assert service_config(RetryPolicy(max_attempts=1)) == {}
    with pytest.raises(ValueError, match="max_attempts"):
        RetryPolicy(max_attempts=6)  # gRPC would cut it to 5


def test_the_default_deadlines_are_the_ones_the_protos_document() -> None:
    documented: dict[str, float] = {}
    for proto in (REPO / "proto" / "interesttree" / "v1").glob("*.proto"):
        text = proto.read_text()
        for found in re.finditer(r"((?:\s*//.*\n)+)\s*rpc (\w+)\(", text):
            deadline = re.search(r"Default deadline: ([\d,]+) s", found.group(1))
            assert deadline, f"{found.group(2)} documents no default deadline"
            documented[found.group(2)] = float(deadline.group(1).replace(",", ""))
    assert {rpc: documented.get(rpc) for rpc in DEFAULT_DEADLINES_S} == DEFAULT_DEADLINES_S


# Packaging -------------------------------------------------------------------------------


def test_the_package_builds_as_a_typed_wheel(tmp_path: Path) -> None:
    # Built from a copy, since setuptools writes build/ and egg-info next to the sources.
    source = tmp_path / "source"
    shutil.copytree(
        REPO / "clients" / "python",
        source,
        ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__", ".mypy_cache"),
    )
    wheels = tmp_path / "wheels"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--quiet",
            "--no-deps",
            "--no-build-isolation",
            "--wheel-dir",
            str(wheels),
            str(source),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    [wheel] = wheels.glob("interesttree_client-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for expected in (
        "interesttree/py.typed",
        "interesttree/client.py",
        "interesttree/errors.py",
        "interesttree/v1/py.typed",
        "interesttree/v1/catalog_pb2.py",
        "interesttree/v1/catalog_pb2.pyi",
        "interesttree/v1/interest_pb2_grpc.pyi",
    ):
        assert expected in names, f"{expected} missing from {wheel.name}"
