"""How `SqliteStore` lays out its tables, encodes domain values into rows, and decodes rows back.

Decoding is defensive: a row this version cannot read (written by an older version, or edited
by hand) is skipped and logged, never raised, so one bad row cannot brick a user or the start.

Event times are stored twice: `event_us`, whole microseconds since the epoch (exact for every
time `Event` accepts), and `event_time`, the same instant in float seconds, kept for ordering
and for older versions reading the file. Rows written before `event_us` existed have it NULL and
are read from `event_time`.
"""

from __future__ import annotations

import json
import logging
import sqlite3
from collections import Counter
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import numpy as np
from numpy.typing import NDArray
from pydantic import ValidationError

from taxonomy.models import Event, EventType, InterestTree, Item

logger = logging.getLogger("taxonomy.storage.sqlite")

SCHEMA = """
CREATE TABLE IF NOT EXISTS items (
    item_id TEXT PRIMARY KEY,
    title TEXT NOT NULL,
    description TEXT NOT NULL,
    categories TEXT NOT NULL,
    tags TEXT NOT NULL,
    update_time REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS item_vectors (
    item_id TEXT NOT NULL,
    space TEXT NOT NULL,
    vector BLOB NOT NULL,
    PRIMARY KEY (item_id, space)
);
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    user_id TEXT NOT NULL,
    item_id TEXT NOT NULL,
    event_type INTEGER NOT NULL,
    event_time REAL NOT NULL,
    weight REAL,
    event_us INTEGER
);
CREATE INDEX IF NOT EXISTS events_by_user ON events (user_id, event_time, seq);
CREATE TABLE IF NOT EXISTS request_ids (
    request_id TEXT PRIMARY KEY,
    recorded_count INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS trees (
    user_id TEXT NOT NULL,
    revision INTEGER NOT NULL,
    tree TEXT NOT NULL,
    diff TEXT NOT NULL,
    PRIMARY KEY (user_id, revision)
);
CREATE TABLE IF NOT EXISTS taxonomy_nodes (
    taxonomy_id TEXT PRIMARY KEY,
    label TEXT NOT NULL,
    aliases TEXT NOT NULL,
    vector BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS tree_node_taxonomy (
    user_id TEXT NOT NULL,
    node_id TEXT NOT NULL,
    taxonomy_id TEXT NOT NULL,
    PRIMARY KEY (user_id, node_id)
);
CREATE INDEX IF NOT EXISTS tree_nodes_by_taxonomy ON tree_node_taxonomy (taxonomy_id);
CREATE TABLE IF NOT EXISTS catalog_taxonomy (
    position INTEGER PRIMARY KEY,
    taxonomy_id TEXT NOT NULL UNIQUE,
    node TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS meta (
    key TEXT PRIMARY KEY,
    value INTEGER NOT NULL
);
"""

# What the overview reads without parsing every tree: the latest revision of each user's tree
# with its build time, and the items that revision cites as evidence (one row per citing node,
# with its label). Both are replaced in the transaction that stores a newer revision, and are
# created (and filled from the stored trees) by `add_tree_index`, not by SCHEMA, so that a
# file written by an older version is backfilled once.
TREE_INDEX_SCHEMA = (
    """CREATE TABLE latest_trees (
    user_id TEXT PRIMARY KEY,
    revision INTEGER NOT NULL,
    create_us INTEGER NOT NULL
)""",
    "CREATE INDEX latest_trees_by_time ON latest_trees (create_us, user_id)",
    """CREATE TABLE tree_citations (
    item_id TEXT NOT NULL,
    user_id TEXT NOT NULL,
    position INTEGER NOT NULL,
    revision INTEGER NOT NULL,
    label TEXT NOT NULL,
    PRIMARY KEY (item_id, user_id, position)
)""",
    "CREATE INDEX tree_citations_by_user ON tree_citations (user_id)",
)

EVENT_COLUMNS = "seq, user_id, item_id, event_type, event_time, event_us, weight"
EVENT_ORDER = "event_time, event_us, seq"
ITEM_COLUMNS = "item_id, title, description, categories, tags, update_time"

EventRow = tuple[int, str, str, int, float, int | None, float | None]
ItemRow = tuple[str, str, str, str, str, float]

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)


def add_missing_columns(conn: sqlite3.Connection) -> None:
    """Files created before `event_us` get the column; their rows keep it NULL."""
    columns = {row[1] for row in conn.execute("PRAGMA table_info(events)")}
    if "event_us" not in columns:
        conn.execute("ALTER TABLE events ADD COLUMN event_us INTEGER")


