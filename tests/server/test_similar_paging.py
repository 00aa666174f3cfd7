"""ListSimilarItems pages (AIP-158): page_token and next_page_token walk the one list of similar
items, most similar first, with no item twice and the order of a single long page; a token of
another List RPC, or a forged one, is refused. The async Python SDK's iter_similar_items walks
the same pages."""

from __future__ import annotations

from datetime import UTC, datetime

import grpc
import pytest
from interesttree import AsyncInterestTreeClient
from interesttree.v1 import catalog_pb2, recommendation_pb2

from server import pagination
from server.demo import sample_requests
from taxonomy.recommendation.similar import MAX_SIMILAR_DEPTH, SimilarQuery, page_of

from ..conftest import RunningServer
from .helpers import reason

START = datetime(2024, 1, 1, tzinfo=UTC)
SOURCE = "items/skylark-of-space"


async def test_pages_walk_one_stable_list(data_only_server: RunningServer) -> None:
    stubs = data_only_server.stubs
    items, _ = sample_requests(START)
    await stubs.catalog.UpsertItems(items)
    others = len(items.items) - 1
    assert 10 < others < 100

    whole = await stubs.recommender.ListSimilarItems(
        recommendation_pb2.ListSimilarItemsRequest(item=SOURCE, page_size=100)
    )
    assert len(whole.similar_items) == others
    assert whole.next_page_token == ""
    expected = [s.item for s in whole.similar_items]

    for size in (3, 7):
        seen: list[str] = []
        scores: list[float] = []
        token = ""
        pages = 0
        while True:
            page = await stubs.recommender.ListSimilarItems(
                recommendation_pb2.ListSimilarItemsRequest(
                    item=SOURCE, page_size=size, page_token=token
                )
            )
            pages += 1
            assert len(page.similar_items) <= size
            assert page.space == whole.space
            seen += [s.item for s in page.similar_items]
            scores += [s.score for s in page.similar_items]
            token = page.next_page_token
            if not token:
                break
            assert len(page.similar_items) == size
        assert pages == -(-others // size)
        assert len(seen) == len(set(seen)) == others
        assert seen == expected
        assert scores == sorted(scores, reverse=True)

    # The same request twice: the same page and the same token.
    first = recommendation_pb2.ListSimilarItemsRequest(item=SOURCE, page_size=5)
    again = [await stubs.recommender.ListSimilarItems(first) for _ in range(2)]
    assert again[0] == again[1]
    assert again[0].next_page_token

    # The async SDK pages through the same list.
    async with AsyncInterestTreeClient(f"localhost:{data_only_server.port}") as client:
        walked = [s.item async for s in client.iter_similar_items(SOURCE, page_size=4)]
    assert walked == expected


async def test_tokens_of_other_lists_are_refused(data_only_server: RunningServer) -> None:
    stubs = data_only_server.stubs
    items, _ = sample_requests(START)
    await stubs.catalog.UpsertItems(items)
    listed = await stubs.catalog.ListItems(catalog_pb2.ListItemsRequest(page_size=2))
    assert listed.next_page_token
    for token in (listed.next_page_token, "not-a-token", pagination.TAXONOMY.encode(3)):
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await stubs.recommender.ListSimilarItems(
                recommendation_pb2.ListSimilarItemsRequest(item=SOURCE, page_token=token)
            )
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert reason(refused.value) == "INVALID_PAGE_TOKEN"


def test_paging_stops_at_the_depth_cap() -> None:
    scored = [(f"i{n:05d}", 1.0 - n / 10_000) for n in range(MAX_SIMILAR_DEPTH + 50)]
    query = SimilarQuery("source", page_size=100, offset=MAX_SIMILAR_DEPTH - 40)
    assert query.search_size == MAX_SIMILAR_DEPTH + 1
    page, next_offset = page_of(query, scored[: query.search_size])
    assert [i for i, _ in page] == [
        i for i, _ in scored[MAX_SIMILAR_DEPTH - 40 : MAX_SIMILAR_DEPTH]
    ]
    assert next_offset is None
    page, next_offset = page_of(SimilarQuery("source", page_size=10, offset=20), scored[:31])
    assert len(page) == 10
    assert next_offset == 30
