"""Thin clients over the generated stubs: `InterestTreeClient` (blocking) and
`AsyncInterestTreeClient` (asyncio), with the same methods.

What they add to the stubs:
- every call gets the default deadline its RPC documents unless `timeout=` says otherwise; a
  retried call keeps one deadline for all its attempts;
- idempotent calls are retried with exponential backoff and full jitter, only on UNAVAILABLE
  and RESOURCE_EXHAUSTED. `RecordEvents` is made idempotent by an idempotency key the client
  fills in when the caller gives none; `DeleteItems` only with `allow_missing`;
  `BuildInterestTree` and `BatchBuildInterestTrees` (each call stores new revisions) never;
- `iter_*` helpers walk paginated lists;
- errors come out as `InterestTreeError` subclasses carrying the decoded `google.rpc` details;
- every call sends an `x-request-id` (the same one for all its attempts) that the server puts
  in its logs; the exception carries it too.
"""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Self, TypeVar

import grpc
from google.protobuf.message import Message

from interesttree.errors import error_from_rpc, status_code
from interesttree.v1 import (
    admin_pb2,
    admin_pb2_grpc,
    catalog_pb2,
    catalog_pb2_grpc,
    interest_pb2,
    interest_pb2_grpc,
    recommendation_pb2,
    recommendation_pb2_grpc,
)

__all__ = [
    "DEFAULT_DEADLINES_S",
    "REQUEST_ID_HEADER",
    "AsyncInterestTreeClient",
    "InterestTreeClient",
    "RetryPolicy",
    "item_name",
    "tree_name",
    "user_name",
]

REQUEST_ID_HEADER = "x-request-id"

# The default deadline each RPC's comment in proto/interesttree/v1 documents.
DEFAULT_DEADLINES_S: dict[str, float] = {
    "UpsertItems": 60.0,
    "GetItem": 5.0,
    "ListItems": 10.0,
    "DeleteItems": 30.0,
    "RecordEvents": 30.0,
    "BuildInterestTree": 120.0,
    "GetInterestTree": 5.0,
    "ExplainInterests": 120.0,
    "ListInterestTreeRevisions": 10.0,
    "BatchBuildInterestTrees": 3600.0,
    "ListTaxonomyNodes": 10.0,
    "Recommend": 120.0,
    "RefreshModels": 300.0,
}

RETRYABLE_CODES = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.RESOURCE_EXHAUSTED})

Req = TypeVar("Req", bound=Message)
Resp = TypeVar("Resp", bound=Message)


def user_name(user_id: str) -> str:
    """`users/{user_id}`, the resource name the API takes for a user."""
    return f"users/{user_id}"


def item_name(item_id: str) -> str:
    """`items/{item_id}`."""
    return f"items/{item_id}"


