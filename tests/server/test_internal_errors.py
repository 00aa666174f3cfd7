"""Failures that are no fault of the request: INTERNAL with a request id, never UNKNOWN and
never the exception's class or text; and request bodies that are not the method's message."""

from __future__ import annotations

import logging
from typing import Any

import grpc
import pytest
from google.rpc import error_details_pb2
from interesttree.v1 import catalog_pb2, interest_pb2

from server.interceptors import ServiceInterceptor

from ..conftest import RunningServer
from .helpers import detail, expect_code, reason
from .test_api import load_sample

SECRET = "db password is hunter2"


def explode(*args: object, **kwargs: object) -> None:
    raise RuntimeError(SECRET)


async def test_an_unexpected_exception_is_internal_with_the_request_id(
    data_only_server: RunningServer,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    stubs = data_only_server.stubs
    await load_sample(data_only_server)
    engine = data_only_server.runtime.engine
    monkeypatch.setattr(engine.catalog, "get_item", explode)
    caplog.set_level(logging.ERROR, logger="interest_tree.rpc")
    error = await expect_code(
        stubs.catalog.GetItem(
            catalog_pb2.GetItemRequest(name="items/dracula"),
            metadata=(("x-request-id", "req-1234"),),
        ),
        grpc.StatusCode.INTERNAL,
    )
    message = error.details() or ""
    assert "req-1234" in message
    assert "RuntimeError" not in message and SECRET not in message
    assert reason(error) == "INTERNAL"
    info = detail(error, error_details_pb2.RequestInfo)
    assert info is not None and info.request_id == "req-1234"
    logged = [record for record in caplog.records if "req-1234" in record.getMessage()]
    assert logged and logged[0].exc_info is not None
    assert SECRET in str(logged[0].exc_info[1])

    # A streaming RPC the same way.
    monkeypatch.setattr(engine.events, "user_ids", explode)
    call = stubs.interests.BatchBuildInterestTrees(
        interest_pb2.BatchBuildInterestTreesRequest(all_users=True),
        metadata=(("x-request-id", "req-5678"),),
    )
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        _ = [response async for response in call]
    assert raised.value.code() == grpc.StatusCode.INTERNAL
    assert "req-5678" in (raised.value.details() or "")
    assert "RuntimeError" not in (raised.value.details() or "")


async def test_an_undecodable_request_body_is_invalid_argument(
    data_only_server: RunningServer,
) -> None:
    channel = data_only_server.stubs.channel
    garbage = b"\xff\xff\xff\xff"
    unary: grpc.aio.UnaryUnaryMultiCallable[bytes, bytes] = channel.unary_unary(
        "/interesttree.v1.CatalogService/GetItem",
        request_serializer=None,
        response_deserializer=None,
    )
    error = await expect_code(unary(garbage), grpc.StatusCode.INVALID_ARGUMENT)
    assert reason(error) == "MALFORMED_REQUEST"
    # A string field holding bytes that are not UTF-8.
    error = await expect_code(unary(b"\x0a\x02\xff\xfe"), grpc.StatusCode.INVALID_ARGUMENT)

    stream: grpc.aio.UnaryStreamMultiCallable[bytes, bytes] = channel.unary_stream(
        "/interesttree.v1.InterestService/BatchBuildInterestTrees",
        request_serializer=None,
        response_deserializer=None,
    )
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        _ = [response async for response in stream(garbage)]
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT

    # A valid body through the same generic call still works.
    ok = await unary(catalog_pb2.GetItemRequest(name="items/nope").SerializeToString()).code()
    assert ok == grpc.StatusCode.NOT_FOUND


async def test_validation_messages_do_not_speak_python(data_only_server: RunningServer) -> None:
    error = await expect_code(
        data_only_server.stubs.catalog.UpsertItems(
            catalog_pb2.UpsertItemsRequest(
                items=[catalog_pb2.Item(name="items/a", title="A", categories=["  "])]
            )
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    bad = detail(error, error_details_pb2.BadRequest)
    assert [v.field for v in bad.field_violations] == ["items[0].categories"]
    assert not any("error" in v.description.lower() for v in bad.field_violations)


async def test_a_status_the_handler_set_before_raising_is_kept() -> None:
    """As the generated servicer base classes do for a method nobody implemented."""

    async def unimplemented(request: bytes, context: grpc.aio.ServicerContext[Any, Any]) -> bytes:
        context.set_code(grpc.StatusCode.UNIMPLEMENTED)
        context.set_details("Method not implemented!")
        raise NotImplementedError("Method not implemented!")

    handler = grpc.method_handlers_generic_handler(
        "interesttree.test.Probe", {"Call": grpc.unary_unary_rpc_method_handler(unimplemented)}
    )
    server = grpc.aio.server(interceptors=[ServiceInterceptor()])
    server.add_generic_rpc_handlers((handler,))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            call: grpc.aio.UnaryUnaryMultiCallable[bytes, bytes] = channel.unary_unary(
                "/interesttree.test.Probe/Call"
            )
            error = await expect_code(call(b""), grpc.StatusCode.UNIMPLEMENTED)
    finally:
        await server.stop(None)
    assert error.details() == "Method not implemented!"
    assert reason(error) == "UNIMPLEMENTED"
