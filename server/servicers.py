"""Thin gRPC servicers: convert the request, call the engine, convert the result."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import grpc
from google.protobuf.timestamp_pb2 import Timestamp
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

from server import convert
from server.errors import status_for
from taxonomy.engine import InterestEngine
from taxonomy.errors import DomainError


class CatalogServicer(catalog_pb2_grpc.CatalogServiceServicer):
    def __init__(self, engine: InterestEngine) -> None:
        self._engine = engine

    async def UpsertItems(
        self, request: catalog_pb2.UpsertItemsRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> catalog_pb2.UpsertItemsResponse:
        stored = await self._engine.catalog.upsert_items(convert.items_from_request(request))
        return catalog_pb2.UpsertItemsResponse(items=[convert.item_to_proto(i) for i in stored])

    async def GetItem(
        self, request: catalog_pb2.GetItemRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> catalog_pb2.GetItemResponse:
        item = await self._engine.catalog.get_item(convert.require_item(request.name))
        return catalog_pb2.GetItemResponse(item=convert.item_to_proto(item))

    async def ListItems(
        self, request: catalog_pb2.ListItemsRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> catalog_pb2.ListItemsResponse:
        limit = convert.page_size(
            request.page_size,
            default=convert.DEFAULT_LIST_PAGE_SIZE,
            maximum=convert.MAX_LIST_PAGE_SIZE,
        )
        after = convert.decode_page_token(request.page_token)
        # One extra row tells whether another page exists without a COUNT query.
        items = await self._engine.catalog.list_items(after, limit + 1)
        token = convert.encode_page_token(items[limit - 1].item_id) if len(items) > limit else ""
        return catalog_pb2.ListItemsResponse(
            items=[convert.item_to_proto(i) for i in items[:limit]], next_page_token=token
        )

    async def DeleteItems(
        self, request: catalog_pb2.DeleteItemsRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> catalog_pb2.DeleteItemsResponse:
        deleted = await self._engine.catalog.delete_items(
            convert.delete_ids_from_request(request), allow_missing=request.allow_missing
        )
        return catalog_pb2.DeleteItemsResponse(deleted_count=deleted)


class InterestServicer(interest_pb2_grpc.InterestServiceServicer):
    def __init__(self, engine: InterestEngine) -> None:
        self._engine = engine

    async def RecordEvents(
        self, request: interest_pb2.RecordEventsRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> interest_pb2.RecordEventsResponse:
        events, request_id = convert.events_from_request(request)
        recorded = await self._engine.events.record_events(events, request_id)
        return interest_pb2.RecordEventsResponse(recorded_count=recorded)

    async def BuildInterestTree(
        self,
        request: interest_pb2.BuildInterestTreeRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> interest_pb2.BuildInterestTreeResponse:
        result = await self._engine.trees.build_tree(convert.require_user(request.user))
        return interest_pb2.BuildInterestTreeResponse(tree=convert.tree_to_proto(result.tree))

    async def GetInterestTree(
        self,
        request: interest_pb2.GetInterestTreeRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> interest_pb2.GetInterestTreeResponse:
        tree = await self._engine.trees.get_tree(convert.require_tree(request.name))
        return interest_pb2.GetInterestTreeResponse(tree=convert.tree_to_proto(tree))

    async def ExplainInterests(
        self,
        request: interest_pb2.ExplainInterestsRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> interest_pb2.ExplainInterestsResponse:
        user_id = convert.require_user(request.user)
        tree = await self._engine.trees.get_or_build_tree(user_id)
        return convert.explanation_to_proto(tree, self._engine.recommender.explain_levels(tree))

    async def ListInterestTreeRevisions(
        self,
        request: interest_pb2.ListInterestTreeRevisionsRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> interest_pb2.ListInterestTreeRevisionsResponse:
        user_id = convert.require_tree(request.name)
        limit = convert.page_size(
            request.page_size,
            default=convert.DEFAULT_REVISIONS_PAGE_SIZE,
            maximum=convert.MAX_REVISIONS_PAGE_SIZE,
        )
        before = convert.int_page_token(request.page_token)
        revisions = await self._engine.trees.list_revisions(user_id, before, limit + 1)
        token = (
            convert.encode_page_token(str(revisions[limit - 1][0].revision))
            if len(revisions) > limit
            else ""
        )
        return interest_pb2.ListInterestTreeRevisionsResponse(
            revisions=convert.revisions_to_proto(revisions[:limit]), next_page_token=token
        )

    async def BatchBuildInterestTrees(
        self,
        request: interest_pb2.BatchBuildInterestTreesRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> AsyncIterator[interest_pb2.BatchBuildInterestTreesResponse]:
        # A DomainError raised here becomes a rich status in the ServiceInterceptor.
        users = convert.users_from_batch_request(request)
        if request.all_users:
            users = await self._engine.events.user_ids()
        done = 0
        async for user_id, result in self._engine.trees.batch_build(users):
            done += 1
            response = interest_pb2.BatchBuildInterestTreesResponse(
                user=f"users/{user_id}", completed_count=done, total_count=len(users)
            )
            if isinstance(result, DomainError):
                status = status_for(result)
                response.error = f"{status.code.name} {result.reason}: {result.message}"
            else:
                response.tree.CopyFrom(convert.tree_to_proto(result.tree))
            yield response

    async def ListTaxonomyNodes(
        self,
        request: interest_pb2.ListTaxonomyNodesRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> interest_pb2.ListTaxonomyNodesResponse:
        limit = convert.page_size(
            request.page_size,
            default=convert.DEFAULT_LIST_PAGE_SIZE,
            maximum=convert.MAX_LIST_PAGE_SIZE,
        )
        offset = convert.int_page_token(request.page_token) or 0
        nodes = await self._engine.taxonomy.list_nodes(offset, limit + 1)
        token = convert.encode_page_token(str(offset + limit)) if len(nodes) > limit else ""
        return interest_pb2.ListTaxonomyNodesResponse(
            taxonomy_nodes=[convert.taxonomy_to_proto(n) for n in nodes[:limit]],
            next_page_token=token,
        )


class RecommendationServicer(recommendation_pb2_grpc.RecommendationServiceServicer):
    def __init__(self, engine: InterestEngine) -> None:
        self._engine = engine

    async def Recommend(
        self,
        request: recommendation_pb2.RecommendRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> recommendation_pb2.RecommendResponse:
        user_id = convert.require_user(request.user)
        size = convert.page_size(
            request.page_size,
            default=convert.DEFAULT_RECOMMEND_PAGE_SIZE,
            maximum=convert.MAX_RECOMMEND_PAGE_SIZE,
        )
        result = await self._engine.recommender.recommend(
            user_id,
            page_size=size,
            level_weights=convert.level_weights_from_request(request.level_weights),
            include_seen=request.include_seen,
        )
        return convert.recommendations_to_proto(result)


class AdminServicer(admin_pb2_grpc.AdminServiceServicer):
    def __init__(self, engine: InterestEngine) -> None:
        self._engine = engine

    async def RefreshModels(
        self, request: admin_pb2.RefreshModelsRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> admin_pb2.RefreshModelsResponse:
        result = await self._engine.refresher.refresh_models()
        finished = Timestamp()
        finished.FromDatetime(result.refresh_time)
        return admin_pb2.RefreshModelsResponse(
            event_count=result.event_count, item_count=result.item_count, refresh_time=finished
        )
