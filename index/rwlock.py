"""A fair readers-writer lock; the standard library has none."""

from __future__ import annotations

import contextlib
import threading
from collections import deque
from collections.abc import Callable, Iterator

__all__ = ["RWLock"]


@contextlib.contextmanager
def _holding(acquire: Callable[[], None], release: Callable[[], None]) -> Iterator[None]:
    acquire()
    try:
        yield
    finally:
        release()


class _Waiter:
    __slots__ = ("writer",)

    def __init__(self, *, writer: bool) -> None:
        self.writer = writer


class RWLock:
    """Any number of readers, or one writer, admitted in arrival order.

    Waiting threads queue first-come first-served: a reader waits only for writers that
    arrived before it (and the active one), a writer for everyone ahead of it and for the
    active readers. So a waiting writer holds back readers that arrive after it (a stream of
    queries cannot starve an upsert), and a thread that releases and asks again goes to the back
    of the queue (a loop of upserts cannot starve queries). Not re-entrant on either side: a
    thread asking again for a lock it holds would deadlock behind a waiter, so it gets
    RuntimeError instead.
    """

    def __init__(self) -> None:
        self._condition = threading.Condition(threading.Lock())
        self._queue: deque[_Waiter] = deque()
        self._reader_threads: set[int] = set()
        self._writer: int | None = None

    # Snapshots for diagnostics and tests; they may be stale as soon as they are returned.
    @property
    def readers(self) -> int:
        with self._condition:
            return len(self._reader_threads)

    @property
    def readers_waiting(self) -> int:
        with self._condition:
            return sum(not waiter.writer for waiter in self._queue)

    @property
    def writer_active(self) -> bool:
        with self._condition:
            return self._writer is not None

    @property
    def writers_waiting(self) -> int:
        with self._condition:
            return sum(waiter.writer for waiter in self._queue)

    def acquire_read(self) -> None:
        me = threading.get_ident()
        with self._condition:
            self._wait_turn(me, _Waiter(writer=False))
            self._reader_threads.add(me)

    def release_read(self) -> None:
        with self._condition:
            try:
                self._reader_threads.remove(threading.get_ident())
            except KeyError:
                raise RuntimeError("release_read by a thread that holds no read lock") from None
            if not self._reader_threads:
                self._condition.notify_all()

    def acquire_write(self) -> None:
        me = threading.get_ident()
        with self._condition:
            self._wait_turn(me, _Waiter(writer=True))
            self._writer = me

    def release_write(self) -> None:
        with self._condition:
            if self._writer != threading.get_ident():
                raise RuntimeError("release_write by a thread that holds no write lock")
            self._writer = None
            self._condition.notify_all()

    def read(self) -> contextlib.AbstractContextManager[None]:
        """Hold the shared side for the ``with`` block."""
        return _holding(self.acquire_read, self.release_read)

    def write(self) -> contextlib.AbstractContextManager[None]:
        """Hold the exclusive side for the ``with`` block."""
        return _holding(self.acquire_write, self.release_write)

    def _wait_turn(self, me: int, waiter: _Waiter) -> None:
        """Queue ``waiter`` and wait (holding the condition) until it may take the lock."""
        if self._writer == me or me in self._reader_threads:
            raise RuntimeError("RWLock is not re-entrant: this thread already holds it")
        self._queue.append(waiter)
        entered = False
        try:
            while not self._may_enter(waiter):
                self._condition.wait()
            entered = True
        finally:
            self._queue.remove(waiter)
            # A waiter that entered holds back everyone it held back while queued; one that
            # gave up (KeyboardInterrupt while waiting) may have been the only obstacle.
            if not entered:
                self._condition.notify_all()

    def _may_enter(self, waiter: _Waiter) -> bool:
        if self._writer is not None:
            return False
        if waiter.writer:
            return not self._reader_threads and self._queue[0] is waiter
        for ahead in self._queue:
            if ahead is waiter:
                return True
            if ahead.writer:
                return False
        raise AssertionError("waiter is not queued")  # pragma: no cover
