from __future__ import annotations

import threading
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from numpy.typing import NDArray

from index import HnswIndex

from .sync_helpers import HANG, Worker, wait_until

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


# ------------------------------------------------------------------------------------------
# Which operations share the lock, shown deterministically: a query is held inside hnswlib's
# knn_query (in its filter callback) while another thread tries to get in.


def _vectors(n: int, seed: int) -> NDArray[np.float32]:
    return np.random.default_rng(seed).normal(size=(n, DIM)).astype(np.float32)


def _full_index(n: int = 64) -> HnswIndex:
    # Exactly full, so the next new id makes upsert call resize_index.
    index = HnswIndex(DIM, m=8, ef_search=16, initial_capacity=n)
    index.upsert([f"item-{i}" for i in range(n)], _vectors(n, seed=1))
    return index


# What hnswlib documents as unsafe to run alongside knn_query.
_MUTATORS = frozenset({"add_items", "mark_deleted", "unmark_deleted", "resize_index", "set_ef"})


class _Native:
    """Stands in for the native index: records mutating calls and knn_query, and runs
    ``inside_query`` from within knn_query (once a call, from the filter hnswlib calls during
    its graph walk, so the query really is inside hnswlib at that moment)."""

    def __init__(self, native: Any, inside_query: Callable[[], None] = lambda: None) -> None:
        self._native = native
        self._inside_query = inside_query
        self.calls: list[str] = []

    def __getattr__(self, name: str) -> Any:
        method = getattr(self._native, name)
        if name not in _MUTATORS:
            return method

        def recorded(*args: Any, **kwargs: Any) -> Any:
            self.calls.append(name)
            return method(*args, **kwargs)

        return recorded

    def knn_query(self, data: Any, k: int = 1, num_threads: int = -1, filter: Any = None) -> Any:
        entered = False

        def gate(label: int) -> bool:
            nonlocal entered
            if not entered:
                entered = True
                self._inside_query()
            return filter is None or bool(filter(label))

        try:
            return self._native.knn_query(data, k=k, num_threads=num_threads, filter=gate)
        finally:
            self.calls.append("knn_query")


class _HeldQuery:
    """A query that stays inside knn_query until released."""

    def __init__(self, index: HnswIndex) -> None:
        self.inside = threading.Event()
        self._release = threading.Event()
        self.native = _Native(index._index, inside_query=self._hold)
        index._index = self.native
        self.worker = Worker(lambda: index.query(_vectors(1, seed=2)[0], 5))
        assert self.inside.wait(HANG), "the query never reached knn_query"

    def _hold(self) -> None:
        self.inside.set()
        self._release.wait(HANG)

    def release(self) -> object:
        self._release.set()
        return self.worker.join()


def test_queries_run_concurrently() -> None:
    index = _full_index()
    both_inside = threading.Barrier(2, timeout=HANG)
    met: list[bool] = []

    def meet() -> None:
        # Each query waits inside knn_query until the other one is inside too; if queries
        # were serialised the barrier would break and ``met`` would stay short.
        both_inside.wait()
        met.append(True)

    index._index = _Native(index._index, inside_query=meet)
    queries = _vectors(2, seed=3)
    workers = [Worker(partial(index.query, query, 5)) for query in queries]
    results = [worker.join() for worker in workers]
    assert met == [True, True]
    assert all(isinstance(r, list) and len(r) == 5 for r in results)


def _upsert_new(index: HnswIndex) -> None:
    index.upsert(["new"], _vectors(1, seed=4))


@pytest.mark.parametrize(
    ("write", "native_calls"),
    [
        (_upsert_new, ["resize_index", "add_items"]),
        (lambda index: index.upsert(["item-0"], _vectors(1, seed=4)), ["add_items"]),
        (lambda index: index.delete(["item-0"]), ["mark_deleted"]),
        (lambda index: index.set_ef(32), ["set_ef"]),
    ],
    ids=["upsert-resize", "upsert-replace", "delete", "set_ef"],
)
def test_writers_wait_for_an_in_flight_query(
    write: Callable[[HnswIndex], None], native_calls: list[str]
) -> None:
    index = _full_index()
    held = _HeldQuery(index)
    writer = Worker(lambda: write(index))
    wait_until(lambda: index._lock.writers_waiting == 1, "writer queued behind the query")
    assert held.native.calls == []  # the writer has not touched hnswlib yet
    held.release()
    writer.join()
    assert held.native.calls == ["knn_query", *native_calls]


def test_reads_and_save_run_while_a_query_is_in_flight(tmp_path: Path) -> None:
    index = _full_index()
    held = _HeldQuery(index)
    # Each of these would wait for the held query if it took the exclusive side.
    assert len(index) == 64
    assert "item-3" in index
    assert len(index.ids()) == 64
    assert index.get_vectors(["item-3"]).shape == (1, DIM)
    assert len(index.exact_query(_vectors(1, seed=5)[0], 3)) == 3
    index.save(tmp_path)
    assert not held.worker.done.is_set()
    result = held.release()
    assert isinstance(result, list) and len(result) == 5
    loaded = HnswIndex.load(tmp_path)
    assert loaded is not None
    assert loaded.ids() == index.ids()


def test_exclusions_widen_the_search_without_set_ef() -> None:
    # ef_search=16 with k=10 and 40 exclusions needs a search breadth of 50.
    index = _full_index(n=600)
    native = _Native(index._index)
    index._index = native
    excluded = {f"item-{i}" for i in range(40)}
    queries = _vectors(20, seed=6)
    shared = [index.query(q, 10, exclude=excluded) for q in queries]
    assert "set_ef" not in native.calls  # so it never changed what other queries search with
    for query, answer in zip(queries, shared, strict=True):
        with index._lock.write():
            reference = index._search(query, 10, excluded, exclusive=True)
        assert answer == reference
        assert len(answer) == 10
        assert not excluded & {item_id for item_id, _ in answer}
    assert native.calls.count("set_ef") == 2 * len(queries)  # widened, then restored


def test_exclusions_larger_than_the_rest_fall_back_to_set_ef() -> None:
    # 30 items, 12 excluded: a breadth of 10 + 12 results cannot come out of 18 eligible items.
    index = _full_index(n=30)
    native = _Native(index._index)
    index._index = native
    excluded = {f"item-{i}" for i in range(12)}
    query = _vectors(1, seed=7)[0]
    answer = index.query(query, 10, exclude=excluded)
    assert native.calls.count("set_ef") == 2
    assert index._index.ef == 16
    assert [i for i, _ in answer] == [i for i, _ in index.exact_query(query, 10, exclude=excluded)]


def test_exclusions_pass_no_python_filter_to_hnswlib() -> None:
    # hnswlib calls a filter= back under the GIL for every element it visits, so queries with
    # one queued on the GIL behind the server's other threads; a few exclusions need none.
    index = _full_index(n=600)
    native = index._index
    filters: list[object] = []

    class Spy:
        def __getattr__(self, name: str) -> object:
            return getattr(native, name)

        def knn_query(self, data: object, k: int, num_threads: int, filter: object = None) -> Any:
            filters.append(filter)
            return native.knn_query(data, k=k, num_threads=num_threads, filter=filter)

    index._index = Spy()
    excluded = {f"item-{i}" for i in range(40)}
    for query in _vectors(10, seed=8):
        answer = index.query(query, 10, exclude=excluded)
        assert len(answer) == 10
        assert not excluded & {item_id for item_id, _ in answer}
    assert filters and all(f is None for f in filters)
