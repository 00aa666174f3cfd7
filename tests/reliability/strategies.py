"""Hypothesis strategies for every request message, derived from the protobuf descriptors.

Each field gets hostile values of its kind: strings with unicode, control characters and
huge lengths; resource names valid (from the seeded pools), malformed and random; floats
with nan, inf, 1e308, -0.0 and subnormals; timestamps at and beyond protobuf's range; enum
numbers nobody defined; repeated fields from empty to beyond every documented limit.
Half of the messages also get well-formed names and times, so requests reach past validation.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from google.protobuf import message_factory
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp
from hypothesis import strategies as st

from .hostile import MAX_SECONDS, MIN_SECONDS

INT32 = (-(2**31), 2**31 - 1)
SPECIAL_DOUBLES = [float("nan"), float("inf"), -float("inf"), 1e308, -1e308, -0.0, 0.0, 5e-324]
SPECIAL_DOUBLES += [2.2250738585072014e-308, 1e-300, 1.0, 0.5, 1000.0, 1000.0000000000001, 1e20]
DOUBLES = st.one_of(
    st.sampled_from(SPECIAL_DOUBLES),
    st.floats(),
)
FLOATS32 = st.one_of(
    st.sampled_from([3.4028234663852886e38, -3.4e38, 1e20, 1e-30, 1e-45, 1.1754943508e-38, -0.0]),
    st.floats(width=32),
)
SPECIAL_TEXT = ["", " ", "\n", "\t\r\n ", "\x00", "a\nb", "\u202e", "\ufeff", "😀", "Books"]
SPECIAL_TEXT += ["Space opera", "'; DROP TABLE items;--", "%s%n", "{}", "null", "\\u0000", "\u0085"]
TEXT = st.text(alphabet=st.characters(exclude_categories=["Cs"]), max_size=40)
SHORT = st.one_of(
    st.sampled_from(SPECIAL_TEXT),
    TEXT,
)
HUGE = st.tuples(
    st.sampled_from(["x", "é", "😀", "\n", "\x00", " "]),
    st.sampled_from([128, 129, 512, 513, 8192, 8193, 100_000]),
).map(lambda pair: pair[0] * pair[1])
STRINGS = st.one_of(SHORT, SHORT, HUGE)
SECONDS = st.one_of(
    st.sampled_from([0, -1, 1_700_000_000, MAX_SECONDS, MAX_SECONDS + 1, MIN_SECONDS])
    | st.sampled_from([MIN_SECONDS - 1, 2**63 - 1, -(2**63), 2**40]),
    st.integers(-(2**63), 2**63 - 1),
)
NANOS = st.one_of(
    st.sampled_from([0, 1, 999_999_999, 999_990_000, 10**9, -1, *INT32]), st.integers(*INT32)
)
TIMESTAMPS = st.builds(lambda s, n: Timestamp(seconds=s, nanos=n), SECONDS, NANOS)
NORMAL_TIMES = st.builds(
    lambda s, n: Timestamp(seconds=s, nanos=n),
    st.integers(0, 2_000_000_000),
    st.integers(0, 999_999_999),
)
NAME_FIELDS = {"name", "user", "item", "users", "names"}
NAME_SUFFIXES = ("_item", "_items", "_user", "_users", "_names")
# Repeated fields whose elements are cheap enough to send many of, with sizes at the limits.
BIG_SIZES = {
    "items": [1000, 1001],
    "events": [10_000, 10_001],
    "names": [1000, 1001],
    "users": [100_000, 100_001],
    "level_weights": [100, 10_000],
    "categories": [8, 9, 100, 101],
    "exclude_items": [10_000, 10_001],
    "candidate_items": [10_000, 10_001],
    "tags": [64, 65],
}


def is_name(field: FieldDescriptor) -> bool:
    return field.name in NAME_FIELDS or field.name.endswith(NAME_SUFFIXES)


def _b64(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode()).decode()


@dataclass(frozen=True)
class Pools:
    """Names the fuzz may use: seeded items and users (never the sample users' events)."""

    items: Sequence[str]
    users: Sequence[str]
    read_users: Sequence[str]
    dim: int

    def valid_names(self, field: str, message: str) -> st.SearchStrategy[str]:
        trees = [f"{user}/interestTree" for user in self.read_users]
        if field.endswith(("item", "items", "names")) or message == "interesttree.v1.Item":
            return st.sampled_from([*self.items, "items/fz-new-1", "items/fz-new-2"])
        if field == "user" and message == "interesttree.v1.Event":
            return st.sampled_from(list(self.users))
        if field in {"user", "users"}:
            return st.sampled_from(list(self.read_users))
        if message.endswith("GetItemRequest"):
            return st.sampled_from(list(self.items))
        return st.sampled_from(trees)

    def names(self, erases: bool = False) -> st.SearchStrategy[str]:
        """Resource names, well-formed and not; a request that erases (DeleteUser) names only
        the fuzz's own users, so the canary users keep their events."""
        everything = [*self.items, *(self.users if erases else self.read_users)]
        everything += [f"{user}/interestTree" for user in self.read_users]
        malformed = ["items/", "items/a/b", "items/a\n", "users/a\n", "items/ a", "ITEMS/x"]
        malformed += ["users/ä", "items/%00", "items/" + "a" * 129, "users/a/interestTree/x"]
        malformed += ["items/" + "n" * 10_000, "taxonomyNodes/x", "/", "users//interestTree"]
        return st.one_of(
            st.sampled_from(everything),
            st.sampled_from(malformed),
            st.tuples(st.sampled_from(["items/", "users/", ""]), TEXT).map("".join),
            TEXT.map(lambda t: f"users/{t}/interestTree"),
        )

    def tokens(self) -> st.SearchStrategy[str]:
        issued = [_b64('{"after": "fz-1"}'), _b64('{"after": "5"}'), _b64('{"after": ""}')]
        hostile = [_b64('{"after":"99999999999999999999999"}'), "²", _b64('{"after":"²"}')]
        hostile += ["9" * 5000, _b64('{"after":"' + "9" * 5000 + '"}'), "garbage!", "===="]
        hostile += [_b64("[" * 100_000 + "]" * 100_000), _b64('{"after": 5}'), _b64("null")]
        return st.one_of(st.sampled_from(issued + hostile), TEXT, TEXT.map(_b64))

    def scalar(self, field: FieldDescriptor, message: str) -> st.SearchStrategy[Any]:
        kind = field.type
        if kind == FieldDescriptor.TYPE_STRING:
            if is_name(field):
                return self.names(erases=message.endswith("DeleteUserRequest"))
            return self.tokens() if field.name == "page_token" else STRINGS
        if kind in (FieldDescriptor.TYPE_INT32, FieldDescriptor.TYPE_ENUM):
            edges = [0, 1, 2, 5, 6, -1, 10, 99, 100, 101, 1000, 1001, *INT32]
            return st.one_of(st.sampled_from(edges), st.integers(*INT32))
        if kind == FieldDescriptor.TYPE_INT64:
            return st.integers(-(2**63), 2**63 - 1)
        if kind == FieldDescriptor.TYPE_DOUBLE:
            return DOUBLES
        if kind == FieldDescriptor.TYPE_FLOAT:
            return FLOATS32
        if kind == FieldDescriptor.TYPE_BOOL:
            return st.booleans()
        if kind == FieldDescriptor.TYPE_BYTES:
            return st.binary(max_size=64)
        assert kind == FieldDescriptor.TYPE_MESSAGE, f"{field.full_name}: type {kind}"
        assert field.message_type is not None
        return self.message(field.message_type)

    def repeated(self, field: FieldDescriptor, message: str) -> st.SearchStrategy[list[Any]]:
        element = self.scalar(field, message)
        small = st.lists(element, max_size=4)
        if field.name == "vector":
            return st.one_of(
                small,
                st.tuples(FLOATS32, FLOATS32, st.sampled_from([self.dim - 1, self.dim, 1])).map(
                    lambda t: [t[0]] * (t[2] - 1) + [t[1]]
                ),
                st.lists(FLOATS32, min_size=1, max_size=3).map(
                    lambda values: (values * self.dim)[: self.dim]
                ),
            )
        if field.name not in BIG_SIZES:
            return small
        cheap: st.SearchStrategy[Any]
        if field.message_type is not None:
            cheap = self.message(field.message_type, lean=True)
        elif is_name(field):
            cheap = self.valid_names(field.name, message) | st.sampled_from(["items/a\n", "x"])
        else:
            cheap = SHORT if field.type == FieldDescriptor.TYPE_STRING else element
        replicated = st.tuples(cheap, st.sampled_from(BIG_SIZES[field.name]))
        return st.one_of(small, replicated.map(lambda pair: [pair[0]] * pair[1]))

    def message(self, descriptor: Descriptor, *, lean: bool = False) -> st.SearchStrategy[Any]:
        if descriptor.full_name == "google.protobuf.Timestamp":
            return TIMESTAMPS
        message_type = message_factory.GetMessageClass(descriptor)
        fields: dict[str, st.SearchStrategy[Any]] = {}
        for field in descriptor.fields:
            if lean and field.name in {"description", "categories", "tags", "vector"}:
                continue
            build = self.repeated if field.is_repeated else self.scalar
            fields[field.name] = build(field, descriptor.full_name)
        well_formed: dict[str, st.SearchStrategy[Any]] = {
            field.name: self.valid_names(field.name, descriptor.full_name)
            for field in descriptor.fields
            if field.name in {"name", "user", "item"} and not field.is_repeated
        }
        if "event_time" in fields:
            well_formed["event_time"] = NORMAL_TIMES
        if "title" in fields:
            well_formed["title"] = TEXT.map(lambda t: t.strip() or "Title")
        hostile = st.fixed_dictionaries({}, optional=fields)
        rest = {name: value for name, value in fields.items() if name not in well_formed}
        formed = st.fixed_dictionaries(well_formed, optional=rest)
        return st.one_of(hostile, formed).map(lambda kwargs: _build(message_type, kwargs))


def _build(message_type: type[Message], kwargs: dict[str, Any]) -> Message:
    message = message_type()
    for name, value in kwargs.items():
        target = getattr(message, name)
        if isinstance(value, list):
            target.extend(value)
        elif isinstance(value, Message):
            target.CopyFrom(value)
        else:
            setattr(message, name, value)
    return message
