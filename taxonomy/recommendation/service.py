"""The recommendation room: which vector space serves a user, the level-weight policy, each
level's time scale, the caller's filters, the re-ranker wiring, and the collaborative model
currently serving."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from index.versioned import VersionedIndex
from taxonomy.errors import FieldViolation, InvalidArgumentError
from taxonomy.events.history import event_weight
from taxonomy.events.service import EventLog
from taxonomy.models import Event, InterestNode, InterestTree
from taxonomy.ports import Store
from taxonomy.recommendation.candidates import ItemFilter, Pool
from taxonomy.recommendation.collaborative_space import CollaborativeRetrieval, build_retrieval
from taxonomy.recommendation.levels import LevelTimeScales, level_item_weights
from taxonomy.recommendation.lists import Slate, UserQuery, flat_list, slates
from taxonomy.recommendation.model_files import load_model
from taxonomy.recommendation.profile import build_profile
from taxonomy.recommendation.rerank import RerankConfig
from taxonomy.recommendation.scoring import Recommendation
from taxonomy.recommendation.spaces import VectorSpace, text_space
from taxonomy.trees.service import TreeService

logger = logging.getLogger(__name__)


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

    async def _prepare(
        self, user_id: str, include_seen: bool, item_filter: ItemFilter
    ) -> tuple[InterestTree, list[Event], Pool]:
        await self._events.require_user(user_id)
        tree = await self._trees.get_or_build_tree(user_id)
        events = await self._events.user_events(user_id)
        exclude = set() if include_seen else {event.item_id for event in events}
        exclude |= item_filter.exclude_items
        allowed: set[str] | None = None
        if item_filter.categories:
            allowed = await asyncio.to_thread(
                self._store.item_ids_in_categories, item_filter.categories
            )
        if item_filter.candidate_items is not None:
            wanted = set(item_filter.candidate_items)
            allowed = wanted if allowed is None else allowed & wanted
        return tree, events, Pool(exclude, allowed)

    async def recommend(self, query: RecommendQuery) -> RecommendResult:
        tree, events, pool = await self._prepare(
            query.user_id, query.include_seen, query.item_filter
        )
        weights = self.level_weights(tree.depth, query.level_weights)
        if sum(weights) <= 0:
            # Requested weights may cover only levels this tree lacks; a known user still gets
            # recommendations, and the response says which weights were applied.
            weights = self.level_weights(tree.depth, None)

        def run() -> list[Recommendation]:
            user = self._user_query(tree, weights, events)
            if user is None:
                return []
            return flat_list(user, query.page_size, pool, query.interest_quota)

        return RecommendResult(await asyncio.to_thread(run), tree.revision, weights)

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
            return slates(user, level, query.max_interests, query.page_size, pool)

        return SlatesResult(await asyncio.to_thread(run), tree.revision)

    def _user_query(
        self, tree: InterestTree, weights: Sequence[float], events: Sequence[Event]
    ) -> UserQuery | None:
        """The user in the collaborative space when it knows some of their items, else in the
        text space."""
        collaborative = self.collaborative
        if collaborative is not None and self._config.retrieval != "text":
            user = self._profile_in(collaborative.space, tree, weights, events)
            if user is not None:
                rerank = self._config.rerank
                reranker = collaborative.reranker(events, event_weight, rerank) if rerank else None
                return UserQuery(user.profile, user.space, reranker)
        return self._profile_in(text_space(self._catalog_index.index), tree, weights, events)

    def _profile_in(
        self,
        space: VectorSpace,
        tree: InterestTree,
        weights: Sequence[float],
        events: Sequence[Event],
    ) -> UserQuery | None:
        scales = self._config.time_scales
        per_level = [
            level_item_weights(
                events, scales.for_level(level, tree.depth), event_weight, space.has_vector
            )
            for level in range(1, tree.depth + 1)
        ]
        profile = build_profile(tree, weights, per_level, space)
        return UserQuery(profile, space, None) if profile is not None else None
