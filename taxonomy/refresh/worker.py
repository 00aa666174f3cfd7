"""Training the collaborative model in a spawned child process.

Training is mostly pure Python (reading every event into an `Event`, counting co-occurrences)
and would hold the GIL for seconds to minutes, so in the serving process it stalls every
request. The child opens the same store itself from a picklable `StoreSpec` (no event crosses
a pipe), trains, and replaces the model file atomically (`save_model`); the parent only waits,
then loads the file and swaps the model in. A child that dies (killed, out of memory, an
exception) never got to the rename, so the previous model file and the serving model stay.

The child is spawned, never forked: the server runs grpc.aio and worker threads, and a fork
copies their locks in whatever state they are in.
"""

from __future__ import annotations

import asyncio
import ctypes
import logging
import multiprocessing
import os
import signal
import sys
import threading
import time
import traceback
from collections.abc import Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import TYPE_CHECKING

from taxonomy.errors import UnavailableError
from taxonomy.events.history import is_interest
from taxonomy.models import Event
from taxonomy.ports import Store
from taxonomy.recommendation.collaborative_model import CollaborativeModel
from taxonomy.recommendation.collaborative_space import prebuilt_index, train_collaborative
from taxonomy.recommendation.model_files import save_index, save_model
from taxonomy.recommendation.spaces import TEXT_SPACE
from taxonomy.recommendation.training import CollaborativeConfig

if TYPE_CHECKING:
    from multiprocessing.process import BaseProcess

logger = logging.getLogger(__name__)

CHILD_NICENESS = 10
"""Added to the child's nice value, so that on a busy machine the scheduler gives serving
threads the CPU first and training takes what is left."""

_MAX_ERROR_CHARS = 4000


@dataclass(frozen=True)
class StoreSpec:
    """How to open a store again in another process: an SQLite file, or a PostgreSQL URL and
    schema (a tenant's own schema included)."""

    sqlite_path: str | None = None
    postgres_url: str | None = None
    postgres_schema: str | None = None

    def open(self) -> Store:
        if self.postgres_url is not None:
            from taxonomy.storage.postgres import PostgresStore

            return PostgresStore(
                self.postgres_url, schema=self.postgres_schema, min_connections=1, max_connections=1
            )
        if self.sqlite_path is None:
            raise ValueError("a StoreSpec names an SQLite path or a PostgreSQL URL")
        from taxonomy.storage.sqlite import SqliteStore

        return SqliteStore(Path(self.sqlite_path))


def spec_of(store: Store) -> StoreSpec | None:
    """The spec that opens `store` again, or None for a store another process cannot open
    (an in-memory test double): that one trains in process."""
    from taxonomy.storage.sqlite import SqliteStore

    if isinstance(store, SqliteStore):
        return StoreSpec(sqlite_path=str(store.path))
    # Only look for PostgreSQL when its module is loaded: importing it needs psycopg, and a
    # store of that class cannot exist without the module.
    postgres = sys.modules.get("taxonomy.storage.postgres")
    if postgres is not None and isinstance(store, postgres.PostgresStore):
        return StoreSpec(postgres_url=store.url, postgres_schema=store.schema)
    return None


@dataclass(frozen=True)
class TrainingJob:
    store: StoreSpec
    config: CollaborativeConfig
    models_dir: str
    pause_file: str | None = None
    """For tests only (None in service): the child writes its pid to this file after training
    and waits, before saving, until the file is deleted, so a test can kill it mid-way."""


def train_from_store(
    store: Store, config: CollaborativeConfig
) -> tuple[CollaborativeModel, int] | None:
    """The model trained on every event in `store`, with the event count it reflects; None
    when there are too few interest events to train anything."""
    # Count and sequences come from one snapshot so the model reflects exactly that count.
    sequences = [events for _, events in store.all_sequences()]
    event_count = sum(len(events) for events in sequences)
    # Dislikes and hides are no interest: they train nothing (taxonomy/events/history.py).
    interest: list[Sequence[Event]] = [
        [event for event in events if is_interest(event)] for events in sequences
    ]
    del sequences
    features = store.item_vectors(TEXT_SPACE)
    try:
        model = train_collaborative(interest, config, features)
    except ValueError:
        return None
    return model, event_count


def _train_and_save(job: TrainingJob) -> int | None:
    store = job.store.open()
    try:
        trained = train_from_store(store, job.config)
    finally:
        store.close()
    if trained is None:
        return None
    model, event_count = trained
    save_index(Path(job.models_dir), prebuilt_index(model))
    if job.pause_file is not None:
        _pause(Path(job.pause_file))
    save_model(Path(job.models_dir), model, event_count)
    return event_count


def _pause(path: Path) -> None:
    path.write_text(str(os.getpid()))
    while path.exists():
        time.sleep(0.05)


def _die_with_parent(parent: int) -> None:
    """Ends this process with the server's: an orphaned training would hold memory and CPU
    the restarted server needs, for a model nobody loads."""
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    if os.getppid() != parent:  # the parent died before the line above took effect
        os._exit(1)


def _leave_cpu_to_serving() -> None:
    os.nice(CHILD_NICENESS)
    from threadpoolctl import threadpool_limits  # type: ignore[import-untyped]

    # BLAS threads on every core would leave none for the server's request threads: one core
    # less keeps one free for serving while training takes the rest.
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    threadpool_limits(max(1, (cpus or 1) - 1))


def _child_main(job: TrainingJob, parent: int | None, results: Connection) -> None:
    if parent is not None:
        _die_with_parent(parent)
    _leave_cpu_to_serving()
    try:
        results.send(("trained", _train_and_save(job)))
    except BaseException:
        results.send(("failed", traceback.format_exc()[-_MAX_ERROR_CHARS:]))
        raise
    finally:
        results.close()


def _wait(process: BaseProcess, results: Connection) -> tuple[str, object] | None:
    """The child's message (None if it died without one), once the child has exited."""
    try:
        message: tuple[str, object] | None = results.recv()
    except EOFError:
        message = None
    finally:
        results.close()
    process.join()
    return message


async def train_in_child(job: TrainingJob) -> int | None:
    """Trains and saves the model in a spawned child: the event count it was trained on, or
    None when there were too few events. Raises UnavailableError when the child failed; the
    previous model file is then untouched. Cancelling kills the child."""
    # PR_SET_PDEATHSIG fires when the thread that started the child ends, not the process:
    # only a child started from the main thread can be tied to the server's life that way.
    on_main_thread = threading.current_thread() is threading.main_thread()
    context = multiprocessing.get_context("spawn")
    results, sender = context.Pipe(duplex=False)
    process = context.Process(
        target=_child_main,
        args=(job, os.getpid() if on_main_thread else None, sender),
        name="interest-tree-training",
        daemon=True,
    )
    process.start()
    sender.close()  # so the parent's recv sees EOF when the child dies without a message
    waiting = asyncio.ensure_future(asyncio.to_thread(_wait, process, results))
    try:
        message = await asyncio.shield(waiting)
    except asyncio.CancelledError:
        process.kill()
        await asyncio.wait({waiting})
        raise
    if message is not None and message[0] == "trained":
        outcome = message[1]
        assert outcome is None or isinstance(outcome, int)
        return outcome
    if message is None:
        why = f"the training process exited with code {process.exitcode}"
        logger.error("collaborative training failed: %s", why)
    else:
        why = "the training process raised an exception"
        logger.error("collaborative training failed in the child process:\n%s", message[1])
    raise UnavailableError(
        f"training the collaborative model failed ({why}); the previous model keeps serving",
        reason="MODEL_TRAINING_FAILED",
    )
