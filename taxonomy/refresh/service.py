"""The model-refresh room: when to retrain the event-derived models, training them, swapping
the new model in for serving, and rebuilding the catalog taxonomy over the new vectors."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from index.versioned import VersionedIndex
from taxonomy.errors import UnavailableError
from taxonomy.models import Item
from taxonomy.ports import CATALOG_VERSION_KEY, Store
from taxonomy.recommendation.collaborative_model import CollaborativeModel
from taxonomy.recommendation.collaborative_space import CollaborativeRetrieval, build_retrieval
from taxonomy.recommendation.model_files import delete_model, load_index, load_model, save_model
from taxonomy.recommendation.service import Recommender
from taxonomy.recommendation.spaces import TEXT_SPACE
from taxonomy.recommendation.training import CollaborativeConfig
from taxonomy.refresh.worker import TrainingJob, spec_of, train_from_store, train_in_child
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
        self._store_spec = spec_of(store)
        self.on_trained: Callable[[int], None] | None = None
        """Called (in a worker thread) with the event count of each newly saved model;
        replicas sharing a store publish the model through it."""
        self.train_in_process = False
        """Train in a worker thread of this process, as before training moved to a child
        process (benchmarks compare the two; stores no other process can open always do)."""
        self.pause_file: Path | None = None
        """For tests only: the training process pauses before saving (`TrainingJob`)."""
        self.last_phases: dict[str, float] = {}
        """Seconds each phase of the last refresh took: train_s (in the child, the parent
        only waits), index_s (loading the model file, publishing it, the HNSW build: in this
        process), taxonomy_s, flush_s."""

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
        them in, and saves every index; returns once all of that is done. Raises
        UnavailableError when training failed: the previous model then keeps serving."""
        async with self._lock:
            phases: dict[str, float] = {}
            event_count = await asyncio.to_thread(self._store.event_count)
            config = self._config.collaborative
            if config is not None and self._needs_training(event_count):
                retrieval = await self._train_and_index(config, phases)
                if retrieval is not None:
                    # The swap: readers see the old model or the new one, never a mix.
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
                started = time.perf_counter()
                await self._rebuild_taxonomy(self._taxonomy)
                phases["taxonomy_s"] = time.perf_counter() - started
            started = time.perf_counter()
            await self._flush()
            phases["flush_s"] = time.perf_counter() - started
            self.last_phases = phases
            logger.info(
                "models refreshed: %s",
                ", ".join(f"{name} {seconds:.2f}" for name, seconds in phases.items()),
            )
        return RefreshResult(
            event_count=event_count,
            item_count=len(self._catalog_index.index),
            refresh_time=datetime.now(UTC),
        )

    async def _train_and_index(
        self, config: CollaborativeConfig, phases: dict[str, float]
    ) -> CollaborativeRetrieval | None:
        started = time.perf_counter()
        spec = None if self.train_in_process else self._store_spec
        from_child = spec is not None
        if spec is None:
            trained = await asyncio.to_thread(train_from_store, self._store, config)
            if trained is not None:
                await asyncio.to_thread(save_model, self._models_dir, *trained)
            phases["train_s"] = time.perf_counter() - started
            started = time.perf_counter()
        else:
            job = TrainingJob(
                spec,
                config,
                str(self._models_dir),
                str(self.pause_file) if self.pause_file is not None else None,
            )
            trained_count = await train_in_child(job)
            phases["train_s"] = time.perf_counter() - started
            started = time.perf_counter()
            trained = None if trained_count is None else await self._load_trained(trained_count)
        if trained is None:
            logger.warning("not enough events to train collaborative vectors yet")
            return None
        retrieval = await asyncio.to_thread(self._publish_and_index, *trained, from_child)
        phases["index_s"] = time.perf_counter() - started
        return retrieval

    async def _load_trained(self, event_count: int) -> tuple[CollaborativeModel, int]:
        loaded = await asyncio.to_thread(load_model, self._models_dir)
        if loaded is None or loaded[1] != event_count:
            # Only another writer of this models directory (a second server on the same data
            # directory) could do that; serving what it wrote would mislabel the model.
            raise UnavailableError(
                "the trained model file changed before it was loaded; the previous model "
                "keeps serving",
                reason="MODEL_TRAINING_FAILED",
            )
        return loaded

    def _publish_and_index(
        self, model: CollaborativeModel, event_count: int, from_child: bool
    ) -> CollaborativeRetrieval:
        if self.on_trained is not None:
            self.on_trained(event_count)
        live = set(self._catalog_index.index.ids())
        # The child saved the index of the model's items: loading the graph leaves the serving
        # cores to Recommend, where building it did not (build_retrieval checks it matches).
        prebuilt = load_index(self._models_dir) if from_child else None
        retrieval = build_retrieval(model, event_count, self._config.hnsw_ef_search, live, prebuilt)
        # Items upserted after the child's snapshot were placed in the old model only: place
        # them in the new one too, or they would vanish from the collaborative space until the
        # next refresh.
        # Only those few are read, from the in-memory text index: not every stored vector.
        late = [item_id for item_id in live if model.index_of(item_id) is None]
        if late:
            retrieval.place(late, self._catalog_index.index.get_vectors(late))
        return retrieval

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
