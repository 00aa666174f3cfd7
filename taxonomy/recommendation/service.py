"""The recommendation room: which vector space serves a user, the level-weight policy, the
re-ranker wiring, and the collaborative model currently serving."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from index.versioned import VersionedIndex
from taxonomy.events.service import EventLog
from taxonomy.models import Event, InterestNode, InterestTree
from taxonomy.recommendation.collaborative_space import CollaborativeRetrieval, build_retrieval
from taxonomy.recommendation.model_files import load_model
from taxonomy.recommendation.rerank import RerankConfig
from taxonomy.recommendation.retrieval import Recommendation, recommend
from taxonomy.recommendation.spaces import text_space
from taxonomy.trees.service import TreeService

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class RecommendConfig:
    default_level_weights: tuple[float, ...] = (0.15, 0.25, 0.3, 0.3)
    hnsw_ef_search: int = 128
    retrieval: str = "auto"
    """"auto": collaborative vectors once trained (text for users without any), "text": text
    embeddings only."""
    rerank: RerankConfig | None = field(default_factory=RerankConfig)
    """Re-scoring of the top HNSW candidates with the full-rank next-item model; None disables."""


@dataclass(frozen=True)
class LevelExplanation:
    """One level of a tree as the fused vector sees it: its weight and its nodes, heaviest
    first."""

    level: int
    weight: float
    nodes: list[InterestNode]


@dataclass(frozen=True)
class RecommendResult:
    recommendations: list[Recommendation]
    tree_revision: int
    level_weights: list[float]


class Recommender:
    def __init__(
        self,
        events: EventLog,
        trees: TreeService,
        catalog_index: VersionedIndex,
        models_dir: Path,
        config: RecommendConfig,
    ) -> None:
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

    async def recommend(
        self,
        user_id: str,
        *,
        page_size: int,
        level_weights: Sequence[float] | None,
        include_seen: bool,
    ) -> RecommendResult:
        await self._events.require_user(user_id)
        tree = await self._trees.get_or_build_tree(user_id)
        weights = self.level_weights(tree.depth, level_weights)
        if sum(weights) <= 0:
            # Requested weights may cover only levels this tree lacks; a known user still gets
            # recommendations, and the response says which weights were applied.
            weights = self.level_weights(tree.depth, None)
        events = await self._events.user_events(user_id)
        exclude = set() if include_seen else {event.item_id for event in events}
        recommendations = await asyncio.to_thread(
            self._recommend_sync, tree, weights, page_size, exclude, events
        )
        return RecommendResult(recommendations, tree.revision, weights)

    def _recommend_sync(
        self,
        tree: InterestTree,
        weights: Sequence[float],
        page_size: int,
        exclude: set[str],
        events: Sequence[Event],
    ) -> list[Recommendation]:
        collaborative = self.collaborative
        rerank = self._config.rerank
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
                    rerank=collaborative.reranker(events, rerank) if rerank is not None else None,
                    rerank_candidates=rerank.k if rerank is not None else 0,
                )
        history = self._events.summarize(events)
        return recommend(
            tree,
            weights,
            {entry.item_id: entry.strength for entry in history},
            text_space(self._catalog_index.index),
            page_size=page_size,
            exclude=exclude,
        )
