"""What only the PostgreSQL store has: versioned migrations, schemas, idempotency across
connections, change notifications, the change feed replicas read, and the training lock."""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime

import numpy as np
import psycopg
import pytest

from taxonomy.errors import AbortedError, InvalidArgumentError
from taxonomy.models import Event, InterestNode, InterestTree, Item, TaxonomyNode, TreeDiff
from taxonomy.ports import CATALOG_VERSION_KEY
from taxonomy.storage import postgres_migrations
from taxonomy.storage.postgres import CHANGES_CHANNEL, PostgresStore
from taxonomy.storage.postgres_migrations import (
    Migration,
    MigrationError,
    applied_migrations,
    known_migrations,
)

from .postgres_server import PostgresServer

START = datetime(2024, 1, 1, tzinfo=UTC)


@pytest.fixture
def schema(postgres_server: PostgresServer) -> Iterator[str]:
    name = f"st_{uuid.uuid4().hex[:16]}"
    yield name
    postgres_server.drop_schema(name)


def open_store(server: PostgresServer, schema: str) -> PostgresStore:
    return PostgresStore(server.url, schema=schema, max_connections=4)


def vec(seed: int) -> np.ndarray:
    row = np.random.default_rng(seed).normal(size=8).astype(np.float32)
    return row / np.linalg.norm(row)


def test_migrations_run_once_in_order(postgres_server: PostgresServer, schema: str) -> None:
    steps = [step.version for step in known_migrations()]
    assert steps == list(range(1, len(steps) + 1))
    first = open_store(postgres_server, schema)
    assert first.migrations_applied == steps
    second = open_store(postgres_server, schema)
    assert second.migrations_applied == []
    with psycopg.connect(postgres_server.url) as conn:
        assert applied_migrations(conn, schema) == steps
    first.close()
    second.close()


