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

from taxonomy.clustering import cluster_paths
from taxonomy.history import HistoryItem
from taxonomy.models import InterestNode, InterestTree, Item, TextSource

ROOT = "root"
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
    """Returns a DiGraph rooted at ROOT; every other node carries the attributes of InterestNode.

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
    graph.add_node(ROOT, level=0, path=())
    terminal: dict[tuple[str, ...], list[str]] = {}
    for item_id, path in paths.items():
        parent = ROOT
        for depth in range(1, len(path) + 1):
            prefix = tuple(path[:depth])
            node = _node_id((*root_terms, *prefix))
            if node not in graph:
                graph.add_node(node, level=depth, path=prefix, label=prefix[-1], members=set())
                graph.add_edge(parent, node)
            graph.nodes[node]["members"].add(item_id)
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
            members = graph.nodes[node]["members"]
            recent = {i for i in members if entries[i].last_position >= recent_from}
            earlier = members - recent
            path = graph.nodes[node]["path"]
            # Every level-1 group gets level 2, even a one-sided split: trees have >= 2 levels.
            if recent:
                _add_child(graph, node, (*path, f"Recent {path[-1]}"), recent)
            if earlier:
                _add_child(graph, node, (*path, f"Earlier {path[-1]}"), earlier)

    _assign_weights_and_texts(graph, entries, items, config, total_items=len(history))
    return graph


def _add_child(
    graph: nx.DiGraph, parent: str, path: tuple[str, ...], item_ids: Sequence[str] | set[str]
) -> None:
    node = _node_id((*graph.graph["root_terms"], *path))
    graph.add_node(node, level=len(path), path=path, label=path[-1], members=set(item_ids))
    graph.add_edge(parent, node)


def _depth(graph: nx.DiGraph) -> int:
    return max(int(level) for _, level in graph.nodes(data="level"))


def _assign_weights_and_texts(
    graph: nx.DiGraph,
    entries: Mapping[str, HistoryItem],
    items: Mapping[str, Item],
    config: BuilderConfig,
    *,
    total_items: int,
) -> None:
    by_level: dict[int, list[str]] = {}
    for node, level in graph.nodes(data="level"):
        if node != ROOT:
            by_level.setdefault(int(level), []).append(node)
    for nodes in by_level.values():
        mass = {n: sum(entries[i].strength for i in graph.nodes[n]["members"]) for n in nodes}
        level_total = sum(mass.values())
        for node in nodes:
            attrs = graph.nodes[node]
            members = attrs["members"]
            evidence = sorted(
                members, key=lambda i: (-entries[i].strength, -entries[i].last_position, i)
            )
            attrs["weight"] = mass[node] / level_total if level_total > 0 else 1 / len(nodes)
            attrs["evidence"] = evidence
            attrs["label_source"] = TextSource.DATA
            attrs["explanation_source"] = TextSource.DATA
            latest = max(entries[i].last_time for i in members)
            attrs["explanation"] = data_explanation(
                attrs["label"], len(members), total_items, attrs["weight"], latest
            )
            attrs["candidates"] = label_candidates(graph, node, items, config)


def data_explanation(
    label: str, member_count: int, total_items: int, weight: float, latest: datetime
) -> str:
    noun = "item" if total_items == 1 else "items"
    return (
        f"{member_count} of your {total_items} {noun} are in {label}, "
        f"{weight:.0%} of your recent activity at this level; the latest on {latest:%Y-%m-%d}."
    )


def label_candidates(
    graph: nx.DiGraph, node: str, items: Mapping[str, Item], config: BuilderConfig
) -> list[str]:
    """Data-backed labels the model may choose from: the node's own term, and that term refined
    by a tag most of the node's items share (so no candidate rests on one item)."""
    attrs = graph.nodes[node]
    label: str = attrs["label"]
    members: set[str] = attrs["members"]
    path_terms = {term.casefold() for term in attrs["path"]}
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


def tree_from_graph(
    graph: nx.DiGraph,
    *,
    user_id: str,
    revision: int,
    create_time: datetime,
    event_count: int,
    model: str,
) -> InterestTree:
    nodes: list[InterestNode] = []
    for node in nx.bfs_tree(graph, ROOT):
        if node == ROOT:
            continue
        attrs = graph.nodes[node]
        parent = next(iter(graph.predecessors(node)))
        nodes.append(
            InterestNode(
                node_id=node,
                parent_id=None if parent == ROOT else parent,
                level=attrs["level"],
                label=attrs["label"],
                explanation=attrs["explanation"],
                weight=attrs["weight"],
                evidence_items=attrs["evidence"],
                label_source=attrs["label_source"],
                explanation_source=attrs["explanation_source"],
                reviewed=attrs.get("reviewed", False),
            )
        )
    nodes.sort(key=lambda n: (n.level, -n.weight, n.node_id))
    return InterestTree(
        user_id=user_id,
        revision=revision,
        nodes=nodes,
        create_time=create_time,
        event_count=event_count,
        model=model,
    )


def graph_from_tree(tree: InterestTree) -> nx.DiGraph:
    graph = nx.DiGraph()
    graph.add_node(ROOT, level=0)
    for node in tree.nodes:
        graph.add_node(node.node_id, **node.model_dump(exclude={"node_id"}))
        graph.add_edge(node.parent_id or ROOT, node.node_id)
    return graph


def invariant_violations(tree: InterestTree, history_item_ids: set[str]) -> list[str]:
    """Every rule a stored tree must satisfy; an empty list means the tree is valid."""
    problems: list[str] = []
    by_id = {node.node_id: node for node in tree.nodes}
    graph = graph_from_tree(tree)
    if not nx.is_arborescence(graph):
        problems.append("nodes do not form a tree")
    children: dict[str, list[InterestNode]] = {}
    for node in tree.nodes:
        evidence = set(node.evidence_items)
        if not evidence <= history_item_ids:
            problems.append(f"{node.node_id}: evidence outside the user's history")
        if node.parent_id is not None:
            parent = by_id.get(node.parent_id)
            if parent is None or parent.level != node.level - 1:
                problems.append(f"{node.node_id}: parent missing or not one level up")
            elif not evidence <= set(parent.evidence_items):
                problems.append(f"{node.node_id}: evidence not contained in the parent's")
        elif node.level != 1:
            problems.append(f"{node.node_id}: root-level node at level {node.level}")
        children.setdefault(node.parent_id or ROOT, []).append(node)
    for siblings in children.values():
        labels = [s.label.casefold() for s in siblings]
        if len(labels) != len(set(labels)):
            problems.append(f"duplicate sibling labels: {sorted(labels)}")
    for level in range(1, tree.depth + 1):
        total = sum(node.weight for node in tree.level_nodes(level))
        if abs(total - 1.0) > 1e-6:
            problems.append(f"level {level} weights sum to {total:.6f}")
    leaves = [n for n in tree.nodes if n.node_id not in children]
    covered = set().union(*(set(leaf.evidence_items) for leaf in leaves)) if leaves else set()
    if covered != history_item_ids:
        problems.append(f"{len(history_item_ids - covered)} history items not covered by a leaf")
    return problems
