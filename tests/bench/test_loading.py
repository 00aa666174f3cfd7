"""The benchmarks load through `interest-tree import` (bench/loading.py), and store exactly what
they sent before they did: the same items and events, the same times and event types, and never
a held-out item.

- On MovieLens and Beauty (every item, the events of the first users), the files the benches
  write read back, through the importer's own reader and converters, as the very messages the
  benches used to build (written out here as they were); so do the rows of the synthetic
  benches, made in memory, and Magazine's domain items and events.
- On a slice of MovieLens, a real server loaded through `load_files` holds the split's catalog
  and history, dislikes included, and not the held-out items; an engine loaded through
  `load_engine` (bench/taxonomy_eval.py) holds the Magazine items and events it was given."""

from __future__ import annotations

import os
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
from interesttree.v1 import catalog_pb2, interest_pb2

from bench.amazon_data import load_magazines
from bench.beauty_data import BeautySplits, load_beauty
from bench.eval_movielens import event_rows, item_rows
from bench.level_sweep import BEAUTY_EPOCH, beauty_event_rows, beauty_item_rows
from bench.loading import client_for, event_row, item_row, load_engine, load_files, write_jsonl
from bench.movielens_data import MovieLensSplits, load_movielens
from bench.refresh_load import event_rows as refresh_event_rows
from bench.refresh_load import item_rows as refresh_item_rows
from bench.serving import SHELVES, Catalog
from bench.serving import START as SERVING_START
from server import exporter
from server.importer import (
    NAMED,
    Message,
    batches,
    read_rows,
    resolve_columns,
    to_event,
    to_item,
)
from tests.conftest import data_only_settings, start_server

MOVIELENS = Path(
    os.environ.get(
        "MOVIELENS_DIR",
        Path(__file__).resolve().parents[3] / "shared" / "data" / "ml-latest-small",
    )
)
CUT = 2.0
"""Ratings at or below it are sent as dislikes (`--low-ratings-as-dislikes 2.0`)."""
EVENT_USERS = 100
"""The events are checked on the first users (MovieLens; 20 times as many of Beauty's, whose
histories are short); the items on the whole catalog."""


@pytest.fixture(scope="module")
def movielens() -> MovieLensSplits:
    return load_movielens(MOVIELENS)


# What the benches sent before they loaded through the import command ---------------------------


def old_movielens_items(data: MovieLensSplits) -> list[catalog_pb2.Item]:
    return [
        catalog_pb2.Item(
            name=f"items/{movie.movie_id}",
            title=movie.title,
            tags=[g for g in movie.genres if g != "(no genres listed)"],
        )
        for movie in data.movies
    ]


def old_movielens_events(
    data: MovieLensSplits, *, for_test: bool, dislike_threshold: float | None
) -> list[interest_pb2.Event]:
    events: list[interest_pb2.Event] = []
    for user in data.users:
        for item, stamp, rating in zip(
            user.history(for_test=for_test),
            user.history_times(for_test=for_test),
            user.history_ratings(for_test=for_test),
            strict=True,
        ):
            event = interest_pb2.Event(
                user=f"users/{user.user_id}", item=f"items/{data.item_ids[item]}"
            )
            if dislike_threshold is not None and rating <= dislike_threshold:
                event.type = interest_pb2.EVENT_TYPE_DISLIKE
            event.event_time.FromDatetime(datetime.fromtimestamp(stamp, tz=UTC))
            events.append(event)
    return events


def old_beauty_items(data: BeautySplits) -> list[catalog_pb2.Item]:
    return [
        catalog_pb2.Item(
            name=f"items/{item.item_id}",
            title=item.title,
            categories=list(item.path),
            tags=[item.brand] if item.brand else [],
        )
        for item in data.items
    ]


def old_beauty_events(data: BeautySplits, *, for_test: bool) -> list[interest_pb2.Event]:
    events: list[interest_pb2.Event] = []
    for user in data.users:
        for position, item in enumerate(user.history(for_test=for_test)):
            event = interest_pb2.Event(
                user=f"users/{user.user_id}", item=f"items/{data.items[item].item_id}"
            )
            event.event_time.FromDatetime(BEAUTY_EPOCH + timedelta(days=position))
            events.append(event)
    return events


def imported_messages(path: Path, kind: str) -> list[Message]:
    """The messages `import_file` sends for `path`: the importer's reader and converters."""
    assert kind in ("items", "events")
    names, _, rows = read_rows(path, "jsonl")
    columns = resolve_columns(names, kind, {})  # type: ignore[arg-type]
    messages: list[Message] = []
    for batch in batches(rows, kind, columns, 10_000):  # type: ignore[arg-type]
        assert not batch.bad, batch.bad[:3]
        messages += batch.messages
    return messages


