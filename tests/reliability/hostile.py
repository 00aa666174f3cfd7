"""The hostile values of the issue "No request, however hostile, breaks the service", each as
one request with the codes it may get, plus extreme-but-valid values that must be accepted.

A case that writes (`victim` set) lands in its own user `users/v-{victim}` and item
`items/v-{victim}`, which `prepare_victim` creates first, so a poisoned value shows up where it
was written and nowhere else.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from itertools import chain

import grpc
from google.protobuf.message import DecodeError, Message
from google.protobuf.timestamp_pb2 import Timestamp
from interesttree.v1 import (
    catalog_pb2,
    interest_pb2,
    recommendation_pb2,
)

from .processes import ServerProcess
from .support import ALLOWED_CODES, CALL_TIMEOUT_S, SAMPLE_USERS, Code

CATALOG = "/interesttree.v1.CatalogService/"
INTEREST = "/interesttree.v1.InterestService/"
RECOMMEND = "/interesttree.v1.RecommendationService/Recommend"
OK_OR_INVALID = frozenset({Code.OK, Code.INVALID_ARGUMENT})
INVALID = frozenset({Code.INVALID_ARGUMENT})
ONLY_OK = frozenset({Code.OK})
TOKEN_CODES = frozenset({Code.OK, Code.INVALID_ARGUMENT, Code.OUT_OF_RANGE})
MAX_SECONDS = 253402300799  # 9999-12-31T23:59:59Z, the last second protobuf allows
MIN_SECONDS = -62135596800  # 0001-01-01T00:00:00Z
ODD_ID = ("~._-" + "Zz09") * 16  # 128 characters, every kind the id grammar allows


@dataclass(frozen=True)
class Hostile:
    case_id: str
    method: str
    request: Message | bytes
    response_type: type[Message] | None
    allowed: frozenset[grpc.StatusCode]
    victim: str = ""
    """Slug of the user and item the value is written to; empty for a request that stores
    nothing."""
    streaming: bool = False
    user_id: str = ""
    """The victim user's id when it is not `v-{victim}`."""

    @property
    def user(self) -> str:
        return f"users/{self.user_id or 'v-' + self.victim}"

    @property
    def item(self) -> str:
        return f"items/v-{self.victim}"


def prepare_victim(server: ServerProcess, case: Hostile) -> None:
    """A normal item and user for the case to write into; the user also saw a sample item."""
    item = catalog_pb2.Item(name=case.item, title=f"Victim {case.victim}", categories=["Books"])
    server.catalog.UpsertItems(catalog_pb2.UpsertItemsRequest(items=[item]), timeout=60)
    events = interest_pb2.RecordEventsRequest()
    for day, name in enumerate((case.item, "items/dracula")):
        event = events.events.add(user=case.user, item=name, type=interest_pb2.EVENT_TYPE_VIEW)
        event.event_time.FromSeconds(1_700_000_000 + day * 86_400)
    server.interests.RecordEvents(events, timeout=CALL_TIMEOUT_S)


def _event_case(case_id: str, seconds: int, nanos: int, allowed: frozenset[Code]) -> Hostile:
    victim = case_id
    event = interest_pb2.Event(
        user=f"users/v-{victim}",
        item=f"items/v-{victim}",
        type=interest_pb2.EVENT_TYPE_LIKE,
        event_time=Timestamp(seconds=seconds, nanos=nanos),
    )
    request = interest_pb2.RecordEventsRequest(events=[event])
    return Hostile(
        case_id,
        INTEREST + "RecordEvents",
        request,
        interest_pb2.RecordEventsResponse,
        allowed,
        victim,
    )


def _weight_case(case_id: str, weight: float, allowed: frozenset[Code]) -> Hostile:
    case = _event_case(case_id, 1_700_100_000, 0, allowed)
    assert isinstance(case.request, interest_pb2.RecordEventsRequest)
    case.request.events[0].weight = weight
    return case


def _item_case(case_id: str, item: catalog_pb2.Item, allowed: frozenset[Code]) -> Hostile:
    if not item.name:
        item.name = f"items/v-{case_id}"
    request = catalog_pb2.UpsertItemsRequest(items=[item])
    return Hostile(
        case_id, CATALOG + "UpsertItems", request, catalog_pb2.UpsertItemsResponse, allowed, case_id
    )


