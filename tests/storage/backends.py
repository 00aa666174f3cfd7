"""The store backends every store test runs against: SQLite (the embedded default) and a real
PostgreSQL server (`postgres_server.py`), one fresh schema per test.

`tests/conftest.py` imports these fixtures so tests anywhere under tests/ can take
`store_backend`, which is parametrized over both backends.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from taxonomy.ports import Store
from taxonomy.storage.postgres import PostgresStore
from taxonomy.storage.sqlite import SqliteStore

from .postgres_server import PostgresServer, running_postgres

BACKENDS = ("sqlite", "postgres")


@dataclass
class StoreBackend:
    """Opens stores of one backend for one test; every store it opens sees the same data
    (one SQLite file per data directory, one PostgreSQL schema per test)."""

    name: str
    server: PostgresServer | None = None
    schema: str = field(default_factory=lambda: f"test_{uuid.uuid4().hex[:16]}")

    @property
    def store_url(self) -> str | None:
        """The server's `--store-url` (None: SQLite in the data directory)."""
        return self.server.url if self.server is not None else None

    @property
    def store_schema(self) -> str | None:
        return self.schema if self.server is not None else None

    def open(self, data_dir: Path, file_name: str = "db.sqlite3") -> Store:
        if self.server is None:
            return SqliteStore(data_dir / file_name)
        return PostgresStore(self.server.url, schema=self.schema, max_connections=4)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    with running_postgres() as server:
        yield server


@pytest.fixture(params=BACKENDS)
def store_backend(request: pytest.FixtureRequest) -> Iterator[StoreBackend]:
    if request.param == "sqlite":
        yield StoreBackend("sqlite")
        return
    server: PostgresServer = request.getfixturevalue("postgres_server")
    backend = StoreBackend("postgres", server)
    yield backend
    server.drop_schema(backend.schema)
