"""What changed between two revisions of a user's tree: the one diff the store keeps and every
view (the API, the review page) reads, and the one wording of it."""

from __future__ import annotations

from taxonomy.models import InterestTree, TreeDiff

WEIGHT_CHANGE = 0.05
"""A node whose weight moved less than this between revisions is not reported as reweighted."""
FIRST_REVISION = "first revision"
"""The summary of a tree's first revision, which has nothing to compare with."""


def diff_trees(previous: InterestTree | None, current: InterestTree) -> TreeDiff:
    if previous is None:
        return TreeDiff()
    before = {node.node_id: node for node in previous.nodes}
    after = {node.node_id: node for node in current.nodes}
    common = [node_id for node_id in after if node_id in before]
    gained: dict[str, list[str]] = {}
    lost: dict[str, list[str]] = {}
    for node_id in common:
        old, new = before[node_id].evidence_items, after[node_id].evidence_items
        if set(old) != set(new):
            gained[node_id] = [item for item in new if item not in old]
            lost[node_id] = [item for item in old if item not in new]
    return TreeDiff(
        added_node_ids=[node_id for node_id in after if node_id not in before],
        removed_node_ids=[node_id for node_id in before if node_id not in after],
        relabeled_node_ids=[n for n in common if before[n].label != after[n].label],
        changed_evidence_node_ids=list(gained),
        reweighted_node_ids=[
            n for n in common if abs(before[n].weight - after[n].weight) >= WEIGHT_CHANGE
        ],
        evidence_gained=gained,
        evidence_lost=lost,
    )


def revision_summary(revision: int, diff: TreeDiff) -> str:
    """One line on what revision `revision` changed, e.g. "2 added, 1 relabeled"."""
    return FIRST_REVISION if revision <= 1 else diff.summary
