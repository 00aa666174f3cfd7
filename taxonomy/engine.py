"""The interest-tree engine: catalog, events, trees and recommendations, independent of gRPC.

Blocking work (SQLite, hnswlib, numpy) runs in worker threads and model calls are async, so
the caller's event loop never waits on them.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import tempfile
import uuid
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from index import HnswIndex
from index.collaborative import CollaborativeConfig
from index.rerank import RerankConfig
from taxonomy.builder import (
    BuilderConfig,
    build_data_tree,
    invariant_violations,
    tree_from_graph,
)
from taxonomy.collaborative import (
    CollaborativeRetrieval,
    build_retrieval,
    load_model,
    save_model,
    train_collaborative,
)
from taxonomy.embedder import Embedder
from taxonomy.errors import DomainError, FieldViolation, InvalidArgumentError, NotFoundError
from taxonomy.history import HistoryItem, summarize_history
from taxonomy.llm import ChatModel
from taxonomy.models import (
    BuildStats,
    Event,
    InterestNode,
    InterestTree,
    Item,
    TaxonomyNode,
    TreeDiff,
    diff_trees,
)
from taxonomy.naming import NamingMode, NamingStats, refine_tree
from taxonomy.retrieval import Recommendation, VectorSpace, recommend
from taxonomy.store import (
    CATALOG_VERSION_KEY,
    TAXONOMY_VERSION_KEY,
    Store,
    vectors_version_key,
)

logger = logging.getLogger(__name__)

TEXT_SPACE = "text"


@dataclass(frozen=True)
class EngineConfig:
    half_life_events: float = 50.0
    default_level_weights: tuple[float, ...] = (0.15, 0.25, 0.3, 0.3)
    naming_mode: NamingMode = NamingMode.CHOOSE
    llm_concurrency: int = 4
    builder: BuilderConfig = field(default_factory=BuilderConfig)
    hnsw_ef_search: int = 128
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
    """Re-scoring of the top HNSW candidates with the full-rank next-item model; None disables."""


@dataclass(frozen=True)
class RecommendResult:
    recommendations: list[Recommendation]
    tree_revision: int
    level_weights: list[float]


@dataclass(frozen=True)
class BuildResult:
    tree: InterestTree
    naming: NamingStats


@dataclass(frozen=True)
class RefreshResult:
    event_count: int
    item_count: int
    refresh_time: datetime


def _write_json_atomically(path: Path, payload: dict[str, Any]) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w") as handle:
        json.dump(payload, handle)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


class _PersistentIndex:
    """An HnswIndex saved under a folder together with the store version it reflects.

    The store is the source of truth; the index is a cache that is rebuilt from stored vectors
    whenever its recorded version differs from the store's (after a crash between the store's
    commit and the index save, for instance).
    """

    def __init__(self, directory: Path, dim: int, ef_search: int) -> None:
        self.directory = directory
        self.dim = dim
        self.ef_search = ef_search
        self.index = HnswIndex(dim, space="cosine", ef_search=ef_search)
        self.dirty = False

    def load_or_rebuild(
        self, version: tuple[int, ...], vectors: tuple[list[str], NDArray[np.float32]]
    ) -> None:
        marker = self.directory / "store_version.json"
        loaded = HnswIndex.load(self.directory) if marker.exists() else None
        if loaded is not None and loaded.dim == self.dim:
            recorded = tuple(json.loads(marker.read_text())["version"])
            if recorded == version:
                loaded.set_ef(self.ef_search)
                self.index = loaded
                return
        ids, matrix = vectors
        self.index = HnswIndex(
            self.dim, space="cosine", ef_search=self.ef_search, initial_capacity=max(1024, len(ids))
        )
        if ids:
            self.index.upsert(ids, matrix)
        logger.info("rebuilt index %s from %d stored vectors", self.directory.name, len(ids))
        self.save(version)

    def save(self, version: tuple[int, ...]) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        self.index.save(self.directory)
        _write_json_atomically(self.directory / "store_version.json", {"version": list(version)})
        self.dirty = False


class InterestEngine:
    def __init__(
        self,
        store: Store,
        data_dir: Path,
        embedder: Embedder,
        chat: ChatModel | None,
        config: EngineConfig | None = None,
    ) -> None:
        self._store = store
        self._embedder = embedder
        self._chat = chat
        self._config = config or EngineConfig()
        self._limiter = asyncio.Semaphore(self._config.llm_concurrency)
        self._user_locks: dict[str, asyncio.Lock] = {}
        self._write_lock = asyncio.Lock()
        indexes = data_dir / "indexes"
        self._items = _PersistentIndex(
            indexes / f"items-{TEXT_SPACE}", embedder.dim, self._config.hnsw_ef_search
        )
        self._taxonomy = _PersistentIndex(
            indexes / "taxonomy", embedder.dim, self._config.hnsw_ef_search
        )
        self._taxonomy_labels: dict[str, str] = {}
        self._models_dir = data_dir / "models"
        self._collaborative: CollaborativeRetrieval | None = None
        self._refresh_lock = asyncio.Lock()

    @property
    def config(self) -> EngineConfig:
        return self._config

    @property
    def store(self) -> Store:
        return self._store

    # Lifecycle ------------------------------------------------------------------------------

    def _item_index_version(self) -> tuple[int, ...]:
        return (
            self._store.version(CATALOG_VERSION_KEY),
            self._store.version(vectors_version_key(TEXT_SPACE)),
        )

    def _taxonomy_index_version(self) -> tuple[int, ...]:
        return (self._store.version(TAXONOMY_VERSION_KEY),)

    def _open_indexes(self) -> None:
        self._items.load_or_rebuild(
            self._item_index_version(), self._store.item_vectors(TEXT_SPACE)
        )
        self._taxonomy.load_or_rebuild(
            self._taxonomy_index_version(), self._store.taxonomy_vectors()
        )
        self._taxonomy_labels = {
            node.taxonomy_id: node.label for node in self._store.list_taxonomy(0, 1 << 30)
        }

    async def start(self) -> None:
        await asyncio.to_thread(self._open_indexes)
        if self._config.collaborative is not None:
            await asyncio.to_thread(self._load_collaborative)

    def _load_collaborative(self) -> None:
        loaded = load_model(self._models_dir)
        if loaded is not None:
            model, event_count = loaded
            live = set(self._items.index.ids())
            self._collaborative = build_retrieval(
                model, event_count, self._config.hnsw_ef_search, live
            )

    def _save_dirty(self) -> None:
        if self._items.dirty:
            self._items.save(self._item_index_version())
        if self._taxonomy.dirty:
            self._taxonomy.save(self._taxonomy_index_version())

    async def flush(self) -> None:
        """Saves indexes that changed since the last save."""
        async with self._write_lock:
            await asyncio.to_thread(self._save_dirty)

    async def close(self) -> None:
        await self.flush()

    # Catalog --------------------------------------------------------------------------------

    async def upsert_items(self, items: Sequence[Item]) -> list[Item]:
        dim = self._embedder.dim
        wrong = [
            FieldViolation(f"items[{i}].vector", f"has {len(item.vector)} values, expected {dim}")
            for i, item in enumerate(items)
            if item.vector is not None and len(item.vector) != dim
        ]
        if wrong:
            raise InvalidArgumentError("caller vectors have the wrong dimension", wrong)
        to_embed = [item for item in items if item.vector is None]
        embedded = await self._embedder.embed([item.embedding_text() for item in to_embed])
        vectors = dict(zip([item.item_id for item in to_embed], embedded, strict=True))
        for item in items:
            if item.vector is not None:
                supplied = np.asarray(item.vector, dtype=np.float32)
                vectors[item.item_id] = supplied / np.linalg.norm(supplied)
        by_id = {item.item_id: vectors[item.item_id] for item in items}

        def write() -> list[Item]:
            stored = self._store.upsert_items(items, by_id, TEXT_SPACE)
            self._items.index.upsert(list(by_id), np.stack(list(by_id.values())))
            self._items.dirty = True
            return stored

        async with self._write_lock:
            return await asyncio.to_thread(write)

    async def get_item(self, item_id: str) -> Item:
        found = await asyncio.to_thread(self._store.get_items, [item_id])
        if item_id not in found:
            raise NotFoundError(
                f"item {item_id!r} does not exist",
                resource_type="item",
                resource_name=f"items/{item_id}",
            )
        return found[item_id]

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
            self._items.index.delete(item_ids)
            self._items.dirty = True
            if self._collaborative is not None:
                self._collaborative.forget(item_ids)
            return deleted

        async with self._write_lock:
            return await asyncio.to_thread(write)

    # Events ---------------------------------------------------------------------------------

    async def record_events(self, events: Sequence[Event], request_id: str | None) -> int:
        def write() -> int:
            found = self._store.get_items([event.item_id for event in events])
            violations = [
                FieldViolation(f"events[{i}].item", f"item {event.item_id!r} does not exist")
                for i, event in enumerate(events)
                if event.item_id not in found
            ]
            if violations:
                raise InvalidArgumentError(
                    f"{len(violations)} event(s) name items that are not in the catalog",
                    violations,
                    reason="ITEM_NOT_FOUND",
                )
            return self._store.record_events(events, request_id)

        return await asyncio.to_thread(write)

    async def _require_user(self, user_id: str) -> None:
        if not await asyncio.to_thread(self._store.user_exists, user_id):
            raise NotFoundError(
                f"user {user_id!r} has no recorded events",
                resource_type="user",
                resource_name=f"users/{user_id}",
            )

    # Trees ----------------------------------------------------------------------------------

    def _load_history(self, user_id: str) -> tuple[list[HistoryItem], dict[str, Item], int]:
        events = self._store.user_events(user_id)
        items = self._store.get_items([event.item_id for event in events])
        # Events of deleted items stay stored but no longer shape the tree.
        kept = [event for event in events if event.item_id in items]
        history = summarize_history(kept, half_life_events=self._config.half_life_events)
        return history, items, len(kept)

    def _bare_item_vectors(
        self, history: Sequence[HistoryItem], items: Mapping[str, Item]
    ) -> dict[str, NDArray[np.float32]]:
        """Text vectors of the history items that have neither categories nor tags."""
        bare = [
            entry.item_id
            for entry in history
            if not items[entry.item_id].categories
            and not items[entry.item_id].tags
            and entry.item_id in self._items.index
        ]
        if not bare:
            return {}
        return dict(zip(bare, self._items.index.get_vectors(bare), strict=True))

    def _user_lock(self, user_id: str) -> asyncio.Lock:
        return self._user_locks.setdefault(user_id, asyncio.Lock())

    async def build_tree(self, user_id: str, *, incremental: bool = True) -> BuildResult:
        """Builds and stores a new revision. With `incremental`, nodes whose group barely
        changed since the last revision keep their model text and cost no model request."""
        await self._require_user(user_id)
        async with self._user_lock(user_id):
            history, items, event_count = await asyncio.to_thread(self._load_history, user_id)
            if not history:
                raise InvalidArgumentError(
                    f"user {user_id!r} has events only for items that were deleted",
                    [FieldViolation("user", "no history item is in the catalog")],
                    reason="EMPTY_HISTORY",
                )
            previous = await asyncio.to_thread(self._store.latest_tree, user_id)
            vectors = await asyncio.to_thread(self._bare_item_vectors, history, items)
            graph = build_data_tree(
                user_id, history, items, config=self._config.builder, vectors=vectors
            )
            model = ""
            stats = NamingStats()
            reuse = incremental and previous is not None and previous.model != ""
            if self._chat is not None and self._config.naming_mode is not NamingMode.OFF:
                stats = await refine_tree(
                    graph,
                    items,
                    self._chat,
                    mode=self._config.naming_mode,
                    limiter=self._limiter,
                    previous={n.node_id: n for n in previous.nodes} if reuse and previous else None,
                )
                model = self._chat.model_name
            tree = tree_from_graph(
                graph,
                user_id=user_id,
                revision=(previous.revision if previous else 0) + 1,
                create_time=datetime.now(UTC),
                event_count=event_count,
                model=model,
            )
            history_ids = {entry.item_id for entry in history}
            problems = invariant_violations(tree, history_ids)
            if problems:
                # Never store an invalid tree: fall back to the data-derived one, which the
                # property tests show always satisfies the invariants.
                logger.error("model-refined tree of %s is invalid: %s", user_id, problems)
                stats.failures += 1
                graph = build_data_tree(
                    user_id, history, items, config=self._config.builder, vectors=vectors
                )
                tree = tree_from_graph(
                    graph,
                    user_id=user_id,
                    revision=tree.revision,
                    create_time=tree.create_time,
                    event_count=event_count,
                    model="",
                )
            tree = tree.model_copy(
                update={
                    "build_stats": BuildStats(
                        incremental=bool(reuse),
                        model_requests=stats.requests,
                        prompt_tokens=stats.prompt_tokens,
                        completion_tokens=stats.completion_tokens,
                        retries=stats.retries,
                        failures=stats.failures,
                        rejected=sum(stats.rejected.values()),
                    )
                }
            )
            label_vectors = await self._embedder.embed([node.label for node in tree.nodes])
            async with self._write_lock:
                tree = await asyncio.to_thread(
                    self._store_with_taxonomy, tree, previous, label_vectors
                )
            return BuildResult(tree=tree, naming=stats)

    def _store_with_taxonomy(
        self,
        tree: InterestTree,
        previous: InterestTree | None,
        label_vectors: NDArray[np.float32],
    ) -> InterestTree:
        """Maps every node to the shared taxonomy (label embedding similarity over a threshold
        means the same node) and stores the revision, all under the write lock."""
        index = self._taxonomy.index
        created: list[tuple[TaxonomyNode, NDArray[np.float32]]] = []
        aliases: dict[str, str] = {}
        labels: dict[str, str] = {}
        nodes: list[InterestNode] = []
        for node, vector in zip(tree.nodes, label_vectors, strict=True):
            match = None
            for taxonomy_id, similarity in index.query(vector, 3) if len(index) else []:
                canonical = labels.get(taxonomy_id) or self._taxonomy_labels.get(taxonomy_id, "")
                if similarity >= self._config.taxonomy_threshold and not is_refinement(
                    canonical, node.label
                ):
                    match = taxonomy_id, canonical
                    break
            if match is not None:
                taxonomy_id, canonical = match
                if canonical.casefold() != node.label.casefold():
                    aliases[taxonomy_id] = node.label
            else:
                taxonomy_id = f"t{uuid.uuid4().hex[:12]}"
                created.append((TaxonomyNode(taxonomy_id=taxonomy_id, label=node.label), vector))
                labels[taxonomy_id] = node.label
                index.upsert([taxonomy_id], vector[np.newaxis, :])
            nodes.append(node.model_copy(update={"taxonomy_node": taxonomy_id}))
        mapped = tree.model_copy(update={"nodes": nodes})
        try:
            self._store.save_tree(mapped, diff_trees(previous, mapped), created, aliases)
        except BaseException:
            index.delete([node.taxonomy_id for node, _ in created])
            raise
        self._taxonomy_labels.update(labels)
        if created:
            self._taxonomy.dirty = True
        return mapped

    async def get_tree(self, user_id: str) -> InterestTree:
        tree = await asyncio.to_thread(self._store.latest_tree, user_id)
        if tree is None:
            await self._require_user(user_id)
            raise NotFoundError(
                f"user {user_id!r} has no interest tree yet; call BuildInterestTree",
                resource_type="interest_tree",
                resource_name=f"users/{user_id}/interestTree",
            )
        return tree

    async def explain_tree(self, user_id: str) -> InterestTree:
        await self._require_user(user_id)
        return await self.get_or_build_tree(user_id)

    async def get_or_build_tree(self, user_id: str) -> InterestTree:
        tree = await asyncio.to_thread(self._store.latest_tree, user_id)
        if tree is not None:
            return tree
        return (await self.build_tree(user_id)).tree

    async def list_revisions(
        self, user_id: str, before_revision: int, limit: int
    ) -> list[tuple[InterestTree, TreeDiff]]:
        revisions = await asyncio.to_thread(
            self._store.tree_revisions, user_id, before_revision, limit
        )
        if not revisions and before_revision >= 1 << 62:
            await self.get_tree(user_id)  # raises the precise NOT_FOUND
        return revisions

    async def list_taxonomy(self, offset: int, limit: int) -> list[TaxonomyNode]:
        return await asyncio.to_thread(self._store.list_taxonomy, offset, limit)

    async def all_user_ids(self) -> list[str]:
        return await asyncio.to_thread(self._store.user_ids)

    async def batch_build(
        self, user_ids: Sequence[str]
    ) -> AsyncIterator[tuple[str, BuildResult | DomainError]]:
        """Builds many users' trees with several in flight, yielding each as it completes.

        Node requests of all users in flight share the engine's model limiter, so vLLM sees a
        steady batch; a failure of one user is yielded, not raised.
        """
        queue: asyncio.Queue[tuple[str, BuildResult | DomainError]] = asyncio.Queue()
        pending = iter(user_ids)

        async def worker() -> None:
            for user_id in pending:
                try:
                    await queue.put((user_id, await self.build_tree(user_id)))
                except DomainError as error:
                    await queue.put((user_id, error))

        workers = [asyncio.create_task(worker()) for _ in range(self._config.batch_users_in_flight)]
        try:
            for _ in range(len(user_ids)):
                yield await queue.get()
        finally:
            for task in workers:
                task.cancel()
            await asyncio.gather(*workers, return_exceptions=True)

    def level_weights(self, depth: int, requested: Sequence[float] | None) -> list[float]:
        """Weights for levels 1..depth: requested ones as given, else the configured defaults."""
        source = list(requested) if requested else list(self._config.default_level_weights)
        return [source[level] if level < len(source) else 0.0 for level in range(depth)]

    # Recommendations ------------------------------------------------------------------------

    async def recommend(
        self,
        user_id: str,
        *,
        page_size: int,
        level_weights: Sequence[float] | None,
        include_seen: bool,
    ) -> RecommendResult:
        await self._require_user(user_id)
        tree = await self.get_or_build_tree(user_id)
        weights = self.level_weights(tree.depth, level_weights)
        if sum(weights) <= 0:
            # Requested weights may cover only levels this tree lacks; a known user still gets
            # recommendations, and the response says which weights were applied.
            weights = self.level_weights(tree.depth, None)
        events = await asyncio.to_thread(self._store.user_events, user_id)
        exclude = set() if include_seen else {event.item_id for event in events}
        recommendations = await asyncio.to_thread(
            self._recommend_sync, tree, weights, page_size, exclude, events
        )
        return RecommendResult(recommendations, tree.revision, weights)

    def _text_space(self) -> VectorSpace:
        index = self._items.index
        return VectorSpace(
            name=TEXT_SPACE,
            index=index,
            query_vectors=index.get_vectors,
            has_vector=index.__contains__,
        )

    def _recommend_sync(
        self,
        tree: InterestTree,
        weights: Sequence[float],
        page_size: int,
        exclude: set[str],
        events: Sequence[Event],
    ) -> list[Recommendation]:
        collaborative = self._collaborative
        if collaborative is not None and self._config.retrieval != "text":
            item_weights = collaborative.item_weights(events)
            if item_weights:
                return recommend(
                    tree,
                    weights,
                    item_weights,
                    collaborative.space,
                    page_size=page_size,
                    exclude=exclude,
                    rerank=(
                        collaborative.reranker(events, self._config.rerank)
                        if self._config.rerank is not None
                        else None
                    ),
                    rerank_candidates=self._config.rerank.k if self._config.rerank else 0,
                )
        history = summarize_history(events, half_life_events=self._config.half_life_events)
        return recommend(
            tree,
            weights,
            {entry.item_id: entry.strength for entry in history},
            self._text_space(),
            page_size=page_size,
            exclude=exclude,
        )

    # Admin ----------------------------------------------------------------------------------

    async def refresh_models(self) -> RefreshResult:
        """Retrains the collaborative vectors on every event recorded before the call, swaps
        them in, and saves every index; returns once all of that is done."""
        async with self._refresh_lock:
            event_count = await asyncio.to_thread(self._store.event_count)
            config = self._config.collaborative
            current = self._collaborative
            if (
                config is not None
                and event_count >= self._config.collaborative_min_events
                and (current is None or current.event_count != event_count)
            ):
                retrieval = await asyncio.to_thread(self._train_collaborative, config)
                if retrieval is not None:
                    self._collaborative = retrieval
            await self.flush()
        item_count = len(self._items.index)
        return RefreshResult(
            event_count=event_count, item_count=item_count, refresh_time=datetime.now(UTC)
        )

    def _train_collaborative(self, config: CollaborativeConfig) -> CollaborativeRetrieval | None:
        # Count and sequences come from one snapshot so the model reflects exactly that count.
        sequences = [events for _, events in self._store.all_sequences()]
        event_count = sum(len(events) for events in sequences)
        try:
            model = train_collaborative(sequences, config)
        except ValueError:
            logger.warning("not enough events to train collaborative vectors yet")
            return None
        save_model(self._models_dir, model, event_count)
        live = set(self._items.index.ids())
        return build_retrieval(model, event_count, self._config.hnsw_ef_search, live)

    @property
    def collaborative_event_count(self) -> int | None:
        """Events the serving collaborative model was trained on; None before the first."""
        return self._collaborative.event_count if self._collaborative is not None else None

    async def refresh_if_stale(self) -> bool:
        """Background refresh: retrains only when events arrived since the last training."""
        if self._config.collaborative is None:
            return False
        event_count = await asyncio.to_thread(self._store.event_count)
        current = self._collaborative
        if event_count < self._config.collaborative_min_events or (
            current is not None and current.event_count == event_count
        ):
            return False
        await self.refresh_models()
        return True

    def explain_levels(
        self, tree: InterestTree
    ) -> list[tuple[int, float, list[InterestNode], str]]:
        weights = self.level_weights(tree.depth, None)
        levels: list[tuple[int, float, list[InterestNode], str]] = []
        for level in range(1, tree.depth + 1):
            nodes = sorted(tree.level_nodes(level), key=lambda n: -n.weight)
            top = ", ".join(f"{n.label} ({n.weight:.0%})" for n in nodes[:3])
            summary = f"Level {level}: {len(nodes)} interest(s), led by {top}."
            levels.append((level, weights[level - 1], nodes, summary))
        return levels


_WORDS = re.compile(r"[a-z0-9]+")


def is_refinement(first: str, second: str) -> bool:
    """True if one label is the other plus more words ("Fiction" / "Science fiction"): a
    narrower interest, however close the embeddings (all-MiniLM-L6-v2 gives 0.81 there)."""
    a, b = set(_WORDS.findall(first.casefold())), set(_WORDS.findall(second.casefold()))
    return a != b and (a < b or b < a)
