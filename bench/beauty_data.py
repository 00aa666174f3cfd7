"""Amazon Beauty (2014, 5-core) as preprocessed by S3-Rec, under its leave-one-out protocol
(EVALUATION.md, section 3; ``amazon-beauty/SOURCE.md``).

1. ``Beauty.txt``: one line per user, ``user_id item_id item_id ...``, oldest first. Ids are
   1..22,363 (users) and 1..12,101 (items). No timestamps: only the order is kept.
2. Leave-one-out: the last item is the test target, the second-to-last the validation target,
   the rest is train. The validation pass shows items[:-2], the test pass items[:-1].
3. Item metadata: ``Beauty_item2attributes.json`` lists S3-Rec attribute ids per item; S3-Rec
   attribute id k is the k-th ``datamaps.json`` attribute (in id order) with
   ``attributeid2num`` >= 5 (SOURCE.md derives and checks this rule). An item's names read
   ``[brand] + category path without the root "Beauty"``; every item has exactly one of the six
   top-level categories, at position 0 (no brand kept) or 1 (after the brand). The brand
   placeholder "Unknown" is dropped. Names are HTML-unescaped (``L&#39;Oreal Paris``).
4. There are no titles or descriptions. The text the service embeds is built from the brand and
   the category path (``"OPI Nail Polish"`` plus the path and the brand as a tag).

The data is read in place (``$AMAZON_BEAUTY_DIR`` or ``/work/shared/data/amazon-beauty``); it is
never copied into the project. ``datamaps.json`` also holds reviewer ids; only its item and
attribute maps are used, and no reviewer id leaves this module.
"""

from __future__ import annotations

import html
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from taxonomy.models import MAX_PATH_ELEMENTS, MAX_TITLE_CHARS

DEFAULT_DIR = Path(os.environ.get("AMAZON_BEAUTY_DIR", "/work/shared/data/amazon-beauty"))
SEQUENCES_FILE = "Beauty.txt"
ATTRIBUTES_FILE = "Beauty_item2attributes.json"
DATAMAPS_FILE = "datamaps.json"

EXPECTED_USERS = 22_363
EXPECTED_ITEMS = 12_101
EXPECTED_INTERACTIONS = 198_502
EXPECTED_ATTRIBUTES = 637
MIN_ATTRIBUTE_ITEMS = 5
"""S3-Rec kept the attributes that cover at least this many items."""
TOP_CATEGORIES = frozenset(
    {"Skin Care", "Hair Care", "Makeup", "Tools & Accessories", "Bath & Body", "Fragrance"}
)
UNKNOWN_BRAND = "Unknown"


@dataclass(frozen=True)
class BeautyItem:
    """One item. ``index`` is its dense 0-based index (Beauty.txt id - 1)."""

    index: int
    item_id: str
    """The Beauty.txt id, as text."""
    asin: str
    brand: str
    """Empty when S3-Rec kept no brand (it covered < 5 items) or the brand is "Unknown"."""
    path: tuple[str, ...]
    """Category path coarse to fine, without the root "Beauty": (Makeup, Nails, Nail Polish)."""

    @property
    def attributes(self) -> frozenset[str]:
        """Brand and category names: what ILD compares (Jaccard over these sets)."""
        return frozenset((self.brand, *self.path) if self.brand else self.path)

    @property
    def title(self) -> str:
        """A short display text: the brand and the finest category ("OPI Nail Polish")."""
        leaf = self.path[-1] if self.path else "Beauty product"
        return (f"{self.brand} {leaf}" if self.brand else leaf)[:MAX_TITLE_CHARS]


@dataclass(frozen=True)
class BeautyUser:
    """One user's sequence of dense item indices, oldest first."""

    user_id: str
    items: tuple[int, ...]

    @property
    def train_items(self) -> tuple[int, ...]:
        return self.items[:-2]

    @property
    def valid_item(self) -> int:
        return self.items[-2]

    @property
    def test_item(self) -> int:
        return self.items[-1]

    def history(self, *, for_test: bool) -> list[int]:
        """Items shown to the system: items[:-2] (validation pass) or items[:-1] (test pass)."""
        return list(self.items[:-1] if for_test else self.items[:-2])

    def target(self, *, for_test: bool) -> int:
        """The held-out item of the pass."""
        return self.test_item if for_test else self.valid_item


