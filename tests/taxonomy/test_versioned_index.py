"""VersionedIndex, the item and label indexes' cache of stored vectors: opening never fails."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
from numpy.typing import NDArray

from index.versioned import VersionedIndex

DIM = 4


def stored() -> tuple[list[str], NDArray[np.float32]]:
    rows = {
        "good": [1.0, 0.0, 0.0, 0.0],
        "zero": [0.0, 0.0, 0.0, 0.0],
        "nan": [np.nan, 1.0, 0.0, 0.0],
        "inf": [np.inf, 1.0, 0.0, 0.0],
        "fine": [0.0, 1.0, 0.0, 0.0],
    }
    return list(rows), np.asarray(list(rows.values()), dtype=np.float32)


def test_a_rebuild_skips_and_names_vectors_the_index_cannot_hold(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cache = VersionedIndex(tmp_path / "items", DIM, ef_search=16)
    with caplog.at_level(logging.ERROR, logger="index.versioned"):
        cache.load_or_rebuild((1,), stored)
    assert sorted(cache.index.ids()) == ["fine", "good"]
    logged = " ".join(record.getMessage() for record in caplog.records)
    assert all(repr(item_id) in logged for item_id in ("zero", "nan", "inf"))


def test_vectors_of_another_dimension_are_skipped(tmp_path: Path) -> None:
    cache = VersionedIndex(tmp_path / "items", DIM + 1, ef_search=16)
    cache.load_or_rebuild((1,), stored)
    assert len(cache.index) == 0


def test_an_unreadable_saved_index_is_rebuilt(tmp_path: Path) -> None:
    def usable() -> tuple[list[str], NDArray[np.float32]]:
        _, matrix = stored()
        return ["good", "fine"], matrix[[0, 4]]

    cache = VersionedIndex(tmp_path / "items", DIM, ef_search=16)
    cache.load_or_rebuild((1,), usable)
    for path in (tmp_path / "items").iterdir():
        if path.suffix in (".json", ".bin") and path.name != "store_version.json":
            path.write_bytes(b"\x00garbage")
    again = VersionedIndex(tmp_path / "items", DIM, ef_search=16)
    again.load_or_rebuild((1,), usable)  # same version: it would load, but cannot
    assert sorted(again.index.ids()) == ["fine", "good"]