def event_time_cases() -> Iterator[Hostile]:
    yield _event_case("ts-max-nanos-999999999", MAX_SECONDS, 999_999_999, OK_OR_INVALID)
    yield _event_case("ts-max-nanos-999990000", MAX_SECONDS, 999_990_000, OK_OR_INVALID)
    yield _event_case("ts-last-second", MAX_SECONDS, 0, OK_OR_INVALID)
    yield _event_case("ts-first-second", MIN_SECONDS, 0, OK_OR_INVALID)
    yield _event_case("ts-nanos-minus-1", 1_700_000_000, -1, INVALID)
    yield _event_case("ts-nanos-1e9", 1_700_000_000, 10**9, INVALID)
    yield _event_case("ts-seconds-past-9999", MAX_SECONDS + 1, 0, INVALID)
    yield _event_case("ts-seconds-before-0001", MIN_SECONDS - 1, 0, INVALID)
    yield _event_case("ts-seconds-int64-max", 2**63 - 1, 0, INVALID)
    yield _event_case("ts-seconds-int64-min", -(2**63), 0, INVALID)


def vector_cases(dim: int) -> Iterator[Hostile]:
    for label, value in (("1e20", 1e20), ("3.4e38", 3.4e38), ("1e-30", 1e-30), ("1e-45", 1e-45)):
        item = catalog_pb2.Item(title="Vector", categories=["Books"], vector=[value] * dim)
        yield _item_case(f"vector-all-{label}", item, OK_OR_INVALID)
    mixed = [3.4e38, -3.4e38] * (dim // 2) + [1e-45] * (dim % 2)
    yield _item_case(
        "vector-mixed-extremes", catalog_pb2.Item(title="V", vector=mixed), OK_OR_INVALID
    )
    zeros = catalog_pb2.Item(title="Vector", vector=[-0.0] * dim)
    yield _item_case("vector-all-minus-zero", zeros, INVALID)


def name_cases() -> Iterator[Hostile]:
    yield _item_case("name-item-newline", catalog_pb2.Item(name="items/a\n", title="A"), INVALID)
    for field, name in (("user", "users/a\n"), ("item", "items/a\n")):
        case = _event_case(f"name-event-{field}-newline", 1_700_000_000, 0, INVALID)
        assert isinstance(case.request, interest_pb2.RecordEventsRequest)
        setattr(case.request.events[0], field, name)
        yield case
    reads: list[tuple[str, Message, type[Message]]] = [
        (
            CATALOG + "GetItem",
            catalog_pb2.GetItemRequest(name="items/a\n"),
            catalog_pb2.GetItemResponse,
        ),
        (
            CATALOG + "DeleteItems",
            catalog_pb2.DeleteItemsRequest(names=["items/a\n"], allow_missing=True),
            catalog_pb2.DeleteItemsResponse,
        ),
        (
            INTEREST + "BuildInterestTree",
            interest_pb2.BuildInterestTreeRequest(user="users/a\n"),
            interest_pb2.BuildInterestTreeResponse,
        ),
        (
            INTEREST + "GetInterestTree",
            interest_pb2.GetInterestTreeRequest(name="users/a\n/interestTree"),
            interest_pb2.GetInterestTreeResponse,
        ),
        (
            RECOMMEND,
            recommendation_pb2.RecommendRequest(user="users/a\n"),
            recommendation_pb2.RecommendResponse,
        ),
    ]
    for method, request, response_type in reads:
        yield Hostile(
            f"name-{method.rsplit('/', 1)[1]}-newline", method, request, response_type, INVALID
        )


def valid_extreme_cases() -> Iterator[Hostile]:
    """Values at the documented limits: the service must accept them."""
    longest = catalog_pb2.Item(
        title="É" * 512,
        description="ß\n" * 4096,
        categories=[f"{level}" * 128 for level in "12345678"],
        tags=[f"{tag:03d}" + "t" * 125 for tag in range(64)],
    )
    yield _item_case("item-at-every-limit", longest, ONLY_OK)
    odd = catalog_pb2.Item(name=f"items/{ODD_ID}", title="Odd id", categories=["Books"])
    yield _item_case("item-id-128-odd-chars", odd, ONLY_OK)
    for slug, item_id in (("dot", "."), ("dotdot", ".."), ("tilde", "~")):
        item = catalog_pb2.Item(name=f"items/{item_id}", title=f"Id {slug}")
        yield _item_case(f"item-id-{slug}", item, ONLY_OK)
    case = _event_case("user-id-128-odd-chars", 1_700_000_000, 0, ONLY_OK)
    assert isinstance(case.request, interest_pb2.RecordEventsRequest)
    case.request.events[0].user = f"users/{ODD_ID}"
    yield Hostile(
        case.case_id,
        case.method,
        case.request,
        case.response_type,
        ONLY_OK,
        case.victim,
        user_id=ODD_ID,
    )
    yield _weight_case("weight-1000", 1000.0, ONLY_OK)
    yield _weight_case("weight-min-subnormal", 5e-324, ONLY_OK)
    yield _weight_case("weight-1e-300", 1e-300, ONLY_OK)


def level_weight_cases() -> Iterator[Hostile]:
    for label, weights in (
        ("1e308", [1e308]),
        ("4x1e308", [1e308] * 4),
        ("subnormal", [5e-324]),
        ("1e308-then-tiny", [1e308, 5e-324, 0.0, 1e-300]),
    ):
        request = recommendation_pb2.RecommendRequest(user=SAMPLE_USERS[0], level_weights=weights)
        yield Hostile(
            f"level-weights-{label}",
            RECOMMEND,
            request,
            recommendation_pb2.RecommendResponse,
            OK_OR_INVALID,
        )


def _b64(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode()).decode()


def page_token_cases() -> Iterator[Hostile]:
    huge = '{"after":"99999999999999999999999"}'
    tokens = {
        "after-23-digits": _b64(huge),
        "after-23-digits-raw": huge,
        "after-superscript-two": _b64('{"after":"²"}'),
        "superscript-two-raw": "²",
        "after-5000-digits": _b64('{"after":"' + "9" * 5000 + '"}'),
        "5000-digits-raw": "9" * 5000,
        "json-100k-deep": _b64("[" * 100_000 + "]" * 100_000),
        "json-100k-deep-raw": "[" * 100_000,
        "after-minus-1": _b64('{"after":"-1"}'),
    }
    lists: list[tuple[str, type[Message], type[Message], dict[str, str]]] = [
        (CATALOG + "ListItems", catalog_pb2.ListItemsRequest, catalog_pb2.ListItemsResponse, {}),
        (
            INTEREST + "ListInterestTreeRevisions",
            interest_pb2.ListInterestTreeRevisionsRequest,
            interest_pb2.ListInterestTreeRevisionsResponse,
            {"name": f"{SAMPLE_USERS[0]}/interestTree"},
        ),
        (
            INTEREST + "ListTaxonomyNodes",
            interest_pb2.ListTaxonomyNodesRequest,
            interest_pb2.ListTaxonomyNodesResponse,
            {},
        ),
    ]
    for method, request_type, response_type, fields in lists:
        for label, token in tokens.items():
            request = request_type(page_token=token, **fields)
            rpc = method.rsplit("/", 1)[1]
            yield Hostile(f"token-{rpc}-{label}", method, request, response_type, TOKEN_CODES)


def trailer_cases() -> Iterator[Hostile]:
    """Duplicated 10,000-character names: the error must still fit the client's 8 KiB of
    trailers, so the client sees INVALID_ARGUMENT and not RESOURCE_EXHAUSTED."""
    long_name = "items/" + "n" * 10_000
    for label, count in (("2", 2), ("1000", 1000)):
        items = [catalog_pb2.Item(name=long_name, title="Dup") for _ in range(count)]
        yield Hostile(
            f"trailer-dup-10k-name-x{label}",
            CATALOG + "UpsertItems",
            catalog_pb2.UpsertItemsRequest(items=items),
            catalog_pb2.UpsertItemsResponse,
            INVALID,
        )
    items = [catalog_pb2.Item(name=long_name, title="Dup")] * 2
    items += [catalog_pb2.Item(name=f"items/t{i}", title="T") for i in range(9_998)]
    yield Hostile(
        "trailer-10000-items-dup-10k-name",
        CATALOG + "UpsertItems",
        catalog_pb2.UpsertItemsRequest(items=items),
        catalog_pb2.UpsertItemsResponse,
        INVALID,
    )


def raw_byte_cases(
    methods: list[tuple[str, type[Message], type[Message], bool]],
) -> Iterator[Hostile]:
    """Bytes sent undecoded. What cannot be parsed as the request must be INVALID_ARGUMENT."""
    payloads = {
        "ff-x5": b"\xff\xff\xff\xff\xff",
        "truncated-field": b"\x0a\x05ab",
        "bad-utf8-field-1": b"\x0a\x02\xc3\x28",
        "varint-overflow": b"\x08" + b"\x80" * 10 + b"\x01",
    }
    for method, request_type, _, streaming in methods:
        for label, payload in payloads.items():
            try:
                request_type.FromString(payload)
                allowed = ALLOWED_CODES
            except DecodeError:
                allowed = INVALID
            rpc = method.rsplit("/", 1)[1]
            yield Hostile(f"raw-{rpc}-{label}", method, payload, None, allowed, streaming=streaming)


@cache
def persisting_cases(dim: int) -> dict[str, Hostile]:
    """Every case that may store something, keyed by id."""
    every = chain(valid_extreme_cases(), name_cases(), vector_cases(dim), event_time_cases())
    return {case.case_id: case for case in every if case.victim}
