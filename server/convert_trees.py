"""Protobuf ↔ domain conversion, part 2 of 3: interest trees, revisions and their diffs, the
shared taxonomy, explanations and model refreshes.

Part 1 (`server/convert.py`) holds names, items, events and request validation, part 3
(`server/convert_recommendations.py`) recommendation requests and responses; the three are
the one conversion family, the only code that touches both protobuf and domain objects.
"""

from __future__ import annotations

from collections.abc import Sequence

from interesttree.v1 import admin_pb2, interest_pb2

from server.convert import timestamp
from taxonomy.models import InterestNode, InterestTree, TaxonomyNode, TreeDiff
from taxonomy.recommendation.service import LevelExplanation
from taxonomy.refresh.service import RefreshResult
from taxonomy.trees.diff import revision_summary


def tree_name(user_id: str) -> str:
    return f"users/{user_id}/interestTree"


def node_to_proto(node: InterestNode) -> interest_pb2.InterestNode:
    return interest_pb2.InterestNode(
        id=node.node_id,
        parent_id=node.parent_id or "",
        level=node.level,
        label=node.label,
        explanation=node.explanation,
        weight=node.weight,
        evidence_items=[f"items/{item_id}" for item_id in node.evidence_items],
        label_source=int(node.label_source),  # type: ignore[arg-type]
        explanation_source=int(node.explanation_source),  # type: ignore[arg-type]
        taxonomy_node=f"taxonomyNodes/{node.taxonomy_node}" if node.taxonomy_node else "",
    )


def tree_to_proto(tree: InterestTree) -> interest_pb2.InterestTree:
    return interest_pb2.InterestTree(
        name=tree_name(tree.user_id),
        revision=tree.revision,
        nodes=[node_to_proto(node) for node in tree.nodes],
        create_time=timestamp(tree.create_time),
        event_count=tree.event_count,
        model=tree.model,
        build_stats=interest_pb2.BuildStats(**tree.build_stats.model_dump()),
    )


def diff_to_proto(revision: int, diff: TreeDiff) -> interest_pb2.TreeDiff:
    """The message's fields one by one: the domain diff also carries reweighted nodes and
    per-node evidence, which the review page shows and the API does not (yet) have fields for."""
    return interest_pb2.TreeDiff(
        added_node_ids=diff.added_node_ids,
        removed_node_ids=diff.removed_node_ids,
        relabeled_node_ids=diff.relabeled_node_ids,
        changed_evidence_node_ids=diff.changed_evidence_node_ids,
        summary=revision_summary(revision, diff),
    )


def revisions_to_proto(
    revisions: Sequence[tuple[InterestTree, TreeDiff]],
) -> list[interest_pb2.InterestTreeRevision]:
    return [
        interest_pb2.InterestTreeRevision(
            tree=tree_to_proto(tree), diff=diff_to_proto(tree.revision, diff)
        )
        for tree, diff in revisions
    ]


def taxonomy_to_proto(node: TaxonomyNode) -> interest_pb2.TaxonomyNode:
    return interest_pb2.TaxonomyNode(
        name=f"taxonomyNodes/{node.taxonomy_id}",
        label=node.label,
        aliases=node.aliases,
        node_count=node.node_count,
        parent=f"taxonomyNodes/{node.parent_id}" if node.parent_id else "",
        level=node.level,
        item_count=node.item_count,
        central_items=[f"items/{item_id}" for item_id in node.central_items],
        label_source=int(node.label_source),  # type: ignore[arg-type]
    )


def _level_summary(level: LevelExplanation) -> str:
    top = ", ".join(f"{n.label} ({n.weight:.0%})" for n in level.nodes[:3])
    count = len(level.nodes)
    return f"Level {level.level}: {count} interest{'' if count == 1 else 's'}, led by {top}."


def explanation_to_proto(
    tree: InterestTree, levels: Sequence[LevelExplanation]
) -> interest_pb2.ExplainInterestsResponse:
    return interest_pb2.ExplainInterestsResponse(
        tree=tree_name(tree.user_id),
        revision=tree.revision,
        levels=[
            interest_pb2.LevelExplanation(
                level=level.level,
                level_weight=level.weight,
                nodes=[node_to_proto(node) for node in level.nodes],
                summary=_level_summary(level),
            )
            for level in levels
        ],
    )


def refresh_to_proto(result: RefreshResult) -> admin_pb2.RefreshModelsResponse:
    return admin_pb2.RefreshModelsResponse(
        event_count=result.event_count,
        item_count=result.item_count,
        refresh_time=timestamp(result.refresh_time),
    )
