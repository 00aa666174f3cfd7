"""Reasons specific to each recommended item.

Most items of a list are brought by the same heavy interest, so a reason naming only the
interest node reads the same for all of them. Each recommendation therefore also names the
evidence items of the nodes it names (its two strongest) that are closest to it (by inner
product in the vector space that retrieved it): a node's vector is the weighted mean of its
items' vectors, so they are the part of the nodes that pulled this item in.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace

import numpy as np

from index import VectorIndex
from taxonomy.recommendation.scoring import Recommendation, reason
from taxonomy.recommendation.spaces import present_vectors

MAX_NAMED = 2
"""Evidence items one reason names."""
NODES_NAMED = 2
"""The nodes a reason names (`scoring.reason`): the evidence named comes from theirs."""
MAX_SEARCHED = 64
"""Evidence items of a node compared (its strongest first): a coarse node of a long history
holds hundreds, and the strongest are the ones a reader remembers."""


def with_evidence(
    recommendations: Sequence[Recommendation], index: VectorIndex
) -> list[Recommendation]:
    """Fills each recommendation's `because` with the (at most MAX_NAMED) evidence items of
    its named nodes closest to it; ties keep the evidence order (strongest first)."""
    evidence = {
        rec.item_id: list(
            dict.fromkeys(
                item
                for scored in rec.nodes[:NODES_NAMED]
                for item in scored.node.evidence_items[:MAX_SEARCHED]
            )
        )
        for rec in recommendations
        if rec.nodes
    }
    wanted = {item for items in evidence.values() for item in items} | set(evidence)
    vectors = present_vectors(index.get_vectors, sorted(wanted))
    out: list[Recommendation] = []
    for rec in recommendations:
        target = vectors.get(rec.item_id)
        candidates = [
            item
            for item in evidence.get(rec.item_id, [])
            if item in vectors and item != rec.item_id
        ]
        if target is None or not candidates:
            out.append(rec)
            continue
        similarity = np.array([float(vectors[item] @ target) for item in candidates])
        order = np.argsort(-similarity, kind="stable")[:MAX_NAMED]
        out.append(replace(rec, because=[candidates[k] for k in order.tolist()]))
    return out


def with_titles(
    recommendations: Sequence[Recommendation], titles: Mapping[str, str]
) -> list[Recommendation]:
    """The reasons rewritten to name the `because` items by title (their id without one)."""
    return [
        replace(rec, reason=reason(rec.nodes, [titles.get(item, item) for item in rec.because]))
        if rec.because
        else rec
        for rec in recommendations
    ]
