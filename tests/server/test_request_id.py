"""The request id comes back in trailers on unary calls, so a failed call carries no response
headers: that is what lets a client's gRPC retries resend an UNAVAILABLE call."""

from __future__ import annotations

import grpc
import pytest
from interesttree.v1 import catalog_pb2

from ..conftest import RunningServer
from .test_api import load_sample


async def test_unary_calls_echo_the_request_id_in_trailers_only(
    data_only_server: RunningServer,
) -> None:
    stubs = data_only_server.stubs
    await load_sample(data_only_server)
    call = stubs.catalog.GetItem(
        catalog_pb2.GetItemRequest(name="items/dracula"), metadata=(("x-request-id", "ok-1"),)
    )
    await call
    assert ("x-request-id", "ok-1") in tuple(await call.trailing_metadata())

    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stubs.catalog.GetItem(
            catalog_pb2.GetItemRequest(name="items/no-such-item"),
            metadata=(("x-request-id", "bad-1"),),
        )
    error = raised.value
    assert error.code() is grpc.StatusCode.NOT_FOUND
    assert not tuple(error.initial_metadata() or ())
    assert ("x-request-id", "bad-1") in tuple(error.trailing_metadata() or ())
