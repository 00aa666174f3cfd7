"""The store queries of the review page's overview (server/overview.py), on every backend:
recently built trees, users paged and searched, and the users whose latest trees cite an item,
with more than one revision per user (only the latest counts), and their backfill from trees
stored before the tables that answer them existed."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from taxonomy.models import Event, InterestNode, InterestTree, TreeDiff
from taxonomy.ports import Store

from .backends import StoreBackend

START = datetime(2024, 1, 1, tzinfo=UTC)


@pytest.fixture
def store(store_backend: StoreBackend, tmp_path: Path) -> Iterator[Store]:
    opened = store_backend.open(tmp_path)
    yield opened
    opened.close()


def tree(user_id: str, revision: int, hours: int, evidence: list[list[str]]) -> InterestTree:
    """A tree built `hours` after START whose node n (label `user/rN/n`) cites evidence[n]."""
    return InterestTree(
        user_id=user_id,
        revision=revision,
        nodes=[
            InterestNode(
                node_id=f"n{n}",
                parent_id=None,
                level=1,
                label=f"{user_id}/r{revision}/{n}",
                explanation="because",
                weight=1.0 / len(evidence),
                evidence_items=items,
            )
            for n, items in enumerate(evidence)
        ],
        create_time=START + timedelta(hours=hours),
        event_count=3,
    )


def save(store: Store, *trees: InterestTree) -> None:
    for built in trees:
        store.save_tree(built, TreeDiff(), [], {})


def build_history(store: Store) -> None:
    """ann builds twice (her latest no longer cites dune), bob once, cy three times."""
    save(
        store,
        tree("ann", 1, 1, [["dune", "hyperion"], ["dune"]]),
        tree("bob", 1, 2, [["dracula"], ["dune", "dune"], ["emma", "dune"]]),
        tree("cy", 1, 3, [["dune"]]),
        tree("ann", 2, 4, [["hyperion"]]),
        tree("cy", 2, 5, [["emma"]]),
        tree("cy", 3, 6, [["dune"], ["emma"]]),
    )


def recent(store: Store, limit: int) -> list[tuple[str, int]]:
    return [(built.user_id, built.revision) for built in store.recent_trees(limit)]


def test_recent_trees_are_latest_revisions_newest_first(store: Store) -> None:
    assert store.recent_trees(10) == []
    build_history(store)
    assert recent(store, 10) == [("cy", 3), ("ann", 2), ("bob", 1)]
    assert recent(store, 2) == [("cy", 3), ("ann", 2)]
    assert recent(store, 0) == []
    latest = store.latest_tree("cy")
    assert latest is not None and store.recent_trees(1) == [latest]
    # Equal build times: the greater user id first.
    save(store, tree("dee", 1, 6, [["emma"]]))
    assert recent(store, 2) == [("dee", 1), ("cy", 3)]
    save(store, tree("bob", 2, 7, [["emma"]]))
    assert recent(store, 10) == [("bob", 2), ("dee", 1), ("cy", 3), ("ann", 2)]


def test_citing_users_see_only_latest_trees(store: Store) -> None:
    assert store.citing_users("dune", 10) == []
    build_history(store)
    # A node citing an item twice is listed once; labels come in tree order.
    assert store.citing_users("dune", 10) == [
        ("bob", 1, ["bob/r1/1", "bob/r1/2"]),
        ("cy", 3, ["cy/r3/0"]),
    ]
    assert store.citing_users("hyperion", 10) == [("ann", 2, ["ann/r2/0"])]
    assert store.citing_users("emma", 10) == [
        ("bob", 1, ["bob/r1/2"]),
        ("cy", 3, ["cy/r3/1"]),
    ]
    # The bound is on users, not on citing nodes.
    assert store.citing_users("dune", 1) == [("bob", 1, ["bob/r1/1", "bob/r1/2"])]
    assert store.citing_users("dune", 0) == []
    assert store.citing_users("nothing", 10) == []
    save(store, tree("bob", 2, 7, [["hyperion"]]))
    assert store.citing_users("dune", 10) == [("cy", 3, ["cy/r3/0"])]
    assert [user for user, _, _ in store.citing_users("hyperion", 10)] == ["ann", "bob"]


def test_a_failed_tree_write_leaves_the_overview_as_it_was(store: Store) -> None:
    save(store, tree("ann", 1, 1, [["dune"]]))
    with pytest.raises(Exception, match=r"(?i)unique|duplicate|concurrent build"):
        save(store, tree("ann", 1, 2, [["emma"]]))
    assert recent(store, 10) == [("ann", 1)]
    assert store.citing_users("emma", 10) == []
    assert store.citing_users("dune", 10) == [("ann", 1, ["ann/r1/0"])]


def test_deleting_a_user_removes_them_from_the_overview(store: Store) -> None:
    build_history(store)
    store.delete_user("cy")
    assert recent(store, 10) == [("ann", 2), ("bob", 1)]
    assert [user for user, _, _ in store.citing_users("dune", 10)] == ["bob"]
    assert [user for user, _, _ in store.citing_users("emma", 10)] == ["bob"]
    # Revisions start again at 1 after DeleteUser.
    save(store, tree("cy", 1, 9, [["dune"]]))
    assert recent(store, 1) == [("cy", 1)]
    assert store.citing_users("dune", 10)[-1] == ("cy", 1, ["cy/r1/0"])


def record(store: Store, users: list[str]) -> None:
    store.record_events(
        [
            Event(user_id=user, item_id="dune", event_time=START + timedelta(minutes=n))
            for n, user in enumerate(users)
            for _ in range(3)
        ],
        None,
    )


def test_user_ids_are_searched_and_paged(store: Store) -> None:
    assert store.search_user_ids("", 0, 10) == ([], 0)
    users = ["Carol", "alice", "bob", "carl", "x-CAR.9", "dave", "Zed"]
    record(store, users)
    everyone = sorted(users)  # bytewise: upper case first
    assert store.search_user_ids("", 0, 100) == (everyone, len(users))
    assert store.search_user_ids("", 0, 3) == (everyone[:3], len(users))
    assert store.search_user_ids("", 3, 3) == (everyone[3:6], len(users))
    assert store.search_user_ids("", 6, 3) == (everyone[6:], len(users))
    assert store.search_user_ids("", 7, 3) == ([], len(users))
    assert store.search_user_ids("", 1000, 3) == ([], len(users))
    # Case-insensitive containment, anywhere in the id.
    assert store.search_user_ids("car", 0, 10) == (["Carol", "carl", "x-CAR.9"], 3)
    assert store.search_user_ids("car", 1, 1) == (["carl"], 3)
    assert store.search_user_ids("car", 5, 1) == ([], 3)
    assert store.search_user_ids("r.9", 0, 10) == (["x-CAR.9"], 1)
    assert store.search_user_ids("e", 0, 2) == (["Zed", "alice"], 3)
    assert store.search_user_ids("%", 0, 10) == ([], 0)
    assert store.search_user_ids("_", 0, 10) == ([], 0)
    assert store.search_user_ids("nobody", 0, 10) == ([], 0)
    # Users without events are not listed, trees or not; deleted users neither.
    save(store, tree("treeonly", 1, 1, [["dune"]]))
    store.delete_user("bob")
    assert store.search_user_ids("", 0, 100) == (
        [user for user in everyone if user != "bob"],
        len(users) - 1,
    )


def forget_tree_index(backend: StoreBackend, tmp_path: Path) -> None:
    """Makes the store's data look written by a version without the overview's tables."""
    if backend.server is None:
        with sqlite3.connect(tmp_path / "db.sqlite3") as conn:
            conn.execute("DROP TABLE latest_trees")
            conn.execute("DROP TABLE tree_citations")
        return
    with psycopg.connect(backend.server.url) as conn:
        schema = sql.Identifier(backend.schema)
        conn.execute(
            sql.SQL("DROP TABLE {}.latest_trees, {}.tree_citations").format(schema, schema)
        )
        conn.execute(sql.SQL("DELETE FROM {}.schema_migrations WHERE version = 4").format(schema))


def test_trees_stored_before_the_overview_tables_are_backfilled(
    store_backend: StoreBackend, tmp_path: Path
) -> None:
    first = store_backend.open(tmp_path)
    build_history(first)
    record(first, ["ann", "bob", "cy"])
    expected = (recent(first, 10), first.citing_users("dune", 10), first.citing_users("emma", 10))
    first.close()
    forget_tree_index(store_backend, tmp_path)

    reopened = store_backend.open(tmp_path)
    try:
        assert expected == (
            [("cy", 3), ("ann", 2), ("bob", 1)],
            [("bob", 1, ["bob/r1/1", "bob/r1/2"]), ("cy", 3, ["cy/r3/0"])],
            [("bob", 1, ["bob/r1/2"]), ("cy", 3, ["cy/r3/1"])],
        )
        assert (
            recent(reopened, 10),
            reopened.citing_users("dune", 10),
            reopened.citing_users("emma", 10),
        ) == expected
        # The backfilled rows are replaced and deleted as written ones are.
        save(reopened, tree("bob", 2, 7, [["hyperion"]]))
        reopened.delete_user("cy")
        assert recent(reopened, 10) == [("bob", 2), ("ann", 2)]
        assert reopened.citing_users("dune", 10) == []
    finally:
        reopened.close()
    # Opening again backfills nothing twice.
    again = store_backend.open(tmp_path)
    try:
        assert recent(again, 10) == [("bob", 2), ("ann", 2)]
    finally:
        again.close()
