"""The lists a caller gets: one flat list for the fused vector (optionally guaranteeing the top
interests a place), or one slate per interest node, each retrieved by the node's own vector
(PinnerSage's idea, arXiv 2007.03634) and de-duplicated against the slates before it."""

from __future__ import annotations

from dataclasses import dataclass

from taxonomy.models import InterestNode
from taxonomy.recommendation.candidates import Pool, nearest
from taxonomy.recommendation.profile import UserProfile
from taxonomy.recommendation.scoring import Recommendation, Reranker, node_scores, rank
from taxonomy.recommendation.spaces import VectorSpace


@dataclass(frozen=True)
class UserQuery:
    """Everything retrieval needs about one user in one vector space."""

    profile: UserProfile
    space: VectorSpace
    reranker: Reranker | None

    @property
    def pool_size(self) -> int:
        return self.reranker.candidates if self.reranker is not None else 0

    @property
    def blend(self) -> float:
        return self.reranker.blend if self.reranker is not None else 1.0


@dataclass(frozen=True)
class Slate:
    node: InterestNode
    recommendations: list[Recommendation]


def flat_list(
    query: UserQuery, page_size: int, pool: Pool, interest_quota: int = 0
) -> list[Recommendation]:
    """The best items for the fused vector, in descending score. With `interest_quota`, each of
    the user's that-many heaviest level-1 interests has at least one item in the list."""
    profile, index = query.profile, query.space.index
    candidates = nearest(index, profile.user_vector, max(page_size, query.pool_size), pool)
    scores = node_scores(profile, index, candidates, query.reranker)
    beta = scores.beta(query.blend)
    results = rank(profile, scores.items, scores.contributions(beta), page_size)
    for interest in _top_interests(profile, interest_quota):
        if any(_interest_of(profile, rec) == interest for rec in results):
            continue
        row = next(k for k, node in enumerate(profile.nodes) if node.node_id == interest)
        best = nearest(index, profile.vectors[row], 1, pool.without([r.item_id for r in results]))
        extra = node_scores(profile, index, best, query.reranker)
        if not extra.items:
            continue
        replaced = _replaceable(profile, results)
        if replaced is None:
            break
        results[replaced] = rank(profile, extra.items, extra.contributions(beta), 1)[0]
    results.sort(key=lambda rec: -rec.score)
    return results


def _top_interests(profile: UserProfile, quota: int) -> list[str]:
    level_one = [node for node in profile.nodes if node.level == 1]
    level_one.sort(key=lambda node: -node.weight)
    return [node.node_id for node in level_one[:quota]]


def _interest_of(profile: UserProfile, rec: Recommendation) -> str:
    """The level-1 interest whose nodes contribute most to the item."""
    totals: dict[str, float] = {}
    rows = {node.node_id: k for k, node in enumerate(profile.nodes)}
    for scored in rec.nodes:
        interest = profile.interests[rows[scored.node.node_id]]
        totals[interest] = totals.get(interest, 0.0) + scored.contribution
    return max(totals, key=lambda interest: totals[interest]) if totals else ""


def _replaceable(profile: UserProfile, results: list[Recommendation]) -> int | None:
    """The lowest-scored item whose interest keeps another item in the list."""
    interests = [_interest_of(profile, rec) for rec in results]
    for position in sorted(range(len(results)), key=lambda k: results[k].score):
        if interests.count(interests[position]) > 1:
            return position
    return None


def slates(
    query: UserQuery, level: int, max_interests: int, page_size: int, pool: Pool
) -> list[Slate]:
    """One slate per node of `level`, heaviest first, each scored by that node alone (its
    vector, and its own items' part of the next-item score), no item in two slates."""
    profile, index = query.profile, query.space.index
    rows = [k for k, node in enumerate(profile.nodes) if node.level == level]
    rows.sort(key=lambda k: -profile.nodes[k].weight)
    used: list[str] = []
    out: list[Slate] = []
    for row in rows[:max_interests]:
        alone = profile.only(row)
        candidates = nearest(
            index, profile.vectors[row], max(page_size, query.pool_size), pool.without(used)
        )
        scores = node_scores(alone, index, candidates, query.reranker)
        recommendations = rank(
            alone, scores.items, scores.contributions(scores.beta(query.blend)), page_size, first=0
        )
        used += [rec.item_id for rec in recommendations]
        out.append(Slate(profile.nodes[row], recommendations))
    return out
