from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from index import HnswIndex

DIM = 16
WRITERS = 4
PER_WRITER = 300
BATCH = 10
EXCLUDED = frozenset(f"w0-{i}" for i in range(5))


def _run_all(targets: list[Callable[[], None]]) -> list[BaseException]:
    errors: list[BaseException] = []
    start = threading.Barrier(len(targets))

    def wrap(target: Callable[[], None]) -> Callable[[], None]:
        def run() -> None:
            start.wait()
            try:
                target()
            except BaseException as exc:  # surfaced by the assertion in the test
                errors.append(exc)

        return run

    threads = [threading.Thread(target=wrap(t)) for t in targets]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
        assert not thread.is_alive()
    return errors


@pytest.mark.timeout(180)
def test_concurrent_upserts_queries_and_deletes(tmp_path: Path) -> None:
    # A tiny initial capacity forces resize_index to run while other threads query.
    index = HnswIndex(DIM, initial_capacity=8)
    done = threading.Event()

    def writer(worker: int) -> Callable[[], None]:
        def run() -> None:
            rng = np.random.default_rng(worker)
            for start in range(0, PER_WRITER, BATCH):
                ids = [f"w{worker}-{i}" for i in range(start, start + BATCH)]
                index.upsert(ids, rng.normal(size=(BATCH, DIM)).astype(np.float32))
                if start % 50 == 0:
                    # Deleting and re-upserting the same ids exercises the revive path.
                    index.delete(ids[:2])
                    index.upsert(ids[:2], rng.normal(size=(2, DIM)).astype(np.float32))

        return run

    def reader(seed: int) -> Callable[[], None]:
        def run() -> None:
            rng = np.random.default_rng(1000 + seed)
            while not done.is_set():
                query = rng.normal(size=DIM).astype(np.float32)
                live = len(index)
                result = index.query(query, 10, exclude=EXCLUDED)
                assert len(result) <= 10
                assert not EXCLUDED & {item_id for item_id, _ in result}
                # Concurrent deletes can only shrink the live set by a few ids at a time.
                if live >= 10 + len(EXCLUDED) + 2 * WRITERS:
                    assert len(result) == 10
                index.exact_query(query, 5)

        return run

    def saver() -> None:
        while not done.is_set():
            index.save(tmp_path)

    writers = [writer(w) for w in range(WRITERS)]

    def writers_then_stop() -> None:
        errors = _run_all(writers)
        done.set()
        if errors:
            raise errors[0]

    errors = _run_all([writers_then_stop, reader(0), reader(1), reader(2), saver])
    assert errors == []
    assert len(index) == WRITERS * PER_WRITER
    assert len(set(index.ids())) == WRITERS * PER_WRITER
    index.save(tmp_path)
    loaded = HnswIndex.load(tmp_path)
    assert loaded is not None
    assert len(loaded) == WRITERS * PER_WRITER
