"""The interest-tree engine: wires the feature rooms together, independent of gRPC.

Each room owns one feature and is reached as an attribute:
- `catalog` (taxonomy/catalog): items, their vectors and the item index;
- `events` (taxonomy/events): recording interactions, reading histories;
- `trees` (taxonomy/trees): building, naming, validating and storing revisions;
- `taxonomy` (taxonomy/shared_taxonomy): the vocabulary shared by all users' trees;
- `recommender` (taxonomy/recommendation): spaces, level weights, retrieval and re-ranking;
- `refresher` (taxonomy/refresh): retraining event-derived models and swapping them in.

Blocking work (the store, hnswlib, numpy) runs in worker threads and model calls are async, so
the caller's event loop never waits on them.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from pathlib import Path

from index.versioned import VersionedIndex
from taxonomy.catalog.service import Catalog
from taxonomy.events.service import EventLog
from taxonomy.ports import ChatModel, Embedder, Store
from taxonomy.recommendation.negative import DEFAULT_DISLIKE_WEIGHT
from taxonomy.recommendation.rerank import RerankConfig
from taxonomy.recommendation.service import RecommendConfig, Recommender
from taxonomy.recommendation.spaces import TEXT_SPACE, present_vectors
from taxonomy.recommendation.training import CollaborativeConfig
from taxonomy.refresh.service import ModelRefresher, RefreshConfig
from taxonomy.shared_taxonomy.catalog import CatalogTaxonomyConfig
from taxonomy.shared_taxonomy.service import (
    CatalogTaxonomy,
    CatalogTaxonomyNaming,
    SharedTaxonomy,
)
from taxonomy.trees.builder import BuilderConfig
from taxonomy.trees.naming import NamingMode
from taxonomy.trees.service import TreeConfig, TreeService


@dataclass(frozen=True)
class EngineConfig:
    """Every tunable of the engine, with its default (the server's settings start from these)."""

    half_life_events: float = 50.0
    default_level_weights: tuple[float, ...] = (0.2, 0.8, 0.8, 0.8)
    naming_mode: NamingMode = NamingMode.CHOOSE
    llm_concurrency: int = 4
    naming_budget_s: float | None = 30.0
    """Time all model requests of one tree may take together (None: no limit); well inside
    BuildInterestTree's 120 s deadline. Nodes still waiting when it runs out keep data text."""
    builder: BuilderConfig = field(default_factory=BuilderConfig)
    hnsw_ef_search: int = 128
    catalog_taxonomy: CatalogTaxonomyConfig | None = field(default_factory=CatalogTaxonomyConfig)
    """The catalog taxonomy RefreshModels builds and trees project onto; None disables it (then
    trees are per-user data trees and ListTaxonomyNodes lists the label vocabulary)."""
    taxonomy_naming: CatalogTaxonomyNaming = field(default_factory=CatalogTaxonomyNaming)
    project_trees: bool = True
    """Once the catalog taxonomy exists, a user's tree is the history's projection onto it."""
    taxonomy_threshold: float = 0.8
    """Label-embedding cosine similarity above which two labels are one taxonomy node; measured
    with all-MiniLM-L6-v2: "Sci-Fi"/"Science fiction" 0.82, "Horror"/"Gothic horror" 0.63."""
    batch_users_in_flight: int = 4
    retrieval: str = "auto"
    """"auto": collaborative vectors once trained (text for users without any), "text": text
    embeddings only."""
    collaborative: CollaborativeConfig | None = field(default_factory=CollaborativeConfig)
    """How collaborative item vectors are learned from recorded events; None disables them.
    The defaults were tuned on MovieLens validation (bench/movielens_offline.py)."""
    collaborative_min_events: int = 1000
    """Fewer recorded events than this train nothing: the text space serves until then."""
    rerank: RerankConfig | None = field(default_factory=RerankConfig)
    dislike_weight: float = DEFAULT_DISLIKE_WEIGHT
    """λ of the disliked items' mean vector subtracted from every node's vector."""
    """Re-scoring of the top HNSW candidates with the full-rank next-item model; None disables."""


class InterestEngine:
    def __init__(
        self,
        store: Store,
        data_dir: Path,
        embedder: Embedder,
        chat: ChatModel | None,
        config: EngineConfig | None = None,
    ) -> None:
        self.config = config or EngineConfig()
        self.store = store
        self.embedder = embedder
        cfg = self.config
        # Store and index writes of one change happen together under this lock.
        write_lock = asyncio.Lock()
        indexes = data_dir / "indexes"
        models_dir = data_dir / "models"
        items = VersionedIndex(indexes / f"items-{TEXT_SPACE}", embedder.dim, cfg.hnsw_ef_search)
        labels = VersionedIndex(indexes / "taxonomy", embedder.dim, cfg.hnsw_ef_search)
        self._indexes = (items, labels)
        self.events = EventLog(store, cfg.half_life_events)
        self.catalog_taxonomy = (
            CatalogTaxonomy(
                store,
                chat if cfg.naming_mode is not NamingMode.OFF else None,
                lambda ids: present_vectors(items.index.get_vectors, ids),
                cfg.catalog_taxonomy,
                cfg.taxonomy_naming,
            )
            if cfg.catalog_taxonomy is not None
            else None
        )
        self.taxonomy = SharedTaxonomy(store, labels, cfg.taxonomy_threshold, self.catalog_taxonomy)
        self.trees = TreeService(
            store,
            self.events,
            items,
            self.taxonomy,
            embedder,
            chat,
            write_lock,
            TreeConfig(
                naming_mode=cfg.naming_mode,
                llm_concurrency=cfg.llm_concurrency,
                naming_budget_s=cfg.naming_budget_s,
                builder=cfg.builder,
                batch_users_in_flight=cfg.batch_users_in_flight,
                project_onto_taxonomy=cfg.project_trees,
            ),
        )
        self.recommender = Recommender(
            store,
            self.events,
            self.trees,
            items,
            models_dir,
            RecommendConfig(
                default_level_weights=cfg.default_level_weights,
                hnsw_ef_search=cfg.hnsw_ef_search,
                retrieval=cfg.retrieval,
                rerank=cfg.rerank,
                dislike_weight=cfg.dislike_weight,
            ),
        )
        self.catalog = Catalog(
            store,
            embedder,
            items,
            write_lock,
            self.recommender.forget_items,
            self.recommender.place_items,
        )
        self.refresher = ModelRefresher(
            store,
            self.recommender,
            items,
            models_dir,
            self.flush,
            RefreshConfig(
                collaborative=cfg.collaborative,
                min_events=cfg.collaborative_min_events,
                hnsw_ef_search=cfg.hnsw_ef_search,
            ),
            self.catalog_taxonomy,
        )
        self._write_lock = write_lock

    def _open(self) -> None:
        self.catalog.open()
        self.taxonomy.open()
        if self.catalog_taxonomy is not None:
            self.catalog_taxonomy.open()
        if self.config.collaborative is not None:
            self.recommender.load_collaborative()

    async def start(self) -> None:
        await asyncio.to_thread(self._open)

    def _save_dirty(self) -> None:
        if self.catalog.index.dirty:
            self.catalog.index.save(self.catalog.index_version())
        if self.taxonomy.index.dirty:
            self.taxonomy.index.save(self.taxonomy.index_version())

    async def flush(self) -> None:
        """Saves indexes that changed since the last save."""
        async with self._write_lock:
            await asyncio.to_thread(self._save_dirty)

    async def delete_user(self, user_id: str) -> tuple[int, int]:
        """Erases a user from the store (`Store.delete_user`): (events, revisions) deleted.
        It holds the user's build lock and the write lock, so no build in flight stores a
        revision after it. Indexes hold no user data; the learned models lose the user's
        influence at the next refresh (the event count they were trained on no longer matches)."""
        async with self.trees._user_lock(user_id), self._write_lock:
            return await asyncio.to_thread(self.store.delete_user, user_id)

    @property
    def write_lock(self) -> asyncio.Lock:
        """Held by every store-and-index write; a replica applies other replicas' changes to
        its indexes under it (`taxonomy.storage.postgres_replica`)."""
        return self._write_lock

    async def close(self) -> None:
        await self.flush()

    def index_sizes(self) -> dict[str, tuple[int, int]]:
        """Vectors held and bytes on disk of each HNSW index, by name; the collaborative index
        lives in memory only (rebuilt from the saved model), so it reports 0 bytes."""
        sizes = {index.name: (len(index.index), index.bytes_on_disk()) for index in self._indexes}
        collaborative = self.recommender.collaborative
        if collaborative is not None:
            sizes[collaborative.space.name] = (len(collaborative.space.index), 0)
        return sizes
