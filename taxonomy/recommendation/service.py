"""The recommendation room: which vector space serves a user, the level-weight policy, each
level's time scale, the caller's filters, the re-ranker wiring, and the collaborative model
currently serving."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from index.versioned import VersionedIndex
from taxonomy.errors import FieldViolation, InvalidArgumentError, NotFoundError
from taxonomy.events.history import event_weight, is_interest, negative_feedback
from taxonomy.events.service import EventLog
from taxonomy.models import Event, EventType, InterestNode, InterestTree
from taxonomy.ports import Store
from taxonomy.recommendation.candidates import ItemFilter, Pool
from taxonomy.recommendation.collaborative_space import CollaborativeRetrieval, build_retrieval
from taxonomy.recommendation.levels import LevelTimeScales, level_item_weights
from taxonomy.recommendation.lists import Slate, UserQuery, flat_list, slates
from taxonomy.recommendation.model_files import load_model
from taxonomy.recommendation.negative import DEFAULT_DISLIKE_WEIGHT, push_away
from taxonomy.recommendation.profile import build_profile
from taxonomy.recommendation.reasons import with_evidence, with_titles
from taxonomy.recommendation.rerank import RerankConfig
from taxonomy.recommendation.scoring import Recommendation
from taxonomy.recommendation.similar import (
    SimilarQuery,
    SimilarResult,
    describe,
    nearest_items,
    page_of,
)
from taxonomy.recommendation.spaces import VectorSpace, text_space
from taxonomy.trees.builder import build_data_tree
from taxonomy.trees.graph import tree_from_graph
from taxonomy.trees.service import TreeService

logger = logging.getLogger(__name__)

SESSION_USER = "session"
"""The user id of an anonymous session's transient tree (Recommend's context_items)."""


def item_not_found(item_id: str) -> NotFoundError:
    """As the catalog room says it (taxonomy/catalog/service.py)."""
    return NotFoundError(
        f"item {item_id!r} does not exist", resource_type="item", resource_name=f"items/{item_id}"
    )


@dataclass(frozen=True)
class RecommendConfig:
    default_level_weights: tuple[float, ...] = (0.2, 0.8, 0.8, 0.8)
    hnsw_ef_search: int = 128
    retrieval: str = "auto"
    """"auto": collaborative vectors once trained (text for users without any), "text": text
    embeddings only."""
    rerank: RerankConfig | None = field(default_factory=RerankConfig)
    """Re-scoring of the top HNSW candidates with the full-rank next-item model; None disables."""
    time_scales: LevelTimeScales = field(default_factory=LevelTimeScales)
    dislike_weight: float = DEFAULT_DISLIKE_WEIGHT
    """λ of the disliked items' vector subtracted from every node's (recommendation/negative.py)."""


@dataclass(frozen=True)
class LevelExplanation:
    """One level of a tree as the fused vector sees it: its weight and its nodes, heaviest
    first."""

    level: int
    weight: float
    nodes: list[InterestNode]


@dataclass(frozen=True)
class RecommendQuery:
    user_id: str
    page_size: int
    level_weights: Sequence[float] | None = None
    include_seen: bool = False
    item_filter: ItemFilter = field(default_factory=ItemFilter)
    interest_quota: int = 0
    context_items: tuple[str, ...] = ()
    """With no user_id: an anonymous session's items, oldest first (a transient tree)."""
    allow_fallback: bool = False
    """An unknown user (or a session of unknown items) gets the popular list, not NOT_FOUND."""


@dataclass(frozen=True)
class InterestSlatesQuery:
    user_id: str
    level: int
    """1 = coarsest; 0 = the deepest level of the user's tree."""
    max_interests: int
    page_size: int
    include_seen: bool = False
    item_filter: ItemFilter = field(default_factory=ItemFilter)


@dataclass(frozen=True)
class RecommendResult:
    recommendations: list[Recommendation]
    tree_revision: int
    level_weights: list[float]
    fallback: bool = False
    """The popular-items list of `allow_fallback`: no tree behind it, no nodes named."""


@dataclass(frozen=True)
class SlatesResult:
    slates: list[Slate]
    tree_revision: int


