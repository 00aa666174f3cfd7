"""Thin clients over the generated stubs: `InterestTreeClient` (blocking) and
`AsyncInterestTreeClient` (asyncio), with the same methods.

What they add to the stubs:
- every call gets the default deadline its RPC documents unless `timeout=` says otherwise; a
  retried call keeps one deadline for all its attempts;
- idempotent calls are retried by gRPC itself, from the service config the client gives its
  channel (`channel_options()`), with exponential backoff and full jitter, only on UNAVAILABLE
  and RESOURCE_EXHAUSTED. `RecordEvents` is made idempotent by an idempotency key the client
  fills in when the caller gives none; `DeleteItems` only with `allow_missing`;
  `BuildInterestTree` and `BatchBuildInterestTrees` (each call stores new revisions) never;
- `iter_*` helpers walk paginated lists;
- errors come out as `InterestTreeError` subclasses carrying the decoded `google.rpc` details;
- every call sends an `x-request-id` (the same one for all its attempts) that the server puts
  in its logs; the exception carries it too.
- `api_key=` sends `authorization: Bearer <key>` with every call; `tls=True`,
  `root_certificates=` (PEM bytes), and `private_key=` with `certificate_chain=` (mutual TLS)
  open a TLS channel instead of an insecure one.

How this file says each thing once:
- `RPCS` is the table of the API: each RPC's default deadline (from its comment in
  proto/interesttree/v1) and whether it is idempotent. The service config is made from it.
- `_Client` defines every public method once. A method's body only builds its request; the
  decorator above it (`@unary`, `@stream`, or `paged(...)`) turns it into the method both
  clients have: the blocking client returns the result, the asyncio client an awaitable of it
  (or an async iterator). mypy sees each method with its real types in both clients.
- The two clients differ only in how they send a request: `_send_unary`, `_send_stream` and
  `_send_pages`.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import random
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import (
    Any,
    Concatenate,
    Generic,
    ParamSpec,
    Protocol,
    Self,
    TypeAlias,
    TypedDict,
    TypeVar,
    overload,
)

import grpc
import grpc.aio  # older types-grpcio stubs expose grpc.aio only once imported
from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp

from interesttree.errors import InterestTreeError, error_from_rpc, status_code
from interesttree.v1 import admin_pb2, catalog_pb2, interest_pb2, recommendation_pb2

__all__ = [
    "DEFAULT_DEADLINES_S",
    "REQUEST_ID_HEADER",
    "RPCS",
    "AsyncInterestTreeClient",
    "InterestTreeClient",
    "RetryPolicy",
    "Rpc",
    "channel_options",
    "event",
    "item_name",
    "service_config",
    "tree_name",
    "user_name",
]

REQUEST_ID_HEADER = "x-request-id"
PACKAGE = "interesttree.v1"

# The server never answers RESOURCE_EXHAUSTED itself, but proxies and load balancers shed load
# with it. gRPC also reports it when an answer passes the client's size limits (a message, or
# error trailers over the metadata limit), which no retry cures: such a call costs its
# attempts and still fails.
RETRYABLE_CODES = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.RESOURCE_EXHAUSTED})
# gRPC clamps a retry policy's maxAttempts to 5 (gRFC A6).
MAX_ATTEMPTS = 5
# gRPC retries only a request it still holds whole, 256 KiB by default; the server takes
# requests up to 64 MiB.
RETRY_BUFFER_BYTES = 64 * 1024 * 1024

P = ParamSpec("P")
T = TypeVar("T")
R = TypeVar("R")
Req = TypeVar("Req")
Resp = TypeVar("Resp")
MessageReq = TypeVar("MessageReq", bound=Message)
MessageResp = TypeVar("MessageResp", bound=Message)
C = TypeVar("C", grpc.Channel, grpc.aio.Channel)
SyncOut = TypeVar("SyncOut")
AsyncOut = TypeVar("AsyncOut")


def user_name(user_id: str) -> str:
    """`users/{user_id}`, the resource name the API takes for a user."""
    return f"users/{user_id}"


def item_name(item_id: str) -> str:
    """`items/{item_id}`."""
    return f"items/{item_id}"


def tree_name(user: str) -> str:
    """`users/{user_id}/interestTree` from a user's resource name."""
    return f"{user}/interestTree"


