"""Two real `interest-tree serve` processes sharing one PostgreSQL store: what one acknowledges
the other serves, the item index of each catches up with the other's writes, and the
collaborative model is trained once and loaded by both."""

from __future__ import annotations

import random
import re
import time
from datetime import timedelta
from pathlib import Path

import psycopg
from interesttree.v1 import admin_pb2, catalog_pb2, interest_pb2

from ..reliability.processes import ServerProcess, load_sample, sample_requests
from ..reliability.support import START
from .postgres_server import PostgresServer
from .replicas import CALL_TIMEOUT_S, probe_item, replica_pair, wait_until_recommendable


def many_events(users: int, items: list[str], seed: int = 7) -> interest_pb2.RecordEventsRequest:
    """Random walks over the catalog: enough events (over 1000) to train collaborative vectors."""
    rng = random.Random(seed)
    request = interest_pb2.RecordEventsRequest(request_id=f"walks-{seed}")
    for user in range(users):
        start = rng.randrange(len(items))
        for step in range(12):
            event = request.events.add(
                user=f"users/walker{user}",
                item=f"items/{items[(start + step) % len(items)]}",
                type=interest_pb2.EVENT_TYPE_VIEW,
            )
            event.event_time.FromDatetime(START + timedelta(hours=user * 24 + step))
    return request


def log_count(replica: ServerProcess, pattern: str) -> int:
    return len(re.findall(pattern, replica.log_path.read_text(errors="replace")))


def wait_for(condition: object, what: str, give_up_s: float = 120.0) -> None:
    assert callable(condition)
    started = time.monotonic()
    while not condition():
        assert time.monotonic() - started < give_up_s, f"gave up waiting for {what}"
        time.sleep(0.1)


def test_two_replicas_share_one_postgres(postgres_server: PostgresServer, tmp_path: Path) -> None:
    with replica_pair(
        postgres_server, tmp_path, poll_interval_s=0.5, refresh_interval_s=1.0
    ) as pair:
        a, b = pair.a, pair.b
        load_sample(a)

        # A write acknowledged by A is visible through B.
        item = b.catalog.GetItem(
            catalog_pb2.GetItemRequest(name="items/skylark-of-space"), timeout=10
        )
        assert item.item.title == "The Skylark of Space"
        _, events = sample_requests()
        # The same idempotency key on the other replica records nothing.
        assert b.interests.RecordEvents(events, timeout=CALL_TIMEOUT_S).recorded_count == 0

        # A tree built on A is served by B.
        built = a.interests.BuildInterestTree(
            interest_pb2.BuildInterestTreeRequest(user="users/alice"), timeout=CALL_TIMEOUT_S
        )
        served = b.interests.GetInterestTree(
            interest_pb2.GetInterestTreeRequest(name="users/alice/interestTree"), timeout=10
        )
        assert served.tree == built.tree

        # B's item index catches up with A's upsert, and with A's delete.
        a.catalog.UpsertItems(
            catalog_pb2.UpsertItemsRequest(items=[probe_item("probe-1", pair.embeddings.dim, 5)]),
            timeout=CALL_TIMEOUT_S,
        )
        wait_until_recommendable(b, "users/alice", "probe-1")
        a.catalog.DeleteItems(
            catalog_pb2.DeleteItemsRequest(names=["items/probe-1"]), timeout=CALL_TIMEOUT_S
        )
        wait_until_recommendable(b, "users/alice", "probe-1", present=False)
        # And the other way round: B writes, A serves.
        b.catalog.UpsertItems(
            catalog_pb2.UpsertItemsRequest(items=[probe_item("probe-2", pair.embeddings.dim, 6)]),
            timeout=CALL_TIMEOUT_S,
        )
        wait_until_recommendable(a, "users/alice", "probe-2")

        # The collaborative model is trained once (under the advisory lock), and both serve it.
        catalog = [
            entry.name.removeprefix("items/")
            for entry in a.catalog.ListItems(
                catalog_pb2.ListItemsRequest(page_size=100), timeout=10
            ).items
        ]
        a.interests.RecordEvents(many_events(100, catalog), timeout=CALL_TIMEOUT_S)
        with psycopg.connect(postgres_server.url) as conn:

            def stored_count() -> int | None:
                row = conn.execute(
                    f"SELECT event_count FROM {pair.schema}.models WHERE name = 'collaborative'"
                ).fetchone()
                conn.rollback()
                return int(row[0]) if row else None

            wait_for(lambda: stored_count() is not None, "a trained model in the store")
            trained_on = stored_count()
        assert trained_on is not None and trained_on >= 1200
        stored_pattern = r"stored the collaborative model \((\d+) events\)"
        loaded_pattern = rf"loaded the collaborative model trained on {trained_on} events"
        wait_for(
            lambda: log_count(a, loaded_pattern) + log_count(b, loaded_pattern) >= 1,
            "the other replica to load the model",
        )
        trainers = [r for r in (a, b) if log_count(r, stored_pattern) > 0]
        assert len(trainers) == 1, "exactly one replica trains"
        (trainer,) = trainers
        other = b if trainer is a else a
        assert log_count(other, loaded_pattern) == 1
        # No replica trains again: the events did not change. An explicit refresh on the
        # loading replica finds its model current and returns its event count.
        refreshed = other.admin.RefreshModels(admin_pb2.RefreshModelsRequest(), timeout=60)
        assert refreshed.event_count == trained_on
        assert log_count(other, stored_pattern) == 0
        assert log_count(trainer, stored_pattern) == 1
