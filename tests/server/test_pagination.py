"""One page-token scheme for ListItems, ListInterestTreeRevisions and ListTaxonomyNodes: tokens
round-trip, and any token the service did not issue is INVALID_ARGUMENT on `page_token`."""

from __future__ import annotations

import base64
import json
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
import pytest
from interesttree.v1 import catalog_pb2, interest_pb2

from server import pagination
from taxonomy.errors import InvalidArgumentError

from ..conftest import RunningServer
from .helpers import expect_invalid, reason
from .test_api import load_sample

# Paging (item ids compared bytewise, revisions, taxonomy) on both store backends.
pytestmark = pytest.mark.usefixtures("store_backend")


def b64(payload: bytes | dict[str, Any]) -> str:
    raw = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    return base64.urlsafe_b64encode(raw).decode()


HOSTILE_TOKENS = {
    "old scheme, overflows SQLite": b64({"after": "99999999999999999999999"}),
    "int key over 64 bits": b64({"rpc": "revisions", "after": 99999999999999999999999}),
    "superscript digit": "²",
    "5,000 digits": "9" * 5000,
    "5,000 digits, base64": b64(b"9" * 5000),
    "100k-deep JSON": b64(b"[" * 100_000),
    "not base64": "garbage!",
    "not JSON": b64(b"\xff\xfe"),
    "extra key": b64({"rpc": "taxonomy", "after": 1, "more": 1}),
    "float key": b64(b'{"rpc": "taxonomy", "after": 1e5}'),
    "negative key": b64({"rpc": "taxonomy", "after": -1}),
    "boolean key": b64({"rpc": "revisions", "after": True}),
    "another RPC's token": pagination.ITEMS.encode("dracula"),
}

ListCall = Callable[[RunningServer, str], Awaitable[Any]]


async def list_items(running: RunningServer, token: str) -> Any:
    return await running.stubs.catalog.ListItems(catalog_pb2.ListItemsRequest(page_token=token))


async def list_revisions(running: RunningServer, token: str) -> Any:
    return await running.stubs.interests.ListInterestTreeRevisions(
        interest_pb2.ListInterestTreeRevisionsRequest(
            name="users/alice/interestTree", page_token=token
        )
    )


async def list_taxonomy(running: RunningServer, token: str) -> Any:
    return await running.stubs.interests.ListTaxonomyNodes(
        interest_pb2.ListTaxonomyNodesRequest(page_token=token)
    )


@pytest.fixture
async def with_trees(data_only_server: RunningServer) -> RunningServer:
    await load_sample(data_only_server)
    build = interest_pb2.BuildInterestTreeRequest(user="users/alice")
    for _ in range(3):
        await data_only_server.stubs.interests.BuildInterestTree(build)
    return data_only_server


async def test_hostile_tokens_are_invalid_argument_on_every_list(
    with_trees: RunningServer,
) -> None:
    calls: list[ListCall] = [list_items, list_revisions, list_taxonomy]
    for call in calls:
        for name, token in HOSTILE_TOKENS.items():
            if call is list_items and name == "another RPC's token":
                token = pagination.TAXONOMY.encode(3)
            error = await expect_invalid(call(with_trees, token), "page_token")
            assert reason(error) == "INVALID_PAGE_TOKEN", (call.__name__, name)


async def test_every_list_pages_through_with_its_tokens(with_trees: RunningServer) -> None:
    interests = with_trees.stubs.interests
    revisions: list[int] = []
    token = ""
    while True:
        page = await interests.ListInterestTreeRevisions(
            interest_pb2.ListInterestTreeRevisionsRequest(
                name="users/alice/interestTree", page_size=2, page_token=token
            )
        )
        revisions.extend(revision.tree.revision for revision in page.revisions)
        token = page.next_page_token
        if not token:
            break
    assert revisions == [3, 2, 1]

    everything = await interests.ListTaxonomyNodes(interest_pb2.ListTaxonomyNodesRequest())
    names: list[str] = []
    token = ""
    while True:
        nodes = await interests.ListTaxonomyNodes(
            interest_pb2.ListTaxonomyNodesRequest(page_size=2, page_token=token)
        )
        assert len(nodes.taxonomy_nodes) <= 2
        names.extend(node.name for node in nodes.taxonomy_nodes)
        token = nodes.next_page_token
        if not token:
            break
    assert names == [node.name for node in everything.taxonomy_nodes] and len(names) > 2


async def test_negative_page_size_is_refused(with_trees: RunningServer) -> None:
    error = await expect_invalid(
        with_trees.stubs.catalog.ListItems(catalog_pb2.ListItemsRequest(page_size=-1)),
        "page_size",
    )
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_tokens_round_trip_and_stay_small() -> None:
    assert pagination.ITEMS.decode(pagination.ITEMS.encode("a" * 128)) == "a" * 128
    assert pagination.REVISIONS.decode(pagination.REVISIONS.encode(7)) == 7
    assert pagination.TAXONOMY.decode(pagination.TAXONOMY.encode(0)) == 0
    assert pagination.TAXONOMY.decode("") is None
    assert len(pagination.ITEMS.encode("a" * 128)) < pagination.MAX_TOKEN_CHARS
    # The largest key an integer token holds still fits SQLite's INTEGER.
    biggest = pagination.TAXONOMY.encode(pagination.MAX_POSITION)
    assert pagination.TAXONOMY.decode(biggest) == pagination.MAX_POSITION < 2**63
    with pytest.raises(InvalidArgumentError):
        pagination.TAXONOMY.decode(b64({"rpc": "taxonomy", "after": pagination.MAX_POSITION + 1}))
    with pytest.raises(InvalidArgumentError):
        pagination.ITEMS.decode(b64({"rpc": "items", "after": "x" * 129}))
