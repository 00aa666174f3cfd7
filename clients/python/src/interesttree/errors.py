"""Exceptions raised by the interest-tree clients, decoded from `google.rpc.Status` details.

The server sends every error as a status code plus a `google.rpc.Status` in the
`grpc-status-details-bin` trailer (AIP-193): an `ErrorInfo` with a machine-readable reason, a
`BadRequest` with one field violation per invalid field, and a `ResourceInfo` for missing
resources. These classes carry those details so that callers can branch on `reason` and show
`field_violations` without parsing messages.
"""

from __future__ import annotations

from dataclasses import dataclass

import grpc

# googleapis-common-protos ships .pyi files but no py.typed marker, so mypy will not read them.
from google.rpc import (  # type: ignore[import-untyped, unused-ignore]
    error_details_pb2,
    status_pb2,
)

STATUS_DETAILS_KEY = "grpc-status-details-bin"

__all__ = [
    "DeadlineExceededError",
    "FieldViolation",
    "InterestTreeError",
    "InvalidArgumentError",
    "NotFoundError",
    "ResourceExhaustedError",
    "UnavailableError",
    "error_from_rpc",
    "status_code",
]


@dataclass(frozen=True)
class FieldViolation:
    """One invalid field of a request, such as `items[1].title`."""

    field: str
    description: str


class InterestTreeError(Exception):
    """A failed call. Subclasses name the status codes callers usually handle.

    `attempts` is how many attempts the call made as far as the client can tell. gRPC does not
    report the retries it makes itself: a retryable code that the server sent without response
    headers (so gRPC was free to retry) means its policy ran out, and counts `max_attempts`;
    otherwise it counts the client's own attempts, at least 1."""

    def __init__(
        self,
        code: grpc.StatusCode,
        message: str,
        *,
        reason: str = "",
        domain: str = "",
        metadata: dict[str, str] | None = None,
        field_violations: tuple[FieldViolation, ...] = (),
        resource_type: str = "",
        resource_name: str = "",
        request_id: str = "",
        attempts: int = 1,
    ) -> None:
        super().__init__(f"{code.name}: {message}" + (f" [{reason}]" if reason else ""))
        self.code = code
        self.message = message
        self.reason = reason
        self.domain = domain
        self.metadata = metadata or {}
        self.field_violations = field_violations
        self.resource_type = resource_type
        self.resource_name = resource_name
        self.request_id = request_id
        self.attempts = attempts


class InvalidArgumentError(InterestTreeError):
    """The request is invalid; `field_violations` names every offending field."""


class NotFoundError(InterestTreeError):
    """A named resource does not exist; `resource_name` says which."""


class UnavailableError(InterestTreeError):
    """The service (or its language model) cannot answer now; retried for idempotent calls."""


class ResourceExhaustedError(InterestTreeError):
    """The service is overloaded; retried for idempotent calls."""


class DeadlineExceededError(InterestTreeError):
    """The call's deadline passed before an answer (all retries included)."""


_BY_CODE: dict[grpc.StatusCode, type[InterestTreeError]] = {
    grpc.StatusCode.INVALID_ARGUMENT: InvalidArgumentError,
    grpc.StatusCode.NOT_FOUND: NotFoundError,
    grpc.StatusCode.UNAVAILABLE: UnavailableError,
    grpc.StatusCode.RESOURCE_EXHAUSTED: ResourceExhaustedError,
    grpc.StatusCode.DEADLINE_EXCEEDED: DeadlineExceededError,
}


def status_code(error: grpc.RpcError) -> grpc.StatusCode:
    """The status code of a failed call. Blocking calls raise errors that are `grpc.Call`s,
    asyncio ones raise `AioRpcError`, which is not; both have `code()`."""
    code = getattr(error, "code", None)
    value = code() if callable(code) else None
    return value if isinstance(value, grpc.StatusCode) else grpc.StatusCode.UNKNOWN


def _details(error: grpc.RpcError) -> str:
    details = getattr(error, "details", None)
    value = details() if callable(details) else None
    return value if isinstance(value, str) and value else str(error)


def _status_of(error: grpc.RpcError) -> status_pb2.Status | None:
    """The `google.rpc.Status` in the error's trailer, if it agrees with the call's own code
    and message (what grpcio-status' `rpc_status.from_call` checks, for sync and asyncio
    errors alike)."""
    trailing_metadata = getattr(error, "trailing_metadata", None)
    metadata = trailing_metadata() if callable(trailing_metadata) else None
    for key, value in metadata or ():
        if key != STATUS_DETAILS_KEY or not isinstance(value, bytes):
            continue
        status = status_pb2.Status.FromString(value)
        details = getattr(error, "details", None)
        message = details() if callable(details) else None
        if status.code != status_code(error).value[0] or status.message != (message or ""):
            # The trailer disagrees with the call's code or message: better no details than wrong.
            return None
        return status
    return None


def error_from_rpc(
    error: grpc.RpcError, *, request_id: str = "", attempts: int = 1
) -> InterestTreeError:
    """Turns a gRPC error (sync or asyncio) into the matching `InterestTreeError`."""
    code = status_code(error)
    message = _details(error)
    reason = domain = resource_type = resource_name = ""
    metadata: dict[str, str] = {}
    violations: list[FieldViolation] = []
    status = _status_of(error)
    for detail in status.details if status is not None else ():
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            reason, domain, metadata = info.reason, info.domain, dict(info.metadata)
        elif detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            violations.extend(FieldViolation(v.field, v.description) for v in bad.field_violations)
        elif detail.Is(error_details_pb2.ResourceInfo.DESCRIPTOR):
            resource = error_details_pb2.ResourceInfo()
            detail.Unpack(resource)
            resource_type, resource_name = resource.resource_type, resource.resource_name
    cls = _BY_CODE.get(code, InterestTreeError)
    return cls(
        code,
        message,
        reason=reason,
        domain=domain,
        metadata=metadata,
        field_violations=tuple(violations),
        resource_type=resource_type,
        resource_name=resource_name,
        request_id=request_id,
        attempts=attempts,
    )
