"""Real server processes for the reliability tests.

`start_server` runs `interest-tree serve --no-llm --port 0 --data-dir DIR` as a child process,
reads the port from its "interest-tree listening on HOST:PORT" line and waits for Health to
say SERVING. By default the process embeds with the packaged all-MiniLM model; with
`HashEmbeddings` it embeds through a loopback OpenAI-compatible /v1/embeddings endpoint that
hashes words, which starts in seconds instead of loading torch.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import grpc
from google.protobuf.message import Message
from grpc_health.v1 import health_pb2, health_pb2_grpc
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

from server.demo import sample_requests as demo_sample_requests

from .support import CALL_TIMEOUT_S, SAMPLE_USERS, START, Code, Outcome, invoke

START_TIMEOUT_S = 240.0
# Run first in the child, then exec'd into the server: on Linux the server gets SIGKILL when
# the test process dies (even by a timeout's os._exit), so no server outlives its test. Not a
# preexec_fn: that forces fork(), and gRPC's fork handlers can deadlock the test process.
_DIE_WITH_PARENT = (
    "import ctypes, os, signal, sys\n"
    "if sys.platform.startswith('linux'):\n"
    "    ctypes.CDLL(None).prctl(1, signal.SIGKILL)\n"  # PR_SET_PDEATHSIG
    "    if os.getppid() != int(sys.argv[1]):\n"
    "        sys.exit(1)\n"
    "os.execv(sys.argv[2], sys.argv[2:])"
)
_LISTENING = re.compile(r"interest-tree listening on (\S+):(\d+)")


@dataclass
class ServerProcess:
    """A running `interest-tree serve` child process and stubs on its loopback port."""

    data_dir: Path
    log_path: Path
    process: subprocess.Popen[bytes]
    address: str
    channel: grpc.Channel

    @property
    def catalog(self) -> catalog_pb2_grpc.CatalogServiceStub:
        return catalog_pb2_grpc.CatalogServiceStub(self.channel)

    @property
    def interests(self) -> interest_pb2_grpc.InterestServiceStub:
        return interest_pb2_grpc.InterestServiceStub(self.channel)

    @property
    def recommender(self) -> recommendation_pb2_grpc.RecommendationServiceStub:
        return recommendation_pb2_grpc.RecommendationServiceStub(self.channel)

    @property
    def admin(self) -> admin_pb2_grpc.AdminServiceStub:
        return admin_pb2_grpc.AdminServiceStub(self.channel)

    def health(self) -> int:
        stub = health_pb2_grpc.HealthStub(self.channel)
        reply = stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=CALL_TIMEOUT_S)
        return int(reply.status)

    def log_tail(self, lines: int = 40) -> str:
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    def cause(self, details: str) -> str:
        """The first exception line a server logged (this one or an earlier one on the same
        folder) after the request id named in `details`."""
        found = re.search(r"\b[0-9a-f]{32}\b", details)
        for log in sorted(self.log_path.parent.glob("*-server-*.log")) if found else []:
            text = log.read_text(errors="replace")
            if found and (start := text.find(found.group(0))) >= 0:
                lines = text[start:].splitlines()[1:80]
                errors = [line for line in lines if re.match(r"^[\w.]+(Error|Exception)\b", line)]
                return errors[0][:300] if errors else "-"
        return "-"

    def explain(self, problems: Iterable[str]) -> str:
        """Problems one a line, each naming a request id followed by the server's exception."""
        return "\n".join(
            f"{problem}\n    server: {self.cause(problem)}"
            if re.search(r"\b[0-9a-f]{32}\b", problem)
            else problem
            for problem in problems
        )

    def stop(self, sig: signal.Signals = signal.SIGTERM, timeout: float = 60.0) -> int:
        """Sends `sig` and waits; a process that outlives `timeout` is killed (returns -9)."""
        if self.process.poll() is None:
            self.process.send_signal(sig)
        try:
            return self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            return -int(signal.SIGKILL)
        finally:
            self.channel.close()


def _command(data_dir: Path, extra: Iterable[str]) -> list[str]:
    script = Path(sys.executable).with_name("interest-tree")
    base = [str(script)] if script.exists() else [sys.executable, "-m", "server.cli"]
    return [
        sys.executable,
        "-c",
        _DIE_WITH_PARENT,
        str(os.getpid()),
        *base,
        "serve",
        "--host",
        "127.0.0.1",
        "--port",
        "0",
        "--data-dir",
        str(data_dir),
        *extra,
    ]


def start_server(
    data_dir: Path,
    *,
    env: Mapping[str, str] | None = None,
    args: Iterable[str] = ("--no-llm",),
    wait_serving: bool = True,
) -> ServerProcess:
    """Starts the service on a free loopback port over `data_dir` and waits until it serves."""
    data_dir.parent.mkdir(parents=True, exist_ok=True)
    count = len(list(data_dir.parent.glob(f"{data_dir.name}-server-*.log")))
    log_path = data_dir.parent / f"{data_dir.name}-server-{count}.log"
    child_env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", **(env or {})}
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            _command(data_dir, args),
            stdout=log,
            stderr=subprocess.STDOUT,
            env=child_env,
        )
    give_up = time.monotonic() + START_TIMEOUT_S
    while (found := _LISTENING.search(log_path.read_text(errors="replace"))) is None:
        if process.poll() is not None or time.monotonic() > give_up:
            process.kill()
            process.wait()
            tail = log_path.read_text(errors="replace")[-4000:]
            raise AssertionError(f"server did not start (rc {process.returncode}):\n{tail}")
        time.sleep(0.05)
    address = f"{found.group(1)}:{found.group(2)}"
    running = ServerProcess(data_dir, log_path, process, address, grpc.insecure_channel(address))
    while wait_serving and running.health() != health_pb2.HealthCheckResponse.SERVING:
        assert time.monotonic() < give_up, f"never SERVING:\n{running.log_tail()}"
        time.sleep(0.1)
    return running


