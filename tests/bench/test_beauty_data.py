"""The Amazon Beauty loader (S3-Rec's split, EVALUATION.md §3), checked on the real files
against the numbers of ``amazon-beauty/SOURCE.md``."""

from __future__ import annotations

import statistics
from collections import Counter

import pytest

from bench.beauty_data import (
    TOP_CATEGORIES,
    BeautySplits,
    load_beauty,
    split_attributes,
)


@pytest.fixture(scope="module")
def data() -> BeautySplits:
    return load_beauty()


def test_counts_match_the_source_notes(data: BeautySplits) -> None:
    assert data.n_users == 22_363
    assert data.n_items == 12_101
    assert data.n_interactions == 198_502
    lengths = [len(user.items) for user in data.users]
    assert (min(lengths), max(lengths)) == (5, 204)
    assert statistics.median(lengths) == 6
    assert round(statistics.mean(lengths), 3) == 8.876
    assert sum(length == 5 for length in lengths) == 7_162
    per_item = Counter(item for user in data.users for item in user.items)
    assert (min(per_item.values()), max(per_item.values())) == (5, 431)
    assert statistics.median(per_item.values()) == 9
    # No user has the same item twice, so excluding the history never removes a target.
    assert all(len(set(user.items)) == len(user.items) for user in data.users)


def test_leave_one_out_split(data: BeautySplits) -> None:
    first = data.users[0]
    # Beauty.txt line 1: "1 1 2 3 4 5" (ids are 1-based there, dense indices 0-based here).
    assert first.user_id == "1"
    assert first.items == (0, 1, 2, 3, 4)
    assert first.history(for_test=False) == [0, 1, 2]
    assert first.target(for_test=False) == 3
    assert first.history(for_test=True) == [0, 1, 2, 3]
    assert first.target(for_test=True) == 4
    for user in data.users:
        assert user.history(for_test=False) == list(user.items[:-2])
        assert user.history(for_test=True) == [*user.items[:-2], user.valid_item]
        assert user.target(for_test=True) == user.items[-1]
        assert user.target(for_test=True) not in user.history(for_test=True)
        assert user.target(for_test=False) not in user.history(for_test=False)
    assert sum(len(h) for h in data.histories(for_test=True)) == 198_502 - 22_363
    assert sum(len(h) for h in data.histories(for_test=False)) == 198_502 - 2 * 22_363


def test_cold_targets_match_the_source_notes(data: BeautySplits) -> None:
    seen_test = {i for h in data.histories(for_test=True) for i in h}
    seen_valid = {i for h in data.histories(for_test=False) for i in h}
    assert sum(t not in seen_test for t in data.targets(for_test=True)) == 52
    assert sum(t not in seen_valid for t in data.targets(for_test=False)) == 51


def test_attributes_are_named_by_the_datamaps_rule(data: BeautySplits) -> None:
    first, second, fourth = data.items[0], data.items[1], data.items[3]
    assert (first.asin, second.asin) == ("B004756YJA", "B004ZT0SSG")
    for item in (first, second):
        assert item.brand == "OPI"
        assert item.path == ("Makeup", "Nails", "Nail Polish")
        assert item.title == "OPI Nail Polish"
    assert fourth.brand == ""
    assert fourth.path == ("Makeup", "Face", "Concealers & Neutralizers")
    names = {name for item in data.items for name in item.attributes}
    assert "Unknown" not in names
    assert not any("&#39;" in name or "&amp;" in name for name in names)
    assert "L'Oreal Paris" in names
    top = Counter(item.path[0] for item in data.items)
    assert set(top) == TOP_CATEGORIES
    assert top.most_common(3) == [("Skin Care", 3_814), ("Hair Care", 3_262), ("Makeup", 2_627)]
    per_item = [len(item.attributes) for item in data.items]
    assert (min(per_item), max(per_item)) == (1, 6)


def test_split_attributes() -> None:
    assert split_attributes(["OPI", "Makeup", "Nails"]) == ("OPI", ("Makeup", "Nails"))
    assert split_attributes(["Unknown", "Skin Care", "Face"]) == ("", ("Skin Care", "Face"))
    assert split_attributes(["Skin Care", "Skin Care", "Face"]) == ("", ("Skin Care", "Face"))
    assert split_attributes(["Makeup", "Eyes"]) == ("", ("Makeup", "Eyes"))


def test_sample_is_fixed_and_without_replacement(data: BeautySplits) -> None:
    sample = data.sample_users(2000, seed=0)
    assert sample == data.sample_users(2000, seed=0)
    assert len(set(sample)) == 2000 and sample == sorted(sample)
    assert sample != data.sample_users(2000, seed=1)
    assert data.sample_users(10**6, seed=0) == list(range(data.n_users))
