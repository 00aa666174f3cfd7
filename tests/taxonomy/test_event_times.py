"""Event times: every time `Event` accepts is stored exactly, and a stored row that cannot be
read back is skipped, never raised (the issue's `9999-12-31T23:59:59.999999999Z`)."""

from __future__ import annotations

import itertools
import sqlite3
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone, tzinfo
from pathlib import Path

import pytest
from hypothesis import example, given, reject, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from taxonomy.models import EVENT_TIME_MAX, EVENT_TIME_MIN, Event, EventType
from taxonomy.storage.sqlite import SqliteStore

from .helpers import START

_users = (f"u{n}" for n in itertools.count())
LAST_INSTANT = datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC)

offsets = st.timedeltas(min_value=timedelta(hours=-23, minutes=-59), max_value=timedelta(hours=23))
zones: st.SearchStrategy[tzinfo | None] = st.none() | st.just(UTC) | st.builds(timezone, offsets)
times = st.datetimes(timezones=zones)  # datetime.min .. datetime.max
weights = st.none() | st.floats(min_value=0, max_value=1000, exclude_min=True)


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SqliteStore]:
    opened = SqliteStore(tmp_path_factory.mktemp("events") / "db.sqlite3")
    yield opened
    opened.close()


def event_or_reject(when: datetime, event_type: EventType, weight: float | None) -> Event:
    try:
        return Event(
            user_id=next(_users), item_id="i", event_type=event_type, event_time=when, weight=weight
        )
    except ValidationError:
        reject()


@settings(max_examples=300, deadline=None)
@given(when=times, event_type=st.sampled_from(EventType), weight=weights)
@example(when=LAST_INSTANT, event_type=EventType.VIEW, weight=None)
@example(when=LAST_INSTANT.replace(tzinfo=None), event_type=EventType.VIEW, weight=None)
@example(when=datetime.min, event_type=EventType.CLICK, weight=1000.0)
@example(when=datetime(2024, 5, 1, 12, 0, 0, 123457), event_type=EventType.LIKE, weight=5e-324)
def test_every_accepted_event_reads_back_equal(
    store: SqliteStore, when: datetime, event_type: EventType, weight: float | None
) -> None:
    event = event_or_reject(when, event_type, weight)
    store.record_events([event], None)
    (back,) = store.user_events(event.user_id)
    assert back == event
    assert back.event_time == event.event_time and back.event_time.utcoffset() == timedelta(0)
    assert [batch for user, batch in store.all_sequences() if user == event.user_id] == [[event]]


@settings(max_examples=50, deadline=None)
@given(st.lists(times, min_size=2, max_size=8))
def test_a_history_reads_back_in_time_order(store: SqliteStore, moments: list[datetime]) -> None:
    user_id = next(_users)
    try:
        events = [Event(user_id=user_id, item_id="i", event_time=when) for when in moments]
    except ValidationError:
        reject()
    store.record_events(events, None)
    assert store.user_events(user_id) == sorted(events, key=lambda event: event.event_time)


def test_event_times_are_utc_within_the_documented_range() -> None:
    naive = Event(user_id="u", item_id="i", event_time=datetime(2024, 1, 1))
    assert naive.event_time == datetime(2024, 1, 1, tzinfo=UTC)
    plus_two = timezone(timedelta(hours=2))
    shifted = Event(user_id="u", item_id="i", event_time=datetime(2024, 1, 1, 2, tzinfo=plus_two))
    assert shifted.event_time.tzinfo is UTC and shifted.event_time == START
    assert Event(user_id="u", item_id="i", event_time=EVENT_TIME_MAX).event_time == LAST_INSTANT
    assert Event(user_id="u", item_id="i", event_time=EVENT_TIME_MIN).event_time == EVENT_TIME_MIN
    # Instants outside 0001-01-01Z .. 9999-12-31Z, although their local dates look fine.
    for outside in (
        datetime(1, 1, 1, tzinfo=timezone(timedelta(hours=1))),
        datetime(9999, 12, 31, 23, tzinfo=timezone(timedelta(hours=-5))),
    ):
        with pytest.raises(ValidationError, match="must lie between"):
            Event(user_id="u", item_id="i", event_time=outside)


LEGACY_EVENTS = """
CREATE TABLE events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    user_id TEXT NOT NULL,
    item_id TEXT NOT NULL,
    event_type INTEGER NOT NULL,
    event_time REAL NOT NULL,
    weight REAL
);
"""


def insert_legacy(path: Path, rows: list[tuple[str, str, int, float, float | None]]) -> None:
    """Rows as the float-seconds version wrote them (no `event_us`)."""
    with sqlite3.connect(path) as conn:
        conn.executemany(
            "INSERT INTO events (user_id, item_id, event_type, event_time, weight) "
            "VALUES (?, ?, ?, ?, ?)",
            rows,
        )


def test_a_file_of_the_float_version_reads_and_takes_new_events(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite3"
    with sqlite3.connect(path) as conn:
        conn.executescript(LEGACY_EVENTS)
    insert_legacy(path, [("u", "a", 1, START.timestamp() + 0.25, None)])
    store = SqliteStore(path)
    later = Event(user_id="u", item_id="b", event_time=LAST_INSTANT)
    store.record_events([later], None)
    old = Event(user_id="u", item_id="a", event_type=1, event_time=START + timedelta(seconds=0.25))
    assert store.user_events("u") == [old, later]
    store.close()


def test_unreadable_stored_events_are_skipped_not_raised(tmp_path: Path) -> None:
    SqliteStore(tmp_path / "db.sqlite3").close()
    insert_legacy(
        tmp_path / "db.sqlite3",
        [
            ("u", "a", 1, 253402300800.0, None),  # what the request stored: year 10000
            ("u", "a", 99, START.timestamp(), None),  # an event type this version lacks
            ("u", "a", 1, START.timestamp(), -3.0),  # a weight Event refuses
            ("u", "a", 1, START.timestamp() + 60, None),
            ("only-bad", "a", 1, 1e300, None),
        ],
    )
    store = SqliteStore(tmp_path / "db.sqlite3")
    good = Event(user_id="u", item_id="a", event_type=1, event_time=START + timedelta(minutes=1))
    assert store.user_events("u") == [good]
    assert store.user_events("only-bad") == []
    assert list(store.all_sequences()) == [("u", [good])]
    store.close()