def sample_requests() -> tuple[catalog_pb2.UpsertItemsRequest, interest_pb2.RecordEventsRequest]:
    """The shipped sample (server/sample/*.json): 49 items, and the events of alice, bob and
    carol, one a day from START, built as the demo builds them."""
    return demo_sample_requests(START)


def load_sample(server: ServerProcess) -> None:
    items, events = sample_requests()
    server.catalog.UpsertItems(items, timeout=120)
    server.interests.RecordEvents(events, timeout=CALL_TIMEOUT_S)


USER_RPCS: tuple[tuple[str, type[Message], type[Message]], ...] = (
    (
        "/interesttree.v1.InterestService/BuildInterestTree",
        interest_pb2.BuildInterestTreeRequest,
        interest_pb2.BuildInterestTreeResponse,
    ),
    (
        "/interesttree.v1.InterestService/ExplainInterests",
        interest_pb2.ExplainInterestsRequest,
        interest_pb2.ExplainInterestsResponse,
    ),
    (
        "/interesttree.v1.RecommendationService/Recommend",
        recommendation_pb2.RecommendRequest,
        recommendation_pb2.RecommendResponse,
    ),
)


def user_checks(server: ServerProcess, users: Iterable[str]) -> list[str]:
    """What goes wrong when normal users build, explain and recommend, and models refresh:
    each call must be OK, with finite numbers and a non-empty recommendation list."""
    calls = [
        (f"{path.rsplit('/', 1)[1]}({user})", path, request_type(user=user), response_type)
        for user in users
        for path, request_type, response_type in USER_RPCS
    ]
    calls.append(
        (
            "RefreshModels",
            "/interesttree.v1.AdminService/RefreshModels",
            admin_pb2.RefreshModelsRequest(),
            admin_pb2.RefreshModelsResponse,
        )
    )
    problems: list[str] = []
    for name, path, request, response_type in calls:
        outcome = invoke(server.channel, path, request, response_type)
        if outcome.code is not Code.OK or outcome.problems:
            problems.append(f"{name} -> {outcome.describe()}")
        elif not getattr(outcome.response, "recommendations", True):
            problems.append(f"{name} -> no recommendations")
    return problems


def embedding_dim(server: ServerProcess) -> int:
    """The server's embedding dimension, read from its answer to a 1-value vector."""
    item = catalog_pb2.Item(name="items/fz-dim", title="Dim", vector=[1.0])
    outcome = invoke(
        server.channel,
        "/interesttree.v1.CatalogService/UpsertItems",
        catalog_pb2.UpsertItemsRequest(items=[item]),
        catalog_pb2.UpsertItemsResponse,
    )
    found = re.search(r"expected (\d+)", " ".join(outcome.violations) + outcome.details)
    assert found is not None, f"cannot learn the dimension from {outcome.describe()}"
    return int(found.group(1))


def _required_ok(outcome: Outcome, name: str) -> list[str]:
    if outcome.code is Code.OK and not outcome.problems:
        return []
    return [f"{name} -> {outcome.describe()}"]


def victim_problems(server: ServerProcess, user: str, item: str) -> list[str]:
    """A user and item that hold a hostile value: their own calls obey the status rule, a
    batch build that includes the user finishes, and the whole catalog still lists."""
    calls = [
        (path, request_type(user=user), response_type)
        for path, request_type, response_type in USER_RPCS
    ]
    calls.append(
        (
            "/interesttree.v1.CatalogService/GetItem",
            catalog_pb2.GetItemRequest(name=item),
            catalog_pb2.GetItemResponse,
        )
    )
    problems: list[str] = []
    for path, request, response_type in calls:
        outcome = invoke(server.channel, path, request, response_type)
        if outcome.problems:
            problems.append(f"victim {path.rsplit('/', 1)[1]} -> {outcome.describe()}")
    batch = interest_pb2.BatchBuildInterestTreesRequest(users=[user, SAMPLE_USERS[0]])
    outcome = invoke(
        server.channel,
        "/interesttree.v1.InterestService/BatchBuildInterestTrees",
        batch,
        interest_pb2.BatchBuildInterestTreesResponse,
        streaming=True,
    )
    problems += _required_ok(outcome, f"BatchBuildInterestTrees({user}, alice)")
    token, pages = "", 0
    while pages == 0 or token:
        page = invoke(
            server.channel,
            "/interesttree.v1.CatalogService/ListItems",
            catalog_pb2.ListItemsRequest(page_size=1000, page_token=token),
            catalog_pb2.ListItemsResponse,
        )
        pages += 1
        problems += _required_ok(page, f"ListItems page {pages}")
        token = page.response.next_page_token if page.code is Code.OK and pages < 50 else ""
    return problems
