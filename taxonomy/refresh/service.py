"""The model-refresh room: when to retrain the event-derived models, training them, swapping
the new model in for serving, and rebuilding the catalog taxonomy over the new vectors."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from index.versioned import VersionedIndex
from taxonomy.events.history import is_interest
from taxonomy.models import Item
from taxonomy.ports import CATALOG_VERSION_KEY, Store
from taxonomy.recommendation.collaborative_space import (
    CollaborativeRetrieval,
    build_retrieval,
    train_collaborative,
)
from taxonomy.recommendation.model_files import delete_model, save_model
from taxonomy.recommendation.service import Recommender
from taxonomy.recommendation.spaces import TEXT_SPACE
from taxonomy.recommendation.training import CollaborativeConfig
from taxonomy.shared_taxonomy.service import CatalogTaxonomy, TaxonomyBuild

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class RefreshConfig:
    collaborative: CollaborativeConfig | None = None
    """How collaborative item vectors are learned from recorded events; None disables them."""
    min_events: int = 1000
    """Fewer recorded events than this train nothing: the text space serves until then."""
    hnsw_ef_search: int = 128


@dataclass(frozen=True)
class RefreshResult:
    event_count: int
    item_count: int
    refresh_time: datetime


class ModelRefresher:
    def __init__(
        self,
        store: Store,
        recommender: Recommender,
        catalog_index: VersionedIndex,
        models_dir: Path,
        flush: Callable[[], Awaitable[None]],
        config: RefreshConfig,
        taxonomy: CatalogTaxonomy | None = None,
    ) -> None:
        self._taxonomy = taxonomy
        self._store = store
        self._recommender = recommender
        self._catalog_index = catalog_index
        self._models_dir = models_dir
        self._flush = flush
        self._config = config
        self._lock = asyncio.Lock()
        self.on_trained: Callable[[int], None] | None = None
        """Called (in the training thread) with the event count of each newly saved model;
        replicas sharing a store publish the model through it."""

    def _needs_training(self, event_count: int) -> bool:
        """True when training is on, enough events exist, and some arrived since the serving
        model was trained."""
        current = self._recommender.collaborative
        return (
            self._config.collaborative is not None
            and event_count >= self._config.min_events
            and (current is None or current.event_count != event_count)
        )

    async def refresh_models(self) -> RefreshResult:
        """Retrains the collaborative vectors on every event recorded before the call, swaps
        them in, and saves every index; returns once all of that is done."""
        async with self._lock:
            event_count = await asyncio.to_thread(self._store.event_count)
            config = self._config.collaborative
            if config is not None and self._needs_training(event_count):
                retrieval = await asyncio.to_thread(self._train, config)
                if retrieval is not None:
                    self._recommender.collaborative = retrieval
            elif (
                self._recommender.collaborative is not None
                and event_count < self._config.min_events
            ):
                # Erasure (DeleteUser) took the events below the training floor: a model that
                # still carries the erased users must not keep serving, nor survive a restart.
                self._recommender.collaborative = None
                await asyncio.to_thread(delete_model, self._models_dir)
            if self._taxonomy is not None:
                await self._rebuild_taxonomy(self._taxonomy)
            await self._flush()
        return RefreshResult(
            event_count=event_count,
            item_count=len(self._catalog_index.index),
            refresh_time=datetime.now(UTC),
        )

    async def refresh_if_stale(self) -> bool:
        """Background refresh: retrains only when events arrived since the last training."""
        if not self._needs_training(await asyncio.to_thread(self._store.event_count)):
            return False
        await self.refresh_models()
        return True

    async def _rebuild_taxonomy(self, taxonomy: CatalogTaxonomy) -> TaxonomyBuild | None:
        """Rebuilds the catalog taxonomy when the catalog or the serving vectors changed since
        it was built; clusters that kept their members keep their names (no model request)."""
        collaborative = self._recommender.collaborative
        fingerprint = (
            await asyncio.to_thread(self._store.version, CATALOG_VERSION_KEY),
            collaborative.event_count if collaborative is not None else None,
        )
        if not taxonomy.stale(fingerprint):
            return None
        items, text = await asyncio.to_thread(self._catalog_snapshot)
        if not items:
            return None
        space: dict[str, NDArray[np.float32]] = text
        space_name = TEXT_SPACE
        if collaborative is not None:
            model = collaborative.model
            space = {
                item_id: model.item_vectors[row]
                for row, item_id in enumerate(model.item_ids)
                if item_id in items
            }
            space_name = collaborative.space.name
        return await taxonomy.rebuild(items, space, text, space=space_name, fingerprint=fingerprint)

    def _catalog_snapshot(self) -> tuple[dict[str, Item], dict[str, NDArray[np.float32]]]:
        items: dict[str, Item] = {}
        after = ""
        while page := self._store.list_items(after, 1000):
            items.update((item.item_id, item) for item in page)
            after = page[-1].item_id
        ids, matrix = self._store.item_vectors(TEXT_SPACE)
        return items, {i: matrix[row] for row, i in enumerate(ids) if i in items}

    def _train(self, config: CollaborativeConfig) -> CollaborativeRetrieval | None:
        # Count and sequences come from one snapshot so the model reflects exactly that count.
        sequences = [events for _, events in self._store.all_sequences()]
        event_count = sum(len(events) for events in sequences)
        # Dislikes and hides are no interest: they train nothing (taxonomy/events/history.py).
        interest = [[event for event in events if is_interest(event)] for events in sequences]
        try:
            model = train_collaborative(interest, config)
        except ValueError:
            logger.warning("not enough events to train collaborative vectors yet")
            return None
        save_model(self._models_dir, model, event_count)
        if self.on_trained is not None:
            self.on_trained(event_count)
        live = set(self._catalog_index.index.ids())
        return build_retrieval(model, event_count, self._config.hnsw_ef_search, live)
