from __future__ import annotations

import json
import os
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from numpy.typing import NDArray

from index import CorruptIndexError, HnswIndex
from index.hnsw import SIDECAR_NAME


def _vectors(n: int, dim: int, seed: int = 0) -> NDArray[np.float32]:
    return np.random.default_rng(seed).normal(size=(n, dim)).astype(np.float32)


def _ids(n: int) -> list[str]:
    return [f"item-{i}" for i in range(n)]


def _built(n: int = 400, dim: int = 16) -> HnswIndex:
    index = HnswIndex(dim, space="cosine", m=8, ef_construction=100, initial_capacity=64)
    index.upsert(_ids(n), _vectors(n, dim))
    index.delete(_ids(n)[::10])
    index.set_ef(37)
    return index


def _answers(index: HnswIndex, dim: int = 16) -> list[list[tuple[str, float]]]:
    queries = _vectors(25, dim, seed=99)
    return [index.query(q, 10) for q in queries] + [
        index.query(q, 5, exclude=["item-1", "item-2", "item-3"]) for q in queries
    ]


def _binaries(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.glob("index-*.bin"))


def test_load_from_nothing_returns_none(tmp_path: Path) -> None:
    assert HnswIndex.load(tmp_path) is None
    assert HnswIndex.load(tmp_path / "missing") is None


def test_round_trip_gives_identical_answers_and_restores_ef(tmp_path: Path) -> None:
    original = _built()
    original.save(tmp_path)
    loaded = HnswIndex.load(tmp_path)
    assert loaded is not None
    assert loaded.params == original.params
    assert loaded.params.ef_search == 37
    # hnswlib itself forgets ef on load (it comes back as 10); the wrapper must set it again.
    assert loaded._index.ef == 37
    assert len(loaded) == len(original)
    assert loaded.ids() == original.ids()
    assert "item-0" not in loaded
    assert loaded.capacity == original.capacity
    assert _answers(loaded) == _answers(original)
    assert np.array_equal(loaded.get_vectors(["item-5"]), original.get_vectors(["item-5"]))


def test_loaded_index_keeps_working(tmp_path: Path) -> None:
    _built().save(tmp_path)
    loaded = HnswIndex.load(tmp_path)
    assert loaded is not None
    before = len(loaded)
    fresh = _vectors(3, 16, seed=5)
    loaded.upsert(["new-a", "item-0", "item-1"], fresh)
    assert len(loaded) == before + 2
    assert loaded.query(fresh[0], 1)[0][0] == "new-a"
    assert loaded.query(fresh[1], 1)[0][0] == "item-0"


def test_save_replaces_and_cleans_up(tmp_path: Path) -> None:
    index = _built()
    index.save(tmp_path)
    first = _binaries(tmp_path)
    index.upsert(["extra"], _vectors(1, 16, seed=3))
    index.save(tmp_path)
    second = _binaries(tmp_path)
    assert len(first) == len(second) == 1
    assert first != second
    sidecar = json.loads((tmp_path / SIDECAR_NAME).read_text())
    assert sidecar["binary"] == second[0]
    assert not list(tmp_path.glob(f".{SIDECAR_NAME}.*"))
    loaded = HnswIndex.load(tmp_path)
    assert loaded is not None
    assert "extra" in loaded


def test_crash_before_commit_leaves_old_index_loadable(tmp_path: Path) -> None:
    index = _built()
    index.save(tmp_path)
    expected = _answers(index)
    # What a crash after writing the new binary but before replacing the sidecar leaves behind.
    (tmp_path / f"index-{uuid.uuid4().hex}.bin").write_bytes(b"junk" * 1000)
    (tmp_path / f".{SIDECAR_NAME}.{uuid.uuid4().hex}.tmp").write_text("{half")
    loaded = HnswIndex.load(tmp_path)
    assert loaded is not None
    assert _answers(loaded) == expected
    loaded.save(tmp_path)
    assert len(_binaries(tmp_path)) == 1
    assert not list(tmp_path.glob(f".{SIDECAR_NAME}.*"))