def event(
    user: str,
    item: str,
    event_type: interest_pb2.EventType.ValueType,
    event_time: datetime | Timestamp,
    *,
    weight: float | None = None,
) -> interest_pb2.Event:
    """An `Event`, with `event_time` a `datetime` (a naive one is taken as UTC) or a
    `Timestamp`. The generated `Event(event_time=...)` takes a `datetime` too at run time, but
    its types say `Timestamp` only."""
    if isinstance(event_time, datetime):
        timestamp = Timestamp()
        timestamp.FromDatetime(event_time)
        event_time = timestamp
    message = interest_pb2.Event(user=user, item=item, type=event_type, event_time=event_time)
    if weight is not None:
        message.weight = weight
    return message


# Retries ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RetryPolicy:
    """How idempotent calls are retried: at most `max_attempts` attempts, only on UNAVAILABLE
    and RESOURCE_EXHAUSTED, the pause before attempt n+1 drawn from [0, min(max_backoff_s,
    initial_backoff_s * multiplier ** (n - 1))) (full jitter, so that many clients do not retry
    in lockstep). That is the backoff of gRPC's own retries, which apply it from the service
    config (`service_config()`)."""

    max_attempts: int = 4
    initial_backoff_s: float = 0.1
    max_backoff_s: float = 2.0
    multiplier: float = 2.0

    def __post_init__(self) -> None:
        if not 1 <= self.max_attempts <= MAX_ATTEMPTS:
            raise ValueError(f"max_attempts must be 1 to {MAX_ATTEMPTS} (gRPC's limit)")
        if min(self.initial_backoff_s, self.max_backoff_s, self.multiplier) <= 0:
            raise ValueError("the backoffs and the multiplier must be positive")

    def grpc_retry_policy(self) -> dict[str, Any] | None:
        """This policy as a service config `retryPolicy`; None for a single attempt."""
        if self.max_attempts == 1:
            return None
        return {
            "maxAttempts": self.max_attempts,
            "initialBackoff": _duration(self.initial_backoff_s),
            "maxBackoff": _duration(self.max_backoff_s),
            "backoffMultiplier": self.multiplier,
            "retryableStatusCodes": sorted(code.name for code in RETRYABLE_CODES),
        }

    def pause(self, code: grpc.StatusCode, attempt: int, deadline: float) -> float | None:
        """Seconds to wait before the attempt after `attempt`, or None when there is none.

        The client itself retries only what a service config cannot express
        (`delete_items(allow_missing=True)`). Unlike gRPC, which waits and then ends the call
        with DEADLINE_EXCEEDED, it gives up with the real error when the pause would pass the
        deadline."""
        if code not in RETRYABLE_CODES or attempt >= self.max_attempts:
            return None
        ceiling = min(self.max_backoff_s, self.initial_backoff_s * self.multiplier ** (attempt - 1))
        pause = random.uniform(0, ceiling)
        return pause if time.monotonic() + pause < deadline else None


NO_RETRIES = RetryPolicy(max_attempts=1)


def _duration(seconds: float) -> str:
    """A protobuf JSON Duration: 0.1 -> "0.1s"."""
    return f"{seconds:.9f}".rstrip("0").rstrip(".") + "s"


# The API --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Rpc(Generic[Req, Resp]):
    """One unary (or server-streaming) RPC of interesttree.v1."""

    service: str
    method: str
    serialize: Callable[[Req], bytes]
    parse: Callable[[bytes], Resp]
    # The default deadline its proto comment documents.
    deadline_s: float
    # True: gRPC retries it (it is in the service config). False: never retried. A predicate:
    # only some requests are idempotent. A service config sees no requests, so the client
    # retries those itself (with `RetryPolicy.pause`); this is simpler than keeping a second
    # channel without retries for the others, and works on a channel the caller brings.
    idempotent: bool | Callable[[Req], bool]

    @property
    def path(self) -> str:
        return f"/{PACKAGE}.{self.service}/{self.method}"


def _rpc(
    service: str,
    method: str,
    request: type[MessageReq],
    response: type[MessageResp],
    deadline_s: float,
    *,
    idempotent: bool | Callable[[MessageReq], bool] = True,
) -> Rpc[MessageReq, MessageResp]:
    return Rpc(
        service, method, request.SerializeToString, response.FromString, deadline_s, idempotent
    )


