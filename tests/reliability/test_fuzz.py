"""No request, however hostile, breaks the service: property-based fuzzing of every request
message of every RPC, then one plain regression test per known hostile value.

Every call of the fuzz (and of the regressions) must end OK or with an allowed code that
carries ErrorInfo (see `support.py`); afterwards the server still answers Health and a
known-good user's Recommend. Hypothesis is derandomized, so CI always sends the same
requests; INTEREST_TREE_FUZZ_EXAMPLES sets how many per RPC.
"""

from __future__ import annotations

import os
import re
import threading
from collections import Counter
from collections.abc import Iterator
from functools import cache
from itertools import chain
from typing import Any, cast

import pytest
from google.protobuf import text_format
from google.protobuf.descriptor import Descriptor
from google.protobuf.message import Message
from grpc_health.v1 import health_pb2
from hypothesis import HealthCheck, Phase, given, settings
from interesttree.v1 import catalog_pb2, interest_pb2, recommendation_pb2

from .embeddings import HashEmbeddings
from .hostile import (
    INTEREST,
    RECOMMEND,
    Hostile,
    event_time_cases,
    level_weight_cases,
    name_cases,
    page_token_cases,
    prepare_victim,
    raw_byte_cases,
    trailer_cases,
    valid_extreme_cases,
    vector_cases,
)
from .processes import (
    ServerProcess,
    embedding_dim,
    load_sample,
    start_server,
    user_checks,
    victim_problems,
)
from .strategies import Pools
from .support import SAMPLE_USERS, SUMMARY, Code, invoke, rpc_methods

EXAMPLES = int(os.environ.get("INTEREST_TREE_FUZZ_EXAMPLES", "50"))
METHODS = rpc_methods()
FUZZED: Counter[str] = Counter()
ACCEPTED: dict[str, str] = {}
RACE_ROUNDS = 200
POOL_ITEMS = [f"items/fz-{i}" for i in range(6)]
POOL_USERS = [f"users/fz-{i}" for i in range(3)]
pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]


def seed(server: ServerProcess) -> int:
    """The sample, alice's first tree, and the items and users the fuzz may write to."""
    load_sample(server)
    server.interests.BuildInterestTree(
        interest_pb2.BuildInterestTreeRequest(user=SAMPLE_USERS[0]), timeout=120
    )
    shelves = [["Books", "Horror"], ["Books", "Science fiction", "Space opera"], ["Films"]]
    items = [
        catalog_pb2.Item(name=name, title=f"Fuzz {i}", categories=shelves[i % 3], tags=["fz"])
        for i, name in enumerate(POOL_ITEMS)
    ]
    server.catalog.UpsertItems(catalog_pb2.UpsertItemsRequest(items=items), timeout=120)
    events = interest_pb2.RecordEventsRequest()
    for n, (user, item) in enumerate((u, i) for u in POOL_USERS for i in POOL_ITEMS):
        event = events.events.add(user=user, item=item, type=interest_pb2.EVENT_TYPE_VIEW)
        event.event_time.FromSeconds(1_700_000_000 + n * 3600)
    server.interests.RecordEvents(events, timeout=30)
    return embedding_dim(server)


@pytest.fixture(scope="module")
def fuzz_target(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServerProcess, Pools]]:
    """The shipped configuration, all-MiniLM embeddings included."""
    server = start_server(tmp_path_factory.mktemp("fuzz") / "data")
    try:
        dim = seed(server)
        readers = [*POOL_USERS, SAMPLE_USERS[0], "users/nobody"]
        yield server, Pools(POOL_ITEMS, POOL_USERS, readers, dim)
    finally:
        server.stop()
        SUMMARY.append(f"fuzz: {sum(FUZZED.values())} requests over {len(FUZZED)} RPCs")


def short(request: Message | bytes) -> str:
    """The request on one line; a long repeated field shows its first entry and its length."""
    if isinstance(request, bytes):
        return repr(request[:200])
    trimmed = type(request)()
    trimmed.CopyFrom(request)
    notes = []
    for field, value in trimmed.ListFields():
        if field.is_repeated and len(value) > 3:
            notes.append(f"{field.name}: {len(value)} entries like the first")
            del value[1:]
    text = text_format.MessageToString(trimmed, as_one_line=True)[:400]
    return text + (f"  ({'; '.join(notes)})" if notes else "")


