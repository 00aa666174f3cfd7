"""The model-refresh room: when to retrain the event-derived models, training them, and
swapping the new model in for serving."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from index.versioned import VersionedIndex
from taxonomy.ports import Store
from taxonomy.recommendation.collaborative_space import (
    CollaborativeRetrieval,
    build_retrieval,
    train_collaborative,
)
from taxonomy.recommendation.model_files import save_model
from taxonomy.recommendation.service import Recommender
from taxonomy.recommendation.training import CollaborativeConfig

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
    ) -> None:
        self._store = store
        self._recommender = recommender
        self._catalog_index = catalog_index
        self._models_dir = models_dir
        self._flush = flush
        self._config = config
        self._lock = asyncio.Lock()

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

    def _train(self, config: CollaborativeConfig) -> CollaborativeRetrieval | None:
        # Count and sequences come from one snapshot so the model reflects exactly that count.
        sequences = [events for _, events in self._store.all_sequences()]
        event_count = sum(len(events) for events in sequences)
        try:
            model = train_collaborative(sequences, config)
        except ValueError:
            logger.warning("not enough events to train collaborative vectors yet")
            return None
        save_model(self._models_dir, model, event_count)
        live = set(self._catalog_index.index.ids())
        return build_retrieval(model, event_count, self._config.hnsw_ef_search, live)
