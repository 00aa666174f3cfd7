"""The typed working graph of a tree being built: one `NodeData` per node, so the builder,
the clustering and the naming share attributes a type checker can see.

The graph is a NetworkX DiGraph rooted at `ROOT`; `tree_from_graph` turns it into the stored
`InterestTree`, `graph_from_tree` back into a graph for structural checks.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

import networkx as nx

from taxonomy.models import InterestNode, InterestTree, TextSource

ROOT = "root"


@dataclass
class NodeData:
    """What the builder knows about one interest node, filled in as the build proceeds."""

    level: int
    path: tuple[str, ...]
    label: str
    members: set[str] = field(default_factory=set)
    """Ids of the user's history items in this node's group."""
    weight: float = 0.0
    evidence: list[str] = field(default_factory=list)
    """The members, strongest first."""
    explanation: str = ""
    label_source: TextSource = TextSource.DATA
    explanation_source: TextSource = TextSource.DATA
    candidates: list[str] = field(default_factory=list)
    """Data-backed labels the model may choose from."""
    reviewed: bool = False
    """The model answered about this node (accepted or not)."""
    taxonomy_node: str = ""
    """A projection's node: the catalog-taxonomy node it is the user's share of."""


def add_node(graph: nx.DiGraph, node: str, data: NodeData) -> None:
    graph.add_node(node, data=data)


def node_data(graph: nx.DiGraph, node: str) -> NodeData:
    data: NodeData = graph.nodes[node]["data"]
    return data


def parent_of(graph: nx.DiGraph, node: str) -> str:
    return str(next(iter(graph.predecessors(node))))


def interest_nodes(graph: nx.DiGraph) -> list[str]:
    """Every node but the root, parents before children."""
    return [node for node in nx.bfs_tree(graph, ROOT) if node != ROOT]


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
    for node in interest_nodes(graph):
        data = node_data(graph, node)
        parent = parent_of(graph, node)
        nodes.append(
            InterestNode(
                node_id=node,
                parent_id=None if parent == ROOT else parent,
                level=data.level,
                label=data.label,
                explanation=data.explanation,
                weight=data.weight,
                evidence_items=data.evidence,
                label_source=data.label_source,
                explanation_source=data.explanation_source,
                reviewed=data.reviewed,
                taxonomy_node=data.taxonomy_node,
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
    graph.add_node(ROOT)
    for node in tree.nodes:
        graph.add_node(node.node_id, **node.model_dump(exclude={"node_id"}))
        graph.add_edge(node.parent_id or ROOT, node.node_id)
    return graph