class Recommender:
    def __init__(
        self,
        store: Store,
        events: EventLog,
        trees: TreeService,
        catalog_index: VersionedIndex,
        models_dir: Path,
        config: RecommendConfig,
    ) -> None:
        self._store = store
        self._events = events
        self._trees = trees
        self._catalog_index = catalog_index
        self._models_dir = models_dir
        self._config = config
        self.collaborative: CollaborativeRetrieval | None = None
        self._popular: tuple[int, list[tuple[str, int]]] | None = None
        """(event count it was computed at, items by how many users interacted with them)."""

    def load_collaborative(self) -> None:
        """Blocking: serves the saved collaborative model, if there is one."""
        loaded = load_model(self._models_dir)
        if loaded is not None:
            model, event_count = loaded
            live = set(self._catalog_index.index.ids())
            self.collaborative = build_retrieval(
                model, event_count, self._config.hnsw_ef_search, live
            )

    def forget_items(self, item_ids: Sequence[str]) -> None:
        """Deleted items leave the serving model's index at once."""
        if self.collaborative is not None:
            self.collaborative.forget(item_ids)

    def place_items(self, item_ids: Sequence[str], vectors: NDArray[np.float32]) -> None:
        """Items upserted after training join the serving model's index at once, placed from
        their text or caller vectors by the model's feature map (items it learned from events
        keep their learned vector)."""
        if self.collaborative is not None:
            self.collaborative.place(item_ids, vectors)

    @property
    def collaborative_event_count(self) -> int | None:
        """Events the serving collaborative model was trained on; None before the first."""
        return self.collaborative.event_count if self.collaborative is not None else None

    def level_weights(self, depth: int, requested: Sequence[float] | None) -> list[float]:
        """Weights for levels 1..depth: requested ones as given, else the configured defaults."""
        source = list(requested) if requested else list(self._config.default_level_weights)
        return [source[level] if level < len(source) else 0.0 for level in range(depth)]

    def explain_levels(self, tree: InterestTree) -> list[LevelExplanation]:
        weights = self.level_weights(tree.depth, None)
        return [
            LevelExplanation(
                level,
                weights[level - 1],
                sorted(tree.level_nodes(level), key=lambda node: -node.weight),
            )
            for level in range(1, tree.depth + 1)
        ]

    def _prepared_now(
        self, user_id: str, include_seen: bool, item_filter: ItemFilter
    ) -> tuple[InterestTree, list[Event], Pool] | None:
        """Blocking: the user's tree, events and pool when a servable tree is stored (so the
        user exists and no user-exists query is needed); None when it must be built first."""
        tree, live = self._trees.live_tree_now(user_id)
        if tree is None or not live:
            return None
        events = self._events.events_now(user_id)
        return tree, events, self._user_pool(events, include_seen, item_filter)

    def _user_pool(
        self, events: Sequence[Event], include_seen: bool, item_filter: ItemFilter
    ) -> Pool:
        exclude = set() if include_seen else {event.item_id for event in events}
        exclude |= item_filter.exclude_items
        # A hidden item never comes back, include_seen or not.
        exclude |= negative_feedback(events).hidden
        return self._pool_now(exclude, item_filter)

    async def _prepare(
        self, user_id: str, include_seen: bool, item_filter: ItemFilter
    ) -> tuple[InterestTree, list[Event], Pool]:
        ready = await asyncio.to_thread(self._prepared_now, user_id, include_seen, item_filter)
        if ready is not None:
            return ready
        return await self._prepare_slow(user_id, include_seen, item_filter)

    async def _prepare_slow(
        self, user_id: str, include_seen: bool, item_filter: ItemFilter
    ) -> tuple[InterestTree, list[Event], Pool]:
        """No servable tree: NOT_FOUND for an unknown user, else (re)build it."""
        await self._events.require_user(user_id)
        tree = await self._trees.get_or_build_tree(user_id)
        events = await self._events.user_events(user_id)
        pool = await asyncio.to_thread(self._user_pool, events, include_seen, item_filter)
        return tree, events, pool

    async def _pool(self, exclude: set[str], item_filter: ItemFilter) -> Pool:
        if not item_filter.categories:
            return self._pool_now(exclude, item_filter)
        return await asyncio.to_thread(self._pool_now, exclude, item_filter)

    def _pool_now(self, exclude: set[str], item_filter: ItemFilter) -> Pool:
        """Blocking when the filter names categories (a store query)."""
        allowed: set[str] | None = None
        if item_filter.categories:
            allowed = self._store.item_ids_in_categories(item_filter.categories)
        if item_filter.candidate_items is not None:
            wanted = set(item_filter.candidate_items)
            allowed = wanted if allowed is None else allowed & wanted
        return Pool(exclude, allowed)

    async def recommend(self, query: RecommendQuery) -> RecommendResult:
        if not query.user_id:
            return await self._recommend_session(query)

        def fast() -> RecommendResult | None:
            # One thread hop for the common case: store reads, vector math and titles.
            ready = self._prepared_now(query.user_id, query.include_seen, query.item_filter)
            if ready is None:
                return None
            tree, events, pool = ready
            return self._recommend_now(tree, events, pool, query)

        done = await asyncio.to_thread(fast)
        if done is not None:
            return done
        if query.allow_fallback and not await asyncio.to_thread(
            self._store.user_exists, query.user_id
        ):
            return await self._fallback(query)
        tree, events, pool = await self._prepare_slow(
            query.user_id, query.include_seen, query.item_filter
        )
        return await self._recommend_from(tree, events, pool, query)

    async def _recommend_session(self, query: RecommendQuery) -> RecommendResult:
        """An anonymous session: a transient data tree of its known items, stored nowhere."""
        found = await asyncio.to_thread(self._store.get_items, list(query.context_items))
        known = list(dict.fromkeys(i for i in query.context_items if i in found))
        if not known:
            if query.allow_fallback:
                return await self._fallback(query)
            raise InvalidArgumentError(
                "no context item is in the catalog",
                [FieldViolation("context_items", "none of the items exists")],
                reason="UNKNOWN_CONTEXT_ITEMS",
            )
        now = datetime.now(UTC)
        events = [
            Event(
                user_id=SESSION_USER,
                item_id=item_id,
                event_type=EventType.VIEW,
                event_time=now - timedelta(seconds=len(known) - position),
            )
            for position, item_id in enumerate(known)
        ]
        graph = build_data_tree(SESSION_USER, self._events.summarize(events), found)
        tree = tree_from_graph(
            graph,
            user_id=SESSION_USER,
            revision=0,
            create_time=now,
            event_count=len(events),
            model="",
        )
        exclude = set() if query.include_seen else set(known)
        pool = await self._pool(exclude | query.item_filter.exclude_items, query.item_filter)
        return await self._recommend_from(tree, events, pool, query)

    async def _fallback(self, query: RecommendQuery) -> RecommendResult:
        """The most popular items the filters allow, by how many users interacted with them."""
        pool = await self._pool(set(query.item_filter.exclude_items), query.item_filter)
        popular = await asyncio.to_thread(self._popular_items)
        chosen = [
            (item_id, users)
            for item_id, users in popular
            if item_id not in pool.exclude and (pool.allowed is None or item_id in pool.allowed)
        ][: query.page_size]
        most = max((users for _, users in chosen), default=1)
        recommendations = [
            Recommendation(
                item_id,
                users / most,
                [],
                f"Popular: {users} {'user' if users == 1 else 'users'} interacted with it.",
            )
            for item_id, users in chosen
        ]
        return RecommendResult(recommendations, 0, [], fallback=True)

    def _popular_items(self) -> list[tuple[str, int]]:
        """Blocking: catalog items by how many users showed interest in them, most first;
        recomputed when the event count changed."""
        count = self._store.event_count()
        if self._popular is not None and self._popular[0] == count:
            return self._popular[1]
        users: dict[str, int] = {}
        for _, sequence in self._store.all_sequences():
            for item_id in {event.item_id for event in sequence if is_interest(event)}:
                users[item_id] = users.get(item_id, 0) + 1
        live = self._catalog_index.index
        ranked = sorted(
            ((item_id, n) for item_id, n in users.items() if item_id in live),
            key=lambda pair: (-pair[1], pair[0]),
        )
        self._popular = (count, ranked)
        return ranked

    async def _recommend_from(
        self, tree: InterestTree, events: Sequence[Event], pool: Pool, query: RecommendQuery
    ) -> RecommendResult:
        return await asyncio.to_thread(self._recommend_now, tree, events, pool, query)

    def _recommend_now(
        self, tree: InterestTree, events: Sequence[Event], pool: Pool, query: RecommendQuery
    ) -> RecommendResult:
        """Blocking: the flat list, titled."""
        weights = self.level_weights(tree.depth, query.level_weights)
        if sum(weights) <= 0:
            # Requested weights may cover only levels this tree lacks; a known user still gets
            # recommendations, and the response says which weights were applied.
            weights = self.level_weights(tree.depth, None)
        user = self._user_query(tree, weights, events)
        if user is None:
            return RecommendResult([], tree.revision, weights)
        listed = flat_list(user, query.page_size, pool, query.interest_quota)
        recommendations = self._titled_now(with_evidence(listed, user.space.index))
        return RecommendResult(recommendations, tree.revision, weights)

    async def recommend_by_interest(self, query: InterestSlatesQuery) -> SlatesResult:
        tree, events, pool = await self._prepare(
            query.user_id, query.include_seen, query.item_filter
        )
        if query.level > tree.depth:
            raise InvalidArgumentError(
                f"the tree of {query.user_id!r} has {tree.depth} level(s)",
                [FieldViolation("level", f"must be 0 to {tree.depth}, got {query.level}")],
                reason="INVALID_LEVEL",
            )
        level = query.level or tree.depth
        weights = [1.0 if k + 1 == level else 0.0 for k in range(tree.depth)]

        def run() -> list[Slate]:
            user = self._user_query(tree, weights, events)
            if user is None:
                return []
            return [
                replace(
                    slate, recommendations=with_evidence(slate.recommendations, user.space.index)
                )
                for slate in slates(user, level, query.max_interests, query.page_size, pool)
            ]

        found = await asyncio.to_thread(run)
        return SlatesResult(
            [replace(s, recommendations=await self._titled(s.recommendations)) for s in found],
            tree.revision,
        )

    async def similar_items(self, query: SimilarQuery) -> SimilarResult:
        """The items nearest to one item, with reasons (taxonomy/recommendation/similar.py)."""
        found = await asyncio.to_thread(self._store.get_items, [query.item_id])
        if query.item_id not in found:
            raise item_not_found(query.item_id)
        source = found[query.item_id]
        pool = await self._pool(set(query.item_filter.exclude_items), query.item_filter)

        def run() -> tuple[list[tuple[str, float]], str]:
            collaborative = self.collaborative
            if collaborative is not None and self._config.retrieval != "text":
                scored = nearest_items(collaborative.space, query.item_id, query.search_size, pool)
                if scored:
                    return scored, collaborative.space.name
            space = text_space(self._catalog_index.index)
            return nearest_items(space, query.item_id, query.search_size, pool), space.name

        scored, space = await asyncio.to_thread(run)
        scored, next_offset = page_of(query, scored)
        items = await asyncio.to_thread(self._store.get_items, [i for i, _ in scored])
        return SimilarResult(describe(source, scored, items, space), space, next_offset)

    async def _titled(self, recommendations: Sequence[Recommendation]) -> list[Recommendation]:
        if not any(rec.because for rec in recommendations):
            return list(recommendations)
        return await asyncio.to_thread(self._titled_now, recommendations)

    def _titled_now(self, recommendations: Sequence[Recommendation]) -> list[Recommendation]:
        """Blocking: reasons that name the items they cite by title
        (taxonomy/recommendation/reasons.py)."""
        cited = sorted({item for rec in recommendations for item in rec.because})
        if not cited:
            return list(recommendations)
        return with_titles(recommendations, self._store.item_titles(cited))

    def _user_query(
        self, tree: InterestTree, weights: Sequence[float], events: Sequence[Event]
    ) -> UserQuery | None:
        """The user in the collaborative space when it knows some of their items, else in the
        text space. Negative feedback is no interest: dislikes push similar items down."""
        disliked = negative_feedback(events).disliked
        events = [event for event in events if is_interest(event)]
        collaborative = self.collaborative
        if collaborative is not None and self._config.retrieval != "text":
            user = self._profile_in(collaborative.space, tree, weights, events, disliked)
            if user is not None:
                rerank = self._config.rerank
                reranker = collaborative.reranker(events, event_weight, rerank) if rerank else None
                return UserQuery(user.profile, user.space, reranker)
        space = text_space(self._catalog_index.index)
        return self._profile_in(space, tree, weights, events, disliked)

    def _profile_in(
        self,
        space: VectorSpace,
        tree: InterestTree,
        weights: Sequence[float],
        events: Sequence[Event],
        disliked: Mapping[str, float],
    ) -> UserQuery | None:
        scales = self._config.time_scales
        per_level = [
            level_item_weights(
                events, scales.for_level(level, tree.depth), event_weight, space.has_vector
            )
            for level in range(1, tree.depth + 1)
        ]
        profile = build_profile(tree, weights, per_level, space)
        if profile is None:
            return None
        pushed = push_away(profile, space, disliked, self._config.dislike_weight)
        return UserQuery(pushed, space, None)
