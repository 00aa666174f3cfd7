"""A user's tree in one vector space: every node's vector and its coefficient in the fused
vector, and the split of the re-ranker's next-item score over the nodes.

For level l with weight w_l, its own time scale giving history weights a_i^(l), and node n:

    v_n = Σ_{i∈n} a_i^(l) q_i / A_n        A_n = Σ_{i∈n} a_i^(l),  A_l = Σ_{n∈l} A_n
    u   = Σ_l w_l Σ_{n∈l} (A_n / A_l) v_n  = Σ_n c_n v_n

so u·x splits exactly into node terms c_n (v_n·x). The re-ranker's score Σ_i b_i B[i, x] is a
sum over history items too: item i's term goes to the nodes that hold it at the weighted levels,
split by level weight, so it splits exactly as well.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property

import numpy as np
from numpy.typing import NDArray

from index import weighted_mean
from taxonomy.models import InterestNode, InterestTree
from taxonomy.recommendation.spaces import VectorSpace, present_vectors


@dataclass(frozen=True)
class UserProfile:
    nodes: list[InterestNode]
    """Every node with a vector in the space, in tree order."""
    vectors: NDArray[np.float64]
    """Row k: the vector of nodes[k] on its level's time scale."""
    coefficients: NDArray[np.float64]
    """c_n of each node in the fused vector (0 on levels of weight 0)."""
    interests: list[str]
    """The level-1 ancestor (or the node itself) of each node: the interest it belongs to."""

    @property
    def user_vector(self) -> NDArray[np.float64]:
        vector: NDArray[np.float64] = self.coefficients @ self.vectors
        return vector

    def only(self, row: int) -> UserProfile:
        """The profile of one node alone, with coefficient 1: what a slate retrieves with."""
        return UserProfile(
            [self.nodes[row]],
            self.vectors[row : row + 1],
            np.ones(1, dtype=np.float64),
            [self.interests[row]],
        )

    @cached_property
    def held_items(self) -> frozenset[str]:
        """Every history item some node of the profile holds."""
        return frozenset(item for node in self.nodes for item in node.evidence_items)

    def item_shares(self, history_items: Sequence[str]) -> NDArray[np.float64]:
        """(nodes, history items): how each item's re-ranker term is split over the nodes.

        An item goes to the nodes holding it on weighted levels, in proportion to the level
        weights; an item on no weighted level goes to its coarsest node, so the shares of every
        item add up to 1."""
        column = {item_id: k for k, item_id in enumerate(history_items)}
        level_weights = _level_weights_of(self)
        shares = np.zeros((len(self.nodes), len(history_items)), dtype=np.float64)
        coarsest: dict[str, int] = {}
        for row, node in enumerate(self.nodes):
            for item_id in node.evidence_items:
                col = column.get(item_id)
                if col is None:
                    continue
                shares[row, col] = level_weights.get(node.level, 0.0)
                if item_id not in coarsest or node.level < self.nodes[coarsest[item_id]].level:
                    coarsest[item_id] = row
        totals = shares.sum(axis=0)
        for item_id, row in coarsest.items():
            col = column[item_id]
            if totals[col] > 0:
                shares[:, col] /= totals[col]
            else:
                shares[row, col] = 1.0
        return shares


def _level_weights_of(profile: UserProfile) -> dict[int, float]:
    """w_l per level, recovered from the coefficients (they sum to w_l over a level)."""
    weights: dict[int, float] = {}
    for node, coefficient in zip(profile.nodes, profile.coefficients, strict=True):
        weights[node.level] = weights.get(node.level, 0.0) + float(coefficient)
    return weights


def build_profile(
    tree: InterestTree,
    level_weights: Sequence[float],
    level_item_weights: Sequence[Mapping[str, float]],
    space: VectorSpace,
) -> UserProfile | None:
    """None when no node has a vector in the space or every weighted level is empty."""
    nodes: list[InterestNode] = []
    vectors: list[NDArray[np.float32]] = []
    coefficients: list[float] = []
    for level in range(1, tree.depth + 1):
        item_weights = level_item_weights[level - 1]
        members: list[tuple[InterestNode, float, NDArray[np.float32]]] = []
        for node in tree.level_nodes(level):
            wanted = [i for i in node.evidence_items if item_weights.get(i, 0.0) > 0]
            found = present_vectors(space.query_vectors, wanted)
            if not found:
                continue
            weights = [item_weights[i] for i in found]
            members.append((node, sum(weights), weighted_mean(list(found.values()), weights)))
        level_mass = sum(mass for _, mass, _ in members)
        for node, mass, vector in members:
            nodes.append(node)
            vectors.append(vector)
            coefficients.append(level_weights[level - 1] * mass / level_mass)
    if not nodes or not any(coefficients):
        return None
    return UserProfile(
        nodes,
        np.stack(vectors).astype(np.float64),
        np.asarray(coefficients, dtype=np.float64),
        [_interest_of(tree, node) for node in nodes],
    )


def _interest_of(tree: InterestTree, node: InterestNode) -> str:
    by_id = {candidate.node_id: candidate for candidate in tree.nodes}
    while node.parent_id is not None and node.parent_id in by_id:
        node = by_id[node.parent_id]
    return node.node_id
