"""`SqliteStore`, the embedded default implementation of `taxonomy.ports.Store`.

A PostgreSQL implementation only has to provide the same methods. Every write is one
transaction committed with `synchronous=FULL` before the method returns, so an acknowledged
write survives a crash or a kill.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from taxonomy.models import CatalogTaxonomyNode, Event, InterestTree, Item, TaxonomyNode, TreeDiff
from taxonomy.ports import (
    CATALOG_TAXONOMY_VERSION_KEY,
    CATALOG_VERSION_KEY,
    TAXONOMY_VERSION_KEY,
    vectors_version_key,
)
from taxonomy.storage.rows import (
    EVENT_COLUMNS,
    EVENT_ORDER,
    ITEM_COLUMNS,
    SCHEMA,
    add_missing_columns,
    add_tree_index,
    citation_rows,
    decode_event,
    decode_events,
    decode_item,
    decode_tree,
    event_columns,
    group_citations,
    latest_tree_row,
    stack_vectors,
    timestamp,
    to_blob,
)


class SqliteStore:
    """SQLite in WAL mode; one connection guarded by a lock, called from worker threads."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        """The database file; another process (model training) opens it again from this."""
        self._lock = threading.RLock()
        self._conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA synchronous=FULL")
        self._conn.execute("PRAGMA foreign_keys=ON")
        self._conn.executescript(SCHEMA)
        add_missing_columns(self._conn)
        add_tree_index(self._conn)

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                yield self._conn
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")

    @staticmethod
    def _bump(conn: sqlite3.Connection, key: str) -> None:
        conn.execute(
            "INSERT INTO meta (key, value) VALUES (?, 1) "
            "ON CONFLICT (key) DO UPDATE SET value = value + 1",
            (key,),
        )

    def version(self, key: str) -> int:
        """A counter bumped by every write to one kind of data; indexes compare it on load."""
        with self._lock:
            row = self._conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return int(row[0]) if row else 0

    # Catalog -------------------------------------------------------------------------------

    def upsert_items(
        self, items: Sequence[Item], vectors: dict[str, NDArray[np.float32]], space: str
    ) -> list[Item]:
        now = datetime.now(UTC)
        stored = [item.model_copy(update={"update_time": now}) for item in items]
        with self._transaction() as conn:
            conn.executemany(
                "INSERT INTO items (item_id, title, description, categories, tags, update_time) "
                "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (item_id) DO UPDATE SET "
                "title = excluded.title, description = excluded.description, "
                "categories = excluded.categories, tags = excluded.tags, "
                "update_time = excluded.update_time",
                [
                    (
                        item.item_id,
                        item.title,
                        item.description,
                        json.dumps(item.categories),
                        json.dumps(item.tags),
                        timestamp(now),
                    )
                    for item in stored
                ],
            )
            conn.executemany(
                "INSERT OR REPLACE INTO item_vectors (item_id, space, vector) VALUES (?, ?, ?)",
                [(item_id, space, to_blob(vector)) for item_id, vector in vectors.items()],
            )
            self._bump(conn, CATALOG_VERSION_KEY)
            self._bump(conn, vectors_version_key(space))
        return stored

    def get_items(self, item_ids: Sequence[str]) -> dict[str, Item]:
        unique = list(dict.fromkeys(item_ids))
        found: dict[str, Item] = {}
        with self._lock:
            # SQLite caps bound parameters per statement, so look ids up in chunks.
            for start in range(0, len(unique), 500):
                chunk = unique[start : start + 500]
                marks = ",".join("?" * len(chunk))
                rows = self._conn.execute(
                    f"SELECT {ITEM_COLUMNS} FROM items WHERE item_id IN ({marks})", chunk
                ).fetchall()
                for row in rows:
                    item = decode_item(row)
                    if item is not None:
                        found[item.item_id] = item
        return found

    def list_items(self, after_item_id: str, limit: int) -> list[Item]:
        with self._lock:
            rows = self._conn.execute(
                f"SELECT {ITEM_COLUMNS} FROM items WHERE item_id > ? ORDER BY item_id LIMIT ?",
                (after_item_id, limit),
            ).fetchall()
        return [item for item in map(decode_item, rows) if item is not None]

    def delete_items(self, item_ids: Sequence[str]) -> int:
        with self._transaction() as conn:
            deleted = 0
            for item_id in dict.fromkeys(item_ids):
                deleted += conn.execute("DELETE FROM items WHERE item_id = ?", (item_id,)).rowcount
                conn.execute("DELETE FROM item_vectors WHERE item_id = ?", (item_id,))
            self._bump(conn, CATALOG_VERSION_KEY)
        return deleted

    def item_titles(self, item_ids: Sequence[str]) -> dict[str, str]:
        """Titles of the items that exist: what a reason names, without decoding whole items."""
        unique = list(dict.fromkeys(item_ids))
        found: dict[str, str] = {}
        with self._lock:
            for start in range(0, len(unique), 500):
                chunk = unique[start : start + 500]
                marks = ",".join("?" * len(chunk))
                found.update(
                    self._conn.execute(
                        f"SELECT item_id, title FROM items WHERE item_id IN ({marks})", chunk
                    ).fetchall()
                )
        return found

    def item_ids_in_categories(self, prefixes: Sequence[Sequence[str]]) -> set[str]:
        """Items whose category path starts with one of `prefixes`. Paths are stored as JSON
        arrays written by `json.dumps`, so a prefix is a prefix of that text up to an element
        boundary (`,` or `]` follows)."""
        found: set[str] = set()
        with self._lock:
            for prefix in prefixes:
                head = json.dumps(list(prefix))[:-1]
                longer = head + ", "
                # substr, not LIKE: LIKE folds ASCII case, and categories match exactly.
                rows = self._conn.execute(
                    "SELECT item_id FROM items "
                    "WHERE categories = ? OR substr(categories, 1, ?) = ?",
                    (head + "]", len(longer), longer),
                ).fetchall()
                found.update(row[0] for row in rows)
        return found

    def item_vectors(self, space: str) -> tuple[list[str], NDArray[np.float32]]:
        with self._lock:
            rows = self._conn.execute(
                "SELECT item_id, vector FROM item_vectors WHERE space = ? ORDER BY item_id",
                (space,),
            ).fetchall()
        return stack_vectors(rows)

    def record_events(self, events: Sequence[Event], request_id: str | None) -> int:
        with self._transaction() as conn:
            if request_id:
                seen = conn.execute(
                    "SELECT recorded_count FROM request_ids WHERE request_id = ?", (request_id,)
                ).fetchone()
                if seen is not None:
                    return 0
            conn.executemany(
                "INSERT INTO events (user_id, item_id, event_type, event_time, event_us, weight) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                [event_columns(event) for event in events],
            )
            if request_id:
                conn.execute(
                    "INSERT INTO request_ids (request_id, recorded_count) VALUES (?, ?)",
                    (request_id, len(events)),
                )
        return len(events)

    def user_exists(self, user_id: str) -> bool:
        with self._lock:
            row = self._conn.execute(
                "SELECT 1 FROM events WHERE user_id = ? LIMIT 1", (user_id,)
            ).fetchone()
        return row is not None

    def user_events(self, user_id: str) -> list[Event]:
        with self._lock:
            rows = self._conn.execute(
                f"SELECT {EVENT_COLUMNS} FROM events WHERE user_id = ? ORDER BY {EVENT_ORDER}",
                (user_id,),
            ).fetchall()
        return decode_events(rows)

    def user_event_stamp(self, user_id: str) -> tuple[int, int]:
        """(how many events, the highest seq) of a user: events are only appended or deleted
        with their user, so an unchanged stamp means unchanged events."""
        with self._lock:
            row = self._conn.execute(
                "SELECT COUNT(*), COALESCE(MAX(seq), 0) FROM events WHERE user_id = ?", (user_id,)
            ).fetchone()
        return int(row[0]), int(row[1])

    def event_count(self) -> int:
        with self._lock:
            row = self._conn.execute("SELECT COUNT(*) FROM events").fetchone()
        return int(row[0])

    def item_count(self) -> int:
        with self._lock:
            row = self._conn.execute("SELECT COUNT(*) FROM items").fetchone()
        return int(row[0])

    def user_count(self) -> int:
        with self._lock:
            row = self._conn.execute("SELECT COUNT(DISTINCT user_id) FROM events").fetchone()
        return int(row[0])

    def all_sequences(self) -> Iterator[tuple[str, list[Event]]]:
        with self._lock:
            rows = self._conn.execute(
                f"SELECT {EVENT_COLUMNS} FROM events ORDER BY user_id, {EVENT_ORDER}"
            ).fetchall()
        current: str | None = None
        batch: list[Event] = []
        for row in rows:
            if row[1] != current:
                if current is not None and batch:
                    yield current, batch
                current, batch = row[1], []
            event = decode_event(row)
            if event is not None:
                batch.append(event)
        if current is not None and batch:
            yield current, batch

    def user_ids(self) -> list[str]:
        with self._lock:
            rows = self._conn.execute(
                "SELECT DISTINCT user_id FROM events ORDER BY user_id"
            ).fetchall()
        return [row[0] for row in rows]

    def search_user_ids(self, search: str, offset: int, limit: int) -> tuple[list[str], int]:
        """A page of the users with events whose id contains `search` (ASCII case folded:
        ids are ASCII), in id order, and how many match. The distinct ids are walked on
        `events_by_user` one seek per user, not one row per event."""
        needle = search.lower()
        walk = (
            "WITH RECURSIVE users(user_id) AS ("
            "SELECT MIN(user_id) FROM events UNION ALL "
            "SELECT (SELECT MIN(e.user_id) FROM events e WHERE e.user_id > users.user_id) "
            "FROM users WHERE users.user_id IS NOT NULL) "
        )
        matching = "FROM users WHERE user_id IS NOT NULL AND instr(lower(user_id), ?) > 0"
        with self._lock:
            rows = self._conn.execute(
                f"{walk} SELECT user_id, COUNT(*) OVER () {matching} "
                "ORDER BY user_id LIMIT ? OFFSET ?",
                (needle, max(limit, 0), max(offset, 0)),
            ).fetchall()
            if rows:
                return [str(row[0]) for row in rows], int(rows[0][1])
            row = self._conn.execute(f"{walk} SELECT COUNT(*) {matching}", (needle,)).fetchone()
        return [], int(row[0])

    # Trees ---------------------------------------------------------------------------------

    def save_tree(
        self,
        tree: InterestTree,
        diff: TreeDiff,
        new_taxonomy: Sequence[tuple[TaxonomyNode, NDArray[np.float32]]],
        new_aliases: dict[str, str],
    ) -> None:
        """Stores a revision with its diff and taxonomy mapping in one transaction.

        `new_aliases` maps taxonomy ids to a label seen for the first time.
        """
        with self._transaction() as conn:
            conn.execute(
                "INSERT INTO trees (user_id, revision, tree, diff) VALUES (?, ?, ?, ?)",
                (tree.user_id, tree.revision, tree.model_dump_json(), diff.model_dump_json()),
            )
            latest = conn.execute(
                "INSERT INTO latest_trees (user_id, revision, create_us) VALUES (?, ?, ?) "
                "ON CONFLICT (user_id) DO UPDATE SET revision = excluded.revision, "
                "create_us = excluded.create_us WHERE excluded.revision > latest_trees.revision",
                latest_tree_row(tree),
            ).rowcount
            if latest:
                conn.execute("DELETE FROM tree_citations WHERE user_id = ?", (tree.user_id,))
                conn.executemany(
                    "INSERT INTO tree_citations (item_id, user_id, position, revision, label) "
                    "VALUES (?, ?, ?, ?, ?)",
                    citation_rows(tree),
                )
            conn.executemany(
                "INSERT INTO taxonomy_nodes (taxonomy_id, label, aliases, vector) "
                "VALUES (?, ?, '[]', ?)",
                [(node.taxonomy_id, node.label, to_blob(vector)) for node, vector in new_taxonomy],
            )
            for taxonomy_id, alias in new_aliases.items():
                row = conn.execute(
                    "SELECT aliases FROM taxonomy_nodes WHERE taxonomy_id = ?", (taxonomy_id,)
                ).fetchone()
                aliases = json.loads(row[0])
                if alias not in aliases:
                    conn.execute(
                        "UPDATE taxonomy_nodes SET aliases = ? WHERE taxonomy_id = ?",
                        (json.dumps([*aliases, alias]), taxonomy_id),
                    )
            conn.execute("DELETE FROM tree_node_taxonomy WHERE user_id = ?", (tree.user_id,))
            conn.executemany(
                "INSERT INTO tree_node_taxonomy (user_id, node_id, taxonomy_id) VALUES (?, ?, ?)",
                [
                    (tree.user_id, node.node_id, node.taxonomy_node)
                    for node in tree.nodes
                    if node.taxonomy_node
                ],
            )
            if new_taxonomy:
                self._bump(conn, TAXONOMY_VERSION_KEY)

    def latest_tree(self, user_id: str) -> InterestTree | None:
        with self._lock:
            row = self._conn.execute(
                "SELECT tree FROM trees WHERE user_id = ? ORDER BY revision DESC LIMIT 1",
                (user_id,),
            ).fetchone()
        return InterestTree.model_validate_json(row[0]) if row else None

    def latest_tree_json(self, user_id: str) -> str | None:
        """The latest revision as stored, unparsed: callers that keep the parsed tree compare
        it (a revision number alone repeats after DeleteUser)."""
        with self._lock:
            row = self._conn.execute(
                "SELECT tree FROM trees WHERE user_id = ? ORDER BY revision DESC LIMIT 1",
                (user_id,),
            ).fetchone()
        return str(row[0]) if row else None

    def recent_trees(self, limit: int) -> list[InterestTree]:
        """The latest revision of the `limit` users whose trees were built last, newest first
        (ties by user id, descending), read through `latest_trees_by_time`."""
        with self._lock:
            rows = self._conn.execute(
                "SELECT t.user_id, t.tree FROM latest_trees l JOIN trees t "
                "ON t.user_id = l.user_id AND t.revision = l.revision "
                "ORDER BY l.create_us DESC, l.user_id DESC LIMIT ?",
                (max(limit, 0),),
            ).fetchall()
        trees = (decode_tree(user_id, text) for user_id, text in rows)
        return [tree for tree in trees if tree is not None]

    def citing_users(self, item_id: str, limit: int) -> list[tuple[str, int, list[str]]]:
        """The first `limit` users, in id order, whose latest tree cites `item_id` as
        evidence: (user_id, revision, labels of the citing nodes in tree order)."""
        with self._lock:
            rows = self._conn.execute(
                "SELECT user_id, revision, label FROM tree_citations WHERE item_id = ? "
                "AND user_id IN (SELECT DISTINCT user_id FROM tree_citations "
                "WHERE item_id = ? ORDER BY user_id LIMIT ?) ORDER BY user_id, position",
                (item_id, item_id, max(limit, 0)),
            ).fetchall()
        return group_citations(rows)

    def tree_revisions(
        self, user_id: str, before_revision: int, limit: int
    ) -> list[tuple[InterestTree, TreeDiff]]:
        """Revisions older than `before_revision`, newest first."""
        with self._lock:
            rows = self._conn.execute(
                "SELECT tree, diff FROM trees WHERE user_id = ? AND revision < ? "
                "ORDER BY revision DESC LIMIT ?",
                (user_id, before_revision, limit),
            ).fetchall()
        return [
            (InterestTree.model_validate_json(tree), TreeDiff.model_validate_json(diff))
            for tree, diff in rows
        ]

    def taxonomy_vectors(self) -> tuple[list[str], NDArray[np.float32]]:
        with self._lock:
            rows = self._conn.execute(
                "SELECT taxonomy_id, vector FROM taxonomy_nodes ORDER BY taxonomy_id"
            ).fetchall()
        return stack_vectors(rows)

    def list_taxonomy(self, offset: int, limit: int) -> list[TaxonomyNode]:
        with self._lock:
            rows = self._conn.execute(
                "SELECT t.taxonomy_id, t.label, t.aliases, COUNT(m.node_id) AS uses "
                "FROM taxonomy_nodes t LEFT JOIN tree_node_taxonomy m "
                "ON m.taxonomy_id = t.taxonomy_id "
                "GROUP BY t.taxonomy_id ORDER BY uses DESC, t.taxonomy_id LIMIT ? OFFSET ?",
                (limit, offset),
            ).fetchall()
        return [
            TaxonomyNode(
                taxonomy_id=row[0], label=row[1], aliases=json.loads(row[2]), node_count=row[3]
            )
            for row in rows
        ]

    def replace_catalog_taxonomy(self, nodes: Sequence[CatalogTaxonomyNode]) -> None:
        """Swaps the whole catalog taxonomy in one transaction (its cached names with it)."""
        with self._transaction() as conn:
            conn.execute("DELETE FROM catalog_taxonomy")
            conn.executemany(
                "INSERT INTO catalog_taxonomy (position, taxonomy_id, node) VALUES (?, ?, ?)",
                [(i, node.taxonomy_id, node.model_dump_json()) for i, node in enumerate(nodes)],
            )
            self._bump(conn, CATALOG_TAXONOMY_VERSION_KEY)

    def catalog_taxonomy(self) -> list[CatalogTaxonomyNode]:
        with self._lock:
            rows = self._conn.execute(
                "SELECT node FROM catalog_taxonomy ORDER BY position"
            ).fetchall()
        return [CatalogTaxonomyNode.model_validate_json(row[0]) for row in rows]

    def taxonomy_node_counts(self) -> dict[str, int]:
        """How many nodes of users' latest trees map to each taxonomy id."""
        with self._lock:
            rows = self._conn.execute(
                "SELECT taxonomy_id, COUNT(*) FROM tree_node_taxonomy GROUP BY taxonomy_id"
            ).fetchall()
        return {str(row[0]): int(row[1]) for row in rows}

    def delete_user(self, user_id: str) -> tuple[int, int]:
        """Deletes the user's rows with `secure_delete` on (SQLite overwrites the freed
        content with zeros), then checkpoints and truncates the WAL, whose older frames still
        held the rows, so that neither file keeps a byte of the user."""
        with self._lock:
            self._conn.execute("PRAGMA secure_delete=ON")
            try:
                with self._transaction() as conn:
                    events = conn.execute(
                        "DELETE FROM events WHERE user_id = ?", (user_id,)
                    ).rowcount
                    revisions = conn.execute(
                        "DELETE FROM trees WHERE user_id = ?", (user_id,)
                    ).rowcount
                    conn.execute("DELETE FROM tree_node_taxonomy WHERE user_id = ?", (user_id,))
                    conn.execute("DELETE FROM latest_trees WHERE user_id = ?", (user_id,))
                    conn.execute("DELETE FROM tree_citations WHERE user_id = ?", (user_id,))
            finally:
                self._conn.execute("PRAGMA secure_delete=OFF")
            self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        return events, revisions

    def close(self) -> None:
        with self._lock:
            self._conn.close()
