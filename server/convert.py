"""Protobuf ↔ domain conversion, part 1 of 3: resource names, items, events, request knobs.

The conversion family is this module, `server/convert_trees.py` (interest trees, revisions,
taxonomy) and `server/convert_recommendations.py` (recommendations): the only code that turns
protobuf messages into domain objects and back (domain errors become google.rpc statuses in
server/errors.py, page tokens are server/pagination.py's). Request validation lives here too:
every problem of a request is collected into field violations (AIP-193 BadRequest) before
anything is stored, and a value a violation quotes back is cut to `ECHO_CHARS`.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime

from google.protobuf.timestamp_pb2 import Timestamp
from interesttree.v1 import catalog_pb2, interest_pb2
from pydantic import ValidationError

from taxonomy.errors import ViolationCollector
from taxonomy.models import (
    EVENT_TIME_MAX,
    EVENT_TIME_MIN,
    ITEM_ID_PATTERN,
    MAX_DESCRIPTION_CHARS,
    MAX_PATH_ELEMENTS,
    MAX_TAGS,
    MAX_TERM_CHARS,
    MAX_TITLE_CHARS,
    USER_ID_PATTERN,
    Event,
    EventType,
    Item,
)

MAX_ITEMS_PER_BATCH = 1000
MAX_EVENTS_PER_BATCH = 10000
MAX_REQUEST_ID_CHARS = 128
DEFAULT_RECOMMEND_PAGE_SIZE = 10
MAX_RECOMMEND_PAGE_SIZE = 100
MAX_BATCH_USERS = 100_000
MAX_LEVEL_WEIGHT = 1e6
MIN_LEVEL_WEIGHT = 1e-6
"""A non-zero level weight below this underflows the fused vector to zero: refused."""
ECHO_CHARS = 80

# fullmatch everywhere: `$` would also accept a trailing newline ("users/a\n").
_ITEM_NAME = re.compile(r"items/(?P<id>[^/]+)")
_USER_NAME = re.compile(r"users/(?P<id>[^/]+)")
_TREE_NAME = re.compile(r"users/(?P<id>[^/]+)/interestTree")
_ID_RULE = "with an id of 1-128 letters, digits, '-', '_', '.', '~'"


def echo(value: str) -> str:
    """A caller's value quoted in an error message, cut so that no message grows with it."""
    if len(value) <= ECHO_CHARS:
        return repr(value)
    return f"{value[:ECHO_CHARS]!r}… ({len(value)} characters)"


def _parse(
    value: str,
    pattern: re.Pattern[str],
    id_pattern: re.Pattern[str],
    form: str,
    field: str,
    errors: ViolationCollector,
) -> str:
    match = pattern.fullmatch(value)
    if not value:
        errors.add(field, f"required; expected {form}")
    elif match is None or id_pattern.fullmatch(match.group("id")) is None:
        errors.add(field, f"{echo(value)} is not of the form {form}, {_ID_RULE}")
    else:
        return match.group("id")
    return ""


def item_id_from_name(name: str, field: str, errors: ViolationCollector) -> str:
    return _parse(name, _ITEM_NAME, ITEM_ID_PATTERN, "items/{item_id}", field, errors)


def user_id_from_name(name: str, field: str, errors: ViolationCollector) -> str:
    return _parse(name, _USER_NAME, USER_ID_PATTERN, "users/{user_id}", field, errors)


def user_id_from_tree_name(name: str, field: str, errors: ViolationCollector) -> str:
    return _parse(name, _TREE_NAME, USER_ID_PATTERN, "users/{user_id}/interestTree", field, errors)


_NAME_KINDS = {
    "user": (user_id_from_name, "user"),
    "item": (item_id_from_name, "name"),
    "interest tree": (user_id_from_tree_name, "name"),
}


def _require(kind: str, name: str) -> str:
    parse, field = _NAME_KINDS[kind]
    errors = ViolationCollector()
    resource_id = parse(name, field, errors)
    errors.raise_if_any(f"invalid {kind} name", reason="INVALID_RESOURCE_NAME")
    return resource_id


