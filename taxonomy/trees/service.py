"""The trees room: building, naming, validating and storing revisions of users' trees.

Once RefreshModels has built the catalog taxonomy, a build is the user's projection onto it
(`builder.project_tree`): labels come from the taxonomy, named once per cluster, so the model is
asked nothing per user except, in `free` mode, a personal explanation. Before that, a build
makes the per-user data tree and lets the model refine its text within checks. Either way it
falls back to the unrefined tree if the result breaks an invariant, maps its nodes onto the
shared taxonomy, and stores the revision with its diff and build stats.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import threading
import time
import weakref
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

import networkx as nx
import numpy as np
from numpy.typing import NDArray

from index.versioned import VersionedIndex
from taxonomy.errors import (
    DomainError,
    FieldViolation,
    InternalError,
    InvalidArgumentError,
    NotFoundError,
)
from taxonomy.events.history import HistoryItem
from taxonomy.events.service import EventLog, UserHistory
from taxonomy.models import (
    BuildStats,
    CatalogTaxonomyNode,
    InterestTree,
    Item,
    TextSource,
    TreeDiff,
)
from taxonomy.ports import CATALOG_VERSION_KEY, ChatModel, Embedder, Store
from taxonomy.recommendation.spaces import present_vectors
from taxonomy.shared_taxonomy.service import SharedTaxonomy
from taxonomy.trees.builder import BuilderConfig, build_data_tree, project_tree
from taxonomy.trees.diff import diff_trees
from taxonomy.trees.graph import ROOT, node_data, tree_from_graph
from taxonomy.trees.invariants import invariant_violations
from taxonomy.trees.naming import NamingMode, NamingStats, refine_tree

logger = logging.getLogger(__name__)

TREE_CACHE_USERS = 4096
"""Users whose parsed latest revision is kept (see `TreeService.live_tree_now`)."""


@dataclass(frozen=True)
class TreeConfig:
    naming_mode: NamingMode = NamingMode.CHOOSE
    llm_concurrency: int = 4
    builder: BuilderConfig = field(default_factory=BuilderConfig)
    batch_users_in_flight: int = 4
    naming_budget_s: float | None = 30.0
    """Time all model requests of one tree may take together; when it runs out the pending
    ones are cancelled and their nodes keep the data text (None: no limit)."""
    project_onto_taxonomy: bool = True
    """Once the catalog taxonomy is built, a tree is the history's projection onto it."""


@dataclass(frozen=True)
class BuildResult:
    tree: InterestTree
    naming: NamingStats


BuildObserver = Callable[[BuildResult | None, float, str], None]
"""Called after every build with its result (None on failure), seconds taken and outcome
("ok", "cancelled", or the error reason)."""


def tree_not_found(user_id: str) -> NotFoundError:
    return NotFoundError(
        f"user {user_id!r} has no interest tree yet; build it first",
        resource_type="interest_tree",
        resource_name=f"users/{user_id}/interestTree",
    )


def _build_stats(stats: NamingStats, *, incremental: bool) -> BuildStats:
    return BuildStats(
        incremental=incremental,
        model_requests=stats.requests,
        prompt_tokens=stats.prompt_tokens,
        completion_tokens=stats.completion_tokens,
        retries=stats.retries,
        failures=stats.failures,
        rejected=sum(stats.rejected.values()),
    )


def _keep_taxonomy_labels(graph: nx.DiGraph) -> None:
    """A projection's labels are the taxonomy's: in `free` mode the model may write a personal
    explanation, but a per-user label would break the mapping to the shared node."""
    for node in graph:
        if node != ROOT:
            data = node_data(graph, node)
            if data.candidates and data.label != data.candidates[0]:
                data.label = data.candidates[0]


def _has_model_labels(graph: nx.DiGraph) -> bool:
    return any(
        node_data(graph, node).label_source is TextSource.MODEL for node in graph if node != ROOT
    )