def tree_name(user: str) -> str:
    """`users/{user_id}/interestTree` from a user's resource name."""
    return f"{user}/interestTree"


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff with full jitter, so that many clients do not retry in lockstep."""

    max_attempts: int = 4
    initial_backoff_s: float = 0.1
    max_backoff_s: float = 2.0
    multiplier: float = 2.0

    def pause(self, code: grpc.StatusCode, attempt: int, deadline: float) -> float | None:
        """Seconds to wait before the next attempt, or None to give up after `attempt`."""
        if code not in RETRYABLE_CODES or attempt >= self.max_attempts:
            return None
        ceiling = min(self.max_backoff_s, self.initial_backoff_s * self.multiplier ** (attempt - 1))
        pause = random.uniform(0, ceiling)
        # A retry that could not start before the deadline would only turn the real error
        # into DEADLINE_EXCEEDED.
        return pause if time.monotonic() + pause < deadline else None


NO_RETRIES = RetryPolicy(max_attempts=1)


def _events_request(
    events: Iterable[interest_pb2.Event], request_id: str | None
) -> interest_pb2.RecordEventsRequest:
    # The key makes a retried batch record nothing twice, which is what lets it be retried.
    return interest_pb2.RecordEventsRequest(
        events=list(events), request_id=request_id or uuid.uuid4().hex
    )


def _recommend_request(
    user: str, page_size: int, level_weights: Sequence[float], include_seen: bool
) -> recommendation_pb2.RecommendRequest:
    return recommendation_pb2.RecommendRequest(
        user=user, page_size=page_size, level_weights=list(level_weights), include_seen=include_seen
    )


class _Base:
    def __init__(self, retry: RetryPolicy | None) -> None:
        self._retry = retry or RetryPolicy()

    def _start(self, rpc: str, timeout: float | None) -> tuple[float, str]:
        budget = DEFAULT_DEADLINES_S[rpc] if timeout is None else timeout
        return time.monotonic() + budget, uuid.uuid4().hex


class InterestTreeClient(_Base):
    """Blocking client. Pass a target (`host:port`, an insecure channel is opened and owned)
    or a `grpc.Channel` you own. Use it as a context manager or call `close()`."""

    def __init__(
        self,
        target: str | grpc.Channel,
        *,
        retry: RetryPolicy | None = None,
        options: Sequence[tuple[str, str | int]] = (),
    ) -> None:
        super().__init__(retry)
        if isinstance(target, str):
            self._channel = grpc.insecure_channel(target, options=list(options))
            self._owned = True
        else:
            self._channel, self._owned = target, False
        self.catalog = catalog_pb2_grpc.CatalogServiceStub(self._channel)
        self.interests = interest_pb2_grpc.InterestServiceStub(self._channel)
        self.recommender = recommendation_pb2_grpc.RecommendationServiceStub(self._channel)
        self.admin = admin_pb2_grpc.AdminServiceStub(self._channel)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        if self._owned:
            self._channel.close()

    def _call(
        self,
        rpc: str,
        method: grpc.UnaryUnaryMultiCallable[Req, Resp],
        request: Req,
        timeout: float | None,
        *,
        idempotent: bool,
    ) -> Resp:
        deadline, request_id = self._start(rpc, timeout)
        policy = self._retry if idempotent else NO_RETRIES
        attempt = 0
        while True:
            attempt += 1
            try:
                return method(
                    request,
                    timeout=max(deadline - time.monotonic(), 0.001),
                    metadata=((REQUEST_ID_HEADER, request_id),),
                )
            except grpc.RpcError as error:
                pause = policy.pause(status_code(error), attempt, deadline)
                if pause is None:
                    raise error_from_rpc(error, request_id=request_id, attempts=attempt) from None
            time.sleep(pause)

    # CatalogService -------------------------------------------------------------------------

    def upsert_items(
        self, items: Iterable[catalog_pb2.Item], *, timeout: float | None = None
    ) -> list[catalog_pb2.Item]:
        request = catalog_pb2.UpsertItemsRequest(items=list(items))
        response = self._call(
            "UpsertItems", self.catalog.UpsertItems, request, timeout, idempotent=True
        )
        return list(response.items)

    def get_item(self, name: str, *, timeout: float | None = None) -> catalog_pb2.Item:
        request = catalog_pb2.GetItemRequest(name=name)
        return self._call("GetItem", self.catalog.GetItem, request, timeout, idempotent=True).item

    def list_items(
        self, *, page_size: int = 0, page_token: str = "", timeout: float | None = None
    ) -> catalog_pb2.ListItemsResponse:
        request = catalog_pb2.ListItemsRequest(page_size=page_size, page_token=page_token)
        return self._call("ListItems", self.catalog.ListItems, request, timeout, idempotent=True)

    def iter_items(
        self, *, page_size: int = 0, timeout: float | None = None
    ) -> Iterator[catalog_pb2.Item]:
        """Every item in name order, fetching pages as needed (`timeout` is per page)."""
        token = ""
        while True:
            page = self.list_items(page_size=page_size, page_token=token, timeout=timeout)
            yield from page.items
            token = page.next_page_token
            if not token:
                return

    def delete_items(
        self, names: Iterable[str], *, allow_missing: bool = False, timeout: float | None = None
    ) -> int:
        request = catalog_pb2.DeleteItemsRequest(names=list(names), allow_missing=allow_missing)
        # Without allow_missing, a retry after a lost success would fail with NOT_FOUND.
        response = self._call(
            "DeleteItems", self.catalog.DeleteItems, request, timeout, idempotent=allow_missing
        )
        return response.deleted_count

    # InterestService ------------------------------------------------------------------------

    def record_events(
        self,
        events: Iterable[interest_pb2.Event],
        *,
        request_id: str | None = None,
        timeout: float | None = None,
    ) -> int:
        """Records a batch; returns how many events were new (0 for a replayed request_id)."""
        request = _events_request(events, request_id)
        response = self._call(
            "RecordEvents", self.interests.RecordEvents, request, timeout, idempotent=True
        )
        return response.recorded_count

    def build_interest_tree(
        self, user: str, *, timeout: float | None = None
    ) -> interest_pb2.InterestTree:
        request = interest_pb2.BuildInterestTreeRequest(user=user)
        return self._call(
            "BuildInterestTree",
            self.interests.BuildInterestTree,
            request,
            timeout,
            idempotent=False,
        ).tree

    def get_interest_tree(
        self, user: str, *, timeout: float | None = None
    ) -> interest_pb2.InterestTree:
        """The latest revision of `user`'s tree (`user` is `users/{id}`)."""
        request = interest_pb2.GetInterestTreeRequest(name=tree_name(user))
        return self._call(
            "GetInterestTree", self.interests.GetInterestTree, request, timeout, idempotent=True
        ).tree

    def explain_interests(
        self, user: str, *, timeout: float | None = None
    ) -> interest_pb2.ExplainInterestsResponse:
        request = interest_pb2.ExplainInterestsRequest(user=user)
        return self._call(
            "ExplainInterests", self.interests.ExplainInterests, request, timeout, idempotent=True
        )

    def list_interest_tree_revisions(
        self,
        user: str,
        *,
        page_size: int = 0,
        page_token: str = "",
        timeout: float | None = None,
    ) -> interest_pb2.ListInterestTreeRevisionsResponse:
        request = interest_pb2.ListInterestTreeRevisionsRequest(
            name=tree_name(user), page_size=page_size, page_token=page_token
        )
        return self._call(
            "ListInterestTreeRevisions",
            self.interests.ListInterestTreeRevisions,
            request,
            timeout,
            idempotent=True,
        )

    def iter_interest_tree_revisions(
        self, user: str, *, page_size: int = 0, timeout: float | None = None
    ) -> Iterator[interest_pb2.InterestTreeRevision]:
        """Every revision of `user`'s tree, newest first, with what changed in each."""
        token = ""
        while True:
            page = self.list_interest_tree_revisions(
                user, page_size=page_size, page_token=token, timeout=timeout
            )
            yield from page.revisions
            token = page.next_page_token
            if not token:
                return

    def list_taxonomy_nodes(
        self, *, page_size: int = 0, page_token: str = "", timeout: float | None = None
    ) -> interest_pb2.ListTaxonomyNodesResponse:
        request = interest_pb2.ListTaxonomyNodesRequest(page_size=page_size, page_token=page_token)
        return self._call(
            "ListTaxonomyNodes",
            self.interests.ListTaxonomyNodes,
            request,
            timeout,
            idempotent=True,
        )

    def iter_taxonomy_nodes(
        self, *, page_size: int = 0, timeout: float | None = None
    ) -> Iterator[interest_pb2.TaxonomyNode]:
        token = ""
        while True:
            page = self.list_taxonomy_nodes(page_size=page_size, page_token=token, timeout=timeout)
            yield from page.taxonomy_nodes
            token = page.next_page_token
            if not token:
                return

    def batch_build_interest_trees(
        self,
        users: Iterable[str] = (),
        *,
        all_users: bool = False,
        timeout: float | None = None,
    ) -> Iterator[interest_pb2.BatchBuildInterestTreesResponse]:
        """Streams one result per user as its tree is built. Never retried: a retry would
        store second revisions for the users already built."""
        deadline, request_id = self._start("BatchBuildInterestTrees", timeout)
        request = interest_pb2.BatchBuildInterestTreesRequest(
            users=list(users), all_users=all_users
        )
        stream = self.interests.BatchBuildInterestTrees(
            request,
            timeout=deadline - time.monotonic(),
            metadata=((REQUEST_ID_HEADER, request_id),),
        )
        try:
            yield from stream
        except grpc.RpcError as error:
            raise error_from_rpc(error, request_id=request_id) from None

    # RecommendationService ------------------------------------------------------------------

    def recommend(
        self,
        user: str,
        *,
        page_size: int = 0,
        level_weights: Sequence[float] = (),
        include_seen: bool = False,
        timeout: float | None = None,
    ) -> recommendation_pb2.RecommendResponse:
        request = _recommend_request(user, page_size, level_weights, include_seen)
        return self._call(
            "Recommend", self.recommender.Recommend, request, timeout, idempotent=True
        )

    # AdminService ---------------------------------------------------------------------------

    def refresh_models(self, *, timeout: float | None = None) -> admin_pb2.RefreshModelsResponse:
        request = admin_pb2.RefreshModelsRequest()
        return self._call(
            "RefreshModels", self.admin.RefreshModels, request, timeout, idempotent=True
        )


