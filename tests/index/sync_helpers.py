"""Deterministic thread choreography for the concurrency tests: no test asserts on time.

A deadline here only turns a hang (the bug under test) into a failure instead of a stuck run.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

HANG = 30.0  # seconds after which a wait that should end is declared stuck


def wait_until(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + HANG
    while not condition():
        assert time.monotonic() < deadline, f"never happened: {what}"
        time.sleep(0.001)


class Worker:
    """Runs ``target`` on its own thread and keeps what it returned or raised."""

    def __init__(self, target: Callable[[], object], name: str | None = None) -> None:
        self.done = threading.Event()
        self.result: object = None
        self.error: BaseException | None = None
        self._target = target
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            self.result = self._target()
        except BaseException as exc:  # re-raised by join()
            self.error = exc
        finally:
            self.done.set()

    def join(self) -> object:
        self._thread.join(HANG)
        assert not self._thread.is_alive(), "worker thread is stuck"
        if self.error is not None:
            raise self.error
        return self.result
