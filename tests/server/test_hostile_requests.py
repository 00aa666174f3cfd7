"""Hostile request values at the proto boundary: timestamps, names with a trailing newline,
overflowing level weights, error trailers that would outgrow gRPC's metadata limit, and
requests over the receive limit."""

from __future__ import annotations

import grpc
from google.protobuf.timestamp_pb2 import Timestamp
from interesttree.v1 import catalog_pb2, catalog_pb2_grpc, interest_pb2, recommendation_pb2

from server.app import receive_limit
from server.convert import ECHO_CHARS, largest_request_bytes
from server.errors import MAX_VIOLATIONS
from taxonomy.models import EVENT_TIME_MAX, EVENT_TIME_MIN

from ..conftest import RunningServer
from .helpers import expect_code, expect_invalid, trailer_bytes, violations
from .test_api import START, load_sample

MIB = 1024 * 1024


def one_event(stamp: Timestamp, user: str = "users/alice") -> interest_pb2.RecordEventsRequest:
    request = interest_pb2.RecordEventsRequest()
    event = request.events.add(user=user, item="items/dracula", type=interest_pb2.EVENT_TYPE_VIEW)
    event.event_time.CopyFrom(stamp)
    return request


async def test_event_times_outside_the_range_are_invalid_argument(
    data_only_server: RunningServer,
) -> None:
    stubs = data_only_server.stubs
    await load_sample(data_only_server)
    for seconds, nanos in [
        (253402300800, 0),  # 10000-01-01
        (-62135596801, 0),  # the last second of year 0
        (2**62, 0),
        (-(2**63), 0),
        (0, -1),
        (0, 1_000_000_000),
    ]:
        request = one_event(Timestamp(seconds=seconds, nanos=nanos))
        error = await expect_invalid(stubs.interests.RecordEvents(request), "events[0].event_time")
        assert "Error" not in (error.details() or ""), error.details()

    # The extremes the domain allows are recorded and read back.
    for when in (EVENT_TIME_MIN, EVENT_TIME_MAX):
        stamp = Timestamp()
        stamp.FromDatetime(when)
        await stubs.interests.RecordEvents(one_event(stamp, "users/edge"))
    built = await stubs.interests.BuildInterestTree(
        interest_pb2.BuildInterestTreeRequest(user="users/edge")
    )
    assert built.tree.event_count == 2


async def test_names_with_a_trailing_newline_are_invalid_argument(
    data_only_server: RunningServer,
) -> None:
    stubs = data_only_server.stubs
    await load_sample(data_only_server)
    await expect_invalid(
        stubs.catalog.GetItem(catalog_pb2.GetItemRequest(name="items/dracula\n")), "name"
    )
    await expect_invalid(
        stubs.catalog.DeleteItems(catalog_pb2.DeleteItemsRequest(names=["items/dracula\n"])),
        "names[0]",
    )
    stamp = Timestamp()
    stamp.FromDatetime(START)
    await expect_invalid(
        stubs.interests.RecordEvents(one_event(stamp, "users/alice\n")), "events[0].user"
    )
    await expect_invalid(
        stubs.recommender.Recommend(recommendation_pb2.RecommendRequest(user="users/alice\n")),
        "user",
    )
    await expect_invalid(
        stubs.interests.GetInterestTree(
            interest_pb2.GetInterestTreeRequest(name="users/alice/interestTree\n")
        ),
        "name",
    )
    await expect_invalid(
        stubs.catalog.UpsertItems(
            catalog_pb2.UpsertItemsRequest(items=[catalog_pb2.Item(name="items/a\n", title="A")])
        ),
        "items[0].name",
    )


async def test_level_weights_that_overflow_are_invalid_argument(
    data_only_server: RunningServer,
) -> None:
    stubs = data_only_server.stubs
    await load_sample(data_only_server)
    for weights, field in [
        ([1e308], "level_weights[0]"),
        ([1e308, 1e308], "level_weights[0]"),
        ([0.5, 2e6], "level_weights[1]"),
        ([0.0, 0.0], "level_weights"),
    ]:
        await expect_invalid(
            stubs.recommender.Recommend(
                recommendation_pb2.RecommendRequest(user="users/alice", level_weights=weights)
            ),
            field,
        )
    ok = await stubs.recommender.Recommend(
        recommendation_pb2.RecommendRequest(user="users/alice", level_weights=[1e6, 1.0])
    )
    assert ok.recommendations


async def test_error_trailers_stay_small_however_bad_the_batch(
    data_only_server: RunningServer,
) -> None:
    stubs = data_only_server.stubs
    stamp = Timestamp()
    stamp.FromDatetime(START)
    events = interest_pb2.RecordEventsRequest()
    for position in range(10_000):
        event = events.events.add(user=f"not a user {position}", item="nor an item")
        event.event_time.CopyFrom(stamp)
    error = await expect_code(
        stubs.interests.RecordEvents(events), grpc.StatusCode.INVALID_ARGUMENT
    )
    assert trailer_bytes(error) < 8 * 1024
    listed = violations(error)
    assert len(listed) == MAX_VIOLATIONS + 1
    assert listed[0][0] == "events[0].user"
    assert "more" in listed[-1][1] and "19980" in listed[-1][1]

    # Each duplicate echoes its 10,000-character name: cut, as every echoed value is.
    name = "items/" + "x" * 10_000
    items = catalog_pb2.UpsertItemsRequest(
        items=[catalog_pb2.Item(name=name, title="Twice") for _ in range(1000)]
    )
    error = await expect_code(stubs.catalog.UpsertItems(items), grpc.StatusCode.INVALID_ARGUMENT)
    assert trailer_bytes(error) < 8 * 1024
    assert all(len(description) < 4 * ECHO_CHARS for _, description in violations(error))


async def test_the_receive_limit_fits_the_largest_legal_batch_and_no_more(
    data_only_server: RunningServer,
) -> None:
    limit = receive_limit(384)
    assert largest_request_bytes(384) <= limit <= 24 * MIB

    # The largest UpsertItems the caps allow (caller vectors, so nothing is embedded).
    term = "t" * 128
    vector = [0.0] * 384
    vector[0] = 1.0
    biggest = catalog_pb2.UpsertItemsRequest(
        items=[
            catalog_pb2.Item(
                name=f"items/{position:0128d}",
                title="T" * 512,
                description="d" * 8192,
                categories=[term] * 8,
                tags=[f"{term[:-4]}{tag:04d}" for tag in range(64)],
                vector=vector,
            )
            for position in range(1000)
        ]
    )
    assert biggest.ByteSize() <= limit
    # The response echoes the items, more than a client takes by default (4 MiB).
    address = f"127.0.0.1:{data_only_server.port}"
    options = [("grpc.max_receive_message_length", 64 * MIB)]
    async with grpc.aio.insecure_channel(address, options=options) as channel:
        response = await catalog_pb2_grpc.CatalogServiceStub(channel).UpsertItems(
            biggest, timeout=120
        )
    assert len(response.items) == 1000

    too_big = catalog_pb2.UpsertItemsRequest(
        items=[catalog_pb2.Item(name="items/big", title="Big", description="d" * (limit + 1))]
    )
    await expect_code(
        data_only_server.stubs.catalog.UpsertItems(too_big), grpc.StatusCode.RESOURCE_EXHAUSTED
    )