class AsyncInterestTreeClient(_Base):
    """asyncio client with the same methods as `InterestTreeClient`, as coroutines and async
    iterators. Pass a target or a `grpc.aio.Channel` you own; `async with` closes an owned one."""

    def __init__(
        self,
        target: str | grpc.aio.Channel,
        *,
        retry: RetryPolicy | None = None,
        options: Sequence[tuple[str, str | int]] = (),
    ) -> None:
        super().__init__(retry)
        if isinstance(target, str):
            self._channel = grpc.aio.insecure_channel(target, options=list(options))
            self._owned = True
        else:
            self._channel, self._owned = target, False
        self.catalog = catalog_pb2_grpc.CatalogServiceStub(self._channel)
        self.interests = interest_pb2_grpc.InterestServiceStub(self._channel)
        self.recommender = recommendation_pb2_grpc.RecommendationServiceStub(self._channel)
        self.admin = admin_pb2_grpc.AdminServiceStub(self._channel)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        if self._owned:
            await self._channel.close()

    async def _call(
        self,
        rpc: str,
        method: Callable[..., Awaitable[Resp]],
        request: Message,
        timeout: float | None,
        *,
        idempotent: bool,
    ) -> Resp:
        deadline, request_id = self._start(rpc, timeout)
        policy = self._retry if idempotent else NO_RETRIES
        attempt = 0
        while True:
            attempt += 1
            try:
                return await method(
                    request,
                    timeout=max(deadline - time.monotonic(), 0.001),
                    metadata=((REQUEST_ID_HEADER, request_id),),
                )
            except grpc.RpcError as error:
                pause = policy.pause(status_code(error), attempt, deadline)
                if pause is None:
                    raise error_from_rpc(error, request_id=request_id, attempts=attempt) from None
            await asyncio.sleep(pause)

    # CatalogService -------------------------------------------------------------------------

    async def upsert_items(
        self, items: Iterable[catalog_pb2.Item], *, timeout: float | None = None
    ) -> list[catalog_pb2.Item]:
        request = catalog_pb2.UpsertItemsRequest(items=list(items))
        response: catalog_pb2.UpsertItemsResponse = await self._call(
            "UpsertItems", self.catalog.UpsertItems, request, timeout, idempotent=True
        )
        return list(response.items)

    async def get_item(self, name: str, *, timeout: float | None = None) -> catalog_pb2.Item:
        request = catalog_pb2.GetItemRequest(name=name)
        response: catalog_pb2.GetItemResponse = await self._call(
            "GetItem", self.catalog.GetItem, request, timeout, idempotent=True
        )
        return response.item

    async def list_items(
        self, *, page_size: int = 0, page_token: str = "", timeout: float | None = None
    ) -> catalog_pb2.ListItemsResponse:
        request = catalog_pb2.ListItemsRequest(page_size=page_size, page_token=page_token)
        response: catalog_pb2.ListItemsResponse = await self._call(
            "ListItems", self.catalog.ListItems, request, timeout, idempotent=True
        )
        return response

    async def iter_items(
        self, *, page_size: int = 0, timeout: float | None = None
    ) -> AsyncIterator[catalog_pb2.Item]:
        token = ""
        while True:
            page = await self.list_items(page_size=page_size, page_token=token, timeout=timeout)
            for item in page.items:
                yield item
            token = page.next_page_token
            if not token:
                return

    async def delete_items(
        self, names: Iterable[str], *, allow_missing: bool = False, timeout: float | None = None
    ) -> int:
        request = catalog_pb2.DeleteItemsRequest(names=list(names), allow_missing=allow_missing)
        response: catalog_pb2.DeleteItemsResponse = await self._call(
            "DeleteItems", self.catalog.DeleteItems, request, timeout, idempotent=allow_missing
        )
        return response.deleted_count

    # InterestService ------------------------------------------------------------------------

    async def record_events(
        self,
        events: Iterable[interest_pb2.Event],
        *,
        request_id: str | None = None,
        timeout: float | None = None,
    ) -> int:
        request = _events_request(events, request_id)
        response: interest_pb2.RecordEventsResponse = await self._call(
            "RecordEvents", self.interests.RecordEvents, request, timeout, idempotent=True
        )
        return response.recorded_count

    async def build_interest_tree(
        self, user: str, *, timeout: float | None = None
    ) -> interest_pb2.InterestTree:
        request = interest_pb2.BuildInterestTreeRequest(user=user)
        response: interest_pb2.BuildInterestTreeResponse = await self._call(
            "BuildInterestTree",
            self.interests.BuildInterestTree,
            request,
            timeout,
            idempotent=False,
        )
        return response.tree

    async def get_interest_tree(
        self, user: str, *, timeout: float | None = None
    ) -> interest_pb2.InterestTree:
        request = interest_pb2.GetInterestTreeRequest(name=tree_name(user))
        response: interest_pb2.GetInterestTreeResponse = await self._call(
            "GetInterestTree", self.interests.GetInterestTree, request, timeout, idempotent=True
        )
        return response.tree

    async def explain_interests(
        self, user: str, *, timeout: float | None = None
    ) -> interest_pb2.ExplainInterestsResponse:
        request = interest_pb2.ExplainInterestsRequest(user=user)
        response: interest_pb2.ExplainInterestsResponse = await self._call(
            "ExplainInterests", self.interests.ExplainInterests, request, timeout, idempotent=True
        )
        return response

    async def list_interest_tree_revisions(
        self,
        user: str,
        *,
        page_size: int = 0,
        page_token: str = "",
        timeout: float | None = None,
    ) -> interest_pb2.ListInterestTreeRevisionsResponse:
        request = interest_pb2.ListInterestTreeRevisionsRequest(
            name=tree_name(user), page_size=page_size, page_token=page_token
        )
        response: interest_pb2.ListInterestTreeRevisionsResponse = await self._call(
            "ListInterestTreeRevisions",
            self.interests.ListInterestTreeRevisions,
            request,
            timeout,
            idempotent=True,
        )
        return response

    async def iter_interest_tree_revisions(
        self, user: str, *, page_size: int = 0, timeout: float | None = None
    ) -> AsyncIterator[interest_pb2.InterestTreeRevision]:
        token = ""
        while True:
            page = await self.list_interest_tree_revisions(
                user, page_size=page_size, page_token=token, timeout=timeout
            )
            for revision in page.revisions:
                yield revision
            token = page.next_page_token
            if not token:
                return

    async def list_taxonomy_nodes(
        self, *, page_size: int = 0, page_token: str = "", timeout: float | None = None
    ) -> interest_pb2.ListTaxonomyNodesResponse:
        request = interest_pb2.ListTaxonomyNodesRequest(page_size=page_size, page_token=page_token)
        response: interest_pb2.ListTaxonomyNodesResponse = await self._call(
            "ListTaxonomyNodes",
            self.interests.ListTaxonomyNodes,
            request,
            timeout,
            idempotent=True,
        )
        return response

    async def iter_taxonomy_nodes(
        self, *, page_size: int = 0, timeout: float | None = None
    ) -> AsyncIterator[interest_pb2.TaxonomyNode]:
        token = ""
        while True:
            page = await self.list_taxonomy_nodes(
                page_size=page_size, page_token=token, timeout=timeout
            )
            for node in page.taxonomy_nodes:
                yield node
            token = page.next_page_token
            if not token:
                return

    async def batch_build_interest_trees(
        self,
        users: Iterable[str] = (),
        *,
        all_users: bool = False,
        timeout: float | None = None,
    ) -> AsyncIterator[interest_pb2.BatchBuildInterestTreesResponse]:
        deadline, request_id = self._start("BatchBuildInterestTrees", timeout)
        request = interest_pb2.BatchBuildInterestTreesRequest(
            users=list(users), all_users=all_users
        )
        stream = self.interests.BatchBuildInterestTrees(
            request,
            timeout=deadline - time.monotonic(),
            metadata=((REQUEST_ID_HEADER, request_id),),
        )
        try:
            async for response in stream:
                yield response
        except grpc.RpcError as error:
            raise error_from_rpc(error, request_id=request_id) from None

    # RecommendationService ------------------------------------------------------------------

    async def recommend(
        self,
        user: str,
        *,
        page_size: int = 0,
        level_weights: Sequence[float] = (),
        include_seen: bool = False,
        timeout: float | None = None,
    ) -> recommendation_pb2.RecommendResponse:
        request = _recommend_request(user, page_size, level_weights, include_seen)
        response: recommendation_pb2.RecommendResponse = await self._call(
            "Recommend", self.recommender.Recommend, request, timeout, idempotent=True
        )
        return response

    # AdminService ---------------------------------------------------------------------------

    async def refresh_models(
        self, *, timeout: float | None = None
    ) -> admin_pb2.RefreshModelsResponse:
        request = admin_pb2.RefreshModelsRequest()
        response: admin_pb2.RefreshModelsResponse = await self._call(
            "RefreshModels", self.admin.RefreshModels, request, timeout, idempotent=True
        )
        return response