def canary(server: ServerProcess) -> list[str]:
    """A known-good user still builds, explains, recommends; Health still says SERVING."""
    problems = user_checks(server, SAMPLE_USERS[:1])
    if server.health() != health_pb2.HealthCheckResponse.SERVING:
        problems.append("Health is not SERVING")
    return problems


@pytest.mark.parametrize("method", METHODS, ids=[m[0].split(".v1.")[1] for m in METHODS])
def test_every_rpc_survives_hostile_requests(
    fuzz_target: tuple[ServerProcess, Pools], method: tuple[str, type[Message], Any, bool]
) -> None:
    server, pools = fuzz_target
    path, request_type, response_type, streaming = method
    found: dict[str, str] = {}
    hangs = 0

    def send(request: Message) -> None:
        nonlocal hangs
        if hangs >= 2:  # a hang costs the whole deadline; two prove the point
            return
        outcome = invoke(server.channel, path, request, response_type, streaming=streaming)
        FUZZED[path] += 1
        hangs += outcome.code is Code.DEADLINE_EXCEEDED
        for problem in outcome.problems:
            details = re.sub(r"\b[0-9a-f]{32}\b", "<id>", outcome.details[:160])
            key = f"{outcome.code.name}: {problem} ({details!r})"
            if key not in found:
                request_id = re.search(r"\b[0-9a-f]{32}\b", outcome.details)
                found[key] = short(request) + (f" [{request_id.group(0)}]" if request_id else "")

    fuzz = settings(
        max_examples=EXAMPLES,
        deadline=None,
        derandomize=True,
        database=None,
        phases=[Phase.explicit, Phase.generate],  # `send` only records; nothing to shrink
        suppress_health_check=list(HealthCheck),
    )(given(pools.message(cast(Descriptor, request_type.DESCRIPTOR)))(send))
    fuzz()
    after = canary(server)
    report = [f"{key}\n    e.g. {example}" for key, example in found.items()]
    report += [f"after the fuzz: {problem}" for problem in after]
    report = [server.explain([line]) for line in report]
    assert not report, f"{path}, {FUZZED[path]} requests:\n" + "\n".join(report)


def test_service_still_serves_after_the_fuzz(fuzz_target: tuple[ServerProcess, Pools]) -> None:
    server, _ = fuzz_target
    assert server.process.poll() is None, server.log_tail()
    assert canary(server) == []
    assert user_checks(server, SAMPLE_USERS) == []


# Regressions: each hostile value of the issue, on a server with hash embeddings. ------------


@cache
def cases(dim: int) -> dict[str, Hostile]:
    every = chain(
        page_token_cases(),
        name_cases(),
        level_weight_cases(),
        trailer_cases(),
        raw_byte_cases(METHODS),
        valid_extreme_cases(),
        vector_cases(dim),
        event_time_cases(),  # last: a poisoned event breaks RefreshModels for every later case
    )
    return {case.case_id: case for case in every}


@pytest.fixture(scope="module")
def target(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServerProcess, int]]:
    embeddings = HashEmbeddings()
    server = start_server(tmp_path_factory.mktemp("hostile") / "data", env=embeddings.env())
    try:
        load_sample(server)
        server.interests.BuildInterestTree(
            interest_pb2.BuildInterestTreeRequest(user=SAMPLE_USERS[0]), timeout=120
        )
        yield server, embedding_dim(server)
    finally:
        server.stop()
        embeddings.close()
        SUMMARY.append(f"hostile values accepted ({len(ACCEPTED)}): {', '.join(sorted(ACCEPTED))}")


def after_accepted(server: ServerProcess, case: Hostile) -> list[str]:
    """With the value stored, a normal user still works, and so does the victim's data."""
    problems = [f"normal user: {problem}" for problem in user_checks(server, SAMPLE_USERS[:1])]
    return problems + (victim_problems(server, case.user, case.item) if case.victim else [])


@pytest.mark.parametrize("case_id", list(cases(2)))
def test_hostile_value(target: tuple[ServerProcess, int], case_id: str) -> None:
    server, dim = target
    case = cases(dim)[case_id]
    if case.victim:
        prepare_victim(server, case)
    outcome = invoke(
        server.channel,
        case.method,
        case.request,
        case.response_type,
        streaming=case.streaming,
    )
    problems = []
    if outcome.code not in case.allowed or outcome.problems:
        allowed = "/".join(sorted(code.name for code in case.allowed))
        problems.append(f"expected {allowed}, got {outcome.describe()}")
    if outcome.code is Code.OK:
        ACCEPTED[case_id] = case.method
        problems += after_accepted(server, case)
    if case.victim and case.method.endswith("UpsertItems"):
        server.catalog.DeleteItems(  # a poisoned vector must not spill into later cases
            catalog_pb2.DeleteItemsRequest(names=[case.item], allow_missing=True), timeout=30
        )
    assert not problems, server.explain(problems)


