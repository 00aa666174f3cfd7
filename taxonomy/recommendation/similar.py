"""Items similar to one item (RecommendationService.ListSimilarItems), each with a reason.

Similarity is the inner product of item vectors in one space: the collaborative one once it is
trained and holds the item (items the same users' histories hold close together), else the
text (or caller-vector) space. The caller's filters apply as for Recommend. Each item's reason
names what it shares with the requested item: the longest category path prefix both have
(below the terms every item of the catalog shares, when the page has several), the tags both
have, else how the space sees them close.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from taxonomy.models import Item
from taxonomy.recommendation.candidates import ItemFilter, Pool, nearest
from taxonomy.recommendation.spaces import TEXT_SPACE, VectorSpace, present_vectors

MAX_TAGS_NAMED = 3
MAX_SIMILAR_DEPTH = 1000
"""Paging lists at most this many similar items in all: each page searches offset + size + 1
nearest neighbours, so the depth bounds a page's cost."""


@dataclass(frozen=True)
class SimilarQuery:
    item_id: str
    page_size: int
    item_filter: ItemFilter = field(default_factory=ItemFilter)
    offset: int = 0
    """Where the page starts in the list, most similar first (the page token's position)."""

    @property
    def search_size(self) -> int:
        """Neighbours to search for the page and one more, which says whether another page
        exists: offset + page_size + 1, within MAX_SIMILAR_DEPTH + 1."""
        return min(self.offset + self.page_size, MAX_SIMILAR_DEPTH) + 1


@dataclass(frozen=True)
class SimilarItem:
    item_id: str
    score: float
    reason: str
    shared_categories: list[str]
    shared_tags: list[str]


@dataclass(frozen=True)
class SimilarResult:
    items: list[SimilarItem]
    space: str
    """"collaborative" or "text"."""
    next_offset: int | None = None
    """Where the next page starts; None on the last page."""


def page_of(
    query: SimilarQuery, scored: Sequence[tuple[str, float]]
) -> tuple[list[tuple[str, float]], int | None]:
    """The query's page of the scored list (best first, as nearest_items orders it) and the
    offset of the next page, None when this is the last (or MAX_SIMILAR_DEPTH is reached)."""
    end = min(query.offset + query.page_size, MAX_SIMILAR_DEPTH)
    page = list(scored[query.offset : end])
    return page, (end if len(scored) > end and end < MAX_SIMILAR_DEPTH else None)


def nearest_items(
    space: VectorSpace, item_id: str, page_size: int, pool: Pool
) -> list[tuple[str, float]]:
    """(item, similarity) of the page_size items nearest to `item_id` in `space`, best first
    (ties by item id, so that pages of a longer list follow one order); empty when the space
    has no vector for it."""
    found = present_vectors(space.index.get_vectors, [item_id])
    if item_id not in found:
        return []
    query = found[item_id].astype(np.float64)
    candidates = nearest(space.index, query, page_size, pool.without([item_id]))
    vectors = present_vectors(space.index.get_vectors, candidates)
    scored = [(i, float(vectors[i].astype(np.float64) @ query)) for i in candidates if i in vectors]
    scored.sort(key=lambda pair: (-pair[1], pair[0]))
    return scored


def _common_prefix(a: Sequence[str], b: Sequence[str]) -> list[str]:
    shared: list[str] = []
    for left, right in zip(a, b, strict=False):
        if left != right:
            break
        shared.append(left)
    return shared


def similar_reason(source: Item, item: Item, shared_path: Sequence[str], space: str) -> str:
    """One line on what `item` shares with `source`."""
    shared_tags = [tag for tag in item.tags if tag in set(source.tags)][:MAX_TAGS_NAMED]
    parts = []
    if shared_path:
        parts.append("also in " + " \u203a ".join(shared_path))
    if shared_tags:
        noun = "tag" if len(shared_tags) == 1 else "tags"
        parts.append(f"shares the {noun} " + " and ".join(shared_tags))
    if not parts:
        parts.append(
            "read by the same users" if space != TEXT_SPACE else "close in title and description"
        )
    text = "; ".join(parts)
    return f"Like \u201c{source.title}\u201d: {text}."


def describe(
    source: Item, scored: Sequence[tuple[str, float]], items: dict[str, Item], space: str
) -> list[SimilarItem]:
    """The scored items with their shared categories, tags and reasons. Path terms that every
    listed item shares with the source (the catalog's root, "Books") say nothing when several
    items are listed, so the reason names the path only where it goes deeper than those."""
    kept = [(i, s) for i, s in scored if i in items]
    paths = {i: _common_prefix(source.categories, items[i].categories) for i, _ in kept}
    floor = min((len(path) for path in paths.values()), default=0) if len(kept) > 1 else 0
    out: list[SimilarItem] = []
    for item_id, score in kept:
        item = items[item_id]
        path = paths[item_id]
        named = path if len(path) > floor else []
        out.append(
            SimilarItem(
                item_id=item_id,
                score=score,
                reason=similar_reason(source, item, named, space),
                shared_categories=path,
                shared_tags=[tag for tag in item.tags if tag in set(source.tags)],
            )
        )
    return out
