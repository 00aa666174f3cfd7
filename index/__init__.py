"""Vector indexing and vector fusion. Knows vectors and string ids, never trees or gRPC."""

from index.base import VectorIndex
from index.fusion import fuse_levels, node_contributions, weighted_mean
from index.hnsw import CorruptIndexError, HnswIndex, IndexParams

__all__ = [
    "CorruptIndexError",
    "HnswIndex",
    "IndexParams",
    "VectorIndex",
    "fuse_levels",
    "node_contributions",
    "weighted_mean",
]
