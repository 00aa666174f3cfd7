from __future__ import annotations

import threading
from typing import Literal

import pytest

from index.rwlock import RWLock

from .sync_helpers import Worker, wait_until


def test_readers_share_the_lock() -> None:
    lock = RWLock()
    both_inside = threading.Barrier(2, timeout=30)

    def read() -> None:
        with lock.read():
            # Each reader waits here for the other: only readers that share the lock get past.
            both_inside.wait()

    workers = [Worker(read), Worker(read)]
    for worker in workers:
        worker.join()
    assert lock.readers == 0


def _queue_up(
    lock: RWLock, side: Literal["read", "write"], events: list[str], label: str
) -> Worker:
    """A thread that appends ``label`` to ``events`` while it holds ``side`` of ``lock``.

    Returns once the thread is waiting in the lock's queue (the caller holds the lock).
    """
    hold = lock.write if side == "write" else lock.read

    def waiting() -> int:
        return lock.writers_waiting if side == "write" else lock.readers_waiting

    def run() -> None:
        with hold():
            events.append(label)

    before = waiting()
    worker = Worker(run)
    wait_until(lambda: waiting() == before + 1, f"{label} queued")
    return worker


def test_writer_waits_for_readers_and_excludes_them() -> None:
    lock = RWLock()
    events: list[str] = []
    lock.acquire_read()
    writer = _queue_up(lock, "write", events, "write")
    assert events == []
    events.append("read released")
    lock.release_read()
    writer.join()
    assert events == ["read released", "write"]
    assert not lock.writer_active


def test_waiting_writer_holds_back_new_readers() -> None:
    lock = RWLock()
    events: list[str] = []
    lock.acquire_read()
    writer = _queue_up(lock, "write", events, "write")
    # Without writer preference the late reader would join the reader still holding the lock.
    late_reader = _queue_up(lock, "read", events, "late read")
    assert events == []
    lock.release_read()
    writer.join()
    late_reader.join()
    assert events == ["write", "late read"]


def test_readers_wait_for_an_active_writer() -> None:
    lock = RWLock()
    events: list[str] = []
    lock.acquire_write()
    reader = _queue_up(lock, "read", events, "read")
    events.append("write released")
    lock.release_write()
    reader.join()
    assert events == ["write released", "read"]


def test_not_reentrant_and_misuse_is_an_error() -> None:
    lock = RWLock()
    with lock.read():
        with pytest.raises(RuntimeError, match="re-entrant"):
            lock.acquire_read()
        with pytest.raises(RuntimeError, match="re-entrant"):
            lock.acquire_write()
    with lock.write():
        with pytest.raises(RuntimeError, match="re-entrant"):
            lock.acquire_read()
        with pytest.raises(RuntimeError, match="re-entrant"):
            lock.acquire_write()
    with pytest.raises(RuntimeError, match="holds no read lock"):
        lock.release_read()
    with pytest.raises(RuntimeError, match="holds no write lock"):
        lock.release_write()
    assert (lock.readers, lock.readers_waiting, lock.writers_waiting) == (0, 0, 0)
    assert not lock.writer_active


def test_release_by_another_thread_is_refused() -> None:
    lock = RWLock()
    lock.acquire_write()
    with pytest.raises(RuntimeError, match="holds no write lock"):
        Worker(lock.release_write).join()
    lock.release_write()


@pytest.mark.parametrize("waiting", ["write", "read"])
def test_a_writer_that_asks_again_queues_behind_those_waiting(
    waiting: Literal["read", "write"],
) -> None:
    lock = RWLock()
    events: list[str] = []
    lock.acquire_write()
    others = [_queue_up(lock, waiting, events, "other") for _ in range(2)]
    lock.release_write()
    lock.acquire_write()  # must not barge in ahead of the threads that were already waiting
    events.append("first writer again")
    lock.release_write()
    for other in others:
        other.join()
    assert events == ["other", "other", "first writer again"]


def test_a_writer_that_gives_up_lets_the_readers_behind_it_go() -> None:
    lock = RWLock()
    give_up = threading.Event()
    original_wait = lock._condition.wait

    def wait(timeout: float | None = None) -> bool:
        if threading.current_thread().name != "impatient writer":
            return original_wait(timeout)
        while not give_up.is_set():
            original_wait(0.001)
        raise KeyboardInterrupt

    lock._condition.wait = wait  # type: ignore[method-assign]
    lock.acquire_read()
    writer = Worker(lock.acquire_write, name="impatient writer")
    wait_until(lambda: lock.writers_waiting == 1, "writer queued")
    late_reader = _queue_up(lock, "read", [], "late reader")
    give_up.set()
    with pytest.raises(KeyboardInterrupt):
        writer.join()
    # Nobody else would wake the late reader: the first reader still holds the lock.
    late_reader.join()
    assert (lock.readers, lock.readers_waiting, lock.writers_waiting) == (1, 0, 0)
    lock.release_read()
