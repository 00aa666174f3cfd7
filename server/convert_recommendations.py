"""Protobuf ↔ domain conversion, part 3 of 3: recommendation requests and responses.

Part of the conversion family with `server/convert.py` and `server/convert_trees.py`: filters,
list sizes and quotas are validated here into field violations (AIP-193 BadRequest) before
the recommendation room runs.
"""

from __future__ import annotations

from collections.abc import Sequence

from interesttree.v1 import recommendation_pb2

from server import pagination
from server.convert import (
    DEFAULT_RECOMMEND_PAGE_SIZE,
    MAX_RECOMMEND_PAGE_SIZE,
    echo,
    item_id_from_name,
    level_weights_from_request,
    require_user,
)
from taxonomy.errors import ViolationCollector
from taxonomy.models import MAX_PATH_ELEMENTS, MAX_TERM_CHARS
from taxonomy.recommendation.candidates import ItemFilter
from taxonomy.recommendation.scoring import Recommendation
from taxonomy.recommendation.service import (
    InterestSlatesQuery,
    RecommendQuery,
    RecommendResult,
    SlatesResult,
)
from taxonomy.recommendation.similar import SimilarQuery, SimilarResult

MAX_FILTER_PATHS = 100
MAX_FILTER_ITEMS = 10_000
DEFAULT_INTERESTS = 5
MAX_INTERESTS = 20


def _item_ids(names: Sequence[str], field: str, errors: ViolationCollector) -> list[str]:
    if len(names) > MAX_FILTER_ITEMS:
        errors.add(field, f"at most {MAX_FILTER_ITEMS:,} items, got {len(names):,}")
        return []
    return [item_id_from_name(name, f"{field}[{k}]", errors) for k, name in enumerate(names)]


def _paths(
    paths: Sequence[recommendation_pb2.CategoryPath], errors: ViolationCollector
) -> tuple[tuple[str, ...], ...]:
    if len(paths) > MAX_FILTER_PATHS:
        errors.add("categories", f"at most {MAX_FILTER_PATHS} paths, got {len(paths)}")
        return ()
    out: list[tuple[str, ...]] = []
    for k, path in enumerate(paths):
        field = f"categories[{k}].categories"
        terms = tuple(path.categories)
        if not 1 <= len(terms) <= MAX_PATH_ELEMENTS:
            errors.add(field, f"must hold 1 to {MAX_PATH_ELEMENTS} elements, got {len(terms)}")
        for n, term in enumerate(terms):
            if not term.strip() or len(term) > MAX_TERM_CHARS:
                errors.add(
                    f"{field}[{n}]", f"{echo(term)} must be 1 to {MAX_TERM_CHARS} characters"
                )
        out.append(terms)
    return tuple(out)


def _item_filter(
    categories: Sequence[recommendation_pb2.CategoryPath],
    exclude_items: Sequence[str],
    candidate_items: Sequence[str],
    errors: ViolationCollector,
) -> ItemFilter:
    paths = _paths(categories, errors)
    excluded = _item_ids(exclude_items, "exclude_items", errors)
    candidates = _item_ids(candidate_items, "candidate_items", errors)
    return ItemFilter(
        categories=paths,
        exclude_items=frozenset(excluded),
        candidate_items=tuple(dict.fromkeys(candidates)) if candidate_items else None,
    )


MAX_CONTEXT_ITEMS = 200


def recommend_query(request: recommendation_pb2.RecommendRequest) -> RecommendQuery:
    context: list[str] = []
    if request.context_items and not request.user:
        # An anonymous session: its items instead of a user.
        user_id = ""
        context_errors = ViolationCollector()
        if len(request.context_items) > MAX_CONTEXT_ITEMS:
            context_errors.add(
                "context_items",
                f"at most {MAX_CONTEXT_ITEMS} items, got {len(request.context_items):,}",
            )
        else:
            context = _item_ids(request.context_items, "context_items", context_errors)
        context_errors.raise_if_any("invalid context items")
    else:
        user_id = require_user(request.user)
        if request.context_items:
            conflict = ViolationCollector()
            conflict.add("context_items", "give either user or context_items, not both")
            conflict.raise_if_any("invalid recommendation request")
    size = pagination.page_size(
        request.page_size, default=DEFAULT_RECOMMEND_PAGE_SIZE, maximum=MAX_RECOMMEND_PAGE_SIZE
    )
    weights = level_weights_from_request(request.level_weights)
    errors = ViolationCollector()
    item_filter = _item_filter(
        request.categories, request.exclude_items, request.candidate_items, errors
    )
    if not 0 <= request.interest_quota <= size:
        errors.add(
            "interest_quota", f"must be 0 to page_size ({size}), got {request.interest_quota}"
        )
    errors.raise_if_any("invalid recommendation request")
    return RecommendQuery(
        user_id=user_id,
        page_size=size,
        level_weights=weights,
        include_seen=request.include_seen,
        item_filter=item_filter,
        interest_quota=request.interest_quota,
        context_items=tuple(context),
        allow_fallback=request.allow_fallback,
    )


