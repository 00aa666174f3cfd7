"""The ports the domain depends on: durable storage, vector indexes, text embedding, and the
chat model. Implementations live beside them (`taxonomy.storage.sqlite`, `index.HnswIndex`,
`taxonomy.embedder`, `taxonomy.llm`); a PostgreSQL store, a remote vector store or another
model server only has to satisfy these protocols.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
from numpy.typing import NDArray
from openai.types.chat import ChatCompletionMessageParam

from index import VectorIndex
from taxonomy.models import (
    CatalogTaxonomyNode,
    Event,
    InterestTree,
    Item,
    TaxonomyNode,
    TreeDiff,
)

__all__ = [
    "CATALOG_TAXONOMY_VERSION_KEY",
    "CATALOG_VERSION_KEY",
    "TAXONOMY_VERSION_KEY",
    "ChatModel",
    "Completion",
    "Embedder",
    "Store",
    "VectorIndex",
    "vectors_version_key",
]

# Counters a store bumps on every write to one kind of data; indexes record the values they
# reflect, and are rebuilt when those differ.
CATALOG_VERSION_KEY = "catalog_version"
TAXONOMY_VERSION_KEY = "taxonomy_version"
CATALOG_TAXONOMY_VERSION_KEY = "catalog_taxonomy_version"


def vectors_version_key(space: str) -> str:
    return f"vectors_version:{space}"


class Store(Protocol):
    """What the engine needs from durable storage."""

    def upsert_items(
        self, items: Sequence[Item], vectors: dict[str, NDArray[np.float32]], space: str
    ) -> list[Item]: ...
    def get_items(self, item_ids: Sequence[str]) -> dict[str, Item]: ...
    def item_titles(self, item_ids: Sequence[str]) -> dict[str, str]: ...
    def list_items(self, after_item_id: str, limit: int) -> list[Item]: ...
    def delete_items(self, item_ids: Sequence[str]) -> int: ...
    def item_vectors(self, space: str) -> tuple[list[str], NDArray[np.float32]]: ...
    def item_ids_in_categories(self, prefixes: Sequence[Sequence[str]]) -> set[str]: ...
    def version(self, key: str) -> int: ...
    def user_ids(self) -> list[str]: ...
    def record_events(self, events: Sequence[Event], request_id: str | None) -> int: ...
    def user_exists(self, user_id: str) -> bool: ...
    def user_events(self, user_id: str) -> list[Event]: ...
    def user_event_stamp(self, user_id: str) -> tuple[int, int]: ...
    def event_count(self) -> int: ...
    def item_count(self) -> int: ...
    def user_count(self) -> int:
        """Users with at least one recorded event."""
        ...

    def search_user_ids(self, search: str, offset: int, limit: int) -> tuple[list[str], int]:
        """Up to `limit` ids, after skipping `offset`, of the users with events whose id
        contains `search` (lowercase; ids compare ASCII case-folded), in id order; and how
        many ids match in all."""
        ...

    def all_sequences(self) -> Iterator[tuple[str, list[Event]]]: ...
    def save_tree(
        self,
        tree: InterestTree,
        diff: TreeDiff,
        new_taxonomy: Sequence[tuple[TaxonomyNode, NDArray[np.float32]]],
        new_aliases: dict[str, str],
    ) -> None: ...
    def latest_tree(self, user_id: str) -> InterestTree | None: ...
    def latest_tree_json(self, user_id: str) -> str | None: ...
    def tree_revisions(
        self, user_id: str, before_revision: int, limit: int
    ) -> list[tuple[InterestTree, TreeDiff]]: ...
    def recent_trees(self, limit: int) -> list[InterestTree]:
        """The latest revision of each of the `limit` users whose latest trees were built
        last, newest first (equal build times by user id, descending)."""
        ...

    def citing_users(self, item_id: str, limit: int) -> list[tuple[str, int, list[str]]]:
        """The first `limit` users, in id order, whose latest tree cites `item_id` as
        evidence: (user_id, that tree's revision, the labels of its citing nodes in tree
        order)."""
        ...

    def taxonomy_vectors(self) -> tuple[list[str], NDArray[np.float32]]: ...
    def list_taxonomy(self, offset: int, limit: int) -> list[TaxonomyNode]: ...
    def replace_catalog_taxonomy(self, nodes: Sequence[CatalogTaxonomyNode]) -> None: ...
    def catalog_taxonomy(self) -> list[CatalogTaxonomyNode]: ...
    def taxonomy_node_counts(self) -> dict[str, int]: ...
    def delete_user(self, user_id: str) -> tuple[int, int]:
        """Erases every event, tree revision and taxonomy reference of a user in one
        transaction, leaving nothing of them in the store's files (deleted rows overwritten,
        logs truncated); returns (events, revisions) deleted. Idempotent."""
        ...

    def close(self) -> None: ...


class Embedder(Protocol):
    @property
    def dim(self) -> int: ...

    @property
    def name(self) -> str: ...

    async def embed(self, texts: Sequence[str]) -> NDArray[np.float32]:
        """Returns one L2-normalised float32 row per text."""
        ...


@dataclass(frozen=True)
class Completion:
    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str


class ChatModel(Protocol):
    @property
    def model_name(self) -> str: ...

    async def complete_json(
        self,
        messages: Sequence[ChatCompletionMessageParam],
        *,
        schema_name: str,
        schema: dict[str, Any],
        max_tokens: int,
    ) -> Completion: ...

    async def close(self) -> None: ...