UPSERT_ITEMS = _rpc(
    "CatalogService",
    "UpsertItems",
    catalog_pb2.UpsertItemsRequest,
    catalog_pb2.UpsertItemsResponse,
    60.0,
)
GET_ITEM = _rpc(
    "CatalogService", "GetItem", catalog_pb2.GetItemRequest, catalog_pb2.GetItemResponse, 5.0
)
LIST_ITEMS = _rpc(
    "CatalogService",
    "ListItems",
    catalog_pb2.ListItemsRequest,
    catalog_pb2.ListItemsResponse,
    10.0,
)
DELETE_ITEMS = _rpc(
    "CatalogService",
    "DeleteItems",
    catalog_pb2.DeleteItemsRequest,
    catalog_pb2.DeleteItemsResponse,
    30.0,
    # Without allow_missing, a retry after a lost success would fail with NOT_FOUND.
    idempotent=lambda request: request.allow_missing,
)
RECORD_EVENTS = _rpc(
    "InterestService",
    "RecordEvents",
    interest_pb2.RecordEventsRequest,
    interest_pb2.RecordEventsResponse,
    30.0,
)
BUILD_INTEREST_TREE = _rpc(
    "InterestService",
    "BuildInterestTree",
    interest_pb2.BuildInterestTreeRequest,
    interest_pb2.BuildInterestTreeResponse,
    120.0,
    idempotent=False,
)
GET_INTEREST_TREE = _rpc(
    "InterestService",
    "GetInterestTree",
    interest_pb2.GetInterestTreeRequest,
    interest_pb2.GetInterestTreeResponse,
    5.0,
)
EXPLAIN_INTERESTS = _rpc(
    "InterestService",
    "ExplainInterests",
    interest_pb2.ExplainInterestsRequest,
    interest_pb2.ExplainInterestsResponse,
    120.0,
)
LIST_INTEREST_TREE_REVISIONS = _rpc(
    "InterestService",
    "ListInterestTreeRevisions",
    interest_pb2.ListInterestTreeRevisionsRequest,
    interest_pb2.ListInterestTreeRevisionsResponse,
    10.0,
)
BATCH_BUILD_INTEREST_TREES = _rpc(
    "InterestService",
    "BatchBuildInterestTrees",
    interest_pb2.BatchBuildInterestTreesRequest,
    interest_pb2.BatchBuildInterestTreesResponse,
    3600.0,
    idempotent=False,
)
LIST_TAXONOMY_NODES = _rpc(
    "InterestService",
    "ListTaxonomyNodes",
    interest_pb2.ListTaxonomyNodesRequest,
    interest_pb2.ListTaxonomyNodesResponse,
    10.0,
)
RECOMMEND = _rpc(
    "RecommendationService",
    "Recommend",
    recommendation_pb2.RecommendRequest,
    recommendation_pb2.RecommendResponse,
    120.0,
)
RECOMMEND_BY_INTEREST = _rpc(
    "RecommendationService",
    "RecommendByInterest",
    recommendation_pb2.RecommendByInterestRequest,
    recommendation_pb2.RecommendByInterestResponse,
    120.0,
)
LIST_SIMILAR_ITEMS = _rpc(
    "RecommendationService",
    "ListSimilarItems",
    recommendation_pb2.ListSimilarItemsRequest,
    recommendation_pb2.ListSimilarItemsResponse,
    10.0,
)
DELETE_USER = _rpc(
    "InterestService",
    "DeleteUser",
    interest_pb2.DeleteUserRequest,
    interest_pb2.DeleteUserResponse,
    30.0,
)
REFRESH_MODELS = _rpc(
    "AdminService",
    "RefreshModels",
    admin_pb2.RefreshModelsRequest,
    admin_pb2.RefreshModelsResponse,
    300.0,
)

RPCS: tuple[Rpc[Any, Any], ...] = (
    UPSERT_ITEMS,
    GET_ITEM,
    LIST_ITEMS,
    DELETE_ITEMS,
    RECORD_EVENTS,
    BUILD_INTEREST_TREE,
    GET_INTEREST_TREE,
    EXPLAIN_INTERESTS,
    LIST_INTEREST_TREE_REVISIONS,
    BATCH_BUILD_INTEREST_TREES,
    LIST_TAXONOMY_NODES,
    DELETE_USER,
    RECOMMEND,
    RECOMMEND_BY_INTEREST,
    LIST_SIMILAR_ITEMS,
    REFRESH_MODELS,
)

DEFAULT_DEADLINES_S: dict[str, float] = {rpc.method: rpc.deadline_s for rpc in RPCS}


def service_config(retry: RetryPolicy | None = None) -> dict[str, Any]:
    """The gRPC service config the client gives the channels it opens: a `retryPolicy` for
    every idempotent RPC.

    The default deadlines are not in it as `timeout`s: gRPC Python ends such calls early
    (grpc/grpc#34547, #40633), never sends that deadline to the server, and would let a
    `timeout=` only shorten it. Each call sends its deadline instead."""
    policy = (retry or RetryPolicy()).grpc_retry_policy()
    if policy is None:
        return {}
    names = [
        {"service": f"{PACKAGE}.{rpc.service}", "method": rpc.method}
        for rpc in RPCS
        if rpc.idempotent is True
    ]
    return {"methodConfig": [{"name": names, "retryPolicy": policy}]}


