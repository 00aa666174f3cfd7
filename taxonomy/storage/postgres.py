"""`PostgresStore`: `taxonomy.ports.Store` on PostgreSQL, for replicas that share one database.

- psycopg 3 with a `psycopg_pool.ConnectionPool`; the methods are blocking and thread-safe
  (the engine calls them from worker threads).
- Every write is one transaction, committed (with the server's `synchronous_commit`, on by
  default) before the method returns; any error rolls all of it back.
- Each write bumps its version counter first (`meta`), which also orders concurrent writers of
  one kind of data: a writer waits on the counter's row lock, so counters commit in order. The
  bump sends a NOTIFY on `CHANGES_CHANNEL` that is delivered only if the transaction commits,
  so other replicas learn of committed changes (`taxonomy.storage.postgres_replica`).
- Idempotency keys: `record_events` claims its `request_id` first with
  `INSERT … ON CONFLICT DO NOTHING`; a concurrent duplicate waits for the first and then
  records nothing, so a retried batch is stored once even across replicas.
- Vectors are float32 bytes in `bytea` columns; HNSW stays in-process (Debian ships no
  pgvector). Item vectors carry the catalog counter of their write, and deletes leave
  tombstones, so a replica fetches only what changed (`item_vector_changes`).
- The schema is versioned (`taxonomy.storage.postgres_migrations`). All tables live in one
  PostgreSQL schema, `public` unless `schema` names another: a tenant can map to a schema of
  its own, with the same tables, migrations and channel payloads scoped by schema name.
- PostgreSQL text cannot hold NUL characters, so text containing one is refused as an invalid
  argument (SQLite stores it).
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np
import psycopg
from numpy.typing import NDArray
from psycopg import sql
from psycopg.rows import TupleRow
from psycopg_pool import ConnectionPool

from taxonomy.errors import AbortedError, FieldViolation, InvalidArgumentError
from taxonomy.models import CatalogTaxonomyNode, Event, InterestTree, Item, TaxonomyNode, TreeDiff
from taxonomy.ports import (
    CATALOG_TAXONOMY_VERSION_KEY,
    CATALOG_VERSION_KEY,
    TAXONOMY_VERSION_KEY,
    vectors_version_key,
)
from taxonomy.storage.postgres_migrations import migrate
from taxonomy.storage.rows import (
    EventRow,
    citation_rows,
    decode_event,
    decode_events,
    decode_tree,
    event_micros,
    group_citations,
    latest_tree_row,
    stack_vectors,
    to_blob,
)

__all__ = [
    "CHANGES_CHANNEL",
    "MODEL_VERSION_KEY",
    "REVISION_CONFLICT_REASON",
    "PostgresStore",
    "VectorChanges",
    "is_postgres_url",
]

CHANGES_CHANNEL = "interest_tree_changes"
"""NOTIFY channel of every committed counter bump; the payload is JSON {schema, key, value}."""
MODEL_VERSION_KEY = "model_version"
"""Bumped when a replica stores a newly trained model (`save_model_payload`)."""
TRAINING_LOCK_CLASS = 0x49545254  # "ITRT": the advisory-lock class of model training
REVISION_CONFLICT_REASON = "TREE_REVISION_CONFLICT"
"""ErrorInfo reason of a tree revision that a concurrent build (another replica) stored first."""

logger = logging.getLogger(__name__)

_SCHEMA_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
_EVENT_COLUMNS = "seq, user_id, item_id, event_type, event_us / 1e6, event_us, weight"
_EVENT_ORDER = "event_us, seq"
_ITEM_COLUMNS = "item_id, title, description, categories, tags, update_time"


def is_postgres_url(url: str) -> bool:
    return url.startswith(("postgresql://", "postgres://"))


@dataclass(frozen=True)
class VectorChanges:
    """What changed in one space's item vectors since a catalog version, as of `version`."""

    version: int
    upserted_ids: list[str]
    upserted: NDArray[np.float32]
    deleted_ids: list[str]


def _no_nul(items: Sequence[Item]) -> None:
    violations = [
        FieldViolation(f"items[{i}].{name}", "must not contain NUL characters")
        for i, item in enumerate(items)
        for name, values in (
            ("title", [item.title]),
            ("description", [item.description]),
            ("categories", item.categories),
            ("tags", item.tags),
        )
        if any("\x00" in value for value in values)
    ]
    if violations:
        raise InvalidArgumentError("text must not contain NUL characters", violations)


