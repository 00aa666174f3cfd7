"""Maps domain errors to gRPC statuses with google.rpc details (AIP-193)."""

from __future__ import annotations

import grpc
from google.protobuf import any_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from taxonomy.errors import DomainError, InvalidArgumentError, NotFoundError

ERROR_DOMAIN = "interesttree.v1"


def _pack(message: object) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(message)  # type: ignore[arg-type]
    return packed


def status_for(error: DomainError) -> grpc.Status:
    """A grpc.Status whose trailing metadata carries a google.rpc.Status with details."""
    details = [
        _pack(error_details_pb2.ErrorInfo(reason=error.reason, domain=ERROR_DOMAIN)),
    ]
    if isinstance(error, InvalidArgumentError):
        code = code_pb2.INVALID_ARGUMENT
        details.append(
            _pack(
                error_details_pb2.BadRequest(
                    field_violations=[
                        error_details_pb2.BadRequest.FieldViolation(
                            field=violation.field, description=violation.description
                        )
                        for violation in error.violations
                    ]
                )
            )
        )
    elif isinstance(error, NotFoundError):
        code = code_pb2.NOT_FOUND
        details.append(
            _pack(
                error_details_pb2.ResourceInfo(
                    resource_type=error.resource_type,
                    resource_name=error.resource_name,
                    description=error.message,
                )
            )
        )
    else:
        code = code_pb2.INTERNAL
    status = status_pb2.Status(code=code, message=error.message, details=details)
    converted: grpc.Status = rpc_status.to_status(status)
    return converted
