"""Wording the API and the review page show (issue 13):

- "1 of your 3 items is", not "are"; "1 interest", not "interest(s)";
- revision 1's summary is the same in the API and on the page ("first revision");
- a diff names each node with its parent path, so two "Mystery" nodes of level 2 differ;
- recommendations give reasons specific to the item: the node that brought it and the
  evidence items of that node closest to it, by title.
"""

from __future__ import annotations

from datetime import UTC, datetime

import httpx
from interesttree.v1 import interest_pb2, recommendation_pb2

from server.convert_trees import _level_summary, revisions_to_proto
from server.demo import sample_requests
from server.http import create_http_app, revision_changes, start_http
from taxonomy.models import InterestNode, InterestTree
from taxonomy.recommendation.service import LevelExplanation
from taxonomy.trees.builder import data_explanation
from taxonomy.trees.diff import FIRST_REVISION, diff_trees

from ..conftest import RunningServer

NOW = datetime(2024, 1, 1, tzinfo=UTC)


def _node(node_id: str, label: str, level: int, parent: str | None) -> InterestNode:
    return InterestNode(
        node_id=node_id,
        parent_id=parent,
        level=level,
        label=label,
        explanation="",
        weight=0.5,
        evidence_items=[node_id + "-item"],
    )


def test_the_verb_agrees_with_the_count() -> None:
    one = data_explanation("Space opera", 1, 3, 0.33, NOW)
    assert one.startswith("1 of your 3 items is in Space opera, ")
    two = data_explanation("Space opera", 2, 3, 0.66, NOW)
    assert two.startswith("2 of your 3 items are in Space opera, ")
    assert data_explanation("Dune", 1, 1, 1.0, NOW).startswith("1 of your 1 item is in Dune")


def test_level_summaries_count_interests_in_words() -> None:
    node = _node("a", "Books", 1, None)
    assert _level_summary(LevelExplanation(1, 1.0, [node])).startswith("Level 1: 1 interest,")
    two = LevelExplanation(1, 1.0, [node, _node("b", "Films", 1, None)])
    assert _level_summary(two).startswith("Level 1: 2 interests,")


def test_a_diff_names_nodes_with_their_parent_path() -> None:
    books = _node("books", "Books", 1, None)
    films = _node("films", "Films", 1, None)
    before = InterestTree(
        user_id="u", revision=1, nodes=[books, films], create_time=NOW, event_count=2
    )
    after = InterestTree(
        user_id="u",
        revision=2,
        nodes=[
            books,
            films,
            _node("books-mystery", "Mystery", 2, "books"),
            _node("films-mystery", "Mystery", 2, "films"),
        ],
        create_time=NOW,
        event_count=4,
    )
    changes = revision_changes(diff_trees(before, after), before, after, {})
    added = {(tuple(entry["path"]), entry["label"], entry["level"]) for entry in changes["added"]}
    assert added == {(("Books",), "Mystery", 2), (("Films",), "Mystery", 2)}
    # The page joins the path and the label (server/review/review.js, nodePath).
    script = (create_http_app.__globals__["REVIEW_DIR"] / "review.js").read_text()
    assert "nodePath(n)} (level ${n.level})" in script


def test_revision_one_reads_the_same_in_the_api_and_on_the_page() -> None:
    tree = InterestTree(
        user_id="u",
        revision=1,
        nodes=[_node("a", "Books", 1, None)],
        create_time=NOW,
        event_count=1,
    )
    [message] = revisions_to_proto([(tree, diff_trees(None, tree))])
    assert message.diff.summary == FIRST_REVISION


async def test_recommendation_reasons_are_specific_to_the_item(
    data_only_server: RunningServer,
) -> None:
    stubs = data_only_server.stubs
    items, events = sample_requests(NOW)
    await stubs.catalog.UpsertItems(items)
    await stubs.interests.RecordEvents(events)
    titles = {item.name: item.title for item in items.items}
    user = "users/alice"
    tree = (
        await stubs.interests.BuildInterestTree(interest_pb2.BuildInterestTreeRequest(user=user))
    ).tree
    evidence = {node.id: {titles[e] for e in node.evidence_items} for node in tree.nodes}
    response = await stubs.recommender.Recommend(
        recommendation_pb2.RecommendRequest(user=user, page_size=10)
    )
    recommendations = list(response.recommendations)
    assert len(recommendations) == 10
    reasons = [rec.reason for rec in recommendations]
    for rec in recommendations:
        assert rec.reason.startswith("Because of your interest in ")
        # The titles it names are evidence of the (one or two) nodes it names.
        named = rec.reason.split(": close to ", 1)[1].rstrip(".").split(" and ")
        named_titles = {title.strip("\u201c\u201d") for title in named}
        assert named_titles <= set().union(*(evidence[n] for n in rec.node_ids[:2])), rec.reason
    assert len(set(reasons)) >= 5, reasons
    # The review page shows the same reasons.
    served = await start_http(create_http_app(data_only_server.runtime.engine), "127.0.0.1", 0)
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{served.port}") as client:
            review = (await client.get("/api/users/alice")).json()
    finally:
        await served.stop()
    assert [rec["reason"] for rec in review["recommendations"]] == reasons
