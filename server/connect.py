"""JSON over HTTP: the four interesttree.v1 services over the Connect protocol on the HTTP port
(server/http.py), for callers without a gRPC stack, served by the `connectrpc` package.

`make proto` generates `interesttree/v1/*_connect.py` with protoc-gen-connectrpc (buf.gen.yaml,
`protobuf=google`, async code only): one ASGI application per service, which speaks the Connect
protocol (JSON or binary protobuf, unary and streaming) and its error format, with the HTTP
status the Connect spec gives each code. A request body over the largest request the batch
caps allow (server/convert.py) is refused with resource_exhausted before it is all read.
aiohttp-asgi mounts each application under its service's path on the aiohttp server of the
HTTP port.

The applications' services are thin adapters (`_Service`) that call the methods of the same
servicers as the gRPC port (server/servicers.py), so a call runs exactly as over gRPC: the same
gate (server/auth/gate.py: the Bearer key, the method's role and the tenant's rate, checked by
`_GateInterceptor` before the body is read; then the tenant's engine and its caps), the same
error mapping (server/errors.py: a Connect error carries the details of the gRPC status, each
with `type` and `value`, the message's bytes in unpadded base64), and the same RPC metrics. The
server-streaming BatchBuildInterestTrees streams over Connect's enveloped streaming
(`Content-Type: application/connect+json`).

JSON requests are parsed strictly, as before: an unknown field is a MALFORMED_REQUEST error
with a `body` field violation rather than silently dropped, and an empty body is the empty
message.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Literal, cast

import grpc
from aiohttp import web
from aiohttp_asgi import ASGIResource
from aiohttp_asgi.resource import (
    ASGIApplicationType,
    ASGIReceiveType,
    ASGIScopeType,
    ASGISendType,
)
from connectrpc.code import Code
from connectrpc.codec import Codec
from connectrpc.compat import google_protobuf_binary_codec
from connectrpc.errors import ConnectError, ErrorDetail
from connectrpc.request import RequestContext
from google.protobuf import json_format, message
from google.rpc import status_pb2
from interesttree.v1 import (
    admin_connect,
    catalog_connect,
    interest_connect,
    recommendation_connect,
)
from protobuf.wkt import Any as PyAny

from server import servicers
from server.auth.context import DEFAULT_TENANT, engine_var, tenant_var
from server.auth.gate import Gate, bearer_token
from server.convert import largest_request_bytes
from server.errors import coded_status, internal_status, status_for
from server.interceptors import UNAUTHENTICATED_TENANT, request_id_var
from taxonomy.engine import InterestEngine
from taxonomy.errors import DomainError, FieldViolation, InvalidArgumentError

logger = logging.getLogger("interest_tree.connect")

DETAILS_KEY = "grpc-status-details-bin"

RpcDone = Callable[[str, grpc.StatusCode, float, str], None]
Unary = Callable[[Any, Any], Awaitable[message.Message]]
Streaming = Callable[[Any, Any], AsyncIterator[message.Message]]

_APPLICATIONS: tuple[tuple[Any, type[Any]], ...] = (
    (catalog_connect.CatalogServiceASGIApplication, servicers.CatalogServicer),
    (interest_connect.InterestServiceASGIApplication, servicers.InterestServicer),
    (
        recommendation_connect.RecommendationServiceASGIApplication,
        servicers.RecommendationServicer,
    ),
    (admin_connect.AdminServiceASGIApplication, servicers.AdminServicer),
)


def grpc_code(code: Code) -> grpc.StatusCode:
    """The gRPC code of a Connect code: invalid_argument -> INVALID_ARGUMENT."""
    return grpc.StatusCode.CANCELLED if code is Code.CANCELED else grpc.StatusCode[code.name]


def connect_error(status: grpc.Status) -> ConnectError:
    """The Connect error of a gRPC status built by server/errors.py, with the same details."""
    code = Code.CANCELED if status.code is grpc.StatusCode.CANCELLED else Code[status.code.name]
    details: list[ErrorDetail] = []
    for key, value in status.trailing_metadata:
        if key == DETAILS_KEY and isinstance(value, bytes):
            for packed in status_pb2.Status.FromString(value).details:
                details.append(ErrorDetail(PyAny(type_url=packed.type_url, value=packed.value)))
    return ConnectError(code, status.details, details)


def _code_of(error: Exception | None) -> grpc.StatusCode:
    if error is None:
        return grpc.StatusCode.OK
    if isinstance(error, ConnectError):
        return grpc_code(error.code)
    return grpc.StatusCode.UNKNOWN


class _Context:
    """What a servicer may touch of its gRPC context, for a call that came over Connect."""

    def __init__(self) -> None:
        self._code: grpc.StatusCode | None = None
        self._details = ""

    def set_code(self, code: grpc.StatusCode) -> None:
        self._code = code

    def set_details(self, details: str) -> None:
        self._details = details

    def code(self) -> grpc.StatusCode | None:
        return self._code

    def details(self) -> str:
        return self._details

    def set_trailing_metadata(self, metadata: Any) -> None:
        pass

    def invocation_metadata(self) -> tuple[()]:
        return ()

    async def abort(self, code: grpc.StatusCode, details: str = "", trailers: Any = None) -> None:
        raise connect_error(coded_status(code, details, request_id_var.get()))


class _StrictJsonCodec:
    """Protobuf JSON (google.protobuf.json_format) that rejects unknown fields with the same
    INVALID_ARGUMENT details as every other bad request, and writes compact JSON."""

    def name(self) -> str:
        return "json"

    def encode(self, msg: message.Message) -> bytes:
        return json_format.MessageToJson(msg, indent=None).encode()

    def decode(self, data: bytes | bytearray, message_class: type[message.Message]) -> Any:
        parsed = message_class()
        try:
            json_format.Parse(bytes(data) or b"{}", parsed)
        except (json_format.ParseError, ValueError) as error:
            name = message_class.DESCRIPTOR.name
            first = str(error).splitlines()[0] if str(error) else name
            invalid = InvalidArgumentError(
                f"the request body is not a valid JSON {name}",
                [FieldViolation("body", first)],
                reason="MALFORMED_REQUEST",
            )
            raise connect_error(status_for(invalid, request_id_var.get())) from None
        return parsed


@dataclass
class _Call:
    path: str
    started: float
    tenant: str = DEFAULT_TENANT
    tokens: list[tuple[Any, Any]] = field(default_factory=list)


class _GateInterceptor:
    """A connectrpc metadata interceptor, first in the chain so that it runs before the body is
    read: the gate's key, role and rate for the method's path, the tenant and its engine in the
    context for the call, and the RPC's duration and code in the metrics at its end."""

    def __init__(self, gate: Gate | None, on_done: RpcDone | None) -> None:
        self._gate = gate
        self._on_done = on_done

    async def on_start(self, ctx: RequestContext[Any, Any]) -> _Call:
        method = ctx.method
        call = _Call(f"/{method.service_name}/{method.name}", time.perf_counter())
        if self._gate is None:
            return call
        try:
            try:
                principal = self._gate.authenticate(
                    bearer_token(ctx.request_headers.get("authorization"))
                )
            except DomainError:
                call.tenant = UNAUTHENTICATED_TENANT
                raise
            call.tenant = principal.tenant
            engine = await self._gate.admit(call.path, principal)
        except DomainError as error:
            status = status_for(error, request_id_var.get())
            if status.code is grpc.StatusCode.UNAUTHENTICATED:
                ctx.response_headers["www-authenticate"] = "Bearer"
            self._done(call, status.code)
            raise connect_error(status) from None
        call.tokens.append((tenant_var, tenant_var.set(call.tenant)))
        call.tokens.append((engine_var, engine_var.set(engine)))
        return call

    async def on_end(
        self, call: _Call, ctx: RequestContext[Any, Any], error: Exception | None
    ) -> None:
        for var, token in reversed(call.tokens):
            var.reset(token)
        self._done(call, _code_of(error))

    def _done(self, call: _Call, code: grpc.StatusCode) -> None:
        if self._on_done is not None:
            self._on_done(call.path, code, time.perf_counter() - call.started, call.tenant)


