"""RecommendationService.ListSimilarItems over the API: the nearest items to one item, never
the item itself, most similar first, the caller's filters applied, and a reason per item that
names what it shares with the requested one."""

from __future__ import annotations

from datetime import UTC, datetime

import grpc
import pytest
from interesttree.v1 import catalog_pb2, recommendation_pb2

from server.demo import sample_requests

from ..conftest import RunningServer
from .helpers import reason

START = datetime(2024, 1, 1, tzinfo=UTC)


async def test_similar_items_with_reasons_and_filters(data_only_server: RunningServer) -> None:
    stubs = data_only_server.stubs
    items, _ = sample_requests(START)
    await stubs.catalog.UpsertItems(items)
    by_name = {item.name: item for item in items.items}
    source = by_name["items/skylark-of-space"]
    response = await stubs.recommender.ListSimilarItems(
        recommendation_pb2.ListSimilarItemsRequest(item=source.name, page_size=8)
    )
    similar = list(response.similar_items)
    assert response.space == "text"
    assert len(similar) == 8
    assert source.name not in {s.item for s in similar}
    scores = [s.score for s in similar]
    assert scores == sorted(scores, reverse=True)
    for entry in similar:
        item = by_name[entry.item]
        assert entry.reason.startswith(f"Like \u201c{source.title}\u201d: ")
        shared = list(entry.shared_categories)
        assert list(item.categories[: len(shared)]) == list(source.categories[: len(shared)])
        assert set(entry.shared_tags) == set(item.tags) & set(source.tags)
        for tag in entry.shared_tags[:3]:
            assert tag in entry.reason
    # The space operas come first and say so (not just the "Fiction" every item shares).
    space_operas = [s for s in similar if by_name[s.item].categories[-1] == "Space opera"]
    assert space_operas and all("Space opera" in s.reason for s in space_operas)
    assert len({s.reason for s in similar}) >= 4

    filtered = await stubs.recommender.ListSimilarItems(
        recommendation_pb2.ListSimilarItemsRequest(
            item=source.name,
            page_size=20,
            categories=[recommendation_pb2.CategoryPath(categories=["Fiction", "Science fiction"])],
            exclude_items=["items/triplanetary"],
        )
    )
    names = {s.item for s in filtered.similar_items}
    assert names and "items/triplanetary" not in names
    assert all(list(by_name[n].categories[:2]) == ["Fiction", "Science fiction"] for n in names)
    chosen = ["items/time-machine", "items/star-kings", "items/skylark-of-space"]
    only = await stubs.recommender.ListSimilarItems(
        recommendation_pb2.ListSimilarItemsRequest(item=source.name, candidate_items=chosen)
    )
    assert [s.item for s in only.similar_items] == ["items/star-kings", "items/time-machine"]


async def test_similar_items_errors(data_only_server: RunningServer) -> None:
    stubs = data_only_server.stubs
    await stubs.catalog.UpsertItems(
        catalog_pb2.UpsertItemsRequest(items=[catalog_pb2.Item(name="items/a", title="A")])
    )
    with pytest.raises(grpc.aio.AioRpcError) as missing:
        await stubs.recommender.ListSimilarItems(
            recommendation_pb2.ListSimilarItemsRequest(item="items/nope")
        )
    assert missing.value.code() == grpc.StatusCode.NOT_FOUND
    assert reason(missing.value) == "ITEM_NOT_FOUND"
    with pytest.raises(grpc.aio.AioRpcError) as invalid:
        await stubs.recommender.ListSimilarItems(
            recommendation_pb2.ListSimilarItemsRequest(item="books/1")
        )
    assert invalid.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert reason(invalid.value) == "INVALID_RESOURCE_NAME"
    alone = await stubs.recommender.ListSimilarItems(
        recommendation_pb2.ListSimilarItemsRequest(item="items/a")
    )
    assert list(alone.similar_items) == []
