"""Poisoned data: whatever the server accepted, and whatever an older version stored, a
restart refuses nothing acknowledged and serves every other user.

For each hostile or extreme-but-valid value the server ACCEPTS, the server is stopped with
SIGTERM and restarted on the same data directory: it must start, say SERVING, and every
sample user still builds, explains and recommends. Accepted values pile up on one data
directory while all stays well; after a failure the next case starts from a fresh copy of
the seeded directory, so one bad value does not fail the cases after it.

Then rows an older version might have written (an item vector of the wrong length, an event
at 10000-01-01T00:00:00Z) go straight into the SQLite file: the server must skip them and
serve the other users.
"""

from __future__ import annotations

import shutil
import signal
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from interesttree.v1 import interest_pb2

from .embeddings import HashEmbeddings
from .hostile import persisting_cases, prepare_victim
from .processes import (
    ServerProcess,
    embedding_dim,
    load_sample,
    start_server,
    user_checks,
    victim_problems,
)
from .support import SAMPLE_USERS, SUMMARY, Code, invoke

STORE_FILE = "interest-tree.sqlite3"
# taxonomy/storage/sqlite.py: the text space's vectors, and the version counters that make
# the indexes rebuild from the store on start (asserted below to exist, so no rename hides).
TEXT_SPACE = "text"
VERSION_KEYS = ("catalog_version", f"vectors_version:{TEXT_SPACE}")
pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800)]


@dataclass
class Deployment:
    """One data directory at a time, copied from a seeded template, and its server."""

    root: Path
    embeddings: HashEmbeddings
    dim: int = 0
    server: ServerProcess | None = None
    copies: int = 0

    @property
    def template(self) -> Path:
        return self.root / "template"

    def start(self, data_dir: Path) -> ServerProcess:
        self.server = start_server(data_dir, env=self.embeddings.env())
        return self.server

    def fresh_copy(self) -> Path:
        self.copies += 1
        data_dir = self.root / f"copy-{self.copies}"
        shutil.copytree(self.template, data_dir)
        return data_dir

    def running(self) -> ServerProcess:
        """The current server, or one on a fresh copy of the template."""
        return self.server or self.start(self.fresh_copy())

    def discard(self) -> None:
        if self.server is not None:
            self.server.stop(signal.SIGKILL)
            self.server = None


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    here = Deployment(tmp_path_factory.mktemp("poisoned"), HashEmbeddings())
    server = here.start(here.template)
    try:
        load_sample(server)
        for user in SAMPLE_USERS:
            request = interest_pb2.BuildInterestTreeRequest(user=user)
            server.interests.BuildInterestTree(request, timeout=120)
        here.dim = embedding_dim(server)
        assert server.stop() == 0, server.log_tail()
        here.server = None
        yield here
    finally:
        here.discard()
        here.embeddings.close()


def restart(deployment: Deployment) -> tuple[ServerProcess | None, list[str]]:
    """SIGTERM, then a new process on the same directory; what went wrong on the way."""
    server = deployment.running()
    problems = []
    code = server.stop(signal.SIGTERM)
    if code != 0:
        problems.append(f"SIGTERM exit code {code}:\n{server.log_tail(20)}")
    try:
        return deployment.start(server.data_dir), problems
    except AssertionError as error:
        deployment.server = None
        return None, [*problems, f"restart failed: {str(error)[-2000:]}"]


@pytest.mark.parametrize("case_id", list(persisting_cases(2)))
def test_restart_after_accepted_value(deployment: Deployment, case_id: str) -> None:
    server = deployment.running()
    case = persisting_cases(deployment.dim)[case_id]
    prepare_victim(server, case)
    outcome = invoke(server.channel, case.method, case.request, case.response_type)
    problems = []
    if outcome.code not in case.allowed or outcome.problems:
        allowed = "/".join(sorted(code.name for code in case.allowed))
        problems.append(f"expected {allowed}, got {outcome.describe()}")
    if outcome.code is Code.OK:
        restarted, trouble = restart(deployment)
        problems += trouble
        if restarted is not None:
            problems += user_checks(restarted, SAMPLE_USERS)
            problems += victim_problems(restarted, case.user, case.item)
    if problems:
        deployment.discard()
    assert not problems, f"{case_id} ({outcome.code.name}):\n" + server.explain(problems)


def write_old_rows(store: Path, dim: int, rows: str) -> None:
    """Rows as an older version could have left them, with the versions it would bump."""
    with sqlite3.connect(store) as conn:
        if rows in ("vector", "both"):
            (stored,) = conn.execute(
                "SELECT COUNT(*) FROM item_vectors WHERE space = ?", (TEXT_SPACE,)
            ).fetchone()
            assert stored > 0, f"no vectors of space {TEXT_SPACE!r}: has the schema changed?"
            conn.execute(
                "INSERT INTO items (item_id, title, description, categories, tags, update_time)"
                " VALUES ('legacy-vec', 'Legacy', '', '[\"Books\"]', '[]', 1700000000.0)"
            )
            conn.execute(
                "INSERT INTO item_vectors (item_id, space, vector) VALUES ('legacy-vec', ?, ?)",
                (TEXT_SPACE, b"\x00\x00\x80\x3f" * (dim - 1)),
            )
            conn.execute(
                "INSERT INTO events (user_id, item_id, event_type, event_time, weight) "
                "VALUES ('legacy-vec-user', 'legacy-vec', 1, 1700000000.0, NULL)"
            )
            for key in VERSION_KEYS:
                bumped = conn.execute("UPDATE meta SET value = value + 1 WHERE key = ?", (key,))
                assert bumped.rowcount == 1, f"no {key!r} in meta: has the schema changed?"
        if rows in ("event", "both"):
            conn.executemany(
                "INSERT INTO events (user_id, item_id, event_type, event_time, weight) "
                "VALUES (?, 'dracula', 1, ?, NULL)",
                [("legacy-time", 1700000000.0), ("legacy-time", 253402300800.0)],
            )


@pytest.mark.parametrize("rows", ["vector", "event", "both"])
def test_bad_rows_of_an_older_version_are_skipped(deployment: Deployment, rows: str) -> None:
    deployment.discard()
    data_dir = deployment.fresh_copy()
    write_old_rows(data_dir / STORE_FILE, deployment.dim, rows)
    restarted = deployment.start(data_dir)
    problems = user_checks(restarted, SAMPLE_USERS)
    if rows in ("vector", "both"):
        problems += victim_problems(restarted, "users/legacy-vec-user", "items/legacy-vec")
    if rows in ("event", "both"):
        problems += victim_problems(restarted, "users/legacy-time", "items/dracula")
    log = restarted.log_path.read_text(errors="replace")
    named = [name for name in ("legacy-vec", "legacy-time") if name in log]
    SUMMARY.append(f"bad {rows} rows: server started; its log names {named or 'no bad row'}")
    deployment.discard()
    assert not problems, restarted.explain(problems)