def add_tree_index(conn: sqlite3.Connection) -> None:
    """Creates `latest_trees` and `tree_citations` and fills them from the stored trees, in
    one transaction, when the file does not have them yet (a file of an older version)."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        found = conn.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'latest_trees'"
        ).fetchone()
        if found is None:
            for statement in TREE_INDEX_SCHEMA:
                conn.execute(statement)
            rows = conn.execute(
                "SELECT t.user_id, t.tree FROM trees t JOIN "
                "(SELECT user_id, MAX(revision) AS revision FROM trees GROUP BY user_id) m "
                "ON m.user_id = t.user_id AND m.revision = t.revision"
            ).fetchall()
            for user_id, text in rows:
                tree = decode_tree(user_id, text)
                if tree is None:
                    continue
                conn.execute(
                    "INSERT INTO latest_trees (user_id, revision, create_us) VALUES (?, ?, ?)",
                    latest_tree_row(tree),
                )
                conn.executemany(
                    "INSERT INTO tree_citations (item_id, user_id, position, revision, label) "
                    "VALUES (?, ?, ?, ?, ?)",
                    citation_rows(tree),
                )
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


def decode_tree(user_id: str, text: str) -> InterestTree | None:
    """A stored tree, or None (logged) for one this version cannot read."""
    try:
        return InterestTree.model_validate_json(text)
    except ValidationError as error:
        logger.error("skipping stored tree of user %r that cannot be read: %s", user_id, error)
        return None


def tree_micros(tree: InterestTree) -> int:
    """The tree's build time in microseconds since the epoch (a naive time is UTC)."""
    when = tree.create_time
    return event_micros(when if when.tzinfo is not None else when.replace(tzinfo=UTC))


def latest_tree_row(tree: InterestTree) -> tuple[str, int, int]:
    """(user_id, revision, create_us) of the `latest_trees` row of a tree."""
    return tree.user_id, tree.revision, tree_micros(tree)


def citation_rows(tree: InterestTree) -> list[tuple[str, str, int, int, str]]:
    """(item_id, user_id, position, revision, label): one row per node and item it cites,
    `position` being the node's place in the tree (an item listed twice by a node once)."""
    return [
        (item_id, tree.user_id, position, tree.revision, node.label)
        for position, node in enumerate(tree.nodes)
        for item_id in dict.fromkeys(node.evidence_items)
    ]


def group_citations(
    rows: Sequence[tuple[str, int, str]],
) -> list[tuple[str, int, list[str]]]:
    """(user_id, revision, label) rows in user order to (user_id, revision, labels)."""
    grouped: list[tuple[str, int, list[str]]] = []
    for user_id, revision, label in rows:
        if grouped and grouped[-1][0] == user_id:
            grouped[-1][2].append(str(label))
        else:
            grouped.append((str(user_id), int(revision), [str(label)]))
    return grouped


def to_blob(vector: NDArray[np.float32]) -> bytes:
    return np.ascontiguousarray(vector, dtype=np.float32).tobytes()


def stack_vectors(rows: Sequence[tuple[str, bytes]]) -> tuple[list[str], NDArray[np.float32]]:
    """Ids and one float32 row per blob; blobs of another length than most are skipped."""
    sizes = Counter(len(blob) for _, blob in rows if len(blob) and len(blob) % 4 == 0)
    if not sizes:
        for item_id, _ in rows:
            logger.error("skipping stored vector of %r: not a float32 array", item_id)
        return [], np.zeros((0, 0), dtype=np.float32)
    size = sizes.most_common(1)[0][0]
    ids: list[str] = []
    kept: list[bytes] = []
    for item_id, blob in rows:
        if len(blob) != size:
            logger.error(
                "skipping stored vector of %r: %d bytes, the others have %d",
                item_id,
                len(blob),
                size,
            )
            continue
        ids.append(item_id)
        kept.append(blob)
    matrix = np.frombuffer(b"".join(kept), dtype=np.float32).reshape(len(kept), size // 4)
    return ids, matrix.copy()


def timestamp(value: datetime) -> float:
    return value.timestamp()


def from_timestamp(value: float) -> datetime:
    return datetime.fromtimestamp(value, tz=UTC)


def event_micros(value: datetime) -> int:
    """Exact microseconds since the epoch of an aware datetime."""
    return (value - _EPOCH) // _MICROSECOND


def event_columns(event: Event) -> tuple[str, str, int, float, int, float | None]:
    """(user_id, item_id, event_type, event_time, event_us, weight) of a validated event."""
    micros = event_micros(event.event_time)
    return (
        event.user_id,
        event.item_id,
        int(event.event_type),
        micros / 1_000_000,
        micros,
        event.weight,
    )


def decode_event(row: EventRow) -> Event | None:
    seq, user_id, item_id, event_type, seconds, micros, weight = row
    try:
        when = _EPOCH + micros * _MICROSECOND if micros is not None else from_timestamp(seconds)
        return Event(
            user_id=user_id,
            item_id=item_id,
            event_type=EventType(event_type),
            event_time=when,
            weight=weight,
        )
    except (ValueError, OverflowError, OSError, TypeError) as error:
        logger.error(
            "skipping stored event %d of user %r that cannot be read: %s", seq, user_id, error
        )
        return None


def decode_events(rows: Sequence[EventRow]) -> list[Event]:
    return [event for event in map(decode_event, rows) if event is not None]


def decode_item(row: ItemRow) -> Item | None:
    item_id, title, description, categories, tags, update_time = row
    try:
        return Item(
            item_id=item_id,
            title=title,
            description=description,
            categories=json.loads(categories),
            tags=json.loads(tags),
            update_time=from_timestamp(update_time),
        )
    except (ValueError, OverflowError, OSError, TypeError) as error:
        logger.error("skipping stored item %r that cannot be read: %s", item_id, error)
        return None
