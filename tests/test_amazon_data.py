"""The Amazon 2018 Magazine Subscriptions loader, checked on the real files (EVALUATION.md §2)."""

from __future__ import annotations

from collections import Counter

import pytest

from bench.amazon_data import (
    DEFAULT_DIR,
    META_FILE,
    REVIEWS_FILE,
    ROOT_CATEGORY,
    MagazineData,
    category_path,
    clean_text,
    display_text,
    load_magazines,
)
from taxonomy.models import MAX_TITLE_CHARS

pytestmark = pytest.mark.skipif(
    not (DEFAULT_DIR / REVIEWS_FILE).exists() or not (DEFAULT_DIR / META_FILE).exists(),
    reason=f"the Amazon magazine files are not under {DEFAULT_DIR}",
)


@pytest.fixture(scope="module")
def data() -> MagazineData:
    return load_magazines()


def test_sizes_match_the_source_notes(data: MagazineData) -> None:
    # load_magazines(check=True) asserts them too; these are the numbers of SOURCE.md.
    assert len(data.reviews) == 2375
    assert len(data.user_ids) == 348
    assert len(data.magazines) == 157
    assert sum(m.has_meta for m in data.magazines.values()) == 151
    assert sum(bool(m.path) for m in data.magazines.values()) == 145
    lengths = [len(data.user_reviews(user)) for user in data.user_ids]
    assert (min(lengths), max(lengths)) == (3, 30)


def test_paths_drop_the_root_and_are_unescaped(data: MagazineData) -> None:
    paths = [m.path for m in data.magazines.values() if m.path]
    assert all(ROOT_CATEGORY not in path for path in paths)
    assert not any("&amp;" in element or "<" in element for path in paths for element in path)
    depths = Counter(len(path) for path in paths)
    # SOURCE.md counts the root too: 2 levels: 9, 3: 97, 4: 27, 5: 12.
    assert depths == {1: 9, 2: 97, 3: 27, 4: 12}
    assert len({path[0] for path in paths}) == 19
    assert ("Technology", "Computers & Internet") in paths
    maximum_pc = data.magazines["B00005N7P0"]
    assert maximum_pc.ground_truth(1) == ("Technology",)
    assert maximum_pc.ground_truth(2) == ("Technology", "Computers & Internet")
    assert maximum_pc.ground_truth(5) == maximum_pc.path


def test_items_without_a_path_have_no_ground_truth(data: MagazineData) -> None:
    missing = [m for m in data.magazines.values() if not m.path]
    assert len(missing) == 12
    assert sum(not m.has_meta for m in missing) == 6
    assert all(m.ground_truth(1) is None for m in missing)


def test_display_text_never_uses_the_broken_title(data: MagazineData) -> None:
    for magazine in data.magazines.values():
        item = magazine.to_item()
        assert 0 < len(item.title) <= MAX_TITLE_CHARS
        assert "<span" not in item.title and "a-size-medium" not in item.title
        assert "<" not in item.description and "&amp;" not in item.description
    wine = data.magazines["B00005N7Q5"]
    assert wine.display_text.startswith("America's Number One sportsman's magazine")
    assert wine.display_text.endswith("(Bonnier Corpiration)")


def test_items_carry_the_path_and_the_brand_unless_asked_not_to(data: MagazineData) -> None:
    magazine = data.magazines["B00005N7P0"]
    item = magazine.to_item()
    assert item.item_id == "B00005N7P0"
    assert item.categories == ["Technology", "Computers & Internet"]
    assert item.tags == ["Future US, Inc."]
    assert item.description.startswith("MAXIMUM PC is the ultimate upgrade")
    bare = magazine.to_item(with_categories=False)
    assert bare.categories == [] and bare.tags == []
    assert bare.title == item.title and bare.description == item.description


def test_reviews_are_ordered_by_time_with_file_order_for_ties(data: MagazineData) -> None:
    for user in data.user_ids:
        reviews = data.user_reviews(user)
        keys = [(review.unix_time, review.line) for review in reviews]
        assert keys == sorted(keys)
    events = data.events_in_time_order()
    assert len(events) == 2375
    times = [event.event_time for event in events]
    assert times == sorted(times)
    tied = Counter((r.user_id, r.unix_time) for r in data.reviews)
    assert any(count > 1 for count in tied.values()), "the file has same-day reviews"


def test_history_is_distinct_items_in_first_review_order(data: MagazineData) -> None:
    repeats = 0
    for user in data.user_ids:
        history = data.history(user)
        assert len(history) == len(set(history))
        assert history == list(dict.fromkeys(r.asin for r in data.user_reviews(user)))
        repeats += len(data.user_reviews(user)) - len(history)
    assert repeats > 0, "SOURCE.md: 73 (user, item) pairs occur more than once"


def test_cleaning_helpers() -> None:
    assert clean_text("Cooking, Food &amp;amp; Wine") == "Cooking, Food & Wine"
    assert clean_text("<i>Maximum PC</i>  brings\n news") == "Maximum PC brings news"
    assert clean_text('<span class="a-size-medium a-color-secondary"') == ""
    assert category_path([ROOT_CATEGORY, "Home &amp; Garden", "Farming"]) == (
        "Home & Garden",
        "Farming",
    )
    assert category_path(None) == ()
    assert display_text("", "", "B1") == "Magazine B1"
    assert display_text("", "Hearst", "B1") == "Hearst magazine"
    assert display_text("Inc. is the best. More text.", "Mansueto", "B1") == (
        "Inc. is the best. (Mansueto)"
    )
    long = display_text("one two three four five six seven eight nine ten.", "", "B1")
    assert long == "one two three four five six seven eight…"
