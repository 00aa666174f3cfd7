from __future__ import annotations

import os
from pathlib import Path
from typing import BinaryIO

import numpy as np
import pytest

from index.atomic import atomic_write, atomic_write_with, leftover_temp_files


def test_atomic_write_creates_and_replaces(tmp_path: Path) -> None:
    target = tmp_path / "state.json"
    atomic_write(target, b'{"version": 1}')
    assert target.read_bytes() == b'{"version": 1}'
    atomic_write(target, b"")
    assert target.read_bytes() == b""
    assert list(leftover_temp_files(target)) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state.json"]


def test_failed_write_keeps_the_old_file_and_no_temp(tmp_path: Path) -> None:
    target = tmp_path / "model.npz"
    atomic_write(target, b"old")

    def half_then_fail(handle: BinaryIO) -> None:
        handle.write(b"half of the new")
        raise RuntimeError("writer died")

    with pytest.raises(RuntimeError, match="writer died"):
        atomic_write_with(target, half_then_fail)
    assert target.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.npz"]


def test_failed_rename_keeps_the_old_file_and_no_temp(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "state.json"
    atomic_write(target, b"old")

    def fail(src: object, dst: object) -> None:
        raise OSError("disk on fire")

    monkeypatch.setattr(os, "replace", fail)
    with pytest.raises(OSError, match="disk on fire"):
        atomic_write(target, b"new")
    monkeypatch.undo()
    assert target.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state.json"]


def test_streaming_writer_round_trips_npz(tmp_path: Path) -> None:
    target = tmp_path / "vectors.npz"
    vectors = np.arange(12, dtype=np.float32).reshape(3, 4)
    atomic_write_with(target, lambda handle: np.savez(handle, vectors=vectors))
    with np.load(target) as loaded:
        assert np.array_equal(loaded["vectors"], vectors)


def test_leftover_temp_files_are_only_those_of_the_target(tmp_path: Path) -> None:
    target = tmp_path / "index.json"
    mine = tmp_path / f".index.json.{'0' * 32}.tmp"
    other = tmp_path / f".other.json.{'0' * 32}.tmp"
    for path in (target, mine, other):
        path.write_bytes(b"x")
    assert list(leftover_temp_files(target)) == [mine]
