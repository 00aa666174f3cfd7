"""Fused-vector retrieval over one vector space, with exact per-node attribution.

A space has index-side item vectors (in an HnswIndex) and query-side vectors (the same for
text embeddings; the context vectors for the collaborative model), plus per-item weights
`a_i` for the user's history. For a tree with level weights `w_l`:

    node vector  v_n = Σ_{i∈n} a_i q_i / A_n,        A_n = Σ_{i∈n} a_i
    level vector v_l = Σ_n (A_n / A_l) v_n,           A_l = Σ_{n∈l} A_n
    user vector  u   = Σ_l w_l v_l

so an item's score u·x splits exactly into node terms w_l (A_n / A_l) v_n·x: the attribution
(scaled to add up to the reported score).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from index import fuse_levels, node_contributions, weighted_mean
from taxonomy.models import InterestNode, InterestTree
from taxonomy.recommendation.spaces import VectorSpace

MAX_ATTRIBUTED_NODES = 3


@dataclass(frozen=True)
class ScoredNode:
    node: InterestNode
    contribution: float


@dataclass(frozen=True)
class Recommendation:
    item_id: str
    score: float
    nodes: list[ScoredNode]
    reason: str


def recommend(
    tree: InterestTree,
    level_weights: Sequence[float],
    item_weights: Mapping[str, float],
    space: VectorSpace,
    *,
    page_size: int,
    exclude: set[str],
    rerank: Callable[[list[tuple[str, float]]], list[tuple[str, float]]] | None = None,
    rerank_candidates: int = 0,
) -> list[Recommendation]:
    """Top items for the fused vector. With `rerank`, the best `rerank_candidates` HNSW hits are
    re-scored by it and `score` is its score; node contributions always split the fused-vector
    similarity u·x of the item."""
    nodes: list[InterestNode] = []
    node_vectors: list[NDArray[np.float32]] = []
    coefficients: list[float] = []
    level_vectors: list[NDArray[np.float32]] = []
    used_weights: list[float] = []
    for level in range(1, tree.depth + 1):
        level_weight = level_weights[level - 1]
        if level_weight <= 0:
            continue
        members: list[tuple[InterestNode, float, NDArray[np.float32]]] = []
        for node in tree.level_nodes(level):
            present = [
                i for i in node.evidence_items if space.has_vector(i) and item_weights.get(i, 0) > 0
            ]
            if not present:
                continue
            weights = [item_weights[i] for i in present]
            mean = weighted_mean(space.query_vectors(present), weights)
            members.append((node, sum(weights), mean))
        level_mass = sum(mass for _, mass, _ in members)
        if level_mass <= 0:
            continue
        level_vectors.append(
            np.sum([mass / level_mass * vector for _, mass, vector in members], axis=0)
        )
        used_weights.append(level_weight)
        for node, mass, vector in members:
            nodes.append(node)
            node_vectors.append(vector)
            coefficients.append(level_weight * mass / level_mass)
    if not level_vectors:
        return []
    user_vector = fuse_levels(level_vectors, used_weights)
    norm = float(np.linalg.norm(user_vector))
    if norm == 0:
        return []
    pool = max(page_size, rerank_candidates if rerank is not None else 0)
    hits = space.index.query(user_vector, pool, exclude=exclude)
    if not hits:
        return []
    similarity = dict(hits)
    if rerank is not None:
        hits = rerank(hits)
    hits = hits[:page_size]
    matrix = np.stack(node_vectors)
    item_vectors = space.index.get_vectors([item_id for item_id, _ in hits])
    results: list[Recommendation] = []
    for (item_id, score), item_vector in zip(hits, item_vectors, strict=True):
        contributions = node_contributions(item_vector, matrix, coefficients)
        # Scaled so the node terms add up to the item's fused-vector similarity, whatever the
        # space's metric (cosine divides u·x by |u|).
        total = float(contributions.sum())
        if total != 0:
            contributions = contributions * (similarity[item_id] / total)
        order = np.argsort(-contributions)[:MAX_ATTRIBUTED_NODES]
        scored = [
            ScoredNode(nodes[i], float(contributions[i])) for i in order if contributions[i] > 0
        ] or [ScoredNode(nodes[int(order[0])], float(contributions[int(order[0])]))]
        results.append(Recommendation(item_id, score, scored, _reason(scored)))
    return results


def _reason(nodes: Sequence[ScoredNode]) -> str:
    first = nodes[0].node
    reason = f"Because of your interest in {first.label} (level {first.level})"
    if len(nodes) > 1:
        second = nodes[1].node
        reason += f" and {second.label} (level {second.level})"
    return reason + "."
