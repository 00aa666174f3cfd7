"""What changed between two revisions of a user's tree: the one diff the store keeps and every
view (the API, the review page) reads."""

from __future__ import annotations

from taxonomy.models import InterestTree, TreeDiff


def diff_trees(previous: InterestTree | None, current: InterestTree) -> TreeDiff:
    if previous is None:
        return TreeDiff()
    before = {node.node_id: node for node in previous.nodes}
    after = {node.node_id: node for node in current.nodes}
    common = [node_id for node_id in after if node_id in before]
    return TreeDiff(
        added_node_ids=[node_id for node_id in after if node_id not in before],
        removed_node_ids=[node_id for node_id in before if node_id not in after],
        relabeled_node_ids=[n for n in common if before[n].label != after[n].label],
        changed_evidence_node_ids=[
            n for n in common if set(before[n].evidence_items) != set(after[n].evidence_items)
        ],
    )