class TreeService:
    def __init__(
        self,
        store: Store,
        events: EventLog,
        catalog_index: VersionedIndex,
        taxonomy: SharedTaxonomy,
        embedder: Embedder,
        chat: ChatModel | None,
        write_lock: asyncio.Lock,
        config: TreeConfig,
    ) -> None:
        self._store = store
        self._events = events
        self._catalog_index = catalog_index
        self._taxonomy = taxonomy
        self._embedder = embedder
        self._chat = chat
        self._write_lock = write_lock
        self._config = config
        self._limiter = asyncio.Semaphore(config.llm_concurrency)
        # Weak values: a user's lock lives only while a build holds or awaits it.
        self._user_locks: weakref.WeakValueDictionary[str, asyncio.Lock] = (
            weakref.WeakValueDictionary()
        )
        self.observers: list[BuildObserver] = []
        # user -> (the revision as stored, catalog version its items were checked at, parsed).
        self._cache: OrderedDict[str, tuple[str, int, InterestTree]] = OrderedDict()
        self._cache_lock = threading.Lock()

    def _user_lock(self, user_id: str) -> asyncio.Lock:
        lock = self._user_locks.get(user_id)
        if lock is None:
            lock = self._user_locks[user_id] = asyncio.Lock()
        return lock

    def _bare_item_vectors(
        self, history: Sequence[HistoryItem], items: Mapping[str, Item]
    ) -> dict[str, NDArray[np.float32]]:
        """Text vectors of the history items that have neither categories nor tags."""
        index = self._catalog_index.index
        bare = [
            entry.item_id
            for entry in history
            if not items[entry.item_id].categories
            and not items[entry.item_id].tags
            and entry.item_id in index
        ]
        # An item deleted since the check is simply left out.
        return present_vectors(index.get_vectors, bare)

    async def build_tree(self, user_id: str, *, incremental: bool = True) -> BuildResult:
        """Builds and stores a new revision, telling every observer how it went. With
        `incremental`, nodes whose group barely changed since the last revision keep their
        model text and cost no model request."""
        started = time.perf_counter()
        outcome = "ok"
        result: BuildResult | None = None
        try:
            result = await self._build(user_id, incremental=incremental)
            return result
        except asyncio.CancelledError:
            outcome = "cancelled"
            raise
        except Exception as error:
            outcome = error.reason if isinstance(error, DomainError) else type(error).__name__
            raise
        finally:
            for observer in self.observers:
                observer(result, time.perf_counter() - started, outcome)

    async def _build(self, user_id: str, *, incremental: bool) -> BuildResult:
        await self._events.require_user(user_id)
        async with self._user_lock(user_id):
            loaded = await asyncio.to_thread(self._events.load_history, user_id)
            if not loaded.history:
                raise InvalidArgumentError(
                    f"user {user_id!r} has events only for items that were deleted",
                    [FieldViolation("user", "no history item is in the catalog")],
                    reason="EMPTY_HISTORY",
                )
            previous = await asyncio.to_thread(self._store.latest_tree, user_id)
            paths = await asyncio.to_thread(self._taxonomy_paths, loaded.history)
            vectors = (
                {}
                if paths is not None
                else await asyncio.to_thread(self._bare_item_vectors, loaded.history, loaded.items)
            )
            reuse = incremental and previous is not None and previous.model != ""
            tree, stats = await self._named_tree(user_id, loaded, vectors, previous, reuse, paths)
            tree = tree.model_copy(update={"build_stats": _build_stats(stats, incremental=reuse)})
            label_vectors = await self._embedder.embed([node.label for node in tree.nodes])
            diff = diff_trees(previous, tree)
            async with self._write_lock:
                tree = await asyncio.to_thread(self._taxonomy.store_tree, tree, diff, label_vectors)
            return BuildResult(tree=tree, naming=stats)

    def _taxonomy_paths(
        self, history: Sequence[HistoryItem]
    ) -> dict[str, list[CatalogTaxonomyNode]] | None:
        """Each history item's catalog-taxonomy nodes, or None when trees are not projected.
        Blocking: an item added since the taxonomy was built is placed by its text vector."""
        catalog = self._taxonomy.catalog
        if not self._config.project_onto_taxonomy or catalog is None or not catalog.built:
            return None
        paths: dict[str, list[CatalogTaxonomyNode]] = {}
        for entry in history:
            path = catalog.path(entry.item_id) or catalog.place(entry.item_id)
            if not path:
                return None
            paths[entry.item_id] = path
        return paths

    async def _named_tree(
        self,
        user_id: str,
        loaded: UserHistory,
        vectors: Mapping[str, NDArray[np.float32]],
        previous: InterestTree | None,
        reuse: bool,
        paths: Mapping[str, Sequence[CatalogTaxonomyNode]] | None = None,
    ) -> tuple[InterestTree, NamingStats]:
        """The data tree (or the projection) refined by the model; the unrefined one if the
        refined one breaks an invariant (the property tests show the unrefined never does)."""

        def data_graph() -> nx.DiGraph:
            if paths is not None:
                return project_tree(
                    loaded.history, loaded.items, paths, config=self._config.builder
                )
            return build_data_tree(
                user_id, loaded.history, loaded.items, config=self._config.builder, vectors=vectors
            )

        def to_tree(graph: nx.DiGraph, model: str) -> InterestTree:
            return tree_from_graph(
                graph,
                user_id=user_id,
                revision=(previous.revision if previous else 0) + 1,
                create_time=datetime.now(UTC),
                event_count=loaded.event_count,
                model=model,
            )

        graph = data_graph()
        stats = NamingStats()
        model = ""
        if self._chat is not None and self._config.naming_mode is not NamingMode.OFF:
            stats = await refine_tree(
                graph,
                loaded.items,
                self._chat,
                mode=self._config.naming_mode,
                limiter=self._limiter,
                previous={n.node_id: n for n in previous.nodes} if reuse and previous else None,
                budget_s=self._config.naming_budget_s,
            )
            if paths is not None:
                _keep_taxonomy_labels(graph)
            # A tree names its model only if some model answer shaped it (an incremental
            # build reuses earlier answers, a projection the taxonomy's names); otherwise it is
            # a data tree.
            if stats.answered or stats.reused or _has_model_labels(graph):
                model = self._chat.model_name
        tree = to_tree(graph, model)
        problems = invariant_violations(tree, {entry.item_id for entry in loaded.history})
        if problems:
            logger.error("model-refined tree of %s is invalid: %s", user_id, problems)
            stats.failures += 1
            tree = to_tree(data_graph(), "")
        return tree, stats

    async def get_tree(self, user_id: str) -> InterestTree:
        tree = await self._latest_live_tree(user_id)
        if tree is None:
            await self._events.require_user(user_id)
            raise tree_not_found(user_id)
        return tree

    async def get_or_build_tree(self, user_id: str) -> InterestTree:
        tree = await self._latest_live_tree(user_id)
        if tree is not None:
            return tree
        return (await self.build_tree(user_id)).tree

    async def _latest_live_tree(self, user_id: str) -> InterestTree | None:
        """The latest revision, rebuilt first if it cites an item deleted since: no tree or
        recommendation may cite a deleted item, and its weights must come from what remains."""
        tree, live = await asyncio.to_thread(self.live_tree_now, user_id)
        if tree is None or live:
            return tree
        return (await self.build_tree(user_id)).tree

    def live_tree_now(self, user_id: str) -> tuple[InterestTree | None, bool]:
        """Blocking: the latest revision (None without one) and whether every item it cites
        still exists (False: it must be rebuilt before it is served).

        Parsing a revision and looking up every cited item cost more than the rest of a
        Recommend, so the parsed tree is kept and re-checked only when the stored revision
        or the catalog version (bumped by every item write, deletes included) changed. Both
        are read from the store each time, so another replica's writes are seen at once."""
        text = self._store.latest_tree_json(user_id)
        if text is None:
            with self._cache_lock:
                self._cache.pop(user_id, None)
            return None, True
        # Read before the items are checked: a delete after the check moves it again.
        catalog = self._store.version(CATALOG_VERSION_KEY)
        with self._cache_lock:
            hit = self._cache.get(user_id)
            if hit is not None and hit[0] == text:
                self._cache.move_to_end(user_id)
                if hit[1] == catalog:
                    return hit[2], True
        tree = (
            hit[2] if hit is not None and hit[0] == text else InterestTree.model_validate_json(text)
        )
        cited = sorted({item for node in tree.nodes for item in node.evidence_items})
        found = self._store.get_items(cited)
        if len(found) != len(cited):
            logger.info(
                "rebuilding %s's tree: it cites %d deleted item(s)",
                user_id,
                len(cited) - len(found),
            )
            with self._cache_lock:
                self._cache.pop(user_id, None)
            return tree, False
        with self._cache_lock:
            self._cache[user_id] = (text, catalog, tree)
            self._cache.move_to_end(user_id)
            while len(self._cache) > TREE_CACHE_USERS:
                self._cache.popitem(last=False)
        return tree, True

    async def list_revisions(
        self, user_id: str, before_revision: int | None, limit: int
    ) -> list[tuple[InterestTree, TreeDiff]]:
        """Revisions older than `before_revision` (None: from the latest), newest first."""
        revisions = await asyncio.to_thread(
            self._store.tree_revisions,
            user_id,
            before_revision if before_revision is not None else 1 << 62,
            limit,
        )
        if not revisions and before_revision is None:
            await self.get_tree(user_id)  # raises the precise NOT_FOUND
        return revisions

    async def batch_build(
        self, user_ids: Sequence[str]
    ) -> AsyncIterator[tuple[str, BuildResult | DomainError]]:
        """Builds many users' trees with several in flight, yielding each as it completes.

        Every user yields exactly one result. A failure of one user is yielded, not raised: a
        DomainError as it is, anything else (logged with its traceback) as an InternalError.
        At most `batch_users_in_flight` builds run at once, in a window refilled as each one
        completes; their node requests share the model limiter, so vLLM sees a steady batch.
        When the consumer stops early, the builds still running are cancelled and awaited.
        """
        window = max(1, self._config.batch_users_in_flight)
        waiting = iter(user_ids)
        running: set[asyncio.Task[tuple[str, BuildResult | DomainError]]] = set()

        def refill() -> None:
            for user_id in itertools.islice(waiting, window - len(running)):
                running.add(asyncio.create_task(self._build_one(user_id)))

        try:
            refill()
            while running:
                done, _ = await asyncio.wait(running, return_when=asyncio.FIRST_COMPLETED)
                running.difference_update(done)
                refill()
                for task in done:
                    yield task.result()
        finally:
            for task in running:
                task.cancel()
            await asyncio.gather(*running, return_exceptions=True)

    async def _build_one(self, user_id: str) -> tuple[str, BuildResult | DomainError]:
        """One user's build as a result; only cancellation propagates."""
        try:
            return user_id, await self.build_tree(user_id)
        except DomainError as error:
            return user_id, error
        except Exception as error:
            logger.exception("building the interest tree of %s failed", user_id)
            return user_id, InternalError(
                f"building the interest tree failed unexpectedly ({type(error).__name__})"
            )
