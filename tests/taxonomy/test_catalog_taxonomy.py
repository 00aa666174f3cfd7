"""The catalog taxonomy: structure, readable labels, naming once per cluster with cached names,
and users' trees as projections onto it."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path

import grpc
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from interesttree.v1 import admin_pb2, interest_pb2
from numpy.typing import NDArray

from server import pagination
from taxonomy.engine import EngineConfig, InterestEngine
from taxonomy.events.history import HistoryItem
from taxonomy.models import CatalogTaxonomyNode, Item, TextSource
from taxonomy.shared_taxonomy.catalog import (
    CATEGORY,
    CLUSTER,
    DraftNode,
    build_structure,
    readability_problem,
    walk,
)
from taxonomy.shared_taxonomy.service import CatalogTaxonomy
from taxonomy.storage.sqlite import SqliteStore
from taxonomy.trees.builder import project_tree
from taxonomy.trees.graph import tree_from_graph
from taxonomy.trees.invariants import invariant_violations
from taxonomy.trees.naming import NamingMode

from ..conftest import RunningServer
from ..server.test_api import domain_tree, history_of, load_sample
from .helpers import START, HashEmbedder, ScriptedChat, history

THEMES = {
    "sea": ["sailing", "harbour", "boats", "tides"],
    "space": ["rockets", "orbit", "planets", "astronauts"],
    "kitchen": ["recipes", "baking", "spices", "dinners"],
}


def themed_catalog(per_theme: int = 12) -> tuple[dict[str, Item], dict[str, NDArray[np.float32]]]:
    """Three themes, each two tight blobs of vectors (sub-themes), their items sharing the
    theme's words and their sub-theme's."""
    rng = np.random.default_rng(0)
    items: dict[str, Item] = {}
    vectors: dict[str, NDArray[np.float32]] = {}
    for t, (theme, words) in enumerate(THEMES.items()):
        centre = np.zeros(8)
        centre[t] = 1.0
        for k in range(per_theme):
            item_id = f"{theme}-{k}"
            items[item_id] = Item(
                item_id=item_id,
                title=f"Volume {k}",
                description=f"{words[0]} {words[1]} {words[k % 2 + 2]}",
            )
            sub = np.zeros(8)
            sub[3 + k % 2] = 0.2
            vectors[item_id] = (centre + sub + 0.02 * rng.normal(size=8)).astype(np.float32)
    return items, vectors


def theme_of(item_id: str) -> str:
    return item_id.split("-")[0]


@pytest.mark.parametrize(
    ("label", "problem"),
    [
        ("Sea stories: sea", "category_tag_paste"),
        ("Drama (other)", "not_a_noun_phrase"),
        ("Space opera space", "repeated_word"),
        ("Recent Recent", "repeated_word"),
        ("A story about a man who sails the seas alone", "not_a_short_phrase"),
        ("Sailing the seas.", "not_a_noun_phrase"),
        ("", "not_a_short_phrase"),
        ("Science fiction", None),
        ("Arts & Crafts", None),
        ("The Arts and the Sciences", None),
    ],
)
def test_readability_check(label: str, problem: str | None) -> None:
    assert readability_problem(label) == problem


def _check_partition(roots: Sequence[DraftNode], item_ids: set[str]) -> None:
    """Every level's nodes hold disjoint items, a child's items are its parent's, and
    every item ends at a leaf."""
    assert set().union(*(set(r.items) for r in roots)) == item_ids
    for node in walk(roots):
        if node.children:
            held = [i for child in node.children for i in child.items]
            assert sorted(held) == sorted(node.items)
        siblings = [s.label.casefold() for s in (node.children or [])]
        assert len(siblings) == len(set(siblings))


def test_a_flat_catalog_is_clustered_coarse_to_fine_with_readable_labels() -> None:
    items, vectors = themed_catalog()
    roots = build_structure(items, vectors, vectors, [])
    assert len(roots) == 6, "sqrt(36) clusters at the top"
    for root in roots:
        assert root.kind == CLUSTER
        assert len({theme_of(i) for i in root.items}) == 1, "no top cluster mixes themes"
    _check_partition(roots, set(items))
    nodes = walk(roots)
    assert all(readability_problem(node.label) is None for node in nodes)
    assert all(set(node.central_items) <= set(node.items) for node in nodes)
    top_words = {word for root in roots for word in root.label.casefold().split()}
    assert top_words & {"sailing", "rockets", "recipes", "harbour", "orbit", "baking"}


def test_category_paths_give_the_upper_levels() -> None:
    items, vectors = themed_catalog()
    items = {
        i: item.model_copy(update={"categories": ["Books", theme_of(i).title()]})
        for i, item in items.items()
    }
    roots = build_structure(items, vectors, vectors, [])
    # "Books" is shared by every item and names no distinction: it is dropped.
    assert sorted(root.label for root in roots) == ["Kitchen", "Sea", "Space"]
    assert all(root.kind == CATEGORY for root in roots)
    assert all(child.kind == CLUSTER for root in roots for child in root.children)
    _check_partition(roots, set(items))


def _store_and_taxonomy(tmp_path: Path, chat: ScriptedChat | None) -> CatalogTaxonomy:
    store = SqliteStore(tmp_path / "db.sqlite3")
    return CatalogTaxonomy(store, chat, lambda ids: {})


async def test_clusters_are_named_once_and_names_are_cached(tmp_path: Path) -> None:
    items, vectors = themed_catalog()
    chat = ScriptedChat()
    taxonomy = _store_and_taxonomy(tmp_path, chat)
    first = await taxonomy.rebuild(items, vectors, vectors, space="text", fingerprint=(1, None))
    asked = first.naming.requests
    assert asked == chat.requests > 0
    assert asked <= first.clusters, "at most one request per cluster, whatever the users"
    named = [n for n in taxonomy.nodes if n.label_source is TextSource.MODEL]
    assert named, "the scripted model's picks are readable, so they are kept"

    snapshot = [(n.taxonomy_id, n.label, n.label_source) for n in taxonomy.nodes]
    again = await taxonomy.rebuild(items, vectors, vectors, space="text", fingerprint=(2, None))
    assert again.naming.requests == 0
    assert again.naming.cached == again.clusters
    assert chat.requests == asked
    assert [(n.taxonomy_id, n.label, n.label_source) for n in taxonomy.nodes] == snapshot

    # Persisted: a fresh service over the same store asks nothing either.
    reopened = CatalogTaxonomy(SqliteStore(tmp_path / "db.sqlite3"), chat, lambda ids: {})
    reopened.open()
    assert [n.label for n in reopened.nodes] == [n.label for n in taxonomy.nodes]
    await reopened.rebuild(items, vectors, vectors, space="text", fingerprint=(3, None))
    assert chat.requests == asked


async def test_a_cluster_whose_members_change_materially_is_renamed(tmp_path: Path) -> None:
    items, vectors = themed_catalog()
    chat = ScriptedChat()
    taxonomy = _store_and_taxonomy(tmp_path, chat)
    await taxonomy.rebuild(items, vectors, vectors, space="text", fingerprint=(1, None))
    before = {n.taxonomy_id: set(n.items) for n in taxonomy.nodes if n.level == 1}
    asked = chat.requests
    # Half the sea items move into the space blob: the sea and space clusters change.
    moved = dict(vectors)
    for k in range(6):
        moved[f"sea-{k}"] = vectors["space-0"] + 0.01 * k
    rebuilt = await taxonomy.rebuild(items, moved, vectors, space="text", fingerprint=(2, None))
    assert rebuilt.naming.requests > 0
    assert chat.requests > asked
    after = {n.taxonomy_id: set(n.items) for n in taxonomy.nodes if n.level == 1}
    kitchen = [tid for tid, members in before.items() if all("kitchen" in i for i in members)]
    assert kitchen
    assert kitchen[0] in after, "the unchanged kitchen cluster keeps its id and name"
    assert rebuilt.naming.cached >= 1


async def test_model_faults_keep_the_data_label_and_are_asked_again(tmp_path: Path) -> None:
    items, vectors = themed_catalog()
    failing = [RuntimeError("down")] * 100
    chat = ScriptedChat(failing)
    taxonomy = _store_and_taxonomy(tmp_path, chat)
    build = await taxonomy.rebuild(items, vectors, vectors, space="text", fingerprint=(1, None))
    assert build.naming.failures == build.naming.requests > 0
    assert all(n.label_source is TextSource.DATA for n in taxonomy.nodes)
    assert all(readability_problem(n.label) is None for n in taxonomy.nodes)
    retry = ScriptedChat(['{"label": "not one of the candidates"}'])
    taxonomy._chat = retry
    await taxonomy.rebuild(items, vectors, vectors, space="text", fingerprint=(2, None))
    assert retry.requests == build.naming.requests, "failed clusters are asked again"


async def _engine(tmp_path: Path, chat: ScriptedChat | None) -> InterestEngine:
    engine = InterestEngine(
        SqliteStore(tmp_path / "db.sqlite3"),
        tmp_path,
        HashEmbedder(),
        chat,
        EngineConfig(collaborative=None, naming_mode=NamingMode.CHOOSE),
    )
    await engine.start()
    return engine


async def test_trees_are_projections_onto_the_taxonomy(tmp_path: Path) -> None:
    items, _ = themed_catalog()
    chat = ScriptedChat()
    engine = await _engine(tmp_path, chat)
    try:
        await engine.catalog.upsert_items(list(items.values()))
        users = {
            "ann": [f"sea-{k}" for k in range(6)] + ["space-1", "space-2"],
            "ben": [f"kitchen-{k}" for k in range(5)] + ["sea-7"],
        }
        for user, item_ids in users.items():
            await engine.events.record_events(history(user, item_ids), request_id=None)
        await engine.refresher.refresh_models()
        catalog = engine.catalog_taxonomy
        assert catalog is not None
        assert catalog.built
        taxonomy_requests = chat.requests
        assert taxonomy_requests > 0
        by_id: dict[str, CatalogTaxonomyNode] = {n.taxonomy_id: n for n in catalog.nodes}
        for user, item_ids in users.items():
            tree = (await engine.trees.build_tree(user)).tree
            assert invariant_violations(tree, set(item_ids)) == []
            assert tree.build_stats.model_requests == 0, "labels come from the taxonomy"
            for node in tree.nodes:
                assert node.taxonomy_node in by_id
                taxonomy_node = by_id[node.taxonomy_node]
                assert set(node.evidence_items) <= set(taxonomy_node.items)
                assert node.label == taxonomy_node.label
                assert node.level == taxonomy_node.level
        assert chat.requests == taxonomy_requests, "no per-user model request"

        # An item added after the build is placed by its vector, so the tree still covers it.
        extra = Item(item_id="sea-new", title="Harbour days", description="sailing harbour")
        await engine.catalog.upsert_items([extra])
        await engine.events.record_events(history("ben", ["sea-new"]), request_id=None)
        tree = (await engine.trees.build_tree("ben")).tree
        assert invariant_violations(tree, {*users["ben"], "sea-new"}) == []

        listed = await engine.taxonomy.list_nodes(0, 1000)
        assert [n.taxonomy_id for n in listed] == [n.taxonomy_id for n in catalog.nodes]
        levels = [n.level for n in listed]
        assert levels == sorted(levels), "coarse to fine"
        seen: set[str] = set()
        for shared in listed:
            assert shared.parent_id is None or shared.parent_id in seen
            seen.add(shared.taxonomy_id)
        assert sum(n.node_count for n in listed) > 0
    finally:
        await engine.close()
        engine.store.close()


async def test_without_a_refresh_trees_stay_per_user_data_trees(tmp_path: Path) -> None:
    items, _ = themed_catalog()
    engine = await _engine(tmp_path, None)
    try:
        await engine.catalog.upsert_items(list(items.values()))
        await engine.events.record_events(history("ann", ["sea-1", "space-1"]), request_id=None)
        tree = (await engine.trees.build_tree("ann")).tree
        assert engine.catalog_taxonomy is not None
        assert not engine.catalog_taxonomy.built
        # Before the first RefreshModels the label vocabulary maps the data tree's nodes.
        listed = await engine.taxonomy.list_nodes(0, 100)
        assert listed
        assert all(node.level == 0 for node in listed)
        assert {n.taxonomy_node for n in tree.nodes} <= {n.taxonomy_id for n in listed}
    finally:
        await engine.close()
        engine.store.close()


async def test_list_taxonomy_nodes_serves_the_catalog_taxonomy_page_by_page(
    data_only_server: RunningServer,
) -> None:
    stubs = data_only_server.stubs
    _, events = await load_sample(data_only_server)
    await stubs.admin.RefreshModels(admin_pb2.RefreshModelsRequest())
    everything = await stubs.interests.ListTaxonomyNodes(
        interest_pb2.ListTaxonomyNodesRequest(page_size=1000)
    )
    assert not everything.next_page_token
    names: list[str] = []
    token = ""
    while True:
        page = await stubs.interests.ListTaxonomyNodes(
            interest_pb2.ListTaxonomyNodesRequest(page_size=3, page_token=token)
        )
        assert len(page.taxonomy_nodes) <= 3
        names += [node.name for node in page.taxonomy_nodes]
        token = page.next_page_token
        if not token:
            break
    assert names == [node.name for node in everything.taxonomy_nodes]
    assert len(names) == len(set(names)) > 3
    seen: set[str] = set()
    for node in everything.taxonomy_nodes:
        assert node.level >= 1
        assert not node.parent or node.parent in seen, "parents come first"
        assert node.item_count >= len(node.central_items) > 0
        assert readability_problem(node.label) is None
        seen.add(node.name)
    top = [node for node in everything.taxonomy_nodes if node.level == 1]
    assert sorted(node.label for node in top) == ["Fiction", "Nonfiction"], "category terms"

    built = await stubs.interests.BuildInterestTree(
        interest_pb2.BuildInterestTreeRequest(user="users/carol")
    )
    by_name = {node.name: node for node in everything.taxonomy_nodes}
    for tree_node in built.tree.nodes:
        assert by_name[tree_node.taxonomy_node].label == tree_node.label
    assert invariant_violations(domain_tree(built.tree), history_of(events, "users/carol")) == []
    counted = await stubs.interests.ListTaxonomyNodes(interest_pb2.ListTaxonomyNodesRequest())
    assert sum(node.node_count for node in counted.taxonomy_nodes) == len(built.tree.nodes)

    for bad in (
        interest_pb2.ListTaxonomyNodesRequest(page_size=-1),
        interest_pb2.ListTaxonomyNodesRequest(page_token="not-a-token"),
        interest_pb2.ListTaxonomyNodesRequest(page_token=pagination.REVISIONS.encode(1)),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await stubs.interests.ListTaxonomyNodes(bad)
        assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT


_ITEMS, _VECTORS = themed_catalog()
_NODES = [node.stored() for node in walk(build_structure(_ITEMS, _VECTORS, _VECTORS, []))]


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.sampled_from(sorted(_ITEMS)), min_size=1, max_size=20, unique=True),
    st.lists(st.floats(min_value=0.01, max_value=5.0), min_size=20, max_size=20),
)
def test_every_projection_maps_onto_the_taxonomy(
    item_ids: list[str], strengths: list[float]
) -> None:
    by_id = {node.taxonomy_id: node for node in _NODES}
    deepest: dict[str, CatalogTaxonomyNode] = {}
    for node in _NODES:
        for item_id in node.items:
            deepest[item_id] = node
    paths: dict[str, list[CatalogTaxonomyNode]] = {}
    for item_id in item_ids:
        chain = [deepest[item_id]]
        while chain[-1].parent_id is not None:
            chain.append(by_id[chain[-1].parent_id])
        paths[item_id] = chain[::-1]
    history = [
        HistoryItem(
            item_id=item_id,
            strength=strength,
            interactions=1,
            last_time=START + timedelta(hours=position),
            last_position=position,
        )
        for position, (item_id, strength) in enumerate(zip(item_ids, strengths, strict=False))
    ]
    graph = project_tree(history, _ITEMS, paths)
    tree = tree_from_graph(
        graph, user_id="u", revision=1, create_time=START, event_count=len(history), model=""
    )
    assert invariant_violations(tree, set(item_ids)) == []
    for tree_node in tree.nodes:
        shared = by_id[tree_node.taxonomy_node]
        assert set(tree_node.evidence_items) <= set(shared.items)
        assert (tree_node.label, tree_node.level) == (shared.label, shared.level)
        parent = shared.parent_id
        expected_parent = f"n{parent.removeprefix('t')}" if parent else None
        assert tree_node.parent_id == expected_parent
