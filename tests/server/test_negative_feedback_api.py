"""EVENT_TYPE_DISLIKE and EVENT_TYPE_HIDE through the API: accepted by RecordEvents, no
interest in the tree, and a hidden item is never recommended again (the property tests of
tests/taxonomy/test_negative_feedback.py pin the scoring)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from google.protobuf.timestamp_pb2 import Timestamp
from interesttree.v1 import catalog_pb2, interest_pb2, recommendation_pb2

from ..conftest import RunningServer

START = datetime(2024, 1, 1, tzinfo=UTC)
BOOKS = {
    "dune": ["Books", "Science fiction", "Space opera"],
    "hyperion": ["Books", "Science fiction", "Space opera"],
    "foundation": ["Books", "Science fiction", "Space opera"],
    "neuromancer": ["Books", "Science fiction", "Cyberpunk"],
    "snow-crash": ["Books", "Science fiction", "Cyberpunk"],
    "rebecca": ["Books", "Mystery", "Gothic"],
}


def _event(item: str, kind: interest_pb2.EventType.ValueType, minute: int) -> interest_pb2.Event:
    when = Timestamp()
    when.FromDatetime(START + timedelta(minutes=minute))
    return interest_pb2.Event(user="users/reader", item=f"items/{item}", type=kind, event_time=when)


async def test_hidden_and_disliked_items_through_the_api(data_only_server: RunningServer) -> None:
    stubs = data_only_server.stubs
    await stubs.catalog.UpsertItems(
        catalog_pb2.UpsertItemsRequest(
            items=[
                catalog_pb2.Item(name=f"items/{book}", title=book.title(), categories=path)
                for book, path in BOOKS.items()
            ]
        )
    )
    events = [
        _event("dune", interest_pb2.EVENT_TYPE_LIKE, 0),
        _event("neuromancer", interest_pb2.EVENT_TYPE_LIKE, 1),
        _event("hyperion", interest_pb2.EVENT_TYPE_HIDE, 2),
        _event("rebecca", interest_pb2.EVENT_TYPE_DISLIKE, 3),
    ]
    recorded = await stubs.interests.RecordEvents(interest_pb2.RecordEventsRequest(events=events))
    assert recorded.recorded_count == 4
    tree = (
        await stubs.interests.BuildInterestTree(
            interest_pb2.BuildInterestTreeRequest(user="users/reader")
        )
    ).tree
    cited = {item for node in tree.nodes for item in node.evidence_items}
    assert cited == {"items/dune", "items/neuromancer"}  # dislikes and hides are no interest
    response = await stubs.recommender.Recommend(
        recommendation_pb2.RecommendRequest(
            user="users/reader",
            page_size=10,
            include_seen=True,
            candidate_items=[f"items/{book}" for book in BOOKS],
        )
    )
    returned = [rec.item for rec in response.recommendations]
    assert "items/hyperion" not in returned
    assert set(returned) == {f"items/{book}" for book in BOOKS} - {"items/hyperion"}
