"""Thin gRPC servicers: convert the request, call the engine's room, convert the result.

Failures are the interceptor's business (server/interceptors.py): a servicer raises, and the
caller gets the mapped status.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from typing import Any

import grpc
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

from server import convert, convert_recommendations, convert_trees, pagination
from server.auth.context import engine_var
from server.errors import status_for
from taxonomy.engine import InterestEngine
from taxonomy.errors import DomainError, ViolationCollector
from taxonomy.models import InterestTree, Item, TaxonomyNode, TreeDiff

Context = grpc.aio.ServicerContext[Any, Any]

SERVICE_NAMES = (
    catalog_pb2.DESCRIPTOR.services_by_name["CatalogService"].full_name,
    interest_pb2.DESCRIPTOR.services_by_name["InterestService"].full_name,
    recommendation_pb2.DESCRIPTOR.services_by_name["RecommendationService"].full_name,
    admin_pb2.DESCRIPTOR.services_by_name["AdminService"].full_name,
)


class _TenantScoped:
    """Reaches the engine of the calling tenant (set by the interceptor, server/auth/), or the
    engine it was made with when no tenant is set (authentication off: the default tenant)."""

    def __init__(self, engine: InterestEngine) -> None:
        self._default_engine = engine

    @property
    def _engine(self) -> InterestEngine:
        current = engine_var.get()
        return current if current is not None else self._default_engine


class CatalogServicer(_TenantScoped, catalog_pb2_grpc.CatalogServiceServicer):
    async def UpsertItems(
        self, request: catalog_pb2.UpsertItemsRequest, context: Context
    ) -> catalog_pb2.UpsertItemsResponse:
        stored = await self._engine.catalog.upsert_items(convert.items_from_request(request))
        return catalog_pb2.UpsertItemsResponse(items=[convert.item_to_proto(i) for i in stored])

    async def GetItem(
        self, request: catalog_pb2.GetItemRequest, context: Context
    ) -> catalog_pb2.GetItemResponse:
        item = await self._engine.catalog.get_item(convert.require_item(request.name))
        return catalog_pb2.GetItemResponse(item=convert.item_to_proto(item))

    async def ListItems(
        self, request: catalog_pb2.ListItemsRequest, context: Context
    ) -> catalog_pb2.ListItemsResponse:
        async def fetch(after: str | None, limit: int) -> list[Item]:
            return await self._engine.catalog.list_items(after or "", limit)

        def next_key(_: str | None, shown: Sequence[Item]) -> str:
            return shown[-1].item_id

        page = await pagination.fetch_page(
            pagination.ITEMS, request.page_size, request.page_token, fetch, next_key
        )
        return catalog_pb2.ListItemsResponse(
            items=[convert.item_to_proto(i) for i in page.rows],
            next_page_token=page.next_page_token,
        )

    async def DeleteItems(
        self, request: catalog_pb2.DeleteItemsRequest, context: Context
    ) -> catalog_pb2.DeleteItemsResponse:
        deleted = await self._engine.catalog.delete_items(
            convert.delete_ids_from_request(request), allow_missing=request.allow_missing
        )
        return catalog_pb2.DeleteItemsResponse(deleted_count=deleted)


class InterestServicer(_TenantScoped, interest_pb2_grpc.InterestServiceServicer):
    async def RecordEvents(
        self, request: interest_pb2.RecordEventsRequest, context: Context
    ) -> interest_pb2.RecordEventsResponse:
        events, request_id = convert.events_from_request(request)
        recorded = await self._engine.events.record_events(events, request_id)
        return interest_pb2.RecordEventsResponse(recorded_count=recorded)

    async def BuildInterestTree(
        self, request: interest_pb2.BuildInterestTreeRequest, context: Context
    ) -> interest_pb2.BuildInterestTreeResponse:
        result = await self._engine.trees.build_tree(convert.require_user(request.user))
        return interest_pb2.BuildInterestTreeResponse(tree=convert_trees.tree_to_proto(result.tree))

    async def GetInterestTree(
        self, request: interest_pb2.GetInterestTreeRequest, context: Context
    ) -> interest_pb2.GetInterestTreeResponse:
        tree = await self._engine.trees.get_tree(convert.require_tree(request.name))
        return interest_pb2.GetInterestTreeResponse(tree=convert_trees.tree_to_proto(tree))

    async def ExplainInterests(
        self, request: interest_pb2.ExplainInterestsRequest, context: Context
    ) -> interest_pb2.ExplainInterestsResponse:
        user_id = convert.require_user(request.user)
        tree = await self._engine.trees.get_or_build_tree(user_id)
        levels = self._engine.recommender.explain_levels(tree)
        return convert_trees.explanation_to_proto(tree, levels)

    async def ListInterestTreeRevisions(
        self, request: interest_pb2.ListInterestTreeRevisionsRequest, context: Context
    ) -> interest_pb2.ListInterestTreeRevisionsResponse:
        user_id = convert.require_tree(request.name)

        async def fetch(before: int | None, limit: int) -> list[tuple[InterestTree, TreeDiff]]:
            return await self._engine.trees.list_revisions(user_id, before, limit)

        def next_key(_: int | None, shown: Sequence[tuple[InterestTree, TreeDiff]]) -> int:
            return shown[-1][0].revision

        page = await pagination.fetch_page(
            pagination.REVISIONS, request.page_size, request.page_token, fetch, next_key
        )
        return interest_pb2.ListInterestTreeRevisionsResponse(
            revisions=convert_trees.revisions_to_proto(page.rows),
            next_page_token=page.next_page_token,
        )

    async def BatchBuildInterestTrees(
        self, request: interest_pb2.BatchBuildInterestTreesRequest, context: Context
    ) -> AsyncIterator[interest_pb2.BatchBuildInterestTreesResponse]:
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
                response.error = f"{status.code.name} {result.reason}: {status.details}"
            else:
                response.tree.CopyFrom(convert_trees.tree_to_proto(result.tree))
            yield response

    async def ListTaxonomyNodes(
        self, request: interest_pb2.ListTaxonomyNodesRequest, context: Context
    ) -> interest_pb2.ListTaxonomyNodesResponse:
        async def fetch(offset: int | None, limit: int) -> list[TaxonomyNode]:
            return await self._engine.taxonomy.list_nodes(offset or 0, limit)

        def next_key(offset: int | None, shown: Sequence[TaxonomyNode]) -> int:
            return (offset or 0) + len(shown)

        page = await pagination.fetch_page(
            pagination.TAXONOMY, request.page_size, request.page_token, fetch, next_key
        )
        return interest_pb2.ListTaxonomyNodesResponse(
            taxonomy_nodes=[convert_trees.taxonomy_to_proto(n) for n in page.rows],
            next_page_token=page.next_page_token,
        )

    async def DeleteUser(
        self, request: interest_pb2.DeleteUserRequest, context: Context
    ) -> interest_pb2.DeleteUserResponse:
        errors = ViolationCollector()
        user_id = convert.user_id_from_name(request.name, "name", errors)
        errors.raise_if_any("invalid user name", reason="INVALID_RESOURCE_NAME")
        events, revisions = await self._engine.delete_user(user_id)
        return interest_pb2.DeleteUserResponse(
            deleted=events > 0 or revisions > 0,
            deleted_event_count=events,
            deleted_revision_count=revisions,
        )


class RecommendationServicer(_TenantScoped, recommendation_pb2_grpc.RecommendationServiceServicer):
    async def Recommend(
        self, request: recommendation_pb2.RecommendRequest, context: Context
    ) -> recommendation_pb2.RecommendResponse:
        query = convert_recommendations.recommend_query(request)
        result = await self._engine.recommender.recommend(query)
        return convert_recommendations.recommendations_to_proto(result)

    async def RecommendByInterest(
        self, request: recommendation_pb2.RecommendByInterestRequest, context: Context
    ) -> recommendation_pb2.RecommendByInterestResponse:
        query = convert_recommendations.slates_query(request)
        result = await self._engine.recommender.recommend_by_interest(query)
        return convert_recommendations.slates_to_proto(result)

    async def ListSimilarItems(
        self, request: recommendation_pb2.ListSimilarItemsRequest, context: Context
    ) -> recommendation_pb2.ListSimilarItemsResponse:
        query = convert_recommendations.similar_query(request)
        result = await self._engine.recommender.similar_items(query)
        return convert_recommendations.similar_to_proto(result)


class AdminServicer(_TenantScoped, admin_pb2_grpc.AdminServiceServicer):
    async def RefreshModels(
        self, request: admin_pb2.RefreshModelsRequest, context: Context
    ) -> admin_pb2.RefreshModelsResponse:
        return convert_trees.refresh_to_proto(await self._engine.refresher.refresh_models())


def add_services(server: grpc.aio.Server, engine: InterestEngine) -> None:
    """Adds the four interesttree.v1 services (SERVICE_NAMES) to `server`."""
    catalog_pb2_grpc.add_CatalogServiceServicer_to_server(CatalogServicer(engine), server)
    interest_pb2_grpc.add_InterestServiceServicer_to_server(InterestServicer(engine), server)
    recommendation_pb2_grpc.add_RecommendationServiceServicer_to_server(
        RecommendationServicer(engine), server
    )
    admin_pb2_grpc.add_AdminServiceServicer_to_server(AdminServicer(engine), server)
