"""Replicas sharing one PostgreSQL store: keeping each process's in-memory state in line.

Everything a replica serves is read from the store, except what it caches in process: the
item HNSW index, the taxonomy label index, the catalog taxonomy and the collaborative model.
`ReplicaSync` keeps those in line with writes made by other replicas:

- It LISTENs on `CHANGES_CHANNEL`; every committed counter bump is a notification. On each one
  (and every `poll_interval_s` in any case, should a notification be lost while the listening
  connection reconnects) it catches up.
- Items: it fetches the vectors written and the items deleted after the catalog version it
  last applied (`PostgresStore.item_vector_changes`, one snapshot) and applies them to the
  item index under the engine's write lock. The first catch-up starts from version 0, so a
  replica that saved its index while another replica's write was not yet applied still ends
  up with every stored vector.
- Taxonomy labels and the catalog taxonomy: reloaded from the store when their counter moved.
- Models: training happens once. The background refresh takes a PostgreSQL advisory lock
  (`PostgresStore.training_lock`); only its holder trains, and every trained model (from the
  background or from a RefreshModels call) is stored in the `models` table. Every other
  replica sees the model counter move and loads the stored model.
"""

from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import psycopg
from numpy.typing import NDArray

from index.atomic import atomic_write
from taxonomy.ports import CATALOG_TAXONOMY_VERSION_KEY, TAXONOMY_VERSION_KEY
from taxonomy.recommendation.model_files import MODEL_FILE
from taxonomy.recommendation.spaces import TEXT_SPACE
from taxonomy.storage.postgres import MODEL_VERSION_KEY, PostgresStore, VectorChanges

if TYPE_CHECKING:
    from taxonomy.engine import InterestEngine

__all__ = ["COLLABORATIVE_MODEL", "ReplicaSync"]

logger = logging.getLogger(__name__)

COLLABORATIVE_MODEL = "collaborative"


