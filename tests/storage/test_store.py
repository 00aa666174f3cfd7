"""The Store contract, run against every backend (SQLite and a real PostgreSQL server)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest

from taxonomy.models import (
    CatalogTaxonomyNode,
    Event,
    EventType,
    InterestNode,
    InterestTree,
    Item,
    TaxonomyNode,
    TextSource,
    TreeDiff,
)
from taxonomy.ports import (
    CATALOG_TAXONOMY_VERSION_KEY,
    CATALOG_VERSION_KEY,
    TAXONOMY_VERSION_KEY,
    Store,
    vectors_version_key,
)

from .backends import StoreBackend

START = datetime(2024, 1, 1, tzinfo=UTC)


@pytest.fixture
def store(store_backend: StoreBackend, tmp_path: Path) -> Iterator[Store]:
    opened = store_backend.open(tmp_path)
    yield opened
    opened.close()


def vec(seed: int, dim: int = 8) -> np.ndarray:
    row = np.random.default_rng(seed).normal(size=dim).astype(np.float32)
    return row / np.linalg.norm(row)


def item(
    item_id: str,
    categories: list[str],
    *,
    title: str | None = None,
    tags: tuple[str, ...] = (),
    description: str = "",
) -> Item:
    return Item(
        item_id=item_id,
        title=title or f"title {item_id}",
        categories=categories,
        tags=list(tags),
        description=description,
    )


def tree(user_id: str, revision: int, taxonomy: dict[str, str]) -> InterestTree:
    nodes = [
        InterestNode(
            node_id=node_id,
            parent_id=None,
            level=1,
            label=f"label {node_id}",
            explanation="because",
            weight=1.0 / len(taxonomy),
            evidence_items=["a", "b"],
            taxonomy_node=taxonomy_id,
        )
        for node_id, taxonomy_id in taxonomy.items()
    ]
    return InterestTree(
        user_id=user_id,
        revision=revision,
        nodes=nodes,
        create_time=START + timedelta(days=revision),
        event_count=5,
    )


def test_items_round_trip_page_and_delete(store: Store) -> None:
    items = [
        item("b", ["Books", "Fiction"], tags=("space", "opera"), description="d"),
        item("a", ["Books"]),
        item("c-1", [], title="Ünïcode ✓"),
    ]
    vectors = {it.item_id: vec(i) for i, it in enumerate(items)}
    stored = store.upsert_items(items, vectors, "text")
    assert [it.item_id for it in stored] == ["b", "a", "c-1"]
    assert all(it.update_time is not None for it in stored)

    found = store.get_items(["a", "b", "missing", "a"])
    assert set(found) == {"a", "b"}
    assert found["b"].categories == ["Books", "Fiction"]
    assert found["b"].tags == ["space", "opera"]
    assert found["b"].description == "d"
    assert store.get_items([]) == {}
    assert found["a"].update_time is not None and stored[1].update_time is not None
    assert abs(found["a"].update_time - stored[1].update_time) < timedelta(milliseconds=1)

    assert [it.item_id for it in store.list_items("", 2)] == ["a", "b"]
    assert [it.item_id for it in store.list_items("b", 10)] == ["c-1"]

    ids, matrix = store.item_vectors("text")
    assert ids == ["a", "b", "c-1"]
    assert np.array_equal(matrix[1], vectors["b"])
    assert store.item_vectors("other")[0] == []

    assert store.delete_items(["a", "missing", "a"]) == 1
    assert set(store.get_items(["a", "b"])) == {"b"}
    assert store.item_vectors("text")[0] == ["b", "c-1"]


def test_upsert_replaces_an_item_and_its_vector(store: Store) -> None:
    store.upsert_items([item("x", ["A"])], {"x": vec(1)}, "text")
    store.upsert_items([item("x", ["B", "C"], tags=("t",))], {"x": vec(2)}, "text")
    assert store.get_items(["x"])["x"].categories == ["B", "C"]
    ids, matrix = store.item_vectors("text")
    assert ids == ["x"] and np.array_equal(matrix[0], vec(2))


def test_ids_order_bytewise(store: Store) -> None:
    """Paging compares ids as bytes on every backend (upper case before lower, `-` before
    digits), whatever the database's collation."""
    ids = ["b", "B", "a-1", "a.1", "a_1", "a~", "A", "0"]
    store.upsert_items([item(i, []) for i in ids], {}, "text")
    assert [it.item_id for it in store.list_items("", 100)] == sorted(ids)
    assert [it.item_id for it in store.list_items("a", 100)] == sorted(i for i in ids if i > "a")