def require_user(name: str) -> str:
    """The user id of `users/{user_id}` in a request's `user` field."""
    return _require("user", name)


def require_item(name: str) -> str:
    """The item id of `items/{item_id}` in a request's `name` field."""
    return _require("item", name)


def require_tree(name: str) -> str:
    """The user id of `users/{user_id}/interestTree` in a request's `name` field."""
    return _require("interest tree", name)


def timestamp(value: datetime) -> Timestamp:
    stamp = Timestamp()
    stamp.FromDatetime(value.astimezone(UTC))
    return stamp


def _event_time(stamp: Timestamp, field: str, errors: ViolationCollector) -> datetime | None:
    """The time of a Timestamp the store can keep and read back; None (and a violation) for
    nanos outside [0, 1e9), seconds outside protobuf's range, or a time out of the domain's
    bounds. Checked here too, so that no malformed Timestamp reaches a conversion."""
    rule = (
        f"must be a valid timestamp from {EVENT_TIME_MIN.isoformat()} "
        f"to {EVENT_TIME_MAX.isoformat()}"
    )
    if not 0 <= stamp.nanos < 1_000_000_000:
        errors.add(field, f"{rule}; nanos {stamp.nanos} is out of range")
        return None
    try:
        when = stamp.ToDatetime(tzinfo=UTC)
    except (ValueError, OverflowError, OSError):
        errors.add(field, f"{rule}; seconds {stamp.seconds} is out of range")
        return None
    if not EVENT_TIME_MIN <= when <= EVENT_TIME_MAX:
        errors.add(field, rule)
        return None
    return when


def _add_validation_errors(
    errors: ViolationCollector, prefix: str, error: ValidationError, fields: Mapping[str, str]
) -> None:
    """Pydantic's complaints as field violations on the request's own field names, worded
    without Python's ("Value error, …")."""
    for detail in error.errors():
        name = str(detail["loc"][0]) if detail["loc"] else ""
        location = ".".join([fields.get(name, name), *(str(p) for p in detail["loc"][1:])])
        message = detail["msg"]
        if detail["type"] in {"value_error", "assertion_error"} and "ctx" in detail:
            message = str(detail["ctx"].get("error", message))
        errors.add(f"{prefix}.{location}".rstrip("."), message)


_ITEM_FIELDS = {"item_id": "name"}
_EVENT_FIELDS = {"user_id": "user", "item_id": "item", "event_type": "type"}


def _batch_size(errors: ViolationCollector, field: str, count: int, maximum: int) -> None:
    if not 1 <= count <= maximum:
        errors.add(field, f"must hold 1 to {maximum} {field}, got {count}")
        errors.raise_if_any("invalid batch size", reason="INVALID_BATCH_SIZE")


def items_from_request(request: catalog_pb2.UpsertItemsRequest) -> list[Item]:
    errors = ViolationCollector()
    _batch_size(errors, "items", len(request.items), MAX_ITEMS_PER_BATCH)
    items: list[Item] = []
    seen: set[str] = set()
    for position, message in enumerate(request.items):
        field = f"items[{position}]"
        item_id = item_id_from_name(message.name, f"{field}.name", errors)
        if item_id and item_id in seen:
            errors.add(f"{field}.name", f"{echo(message.name)} appears twice in the batch")
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
            _add_validation_errors(errors, field, error, _ITEM_FIELDS)
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
        message.update_time.CopyFrom(timestamp(item.update_time))
    return message


def delete_ids_from_request(request: catalog_pb2.DeleteItemsRequest) -> list[str]:
    errors = ViolationCollector()
    if not 1 <= len(request.names) <= MAX_ITEMS_PER_BATCH:
        errors.add("names", f"must hold 1 to {MAX_ITEMS_PER_BATCH} names, got {len(request.names)}")
    ids = [item_id_from_name(name, f"names[{i}]", errors) for i, name in enumerate(request.names)]
    errors.raise_if_any("invalid item names")
    return ids


