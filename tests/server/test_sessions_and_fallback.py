"""Recommend for an anonymous session (`context_items`, a transient tree stored nowhere) and for
an unknown user with `allow_fallback` (the popular list, marked as a fallback)."""

from __future__ import annotations

from datetime import UTC, datetime

import grpc
import pytest
from interesttree.v1 import interest_pb2, recommendation_pb2

from server.demo import sample_requests

from ..conftest import RunningServer
from .helpers import reason

START = datetime(2024, 1, 1, tzinfo=UTC)


async def _loaded(server: RunningServer) -> dict[str, list[str]]:
    items, events = sample_requests(START)
    await server.stubs.catalog.UpsertItems(items)
    await server.stubs.interests.RecordEvents(events)
    return {item.name: list(item.categories) for item in items.items}


async def test_an_anonymous_session_gets_a_transient_tree(
    data_only_server: RunningServer,
) -> None:
    categories = await _loaded(data_only_server)
    stubs = data_only_server.stubs
    session = ["items/skylark-of-space", "items/triplanetary"]  # two of the 4 space operas
    users_before = sorted(await data_only_server.runtime.engine.events.user_ids())
    response = await stubs.recommender.Recommend(
        recommendation_pb2.RecommendRequest(
            context_items=[*session, "items/not-in-the-catalog"], page_size=5
        )
    )
    assert not response.fallback
    assert response.tree_revision == 0  # transient: no stored revision
    returned = [rec.item for rec in response.recommendations]
    assert len(returned) == 5
    assert not set(returned) & set(session)  # the session's own items, unless include_seen
    for rec in response.recommendations:
        assert rec.node_ids and rec.reason.startswith("Because of your interest in ")
        assert abs(sum(c.contribution for c in rec.contributions) - rec.score) < 1e-9
    # The other two space operas lead: the session's interest, not the catalog at large.
    assert {categories[item][-1] for item in returned[:2]} == {"Space opera"}
    # Nothing was stored: no new user, no tree.
    assert sorted(await data_only_server.runtime.engine.events.user_ids()) == users_before
    with pytest.raises(grpc.aio.AioRpcError) as unknown:
        await stubs.interests.GetInterestTree(
            interest_pb2.GetInterestTreeRequest(name="users/session/interestTree")
        )
    assert unknown.value.code() == grpc.StatusCode.NOT_FOUND


async def test_session_requests_are_validated(data_only_server: RunningServer) -> None:
    await _loaded(data_only_server)
    stubs = data_only_server.stubs
    with pytest.raises(grpc.aio.AioRpcError) as both:
        await stubs.recommender.Recommend(
            recommendation_pb2.RecommendRequest(
                user="users/alice", context_items=["items/time-machine"]
            )
        )
    assert both.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    with pytest.raises(grpc.aio.AioRpcError) as unknown:
        await stubs.recommender.Recommend(
            recommendation_pb2.RecommendRequest(context_items=["items/nothing-like-it"])
        )
    assert unknown.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert reason(unknown.value) == "UNKNOWN_CONTEXT_ITEMS"
    with pytest.raises(grpc.aio.AioRpcError) as malformed:
        await stubs.recommender.Recommend(
            recommendation_pb2.RecommendRequest(context_items=["books/1"])
        )
    assert malformed.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_an_unknown_user_gets_the_popular_list_with_allow_fallback(
    data_only_server: RunningServer,
) -> None:
    await _loaded(data_only_server)
    stubs = data_only_server.stubs
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await stubs.recommender.Recommend(
            recommendation_pb2.RecommendRequest(user="users/newcomer", page_size=5)
        )
    assert refused.value.code() == grpc.StatusCode.NOT_FOUND
    assert reason(refused.value) == "USER_NOT_FOUND"
    response = await stubs.recommender.Recommend(
        recommendation_pb2.RecommendRequest(user="users/newcomer", page_size=5, allow_fallback=True)
    )
    assert response.fallback
    assert response.tree_revision == 0
    recommendations = list(response.recommendations)
    assert recommendations
    scores = [rec.score for rec in recommendations]
    assert scores == sorted(scores, reverse=True)
    assert all(not rec.node_ids and rec.reason.startswith("Popular: ") for rec in recommendations)
    # Popularity is how many users interacted with the item.
    _, events = sample_requests(START)
    users_of: dict[str, set[str]] = {}
    for event in events.events:
        users_of.setdefault(event.item, set()).add(event.user)
    most = max(len(users) for users in users_of.values())
    top = recommendations[0]
    assert len(users_of[top.item]) == most
    assert top.reason == f"Popular: {most} {'user' if most == 1 else 'users'} interacted with it."
    # Filters still apply to the fallback.
    excluded = await stubs.recommender.Recommend(
        recommendation_pb2.RecommendRequest(
            user="users/newcomer", page_size=5, allow_fallback=True, exclude_items=[top.item]
        )
    )
    assert top.item not in {rec.item for rec in excluded.recommendations}
    # A known user is unaffected by allow_fallback.
    known = await stubs.recommender.Recommend(
        recommendation_pb2.RecommendRequest(user="users/alice", page_size=5, allow_fallback=True)
    )
    assert not known.fallback and known.tree_revision >= 1
