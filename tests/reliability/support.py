"""The rule every call of the reliability tests obeys, and a generic way to call any RPC.

A call ends OK or with one of ALLOWED_CODES, and a failed call carries a google.rpc.Status
with ErrorInfo (RESOURCE_EXHAUSTED also with RetryInfo). Never INTERNAL, UNKNOWN or, with the
generous deadline every call gets, DEADLINE_EXCEEDED.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import grpc
from google.protobuf import message_factory
from google.protobuf.message import Message
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from interesttree.v1 import (
    admin_pb2,
    catalog_pb2,
    interest_pb2,
    recommendation_pb2,
)

CALL_TIMEOUT_S = 30.0
START = datetime(2024, 1, 1, tzinfo=UTC)
SAMPLE_USERS = ("users/alice", "users/bob", "users/carol")
Code = grpc.StatusCode
SUMMARY: list[str] = []
"""Lines for the end of the pytest run: counts the README quotes, values the server took."""
# Codes a hostile request may get. RESOURCE_EXHAUSTED also needs RetryInfo.
ALLOWED_CODES = frozenset(
    {
        Code.OK,
        Code.INVALID_ARGUMENT,
        Code.NOT_FOUND,
        Code.FAILED_PRECONDITION,
        Code.ALREADY_EXISTS,
        Code.RESOURCE_EXHAUSTED,
        Code.OUT_OF_RANGE,
    }
)


@dataclass(frozen=True)
class Outcome:
    """What one call got: its code, the server's message, and every broken rule."""

    code: grpc.StatusCode
    details: str
    problems: tuple[str, ...] = ()
    response: Any = None
    violations: tuple[str, ...] = ()
    """`field: description` of each BadRequest field violation."""

    def describe(self) -> str:
        broken = f" [{'; '.join(self.problems)}]" if self.problems else ""
        return f"{self.code.name}: {self.details[:300]!r}{broken}"


def rpc_methods() -> list[tuple[str, type[Message], type[Message], bool]]:
    """(path, request type, response type, server streaming) of every RPC of our services."""
    found = []
    for module in (catalog_pb2, interest_pb2, recommendation_pb2, admin_pb2):
        for service in module.DESCRIPTOR.services_by_name.values():
            for method in service.methods:
                request = message_factory.GetMessageClass(method.input_type)
                response = message_factory.GetMessageClass(method.output_type)
                path = f"/{service.full_name}/{method.name}"
                found.append((path, request, response, method.server_streaming))
    return found


def _failed(error: grpc.RpcError) -> Outcome:
    """The rules a failed call breaks: a code outside ALLOWED_CODES, or missing details."""
    if not isinstance(error, grpc.Call):
        raise TypeError(f"{error!r} carries no status")
    code, details = error.code(), error.details() or ""
    if code not in ALLOWED_CODES:
        return Outcome(code, details, (f"code {code.name} is never allowed",))
    try:
        status = rpc_status.from_call(error)
    except ValueError as bad:
        return Outcome(code, details, (f"grpc-status-details-bin disagrees: {bad}",))
    if status is None:
        return Outcome(code, details, ("no google.rpc.Status in the trailers",))
    kinds = {detail.TypeName() for detail in status.details}
    problems = []
    if error_details_pb2.ErrorInfo.DESCRIPTOR.full_name not in kinds:
        problems.append("google.rpc.Status has no ErrorInfo")
    if code is Code.RESOURCE_EXHAUSTED and (
        error_details_pb2.RetryInfo.DESCRIPTOR.full_name not in kinds
    ):
        problems.append("RESOURCE_EXHAUSTED without RetryInfo")
    violations = []
    for detail in status.details:
        if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad_request = error_details_pb2.BadRequest()
            detail.Unpack(bad_request)
            violations += [f"{v.field}: {v.description}" for v in bad_request.field_violations]
    return Outcome(code, details, tuple(problems), None, tuple(violations))


def non_finite(message: Message, path: str = "") -> list[str]:
    """Paths of nan or infinite float fields anywhere in a response."""
    found: list[str] = []
    for field, value in message.ListFields():
        where = f"{path}{field.name}"
        values = value if field.is_repeated else [value]
        for position, element in enumerate(values):
            if isinstance(element, Message):
                found += non_finite(element, f"{where}[{position}].")
            elif isinstance(element, float) and not math.isfinite(element):
                found.append(f"{where}[{position}]={element}")
    return found


def _succeeded(response: Any) -> Outcome:
    responses = response if isinstance(response, list) else [response]
    problems: list[str] = []
    for message in responses:
        if not isinstance(message, Message):
            continue
        problems += [f"non-finite {where}" for where in non_finite(message)[:3]]
        error = getattr(message, "error", "")
        if error and getattr(grpc.StatusCode, error.split(" ", 1)[0], None) not in ALLOWED_CODES:
            problems.append(f"streamed error {error[:200]!r}")
    return Outcome(Code.OK, "", tuple(problems), response)


def invoke(
    channel: grpc.Channel,
    method: str,
    request: Message | bytes,
    response_type: type[Message] | None,
    *,
    streaming: bool = False,
    timeout: float = CALL_TIMEOUT_S,
) -> Outcome:
    """Calls `method` ("/pkg.Service/Method"); raw bytes go to the server undecoded."""
    serializer = None if isinstance(request, bytes) else type(request).SerializeToString
    deserializer = response_type.FromString if response_type is not None else None
    try:
        if streaming:
            stream: grpc.UnaryStreamMultiCallable[Any, Any] = channel.unary_stream(
                method, request_serializer=serializer, response_deserializer=deserializer
            )
            return _succeeded(list(stream(request, timeout=timeout)))
        unary: grpc.UnaryUnaryMultiCallable[Any, Any] = channel.unary_unary(
            method, request_serializer=serializer, response_deserializer=deserializer
        )
        return _succeeded(unary(request, timeout=timeout))
    except grpc.RpcError as error:
        return _failed(error)
