"""Vector indexing and vector fusion. Knows vectors and string ids, never trees or gRPC."""

from index.atomic import atomic_write, atomic_write_with, fsync_directory
from index.base import VectorIndex
from index.fusion import fuse_levels, node_contributions, weighted_mean
from index.hnsw import CorruptIndexError, HnswIndex, IndexParams
from index.rwlock import RWLock

__all__ = [
    "CorruptIndexError",
    "HnswIndex",
    "IndexParams",
    "RWLock",
    "VectorIndex",
    "atomic_write",
    "atomic_write_with",
    "fsync_directory",
    "fuse_levels",
    "node_contributions",
    "weighted_mean",
]