def _snake(name: str) -> str:
    """The generated service's method name of an RPC: ListItems -> list_items."""
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


class _Service:
    """One service's connectrpc protocol (the generated `*Service` Protocol: a method per RPC,
    `async def list_items(request, ctx)`), each calling the servicer's method of the RPC."""

    def __init__(self, service_name: str, servicer: Any, gate: Gate | None, engine: Any) -> None:
        self._service_name = service_name
        self._servicer = servicer
        self._gate = gate
        self._engine = engine
        self._methods: dict[str, str] = {
            _snake(name): name
            for name in dir(type(servicer))
            if name[:1].isupper() and callable(getattr(servicer, name))
        }

    def __getattr__(self, snake: str) -> Callable[..., Any]:
        rpc = self.__dict__.get("_methods", {}).get(snake)
        if rpc is None:
            raise AttributeError(snake)
        path = f"/{self._service_name}/{rpc}"
        method = getattr(self._servicer, rpc)
        if rpc == "BatchBuildInterestTrees":
            return self._streaming(path, cast(Streaming, method))
        return self._unary(path, cast(Unary, method))

    async def _check(self, path: str, request: message.Message) -> None:
        if self._gate is not None:
            await self._gate.check_request(path, request, engine_var.get() or self._engine)

    def _unary(self, path: str, method: Unary) -> Callable[..., Awaitable[message.Message]]:
        async def call(request: message.Message, ctx: RequestContext[Any, Any]) -> Any:
            with _errors(path):
                await self._check(path, request)
                return await method(request, _Context())

        return call

    def _streaming(self, path: str, method: Streaming) -> Callable[..., AsyncIterator[Any]]:
        async def call(request: message.Message, ctx: RequestContext[Any, Any]) -> Any:
            with _errors(path):
                await self._check(path, request)
                async for response in method(request, _Context()):
                    yield response

        return call


