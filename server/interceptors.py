"""Server interceptors: request ids in logs, and domain errors turned into rich statuses."""

from __future__ import annotations

import contextvars
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import grpc

from server.errors import status_for
from taxonomy.errors import DomainError

logger = logging.getLogger("interest_tree.rpc")

REQUEST_ID_HEADER = "x-request-id"
request_id_var: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="-")


class RequestIdFilter(logging.Filter):
    """Adds the current request id to every log record."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = request_id_var.get()
        return True


def _request_id(details: grpc.HandlerCallDetails) -> str:
    for key, value in details.invocation_metadata or ():
        if key == REQUEST_ID_HEADER and isinstance(value, str) and value:
            return value[:128]
    return uuid.uuid4().hex


class ServiceInterceptor(grpc.aio.ServerInterceptor):
    """Wraps unary handlers of our services; health and reflection pass through untouched."""

    def __init__(self, package_prefix: str = "/interesttree.") -> None:
        self._prefix = package_prefix

    async def intercept_service(
        self,
        continuation: Callable[
            [grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any] | None]
        ],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        handler = await continuation(handler_call_details)
        method: str = handler_call_details.method
        if handler is None or handler.unary_unary is None or not method.startswith(self._prefix):
            return handler
        inner = handler.unary_unary
        request_id = _request_id(handler_call_details)

        async def wrapper(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            token = request_id_var.set(request_id)
            started = time.perf_counter()
            code = grpc.StatusCode.OK
            try:
                await context.send_initial_metadata(((REQUEST_ID_HEADER, request_id),))
                return await inner(request, context)  # type: ignore[arg-type]
            except DomainError as error:
                status = status_for(error)
                code = status.code
                await context.abort(status.code, status.details, status.trailing_metadata)
            except Exception:
                code = grpc.StatusCode.INTERNAL
                logger.exception("unhandled error in %s", method)
                raise
            finally:
                logger.info(
                    "rpc %s code=%s ms=%.1f",
                    method,
                    code.name,
                    (time.perf_counter() - started) * 1000,
                )
                request_id_var.reset(token)

        return grpc.unary_unary_rpc_method_handler(
            wrapper,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )
