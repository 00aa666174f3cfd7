"""The data-derived tree: invariants on hand-made and generated histories."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from taxonomy.builder import (
    BuilderConfig,
    build_data_tree,
    invariant_violations,
    tree_from_graph,
)
from taxonomy.history import summarize_history
from taxonomy.models import Event, EventType, InterestTree, Item

START = datetime(2024, 1, 1, tzinfo=UTC)


def make_tree(items: list[Item], sequence: list[str]) -> InterestTree:
    events = [
        Event(user_id="u", item_id=item_id, event_time=START + timedelta(hours=i))
        for i, item_id in enumerate(sequence)
    ]
    history = summarize_history(events, half_life_events=10)
    catalog = {item.item_id: item for item in items}
    graph = build_data_tree("u", history, catalog, config=BuilderConfig())
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