def channel_options(
    retry: RetryPolicy | None = None, options: Sequence[tuple[str, str | int]] = ()
) -> list[tuple[str, str | int]]:
    """Options for a channel that retries like the clients' own: pass them to
    `grpc.secure_channel(...)` (or `grpc.aio.secure_channel`) when you bring the channel.
    `options` are added; one of the same name replaces the client's."""
    merged: dict[str, str | int] = {
        "grpc.enable_retries": 1,
        "grpc.service_config": json.dumps(service_config(retry)),
        "grpc.per_rpc_retry_buffer_size": RETRY_BUFFER_BYTES,
    }
    merged.update(options)
    return list(merged.items())


# One call, across its attempts -----------------------------------------------------------------


class _Attempt(TypedDict):
    timeout: float
    metadata: tuple[tuple[str, str], ...]


class _Call(Generic[Req, Resp]):
    """One call of an RPC: one deadline and one request id for all of its attempts. The
    deadline starts with the first attempt."""

    def __init__(
        self, client: _Client[Any], rpc: Rpc[Req, Resp], request: Req, timeout: float | None
    ) -> None:
        self.client, self.rpc, self.request, self.timeout = client, rpc, request, timeout
        self.request_id = uuid.uuid4().hex
        self.deadline = 0.0
        idempotent = rpc.idempotent
        self.policy = client._retry if callable(idempotent) and idempotent(request) else NO_RETRIES
        self.grpc_policy = client._grpc_retry if idempotent is True else None
        self.attempts = 0

    def again(self) -> _Call[Req, Resp]:
        """A new call of the same request (a page token may have changed)."""
        return _Call(self.client, self.rpc, self.request, self.timeout)

    def start_attempt(self) -> _Attempt:
        """Counts an attempt; returns its timeout (what is left of the deadline) and metadata."""
        if not self.attempts:
            budget = self.rpc.deadline_s if self.timeout is None else self.timeout
            self.deadline = time.monotonic() + budget
        self.attempts += 1
        return {
            "timeout": max(self.deadline - time.monotonic(), 0.001),
            "metadata": ((REQUEST_ID_HEADER, self.request_id), *self.client._auth),
        }

    def pause_after(self, error: grpc.RpcError) -> float:
        """Seconds to wait before the client's next attempt; raises the error as an
        `InterestTreeError` when there is none."""
        pause = self.policy.pause(status_code(error), self.attempts, self.deadline)
        if pause is None:
            raise self.error(error) from None
        return pause

    def error(self, error: grpc.RpcError) -> InterestTreeError:
        return error_from_rpc(error, request_id=self.request_id, attempts=self._made(error))

    def _made(self, error: grpc.RpcError) -> int:
        # gRPC does not say how many attempts it made. It retries a retryable code until its
        # policy runs out (the deadline ends a call with DEADLINE_EXCEEDED instead), unless the
        # server had sent response headers: they commit a call to the attempt that got them.
        policy = self.grpc_policy
        if policy is not None and status_code(error) in RETRYABLE_CODES and not _headers(error):
            return policy.max_attempts
        return self.attempts


def _headers(error: grpc.RpcError) -> bool:
    initial_metadata = getattr(error, "initial_metadata", None)
    return callable(initial_metadata) and bool(initial_metadata())


# Client methods, written once for both clients --------------------------------------------


def _check_timeout(build: Callable[..., object]) -> None:
    # The method's `timeout` argument is read by name, so it must be keyword-only.
    timeout = inspect.signature(build).parameters.get("timeout")
    if timeout is None or timeout.kind is not inspect.Parameter.KEYWORD_ONLY:
        raise TypeError(f"{build.__qualname__} needs a keyword-only `timeout` argument")


# A function that builds a request from a method's arguments (after `self`).
Builder: TypeAlias = Callable[Concatenate[Any, P], Req]
# A function that makes a call with one of the client's `_send_*`.
Sender: TypeAlias = Callable[["_Client[Any]", _Call[Req, Any]], object]


