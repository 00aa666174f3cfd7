"""Amazon Review Data (2018), "Magazine Subscriptions": 5-core reviews + item metadata.

Prepared for EVALUATION.md, section 2 (interest-tree quality):

1. Read the 5-core reviews file (2,375 reviews, 348 users, 157 items) and the meta file
   (3,385 lines, de-duplicated by asin; the duplicate lines are exact copies, the first wins).
2. An item's ground-truth category path is its ``category`` list, HTML-unescaped, with the root
   "Magazine Subscriptions" dropped. Level L of the ground truth is the path cut at L elements.
3. Titles in this source are broken HTML fragments, so ``title`` is never used. The item's
   display text is built from the first words of its ``description`` and its ``brand``.
4. A user's reviews are ordered by ``unixReviewTime``; ties keep the order of the file.

The data is read in place (``$AMAZON_MAGAZINE_DIR`` or
``/work/shared/data/amazon2018-magazine-subscriptions``); it is never copied into the project.
"""

from __future__ import annotations

import gzip
import html
import json
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from taxonomy.models import MAX_DESCRIPTION_CHARS, MAX_TITLE_CHARS, Event, EventType, Item

DEFAULT_DIR = Path(
    os.environ.get("AMAZON_MAGAZINE_DIR", "/work/shared/data/amazon2018-magazine-subscriptions")
)
REVIEWS_FILE = "Magazine_Subscriptions_5.json.gz"
META_FILE = "meta_Magazine_Subscriptions.json.gz"
ROOT_CATEGORY = "Magazine Subscriptions"

EXPECTED_REVIEWS = 2375
EXPECTED_USERS = 348
EXPECTED_ITEMS = 157
EXPECTED_ITEMS_WITH_META = 151
EXPECTED_ITEMS_WITH_PATH = 145

DISPLAY_WORDS = 8
"""Words of the description's first sentence kept in the display text."""

_TAG = re.compile(r"<[^>]*>")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z\"'])")


def clean_text(raw: str) -> str:
    """HTML-unescaped (twice: some strings are escaped twice), tags removed, spaces collapsed."""
    text = html.unescape(html.unescape(raw))
    text = _TAG.sub(" ", text)
    # A tag cut off at the end of a field (`<div class="aplus"` without `>`) is dropped too.
    text = re.sub(r"<[^>]*$", " ", text)
    return " ".join(text.split())


def category_path(raw: list[str] | None) -> tuple[str, ...]:
    """The catalog path coarse to fine, without the root "Magazine Subscriptions"."""
    path = [clean_text(element) for element in raw or []]
    path = [element for element in path if element]
    if path and path[0] == ROOT_CATEGORY:
        path = path[1:]
    return tuple(path)


def display_text(description: str, brand: str, asin: str) -> str:
    """A short, title-like text: the first words of the description's first sentence (which
    usually starts with the magazine's name) and the brand (the publisher)."""
    first = _SENTENCE_END.split(description, maxsplit=1)[0] if description else ""
    words = first.split()
    lead = " ".join(words[:DISPLAY_WORDS])
    if len(words) > DISPLAY_WORDS:
        lead = lead.rstrip(",;:") + "…"
    if lead and brand:
        text = f"{lead} ({brand})"
    elif lead:
        text = lead
    elif brand:
        text = f"{brand} magazine"
    else:
        text = f"Magazine {asin}"
    return text[:MAX_TITLE_CHARS]


@dataclass(frozen=True)
class Magazine:
    """One 5-core item. ``path`` is empty for items without metadata or without a category."""

    asin: str
    display_text: str
    description: str
    brand: str
    path: tuple[str, ...]
    has_meta: bool

    def ground_truth(self, level: int) -> tuple[str, ...] | None:
        """The path cut at ``level`` elements, or None for an item without a path."""
        return self.path[:level] if self.path else None

    def to_item(self, *, with_categories: bool = True, brand_tag: bool = True) -> Item:
        """The catalog item a caller would send. ``with_categories=False`` sends no category
        path and no tags (only text), to show what the service does without that metadata."""
        tags = [self.brand] if brand_tag and self.brand and with_categories else []
        return Item(
            item_id=self.asin,
            title=self.display_text,
            description=self.description[:MAX_DESCRIPTION_CHARS],
            categories=list(self.path) if with_categories else [],
            tags=tags,
        )


