"""The one place where protobuf messages become domain objects and back.

Request validation lives here too: every problem of a request is collected into field
violations (AIP-193 BadRequest) before anything is stored.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import re
from collections.abc import Sequence
from datetime import UTC, datetime

from google.protobuf.timestamp_pb2 import Timestamp
from interesttree.v1 import (
    catalog_pb2,
    interest_pb2,
    recommendation_pb2,
)
from pydantic import ValidationError

from taxonomy.errors import FieldViolation, InvalidArgumentError, ViolationCollector
from taxonomy.models import (
    ITEM_ID_PATTERN,
    USER_ID_PATTERN,
    Event,
    EventType,
    InterestNode,
    InterestTree,
    Item,
    TaxonomyNode,
    TreeDiff,
)
from taxonomy.recommendation.retrieval import Recommendation
from taxonomy.recommendation.service import LevelExplanation, RecommendResult

MAX_ITEMS_PER_BATCH = 1000
MAX_EVENTS_PER_BATCH = 10000
MAX_REQUEST_ID_CHARS = 128
DEFAULT_LIST_PAGE_SIZE = 100
MAX_LIST_PAGE_SIZE = 1000
DEFAULT_RECOMMEND_PAGE_SIZE = 10
MAX_RECOMMEND_PAGE_SIZE = 100
DEFAULT_REVISIONS_PAGE_SIZE = 20
MAX_REVISIONS_PAGE_SIZE = 100
MAX_BATCH_USERS = 100_000

_ITEM_NAME = re.compile(r"^items/(?P<id>[^/]+)$")
_USER_NAME = re.compile(r"^users/(?P<id>[^/]+)$")
_TREE_NAME = re.compile(r"^users/(?P<id>[^/]+)/interestTree$")


def _parse(
    value: str,
    pattern: re.Pattern[str],
    id_pattern: re.Pattern[str],
    form: str,
    field: str,
    errors: ViolationCollector,
) -> str:
    match = pattern.match(value)
    if not value:
        errors.add(field, f"required; expected {form}")
    elif match is None or id_pattern.match(match.group("id")) is None:
        errors.add(
            field,
            f"{value[:80]!r} is not of the form {form}, "
            "with an id of 1-128 letters, digits, '-', '_', '.', '~'",
        )
    else:
        return match.group("id")
    return ""


def item_id_from_name(name: str, field: str, errors: ViolationCollector) -> str:
    return _parse(name, _ITEM_NAME, ITEM_ID_PATTERN, "items/{item_id}", field, errors)


def user_id_from_name(name: str, field: str, errors: ViolationCollector) -> str:
    return _parse(name, _USER_NAME, USER_ID_PATTERN, "users/{user_id}", field, errors)


def user_id_from_tree_name(name: str, field: str, errors: ViolationCollector) -> str:
    return _parse(name, _TREE_NAME, USER_ID_PATTERN, "users/{user_id}/interestTree", field, errors)


def require_user(name: str) -> str:
    errors = ViolationCollector()
    user_id = user_id_from_name(name, "user", errors)
    errors.raise_if_any("invalid user name", reason="INVALID_RESOURCE_NAME")
    return user_id


def require_item(name: str) -> str:
    errors = ViolationCollector()
    item_id = item_id_from_name(name, "name", errors)
    errors.raise_if_any("invalid item name", reason="INVALID_RESOURCE_NAME")
    return item_id


def require_tree(name: str) -> str:
    errors = ViolationCollector()
    user_id = user_id_from_tree_name(name, "name", errors)
    errors.raise_if_any("invalid interest tree name", reason="INVALID_RESOURCE_NAME")
    return user_id


def _timestamp(value: datetime) -> Timestamp:
    stamp = Timestamp()
    stamp.FromDatetime(value.astimezone(UTC))
    return stamp


_ITEM_FIELD = {"item_id": "name"}


def items_from_request(request: catalog_pb2.UpsertItemsRequest) -> list[Item]:
    errors = ViolationCollector()
    count = len(request.items)
    if not 1 <= count <= MAX_ITEMS_PER_BATCH:
        errors.add("items", f"must hold 1 to {MAX_ITEMS_PER_BATCH} items, got {count}")
        errors.raise_if_any("invalid batch size", reason="INVALID_BATCH_SIZE")
    items: list[Item] = []
    seen: set[str] = set()
    for position, message in enumerate(request.items):
        field = f"items[{position}]"
        item_id = item_id_from_name(message.name, f"{field}.name", errors)
        if item_id in seen:
            errors.add(f"{field}.name", f"{message.name!r} appears twice in the batch")
        seen.add(item_id)
        if not item_id:
            continue
        try:
            items.append(
                Item(
                    item_id=item_id,
                    title=message.title,
                    description=message.description,
                    categories=list(message.categories),
                    tags=list(message.tags),
                    vector=list(message.vector) or None,
                )
            )
        except ValidationError as error:
            for detail in error.errors():
                name = str(detail["loc"][0]) if detail["loc"] else ""
                location = ".".join(
                    [_ITEM_FIELD.get(name, name), *(str(p) for p in detail["loc"][1:])]
                )
                errors.add(f"{field}.{location}", detail["msg"])
    errors.raise_if_any("invalid items")
    return items


def item_to_proto(item: Item) -> catalog_pb2.Item:
    message = catalog_pb2.Item(
        name=f"items/{item.item_id}",
        title=item.title,
        description=item.description,
        categories=item.categories,
        tags=item.tags,
    )
    if item.update_time is not None:
        message.update_time.CopyFrom(_timestamp(item.update_time))
    return message


def delete_ids_from_request(request: catalog_pb2.DeleteItemsRequest) -> list[str]:
    errors = ViolationCollector()
    if not 1 <= len(request.names) <= MAX_ITEMS_PER_BATCH:
        errors.add("names", f"must hold 1 to {MAX_ITEMS_PER_BATCH} names, got {len(request.names)}")
    ids = [item_id_from_name(name, f"names[{i}]", errors) for i, name in enumerate(request.names)]
    errors.raise_if_any("invalid item names")
    return ids


def page_size(value: int, *, default: int, maximum: int, field: str = "page_size") -> int:
    if value < 0:
        raise InvalidArgumentError(
            "page_size must not be negative",
            [FieldViolation(field, f"got {value}; use 0 for the default ({default})")],
        )
    return default if value == 0 else min(value, maximum)


def encode_page_token(after_item_id: str) -> str:
    return base64.urlsafe_b64encode(json.dumps({"after": after_item_id}).encode()).decode()


def decode_page_token(token: str) -> str:
    if not token:
        return ""
    try:
        payload = json.loads(base64.urlsafe_b64decode(token.encode()))
        after = payload["after"]
        if not isinstance(after, str):
            raise TypeError("after")
        return after
    except (binascii.Error, ValueError, KeyError, TypeError, UnicodeDecodeError) as error:
        raise InvalidArgumentError(
            "page_token is not a token this service issued",
            [FieldViolation("page_token", "pass next_page_token from a previous response")],
            reason="INVALID_PAGE_TOKEN",
        ) from error


def events_from_request(
    request: interest_pb2.RecordEventsRequest,
) -> tuple[list[Event], str | None]:
    errors = ViolationCollector()
    count = len(request.events)
    if not 1 <= count <= MAX_EVENTS_PER_BATCH:
        errors.add("events", f"must hold 1 to {MAX_EVENTS_PER_BATCH} events, got {count}")
        errors.raise_if_any("invalid batch size", reason="INVALID_BATCH_SIZE")
    if len(request.request_id) > MAX_REQUEST_ID_CHARS:
        errors.add("request_id", f"must be at most {MAX_REQUEST_ID_CHARS} characters")
    known_types = {int(t) for t in EventType}
    events: list[Event] = []
    for position, message in enumerate(request.events):
        field = f"events[{position}]"
        user_id = user_id_from_name(message.user, f"{field}.user", errors)
        item_id = item_id_from_name(message.item, f"{field}.item", errors)
        if int(message.type) not in known_types:
            errors.add(f"{field}.type", f"unknown event type {int(message.type)}")
            continue
        if not message.HasField("event_time"):
            errors.add(f"{field}.event_time", "required")
            continue
        weight = message.weight if message.HasField("weight") else None
        if weight is not None and not (math.isfinite(weight) and 0 < weight <= 1000):
            errors.add(f"{field}.weight", "must be finite, greater than 0 and at most 1000")
            continue
        if user_id and item_id:
            events.append(
                Event(
                    user_id=user_id,
                    item_id=item_id,
                    event_type=EventType(int(message.type)),
                    event_time=message.event_time.ToDatetime(tzinfo=UTC),
                    weight=weight,
                )
            )
    errors.raise_if_any("invalid events")
    return events, request.request_id or None


def node_to_proto(node: InterestNode) -> interest_pb2.InterestNode:
    return interest_pb2.InterestNode(
        id=node.node_id,
        parent_id=node.parent_id or "",
        level=node.level,
        label=node.label,
        explanation=node.explanation,
        weight=node.weight,
        evidence_items=[f"items/{item_id}" for item_id in node.evidence_items],
        label_source=int(node.label_source),  # type: ignore[arg-type]
        explanation_source=int(node.explanation_source),  # type: ignore[arg-type]
        taxonomy_node=f"taxonomyNodes/{node.taxonomy_node}" if node.taxonomy_node else "",
    )


def tree_name(user_id: str) -> str:
    return f"users/{user_id}/interestTree"


def tree_to_proto(tree: InterestTree) -> interest_pb2.InterestTree:
    return interest_pb2.InterestTree(
        name=tree_name(tree.user_id),
        revision=tree.revision,
        nodes=[node_to_proto(node) for node in tree.nodes],
        create_time=_timestamp(tree.create_time),
        event_count=tree.event_count,
        model=tree.model,
        build_stats=interest_pb2.BuildStats(**tree.build_stats.model_dump()),
    )


def revisions_to_proto(
    revisions: Sequence[tuple[InterestTree, TreeDiff]],
) -> list[interest_pb2.InterestTreeRevision]:
    return [
        interest_pb2.InterestTreeRevision(
            tree=tree_to_proto(tree),
            diff=interest_pb2.TreeDiff(**diff.model_dump(), summary=diff.summary),
        )
        for tree, diff in revisions
    ]


def taxonomy_to_proto(node: TaxonomyNode) -> interest_pb2.TaxonomyNode:
    return interest_pb2.TaxonomyNode(
        name=f"taxonomyNodes/{node.taxonomy_id}",
        label=node.label,
        aliases=node.aliases,
        node_count=node.node_count,
    )


def users_from_batch_request(request: interest_pb2.BatchBuildInterestTreesRequest) -> list[str]:
    errors = ViolationCollector()
    if request.users and request.all_users:
        errors.add("all_users", "must be false when users are listed")
    if not request.users and not request.all_users:
        errors.add("users", "list users, or set all_users")
    if len(request.users) > MAX_BATCH_USERS:
        errors.add("users", f"at most {MAX_BATCH_USERS} users per batch")
    ids = [user_id_from_name(name, f"users[{i}]", errors) for i, name in enumerate(request.users)]
    errors.raise_if_any("invalid batch")
    return list(dict.fromkeys(ids))


def int_page_token(token: str, field: str = "page_token") -> int | None:
    """Decodes a token that carries a non-negative integer position."""
    if not token:
        return None
    value = decode_page_token(token)
    if not value.isdigit():
        raise InvalidArgumentError(
            "page_token is not a token this service issued",
            [FieldViolation(field, "pass next_page_token from a previous response")],
            reason="INVALID_PAGE_TOKEN",
        )
    return int(value)


def _level_summary(level: LevelExplanation) -> str:
    top = ", ".join(f"{n.label} ({n.weight:.0%})" for n in level.nodes[:3])
    return f"Level {level.level}: {len(level.nodes)} interest(s), led by {top}."


def explanation_to_proto(
    tree: InterestTree, levels: Sequence[LevelExplanation]
) -> interest_pb2.ExplainInterestsResponse:
    return interest_pb2.ExplainInterestsResponse(
        tree=tree_name(tree.user_id),
        revision=tree.revision,
        levels=[
            interest_pb2.LevelExplanation(
                level=level.level,
                level_weight=level.weight,
                nodes=[node_to_proto(node) for node in level.nodes],
                summary=_level_summary(level),
            )
            for level in levels
        ],
    )


def level_weights_from_request(values: Sequence[float]) -> list[float] | None:
    if not values:
        return None
    errors = ViolationCollector()
    for position, value in enumerate(values):
        if not math.isfinite(value) or value < 0:
            errors.add(f"level_weights[{position}]", "must be finite and non-negative")
    if not errors.violations and sum(values) <= 0:
        errors.add("level_weights", "must have a positive sum")
    errors.raise_if_any("invalid level weights")
    return list(values)


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
    )
