"""Scores candidates for a user profile, with every score split exactly over the tree's nodes.

    score(x) = Σ_n c_n (v_n · x)  +  β Σ_n Σ_i share[n, i] b_i B[i, x]

The first sum is the fused-vector similarity u·x; the second, where the re-ranker is on, the
next-item model's score (b_i its history weighting). β = (1 - blend) / blend · std(u·x) / std(exact)
over the candidates, which ranks exactly like the blend of standardised scores it replaces,
while keeping the score linear in the nodes: the contributions add up to the score and the
returned order is the order of the scores.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

from index import VectorIndex
from taxonomy.models import InterestNode
from taxonomy.recommendation.profile import UserProfile
from taxonomy.recommendation.spaces import present_vectors

TransitionBlock = Callable[[Sequence[str], Sequence[str]], NDArray[np.float64]]
"""(history items, candidates) -> the next-item matrix B restricted to those rows and columns
(0 where the model lacks an item)."""


@dataclass(frozen=True)
class ScoredNode:
    node: InterestNode
    contribution: float


@dataclass(frozen=True)
class Recommendation:
    item_id: str
    score: float
    nodes: list[ScoredNode]
    """Every node with a non-zero contribution, strongest first; they add up to `score`."""
    reason: str
    because: list[str] = field(default_factory=list)
    """The evidence items of the named nodes closest to this item, which `reason` names
    (taxonomy/recommendation/reasons.py)."""


@dataclass(frozen=True)
class Reranker:
    history: list[str]
    """The history items the next-item model weighs."""
    weights: NDArray[np.float64]
    """b_i, the model's weighting of each history item."""
    transitions: TransitionBlock
    blend: float
    """Weight of the fused similarity against the next-item score, as in the z-score blend."""
    candidates: int
    """How many nearest items of the fused vector are re-scored."""


@dataclass(frozen=True)
class NodeScores:
    """Per-node parts of the candidates' scores: contributions = fused + beta * exact."""

    items: list[str]
    fused: NDArray[np.float64]
    """(nodes, items) c_n (v_n · x)."""
    exact: NDArray[np.float64]
    """(nodes, items) the nodes' shares of the next-item score (zeros without a re-ranker)."""

    def beta(self, blend: float) -> float:
        """Scale of the next-item score that ranks like the standardised-score blend."""
        if not self.items or blend <= 0:
            return 0.0
        spread = float(self.exact.sum(axis=0).std())
        if not spread > 0:
            return 0.0
        return (1 - blend) / blend * float(self.fused.sum(axis=0).std()) / spread

    def contributions(self, beta: float) -> NDArray[np.float64]:
        total: NDArray[np.float64] = self.fused + beta * self.exact
        return total


def node_scores(
    profile: UserProfile,
    index: VectorIndex,
    candidates: Sequence[str],
    reranker: Reranker | None,
) -> NodeScores:
    kept, vectors = _candidate_vectors(index, candidates, profile.vectors.shape[1])
    fused = profile.coefficients[:, None] * (profile.vectors @ vectors.T)
    exact = np.zeros_like(fused)
    if reranker is not None and reranker.history and kept:
        # History items no node holds (no vector on any level's time scale) have no node to
        # go to, so they are left out of the score as well.
        held = [k for k, item_id in enumerate(reranker.history) if item_id in profile.held_items]
        history = [reranker.history[k] for k in held]
        terms = reranker.weights[held, None] * reranker.transitions(history, kept)
        exact = profile.item_shares(history) @ terms
    return NodeScores(kept, fused, exact)


def _candidate_vectors(
    index: VectorIndex, candidates: Sequence[str], dim: int
) -> tuple[list[str], NDArray[np.float64]]:
    """The candidates still indexed and their vectors, as one matrix."""
    if candidates:
        try:
            # One gather; row-by-row stacking cost as much as the scoring itself.
            return list(candidates), index.get_vectors(candidates).astype(np.float64)
        except KeyError:
            pass  # a candidate deleted since the query
    found = present_vectors(index.get_vectors, candidates)
    if not found:
        return [], np.zeros((0, dim))
    return list(found), np.stack(list(found.values())).astype(np.float64)


def rank(
    profile: UserProfile,
    items: Sequence[str],
    contributions: NDArray[np.float64],
    page_size: int,
    first: int | None = None,
) -> list[Recommendation]:
    """The best `page_size` candidates by score; `first` puts one node first in node_ids."""
    scores = contributions.sum(axis=0)
    order = np.argsort(-scores, kind="stable")[:page_size]
    results: list[Recommendation] = []
    for column in order.tolist():
        parts = contributions[:, column]
        rows = [int(r) for r in np.argsort(-np.abs(parts), kind="stable") if parts[r] != 0]
        if first is not None and first in rows:
            rows.remove(first)
            rows.insert(0, first)
        scored = [ScoredNode(profile.nodes[r], float(parts[r])) for r in rows]
        results.append(Recommendation(items[column], float(scores[column]), scored, reason(scored)))
    return results


def reason(nodes: Sequence[ScoredNode], because: Sequence[str] = ()) -> str:
    """One line: the strongest one or two nodes, then the items of their evidence that are
    closest to the recommended item (`because`, as titles), so that two items brought by one
    interest give different reasons."""
    if not nodes:
        return "Close to your interests."
    first = nodes[0].node
    text = f"Because of your interest in {first.label} (level {first.level})"
    if len(nodes) > 1:
        second = nodes[1].node
        text += f" and {second.label} (level {second.level})"
    if because:
        text += ": close to " + " and ".join(f"\u201c{title}\u201d" for title in because)
    return text + "."
