"""Builds the data-derived interest tree: structure, labels and explanations from the catalog.

The tree is complete and correct without any language model: the model (see `naming.py`) may
only improve labels and explanations, within checks. Structure comes from each item's category
path, extended with the tags that are most common in the user's history, so sibling groups are
told apart by what the catalog says rather than by what a model imagines.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

import networkx as nx
import numpy as np
from numpy.typing import NDArray

from taxonomy.events.history import HistoryItem
from taxonomy.models import CatalogTaxonomyNode, Item, TextSource
from taxonomy.trees.clustering import cluster_paths
from taxonomy.trees.graph import ROOT, NodeData, add_node, node_data

OTHER_INTERESTS = "Other interests"


@dataclass(frozen=True)
class BuilderConfig:
    max_depth: int = 4
    min_depth: int = 2
    recent_share: float = 0.3
    """Share of the latest events that counts as "recent" when a group is split by time."""
    candidate_support: float = 0.4
    """Minimum share of a node's items that must carry a term for it to become a label candidate."""


def _node_id(path: Sequence[str]) -> str:
    digest = hashlib.sha1("\x1f".join(path).encode("utf-8")).hexdigest()
    return f"n{digest[:12]}"


def _grouping_path(item: Item, tag_rank: Mapping[str, float], max_depth: int) -> list[str]:
    path: list[str] = []
    for category in item.categories:
        if not path or path[-1].casefold() != category.casefold():
            path.append(category)
    used = {term.casefold() for term in path}
    ranked_tags = sorted(
        (tag for tag in item.tags if tag.casefold() not in used),
        key=lambda tag: (-tag_rank.get(tag, 0.0), tag),
    )
    for tag in ranked_tags:
        if len(path) >= 2:
            break
        path.append(tag)
        used.add(tag.casefold())
    return path[:max_depth] or [OTHER_INTERESTS]


def _strip_shared_root(
    paths: dict[str, list[str]], keep_depth: int
) -> tuple[tuple[str, ...], dict[str, list[str]]]:
    """Drops leading terms every item shares ("Books", "Fiction"): they say nothing about this
    user, and the level they would fill is better spent on a distinction. Returns the dropped
    terms too, since node ids hash the full path to stay stable as the history grows."""
    dropped: list[str] = []
    while all(len(path) > keep_depth for path in paths.values()):
        roots = {path[0].casefold() for path in paths.values()}
        if len(roots) != 1:
            break
        dropped.append(next(iter(paths.values()))[0])
        paths = {item_id: path[1:] for item_id, path in paths.items()}
    return tuple(dropped), paths


def _tag_rank(history: Sequence[HistoryItem], items: Mapping[str, Item]) -> dict[str, float]:
    """How much of the user's history carries each tag: the user's dominant tags split first."""
    rank: dict[str, float] = {}
    for entry in history:
        for tag in items[entry.item_id].tags:
            rank[tag] = rank.get(tag, 0.0) + entry.strength
    return rank


def build_data_tree(
    user_id: str,
    history: Sequence[HistoryItem],
    items: Mapping[str, Item],
    *,
    config: BuilderConfig = BuilderConfig(),
    vectors: Mapping[str, NDArray[np.float32]] | None = None,
) -> nx.DiGraph:
    """Returns a DiGraph rooted at ROOT; every other node carries its `NodeData`.

    `history` must only hold items present in `items` (the engine drops deleted items first).
    `vectors` (text embeddings) let items without categories or tags be grouped by clustering.
    """
    if not history:
        raise ValueError("cannot build a tree from an empty history")
    tag_rank = _tag_rank(history, items)
    entries = {entry.item_id: entry for entry in history}
    raw_paths = {
        entry.item_id: _grouping_path(items[entry.item_id], tag_rank, config.max_depth + 1)
        for entry in history
    }
    bare = [i for i, path in raw_paths.items() if path == [OTHER_INTERESTS]]
    if vectors is not None and len(bare) >= 2:
        clustered = cluster_paths(bare, items, vectors, fallback=OTHER_INTERESTS)
        if len(bare) == len(raw_paths):
            raw_paths = clustered
        else:
            # Next to catalog-derived groups, clusters sit under one "Other interests" node.
            raw_paths.update({i: [OTHER_INTERESTS, *path] for i, path in clustered.items()})
    root_terms, paths = _strip_shared_root(raw_paths, keep_depth=config.min_depth)
    paths = {item_id: path[: config.max_depth] for item_id, path in paths.items()}

    graph = nx.DiGraph(root_terms=root_terms)
    graph.add_node(ROOT)
    terminal: dict[tuple[str, ...], list[str]] = {}
    for item_id, path in paths.items():
        parent = ROOT
        for depth in range(1, len(path) + 1):
            prefix = tuple(path[:depth])
            node = _node_id((*root_terms, *prefix))
            if node not in graph:
                add_node(graph, node, NodeData(level=depth, path=prefix, label=prefix[-1]))
                graph.add_edge(parent, node)
            node_data(graph, node).members.add(item_id)
            parent = node
        terminal.setdefault(tuple(path), []).append(item_id)

    # Items whose path ends at an inner node would be covered by no leaf: give them a child.
    for ended, item_ids in terminal.items():
        node = _node_id((*root_terms, *ended))
        if graph.out_degree(node) > 0:
            _add_child(graph, node, (*ended, f"{ended[-1]} (other)"), item_ids)

    total_events = max(entry.last_position for entry in history) + 1
    if _depth(graph) < config.min_depth:
        recent_from = total_events * (1 - config.recent_share)
        for node in [n for n in graph.successors(ROOT)]:
            members = node_data(graph, node).members
            recent = {i for i in members if entries[i].last_position >= recent_from}
            earlier = members - recent
            group = node_data(graph, node).path
            # Every level-1 group gets level 2, even a one-sided split: trees have >= 2 levels.
            if recent:
                _add_child(graph, node, (*group, f"Recent {group[-1]}"), recent)
            if earlier:
                _add_child(graph, node, (*group, f"Earlier {group[-1]}"), earlier)

    _assign_weights_and_texts(graph, entries, items, config, total_items=len(history))
    return graph