class _Method(Generic[P, Req, Resp, SyncOut, AsyncOut]):
    """A method of both clients, with the arguments of `build`: it builds the request and
    sends it with `send`. It returns SyncOut in `InterestTreeClient` and AsyncOut (an
    awaitable or an async iterator) in `AsyncInterestTreeClient`."""

    def __init__(
        self,
        rpc: Rpc[Req, Resp],
        build: Builder[P, Req],
        send: Sender[Req],
        doc: str | None = None,
    ) -> None:
        _check_timeout(build)
        self.rpc, self.build, self.send = rpc, build, send
        self.name, self.__doc__ = build.__name__, doc or build.__doc__
        # The arguments after `self`; what the method returns depends on the client.
        signature = inspect.signature(build)
        self.signature = signature.replace(
            parameters=list(signature.parameters.values())[1:],
            return_annotation=inspect.Signature.empty,
        )

    def __set_name__(self, owner: type[Any], name: str) -> None:
        self.name = name

    @overload
    def __get__(self, client: None, owner: type[Any]) -> Self: ...
    @overload
    def __get__(self, client: InterestTreeClient, owner: type[Any]) -> Callable[P, SyncOut]: ...
    @overload
    def __get__(
        self, client: AsyncInterestTreeClient, owner: type[Any]
    ) -> Callable[P, AsyncOut]: ...
    def __get__(self, client: _Client[Any] | None, owner: type[Any]) -> object:
        if client is None:
            return self

        def method(*args: P.args, **kwargs: P.kwargs) -> object:
            request = self.build(client, *args, **kwargs)
            return self.send(client, _Call(client, self.rpc, request, _timeout(kwargs)))

        # What help(), inspect and tracebacks show.
        method.__name__, method.__doc__ = self.name, self.__doc__
        method.__qualname__ = f"{type(client).__qualname__}.{self.name}"
        method.__signature__ = self.signature  # type: ignore[attr-defined]
        return method


def _timeout(kwargs: dict[str, object]) -> float | None:
    timeout = kwargs.get("timeout")
    if timeout is None or isinstance(timeout, int | float):
        return timeout
    raise TypeError(f"timeout must be a number of seconds, not {timeout!r}")


def unary(
    rpc: Rpc[Req, Resp], result: Callable[[Resp], R]
) -> Callable[[Builder[P, Req]], _Method[P, Req, Resp, R, Awaitable[R]]]:
    """Makes the decorated request builder a method that calls `rpc` once and returns
    `result(response)`."""

    def decorate(build: Builder[P, Req]) -> _Method[P, Req, Resp, R, Awaitable[R]]:
        return _Method(
            rpc,
            build,
            lambda client, call: client._send_unary(call, result),
        )

    return decorate


def stream(
    rpc: Rpc[Req, Resp],
) -> Callable[[Builder[P, Req]], _Method[P, Req, Resp, Iterator[Resp], AsyncIterator[Resp]]]:
    """Makes the decorated request builder a method that yields the responses `rpc` streams."""

    def decorate(
        build: Builder[P, Req],
    ) -> _Method[P, Req, Resp, Iterator[Resp], AsyncIterator[Resp]]:
        return _Method(rpc, build, lambda client, call: client._send_stream(call))

    return decorate


class _PageRequest(Protocol):
    page_token: str


class _Page(Protocol):
    @property
    def next_page_token(self) -> str: ...


PageReq = TypeVar("PageReq", bound=_PageRequest)
Page = TypeVar("Page", bound=_Page)


def paged(
    list_method: _Method[P, PageReq, Page, Any, Any],
    items: Callable[[Page], Iterable[R]],
    doc: str,
) -> _Method[P, PageReq, Page, Iterator[R], AsyncIterator[R]]:
    """A method with `list_method`'s arguments that yields the items of every page from
    `page_token` on (the first page by default); `timeout` is per page."""
    return _Method(
        list_method.rpc,
        list_method.build,
        lambda client, call: client._send_pages(call, items),
        doc,
    )


def _whole(response: T) -> T:
    return response