class _errors:  # noqa: N801 (used as a context manager, like contextlib's)
    """Domain errors and failures as Connect errors with the details of the gRPC status."""

    def __init__(self, path: str) -> None:
        self._path = path

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: Any, error: BaseException | None, traceback: Any) -> Literal[False]:
        if error is None or isinstance(error, ConnectError) or not isinstance(error, Exception):
            return False
        request_id = request_id_var.get()
        if isinstance(error, DomainError):
            raise connect_error(status_for(error, request_id)) from None
        logger.exception(
            "unhandled error in %s (request id %s)", self._path, request_id, exc_info=error
        )
        raise connect_error(internal_status(request_id)) from None


def _after_the_body_wait(application: Any) -> ASGIApplicationType:
    """The ASGI app, with a `receive` that, once the body is read, waits (as the ASGI spec has
    it, for the disconnect) instead of answering another empty body at once as aiohttp-asgi
    0.7 does: connectrpc keeps calling `receive` then to see a disconnect, and those immediate
    answers would spin the event loop. Cancelled with the call, as connectrpc's watch is."""

    async def app(scope: ASGIScopeType, receive: ASGIReceiveType, send: ASGISendType) -> None:
        body_done = False

        async def receive_once() -> Any:
            nonlocal body_done
            if body_done:
                await asyncio.Event().wait()
            event = await receive()
            if event.get("type") == "http.request" and not event.get("more_body", False):
                body_done = True
            return event

        await application(scope, receive_once, send)

    return app


class ConnectRoutes:
    """The Connect routes of one HTTP app: each service's generated ASGI application under
    `/{service}/`, its service the adapter of the one servicer of the service."""

    def __init__(
        self, engine: InterestEngine, gate: Gate | None, on_rpc_done: RpcDone | None
    ) -> None:
        self._engine = engine
        self._gate = gate
        self._on_done = on_rpc_done
        self._max_bytes = largest_request_bytes(engine.embedder.dim)

    def add_to(self, app: web.Application) -> None:
        codecs: list[Codec[Any, Any]] = [google_protobuf_binary_codec(), _StrictJsonCodec()]
        for application_class, servicer_class in _APPLICATIONS:
            service_name = application_class.__name__.removesuffix("ASGIApplication")
            full_name = f"interesttree.v1.{service_name}"
            service = _Service(full_name, servicer_class(self._engine), self._gate, self._engine)
            application = application_class(
                service,
                interceptors=[_GateInterceptor(self._gate, self._on_done)],
                read_max_bytes=self._max_bytes,
                codecs=codecs,
            )
            mounted = _after_the_body_wait(application)
            app.router.register_resource(ASGIResource(mounted, root_path=f"/{full_name}/"))