class ReplicaSync:
    def __init__(
        self,
        engine: InterestEngine,
        store: PostgresStore,
        models_dir: Path,
        *,
        poll_interval_s: float = 1.0,
    ) -> None:
        self._engine = engine
        self._store = store
        self._models_dir = models_dir
        self._poll_interval_s = poll_interval_s
        self._catalog_applied = 0
        self._versions_applied: dict[str, int] = {}
        self._catch_up_lock = asyncio.Lock()
        self.catch_ups = 0
        """Completed catch-ups (for tests and metrics)."""
        engine.refresher.on_trained = self._publish_model

    # Catching up ---------------------------------------------------------------------------

    async def catch_up(self) -> None:
        """Applies every change committed by any replica before the call."""
        async with self._catch_up_lock:
            versions = await asyncio.to_thread(self._store.versions)
            async with self._engine.write_lock:
                await asyncio.to_thread(self._apply_items)
                await asyncio.to_thread(self._apply_taxonomy, versions)
            await asyncio.to_thread(self._apply_model, versions)
            self.catch_ups += 1

    def _apply_items(self) -> None:
        changes = self._store.item_vector_changes(TEXT_SPACE, self._catalog_applied)
        index = self._engine.catalog.index
        if changes.upserted_ids:
            good = index.check(changes.upserted) & self._differs(changes)
            ids = [item_id for item_id, ok in zip(changes.upserted_ids, good, strict=True) if ok]
            if ids:
                index.index.upsert(ids, changes.upserted[np.asarray(good)])
                index.dirty = True
                self._engine.recommender.place_items(ids, changes.upserted[np.asarray(good)])
        if changes.deleted_ids:
            index.index.delete(changes.deleted_ids)
            self._engine.recommender.forget_items(changes.deleted_ids)
            index.dirty = True
        self._catalog_applied = changes.version

    def _differs(self, changes: VectorChanges) -> NDArray[np.bool_]:
        """Which changed vectors the index does not already hold: this replica's own writes
        come back through the feed too, and re-inserting them would only cost HNSW work."""
        index = self._engine.catalog.index.index
        differs = np.ones(len(changes.upserted_ids), dtype=np.bool_)
        held = [n for n, item_id in enumerate(changes.upserted_ids) if item_id in index]
        if not held or changes.upserted.shape[1] != index.dim:
            return differs
        current = index.get_vectors([changes.upserted_ids[n] for n in held])
        wanted = changes.upserted[held]
        norms = np.linalg.norm(wanted, axis=1, keepdims=True)
        with np.errstate(invalid="ignore", divide="ignore"):
            same = np.all(np.abs(current - wanted / norms) <= 1e-6, axis=1)
        differs[held] = ~same
        return differs

    def _moved(self, versions: dict[str, int], key: str) -> bool:
        return self._versions_applied.get(key) != versions.get(key, 0)

    def _apply_taxonomy(self, versions: dict[str, int]) -> None:
        taxonomy = self._engine.taxonomy
        if self._moved(versions, TAXONOMY_VERSION_KEY):
            # Rebuilt, not loaded: a saved label index may claim a version it lacks nodes of.
            taxonomy.index.rebuild(taxonomy.index_version(), self._store.taxonomy_vectors)
            taxonomy.open()
            self._versions_applied[TAXONOMY_VERSION_KEY] = versions.get(TAXONOMY_VERSION_KEY, 0)
        catalog_taxonomy: Any = getattr(self._engine, "catalog_taxonomy", None)
        if catalog_taxonomy is not None and self._moved(versions, CATALOG_TAXONOMY_VERSION_KEY):
            catalog_taxonomy.open()
            self._versions_applied[CATALOG_TAXONOMY_VERSION_KEY] = versions.get(
                CATALOG_TAXONOMY_VERSION_KEY, 0
            )

    def _apply_model(self, versions: dict[str, int]) -> None:
        if not self._moved(versions, MODEL_VERSION_KEY):
            return
        recommender = self._engine.recommender
        stored_count = self._store.model_event_count(COLLABORATIVE_MODEL)
        if stored_count is not None and stored_count != recommender.collaborative_event_count:
            loaded = self._store.load_model_payload(COLLABORATIVE_MODEL)
            if loaded is not None:
                self._models_dir.mkdir(parents=True, exist_ok=True)
                atomic_write(self._models_dir / MODEL_FILE, loaded[1])
                recommender.load_collaborative()
                logger.info("loaded the collaborative model trained on %d events", loaded[0])
        self._versions_applied[MODEL_VERSION_KEY] = versions.get(MODEL_VERSION_KEY, 0)

    # Training once -------------------------------------------------------------------------

    def _publish_model(self, event_count: int) -> None:
        payload = (self._models_dir / MODEL_FILE).read_bytes()
        version = self._store.save_model_payload(COLLABORATIVE_MODEL, event_count, payload)
        # This replica serves the model it just trained: nothing to load for this version.
        self._versions_applied[MODEL_VERSION_KEY] = version
        logger.info("stored the collaborative model (%d events) for every replica", event_count)

    async def refresh_if_stale(self) -> bool:
        """The background refresh of a replica: loads what another replica trained, then
        trains only while holding the training lock, and only if events arrived since."""
        await self.catch_up()
        lock = await asyncio.to_thread(self._store.try_training_lock)
        if lock is None:
            return False
        try:
            return await self._engine.refresher.refresh_if_stale()
        finally:
            await asyncio.to_thread(lock.close)

    # Listening -----------------------------------------------------------------------------

    async def run(self) -> None:
        """Catches up on every notification (and every poll interval) until cancelled."""
        while True:
            try:
                await self._listen()
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.exception("replica catch-up failed; reconnecting")
                await asyncio.sleep(self._poll_interval_s)

    async def _listen(self) -> None:
        conn = await psycopg.AsyncConnection.connect(self._store.url, autocommit=True)
        async with conn:
            await conn.execute(self._store.listen_query())
            await self.catch_up()  # after LISTEN, so no change can fall between the two
            while True:
                notified = ours = False
                async for note in conn.notifies(timeout=self._poll_interval_s, stop_after=1):
                    notified, ours = True, self._is_ours(note.payload)
                if ours or not notified:  # a change here, or the poll interval passed
                    await self.catch_up()

    def _is_ours(self, payload: str) -> bool:
        try:
            return bool(json.loads(payload).get("schema") == self._store.schema)
        except (ValueError, AttributeError):
            return False
