"""The data-derived tree: invariants on hand-made and generated histories."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from numpy.typing import NDArray

from taxonomy.events.history import summarize_history
from taxonomy.models import Event, EventType, InterestTree, Item
from taxonomy.trees.builder import BuilderConfig, build_data_tree
from taxonomy.trees.graph import tree_from_graph
from taxonomy.trees.invariants import invariant_violations

START = datetime(2024, 1, 1, tzinfo=UTC)


def make_tree(
    items: list[Item],
    sequence: list[str],
    vectors: dict[str, NDArray[np.float32]] | None = None,
) -> InterestTree:
    events = [
        Event(user_id="u", item_id=item_id, event_time=START + timedelta(hours=i))
        for i, item_id in enumerate(sequence)
    ]
    history = summarize_history(events, half_life_events=10)
    catalog = {item.item_id: item for item in items}
    graph = build_data_tree("u", history, catalog, config=BuilderConfig(), vectors=vectors)
    return tree_from_graph(
        graph, user_id="u", revision=1, create_time=START, event_count=len(events), model=""
    )


def item(item_id: str, categories: list[str], tags: list[str] | None = None) -> Item:
    return Item(item_id=item_id, title=f"Title {item_id}", categories=categories, tags=tags or [])


def test_category_paths_become_levels_and_shared_roots_are_dropped() -> None:
    items = [
        item("a", ["Books", "Fiction", "Sci-fi", "Space opera"]),
        item("b", ["Books", "Fiction", "Sci-fi", "Time travel"]),
        item("c", ["Books", "Fiction", "Mystery", "Detective"]),
    ]
    tree = make_tree(items, ["a", "b", "c", "a"])
    assert [n.label for n in tree.level_nodes(1)] == ["Sci-fi", "Mystery"]
    assert {n.label for n in tree.level_nodes(2)} == {"Space opera", "Time travel", "Detective"}
    assert tree.depth == 2
    assert invariant_violations(tree, {"a", "b", "c"}) == []


def test_items_ending_at_an_inner_node_get_an_other_leaf() -> None:
    items = [item("a", ["Sci-fi", "Space opera"]), item("b", ["Sci-fi"]), item("c", ["Crime"])]
    tree = make_tree(items, ["a", "b", "c"])
    labels = {n.label for n in tree.nodes}
    assert "Sci-fi (other)" in labels
    assert invariant_violations(tree, {"a", "b", "c"}) == []


def test_tags_refine_flat_categories_most_common_first() -> None:
    items = [
        item("a", [], ["Drama", "Romance"]),
        item("b", [], ["Drama", "War"]),
        item("c", [], ["Drama", "Romance"]),
        item("d", [], ["Comedy"]),
    ]
    tree = make_tree(items, ["a", "b", "c", "d"])
    assert {n.label for n in tree.level_nodes(1)} == {"Drama", "Comedy"}
    drama = next(n for n in tree.level_nodes(1) if n.label == "Drama")
    children = {n.label for n in tree.nodes if n.parent_id == drama.node_id}
    assert children == {"Romance", "War"}
    assert invariant_violations(tree, {"a", "b", "c", "d"}) == []


def test_recent_items_weigh_more() -> None:
    items = [item("old", ["Old genre"]), item("new", ["New genre"])]
    tree = make_tree(items, ["old"] * 3 + ["new"] * 3)
    weights = {n.label: n.weight for n in tree.level_nodes(1)}
    assert weights["New genre"] > weights["Old genre"]


def test_node_ids_are_stable_for_the_same_group() -> None:
    items = [item("a", ["X", "Y"]), item("b", ["X", "Z"]), item("c", ["W", "V"])]
    first = make_tree(items, ["a", "b"])
    second = make_tree(items, ["a", "b", "c"])
    assert {n.node_id for n in first.nodes} <= {n.node_id for n in second.nodes}


def test_invariant_checker_catches_broken_trees() -> None:
    items = [item("a", ["X", "Y"]), item("b", ["X", "Z"])]
    tree = make_tree(items, ["a", "b"])
    leaf = tree.level_nodes(2)[0]
    broken = tree.model_copy(
        update={
            "nodes": [
                n.model_copy(update={"evidence_items": ["zzz"]}) if n == leaf else n
                for n in tree.nodes
            ]
        }
    )
    problems = invariant_violations(broken, {"a", "b"})
    assert any("outside the user's history" in p for p in problems)
    assert any("not covered" in p for p in problems)


TERMS = st.sampled_from(["Drama", "Comedy", "Sci-fi", "Horror", "War", "Romance", "Noir"])


@st.composite
def catalogs_and_histories(draw: st.DrawFn) -> tuple[list[Item], list[str]]:
    count = draw(st.integers(min_value=1, max_value=25))
    items = [
        item(
            f"i{k}",
            draw(st.lists(TERMS, max_size=5)),
            draw(st.lists(TERMS, max_size=4, unique=True)),
        )
        for k in range(count)
    ]
    sequence = draw(st.lists(st.sampled_from([i.item_id for i in items]), min_size=1, max_size=60))
    return items, sequence


@settings(max_examples=150, deadline=None)
@given(catalogs_and_histories())
def test_every_generated_tree_satisfies_the_invariants(
    case: tuple[list[Item], list[str]],
) -> None:
    items, sequence = case
    tree = make_tree(items, sequence)
    assert invariant_violations(tree, set(sequence)) == []
    assert 2 <= tree.depth <= BuilderConfig().max_depth


def test_event_type_weights_apply() -> None:
    events = [
        Event(user_id="u", item_id="bought", event_type=EventType.PURCHASE, event_time=START),
        Event(user_id="u", item_id="viewed", event_type=EventType.VIEW, event_time=START),
    ]
    history = {h.item_id: h for h in summarize_history(events, half_life_events=1000)}
    assert history["bought"].strength > 2.5 * history["viewed"].strength


def bag_of_words(items: list[Item]) -> dict[str, NDArray[np.float32]]:
    vocabulary = sorted({w for i in items for w in i.description.split()})
    vectors = {}
    for item in items:
        row = np.array([float(w in item.description.split()) for w in vocabulary]) + 0.01
        vectors[item.item_id] = (row / np.linalg.norm(row)).astype(np.float32)
    return vectors


def test_items_without_metadata_are_clustered_and_named_by_shared_words() -> None:
    cooking = [
        Item(item_id=f"c{k}", title=f"Issue {k}", description=f"cooking recipes kitchen {k}")
        for k in range(5)
    ]
    sailing = [
        Item(item_id=f"s{k}", title=f"Volume {k}", description=f"sailing boats harbour {k}")
        for k in range(5)
    ]
    items = cooking + sailing
    sequence = [i.item_id for i in items]
    tree = make_tree(items, sequence, bag_of_words(items))
    groups = {n.label: set(n.evidence_items) for n in tree.level_nodes(1)}
    assert len(groups) == 2
    by_members = {frozenset(v): k for k, v in groups.items()}
    cooking_label = by_members[frozenset(i.item_id for i in cooking)]
    sailing_label = by_members[frozenset(i.item_id for i in sailing)]
    assert {"cooking", "recipes", "kitchen"} & set(cooking_label.casefold().split(" & "))
    assert {"sailing", "boats", "harbour"} & set(sailing_label.casefold().split(" & "))
    assert tree.depth == 2
    assert invariant_violations(tree, set(sequence)) == []


@settings(max_examples=40, deadline=None)
@given(catalogs_and_histories(), st.integers(min_value=0, max_value=2**31))
def test_clustered_trees_satisfy_the_invariants(
    case: tuple[list[Item], list[str]], seed: int
) -> None:
    items, sequence = case
    rng = np.random.default_rng(seed)
    bare = [i.model_copy(update={"categories": [], "tags": []}) for i in items[::2]]
    items = bare + items[1::2]
    vectors = {i.item_id: rng.normal(size=8).astype(np.float32) for i in items}
    sequence = [s for s in sequence if s in vectors]
    if not sequence:
        return
    tree = make_tree(items, sequence, vectors)
    assert invariant_violations(tree, set(sequence)) == []
    assert 2 <= tree.depth <= BuilderConfig().max_depth
