"""The Store's counts (items, users with events, events), which /metrics and the review page's
overview report, on every backend (SQLite and a real PostgreSQL server)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from taxonomy.models import Event
from taxonomy.ports import Store

from .backends import StoreBackend
from .test_store import START, item, vec


@pytest.fixture
def store(store_backend: StoreBackend, tmp_path: Path) -> Iterator[Store]:
    opened = store_backend.open(tmp_path)
    yield opened
    opened.close()


def test_counts_follow_writes_and_deletes(store: Store) -> None:
    assert (store.item_count(), store.user_count(), store.event_count()) == (0, 0, 0)
    items = [item("a", ["Books"]), item("b", ["Books"]), item("c", [])]
    store.upsert_items(items, {it.item_id: vec(i) for i, it in enumerate(items)}, "text")
    store.record_events(
        [
            Event(user_id="bob", item_id="a", event_time=START),
            Event(user_id="bob", item_id="b", event_time=START + timedelta(hours=1)),
            Event(user_id="ann", item_id="a", event_time=START + timedelta(hours=2)),
        ],
        None,
    )
    assert (store.item_count(), store.user_count(), store.event_count()) == (3, 2, 3)
    store.delete_items(["c"])
    store.delete_user("bob")
    assert (store.item_count(), store.user_count(), store.event_count()) == (2, 1, 1)
