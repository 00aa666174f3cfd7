"""A throwaway PostgreSQL server for the tests, started by pytest-postgresql's executor from
Debian's `postgresql` binaries (`.ci/run` installs them).

pg_ctl is found as `$INTEREST_TREE_PG_CTL`, else the newest `/usr/lib/postgresql/<ver>/bin/
pg_ctl`, else `pg_ctl` on PATH. initdb refuses to run as root, so as root the executor is
handed a small wrapper that runs pg_ctl as the `postgres` system user (created by Debian's
package) through `setpriv`; the data directory, socket and log live in a fresh folder owned
by that user. Without PostgreSQL the tests fail: they are never skipped.
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import psycopg
from psycopg import sql
from psycopg.rows import TupleRow
from pytest_postgresql.executors.proc import PostgreSQLExecutor

DATABASE = "interest_tree"
_WRAPPER = """#!/bin/sh
# Runs pg_ctl as the postgres system user: initdb and postgres refuse to run as root.
exec setpriv --reuid={uid} --regid={gid} --init-groups {pg_ctl} "$@"
"""


class PostgresNotFoundError(RuntimeError):
    pass


def find_pg_ctl() -> Path:
    configured = os.environ.get("INTEREST_TREE_PG_CTL")
    if configured:
        return Path(configured)
    installed = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"),
        key=lambda path: int(path.parent.parent.name) if path.parent.parent.name.isdigit() else 0,
    )
    if installed:
        return installed[-1]
    on_path = shutil.which("pg_ctl")
    if on_path:
        return Path(on_path)
    raise PostgresNotFoundError(
        "PostgreSQL's pg_ctl was not found: install Debian's postgresql package "
        "(apt-get install postgresql) or set INTEREST_TREE_PG_CTL"
    )


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass(frozen=True)
class PostgresServer:
    host: str
    port: int
    user: str
    dbname: str

    @property
    def url(self) -> str:
        return f"postgresql://{self.user}@{self.host}:{self.port}/{self.dbname}"

    def drop_schema(self, schema: str) -> None:
        with psycopg.connect(self.url, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))


def _connect_when_ready(url: str, give_up_s: float = 120.0) -> psycopg.Connection[TupleRow]:
    """pg_ctl reports the server started before it accepts connections ("the database
    system is starting up"): retry until it does."""
    deadline = time.monotonic() + give_up_s
    while True:
        try:
            return psycopg.connect(url, autocommit=True, connect_timeout=5)
        except psycopg.OperationalError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


@contextmanager
def running_postgres() -> Iterator[PostgresServer]:
    """Starts a PostgreSQL server on a free loopback port with a fresh cluster, creates the
    `interest_tree` database, and stops and removes everything on exit."""
    pg_ctl = find_pg_ctl()
    if not pg_ctl.exists():
        raise PostgresNotFoundError(f"{pg_ctl} does not exist")
    workdir = Path(tempfile.mkdtemp(prefix="interest-tree-pg-"))
    executable = str(pg_ctl)
    if os.geteuid() == 0:
        account = pwd.getpwnam("postgres")
        os.chown(workdir, account.pw_uid, account.pw_gid)
        wrapper_dir = Path(tempfile.mkdtemp(prefix="interest-tree-pg-ctl-"))
        wrapper = wrapper_dir / "pg_ctl"
        wrapper.write_text(_WRAPPER.format(uid=account.pw_uid, gid=account.pw_gid, pg_ctl=pg_ctl))
        wrapper.chmod(0o755)
        executable = str(wrapper)
    else:
        wrapper_dir = None
    port = _free_port()
    executor = PostgreSQLExecutor(
        executable=executable,
        host="127.0.0.1",
        port=port,
        datadir=str(workdir / "data"),
        unixsocketdir=str(workdir),
        logfile=str(workdir / "postgresql.log"),
        startparams="-w",
        dbname=DATABASE,
        user="postgres",
        # Durability is not under test here (the tests never crash the server): no fsync.
        postgres_options="-c fsync=off -c full_page_writes=off -c max_connections=200",
        timeout=120,
    )
    try:
        executor.start()
        server = PostgresServer("127.0.0.1", port, "postgres", DATABASE)
        maintenance = f"postgresql://postgres@127.0.0.1:{port}/postgres"
        with _connect_when_ready(maintenance) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(DATABASE)))
        yield server
    finally:
        try:
            executor.stop()
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
            if wrapper_dir is not None:
                shutil.rmtree(wrapper_dir, ignore_errors=True)