@dataclass(frozen=True)
class Review:
    user_id: str
    asin: str
    unix_time: int
    line: int
    """0-based line in the reviews file: the tie break for equal times."""

    def to_event(self) -> Event:
        return Event(
            user_id=self.user_id,
            item_id=self.asin,
            event_type=EventType.RATE,
            event_time=datetime.fromtimestamp(self.unix_time, tz=UTC),
        )


@dataclass(frozen=True)
class MagazineData:
    magazines: dict[str, Magazine]
    """Every item of the 5-core file, by asin."""
    reviews: list[Review]
    """In file order."""

    @property
    def user_ids(self) -> list[str]:
        return sorted({review.user_id for review in self.reviews})

    def user_reviews(self, user_id: str) -> list[Review]:
        """The user's reviews by time; ties keep the file order."""
        mine = [review for review in self.reviews if review.user_id == user_id]
        return sorted(mine, key=lambda review: (review.unix_time, review.line))

    def history(self, user_id: str) -> list[str]:
        """Distinct items the user reviewed, in order of first review."""
        return list(dict.fromkeys(review.asin for review in self.user_reviews(user_id)))

    def events_in_time_order(self) -> list[Event]:
        """Every review as an event, ordered by (time, file line), so stored sequence numbers
        break ties by file order too."""
        ordered = sorted(self.reviews, key=lambda review: (review.unix_time, review.line))
        return [review.to_event() for review in ordered]


def _read_json_lines(path: Path) -> Iterator[dict[str, Any]]:
    with gzip.open(path, "rt", encoding="utf-8") as handle:
        for line in handle:
            if line.strip():
                record: dict[str, Any] = json.loads(line)
                yield record


def _magazine(asin: str, record: dict[str, Any] | None) -> Magazine:
    if record is None:
        return Magazine(asin, display_text("", "", asin), "", "", (), has_meta=False)
    raw_description = record.get("description") or []
    if isinstance(raw_description, str):
        raw_description = [raw_description]
    description = clean_text(" ".join(str(part) for part in raw_description))
    brand = clean_text(str(record.get("brand") or ""))
    return Magazine(
        asin=asin,
        display_text=display_text(description, brand, asin),
        description=description,
        brand=brand,
        path=category_path(record.get("category")),
        has_meta=True,
    )


def load_magazines(data_dir: Path | None = None, *, check: bool = True) -> MagazineData:
    """Reads both files; with ``check``, asserts the sizes SOURCE.md documents."""
    directory = data_dir if data_dir is not None else DEFAULT_DIR
    reviews = [
        Review(
            user_id=str(record["reviewerID"]),
            asin=str(record["asin"]),
            unix_time=int(record["unixReviewTime"]),
            line=line,
        )
        for line, record in enumerate(_read_json_lines(directory / REVIEWS_FILE))
    ]
    wanted = {review.asin for review in reviews}
    meta: dict[str, dict[str, Any]] = {}
    for record in _read_json_lines(directory / META_FILE):
        asin = str(record.get("asin", ""))
        if asin in wanted:
            meta.setdefault(asin, record)
    magazines = {asin: _magazine(asin, meta.get(asin)) for asin in sorted(wanted)}
    data = MagazineData(magazines=magazines, reviews=reviews)
    if check:
        assert len(reviews) == EXPECTED_REVIEWS, len(reviews)
        assert len(data.user_ids) == EXPECTED_USERS, len(data.user_ids)
        assert len(magazines) == EXPECTED_ITEMS, len(magazines)
        with_meta = sum(m.has_meta for m in magazines.values())
        assert with_meta == EXPECTED_ITEMS_WITH_META, with_meta
        with_path = sum(bool(m.path) for m in magazines.values())
        assert with_path == EXPECTED_ITEMS_WITH_PATH, with_path
    return data


if __name__ == "__main__":
    loaded = load_magazines()
    print(
        f"reviews={len(loaded.reviews)} users={len(loaded.user_ids)} "
        f"items={len(loaded.magazines)} "
        f"with_path={sum(bool(m.path) for m in loaded.magazines.values())}"
    )
    for magazine in list(loaded.magazines.values())[:5]:
        print(f"  {magazine.asin}: {magazine.display_text} | {' > '.join(magazine.path)}")
