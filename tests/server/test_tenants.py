"""Tenants: one engine and one data directory per tenant, nothing visible across them; and
per-tenant quotas (request rate, caps on items, events and users)."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator

import grpc
import pytest
from google.rpc import error_details_pb2
from interesttree.v1 import catalog_pb2, interest_pb2, recommendation_pb2

from server.auth.quotas import TokenBucket
from server.auth.tenants import MAX_SCHEMA_CHARS, tenant_schema

from .helpers import detail, expect_code, reason
from .test_api import START
from .test_auth import Secured, _events, bearer, load_tenant, secured_settings, start_secured


@pytest.fixture(scope="module")
async def tenants(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Secured]:
    running = await start_secured(secured_settings(tmp_path_factory.mktemp("tenants") / "data"))
    try:
        await load_tenant(running.stubs, running.keys["acme:writer"])
        yield running
    finally:
        await running.stop()


def _item(item_id: str, title: str) -> catalog_pb2.Item:
    return catalog_pb2.Item(name=f"items/{item_id}", title=title, categories=["Books", "Rival"])


async def test_the_same_item_id_names_two_items(tenants: Secured) -> None:
    stubs, keys = tenants.stubs, tenants.keys
    rival = bearer(keys["rival:writer"])
    await stubs.catalog.UpsertItems(
        catalog_pb2.UpsertItemsRequest(items=[_item("time-machine", "Rival's own")]), metadata=rival
    )
    theirs = await stubs.catalog.GetItem(
        catalog_pb2.GetItemRequest(name="items/time-machine"), metadata=rival
    )
    ours = await stubs.catalog.GetItem(
        catalog_pb2.GetItemRequest(name="items/time-machine"), metadata=bearer(keys["acme:reader"])
    )
    assert theirs.item.title == "Rival's own"
    assert ours.item.title != theirs.item.title


async def test_each_tenant_has_its_own_data_directory(tenants: Secured) -> None:
    data_dir = tenants.runtime.settings.data_dir
    acme = data_dir / "tenants" / "acme"
    assert (acme / "interest-tree.sqlite3").exists()
    assert (acme / "indexes").is_dir()
    with sqlite3.connect(acme / "interest-tree.sqlite3") as conn:
        assert conn.execute("SELECT COUNT(*) FROM items").fetchone()[0] > 40
    # The default tenant keeps today's layout, and holds nothing of acme's.
    with sqlite3.connect(data_dir / "interest-tree.sqlite3") as conn:
        assert conn.execute("SELECT COUNT(*) FROM items").fetchone()[0] == 0


async def test_no_answer_reveals_another_tenant(tenants: Secured) -> None:
    stubs, keys = tenants.stubs, tenants.keys
    rival = bearer(keys["rival:writer"])
    await stubs.catalog.UpsertItems(
        catalog_pb2.UpsertItemsRequest(items=[_item("rival-only", "Only the rival has it")]),
        metadata=rival,
    )
    # acme's user does not exist for the rival, the same NOT_FOUND as a user nobody has.
    for user in ("users/alice", "users/never-was"):
        error = await expect_code(
            stubs.recommender.Recommend(
                recommendation_pb2.RecommendRequest(user=user), metadata=rival
            ),
            grpc.StatusCode.NOT_FOUND,
        )
        assert reason(error) == "USER_NOT_FOUND"
        info = detail(error, error_details_pb2.ResourceInfo)
        assert info.resource_name == user
    acme = bearer(keys["acme:reader"])
    recommended = await stubs.recommender.Recommend(
        recommendation_pb2.RecommendRequest(user="users/alice", page_size=100), metadata=acme
    )
    names = {r.item for r in recommended.recommendations}
    assert names and "items/rival-only" not in names
    listed = await stubs.catalog.ListItems(
        catalog_pb2.ListItemsRequest(page_size=1000), metadata=acme
    )
    assert "items/rival-only" not in {item.name for item in listed.items}
    nodes = await stubs.interests.ListTaxonomyNodes(
        interest_pb2.ListTaxonomyNodesRequest(), metadata=rival
    )
    assert list(nodes.taxonomy_nodes) == []
    # The rival may record events of its own user with the same id; acme's alice is untouched.
    await stubs.interests.RecordEvents(_events("users/alice", "rival-only"), metadata=rival)
    ours = await stubs.interests.GetInterestTree(
        interest_pb2.GetInterestTreeRequest(name="users/alice/interestTree"), metadata=acme
    )
    evidence = {item for node in ours.tree.nodes for item in node.evidence_items}
    assert "items/rival-only" not in evidence


def test_tenant_schemas_are_distinct_and_fit_postgresql() -> None:
    names = ["a", "acme", "acme-eu", "x" * 63, "x" * 62 + "y", "a-b-c"]
    schemas = [tenant_schema("interesttree", name) for name in names]
    assert len(set(schemas)) == len(names)
    assert all(len(schema) <= MAX_SCHEMA_CHARS for schema in schemas)
    assert schemas[2] == "interesttree__t_acme_eu"


# Quotas --------------------------------------------------------------------------------------


def test_the_token_bucket_refills_at_its_rate() -> None:
    bucket = TokenBucket(rate=1e-6, burst=2)
    assert bucket.take() == 0.0
    assert bucket.take() == 0.0
    wait = bucket.take()
    assert wait > 1000  # a token every 10^6 s


@pytest.fixture(scope="module")
async def quota_server(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Secured]:
    settings = secured_settings(
        tmp_path_factory.mktemp("quotas") / "data",
        rate_limit_per_s=1e-6,
        rate_burst=12,
        max_items=3,
        max_events=4,
        max_users=2,
    )
    running = await start_secured(settings, tenants=("capped", "spammer"))
    yield running
    await running.stop()


async def test_the_request_rate_is_per_tenant_with_retry_info(quota_server: Secured) -> None:
    stubs = quota_server.stubs
    spammer = bearer(quota_server.keys["spammer:reader"])
    request = catalog_pb2.ListItemsRequest()
    for _ in range(12):
        await stubs.catalog.ListItems(request, metadata=spammer)
    error = await expect_code(
        stubs.catalog.ListItems(request, metadata=spammer), grpc.StatusCode.RESOURCE_EXHAUSTED
    )
    assert reason(error) == "RATE_LIMITED"
    retry = detail(error, error_details_pb2.RetryInfo)
    assert retry is not None and retry.retry_delay.seconds > 0
    # Another tenant has a bucket of its own.
    await stubs.catalog.ListItems(request, metadata=bearer(quota_server.keys["capped:reader"]))


async def test_caps_on_items_events_and_users(quota_server: Secured) -> None:
    stubs = quota_server.stubs
    writer = bearer(quota_server.keys["capped:writer"])
    items = [_item(f"i{n}", f"Item {n}") for n in range(4)]
    error = await expect_code(
        stubs.catalog.UpsertItems(catalog_pb2.UpsertItemsRequest(items=items), metadata=writer),
        grpc.StatusCode.RESOURCE_EXHAUSTED,
    )
    assert reason(error) == "QUOTA_EXCEEDED"
    failure = detail(error, error_details_pb2.QuotaFailure)
    assert failure.violations[0].subject == "items"
    await stubs.catalog.UpsertItems(
        catalog_pb2.UpsertItemsRequest(items=items[:3]), metadata=writer
    )
    # Replacing items the tenant holds is no new item.
    await stubs.catalog.UpsertItems(
        catalog_pb2.UpsertItemsRequest(items=items[:2]), metadata=writer
    )

    def events(*pairs: tuple[str, str]) -> interest_pb2.RecordEventsRequest:
        request = interest_pb2.RecordEventsRequest()
        for user, item in pairs:
            event = request.events.add(
                user=f"users/{user}", item=f"items/{item}", type=interest_pb2.EVENT_TYPE_LIKE
            )
            event.event_time.FromDatetime(START)
        return request

    await stubs.interests.RecordEvents(events(("u1", "i0"), ("u2", "i1")), metadata=writer)
    error = await expect_code(
        stubs.interests.RecordEvents(events(("u3", "i0")), metadata=writer),
        grpc.StatusCode.RESOURCE_EXHAUSTED,
    )
    assert detail(error, error_details_pb2.QuotaFailure).violations[0].subject == "users"
    await stubs.interests.RecordEvents(events(("u1", "i2"), ("u2", "i2")), metadata=writer)
    error = await expect_code(
        stubs.interests.RecordEvents(events(("u1", "i1")), metadata=writer),
        grpc.StatusCode.RESOURCE_EXHAUSTED,
    )
    assert detail(error, error_details_pb2.QuotaFailure).violations[0].subject == "events"