class PostgresStore:
    """One connection pool; `schema` (default `public`) holds every table."""

    def __init__(
        self,
        url: str,
        *,
        schema: str | None = None,
        min_connections: int = 1,
        max_connections: int = 8,
        timeout_s: float = 30.0,
    ) -> None:
        name = schema or "public"
        if not _SCHEMA_NAME.match(name) or name.startswith("pg_"):
            raise ValueError(
                f"schema must match {_SCHEMA_NAME.pattern} and not start with pg_, got {name!r}"
            )
        self.url = url
        self.schema = name
        with psycopg.connect(url) as conn:
            self.migrations_applied = migrate(conn, name)
        self._pool: ConnectionPool[psycopg.Connection[TupleRow]] = ConnectionPool(
            url,
            min_size=min_connections,
            max_size=max_connections,
            timeout=timeout_s,
            kwargs={"options": f"-c search_path={name}"},
            open=False,
            name=f"interest-tree:{name}",
        )
        self._pool.open(wait=True, timeout=timeout_s)

    @contextmanager
    def _transaction(self) -> Iterator[psycopg.Connection[TupleRow]]:
        """One transaction: committed when the block ends, rolled back if it raises."""
        with self._pool.connection() as conn, conn.transaction():
            yield conn

    def _bump(self, conn: psycopg.Connection[TupleRow], key: str) -> int:
        row = conn.execute(
            "INSERT INTO meta (key, value) VALUES (%s, 1) "
            "ON CONFLICT (key) DO UPDATE SET value = meta.value + 1 RETURNING value",
            (key,),
        ).fetchone()
        assert row is not None
        value = int(row[0])
        payload = json.dumps({"schema": self.schema, "key": key, "value": value})
        conn.execute("SELECT pg_notify(%s, %s)", (CHANGES_CHANNEL, payload))
        return value

    def version(self, key: str) -> int:
        """A counter bumped by every write to one kind of data; indexes compare it on load."""
        with self._transaction() as conn:
            row = conn.execute("SELECT value FROM meta WHERE key = %s", (key,)).fetchone()
        return int(row[0]) if row else 0

    def versions(self) -> dict[str, int]:
        """Every counter at once, from one snapshot."""
        with self._transaction() as conn:
            rows = conn.execute("SELECT key, value FROM meta").fetchall()
        return {str(key): int(value) for key, value in rows}

    # Catalog -------------------------------------------------------------------------------

    def upsert_items(
        self, items: Sequence[Item], vectors: dict[str, NDArray[np.float32]], space: str
    ) -> list[Item]:
        _no_nul(items)
        now = datetime.now(UTC)
        stored = [item.model_copy(update={"update_time": now}) for item in items]
        with self._transaction() as conn:
            catalog_version = self._bump(conn, CATALOG_VERSION_KEY)
            self._bump(conn, vectors_version_key(space))
            with conn.cursor() as cur:
                cur.executemany(
                    "INSERT INTO items (item_id, title, description, categories, tags, "
                    "update_time) VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT (item_id) DO "
                    "UPDATE SET title = excluded.title, description = excluded.description, "
                    "categories = excluded.categories, tags = excluded.tags, "
                    "update_time = excluded.update_time",
                    [
                        (
                            item.item_id,
                            item.title,
                            item.description,
                            list(item.categories),
                            list(item.tags),
                            now,
                        )
                        for item in stored
                    ],
                )
                cur.executemany(
                    "INSERT INTO item_vectors (item_id, space, vector, catalog_version) "
                    "VALUES (%s, %s, %s, %s) ON CONFLICT (item_id, space) DO UPDATE SET "
                    "vector = excluded.vector, catalog_version = excluded.catalog_version",
                    [
                        (item_id, space, to_blob(vector), catalog_version)
                        for item_id, vector in vectors.items()
                    ],
                )
            conn.execute(
                "DELETE FROM item_tombstones WHERE item_id = ANY(%s)",
                ([item.item_id for item in stored],),
            )
        return stored

    def get_items(self, item_ids: Sequence[str]) -> dict[str, Item]:
        unique = list(dict.fromkeys(item_ids))
        if not unique:
            return {}
        with self._transaction() as conn:
            rows = conn.execute(
                f"SELECT {_ITEM_COLUMNS} FROM items WHERE item_id = ANY(%s)", (unique,)
            ).fetchall()
        return {item.item_id: item for item in map(_decode_item, rows) if item is not None}

    def item_titles(self, item_ids: Sequence[str]) -> dict[str, str]:
        """Titles of the items that exist: what a reason names, without decoding whole items."""
        unique = list(dict.fromkeys(item_ids))
        if not unique:
            return {}
        with self._transaction() as conn:
            rows = conn.execute(
                "SELECT item_id, title FROM items WHERE item_id = ANY(%s)", (unique,)
            ).fetchall()
        return {str(item_id): str(title) for item_id, title in rows}

    def list_items(self, after_item_id: str, limit: int) -> list[Item]:
        with self._transaction() as conn:
            rows = conn.execute(
                f"SELECT {_ITEM_COLUMNS} FROM items WHERE item_id > %s ORDER BY item_id LIMIT %s",
                (after_item_id, limit),
            ).fetchall()
        return [item for item in map(_decode_item, rows) if item is not None]

    def delete_items(self, item_ids: Sequence[str]) -> int:
        unique = list(dict.fromkeys(item_ids))
        with self._transaction() as conn:
            catalog_version = self._bump(conn, CATALOG_VERSION_KEY)
            if not unique:
                return 0
            deleted = conn.execute("DELETE FROM items WHERE item_id = ANY(%s)", (unique,)).rowcount
            conn.execute("DELETE FROM item_vectors WHERE item_id = ANY(%s)", (unique,))
            with conn.cursor() as cur:
                cur.executemany(
                    "INSERT INTO item_tombstones (item_id, catalog_version) VALUES (%s, %s) "
                    "ON CONFLICT (item_id) DO UPDATE "
                    "SET catalog_version = excluded.catalog_version",
                    [(item_id, catalog_version) for item_id in unique],
                )
        return max(deleted, 0)

    def item_ids_in_categories(self, prefixes: Sequence[Sequence[str]]) -> set[str]:
        """Items whose category path starts with one of `prefixes` (element by element)."""
        found: set[str] = set()
        with self._transaction() as conn:
            for prefix in prefixes:
                path = list(prefix)
                if path:
                    rows = conn.execute(
                        "SELECT item_id FROM items WHERE categories[1:%s] = %s::text[]",
                        (len(path), path),
                    ).fetchall()
                else:
                    rows = conn.execute(
                        "SELECT item_id FROM items WHERE cardinality(categories) = 0"
                    ).fetchall()
                found.update(str(row[0]) for row in rows)
        return found

    def item_vectors(self, space: str) -> tuple[list[str], NDArray[np.float32]]:
        with self._transaction() as conn:
            rows = conn.execute(
                "SELECT item_id, vector FROM item_vectors WHERE space = %s ORDER BY item_id",
                (space,),
            ).fetchall()
        return stack_vectors([(str(item_id), bytes(blob)) for item_id, blob in rows])

    def item_vector_changes(self, space: str, since_version: int) -> VectorChanges:
        """Vectors of `space` written, and items deleted, after catalog version
        `since_version`, read from one snapshot together with the version it reflects."""
        with self._pool.connection() as conn:
            conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
            try:
                with conn.transaction():
                    row = conn.execute(
                        "SELECT value FROM meta WHERE key = %s", (CATALOG_VERSION_KEY,)
                    ).fetchone()
                    rows = conn.execute(
                        "SELECT item_id, vector FROM item_vectors "
                        "WHERE space = %s AND catalog_version > %s ORDER BY item_id",
                        (space, since_version),
                    ).fetchall()
                    deleted = conn.execute(
                        "SELECT item_id FROM item_tombstones WHERE catalog_version > %s "
                        "ORDER BY item_id",
                        (since_version,),
                    ).fetchall()
            finally:
                conn.isolation_level = None
        ids, matrix = stack_vectors([(str(item_id), bytes(blob)) for item_id, blob in rows])
        return VectorChanges(
            version=int(row[0]) if row else 0,
            upserted_ids=ids,
            upserted=matrix,
            deleted_ids=[str(r[0]) for r in deleted],
        )

    # Events --------------------------------------------------------------------------------

    def record_events(self, events: Sequence[Event], request_id: str | None) -> int:
        with self._transaction() as conn:
            if request_id:
                claimed = conn.execute(
                    "INSERT INTO request_ids (request_id, recorded_count) VALUES (%s, %s) "
                    "ON CONFLICT (request_id) DO NOTHING RETURNING 1",
                    (request_id, len(events)),
                ).fetchone()
                if claimed is None:
                    return 0
            with conn.cursor() as cur:
                cur.executemany(
                    "INSERT INTO events (user_id, item_id, event_type, event_us, weight) "
                    "VALUES (%s, %s, %s, %s, %s)",
                    [_event_row(event) for event in events],
                )
        return len(events)

    def user_exists(self, user_id: str) -> bool:
        with self._transaction() as conn:
            row = conn.execute(
                "SELECT 1 FROM events WHERE user_id = %s LIMIT 1", (user_id,)
            ).fetchone()
        return row is not None

    def user_events(self, user_id: str) -> list[Event]:
        with self._transaction() as conn:
            rows = conn.execute(
                f"SELECT {_EVENT_COLUMNS} FROM events WHERE user_id = %s ORDER BY {_EVENT_ORDER}",
                (user_id,),
            ).fetchall()
        return decode_events([_as_event_row(row) for row in rows])

    def user_event_stamp(self, user_id: str) -> tuple[int, int]:
        """(how many events, the highest seq) of a user. Seqs may commit out of order, but a
        late commit still raises the count, so an unchanged stamp means unchanged events."""
        with self._transaction() as conn:
            row = conn.execute(
                "SELECT COUNT(*), COALESCE(MAX(seq), 0) FROM events WHERE user_id = %s",
                (user_id,),
            ).fetchone()
        return (int(row[0]), int(row[1])) if row else (0, 0)

    def event_count(self) -> int:
        with self._transaction() as conn:
            row = conn.execute("SELECT COUNT(*) FROM events").fetchone()
        return int(row[0]) if row else 0

    def item_count(self) -> int:
        with self._transaction() as conn:
            row = conn.execute("SELECT COUNT(*) FROM items").fetchone()
        return int(row[0]) if row else 0

    def user_count(self) -> int:
        with self._transaction() as conn:
            row = conn.execute("SELECT COUNT(DISTINCT user_id) FROM events").fetchone()
        return int(row[0]) if row else 0

    def all_sequences(self) -> Iterator[tuple[str, list[Event]]]:
        with self._transaction() as conn:
            rows = conn.execute(
                f"SELECT {_EVENT_COLUMNS} FROM events ORDER BY user_id, {_EVENT_ORDER}"
            ).fetchall()
        current: str | None = None
        batch: list[Event] = []
        for raw in rows:
            row = _as_event_row(raw)
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
        with self._transaction() as conn:
            rows = conn.execute("SELECT DISTINCT user_id FROM events ORDER BY user_id").fetchall()
        return [str(row[0]) for row in rows]

    def search_user_ids(self, search: str, offset: int, limit: int) -> tuple[list[str], int]:
        """A page of the users with events whose id contains `search` (ASCII case folded:
        ids are ASCII), in id order, and how many match. The distinct ids are walked on
        `events_by_user` one seek per user (a loose index scan), not one row per event."""
        needle = search.lower()
        walk = (
            "WITH RECURSIVE users(user_id) AS ("
            "(SELECT user_id FROM events ORDER BY user_id LIMIT 1) UNION ALL "
            "SELECT (SELECT e.user_id FROM events e WHERE e.user_id > u.user_id "
            "ORDER BY e.user_id LIMIT 1) FROM users u WHERE u.user_id IS NOT NULL) "
        )
        matching = "FROM users WHERE user_id IS NOT NULL AND strpos(lower(user_id), %s) > 0"
        with self._transaction() as conn:
            rows = conn.execute(
                f"{walk} SELECT user_id, COUNT(*) OVER () {matching} "
                "ORDER BY user_id LIMIT %s OFFSET %s",
                (needle, max(limit, 0), max(offset, 0)),
            ).fetchall()
            if rows:
                return [str(row[0]) for row in rows], int(rows[0][1])
            row = conn.execute(f"{walk} SELECT COUNT(*) {matching}", (needle,)).fetchone()
        return [], int(row[0]) if row else 0

    # Trees ---------------------------------------------------------------------------------

    def save_tree(
        self,
        tree: InterestTree,
        diff: TreeDiff,
        new_taxonomy: Sequence[tuple[TaxonomyNode, NDArray[np.float32]]],
        new_aliases: dict[str, str],
    ) -> None:
        """Stores a revision with its diff and taxonomy mapping in one transaction. Two
        replicas building one user at the same moment both number their tree after the same
        previous revision: the second to commit gets `AbortedError` (ABORTED) and stores
        nothing, since its diff and number describe a predecessor that is no longer the latest."""
        with self._transaction() as conn:
            if new_taxonomy:
                self._bump(conn, TAXONOMY_VERSION_KEY)
            try:
                conn.execute(
                    "INSERT INTO trees (user_id, revision, tree, diff) VALUES (%s, %s, %s, %s)",
                    (tree.user_id, tree.revision, tree.model_dump_json(), diff.model_dump_json()),
                )
            except psycopg.errors.UniqueViolation as error:
                raise AbortedError(
                    f"revision {tree.revision} of users/{tree.user_id}'s tree was stored by a "
                    "concurrent build; read it, or build again",
                    reason=REVISION_CONFLICT_REASON,
                ) from error
            latest = conn.execute(
                "INSERT INTO latest_trees (user_id, revision, create_us) VALUES (%s, %s, %s) "
                "ON CONFLICT (user_id) DO UPDATE SET revision = excluded.revision, "
                "create_us = excluded.create_us WHERE excluded.revision > latest_trees.revision",
                latest_tree_row(tree),
            ).rowcount
            if latest > 0:
                conn.execute("DELETE FROM tree_citations WHERE user_id = %s", (tree.user_id,))
                with conn.cursor() as cur:
                    cur.executemany(
                        "INSERT INTO tree_citations "
                        "(item_id, user_id, position, revision, label) "
                        "VALUES (%s, %s, %s, %s, %s)",
                        citation_rows(tree),
                    )
            with conn.cursor() as cur:
                cur.executemany(
                    "INSERT INTO taxonomy_nodes (taxonomy_id, label, aliases, vector) "
                    "VALUES (%s, %s, '{}', %s)",
                    [(node.taxonomy_id, node.label, to_blob(vec)) for node, vec in new_taxonomy],
                )
                cur.executemany(
                    "UPDATE taxonomy_nodes SET aliases = array_append(aliases, %s) "
                    "WHERE taxonomy_id = %s AND NOT (%s = ANY(aliases))",
                    [(alias, taxonomy_id, alias) for taxonomy_id, alias in new_aliases.items()],
                )
            conn.execute("DELETE FROM tree_node_taxonomy WHERE user_id = %s", (tree.user_id,))
            mapped = [
                (tree.user_id, node.node_id, node.taxonomy_node)
                for node in tree.nodes
                if node.taxonomy_node
            ]
            with conn.cursor() as cur:
                cur.executemany(
                    "INSERT INTO tree_node_taxonomy (user_id, node_id, taxonomy_id) "
                    "VALUES (%s, %s, %s)",
                    mapped,
                )

    def latest_tree(self, user_id: str) -> InterestTree | None:
        with self._transaction() as conn:
            row = conn.execute(
                "SELECT tree FROM trees WHERE user_id = %s ORDER BY revision DESC LIMIT 1",
                (user_id,),
            ).fetchone()
        return InterestTree.model_validate_json(row[0]) if row else None

    def latest_tree_json(self, user_id: str) -> str | None:
        """The latest revision as stored, unparsed: callers that keep the parsed tree compare
        it (a revision number alone repeats after DeleteUser)."""
        with self._transaction() as conn:
            row = conn.execute(
                "SELECT tree FROM trees WHERE user_id = %s ORDER BY revision DESC LIMIT 1",
                (user_id,),
            ).fetchone()
        return str(row[0]) if row else None

    def recent_trees(self, limit: int) -> list[InterestTree]:
        """The latest revision of the `limit` users whose trees were built last, newest first
        (ties by user id, descending), read through `latest_trees_by_time`."""
        with self._transaction() as conn:
            rows = conn.execute(
                "SELECT t.user_id, t.tree FROM latest_trees l JOIN trees t "
                "ON t.user_id = l.user_id AND t.revision = l.revision "
                "ORDER BY l.create_us DESC, l.user_id DESC LIMIT %s",
                (max(limit, 0),),
            ).fetchall()
        trees = (decode_tree(str(user_id), str(text)) for user_id, text in rows)
        return [tree for tree in trees if tree is not None]

    def citing_users(self, item_id: str, limit: int) -> list[tuple[str, int, list[str]]]:
        """The first `limit` users, in id order, whose latest tree cites `item_id` as
        evidence: (user_id, revision, labels of the citing nodes in tree order)."""
        with self._transaction() as conn:
            rows = conn.execute(
                "SELECT user_id, revision, label FROM tree_citations WHERE item_id = %s "
                "AND user_id IN (SELECT DISTINCT user_id FROM tree_citations "
                "WHERE item_id = %s ORDER BY user_id LIMIT %s) ORDER BY user_id, position",
                (item_id, item_id, max(limit, 0)),
            ).fetchall()
        return group_citations(rows)

    def tree_revisions(
        self, user_id: str, before_revision: int, limit: int
    ) -> list[tuple[InterestTree, TreeDiff]]:
        """Revisions older than `before_revision`, newest first."""
        before = min(before_revision, 2**31 - 1)
        with self._transaction() as conn:
            rows = conn.execute(
                "SELECT tree, diff FROM trees WHERE user_id = %s AND revision < %s "
                "ORDER BY revision DESC LIMIT %s",
                (user_id, before, limit),
            ).fetchall()
        return [
            (InterestTree.model_validate_json(tree), TreeDiff.model_validate_json(diff))
            for tree, diff in rows
        ]

    def taxonomy_vectors(self) -> tuple[list[str], NDArray[np.float32]]:
        with self._transaction() as conn:
            rows = conn.execute(
                "SELECT taxonomy_id, vector FROM taxonomy_nodes ORDER BY taxonomy_id"
            ).fetchall()
        return stack_vectors([(str(taxonomy_id), bytes(blob)) for taxonomy_id, blob in rows])

    def list_taxonomy(self, offset: int, limit: int) -> list[TaxonomyNode]:
        with self._transaction() as conn:
            rows = conn.execute(
                "SELECT t.taxonomy_id, t.label, t.aliases, COUNT(m.node_id) AS uses "
                "FROM taxonomy_nodes t LEFT JOIN tree_node_taxonomy m "
                "ON m.taxonomy_id = t.taxonomy_id "
                "GROUP BY t.taxonomy_id ORDER BY uses DESC, t.taxonomy_id LIMIT %s OFFSET %s",
                (min(limit, 2**62), offset),
            ).fetchall()
        return [
            TaxonomyNode(
                taxonomy_id=row[0], label=row[1], aliases=list(row[2]), node_count=int(row[3])
            )
            for row in rows
        ]

    def replace_catalog_taxonomy(self, nodes: Sequence[CatalogTaxonomyNode]) -> None:
        """Swaps the whole catalog taxonomy in one transaction."""
        with self._transaction() as conn:
            self._bump(conn, CATALOG_TAXONOMY_VERSION_KEY)
            conn.execute("DELETE FROM catalog_taxonomy")
            with conn.cursor() as cur:
                cur.executemany(
                    "INSERT INTO catalog_taxonomy (position, taxonomy_id, node) "
                    "VALUES (%s, %s, %s)",
                    [(i, node.taxonomy_id, node.model_dump_json()) for i, node in enumerate(nodes)],
                )

    def catalog_taxonomy(self) -> list[CatalogTaxonomyNode]:
        with self._transaction() as conn:
            rows = conn.execute("SELECT node FROM catalog_taxonomy ORDER BY position").fetchall()
        return [CatalogTaxonomyNode.model_validate_json(row[0]) for row in rows]

    def taxonomy_node_counts(self) -> dict[str, int]:
        """How many nodes of users' latest trees map to each taxonomy id."""
        with self._transaction() as conn:
            rows = conn.execute(
                "SELECT taxonomy_id, COUNT(*) FROM tree_node_taxonomy GROUP BY taxonomy_id"
            ).fetchall()
        return {str(row[0]): int(row[1]) for row in rows}

    def delete_user(self, user_id: str) -> tuple[int, int]:
        """Deletes the user's events, revisions and taxonomy references in one transaction,
        then VACUUMs those tables so the dead rows' space is reclaimed. (PostgreSQL's WAL and
        any backups keep the old pages for as long as the server's retention says.)"""
        with self._transaction() as conn:
            events = conn.execute("DELETE FROM events WHERE user_id = %s", (user_id,)).rowcount
            revisions = conn.execute("DELETE FROM trees WHERE user_id = %s", (user_id,)).rowcount
            conn.execute("DELETE FROM tree_node_taxonomy WHERE user_id = %s", (user_id,))
            conn.execute("DELETE FROM latest_trees WHERE user_id = %s", (user_id,))
            conn.execute("DELETE FROM tree_citations WHERE user_id = %s", (user_id,))
        with self._pool.connection() as conn:
            conn.autocommit = True
            try:
                conn.execute(
                    "VACUUM events, trees, tree_node_taxonomy, latest_trees, tree_citations"
                )
            finally:
                conn.autocommit = False
        return max(events, 0), max(revisions, 0)

    # Shared models (replicas) --------------------------------------------------------------

    def save_model_payload(self, name: str, event_count: int, payload: bytes) -> int:
        """Stores a trained model's file for every replica; returns the new model version."""
        with self._transaction() as conn:
            version = self._bump(conn, MODEL_VERSION_KEY)
            conn.execute(
                "INSERT INTO models (name, event_count, payload) VALUES (%s, %s, %s) "
                "ON CONFLICT (name) DO UPDATE SET event_count = excluded.event_count, "
                "payload = excluded.payload, trained_at = now()",
                (name, event_count, payload),
            )
        return version

    def model_event_count(self, name: str) -> int | None:
        with self._transaction() as conn:
            row = conn.execute("SELECT event_count FROM models WHERE name = %s", (name,)).fetchone()
        return int(row[0]) if row else None

    def load_model_payload(self, name: str) -> tuple[int, bytes] | None:
        with self._transaction() as conn:
            row = conn.execute(
                "SELECT event_count, payload FROM models WHERE name = %s", (name,)
            ).fetchone()
        return (int(row[0]), bytes(row[1])) if row else None

    def try_training_lock(self) -> psycopg.Connection[TupleRow] | None:
        """Tries the session-level advisory lock of model training in this schema, on a
        connection of its own (so no transaction stays open while training runs). Returns
        that connection while this process holds the lock (closing it releases the lock),
        None when another process holds it."""
        conn = psycopg.connect(self.url, autocommit=True)
        try:
            row = conn.execute(
                "SELECT pg_try_advisory_lock(%s, hashtext(%s))",
                (TRAINING_LOCK_CLASS, self.schema),
            ).fetchone()
        except BaseException:
            conn.close()
            raise
        if row is not None and row[0]:
            return conn
        conn.close()
        return None

    def listen_query(self) -> sql.Composed:
        """The LISTEN statement for this store's change notifications."""
        return sql.SQL("LISTEN {}").format(sql.Identifier(CHANGES_CHANNEL))

    def close(self) -> None:
        self._pool.close()


def _event_row(event: Event) -> tuple[str, str, int, int, float | None]:
    return (
        event.user_id,
        event.item_id,
        int(event.event_type),
        event_micros(event.event_time),
        event.weight,
    )


def _as_event_row(row: tuple[Any, ...]) -> EventRow:
    seq, user_id, item_id, event_type, seconds, micros, weight = row
    return (int(seq), str(user_id), str(item_id), int(event_type), float(seconds), micros, weight)


def _decode_item(row: tuple[Any, ...]) -> Item | None:
    """An item row, or None (logged) for one this version cannot read, as SQLite does."""
    item_id, title, description, categories, tags, update_time = row
    try:
        return Item(
            item_id=item_id,
            title=title,
            description=description,
            categories=list(categories),
            tags=list(tags),
            update_time=update_time,
        )
    except (ValueError, TypeError) as error:
        logger.error("skipping stored item %r that cannot be read: %s", item_id, error)
        return None
