"""Server interceptors: request ids in logs, and domain errors turned into rich statuses."""

from __future__ import annotations

import asyncio
import contextvars
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, cast

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

    def __init__(
        self,
        package_prefix: str = "/interesttree.",
        on_rpc_done: Callable[[str, grpc.StatusCode, float], None] | None = None,
    ) -> None:
        self._prefix = package_prefix
        # Told (method, code, seconds) after every call, e.g. to feed latency histograms.
        self._on_rpc_done = on_rpc_done

    async def intercept_service(
        self,
        continuation: Callable[
            [grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any] | None]
        ],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        handler = await continuation(handler_call_details)
        method: str = handler_call_details.method
        if handler is None or not method.startswith(self._prefix):
            return handler
        request_id = _request_id(handler_call_details)
        if handler.unary_stream is not None:
            return self._wrap_unary_stream(handler, method, request_id)
        if handler.unary_unary is None:
            return handler
        inner = handler.unary_unary

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
            except grpc.aio.AbortError:
                # The handler aborted with its own status; it is already on the context.
                code = _aborted_code(context)
                raise
            except asyncio.CancelledError:
                code = grpc.StatusCode.CANCELLED
                raise
            except Exception:
                code = grpc.StatusCode.INTERNAL
                logger.exception("unhandled error in %s", method)
                raise
            finally:
                self._done(method, code, started)
                request_id_var.reset(token)

        return grpc.unary_unary_rpc_method_handler(
            wrapper,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )

    def _wrap_unary_stream(
        self, handler: grpc.RpcMethodHandler[Any, Any], method: str, request_id: str
    ) -> grpc.RpcMethodHandler[Any, Any]:
        # The typeshed stubs describe sync handlers; on a grpc.aio server this is an async
        # generator function.
        inner = cast(
            Callable[[Any, grpc.aio.ServicerContext[Any, Any]], AsyncIterator[Any]],
            handler.unary_stream,
        )

        async def wrapper(
            request: Any, context: grpc.aio.ServicerContext[Any, Any]
        ) -> AsyncIterator[Any]:
            token = request_id_var.set(request_id)
            started = time.perf_counter()
            code = grpc.StatusCode.OK
            try:
                await context.send_initial_metadata(((REQUEST_ID_HEADER, request_id),))
                async for response in inner(request, context):
                    yield response
            except DomainError as error:
                status = status_for(error)
                code = status.code
                await context.abort(status.code, status.details, status.trailing_metadata)
            except grpc.aio.AbortError:
                code = _aborted_code(context)
                raise
            except (asyncio.CancelledError, GeneratorExit):
                code = grpc.StatusCode.CANCELLED
                raise
            except Exception:
                code = grpc.StatusCode.INTERNAL
                logger.exception("unhandled error in %s", method)
                raise
            finally:
                self._done(method, code, started)
                request_id_var.reset(token)

        return grpc.unary_stream_rpc_method_handler(
            wrapper,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )

    def _done(self, method: str, code: grpc.StatusCode, started: float) -> None:
        seconds = time.perf_counter() - started
        logger.info(
            "rpc %s code=%s ms=%.1f",
            method,
            code.name,
            seconds * 1000,
            # Separate fields for JSON logs (`--log-format json`); text logs show the message.
            extra={"rpc_method": method, "grpc_code": code.name, "duration_ms": seconds * 1000},
        )
        if self._on_rpc_done is not None:
            self._on_rpc_done(method, code, seconds)


def _aborted_code(context: grpc.aio.ServicerContext[Any, Any]) -> grpc.StatusCode:
    code = context.code()
    if isinstance(code, grpc.StatusCode):
        return code
    # grpc.aio reports the raw integer of the status code here.
    return next((c for c in grpc.StatusCode if c.value[0] == code), grpc.StatusCode.UNKNOWN)
