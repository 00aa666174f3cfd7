"""A vector space to retrieve in: an index of item vectors plus the query-side vectors of the
items a user's history is made of (the same vectors for text embeddings; the context vectors
for a collaborative model)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from index import VectorIndex

TEXT_SPACE = "text"


@dataclass(frozen=True)
class VectorSpace:
    name: str
    index: VectorIndex
    query_vectors: Callable[[Sequence[str]], NDArray[np.float32]]
    """Query-side vectors of items that have one in this space."""
    has_vector: Callable[[str], bool]


def text_space(index: VectorIndex) -> VectorSpace:
    """The text (or caller-vector) space: queries use the indexed vectors themselves."""
    return VectorSpace(
        name=TEXT_SPACE, index=index, query_vectors=index.get_vectors, has_vector=index.__contains__
    )