@dataclass(frozen=True)
class BeautySplits:
    items: list[BeautyItem]
    """By dense index."""
    users: list[BeautyUser]
    """In Beauty.txt order (user ids 1..22,363)."""

    @property
    def n_items(self) -> int:
        return len(self.items)

    @property
    def n_users(self) -> int:
        return len(self.users)

    @property
    def n_interactions(self) -> int:
        return sum(len(user.items) for user in self.users)

    @property
    def item_ids(self) -> list[str]:
        return [item.item_id for item in self.items]

    def histories(self, *, for_test: bool) -> list[list[int]]:
        return [user.history(for_test=for_test) for user in self.users]

    def targets(self, *, for_test: bool) -> list[int]:
        return [user.target(for_test=for_test) for user in self.users]

    def sample_users(self, size: int, seed: int) -> list[int]:
        """A fixed random sample of user positions (sorted), without replacement; all users
        when ``size`` is at least the number of users."""
        if size >= self.n_users:
            return list(range(self.n_users))
        chosen = np.random.default_rng(seed).choice(self.n_users, size=size, replace=False)
        return sorted(int(k) for k in chosen)


def attribute_names(datamaps: dict[str, Any]) -> list[str]:
    """Names of S3-Rec attribute ids 1..637 (position k-1 holds id k): the datamaps
    attributes, in datamaps id order, that cover at least ``MIN_ATTRIBUTE_ITEMS`` items."""
    ids = sorted(int(k) for k in datamaps["id2attribute"])
    return [
        html.unescape(str(datamaps["id2attribute"][str(k)]))
        for k in ids
        if int(datamaps["attributeid2num"][str(k)]) >= MIN_ATTRIBUTE_ITEMS
    ]


def split_attributes(names: list[str]) -> tuple[str, tuple[str, ...]]:
    """(brand, category path) from an item's attribute names: names before the first top-level
    category are the brand; the path runs from there, repeats dropped."""
    start = next((k for k, name in enumerate(names) if name in TOP_CATEGORIES), len(names))
    brand = names[0] if start > 0 else ""
    path: list[str] = []
    for name in names[start:]:
        if name not in path:
            path.append(name)
    return ("" if brand == UNKNOWN_BRAND else brand), tuple(path[:MAX_PATH_ELEMENTS])


def _read_sequences(path: Path) -> list[BeautyUser]:
    users = []
    with path.open(encoding="ascii") as handle:
        for line in handle:
            fields = line.split()
            if fields:
                users.append(BeautyUser(fields[0], tuple(int(f) - 1 for f in fields[1:])))
    return users


def load_beauty(data_dir: Path | None = None, *, check: bool = True) -> BeautySplits:
    """Reads the three files in place; with ``check``, asserts the sizes SOURCE.md documents."""
    directory = data_dir if data_dir is not None else DEFAULT_DIR
    users = _read_sequences(directory / SEQUENCES_FILE)
    with (directory / DATAMAPS_FILE).open(encoding="utf-8") as handle:
        datamaps: dict[str, Any] = json.load(handle)
    with (directory / ATTRIBUTES_FILE).open(encoding="utf-8") as handle:
        raw: dict[str, list[int]] = json.load(handle)
    names = attribute_names(datamaps)
    id2item: dict[str, str] = datamaps["id2item"]
    n_items = max(int(k) for k in raw)
    items = []
    for index in range(n_items):
        item_id = str(index + 1)
        brand, path = split_attributes([names[a - 1] for a in raw[item_id]])
        items.append(BeautyItem(index, item_id, id2item[item_id], brand, path))
    data = BeautySplits(items=items, users=users)
    if check:
        assert data.n_users == EXPECTED_USERS, data.n_users
        assert data.n_items == EXPECTED_ITEMS == len(raw) == len(id2item), data.n_items
        assert data.n_interactions == EXPECTED_INTERACTIONS, data.n_interactions
        assert len(names) == EXPECTED_ATTRIBUTES, len(names)
        assert [u.user_id for u in users] == [str(k) for k in range(1, EXPECTED_USERS + 1)]
        assert {i for u in users for i in u.items} == set(range(n_items))
        assert all(len(u.items) >= 5 for u in users)
        assert all(item.path and item.path[0] in TOP_CATEGORIES for item in items)
    return data


if __name__ == "__main__":
    loaded = load_beauty()
    print(
        f"users={loaded.n_users} items={loaded.n_items} interactions={loaded.n_interactions} "
        f"with_brand={sum(bool(i.brand) for i in loaded.items)}"
    )
    for shown in loaded.items[:5]:
        print(f"  {shown.item_id} {shown.asin}: {shown.title} | {' > '.join(shown.path)}")
