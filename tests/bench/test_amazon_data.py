"""The Amazon 2018 Magazine Subscriptions loader, checked on the real files, and the metric
helpers of bench/taxonomy_eval.py (EVALUATION.md §2)."""

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
from bench.taxonomy_eval import (
    EvalNode,
    UserTree,
    assignment,
    cluster_label,
    copies_display_text,
    level1_k,
    score_user,
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


def test_evaluation_helpers_score_a_known_tree(data: MagazineData) -> None:
    user = data.user_ids[0]
    history = data.history(user)
    # One node per ground-truth level-1 category, then one per level-2 path: a perfect tree.
    nodes: list[EvalNode] = []
    with_path = [i for i in history if data.magazines[i].path]
    for level in (1, 2):
        groups: dict[tuple[str, ...], list[str]] = {}
        for item in with_path:
            groups.setdefault(data.magazines[item].path[:level], []).append(item)
        for path, members in groups.items():
            parent = "/".join(path[:-1]) if level == 2 else None
            nodes.append(EvalNode("/".join(path), parent, level, path[-1], 0.5, tuple(members)))
    scores = score_user(UserTree(user, nodes, 0.0), data)
    assert scores.faithfulness == 1.0
    assert scores.coverage == len(with_path) / len(history)
    assert all(value == 1.0 for value in scores.ami.values())
    assert all(label == category for label, category in scores.level1_labels)

    tree = UserTree(
        "u",
        [
            EvalNode("a", None, 1, "A", 0.7, ("x", "y")),
            EvalNode("b", None, 1, "B", 0.3, ("y", "z")),
            EvalNode("a1", "a", 2, "A1", 1.0, ("x", "y")),
        ],
        0.0,
    )
    assert assignment(tree, ["x", "y", "z"], 1) == ["a", "a", "b"]
    # z's branch ends at level 1: it stays at its deepest node.
    assert assignment(tree, ["x", "y", "z"], 2) == ["a1", "a1", "b"]
    assert copies_display_text("Women", ["Fitness is for women who run"])
    assert not copies_display_text("Art", ["For the smart reader"])
    assert not copies_display_text("Women", ["Fitness is for women"], min_words=2)
    assert [level1_k(n) for n in (1, 3, 8, 18, 30, 100)] == [1, 2, 2, 3, 4, 6]
    assert cluster_label(["Wine and food", "Food, travel", "The food of wine"]) == "Food"