class _Client(Generic[C]):
    """Everything both clients share: the channel, and every method of the API."""

    def __init__(
        self,
        target: str | C,
        *,
        retry: RetryPolicy | None = None,
        options: Sequence[tuple[str, str | int]] = (),
        api_key: str | None = None,
        tls: bool = False,
        root_certificates: bytes | None = None,
        private_key: bytes | None = None,
        certificate_chain: bytes | None = None,
    ) -> None:
        # Sent with every call as `authorization: Bearer <key>` (the channel must be TLS off
        # loopback: the key is a secret).
        self._auth: tuple[tuple[str, str], ...] = (
            (("authorization", f"Bearer {api_key}"),) if api_key else ()
        )
        # TLS when asked for or when any certificate is given: `root_certificates` (PEM) to
        # trust instead of the system's; `private_key` and `certificate_chain` for mutual TLS.
        self._credentials = (
            grpc.ssl_channel_credentials(root_certificates, private_key, certificate_chain)
            if tls or root_certificates or private_key or certificate_chain
            else None
        )
        self._retry = retry or RetryPolicy()
        self._owned = isinstance(target, str)
        # The policy gRPC applies: the one in the service config of the channel opened here.
        # A channel the caller brings retries as it was built to (see `channel_options`).
        self._grpc_retry = self._retry if self._owned else None
        self._channel: C = (
            self._open(target, channel_options(self._retry, options))
            if isinstance(target, str)
            else target
        )

    def _open(self, target: str, options: list[tuple[str, str | int]]) -> C:
        raise NotImplementedError

    # How each client sends a request ---------------------------------------------------------

    def _send_unary(self, call: _Call[Req, Resp], result: Callable[[Resp], R]) -> object:
        raise NotImplementedError

    def _send_stream(self, call: _Call[Req, Resp]) -> object:
        raise NotImplementedError

    def _send_pages(
        self, call: _Call[PageReq, Page], items: Callable[[Page], Iterable[R]]
    ) -> object:
        raise NotImplementedError

    # CatalogService -------------------------------------------------------------------------

    @unary(UPSERT_ITEMS, lambda response: list(response.items))
    def upsert_items(
        self, items: Iterable[catalog_pb2.Item], *, timeout: float | None = None
    ) -> catalog_pb2.UpsertItemsRequest:
        """Creates or replaces `items`, all or nothing; returns them as stored."""
        return catalog_pb2.UpsertItemsRequest(items=list(items))

    @unary(GET_ITEM, lambda response: response.item)
    def get_item(self, name: str, *, timeout: float | None = None) -> catalog_pb2.GetItemRequest:
        """The item named `name` (`items/{id}`)."""
        return catalog_pb2.GetItemRequest(name=name)

    @unary(LIST_ITEMS, _whole)
    def list_items(
        self, *, page_size: int = 0, page_token: str = "", timeout: float | None = None
    ) -> catalog_pb2.ListItemsRequest:
        """One page of items in name order: `page_size` of them (0 means 100, at most 1,000)
        from `page_token`, a previous page's `next_page_token` (empty for the first page)."""
        return catalog_pb2.ListItemsRequest(page_size=page_size, page_token=page_token)

    iter_items = paged(
        list_items,
        lambda page: page.items,
        "Every item in name order, fetching pages as needed (`timeout` is per page).",
    )

    @unary(DELETE_ITEMS, lambda response: response.deleted_count)
    def delete_items(
        self, names: Iterable[str], *, allow_missing: bool = False, timeout: float | None = None
    ) -> catalog_pb2.DeleteItemsRequest:
        """Deletes the named items, all or nothing; returns how many there were. Retried only
        with `allow_missing` (then a retry after a lost success deletes nothing more)."""
        return catalog_pb2.DeleteItemsRequest(names=list(names), allow_missing=allow_missing)

    # InterestService ------------------------------------------------------------------------

    @unary(RECORD_EVENTS, lambda response: response.recorded_count)
    def record_events(
        self,
        events: Iterable[interest_pb2.Event],
        *,
        request_id: str | None = None,
        timeout: float | None = None,
    ) -> interest_pb2.RecordEventsRequest:
        """Records a batch; returns how many events were new (0 for a replayed request_id)."""
        # The key makes a retried batch record nothing twice, which is what lets it be retried.
        return interest_pb2.RecordEventsRequest(
            events=list(events), request_id=request_id or uuid.uuid4().hex
        )

    @unary(BUILD_INTEREST_TREE, lambda response: response.tree)
    def build_interest_tree(
        self, user: str, *, timeout: float | None = None
    ) -> interest_pb2.BuildInterestTreeRequest:
        """Builds and stores a new revision of `user`'s tree. Never retried."""
        return interest_pb2.BuildInterestTreeRequest(user=user)

    @unary(GET_INTEREST_TREE, lambda response: response.tree)
    def get_interest_tree(
        self, user: str, *, timeout: float | None = None
    ) -> interest_pb2.GetInterestTreeRequest:
        """The latest revision of `user`'s tree (`user` is `users/{id}`)."""
        return interest_pb2.GetInterestTreeRequest(name=tree_name(user))

    @unary(EXPLAIN_INTERESTS, _whole)
    def explain_interests(
        self, user: str, *, timeout: float | None = None
    ) -> interest_pb2.ExplainInterestsRequest:
        """`user`'s interests level by level, with why."""
        return interest_pb2.ExplainInterestsRequest(user=user)

    @unary(LIST_INTEREST_TREE_REVISIONS, _whole)
    def list_interest_tree_revisions(
        self,
        user: str,
        *,
        page_size: int = 0,
        page_token: str = "",
        timeout: float | None = None,
    ) -> interest_pb2.ListInterestTreeRevisionsRequest:
        """One page of the revisions of `user`'s tree, newest first."""
        return interest_pb2.ListInterestTreeRevisionsRequest(
            name=tree_name(user), page_size=page_size, page_token=page_token
        )

    iter_interest_tree_revisions = paged(
        list_interest_tree_revisions,
        lambda page: page.revisions,
        "Every revision of `user`'s tree, newest first, with what changed in each.",
    )

    @unary(LIST_TAXONOMY_NODES, _whole)
    def list_taxonomy_nodes(
        self, *, page_size: int = 0, page_token: str = "", timeout: float | None = None
    ) -> interest_pb2.ListTaxonomyNodesRequest:
        """One page of the shared taxonomy's nodes."""
        return interest_pb2.ListTaxonomyNodesRequest(page_size=page_size, page_token=page_token)

    iter_taxonomy_nodes = paged(
        list_taxonomy_nodes, lambda page: page.taxonomy_nodes, "Every node of the taxonomy."
    )

    @stream(BATCH_BUILD_INTEREST_TREES)
    def batch_build_interest_trees(
        self, users: Iterable[str] = (), *, all_users: bool = False, timeout: float | None = None
    ) -> interest_pb2.BatchBuildInterestTreesRequest:
        """Streams one result per user as its tree is built. Never retried: a retry would
        store second revisions for the users already built."""
        return interest_pb2.BatchBuildInterestTreesRequest(users=list(users), all_users=all_users)

    @unary(DELETE_USER, _whole)
    def delete_user(
        self, user: str, *, timeout: float | None = None
    ) -> interest_pb2.DeleteUserRequest:
        """Erases `user` (`users/{id}`): events, tree revisions, taxonomy references, and at the
        next model refresh their influence on the learned models. Idempotent (needs admin)."""
        return interest_pb2.DeleteUserRequest(name=user)

    # RecommendationService ------------------------------------------------------------------

    @unary(RECOMMEND, _whole)
    def recommend(
        self,
        user: str,
        *,
        page_size: int = 0,
        level_weights: Sequence[float] = (),
        include_seen: bool = False,
        categories: Iterable[Sequence[str]] = (),
        exclude_items: Iterable[str] = (),
        candidate_items: Iterable[str] = (),
        interest_quota: int = 0,
        context_items: Iterable[str] = (),
        allow_fallback: bool = False,
        timeout: float | None = None,
    ) -> recommendation_pb2.RecommendRequest:
        """Items for `user`, each with the tree nodes it comes from (their contributions add up
        to the item's score) and a reason. `categories` are path prefixes (coarse first);
        `candidate_items` re-ranks a candidate set; `interest_quota` gives the user's heaviest
        level-1 interests a place each. With `user=""` and `context_items` (an anonymous
        session's items, oldest first) a transient tree is built from those; `allow_fallback`
        turns an unknown user into the popular list (`fallback` set in the response)."""
        return recommendation_pb2.RecommendRequest(
            user=user,
            page_size=page_size,
            level_weights=list(level_weights),
            include_seen=include_seen,
            categories=[recommendation_pb2.CategoryPath(categories=list(p)) for p in categories],
            exclude_items=list(exclude_items),
            candidate_items=list(candidate_items),
            interest_quota=interest_quota,
            context_items=list(context_items),
            allow_fallback=allow_fallback,
        )

    @unary(RECOMMEND_BY_INTEREST, _whole)
    def recommend_by_interest(
        self,
        user: str,
        *,
        level: int = 0,
        max_interests: int = 0,
        page_size: int = 0,
        include_seen: bool = False,
        categories: Iterable[Sequence[str]] = (),
        exclude_items: Iterable[str] = (),
        candidate_items: Iterable[str] = (),
        timeout: float | None = None,
    ) -> recommendation_pb2.RecommendByInterestRequest:
        """One slate of items per interest node of `level` (0 = the deepest), heaviest first;
        no item is in two slates."""
        return recommendation_pb2.RecommendByInterestRequest(
            user=user,
            level=level,
            max_interests=max_interests,
            page_size=page_size,
            include_seen=include_seen,
            categories=[recommendation_pb2.CategoryPath(categories=list(p)) for p in categories],
            exclude_items=list(exclude_items),
            candidate_items=list(candidate_items),
        )

    @unary(LIST_SIMILAR_ITEMS, _whole)
    def list_similar_items(
        self,
        item: str,
        *,
        page_size: int = 0,
        categories: Iterable[Sequence[str]] = (),
        exclude_items: Iterable[str] = (),
        candidate_items: Iterable[str] = (),
        page_token: str = "",
        timeout: float | None = None,
    ) -> recommendation_pb2.ListSimilarItemsRequest:
        """One page of the items most similar to `item` (`items/{id}`), most similar first,
        each with a reason naming what it shares with it (category path, tags): `page_size`
        of them (0 means 10, at most 100) from `page_token`, a previous page's
        `next_page_token` (empty for the first page); 1,000 at most in all."""
        return recommendation_pb2.ListSimilarItemsRequest(
            item=item,
            page_size=page_size,
            categories=[recommendation_pb2.CategoryPath(categories=list(p)) for p in categories],
            exclude_items=list(exclude_items),
            candidate_items=list(candidate_items),
            page_token=page_token,
        )

    iter_similar_items = paged(
        list_similar_items,
        lambda page: page.similar_items,
        "The items most similar to `item`, most similar first (1,000 at most), fetching pages"
        " as needed (`timeout` is per page).",
    )

    # AdminService ---------------------------------------------------------------------------

    @unary(REFRESH_MODELS, _whole)
    def refresh_models(self, *, timeout: float | None = None) -> admin_pb2.RefreshModelsRequest:
        """Refits the models the recommender uses."""
        return admin_pb2.RefreshModelsRequest()