def slates_query(request: recommendation_pb2.RecommendByInterestRequest) -> InterestSlatesQuery:
    user_id = require_user(request.user)
    size = pagination.page_size(
        request.page_size, default=DEFAULT_RECOMMEND_PAGE_SIZE, maximum=MAX_RECOMMEND_PAGE_SIZE
    )
    errors = ViolationCollector()
    if request.level < 0:
        errors.add("level", f"must be 0 (the deepest) or a level from 1, got {request.level}")
    if not 0 <= request.max_interests <= MAX_INTERESTS:
        errors.add("max_interests", f"must be 0 to {MAX_INTERESTS}, got {request.max_interests}")
    item_filter = _item_filter(
        request.categories, request.exclude_items, request.candidate_items, errors
    )
    errors.raise_if_any("invalid recommendation request")
    return InterestSlatesQuery(
        user_id=user_id,
        level=request.level,
        max_interests=request.max_interests or DEFAULT_INTERESTS,
        page_size=size,
        include_seen=request.include_seen,
        item_filter=item_filter,
    )


def similar_query(request: recommendation_pb2.ListSimilarItemsRequest) -> SimilarQuery:
    errors = ViolationCollector()
    item_id = item_id_from_name(request.item, "item", errors)
    errors.raise_if_any("invalid item name", reason="INVALID_RESOURCE_NAME")
    size = pagination.page_size(
        request.page_size, default=DEFAULT_RECOMMEND_PAGE_SIZE, maximum=MAX_RECOMMEND_PAGE_SIZE
    )
    item_filter = _item_filter(
        request.categories, request.exclude_items, request.candidate_items, errors
    )
    errors.raise_if_any("invalid similar-items request")
    offset = pagination.SIMILAR.decode(request.page_token) or 0
    return SimilarQuery(item_id=item_id, page_size=size, item_filter=item_filter, offset=offset)


def similar_to_proto(result: SimilarResult) -> recommendation_pb2.ListSimilarItemsResponse:
    return recommendation_pb2.ListSimilarItemsResponse(
        similar_items=[
            recommendation_pb2.SimilarItem(
                item=f"items/{similar.item_id}",
                score=similar.score,
                reason=similar.reason,
                shared_categories=similar.shared_categories,
                shared_tags=similar.shared_tags,
            )
            for similar in result.items
        ],
        space=result.space,
        next_page_token=(
            pagination.SIMILAR.encode(result.next_offset) if result.next_offset is not None else ""
        ),
    )


def _recommendation_to_proto(rec: Recommendation) -> recommendation_pb2.Recommendation:
    return recommendation_pb2.Recommendation(
        item=f"items/{rec.item_id}",
        score=rec.score,
        node_ids=[scored.node.node_id for scored in rec.nodes],
        reason=rec.reason,
        contributions=[
            recommendation_pb2.NodeContribution(
                node_id=scored.node.node_id,
                level=scored.node.level,
                label=scored.node.label,
                contribution=scored.contribution,
            )
            for scored in rec.nodes
        ],
    )


def recommendations_to_proto(result: RecommendResult) -> recommendation_pb2.RecommendResponse:
    return recommendation_pb2.RecommendResponse(
        recommendations=[_recommendation_to_proto(rec) for rec in result.recommendations],
        tree_revision=result.tree_revision,
        level_weights=result.level_weights,
        fallback=result.fallback,
    )


def slates_to_proto(result: SlatesResult) -> recommendation_pb2.RecommendByInterestResponse:
    return recommendation_pb2.RecommendByInterestResponse(
        slates=[
            recommendation_pb2.Slate(
                node=slate.node.node_id,
                label=slate.node.label,
                level=slate.node.level,
                weight=slate.node.weight,
                recommendations=[_recommendation_to_proto(rec) for rec in slate.recommendations],
            )
            for slate in result.slates
        ],
        tree_revision=result.tree_revision,
    )