# The files the benches write read back as what they sent ----------------------------------------


def test_movielens_files_import_as_the_old_requests(
    movielens: MovieLensSplits, tmp_path: Path
) -> None:
    write_jsonl(tmp_path / "items.jsonl", item_rows(movielens))
    assert imported_messages(tmp_path / "items.jsonl", "items") == old_movielens_items(movielens)
    some = replace(movielens, users=movielens.users[:EVENT_USERS])
    for for_test, cut in ((False, None), (True, CUT)):
        path = tmp_path / f"events-{for_test}.jsonl"
        write_jsonl(path, event_rows(some, for_test=for_test, dislike_threshold=cut))
        sent = imported_messages(path, "events")
        old = old_movielens_events(some, for_test=for_test, dislike_threshold=cut)
        assert sent == old
        dislikes = sum(
            isinstance(e, interest_pb2.Event) and e.type == interest_pb2.EVENT_TYPE_DISLIKE
            for e in sent
        )
        assert (dislikes > 0) == (cut is not None)


def test_beauty_files_import_as_the_old_requests(tmp_path: Path) -> None:
    data = load_beauty()
    write_jsonl(tmp_path / "items.jsonl", beauty_item_rows(data))
    assert imported_messages(tmp_path / "items.jsonl", "items") == old_beauty_items(data)
    some = replace(data, users=data.users[: EVENT_USERS * 20])
    write_jsonl(tmp_path / "events.jsonl", beauty_event_rows(some, for_test=True))
    assert imported_messages(tmp_path / "events.jsonl", "events") == old_beauty_events(
        some, for_test=True
    )


# A real server loaded through the import holds the split, and not the held-out items ----------


def movielens_slice(data: MovieLensSplits, users: int) -> MovieLensSplits:
    """The `users` users of the shortest histories, and the catalog cut to the items they rated
    (targets too: the catalog holds the held-out items, only their events are held out)."""
    kept = sorted(data.users, key=lambda u: len(u.train_items))[:users]
    used = sorted({i for u in kept for i in (*u.train_items, u.valid_item, u.test_item)})
    index = {old: new for new, old in enumerate(used)}

    def moved(items: list[int]) -> list[int]:
        return [index[i] for i in items]

    users_cut = [
        replace(
            u,
            train_items=moved(u.train_items),
            valid_item=index[u.valid_item],
            test_item=index[u.test_item],
        )
        for u in kept
    ]
    return MovieLensSplits(
        [data.item_ids[i] for i in used],
        [data.movies[i] for i in used],
        users_cut,
        sum(len(u.train_items) + 2 for u in users_cut),
    )


async def test_a_server_loaded_through_the_import_holds_the_split(
    movielens: MovieLensSplits, tmp_path: Path
) -> None:
    data = movielens_slice(movielens, 3)
    assert data.n_items < 100
    settings = data_only_settings(tmp_path / "data")
    running = await start_server(settings)
    try:
        timings = await load_files(
            running.stubs.channel,
            item_rows(data),
            event_rows(data, for_test=True, dislike_threshold=CUT),
            directory=tmp_path / "files",
        )
        assert set(timings) == {"upsert", "events"} and min(timings.values()) > 0
        assert (tmp_path / "files" / "events.jsonl").exists()
        async with client_for(running.stubs.channel) as client:
            stored_items = await exporter.item_rows(client)
    finally:
        await running.stop()

    assert sorted((r["id"], r["title"], r["tags"]) for r in stored_items) == sorted(
        (m.movie_id, m.title, [g for g in m.genres if g != "(no genres listed)"])
        for m in data.movies
    )
    assert all(not r["categories"] and not r["description"] for r in stored_items)

    stored = sorted(
        (r["user"], r["item"], r["type"], r["time"], r["weight"])
        for r in exporter.event_rows(settings.data_dir, None)
    )
    expected = sorted(
        (
            u.user_id,
            data.item_ids[item],
            "dislike" if rating <= CUT else "unspecified",
            datetime.fromtimestamp(stamp, UTC).isoformat(),
            None,
        )
        for u in data.users
        for item, stamp, rating in zip(
            u.history(for_test=True),
            u.history_times(for_test=True),
            u.history_ratings(for_test=True),
            strict=True,
        )
    )
    assert stored == expected
    assert any(row[2] == "dislike" for row in stored)
    assert any(row[2] == "unspecified" for row in stored)
    # The test pass sends the validation item, never the test item.
    sent = {(row[0], row[1]) for row in stored}
    for u in data.users:
        assert (u.user_id, data.item_ids[u.valid_item]) in sent
        if data.item_ids[u.test_item] not in {data.item_ids[i] for i in u.history(for_test=True)}:
            assert (u.user_id, data.item_ids[u.test_item]) not in sent