def _event(
    message: interest_pb2.Event, field: str, known_types: set[int], errors: ViolationCollector
) -> Event | None:
    user_id = user_id_from_name(message.user, f"{field}.user", errors)
    item_id = item_id_from_name(message.item, f"{field}.item", errors)
    if int(message.type) not in known_types:
        errors.add(f"{field}.type", f"unknown event type {int(message.type)}")
        return None
    if not message.HasField("event_time"):
        errors.add(f"{field}.event_time", "required")
        return None
    event_time = _event_time(message.event_time, f"{field}.event_time", errors)
    weight = message.weight if message.HasField("weight") else None
    if weight is not None and not (math.isfinite(weight) and 0 < weight <= 1000):
        errors.add(f"{field}.weight", "must be finite, greater than 0 and at most 1000")
        return None
    if not (user_id and item_id and event_time):
        return None
    try:
        return Event(
            user_id=user_id,
            item_id=item_id,
            event_type=EventType(int(message.type)),
            event_time=event_time,
            weight=weight,
        )
    except ValidationError as error:
        _add_validation_errors(errors, field, error, _EVENT_FIELDS)
        return None


def events_from_request(
    request: interest_pb2.RecordEventsRequest,
) -> tuple[list[Event], str | None]:
    errors = ViolationCollector()
    _batch_size(errors, "events", len(request.events), MAX_EVENTS_PER_BATCH)
    if len(request.request_id) > MAX_REQUEST_ID_CHARS:
        errors.add("request_id", f"must be at most {MAX_REQUEST_ID_CHARS} characters")
    known_types = {int(t) for t in EventType}
    events = [
        _event(message, f"events[{position}]", known_types, errors)
        for position, message in enumerate(request.events)
    ]
    errors.raise_if_any("invalid events")
    return [event for event in events if event is not None], request.request_id or None


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


def level_weights_from_request(values: Sequence[float]) -> list[float] | None:
    """Per-request level weights, each 0 or finite in [MIN_LEVEL_WEIGHT, MAX_LEVEL_WEIGHT]
    with a positive sum, so that their sum and their products with unit vectors neither
    overflow nor underflow to a zero vector."""
    if not values:
        return None
    errors = ViolationCollector()
    for position, value in enumerate(values):
        if not (
            value == 0 or (math.isfinite(value) and MIN_LEVEL_WEIGHT <= value <= MAX_LEVEL_WEIGHT)
        ):
            errors.add(
                f"level_weights[{position}]",
                f"must be 0 or between {MIN_LEVEL_WEIGHT:g} and {MAX_LEVEL_WEIGHT:,.0f}",
            )
    total = math.fsum(values) if not errors.violations else 0.0
    if not errors.violations and not (math.isfinite(total) and total > 0):
        errors.add("level_weights", "must have a finite, positive sum")
    errors.raise_if_any("invalid level weights")
    return list(values)


def largest_request_bytes(embedding_dim: int) -> int:
    """Bytes of the largest request the batch caps allow, each text at its character cap in
    one-byte characters and caller vectors of `embedding_dim` floats: the receive limit that
    still admits every such batch (UpsertItems is the largest, BatchBuildInterestTrees next)."""
    term = "x" * MAX_TERM_CHARS
    item = catalog_pb2.Item(
        name="items/" + "x" * 128,
        title="x" * MAX_TITLE_CHARS,
        description="x" * MAX_DESCRIPTION_CHARS,
        categories=[term] * MAX_PATH_ELEMENTS,
        tags=[term] * MAX_TAGS,
        vector=[1.0] * embedding_dim,
    )
    event = interest_pb2.Event(
        user="users/" + "x" * 128, item="items/" + "x" * 128, type=interest_pb2.EVENT_TYPE_VIEW
    )
    event.event_time.FromDatetime(EVENT_TIME_MAX)
    event.weight = 1000.0
    # One element of a repeated message field: its tag, a length varint (at most 5 bytes), and
    # the message itself.
    return max(
        MAX_ITEMS_PER_BATCH * (6 + item.ByteSize()),
        MAX_EVENTS_PER_BATCH * (6 + event.ByteSize()) + 6 + MAX_REQUEST_ID_CHARS,
        MAX_BATCH_USERS * (6 + len("users/") + 128),
    )
