"""The catalog room: items, their text (or caller-supplied) vectors, and the item index.

Every write goes to the store first, then to the index under the engine's write lock, so the
index never holds a vector the store does not. An upsert is all or nothing: every vector is
normalised and put through the index's own checks before anything is written, so the index
step cannot refuse what the store committed (and should it fail anyway, the index is rebuilt
from the store, the source of truth).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence

import numpy as np
from numpy.typing import NDArray

from index.versioned import VersionedIndex
from taxonomy.errors import FieldViolation, InternalError, InvalidArgumentError, NotFoundError
from taxonomy.models import Item, unit_vector
from taxonomy.ports import CATALOG_VERSION_KEY, Embedder, Store, vectors_version_key
from taxonomy.recommendation.spaces import TEXT_SPACE

logger = logging.getLogger(__name__)

ItemsForgotten = Callable[[Sequence[str]], None]
ItemsPlaced = Callable[[Sequence[str], NDArray[np.float32]], None]


def item_not_found(item_id: str) -> NotFoundError:
    return NotFoundError(
        f"item {item_id!r} does not exist", resource_type="item", resource_name=f"items/{item_id}"
    )


class Catalog:
    def __init__(
        self,
        store: Store,
        embedder: Embedder,
        index: VersionedIndex,
        write_lock: asyncio.Lock,
        on_delete: ItemsForgotten,
        on_upsert: ItemsPlaced | None = None,
    ) -> None:
        self._store = store
        self._embedder = embedder
        self.index = index
        self._write_lock = write_lock
        self._on_delete = on_delete
        self._on_upsert = on_upsert

    def index_version(self) -> tuple[int, ...]:
        return (
            self._store.version(CATALOG_VERSION_KEY),
            self._store.version(vectors_version_key(TEXT_SPACE)),
        )

    def open(self) -> None:
        self.index.load_or_rebuild(self.index_version(), self._stored_vectors)

    async def _vectors(self, items: Sequence[Item]) -> dict[str, NDArray[np.float32]]:
        """One unit vector per item, the caller's where given (normalised as
        `taxonomy.models.unit_vector` does), else the text embedding; each one checked as the
        index checks it, so the index will accept them all."""
        dim = self._embedder.dim
        wrong = [
            FieldViolation(f"items[{i}].vector", f"has {len(item.vector)} values, expected {dim}")
            for i, item in enumerate(items)
            if item.vector is not None and len(item.vector) != dim
        ]
        if wrong:
            raise InvalidArgumentError("caller vectors have the wrong dimension", wrong)
        to_embed = [item for item in items if item.vector is None]
        vectors: dict[str, NDArray[np.float32]] = {}
        if to_embed:
            embedded = await self._embedder.embed([item.embedding_text() for item in to_embed])
            vectors.update(zip([item.item_id for item in to_embed], embedded, strict=True))
        try:
            for item in items:
                if item.vector is not None:
                    vectors[item.item_id] = unit_vector(item.vector)
        except ValueError as error:  # only for an Item built without validation
            raise InvalidArgumentError(f"an item vector has no direction: {error}") from error
        by_id = {item.item_id: vectors[item.item_id] for item in items}
        good = dict(zip(by_id, self.index.check(np.stack(list(by_id.values()))), strict=True))
        unusable = [i for i, item in enumerate(items) if not good[item.item_id]]
        if unusable:
            raise InternalError(
                f"the embedder returned an unusable vector for items[{unusable[0]}] "
                f"({len(unusable)} in all); nothing was stored"
            )
        return by_id

    async def upsert_items(self, items: Sequence[Item]) -> list[Item]:
        if not items:
            return []
        by_id = await self._vectors(items)
        ids = list(by_id)
        matrix = np.stack(list(by_id.values()))

        def write() -> list[Item]:
            stored = self._store.upsert_items(items, by_id, TEXT_SPACE)
            try:
                self.index.index.upsert(ids, matrix)
            except Exception:
                # The store has committed, and it is the source of truth: bring the cache back
                # in line with it rather than fail a write that is durable.
                logger.exception("item index refused checked vectors; rebuilding it from the store")
                self.index.rebuild(self.index_version(), self._stored_vectors)
                return stored
            self.index.dirty = True
            if self._on_upsert is not None:
                # New items are recommendable in the collaborative space before any event.
                self._on_upsert(ids, matrix)
            return stored

        async with self._write_lock:
            return await asyncio.to_thread(write)

    def _stored_vectors(self) -> tuple[list[str], NDArray[np.float32]]:
        return self._store.item_vectors(TEXT_SPACE)

    async def get_item(self, item_id: str) -> Item:
        found = await asyncio.to_thread(self._store.get_items, [item_id])
        if item_id not in found:
            raise item_not_found(item_id)
        return found[item_id]

    async def get_items(self, item_ids: Sequence[str]) -> dict[str, Item]:
        return await asyncio.to_thread(self._store.get_items, item_ids)

    async def list_items(self, after_item_id: str, limit: int) -> list[Item]:
        return await asyncio.to_thread(self._store.list_items, after_item_id, limit)

    async def delete_items(self, item_ids: Sequence[str], *, allow_missing: bool) -> int:
        def write() -> int:
            if not allow_missing:
                found = self._store.get_items(item_ids)
                missing = [i for i in item_ids if i not in found]
                if missing:
                    raise NotFoundError(
                        f"{len(missing)} item(s) do not exist, first {missing[0]!r}",
                        resource_type="item",
                        resource_name=f"items/{missing[0]}",
                    )
            deleted = self._store.delete_items(item_ids)
            self.index.index.delete(item_ids)
            self.index.dirty = True
            self._on_delete(item_ids)
            return deleted

        async with self._write_lock:
            return await asyncio.to_thread(write)