def test_delete_and_recommend_race(target: tuple[ServerProcess, int]) -> None:
    """Items deleted while Recommend and Explain use them, as history (and tree evidence) of
    one user and as candidates of the others: every call still obeys the status rule."""
    server, _ = target
    shelves = [["Books", "Horror"], ["Books", "Science fiction"], ["Films", "Drama"]]
    items = [
        catalog_pb2.Item(name=f"items/race-{i}", title=f"Race {i}", categories=shelves[i % 3])
        for i in range(30)
    ]
    server.catalog.UpsertItems(catalog_pb2.UpsertItemsRequest(items=items), timeout=60)
    events = interest_pb2.RecordEventsRequest()
    for n, item in enumerate(items):
        event = events.events.add(user="users/race", item=item.name)
        event.event_time.FromSeconds(1_700_000_000 + n)
    server.interests.RecordEvents(events, timeout=30)
    server.interests.BuildInterestTree(interest_pb2.BuildInterestTreeRequest(user="users/race"))
    problems: set[str] = set()
    done = threading.Event()

    def read(user: str) -> None:
        answer = recommendation_pb2.RecommendResponse
        calls: list[tuple[str, Message, type[Message]]] = [
            (RECOMMEND, recommendation_pb2.RecommendRequest(user=user, page_size=100), answer),
            (RECOMMEND, recommendation_pb2.RecommendRequest(user=user, include_seen=True), answer),
            (
                INTEREST + "ExplainInterests",
                interest_pb2.ExplainInterestsRequest(user=user),
                interest_pb2.ExplainInterestsResponse,
            ),
        ]
        while not done.is_set():
            for path, request, response_type in calls:
                outcome = invoke(server.channel, path, request, response_type)
                if outcome.problems:
                    problems.add(f"{path.rsplit('/', 1)[1]}({user}) -> {outcome.describe()}")

    users = ("users/race", "users/race", "users/alice", "users/bob")
    readers = [threading.Thread(target=read, args=(user,)) for user in users]
    for reader in readers:
        reader.start()
    try:
        for round_ in range(RACE_ROUNDS):  # a lost race is rare: many rounds, stop at the first
            if problems:
                break
            chosen = items[round_ % 3 :: 3] if round_ % 4 else items
            names = [item.name for item in chosen]
            server.catalog.DeleteItems(catalog_pb2.DeleteItemsRequest(names=names), timeout=30)
            server.catalog.UpsertItems(catalog_pb2.UpsertItemsRequest(items=chosen), timeout=60)
            if round_ % 5 == 0:
                request = interest_pb2.BuildInterestTreeRequest(user="users/race")
                server.interests.BuildInterestTree(request, timeout=120)
    finally:
        done.set()
        for reader in readers:
            reader.join()
    assert not problems, server.explain(sorted(problems))


@pytest.mark.parametrize(
    "request_",
    [
        interest_pb2.BatchBuildInterestTreesRequest(all_users=True),
        interest_pb2.BatchBuildInterestTreesRequest(users=[*SAMPLE_USERS, "users/nobody"] * 2),
        interest_pb2.BatchBuildInterestTreesRequest(users=[SAMPLE_USERS[1]] * 100_000),
        interest_pb2.BatchBuildInterestTreesRequest(users=["users/a\n", SAMPLE_USERS[0]]),
    ],
    ids=["all-users-with-every-victim", "unknown-and-repeated", "one-user-100000-times", "newline"],
)
def test_batch_builds_finish(
    target: tuple[ServerProcess, int], request_: interest_pb2.BatchBuildInterestTreesRequest
) -> None:
    """Batch builds end (no DEADLINE_EXCEEDED), even over users poisoned by earlier cases."""
    server, _ = target
    outcome = invoke(
        server.channel,
        INTEREST + "BatchBuildInterestTrees",
        request_,
        interest_pb2.BatchBuildInterestTreesResponse,
        streaming=True,
        timeout=120,
    )
    assert not outcome.problems, outcome.describe()