def test_failed_commit_keeps_old_index_and_removes_new_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    index = _built()
    index.save(tmp_path)
    expected = _answers(index)
    old_binaries = _binaries(tmp_path)
    index.upsert(["extra"], _vectors(1, 16, seed=3))

    def fail(src: object, dst: object) -> None:
        raise OSError("disk on fire")

    monkeypatch.setattr(os, "replace", fail)
    with pytest.raises(OSError, match="disk on fire"):
        index.save(tmp_path)
    monkeypatch.undo()
    assert _binaries(tmp_path) == old_binaries
    assert not list(tmp_path.glob(f".{SIDECAR_NAME}.*"))
    loaded = HnswIndex.load(tmp_path)
    assert loaded is not None
    assert "extra" not in loaded
    assert _answers(loaded) == expected


def test_corrupt_sidecar_is_rejected(tmp_path: Path) -> None:
    _built().save(tmp_path)
    sidecar_path = tmp_path / SIDECAR_NAME
    good = json.loads(sidecar_path.read_text())

    mutations: list[Callable[[dict[str, Any]], None]] = [
        lambda s: s.update(surprise=1),
        lambda s: s["params"].update(surprise=1),
        lambda s: s.update(element_count=s["element_count"] + 1),
        lambda s: s.update(binary="../elsewhere.bin"),
        lambda s: s.update(dim=s["dim"] + 1),
        lambda s: s.update(deleted=["never-seen"]),
    ]
    for mutate in mutations:
        broken = json.loads(json.dumps(good))
        mutate(broken)
        sidecar_path.write_text(json.dumps(broken))
        with pytest.raises(CorruptIndexError):
            HnswIndex.load(tmp_path)

    sidecar_path.write_text("{not json")
    with pytest.raises(ValueError, match="invalid"):
        HnswIndex.load(tmp_path)


def test_missing_or_truncated_binary_is_rejected(tmp_path: Path) -> None:
    _built().save(tmp_path)
    [binary] = list(tmp_path.glob("index-*.bin"))
    binary.write_bytes(binary.read_bytes()[:1000])
    with pytest.raises(CorruptIndexError):
        HnswIndex.load(tmp_path)
    binary.unlink()
    with pytest.raises(CorruptIndexError):
        HnswIndex.load(tmp_path)


def test_empty_index_round_trip(tmp_path: Path) -> None:
    HnswIndex(8, space="l2").save(tmp_path)
    loaded = HnswIndex.load(tmp_path)
    assert loaded is not None
    assert len(loaded) == 0
    assert loaded.params.space == "l2"
    assert loaded.query(np.ones(8), 3) == []


class _ShortWritingIndex:
    """Stands in for the native index to mimic hnswlib's unchecked write on a full disk."""

    def __init__(self, native: Any) -> None:
        self._native = native

    def __getattr__(self, name: str) -> Any:
        return getattr(self._native, name)

    def save_index(self, path: str) -> None:
        self._native.save_index(path)
        with open(path, "r+b") as handle:
            handle.truncate(os.path.getsize(path) - 7)


def test_silently_short_binary_is_never_committed(tmp_path: Path) -> None:
    index = _built()
    index.save(tmp_path)
    expected = _answers(index)
    old_binaries = _binaries(tmp_path)
    index.upsert(["extra"], _vectors(1, 16, seed=3))
    index._index = _ShortWritingIndex(index._index)
    with pytest.raises(OSError, match=r"index-[0-9a-f]+\.bin"):
        index.save(tmp_path)
    assert _binaries(tmp_path) == old_binaries
    loaded = HnswIndex.load(tmp_path)
    assert loaded is not None
    assert "extra" not in loaded
    assert _answers(loaded) == expected