class InterestTreeClient(_Client[grpc.Channel]):
    """Blocking client. Pass a target (`host:port`, an insecure channel is opened and owned)
    or a `grpc.Channel` you own (built with `channel_options()` to retry as this client does).
    Use it as a context manager or call `close()`."""

    def _open(self, target: str, options: list[tuple[str, str | int]]) -> grpc.Channel:
        if self._credentials is not None:
            return grpc.secure_channel(target, self._credentials, options=options)
        return grpc.insecure_channel(target, options=options)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        if self._owned:
            self._channel.close()

    def _send_unary(self, call: _Call[Req, Resp], result: Callable[[Resp], R]) -> R:
        send = self._channel.unary_unary(call.rpc.path, call.rpc.serialize, call.rpc.parse)
        while True:
            try:
                return result(send(call.request, **call.start_attempt()))
            except grpc.RpcError as error:
                time.sleep(call.pause_after(error))

    def _send_stream(self, call: _Call[Req, Resp]) -> Iterator[Resp]:
        send = self._channel.unary_stream(call.rpc.path, call.rpc.serialize, call.rpc.parse)
        try:
            yield from send(call.request, **call.start_attempt())
        except grpc.RpcError as error:
            raise call.error(error) from None

    def _send_pages(
        self, call: _Call[PageReq, Page], items: Callable[[Page], Iterable[R]]
    ) -> Iterator[R]:
        while True:
            page = self._send_unary(call, _whole)
            yield from items(page)
            if not page.next_page_token:
                return
            call.request.page_token = page.next_page_token
            call = call.again()