def project_tree(
    history: Sequence[HistoryItem],
    items: Mapping[str, Item],
    paths: Mapping[str, Sequence[CatalogTaxonomyNode]],
    *,
    config: BuilderConfig = BuilderConfig(),
) -> nx.DiGraph:
    """The user's projection onto the catalog taxonomy: every taxonomy node the history
    touches, holding the history items under it, with the user's weights and evidence.

    `paths` gives each history item's taxonomy nodes from level 1 down to a taxonomy leaf, so
    every item ends at a leaf of the projection; labels are the taxonomy's (named once per
    cluster), so a projection needs no model request."""
    if not history:
        raise ValueError("cannot build a tree from an empty history")
    entries = {entry.item_id: entry for entry in history}
    graph = nx.DiGraph(root_terms=())
    graph.add_node(ROOT)
    for entry in history:
        parent = ROOT
        for taxonomy_node in paths[entry.item_id]:
            node = f"n{taxonomy_node.taxonomy_id.removeprefix('t')}"
            if node not in graph:
                data = NodeData(
                    level=taxonomy_node.level,
                    path=(taxonomy_node.taxonomy_id,),
                    label=taxonomy_node.label,
                    taxonomy_node=taxonomy_node.taxonomy_id,
                )
                add_node(graph, node, data)
                graph.add_edge(parent, node)
            node_data(graph, node).members.add(entry.item_id)
            parent = node
    sources = {node.taxonomy_id: node.label_source for path in paths.values() for node in path}
    _assign_weights_and_texts(graph, entries, items, config, total_items=len(history))
    for node in graph:
        if node == ROOT:
            continue
        data = node_data(graph, node)
        # The taxonomy named the node already: nothing is left for a per-user label request.
        data.candidates = [data.label]
        data.label_source = sources[data.taxonomy_node]
    return graph


def _add_child(
    graph: nx.DiGraph, parent: str, path: tuple[str, ...], item_ids: Sequence[str] | set[str]
) -> None:
    node = _node_id((*graph.graph["root_terms"], *path))
    add_node(
        graph, node, NodeData(level=len(path), path=path, label=path[-1], members=set(item_ids))
    )
    graph.add_edge(parent, node)


def _depth(graph: nx.DiGraph) -> int:
    return max((node_data(graph, node).level for node in graph if node != ROOT), default=0)


def _assign_weights_and_texts(
    graph: nx.DiGraph,
    entries: Mapping[str, HistoryItem],
    items: Mapping[str, Item],
    config: BuilderConfig,
    *,
    total_items: int,
) -> None:
    by_level: dict[int, list[str]] = {}
    for node in graph:
        if node != ROOT:
            by_level.setdefault(node_data(graph, node).level, []).append(node)
    for nodes in by_level.values():
        mass = {n: sum(entries[i].strength for i in node_data(graph, n).members) for n in nodes}
        level_total = sum(mass.values())
        for node in nodes:
            data = node_data(graph, node)
            members = data.members
            evidence = sorted(
                members, key=lambda i: (-entries[i].strength, -entries[i].last_position, i)
            )
            data.weight = mass[node] / level_total if level_total > 0 else 1 / len(nodes)
            data.evidence = evidence
            data.label_source = TextSource.DATA
            data.explanation_source = TextSource.DATA
            latest = max(entries[i].last_time for i in members)
            data.explanation = data_explanation(
                data.label, len(members), total_items, data.weight, latest
            )
            data.candidates = label_candidates(data, items, config)


def data_explanation(
    label: str, member_count: int, total_items: int, weight: float, latest: datetime
) -> str:
    noun = "item" if total_items == 1 else "items"
    verb = "is" if member_count == 1 else "are"  # the verb agrees with the count in the node
    return (
        f"{member_count} of your {total_items} {noun} {verb} in {label}, "
        f"{weight:.0%} of your recent activity at this level; the latest on {latest:%Y-%m-%d}."
    )


def label_candidates(data: NodeData, items: Mapping[str, Item], config: BuilderConfig) -> list[str]:
    """Data-backed labels the model may choose from: the node's own term, and that term refined
    by a tag most of the node's items share (so no candidate rests on one item)."""
    label, members = data.label, data.members
    path_terms = {term.casefold() for term in data.path}
    # Category terms are excluded: they are this node's ancestors or its children already.
    category_terms = {term.casefold() for i in members for term in items[i].categories}
    counts: Counter[str] = Counter()
    for item_id in members:
        for tag in set(items[item_id].tags):
            if tag.casefold() not in path_terms | category_terms:
                counts[tag] += 1
    candidates = [label]
    if len(members) >= 2:
        for term, count in counts.most_common(3):
            if count / len(members) >= config.candidate_support and count >= 2:
                candidates.append(f"{label}: {term}")
    return list(dict.fromkeys(candidates))
