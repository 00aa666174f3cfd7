"""Two `interest-tree serve` processes sharing one PostgreSQL store (tests and bench/replicas.py).

Each replica has its own data directory (its index and model caches) and embeds through one
loopback hash-embedding endpoint, so both start in seconds and embed identically.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from interesttree.v1 import catalog_pb2, recommendation_pb2

from ..reliability.embeddings import HashEmbeddings
from ..reliability.processes import ServerProcess, start_server
from .postgres_server import PostgresServer

CALL_TIMEOUT_S = 30.0


@dataclass
class ReplicaPair:
    a: ServerProcess
    b: ServerProcess
    schema: str
    embeddings: HashEmbeddings


@contextmanager
def replica_pair(
    server: PostgresServer,
    directory: Path,
    *,
    poll_interval_s: float = 1.0,
    refresh_interval_s: float = 600.0,
    schema: str | None = None,
) -> Iterator[ReplicaPair]:
    """Starts replicas A and B on one fresh schema; stops both and drops the schema on exit."""
    name = schema or f"replicas_{uuid.uuid4().hex[:12]}"
    embeddings = HashEmbeddings()
    env = {
        **embeddings.env(),
        "INTEREST_TREE_REPLICA_POLL_INTERVAL_S": str(poll_interval_s),
        "INTEREST_TREE_MODEL_REFRESH_INTERVAL_S": str(refresh_interval_s),
        "INTEREST_TREE_INDEX_SAVE_INTERVAL_S": "1",
    }
    args = ("--no-llm", "--store-url", server.url, "--store-schema", name)
    started: list[ServerProcess] = []
    try:
        started.append(start_server(directory / "a", env=env, args=args))
        started.append(start_server(directory / "b", env=env, args=args))
        yield ReplicaPair(started[0], started[1], name, embeddings)
    finally:
        for process in started:
            process.stop()
        embeddings.close()
        server.drop_schema(name)


def probe_item(item_id: str, dim: int, axis: int) -> catalog_pb2.Item:
    """An item with a caller vector along one axis, so it is the nearest item to that axis."""
    vector = [0.0] * dim
    vector[axis] = 1.0
    return catalog_pb2.Item(
        name=f"items/{item_id}", title=f"Probe {item_id}", categories=["Probe"], vector=vector
    )


def recommendable(replica: ServerProcess, user: str, item_id: str) -> bool:
    """Whether `replica` would recommend `item_id` to `user` (the item alone is allowed)."""
    reply = replica.recommender.Recommend(
        recommendation_pb2.RecommendRequest(
            user=user, page_size=1, candidate_items=[f"items/{item_id}"], include_seen=True
        ),
        timeout=CALL_TIMEOUT_S,
    )
    return any(rec.item == f"items/{item_id}" for rec in reply.recommendations)


def wait_until_recommendable(
    replica: ServerProcess,
    user: str,
    item_id: str,
    *,
    present: bool = True,
    give_up_s: float = 60.0,
    interval_s: float = 0.005,
) -> float:
    """Polls until the item is (or, with `present` false, is no longer) recommendable; returns
    the seconds that took. AssertionError after `give_up_s` (a liveness bound, not a budget)."""
    started = time.monotonic()
    while recommendable(replica, user, item_id) is not present:
        if time.monotonic() - started > give_up_s:
            raise AssertionError(
                f"{item_id} still {'not ' if present else ''}recommendable after {give_up_s} s:\n"
                f"{replica.log_tail()}"
            )
        time.sleep(interval_s)
    return time.monotonic() - started
