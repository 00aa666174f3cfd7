"""An HnswIndex kept on disk as a cache of vectors whose source of truth lives elsewhere.

The folder holds the index files and the source version they reflect (a tuple of counters the
caller reads from its store). On open, an index whose recorded version differs from the
source's (after a crash between the source's commit and the index save, for instance) is
rebuilt from the source's vectors, so a kill never loses an acknowledged write.

Opening never fails on the cache's account: unreadable index files are rebuilt, and a stored
vector the index cannot hold (wrong length, non-finite, no direction) is skipped and logged
with its id, so one bad row never keeps the service from starting.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from index.atomic import atomic_write
from index.hnsw import CorruptIndexError, HnswIndex, Space

__all__ = ["VersionedIndex"]

logger = logging.getLogger(__name__)

VERSION_FILE = "store_version.json"

VectorSource = Callable[[], tuple[list[str], NDArray[np.float32]]]


class VersionedIndex:
    """`index` is replaced only by `load_or_rebuild`; `dirty` says it changed since its save."""

    def __init__(self, directory: Path, dim: int, ef_search: int, space: Space = "cosine") -> None:
        self.directory = directory
        self.dim = dim
        self.ef_search = ef_search
        self.space: Space = space
        self.index = HnswIndex(dim, space=space, ef_search=ef_search)
        self.dirty = False

    @property
    def name(self) -> str:
        return self.directory.name

    def load_or_rebuild(self, version: tuple[int, ...], vectors: VectorSource) -> None:
        """Loads the saved index if it reflects `version`, else rebuilds it from `vectors()`."""
        loaded = self._load_matching(version)
        if loaded is not None:
            self.index = loaded
            return
        self.rebuild(version, vectors)

    def _load_matching(self, version: tuple[int, ...]) -> HnswIndex | None:
        marker = self.directory / VERSION_FILE
        if not marker.exists():
            return None
        try:
            recorded = tuple(json.loads(marker.read_text())["version"])
            loaded = HnswIndex.load(self.directory) if recorded == version else None
        except (CorruptIndexError, OSError, ValueError, KeyError, TypeError) as error:
            logger.error("index %s cannot be loaded (%s); rebuilding it", self.name, error)
            return None
        if loaded is None or loaded.dim != self.dim or loaded.space != self.space:
            return None
        loaded.set_ef(self.ef_search)
        return loaded

    def rebuild(self, version: tuple[int, ...], vectors: VectorSource) -> None:
        """Replaces the index with one holding every usable vector of `vectors()`, and saves it."""
        ids, matrix = vectors()
        ids, matrix = self._usable(ids, matrix)
        index = HnswIndex(
            self.dim,
            space=self.space,
            ef_search=self.ef_search,
            initial_capacity=max(1024, len(ids)),
        )
        try:
            if ids:
                index.upsert(ids, matrix)
        except ValueError as error:
            # Not expected after _usable; one at a time so only the vector at fault is lost.
            logger.error(
                "index %s refused a batch (%s); adding vectors one by one", self.name, error
            )
            for item_id, row in zip(ids, matrix, strict=True):
                try:
                    index.upsert([item_id], row[None, :])
                except ValueError as row_error:
                    logger.error("skipping stored vector of %r: %s", item_id, row_error)
        self.index = index
        logger.info("rebuilt index %s from %d stored vectors", self.name, len(index))
        self.save(version)

    def check(self, matrix: NDArray[np.float32]) -> NDArray[np.bool_]:
        """Which rows of `matrix` this index accepts: the checks `HnswIndex.upsert` applies
        (`index.validation.check_matrix`), row by row."""
        if matrix.ndim != 2 or matrix.shape[1] != self.dim:
            return np.zeros(matrix.shape[0] if matrix.ndim else 0, dtype=np.bool_)
        with np.errstate(over="ignore", invalid="ignore"):
            good = np.asarray(np.isfinite(matrix).all(axis=1), dtype=np.bool_)
            if self.space == "cosine":
                good &= np.linalg.norm(matrix, axis=1) != 0
        return good

    def _usable(
        self, ids: list[str], matrix: NDArray[np.float32]
    ) -> tuple[list[str], NDArray[np.float32]]:
        if not ids:
            return [], np.zeros((0, self.dim), dtype=np.float32)
        matrix = np.asarray(matrix, dtype=np.float32)
        good = self.check(matrix)
        for item_id, ok in zip(ids, good, strict=True):
            if not ok:
                logger.error(
                    "index %s skips the stored vector of %r: wrong length, non-finite or zero",
                    self.name,
                    item_id,
                )
        kept = [item_id for item_id, ok in zip(ids, good, strict=True) if ok]
        rows = matrix[good] if kept else np.zeros((0, self.dim), dtype=np.float32)
        return kept, rows

    def save(self, version: tuple[int, ...]) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        self.index.save(self.directory)
        atomic_write(self.directory / VERSION_FILE, json.dumps({"version": list(version)}).encode())
        self.dirty = False

    def bytes_on_disk(self) -> int:
        """Bytes of the index's files as of its last save."""
        try:
            return sum(path.stat().st_size for path in self.directory.iterdir() if path.is_file())
        except FileNotFoundError:
            return 0
