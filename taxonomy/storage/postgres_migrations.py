"""Versioned schema migrations of `PostgresStore`.

The steps are the numbered files of `taxonomy/storage/migrations/` (`0001_initial.sql`,
`0002_….sql`, …), applied in order, each once. `schema_migrations` in the store's schema
records which ones ran. All pending steps run in one transaction under a transaction-level
advisory lock keyed by the schema, so replicas starting together apply each step exactly once
and a failed step leaves the schema as it was. A database that has a step this code does not
know (a newer version wrote it) is refused rather than used.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib import resources
from typing import Any

import psycopg
from psycopg import sql

MIGRATION_LOCK_CLASS = 0x49545245  # "ITRE": the advisory-lock class of interest-tree migrations
_FILE = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str


class MigrationError(RuntimeError):
    """The schema cannot be brought to this code's version."""


def known_migrations() -> list[Migration]:
    """Every step shipped with this code, in order; numbers must run 1, 2, 3, … without gaps."""
    folder = resources.files("taxonomy.storage.migrations")
    found: list[Migration] = []
    for entry in folder.iterdir():
        match = _FILE.match(entry.name)
        if match:
            found.append(Migration(int(match[1]), match[2], entry.read_text(encoding="utf-8")))
    found.sort(key=lambda step: step.version)
    expected = list(range(1, len(found) + 1))
    if [step.version for step in found] != expected:
        raise MigrationError(f"migration numbers must be 1..{len(found)} without gaps")
    return found


def migrate(conn: psycopg.Connection[Any], schema: str) -> list[int]:
    """Brings `schema` (created if missing) to the newest step; returns the steps applied now.

    `conn` must not be inside a transaction; the migration commits (or rolls back) its own.
    """
    steps = known_migrations()
    with conn.transaction():
        conn.execute(
            "SELECT pg_advisory_xact_lock(%s, hashtext(%s))", (MIGRATION_LOCK_CLASS, schema)
        )
        conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(schema)))
        conn.execute(
            sql.SQL("SET LOCAL search_path TO {}").format(sql.Identifier(schema)),
        )
        conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            " version integer PRIMARY KEY,"
            " name text NOT NULL,"
            " applied_at timestamptz NOT NULL DEFAULT now())"
        )
        applied = {
            int(row[0]) for row in conn.execute("SELECT version FROM schema_migrations").fetchall()
        }
        unknown = sorted(applied - {step.version for step in steps})
        if unknown:
            raise MigrationError(
                f"schema {schema!r} has migration {unknown[-1]}, newer than this code knows "
                f"({len(steps)}); run a newer interest-tree against it"
            )
        done: list[int] = []
        for step in steps:
            if step.version in applied:
                continue
            conn.execute(step.sql.encode())
            conn.execute(
                "INSERT INTO schema_migrations (version, name) VALUES (%s, %s)",
                (step.version, step.name),
            )
            done.append(step.version)
    return done


def applied_migrations(conn: psycopg.Connection[Any], schema: str) -> list[int]:
    """The steps recorded in `schema`, in order (empty when it was never migrated)."""
    with conn.transaction():
        row = conn.execute(
            "SELECT to_regclass(format('%%I.schema_migrations', %s::text))", (schema,)
        ).fetchone()
        if row is None or row[0] is None:
            return []
        rows = conn.execute(
            sql.SQL("SELECT version FROM {}.schema_migrations ORDER BY version").format(
                sql.Identifier(schema)
            )
        ).fetchall()
    return [int(row[0]) for row in rows]
