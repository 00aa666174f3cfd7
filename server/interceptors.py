"""Server interceptor: request ids in logs, and every failure turned into a rich status.

Unary and server-streaming handlers share one implementation, `_CallScope`: it sets the
request id, sends it back, measures the call, and maps what the handler raised to a status:
- a DomainError to its code with google.rpc details (server/errors.py);
- anything else to INTERNAL with a generic message naming the request id, the traceback going
  to the log under that id (never UNKNOWN, never an exception's class or text);
- a request body that is not the method's message to INVALID_ARGUMENT (grpc.aio would answer
  UNKNOWN): the request deserializer is wrapped to hand the handler a marker instead.

With a `Gate` (server/auth/gate.py) the scope also admits the call before the handler runs: the
key (UNAUTHENTICATED), the method's role (PERMISSION_DENIED), the tenant's rate and caps
(RESOURCE_EXHAUSTED), and sets the tenant and its engine for the handler (server/auth/context.py).
Health always passes through; reflection does too unless the gate closes it.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from types import TracebackType
from typing import Any, cast

import grpc
from google.protobuf.message import DecodeError

from server.auth.context import DEFAULT_TENANT, Principal, engine_var, tenant_var
from server.auth.gate import Gate, metadata_token
from server.errors import coded_status, internal_status, status_for
from taxonomy.engine import InterestEngine
from taxonomy.errors import DomainError, InvalidArgumentError

logger = logging.getLogger("interest_tree.rpc")

REQUEST_ID_HEADER = "x-request-id"
request_id_var: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="-")

RpcDone = Callable[[str, grpc.StatusCode, float, str], None]
"""Told (method, code, seconds, tenant) after every call."""
REFLECTION_PREFIX = "/grpc.reflection."
UNAUTHENTICATED_TENANT = "-"
"""The tenant label of calls refused for want of a valid key."""
Context = grpc.aio.ServicerContext[Any, Any]


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


class _Undecodable:
    """What the wrapped deserializer returns for bytes that are not the method's message."""


_UNDECODABLE = _Undecodable()


def _tolerant(
    deserializer: Callable[[bytes], Any] | None,
) -> Callable[[bytes], Any] | None:
    if deserializer is None:
        return None

    def deserialize(data: bytes) -> Any:
        try:
            return deserializer(data)
        except DecodeError:
            return _UNDECODABLE

    return deserialize


def _aborted_code(context: Context) -> grpc.StatusCode:
    code = context.code()
    if isinstance(code, grpc.StatusCode):
        return code
    # grpc.aio reports the raw integer of the status code here.
    return next((c for c in grpc.StatusCode if c.value[0] == code), grpc.StatusCode.UNKNOWN)


class _CallScope:
    """One RPC, as `async with _CallScope(...)` around the handler's work."""

    def __init__(
        self,
        method: str,
        request_id: str,
        context: Context,
        on_done: RpcDone | None,
        *,
        streaming: bool,
        gate: Gate | None = None,
        caller: Principal | DomainError | None = None,
    ) -> None:
        self._streaming = streaming
        self._gate = gate
        self._caller = caller
        self._tenant = DEFAULT_TENANT
        self._engine: InterestEngine | None = None
        self._tenant_token: contextvars.Token[str] | None = None
        self._engine_token: contextvars.Token[InterestEngine | None] | None = None
        self._method = method
        self._request_id = request_id
        self._context = context
        self._on_done = on_done
        self._code = grpc.StatusCode.OK
        self._started = 0.0
        self._token: contextvars.Token[str] | None = None

    async def __aenter__(self) -> _CallScope:
        self._token = request_id_var.set(self._request_id)
        self._started = time.perf_counter()
        echo = ((REQUEST_ID_HEADER, self._request_id),)
        try:
            if self._streaming:
                await self._context.send_initial_metadata(echo)
            else:
                # Trailers, not headers: a client's gRPC retries a failed call only if no
                # response headers arrived, and that is what makes UNAVAILABLE retriable.
                self._context.set_trailing_metadata(echo)
        except BaseException:
            self._code = grpc.StatusCode.CANCELLED  # the call is gone before it began
            self._finish()
            raise
        return self

    async def admit(self) -> None:
        """Authenticates and authorizes the call and sets its tenant's engine (with a gate)."""
        if self._gate is None:
            return
        if isinstance(self._caller, DomainError):
            self._tenant = UNAUTHENTICATED_TENANT
            raise self._caller
        if self._caller is None:
            return
        self._tenant = self._caller.tenant
        self._engine = await self._gate.admit(self._method, self._caller)
        self._tenant_token = tenant_var.set(self._tenant)
        self._engine_token = engine_var.set(self._engine)

    async def check_request(self, request: Any) -> None:
        if self._gate is not None and self._engine is not None:
            await self._gate.check_request(self._method, request, self._engine)

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> bool:
        try:
            if error is not None:
                await self._fail(error)
        finally:
            self._finish()
        return False

    async def _fail(self, error: BaseException) -> None:
        """Aborts with the status `error` maps to; returns to let `error` itself propagate."""
        if isinstance(error, grpc.aio.AbortError):
            # The handler aborted with its own status; it is already on the context.
            self._code = _aborted_code(self._context)
            return
        if isinstance(error, asyncio.CancelledError | GeneratorExit):
            self._code = grpc.StatusCode.CANCELLED
            return
        if not isinstance(error, Exception):
            self._code = grpc.StatusCode.INTERNAL
            return
        preset = _aborted_code(self._context) if self._context.code() is not None else None
        if isinstance(error, DomainError):
            status = status_for(error, self._request_id)
        elif preset is not None and preset not in (grpc.StatusCode.OK, grpc.StatusCode.UNKNOWN):
            # The handler set its status, then raised (generated stubs do so for UNIMPLEMENTED).
            text = self._context.details() or preset.name.lower()
            if isinstance(text, bytes):
                text = text.decode(errors="replace")
            status = coded_status(preset, text, self._request_id)
        else:
            logger.error(
                "unhandled error in %s (request id %s)",
                self._method,
                self._request_id,
                exc_info=error,
            )
            status = internal_status(self._request_id)
        self._code = status.code
        trailers = (*status.trailing_metadata, (REQUEST_ID_HEADER, self._request_id))
        await self._context.abort(status.code, status.details, trailers)

    def _finish(self) -> None:
        seconds = time.perf_counter() - self._started
        logger.info(
            "rpc %s code=%s ms=%.1f",
            self._method,
            self._code.name,
            seconds * 1000,
            # Separate fields for JSON logs (`--log-format json`); text logs show the message.
            extra={
                "rpc_method": self._method,
                "grpc_code": self._code.name,
                "duration_ms": seconds * 1000,
            },
        )
        if self._on_done is not None:
            self._on_done(self._method, self._code, seconds, self._tenant)
        if self._engine_token is not None:
            engine_var.reset(self._engine_token)
            self._engine_token = None
        if self._tenant_token is not None:
            tenant_var.reset(self._tenant_token)
            self._tenant_token = None
        if self._token is not None:
            request_id_var.reset(self._token)