def test_category_prefixes_match_whole_elements(store: Store) -> None:
    store.upsert_items(
        [
            item("sf", ["Books", "Science fiction"]),
            item("sf-space", ["Books", "Science fiction", "Space"]),
            item("science", ["Books", "Science"]),
            item("case", ["books"]),
            item("none", []),
        ],
        {},
        "text",
    )
    assert store.item_ids_in_categories([["Books"]]) == {"sf", "sf-space", "science"}
    assert store.item_ids_in_categories([["Books", "Science"]]) == {"science"}
    assert store.item_ids_in_categories([["Books", "Science fiction"]]) == {"sf", "sf-space"}
    assert store.item_ids_in_categories([["books"], ["Books", "Science"]]) == {"case", "science"}
    assert store.item_ids_in_categories([["Nope"]]) == set()


def test_versions_count_writes(store: Store) -> None:
    assert store.version(CATALOG_VERSION_KEY) == 0
    store.upsert_items([item("x", [])], {"x": vec(1)}, "text")
    store.upsert_items([item("y", [])], {"y": vec(2)}, "text")
    assert store.version(CATALOG_VERSION_KEY) == 2
    assert store.version(vectors_version_key("text")) == 2
    store.delete_items(["x"])
    assert store.version(CATALOG_VERSION_KEY) == 3
    assert store.version(vectors_version_key("text")) == 2
    assert store.version("never-written") == 0


def test_events_read_back_in_time_order_to_the_microsecond(store: Store) -> None:
    times = [START + timedelta(microseconds=m) for m in (5, 1, 3)] + [
        datetime(1, 1, 1, tzinfo=UTC),
        datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC),
    ]
    events = [
        Event(
            user_id="u",
            item_id=f"i{n}",
            event_type=EventType.RATE,
            event_time=when,
            weight=2.5 if n % 2 else None,
        )
        for n, when in enumerate(times)
    ]
    assert store.record_events(events, None) == 5
    back = store.user_events("u")
    assert [e.event_time for e in back] == sorted(times)
    assert {(e.item_id, e.weight, e.event_type) for e in back} == {
        (e.item_id, e.weight, e.event_type) for e in events
    }
    assert store.user_exists("u") and not store.user_exists("v")
    assert store.user_events("v") == []


def test_request_ids_make_recording_idempotent(store: Store) -> None:
    batch = [Event(user_id="u", item_id="i", event_time=START)]
    assert store.record_events(batch, "req-1") == 1
    assert store.record_events(batch, "req-1") == 0
    assert store.record_events(batch, "req-2") == 1
    assert store.record_events(batch, None) == 1
    assert store.record_events(batch, None) == 1
    assert store.event_count() == 4


def test_sequences_and_user_ids(store: Store) -> None:
    store.record_events(
        [
            Event(user_id="bob", item_id="b2", event_time=START + timedelta(hours=2)),
            Event(user_id="alice", item_id="a1", event_time=START),
            Event(user_id="bob", item_id="b1", event_time=START + timedelta(hours=1)),
        ],
        None,
    )
    assert store.user_ids() == ["alice", "bob"]
    sequences = [(user, [e.item_id for e in events]) for user, events in store.all_sequences()]
    assert sequences == [("alice", ["a1"]), ("bob", ["b1", "b2"])]
    assert store.event_count() == 3