# Magazine: a bench's own engine, loaded through a loopback server -------------------------------


def test_magazine_rows_import_as_the_domain_items_and_events() -> None:
    data = load_magazines()
    for with_categories in (True, False):
        for magazine in data.magazines.values():
            item = magazine.to_item(with_categories=with_categories)
            sent = to_item(item_row(item), NAMED["items"])
            assert sent.name == f"items/{item.item_id}"
            assert (sent.title, sent.description) == (item.title, item.description)
            assert (list(sent.categories), list(sent.tags)) == (item.categories, item.tags)
            assert not sent.vector
    for event in data.events_in_time_order():
        message = to_event(event_row(event), NAMED["events"])
        assert (message.user, message.item) == (f"users/{event.user_id}", f"items/{event.item_id}")
        assert message.type == int(event.event_type) == interest_pb2.EVENT_TYPE_RATE
        assert message.event_time.ToDatetime(UTC) == event.event_time
        assert not message.HasField("weight")


async def test_load_engine_stores_what_the_engine_was_given(tmp_path: Path) -> None:
    data = load_magazines()
    events = data.events_in_time_order()[:60]
    used = {event.item_id for event in events}
    items = [m.to_item() for asin, m in data.magazines.items() if asin in used]
    settings = data_only_settings(tmp_path / "data")
    running = await start_server(settings)
    try:
        timings = await load_engine(running.runtime.engine, items, events)
        assert set(timings) == {"upsert", "events"}
        async with client_for(running.stubs.channel) as client:
            stored_items = await exporter.item_rows(client)
    finally:
        await running.stop()
    got = sorted((r["id"], r["title"], r["categories"], r["tags"]) for r in stored_items)
    assert got == sorted((i.item_id, i.title, i.categories, i.tags) for i in items)
    stored = [
        (r["user"], r["item"], r["type"], r["time"])
        for r in exporter.event_rows(settings.data_dir, None)
    ]
    assert sorted(stored) == sorted(
        (e.user_id, e.item_id, "rate", e.event_time.isoformat()) for e in events
    )


# Synthetic benches: rows made in memory convert to the messages they used to send --------------


def test_serving_and_refresh_load_rows_convert_to_the_old_messages() -> None:
    catalog = Catalog(items=60, users=12, events_per_user=5, categories=3, dim=8)
    rng = np.random.default_rng(catalog.seed)
    centres = rng.normal(size=(catalog.categories * SHELVES, catalog.dim)).astype(np.float32)
    noise = rng.normal(scale=0.6, size=(catalog.items, catalog.dim)).astype(np.float32)
    old_items = []
    for n in range(catalog.items):
        category, shelf = catalog.category(n), (n // catalog.categories) % SHELVES
        old_items.append(
            catalog_pb2.Item(
                name=f"items/i{n}",
                title=f"Item {n}",
                categories=[f"Category {category}", f"Shelf {category}.{shelf}"],
                tags=[f"tag{(n // 7) % 50}"],
                vector=(centres[category * SHELVES + shelf] + noise[n]).tolist(),
            )
        )
    assert [to_item(r, NAMED["items"]) for r in catalog.item_rows()] == old_items
    events = [to_event(r, NAMED["events"]) for r in catalog.event_rows(range(12), 5, seed=3)]
    assert len(events) == 60
    assert all(e.type == interest_pb2.EVENT_TYPE_VIEW for e in events)
    assert events[1].event_time.ToDatetime(UTC) == SERVING_START + timedelta(minutes=1)

    rng = np.random.default_rng(1)
    centroids = rng.normal(size=(4, 8))
    for n, row in enumerate(refresh_item_rows(40, 4, 8)):
        vector = (centroids[n % 4] + 0.7 * rng.normal(size=8)).astype(np.float32).tolist()
        assert to_item(row, NAMED["items"]) == catalog_pb2.Item(
            name=f"items/i{n}",
            title=f"Item {n}",
            categories=["Bench", f"Genre {n % 4}", f"Shelf {n % 4}.{(n // 4) % 4}"],
            vector=vector,
        )
    rows = list(refresh_event_rows(3, 4, 40, 4, prefix="new1-", seed=1))
    assert [to_event(r, NAMED["events"]).user for r in rows] == ["users/new1-0"] * 4 + [
        "users/new1-1"
    ] * 4 + ["users/new1-2"] * 4
