"""The rules every stored interest tree satisfies, checked before any revision is stored."""

from __future__ import annotations

import networkx as nx

from taxonomy.models import InterestNode, InterestTree
from taxonomy.trees.graph import ROOT, graph_from_tree


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
