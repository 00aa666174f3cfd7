"""The gRPC API over a real server: happy paths, rich errors, pagination, persistence."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from grpc_status import rpc_status
from interesttree.v1 import (
    admin_pb2,
    catalog_pb2,
    interest_pb2,
    recommendation_pb2,
)

from server.demo import sample_requests
from taxonomy.models import InterestNode, InterestTree, TextSource
from taxonomy.trees.invariants import invariant_violations

from ..conftest import RunningServer, data_only_settings, start_server
from ..storage.backends import StoreBackend

# Every test here runs on both store backends, SQLite and PostgreSQL (tests/storage).
pytestmark = pytest.mark.usefixtures("store_backend")

START = datetime(2024, 1, 1, tzinfo=UTC)


async def load_sample(
    running: RunningServer,
) -> tuple[catalog_pb2.UpsertItemsRequest, interest_pb2.RecordEventsRequest]:
    items, events = sample_requests(START)
    await running.stubs.catalog.UpsertItems(items)
    await running.stubs.interests.RecordEvents(events)
    return items, events


def details(
    error: grpc.aio.AioRpcError,
) -> tuple[
    error_details_pb2.ErrorInfo,
    list[error_details_pb2.BadRequest.FieldViolation],
    error_details_pb2.ResourceInfo | None,
]:
    status = rpc_status.from_call(error)
    assert status is not None, "no google.rpc.Status in trailers"
    info = error_details_pb2.ErrorInfo()
    violations: list[error_details_pb2.BadRequest.FieldViolation] = []
    resource: error_details_pb2.ResourceInfo | None = None
    found_info = False
    for detail in status.details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            detail.Unpack(info)
            found_info = True
        elif detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            violations.extend(bad.field_violations)
        elif detail.Is(error_details_pb2.ResourceInfo.DESCRIPTOR):
            resource = error_details_pb2.ResourceInfo()
            detail.Unpack(resource)
    assert found_info, "ErrorInfo missing"
    assert info.domain == "interesttree.v1"
    return info, violations, resource


def domain_tree(tree: interest_pb2.InterestTree) -> InterestTree:
    return InterestTree(
        user_id=tree.name.split("/")[1],
        revision=tree.revision,
        create_time=tree.create_time.ToDatetime(tzinfo=UTC),
        event_count=tree.event_count,
        model=tree.model,
        nodes=[
            InterestNode(
                node_id=node.id,
                parent_id=node.parent_id or None,
                level=node.level,
                label=node.label,
                explanation=node.explanation,
                weight=node.weight,
                evidence_items=[name.removeprefix("items/") for name in node.evidence_items],
                label_source=TextSource(node.label_source),
                explanation_source=TextSource(node.explanation_source),
            )
            for node in tree.nodes
        ],
    )


def history_of(events: interest_pb2.RecordEventsRequest, user: str) -> set[str]:
    return {e.item.removeprefix("items/") for e in events.events if e.user == user}


async def test_tree_and_recommendations_end_to_end(data_only_server: RunningServer) -> None:
    stubs = data_only_server.stubs
    _, events = await load_sample(data_only_server)
    built = await stubs.interests.BuildInterestTree(
        interest_pb2.BuildInterestTreeRequest(user="users/alice")
    )
    tree = built.tree
    assert tree.name == "users/alice/interestTree"
    assert tree.revision == 1
    assert invariant_violations(domain_tree(tree), history_of(events, "users/alice")) == []
    labels = {node.label for node in tree.nodes if node.level == 2}
    assert "Space opera" in {node.label for node in tree.nodes}, labels

    fetched = await stubs.interests.GetInterestTree(
        interest_pb2.GetInterestTreeRequest(name="users/alice/interestTree")
    )
    assert fetched.tree == tree

    explained = await stubs.interests.ExplainInterests(
        interest_pb2.ExplainInterestsRequest(user="users/alice")
    )
    assert [level.level for level in explained.levels] == list(range(1, len(explained.levels) + 1))
    assert all(level.nodes and level.summary for level in explained.levels)

    response = await stubs.recommender.Recommend(
        recommendation_pb2.RecommendRequest(user="users/alice", page_size=5)
    )
    assert len(response.recommendations) == 5
    seen = {f"items/{i}" for i in history_of(events, "users/alice")}
    node_ids = {node.id for node in tree.nodes}
    scores = [rec.score for rec in response.recommendations]
    assert scores == sorted(scores, reverse=True)
    for rec in response.recommendations:
        assert rec.item not in seen
        assert rec.node_ids and set(rec.node_ids) <= node_ids
        assert rec.reason
        contributions = [c.contribution for c in rec.contributions]
        assert contributions == sorted(contributions, reverse=True)

    with_seen = await stubs.recommender.Recommend(
        recommendation_pb2.RecommendRequest(user="users/alice", page_size=20, include_seen=True)
    )
    assert {rec.item for rec in with_seen.recommendations} & seen


async def test_recommend_builds_a_missing_tree(data_only_server: RunningServer) -> None:
    await load_sample(data_only_server)
    response = await data_only_server.stubs.recommender.Recommend(
        recommendation_pb2.RecommendRequest(user="users/carol")
    )
    assert response.tree_revision == 1
    assert len(response.recommendations) == 10


async def test_level_weights_override_changes_the_ranking(data_only_server: RunningServer) -> None:
    await load_sample(data_only_server)
    stubs = data_only_server.stubs
    coarse = await stubs.recommender.Recommend(
        recommendation_pb2.RecommendRequest(user="users/alice", level_weights=[1.0, 0, 0])
    )
    fine = await stubs.recommender.Recommend(
        recommendation_pb2.RecommendRequest(user="users/alice", level_weights=[0, 0, 1.0])
    )
    assert list(coarse.level_weights) == [1.0, 0.0, 0.0]
    assert all(c.level == 1 for rec in coarse.recommendations for c in rec.contributions)
    assert all(c.level == 3 for rec in fine.recommendations for c in rec.contributions)


async def test_rebuild_increments_revision(data_only_server: RunningServer) -> None:
    await load_sample(data_only_server)
    stubs = data_only_server.stubs
    request = interest_pb2.BuildInterestTreeRequest(user="users/bob")
    first = await stubs.interests.BuildInterestTree(request)
    second = await stubs.interests.BuildInterestTree(request)
    assert (first.tree.revision, second.tree.revision) == (1, 2)
    assert [n.id for n in first.tree.nodes] == [n.id for n in second.tree.nodes]


async def test_catalog_get_list_delete(data_only_server: RunningServer) -> None:
    stubs = data_only_server.stubs
    items, _ = await load_sample(data_only_server)
    got = await stubs.catalog.GetItem(catalog_pb2.GetItemRequest(name="items/dracula"))
    assert got.item.title == "Dracula"
    assert got.item.update_time.seconds > 0

    names: list[str] = []
    token = ""
    while True:
        page = await stubs.catalog.ListItems(
            catalog_pb2.ListItemsRequest(page_size=7, page_token=token)
        )
        assert len(page.items) <= 7
        names.extend(item.name for item in page.items)
        token = page.next_page_token
        if not token:
            break
    assert names == sorted(item.name for item in items.items)

    deleted = await stubs.catalog.DeleteItems(
        catalog_pb2.DeleteItemsRequest(names=["items/dracula", "items/carmilla"])
    )
    assert deleted.deleted_count == 2
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stubs.catalog.GetItem(catalog_pb2.GetItemRequest(name="items/dracula"))
    assert raised.value.code() == grpc.StatusCode.NOT_FOUND
    # Deleted items are never recommended, and the tree is still built from what remains.
    response = await stubs.recommender.Recommend(
        recommendation_pb2.RecommendRequest(user="users/alice", page_size=50, include_seen=True)
    )
    assert "items/dracula" not in {rec.item for rec in response.recommendations}


async def test_record_events_is_idempotent_with_request_id(
    data_only_server: RunningServer,
) -> None:
    stubs = data_only_server.stubs
    _, events = await load_sample(data_only_server)
    replay = await stubs.interests.RecordEvents(events)
    assert replay.recorded_count == 0
    refreshed = await stubs.admin.RefreshModels(admin_pb2.RefreshModelsRequest())
    assert refreshed.event_count == len(events.events)
    assert refreshed.item_count == 49


async def expect_error(call: object, code: grpc.StatusCode) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await call  # type: ignore[misc]
    assert raised.value.code() == code, raised.value.details()
    return raised.value


async def test_bad_input_gets_rich_errors_and_loses_nothing(
    data_only_server: RunningServer,
) -> None:
    stubs = data_only_server.stubs
    _, events = await load_sample(data_only_server)
    before = await stubs.admin.RefreshModels(admin_pb2.RefreshModelsRequest())

    error = await expect_error(
        stubs.recommender.Recommend(recommendation_pb2.RecommendRequest(user="users/nobody")),
        grpc.StatusCode.NOT_FOUND,
    )
    info, _, resource = details(error)
    assert info.reason == "USER_NOT_FOUND"
    assert resource is not None and resource.resource_name == "users/nobody"

    error = await expect_error(
        stubs.catalog.GetItem(catalog_pb2.GetItemRequest(name="books/1")),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    info, violations, _ = details(error)
    assert info.reason == "INVALID_RESOURCE_NAME"
    assert [v.field for v in violations] == ["name"]

    error = await expect_error(
        stubs.catalog.UpsertItems(catalog_pb2.UpsertItemsRequest()),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    assert details(error)[1][0].field == "items"

    error = await expect_error(
        stubs.catalog.UpsertItems(
            catalog_pb2.UpsertItemsRequest(
                items=[
                    catalog_pb2.Item(name="items/ok", title="Fine"),
                    catalog_pb2.Item(name="items/dracula", title="x" * 513),
                    catalog_pb2.Item(name="items/bad id", title="Spaces"),
                ]
            )
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    fields = [v.field for v in details(error)[1]]
    assert fields == ["items[1].title", "items[2].name"]
    got = await stubs.catalog.GetItem(catalog_pb2.GetItemRequest(name="items/dracula"))
    assert got.item.title == "Dracula", "a rejected batch must not change stored items"
    await expect_error(
        stubs.catalog.GetItem(catalog_pb2.GetItemRequest(name="items/ok")),
        grpc.StatusCode.NOT_FOUND,
    )

    bad_events = interest_pb2.RecordEventsRequest()
    good = bad_events.events.add(user="users/alice", item="items/dracula")
    good.event_time.FromDatetime(START)
    unknown = bad_events.events.add(user="users/alice", item="items/missing")
    unknown.event_time.FromDatetime(START)
    error = await expect_error(
        stubs.interests.RecordEvents(bad_events), grpc.StatusCode.INVALID_ARGUMENT
    )
    info, violations, _ = details(error)
    assert info.reason == "ITEM_NOT_FOUND"
    assert [v.field for v in violations] == ["events[1].item"]

    no_time = interest_pb2.RecordEventsRequest()
    no_time.events.add(user="users/alice", item="items/dracula")
    error = await expect_error(
        stubs.interests.RecordEvents(no_time), grpc.StatusCode.INVALID_ARGUMENT
    )
    assert details(error)[1][0].field == "events[0].event_time"

    error = await expect_error(
        stubs.recommender.Recommend(
            recommendation_pb2.RecommendRequest(user="users/alice", page_size=-1)
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    assert details(error)[1][0].field == "page_size"

    error = await expect_error(
        stubs.recommender.Recommend(
            recommendation_pb2.RecommendRequest(user="users/alice", level_weights=[-1.0])
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    assert details(error)[1][0].field == "level_weights[0]"

    await expect_error(
        stubs.interests.GetInterestTree(
            interest_pb2.GetInterestTreeRequest(name="users/alice/interestTree")
        ),
        grpc.StatusCode.NOT_FOUND,
    )
    await expect_error(
        stubs.catalog.ListItems(catalog_pb2.ListItemsRequest(page_token="garbage!")),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    await expect_error(
        stubs.catalog.DeleteItems(catalog_pb2.DeleteItemsRequest(names=["items/nope"])),
        grpc.StatusCode.NOT_FOUND,
    )

    after = await stubs.admin.RefreshModels(admin_pb2.RefreshModelsRequest())
    assert after.event_count == before.event_count == len(events.events)
    assert after.item_count == before.item_count


async def test_health_and_reflection(data_only_server: RunningServer) -> None:
    channel = data_only_server.stubs.channel
    health = health_pb2_grpc.HealthStub(channel)
    for _ in range(50):
        status = await health.Check(health_pb2.HealthCheckRequest(service=""))
        if status.status == health_pb2.HealthCheckResponse.SERVING:
            break
        await __import__("asyncio").sleep(0.1)
    assert status.status == health_pb2.HealthCheckResponse.SERVING
    checked = await health.Check(
        health_pb2.HealthCheckRequest(service="interesttree.v1.RecommendationService")
    )
    assert checked.status == health_pb2.HealthCheckResponse.SERVING

    reflection = reflection_pb2_grpc.ServerReflectionStub(channel)
    responses = reflection.ServerReflectionInfo(
        iter([reflection_pb2.ServerReflectionRequest(list_services="")])
    )
    names = set()
    async for response in responses:
        names = {s.name for s in response.list_services_response.service}
        break
    assert {
        "interesttree.v1.CatalogService",
        "interesttree.v1.InterestService",
        "interesttree.v1.RecommendationService",
        "interesttree.v1.AdminService",
        "grpc.health.v1.Health",
    } <= names


async def test_everything_survives_a_restart(tmp_path: Path, store_backend: StoreBackend) -> None:
    settings = data_only_settings(tmp_path / "data", store_backend)
    first = await start_server(settings)
    await load_sample(first)
    built = await first.stubs.interests.BuildInterestTree(
        interest_pb2.BuildInterestTreeRequest(user="users/bob")
    )
    before = await first.stubs.recommender.Recommend(
        recommendation_pb2.RecommendRequest(user="users/bob")
    )
    await first.stop()

    second = await start_server(settings)
    try:
        tree = await second.stubs.interests.GetInterestTree(
            interest_pb2.GetInterestTreeRequest(name="users/bob/interestTree")
        )
        assert tree.tree == built.tree
        after = await second.stubs.recommender.Recommend(
            recommendation_pb2.RecommendRequest(user="users/bob")
        )
        assert [r.item for r in after.recommendations] == [r.item for r in before.recommendations]
    finally:
        await second.stop()


async def test_lost_index_files_are_rebuilt_from_the_store(
    tmp_path: Path, store_backend: StoreBackend
) -> None:
    settings = data_only_settings(tmp_path / "data", store_backend)
    first = await start_server(settings)
    await load_sample(first)
    before = await first.stubs.recommender.Recommend(
        recommendation_pb2.RecommendRequest(user="users/carol")
    )
    await first.stop()
    # As after a crash between the store's commit and the next index save.
    for marker in (settings.data_dir / "indexes").rglob("store_version.json"):
        marker.unlink()
    second = await start_server(settings)
    try:
        after = await second.stubs.recommender.Recommend(
            recommendation_pb2.RecommendRequest(user="users/carol")
        )
        assert [r.item for r in after.recommendations] == [r.item for r in before.recommendations]
    finally:
        await second.stop()


async def test_level_weights_for_missing_levels_fall_back_to_defaults(
    data_only_server: RunningServer,
) -> None:
    await load_sample(data_only_server)
    response = await data_only_server.stubs.recommender.Recommend(
        recommendation_pb2.RecommendRequest(
            user="users/bob", level_weights=[0, 0, 0, 0, 0, 0, 0, 1.0]
        )
    )
    assert len(response.recommendations) == 10
    assert sum(response.level_weights) > 0


async def test_caller_vectors_replace_text_embeddings(data_only_server: RunningServer) -> None:
    stubs = data_only_server.stubs
    await load_sample(data_only_server)

    def axis(index: int, wobble: float = 0.0) -> list[float]:
        vector = [0.0] * 384
        vector[index] = 1.0
        vector[index + 1] = wobble
        return vector

    error = await expect_error(
        stubs.catalog.UpsertItems(
            catalog_pb2.UpsertItemsRequest(
                items=[catalog_pb2.Item(name="items/short", title="Short", vector=[1.0, 2.0])]
            )
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    assert [v.field for v in details(error)[1]] == ["items[0].vector"]

    await stubs.catalog.UpsertItems(
        catalog_pb2.UpsertItemsRequest(
            items=[
                catalog_pb2.Item(name="items/probe-a", title="Alpha", vector=axis(100)),
                catalog_pb2.Item(name="items/probe-b", title="Bravo", vector=axis(100, 0.1)),
                catalog_pb2.Item(name="items/probe-c", title="Charlie", vector=axis(200)),
            ]
        )
    )
    events = interest_pb2.RecordEventsRequest()
    event = events.events.add(user="users/zed", item="items/probe-a")
    event.event_time.FromDatetime(START)
    await stubs.interests.RecordEvents(events)
    response = await stubs.recommender.Recommend(
        recommendation_pb2.RecommendRequest(user="users/zed", page_size=1)
    )
    assert [rec.item for rec in response.recommendations] == ["items/probe-b"]
    assert response.recommendations[0].score > 0.99


async def test_no_tree_or_recommendation_cites_a_deleted_item(
    data_only_server: RunningServer,
) -> None:
    stubs = data_only_server.stubs
    await load_sample(data_only_server)
    built = await stubs.interests.BuildInterestTree(
        interest_pb2.BuildInterestTreeRequest(user="users/bob")
    )
    assert "items/dracula" in {e for node in built.tree.nodes for e in node.evidence_items}

    await stubs.catalog.DeleteItems(catalog_pb2.DeleteItemsRequest(names=["items/dracula"]))
    stored = await stubs.interests.GetInterestTree(
        interest_pb2.GetInterestTreeRequest(name="users/bob/interestTree")
    )
    explained = await stubs.interests.ExplainInterests(
        interest_pb2.ExplainInterestsRequest(user="users/bob")
    )
    recommended = await stubs.recommender.Recommend(
        recommendation_pb2.RecommendRequest(user="users/bob", page_size=50, include_seen=True)
    )
    cited = {e for node in stored.tree.nodes for e in node.evidence_items}
    cited |= {rec.item for rec in recommended.recommendations}
    assert "items/dracula" not in cited
    # Reasons name evidence by title; the page and explanations must not cite it either.
    assert "dracula" not in " ".join(rec.reason for rec in recommended.recommendations).lower()
    assert "dracula" not in str(explained).lower()
