"""Maps errors to gRPC statuses with google.rpc details (AIP-193), every one of them bounded.

gRPC clients refuse response metadata over 16 KiB by default, and the details travel in the
`grpc-status-details-bin` trailer (base64 on the wire). So however many violations a request
has and however long the values it echoes, a status reports at most `MAX_VIOLATIONS` of them
(then one saying how many more), cuts every text, and packs to at most `MAX_DETAILS_BYTES`.
"""

from __future__ import annotations

import grpc
from google.protobuf import any_pb2, duration_pb2, message
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from taxonomy.errors import (
    AbortedError,
    DomainError,
    FieldViolation,
    InvalidArgumentError,
    NotFoundError,
    UnavailableError,
)

ERROR_DOMAIN = "interesttree.v1"
MAX_VIOLATIONS = 20
MAX_FIELD_CHARS = 100
MAX_DESCRIPTION_CHARS = 160
MAX_MESSAGE_CHARS = 200
MAX_DETAILS_BYTES = 4096


class UnauthenticatedError(DomainError):
    """No key, or a key that is malformed, unknown or revoked: UNAUTHENTICATED."""

    reason = "UNAUTHENTICATED"


class PermissionDeniedError(DomainError):
    """A valid key whose role is too weak for the call: PERMISSION_DENIED."""

    reason = "PERMISSION_DENIED"


class RateLimitedError(DomainError):
    """Over the tenant's request rate: RESOURCE_EXHAUSTED with a RetryInfo."""

    reason = "RATE_LIMITED"

    def __init__(self, message: str, *, retry_after_s: float) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class QuotaExceededError(DomainError):
    """A write that would take the tenant over a cap: RESOURCE_EXHAUSTED with a QuotaFailure."""

    reason = "QUOTA_EXCEEDED"

    def __init__(self, message: str, *, subject: str) -> None:
        super().__init__(message)
        self.subject = subject


def clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _pack(detail: message.Message) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(detail)
    return packed


def _bad_request(violations: list[FieldViolation], shown: int) -> error_details_pb2.BadRequest:
    reported = [
        error_details_pb2.BadRequest.FieldViolation(
            field=clip(violation.field, MAX_FIELD_CHARS),
            description=clip(violation.description, MAX_DESCRIPTION_CHARS),
        )
        for violation in violations[:shown]
    ]
    if len(violations) > shown:
        reported.append(
            error_details_pb2.BadRequest.FieldViolation(
                field=clip(violations[shown].field, MAX_FIELD_CHARS),
                description=f"and {len(violations) - shown} more violation(s) not listed",
            )
        )
    return error_details_pb2.BadRequest(field_violations=reported)


def _status(
    code: int,
    text: str,
    details: list[message.Message],
    violations: list[FieldViolation] | None = None,
) -> grpc.Status:
    """Packs the google.rpc.Status (with a BadRequest unless `violations` is None), listing
    fewer violations until it fits the budget."""
    shown = min(len(violations or ()), MAX_VIOLATIONS)
    while True:
        packed = [_pack(detail) for detail in details]
        if violations is not None:
            packed.append(_pack(_bad_request(violations, shown)))
        status = status_pb2.Status(code=code, message=clip(text, MAX_MESSAGE_CHARS), details=packed)
        if status.ByteSize() <= MAX_DETAILS_BYTES or shown == 0:
            converted: grpc.Status = rpc_status.to_status(status)
            return converted
        shown //= 2


def status_for(error: DomainError, request_id: str = "") -> grpc.Status:
    """A grpc.Status whose trailing metadata carries a google.rpc.Status with details."""
    details: list[message.Message] = [
        error_details_pb2.ErrorInfo(reason=error.reason, domain=ERROR_DOMAIN)
    ]
    violations: list[FieldViolation] | None = None
    if isinstance(error, InvalidArgumentError):
        code = code_pb2.INVALID_ARGUMENT
        violations = error.violations
    elif isinstance(error, NotFoundError):
        code = code_pb2.NOT_FOUND
        details.append(
            error_details_pb2.ResourceInfo(
                resource_type=clip(error.resource_type, MAX_FIELD_CHARS),
                resource_name=clip(error.resource_name, MAX_MESSAGE_CHARS),
                description=clip(error.message, MAX_MESSAGE_CHARS),
            )
        )
    elif isinstance(error, AbortedError):
        code = code_pb2.ABORTED
    elif isinstance(error, UnavailableError):
        code = code_pb2.UNAVAILABLE
    elif isinstance(error, UnauthenticatedError):
        code = code_pb2.UNAUTHENTICATED
    elif isinstance(error, PermissionDeniedError):
        code = code_pb2.PERMISSION_DENIED
    elif isinstance(error, RateLimitedError):
        code = code_pb2.RESOURCE_EXHAUSTED
        delay = duration_pb2.Duration()
        delay.FromMilliseconds(max(1, round(error.retry_after_s * 1000)))
        details.append(error_details_pb2.RetryInfo(retry_delay=delay))
    elif isinstance(error, QuotaExceededError):
        code = code_pb2.RESOURCE_EXHAUSTED
        details.append(
            error_details_pb2.QuotaFailure(
                violations=[
                    error_details_pb2.QuotaFailure.Violation(
                        subject=error.subject, description=clip(error.message, MAX_MESSAGE_CHARS)
                    )
                ]
            )
        )
    else:
        code = code_pb2.INTERNAL
    if request_id:
        details.append(error_details_pb2.RequestInfo(request_id=request_id))
    return _status(code, error.message, details, violations)


def coded_status(code: grpc.StatusCode, text: str, request_id: str) -> grpc.Status:
    """A status a handler set on its context itself (e.g. UNIMPLEMENTED), with details."""
    return _status(
        code.value[0],
        text,
        [
            error_details_pb2.ErrorInfo(reason=code.name, domain=ERROR_DOMAIN),
            error_details_pb2.RequestInfo(request_id=request_id),
        ],
    )


def internal_status(request_id: str) -> grpc.Status:
    """INTERNAL for a failure that is no fault of the request: a generic message naming the
    request id (the log has the traceback under it), never the exception itself."""
    return coded_status(
        grpc.StatusCode.INTERNAL,
        f"internal error; the server logged it under request id {request_id}",
        request_id,
    )