class AsyncInterestTreeClient(_Client[grpc.aio.Channel]):
    """asyncio client with the same methods as `InterestTreeClient`, as coroutines and async
    iterators. Pass a target or a `grpc.aio.Channel` you own; `async with` closes an owned one."""

    def _open(self, target: str, options: list[tuple[str, str | int]]) -> grpc.aio.Channel:
        if self._credentials is not None:
            return grpc.aio.secure_channel(target, self._credentials, options=options)
        return grpc.aio.insecure_channel(target, options=options)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def close(self) -> None:
        if self._owned:
            await self._channel.close()

    async def _send_unary(self, call: _Call[Req, Resp], result: Callable[[Resp], R]) -> R:
        send = self._channel.unary_unary(call.rpc.path, call.rpc.serialize, call.rpc.parse)
        while True:
            try:
                return result(await send(call.request, **call.start_attempt()))
            except grpc.RpcError as error:
                await asyncio.sleep(call.pause_after(error))

    async def _send_stream(self, call: _Call[Req, Resp]) -> AsyncIterator[Resp]:
        send = self._channel.unary_stream(call.rpc.path, call.rpc.serialize, call.rpc.parse)
        try:
            async for response in send(call.request, **call.start_attempt()):
                yield response
        except grpc.RpcError as error:
            raise call.error(error) from None

    async def _send_pages(
        self, call: _Call[PageReq, Page], items: Callable[[Page], Iterable[R]]
    ) -> AsyncIterator[R]:
        while True:
            page = await self._send_unary(call, _whole)
            for item in items(page):
                yield item
            if not page.next_page_token:
                return
            call.request.page_token = page.next_page_token
            call = call.again()
