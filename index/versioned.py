"""An HnswIndex kept on disk as a cache of vectors whose source of truth lives elsewhere.

The folder holds the index files and the source version they reflect (a tuple of counters the
caller reads from its store). On open, an index whose recorded version differs from the
source's (after a crash between the source's commit and the index save, for instance) is
rebuilt from the source's vectors, so a kill never loses an acknowledged write.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from index.atomic import atomic_write
from index.hnsw import HnswIndex, Space

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
        marker = self.directory / VERSION_FILE
        loaded = HnswIndex.load(self.directory) if marker.exists() else None
        if loaded is not None and loaded.dim == self.dim:
            recorded = tuple(json.loads(marker.read_text())["version"])
            if recorded == version:
                loaded.set_ef(self.ef_search)
                self.index = loaded
                return
        ids, matrix = vectors()
        self.index = HnswIndex(
            self.dim,
            space=self.space,
            ef_search=self.ef_search,
            initial_capacity=max(1024, len(ids)),
        )
        if ids:
            self.index.upsert(ids, matrix)
        logger.info("rebuilt index %s from %d stored vectors", self.name, len(ids))
        self.save(version)

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