def _decoded(request: Any) -> Any:
    if isinstance(request, _Undecodable):
        raise InvalidArgumentError(
            "the request body is not a valid message of this method",
            reason="MALFORMED_REQUEST",
        )
    return request


class ServiceInterceptor(grpc.aio.ServerInterceptor):
    """Wraps unary and server-streaming handlers of our services; health and reflection pass
    through untouched."""

    def __init__(
        self,
        package_prefix: str = "/interesttree.",
        on_rpc_done: RpcDone | None = None,
        gate: Gate | None = None,
    ) -> None:
        self._prefix = package_prefix
        # Told (method, code, seconds, tenant) after every call, e.g. to feed latency histograms.
        self._on_rpc_done = on_rpc_done
        self._gate = gate

    def _caller(self, details: grpc.HandlerCallDetails) -> Principal | DomainError:
        assert self._gate is not None
        try:
            return self._gate.authenticate(metadata_token(details.invocation_metadata))
        except DomainError as error:
            return error

    async def intercept_service(
        self,
        continuation: Callable[
            [grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any] | None]
        ],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        handler = await continuation(handler_call_details)
        method: str = handler_call_details.method
        if handler is None:
            return handler
        if method.startswith(REFLECTION_PREFIX):
            return self._reflection(handler, handler_call_details)
        if not method.startswith(self._prefix):
            return handler
        request_id = _request_id(handler_call_details)
        caller = self._caller(handler_call_details) if self._gate is not None else None

        def scope(context: Context, *, streaming: bool) -> _CallScope:
            return _CallScope(
                method,
                request_id,
                context,
                self._on_rpc_done,
                streaming=streaming,
                gate=self._gate,
                caller=caller,
            )

        deserializer = _tolerant(handler.request_deserializer)
        if handler.unary_stream is not None:
            # The typeshed stubs describe sync handlers; on a grpc.aio server this is an async
            # generator function.
            stream = cast(Callable[[Any, Context], AsyncIterator[Any]], handler.unary_stream)

            async def stream_wrapper(request: Any, context: Context) -> AsyncIterator[Any]:
                async with scope(context, streaming=True) as call:
                    await call.admit()
                    decoded = _decoded(request)
                    await call.check_request(decoded)
                    async for response in stream(decoded, context):
                        yield response

            return grpc.unary_stream_rpc_method_handler(
                stream_wrapper,
                request_deserializer=deserializer,
                response_serializer=handler.response_serializer,
            )
        if handler.unary_unary is None:
            return handler
        unary = cast(Callable[[Any, Context], Awaitable[Any]], handler.unary_unary)

        async def unary_wrapper(request: Any, context: Context) -> Any:
            async with scope(context, streaming=False) as call:
                await call.admit()
                decoded = _decoded(request)
                await call.check_request(decoded)
                return await unary(decoded, context)

        return grpc.unary_unary_rpc_method_handler(
            unary_wrapper,
            request_deserializer=deserializer,
            response_serializer=handler.response_serializer,
        )

    def _reflection(
        self, handler: grpc.RpcMethodHandler[Any, Any], details: grpc.HandlerCallDetails
    ) -> grpc.RpcMethodHandler[Any, Any]:
        """Reflection as it is, or, when the gate closes it, refused without a valid key."""
        if self._gate is None or not self._gate.close_reflection:
            return handler
        caller = self._caller(details)
        if not isinstance(caller, DomainError):
            return handler
        status = status_for(caller, _request_id(details))

        async def refuse(requests: AsyncIterator[Any], context: Context) -> AsyncIterator[Any]:
            await context.abort(status.code, status.details, status.trailing_metadata)
            yield  # pragma: no cover - abort raises; this makes the function a generator

        return grpc.stream_stream_rpc_method_handler(
            refuse,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )
