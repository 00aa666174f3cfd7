"""Paging for every List RPC: one opaque page-token scheme and one fetch-cut-token helper.

A page token is the unpadded URL-safe base64 of a small JSON object, `{"rpc": …, "after": …}`:
`rpc` names the RPC that issued it (a ListItems token is no good for ListTaxonomyNodes) and
`after` is where the next page starts (an item id, a revision, a position). Decoding is strict:
the token's length is capped before anything is parsed, so nothing deep or huge is ever
decoded, and the JSON must match `_Cursor` exactly (no extra keys, no coercion, bounded strings
and integers that fit SQLite's). Whatever is wrong, the caller gets INVALID_ARGUMENT with a
BadRequest on `page_token`.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Annotated, Generic, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from taxonomy.errors import FieldViolation, InvalidArgumentError

MAX_TOKEN_CHARS = 1024
MAX_KEY_CHARS = 128
MAX_POSITION = (1 << 62) - 1
"""Integer keys stay below SQLite's 64-bit INTEGER limit (and the store's 1 << 62 sentinel)."""

_TOKEN = re.compile(r"[A-Za-z0-9_-]+={0,2}")

_StrKey = Annotated[str, Field(min_length=1, max_length=MAX_KEY_CHARS)]
_IntKey = Annotated[int, Field(ge=0, le=MAX_POSITION)]


class _Cursor(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    rpc: str = Field(min_length=1, max_length=32)
    after: _StrKey | _IntKey


K = TypeVar("K", str, int)
T = TypeVar("T")


def page_size(value: int, *, default: int, maximum: int, field: str = "page_size") -> int:
    """The AIP-158 page size: 0 is the default, larger values are capped, negatives refused."""
    if value < 0:
        raise InvalidArgumentError(
            "page_size must not be negative",
            [FieldViolation(field, f"got {value}; use 0 for the default ({default})")],
        )
    return default if value == 0 else min(value, maximum)


def _invalid_token() -> InvalidArgumentError:
    return InvalidArgumentError(
        "page_token is not a token this service issued",
        [FieldViolation("page_token", "pass next_page_token from a previous response")],
        reason="INVALID_PAGE_TOKEN",
    )


@dataclass(frozen=True)
class PageSpec(Generic[K]):
    """One List RPC's paging: its token's `list` name, key type and page sizes."""

    list_name: str
    key_type: type[K]
    default_size: int
    max_size: int

    def size(self, requested: int) -> int:
        return page_size(requested, default=self.default_size, maximum=self.max_size)

    def encode(self, key: K) -> str:
        cursor = _Cursor(rpc=self.list_name, after=key)
        return base64.urlsafe_b64encode(cursor.model_dump_json().encode()).decode().rstrip("=")

    def decode(self, token: str) -> K | None:
        """The key a token carries; None for the empty token (the first page)."""
        if not token:
            return None
        if len(token) > MAX_TOKEN_CHARS or _TOKEN.fullmatch(token) is None:
            raise _invalid_token()
        try:
            bare = token.rstrip("=")
            raw = base64.urlsafe_b64decode(bare + "=" * (-len(bare) % 4))
            cursor = _Cursor.model_validate_json(raw)
        except (binascii.Error, ValueError, ValidationError) as error:
            raise _invalid_token() from error
        if cursor.rpc != self.list_name or not isinstance(cursor.after, self.key_type):
            raise _invalid_token()
        return cursor.after


@dataclass(frozen=True)
class Page(Generic[T]):
    rows: list[T]
    next_page_token: str


async def fetch_page(
    spec: PageSpec[K],
    requested_size: int,
    token: str,
    fetch: Callable[[K | None, int], Awaitable[Sequence[T]]],
    next_key: Callable[[K | None, Sequence[T]], K],
) -> Page[T]:
    """Fetches one row more than the page holds (so no COUNT query is needed to know whether
    another page exists), cuts it off, and makes the token of the next page from the rows
    shown: `next_key(start, shown)`."""
    limit = spec.size(requested_size)
    start = spec.decode(token)
    rows = await fetch(start, limit + 1)
    shown = list(rows[:limit])
    next_token = spec.encode(next_key(start, shown)) if len(rows) > limit else ""
    return Page(shown, next_token)


ITEMS = PageSpec("items", str, default_size=100, max_size=1000)
"""ListItems: ordered by item id; the key is the last id shown."""
REVISIONS = PageSpec("revisions", int, default_size=20, max_size=100)
"""ListInterestTreeRevisions: newest first; the key is the last (oldest) revision shown."""
TAXONOMY = PageSpec("taxonomy", int, default_size=100, max_size=1000)
"""ListTaxonomyNodes: the key is the position of the next node."""
SIMILAR = PageSpec("similar", int, default_size=10, max_size=100)
"""ListSimilarItems: most similar first; the key is the position of the next item."""