def test_a_failing_migration_leaves_the_schema_as_it_was(
    postgres_server: PostgresServer, schema: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    open_store(postgres_server, schema).close()
    steps = known_migrations()
    broken = Migration(
        len(steps) + 1,
        "broken",
        "CREATE TABLE half_done (x integer); SELECT no_such_function();",
    )
    monkeypatch.setattr(postgres_migrations, "known_migrations", lambda: [*steps, broken])
    with pytest.raises(psycopg.errors.UndefinedFunction):
        PostgresStore(postgres_server.url, schema=schema)
    with psycopg.connect(postgres_server.url) as conn:
        assert applied_migrations(conn, schema) == [step.version for step in steps]
        row = conn.execute("SELECT to_regclass(%s)", (f"{schema}.half_done",)).fetchone()
        assert row == (None,)


def test_a_schema_from_a_newer_version_is_refused(
    postgres_server: PostgresServer, schema: str
) -> None:
    open_store(postgres_server, schema).close()
    with psycopg.connect(postgres_server.url) as conn:
        conn.execute(
            f"INSERT INTO {schema}.schema_migrations (version, name) VALUES (999, 'future')"
        )
    with pytest.raises(MigrationError, match="999"):
        PostgresStore(postgres_server.url, schema=schema)


def test_schemas_hold_separate_data(postgres_server: PostgresServer, schema: str) -> None:
    other = f"{schema}_b"
    first = open_store(postgres_server, schema)
    second = open_store(postgres_server, other)
    try:
        first.upsert_items([Item(item_id="x", title="X")], {"x": vec(1)}, "text")
        assert second.get_items(["x"]) == {}
        assert second.version(CATALOG_VERSION_KEY) == 0
        with pytest.raises(ValueError, match="schema"):
            PostgresStore(postgres_server.url, schema="Bad-Name")
    finally:
        first.close()
        second.close()
        postgres_server.drop_schema(other)


def test_one_request_id_records_once_across_connections(
    postgres_server: PostgresServer, schema: str
) -> None:
    """Two replicas (two pools) replaying one batch at the same time store it once."""
    stores = [open_store(postgres_server, schema) for _ in range(2)]
    batch = [Event(user_id="u", item_id=f"i{n}", event_time=START) for n in range(50)]
    counts: list[int] = []
    barrier = threading.Barrier(8)

    def replay(store: PostgresStore) -> None:
        barrier.wait()
        counts.append(store.record_events(batch, "same-request"))

    threads = [threading.Thread(target=replay, args=(stores[n % 2],)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(counts) == [0] * 7 + [50]
    assert stores[0].event_count() == 50
    for store in stores:
        store.close()


def test_text_with_nul_is_refused(postgres_server: PostgresServer, schema: str) -> None:
    store = open_store(postgres_server, schema)
    try:
        with pytest.raises(InvalidArgumentError) as raised:
            store.upsert_items(
                [Item(item_id="ok", title="fine"), Item(item_id="x", title="a\x00b")], {}, "text"
            )
        assert [v.field for v in raised.value.violations] == ["items[1].title"]
        assert store.get_items(["ok", "x"]) == {}
    finally:
        store.close()


def test_the_change_feed_has_what_changed_since_a_version(
    postgres_server: PostgresServer, schema: str
) -> None:
    store = open_store(postgres_server, schema)
    try:
        store.upsert_items(
            [Item(item_id=i, title=i) for i in "abc"], {i: vec(n) for n, i in enumerate("abc")}, "t"
        )
        seen = store.item_vector_changes("t", 0)
        assert (seen.version, seen.upserted_ids, seen.deleted_ids) == (1, ["a", "b", "c"], [])
        assert np.array_equal(seen.upserted[2], vec(2))
        store.upsert_items([Item(item_id="b", title="B")], {"b": vec(9)}, "t")
        store.delete_items(["c"])
        later = store.item_vector_changes("t", seen.version)
        assert (later.version, later.upserted_ids, later.deleted_ids) == (3, ["b"], ["c"])
        # Upserted again after its delete: a vector again, no tombstone.
        store.upsert_items([Item(item_id="c", title="C")], {"c": vec(3)}, "t")
        last = store.item_vector_changes("t", later.version)
        assert (last.upserted_ids, last.deleted_ids) == (["c"], [])
        assert store.item_vector_changes("t", last.version).upserted_ids == []
    finally:
        store.close()


def test_only_committed_writes_notify(postgres_server: PostgresServer, schema: str) -> None:
    store = open_store(postgres_server, schema)
    tree = InterestTree(
        user_id="u",
        revision=1,
        nodes=[
            InterestNode(
                node_id="n",
                parent_id=None,
                level=1,
                label="L",
                explanation="e",
                weight=1.0,
                evidence_items=["a"],
            )
        ],
        create_time=START,
        event_count=1,
    )
    new_node = [(TaxonomyNode(taxonomy_id="t1", label="L"), vec(1))]
    with psycopg.connect(postgres_server.url, autocommit=True) as listener:
        listener.execute(store.listen_query())
        store.save_tree(tree, TreeDiff(), new_node, {})
        with pytest.raises(AbortedError):
            store.save_tree(
                tree, TreeDiff(), [(TaxonomyNode(taxonomy_id="t2", label="M"), vec(2))], {}
            )
        store.upsert_items([Item(item_id="x", title="X")], {"x": vec(3)}, "text")
        payloads = [
            json.loads(note.payload)
            for note in listener.notifies(timeout=2.0, stop_after=3)
            if note.channel == CHANGES_CHANNEL
        ]
    store.close()
    assert [(p["schema"], p["key"], p["value"]) for p in payloads] == [
        (schema, "taxonomy_version", 1),
        (schema, "catalog_version", 1),
        (schema, "vectors_version:text", 1),
    ]


def test_one_process_at_a_time_holds_the_training_lock(
    postgres_server: PostgresServer, schema: str
) -> None:
    first = open_store(postgres_server, schema)
    second = open_store(postgres_server, schema)
    try:
        held = first.try_training_lock()
        assert held is not None
        assert second.try_training_lock() is None
        held.close()
        again = second.try_training_lock()
        assert again is not None
        again.close()
    finally:
        first.close()
        second.close()
