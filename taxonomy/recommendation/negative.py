"""Negative feedback in the score: a disliked item pushes the items similar to it down.

As Qdrant's negative examples (its `average_vector` strategy: 2·mean(positives) -
mean(negatives)), the disliked items' weighted mean query vector d is subtracted from every
node's vector, with a weight λ (`dislike_weight`, 0.5 by default):

    v_n' = v_n - λ d        so        score'(x) = score(x) - λ (Σ_n c_n) (d · x)

Every node keeps its own vector and coefficient, so the score stays linear in the nodes (the
contributions still add up to it), slates retrieve with the shifted node vectors too, and an
item's score drops by exactly λ Σ_n c_n (d · x): the more similar to what the user disliked,
the further down it goes. Hidden items are simply never returned (excluded from every pool).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from taxonomy.recommendation.profile import UserProfile
from taxonomy.recommendation.spaces import VectorSpace, present_vectors

DEFAULT_DISLIKE_WEIGHT = 0.5


def dislike_vector(
    space: VectorSpace, disliked: Mapping[str, float]
) -> np.ndarray[tuple[int], np.dtype[np.float64]] | None:
    """d: the disliked items' query vectors, averaged by dislike strength; None without any."""
    wanted = [item for item in disliked if space.has_vector(item)]
    found = present_vectors(space.query_vectors, wanted)
    if not found:
        return None
    weights = np.array([disliked[item] for item in found], dtype=np.float64)
    matrix = np.stack(list(found.values())).astype(np.float64)
    vector: np.ndarray[tuple[int], np.dtype[np.float64]] = (weights @ matrix) / weights.sum()
    return vector


def push_away(
    profile: UserProfile,
    space: VectorSpace,
    disliked: Mapping[str, float],
    weight: float = DEFAULT_DISLIKE_WEIGHT,
) -> UserProfile:
    """The profile with λ·d subtracted from every node's vector (unchanged without dislikes)."""
    if weight <= 0 or not disliked:
        return profile
    negative = dislike_vector(space, disliked)
    if negative is None:
        return profile
    return UserProfile(
        profile.nodes,
        profile.vectors - weight * negative[None, :],
        profile.coefficients,
        profile.interests,
    )
