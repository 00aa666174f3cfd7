"""Domain errors. The server maps them to gRPC status codes with google.rpc details."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class FieldViolation:
    field: str
    description: str


class DomainError(Exception):
    """Base class; `reason` is a stable UPPER_SNAKE_CASE identifier for ErrorInfo."""

    reason: str = "INTERNAL"

    def __init__(self, message: str, *, reason: str | None = None) -> None:
        super().__init__(message)
        if reason is not None:
            self.reason = reason
        self.message = message


class InvalidArgumentError(DomainError):
    reason = "INVALID_ARGUMENT"

    def __init__(
        self,
        message: str,
        violations: list[FieldViolation] | None = None,
        *,
        reason: str | None = None,
    ) -> None:
        super().__init__(message, reason=reason)
        self.violations = violations or []


class NotFoundError(DomainError):
    reason = "NOT_FOUND"

    def __init__(self, message: str, *, resource_type: str, resource_name: str) -> None:
        super().__init__(message, reason=f"{resource_type.upper()}_NOT_FOUND")
        self.resource_type = resource_type
        self.resource_name = resource_name


class AbortedError(DomainError):
    """A write that lost a race with a concurrent one (another replica stored the same
    revision first): ABORTED, nothing of it stored; the caller may retry or read the winner."""

    reason = "ABORTED"


class UnavailableError(DomainError):
    """A dependency of the call failed in a way that a later call may not (a training process
    that died): UNAVAILABLE, and whatever served before keeps serving."""

    reason = "UNAVAILABLE"


class InternalError(DomainError):
    """A failure that is no fault of the request (a bug, a broken dependency); the server
    renders it as INTERNAL. Used where one unit of a batch fails and the batch goes on."""

    reason = "INTERNAL"


class ModelOutputError(Exception):
    """The chat model answered, but not with something usable (a malformed reply, output that
    fails its schema); worth another attempt. Not a DomainError: callers fall back to data."""


@dataclass
class ViolationCollector:
    """Collects every problem of a request so the caller sees them all at once (AIP-193)."""

    violations: list[FieldViolation] = field(default_factory=list)

    def add(self, field_path: str, description: str) -> None:
        self.violations.append(FieldViolation(field_path, description))

    def raise_if_any(self, message: str, *, reason: str = "INVALID_ARGUMENT") -> None:
        if self.violations:
            raise InvalidArgumentError(message, list(self.violations), reason=reason)