def test_trees_revisions_and_taxonomy(store: Store) -> None:
    first = tree("u", 1, {"n1": "t1", "n2": "t2"})
    store.save_tree(
        first,
        TreeDiff(added_node_ids=["n1", "n2"]),
        [
            (TaxonomyNode(taxonomy_id="t1", label="Space"), vec(1)),
            (TaxonomyNode(taxonomy_id="t2", label="Time"), vec(2)),
        ],
        {},
    )
    assert store.version(TAXONOMY_VERSION_KEY) == 1
    second = tree("u", 2, {"n1": "t1"})
    store.save_tree(second, TreeDiff(removed_node_ids=["n2"]), [], {"t1": "Outer space"})
    store.save_tree(tree("v", 1, {"m1": "t1"}), TreeDiff(), [], {"t1": "Outer space"})
    assert store.version(TAXONOMY_VERSION_KEY) == 1

    latest = store.latest_tree("u")
    assert latest == second
    assert store.latest_tree("nobody") is None
    revisions = store.tree_revisions("u", 1 << 62, 10)
    assert [(t.revision, d) for t, d in revisions] == [
        (2, TreeDiff(removed_node_ids=["n2"])),
        (1, TreeDiff(added_node_ids=["n1", "n2"])),
    ]
    assert [t.revision for t, _ in store.tree_revisions("u", 2, 10)] == [1]
    assert store.tree_revisions("u", 1, 10) == []

    ids, matrix = store.taxonomy_vectors()
    assert ids == ["t1", "t2"] and np.array_equal(matrix[1], vec(2))
    listed = store.list_taxonomy(0, 10)
    assert [(n.taxonomy_id, n.aliases, n.node_count) for n in listed] == [
        ("t1", ["Outer space"], 2),
        ("t2", [], 0),
    ]
    assert [n.taxonomy_id for n in store.list_taxonomy(1, 10)] == ["t2"]
    assert store.taxonomy_node_counts() == {"t1": 2}


def test_a_failed_tree_write_stores_nothing(store: Store) -> None:
    store.save_tree(tree("u", 1, {"n1": "t1"}), TreeDiff(), [], {})
    # PostgreSQL reports the taken revision as AbortedError (ABORTED: replicas may race on
    # it), SQLite, whose builds are serialised in one process, as its integrity error.
    with pytest.raises(Exception, match=r"(?i)unique|duplicate|concurrent build"):
        store.save_tree(
            tree("u", 1, {"n9": "t9"}),
            TreeDiff(),
            [(TaxonomyNode(taxonomy_id="t9", label="Never"), vec(9))],
            {},
        )
    assert store.taxonomy_vectors()[0] == []
    assert store.version(TAXONOMY_VERSION_KEY) == 0
    assert store.taxonomy_node_counts() == {"t1": 1}
    # The store is still usable after the rollback.
    store.save_tree(tree("u", 2, {"n1": "t1"}), TreeDiff(), [], {})
    latest = store.latest_tree("u")
    assert latest is not None and latest.revision == 2


def test_catalog_taxonomy_is_replaced_whole(store: Store) -> None:
    def node(taxonomy_id: str, parent: str | None, level: int) -> CatalogTaxonomyNode:
        return CatalogTaxonomyNode(
            taxonomy_id=taxonomy_id,
            parent_id=parent,
            level=level,
            label=taxonomy_id.upper(),
            label_source=TextSource.DATA,
            kind="category",
            items=["a"],
            central_items=["a"],
        )

    store.replace_catalog_taxonomy([node("root", None, 1), node("leaf", "root", 2)])
    assert [n.taxonomy_id for n in store.catalog_taxonomy()] == ["root", "leaf"]
    store.replace_catalog_taxonomy([node("other", None, 1)])
    assert store.catalog_taxonomy() == [node("other", None, 1)]
    assert store.version(CATALOG_TAXONOMY_VERSION_KEY) == 2


def test_deleting_a_user_erases_their_events_and_trees(store: Store) -> None:
    store.record_events([Event(user_id="u", item_id="i", event_time=START)] * 3, None)
    store.record_events([Event(user_id="v", item_id="i", event_time=START)], None)
    store.save_tree(
        tree("u", 1, {"n1": "t1"}),
        TreeDiff(),
        [(TaxonomyNode(taxonomy_id="t1", label="L"), vec(1))],
        {},
    )
    assert store.delete_user("u") == (3, 1)
    assert store.delete_user("u") == (0, 0)
    assert not store.user_exists("u") and store.user_exists("v")
    assert store.latest_tree("u") is None
    assert store.taxonomy_node_counts() == {}


def test_reopening_sees_every_acknowledged_write(
    store_backend: StoreBackend, tmp_path: Path
) -> None:
    first = store_backend.open(tmp_path)
    first.upsert_items([item("x", ["A"])], {"x": vec(1)}, "text")
    first.record_events([Event(user_id="u", item_id="x", event_time=START)], "r")
    first.close()
    second = store_backend.open(tmp_path)
    try:
        assert set(second.get_items(["x"])) == {"x"}
        assert second.record_events([Event(user_id="u", item_id="x", event_time=START)], "r") == 0
        assert second.event_count() == 1
        assert second.version(CATALOG_VERSION_KEY) == 1
    finally:
        second.close()
