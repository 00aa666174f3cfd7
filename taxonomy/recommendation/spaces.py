"""A vector space to retrieve in: an index of item vectors plus the query-side vectors of the
items a user's history is made of (the same vectors for text embeddings; the context vectors
for a collaborative model).

Items may be deleted while a request runs (between an index query and a vector lookup, or
between `has_vector` and `query_vectors`): `present_vectors` drops them, never an error.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from index import VectorIndex

TEXT_SPACE = "text"


VectorLookup = Callable[[Sequence[str]], NDArray[np.float32]]


def present_vectors(lookup: VectorLookup, ids: Sequence[str]) -> dict[str, NDArray[np.float32]]:
    """The vectors of the ids `lookup` still has, in ids order; an id it no longer holds (a
    concurrent delete) is left out. `lookup` raises KeyError for missing ids, as
    `VectorIndex.get_vectors` does."""
    if not ids:
        return {}
    try:
        return dict(zip(ids, lookup(ids), strict=True))
    except KeyError:
        found: dict[str, NDArray[np.float32]] = {}
        for item_id in ids:
            try:
                found[item_id] = lookup([item_id])[0]
            except KeyError:
                continue
        return found


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
