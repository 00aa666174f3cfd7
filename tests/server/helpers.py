"""What the server tests share: reading an error's details and size, calls that expect one."""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Any

import grpc
import pytest
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status


def google_status(error: grpc.aio.AioRpcError) -> status_pb2.Status:
    status = rpc_status.from_call(error)
    assert status is not None, "no google.rpc.Status in the trailers"
    return status


def detail(error: grpc.aio.AioRpcError, kind: type[Any]) -> Any:
    """The first detail of type `kind` (a google.rpc.error_details_pb2 message), or None."""
    for packed in google_status(error).details:
        if packed.Is(kind.DESCRIPTOR):
            found = kind()
            packed.Unpack(found)
            return found
    return None


def violations(error: grpc.aio.AioRpcError) -> list[tuple[str, str]]:
    bad = detail(error, error_details_pb2.BadRequest)
    assert bad is not None, "no BadRequest"
    return [(v.field, v.description) for v in bad.field_violations]


def reason(error: grpc.aio.AioRpcError) -> str:
    info = detail(error, error_details_pb2.ErrorInfo)
    assert info is not None, "no ErrorInfo"
    return str(info.reason)


def trailer_bytes(error: grpc.aio.AioRpcError) -> int:
    """Bytes of the status message and every trailing metadata key and value, as decoded."""
    size = len((error.details() or "").encode())
    for key, value in error.trailing_metadata() or ():
        size += len(key) + len(value if isinstance(value, bytes) else str(value).encode())
    return size


async def expect_code(call: Awaitable[Any], code: grpc.StatusCode) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await call
    assert raised.value.code() == code, (raised.value.code(), raised.value.details())
    return raised.value


async def expect_invalid(call: Awaitable[Any], field: str) -> grpc.aio.AioRpcError:
    """INVALID_ARGUMENT with a BadRequest naming `field`."""
    error = await expect_code(call, grpc.StatusCode.INVALID_ARGUMENT)
    fields = [name for name, _ in violations(error)]
    assert field in fields, fields
    return error
