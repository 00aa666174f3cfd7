"""The quickstart's main job: the real server on the embedded default, fed the shipped sample
over gRPC, printing each user's interests level by level and attributed recommendations."""

from __future__ import annotations

import asyncio
import json
import time
from datetime import UTC, datetime, timedelta
from importlib import resources
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from interesttree import AsyncInterestTreeClient
from interesttree.v1 import admin_pb2, catalog_pb2, interest_pb2, recommendation_pb2
from interesttree.v1.admin_pb2_grpc import AdminServiceStub
from interesttree.v1.interest_pb2_grpc import InterestServiceStub
from interesttree.v1.recommendation_pb2_grpc import RecommendationServiceStub

from server.app import Runtime
from server.config import Settings
from server.importer import NAMED, import_rows, to_event, to_item


def load_sample(*, shelf: bool = False) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The sample catalog and users; with `shelf`, also the items without categories of
    sample/shelf.json and their reader, which the demo adds so that the catalog taxonomy has
    clusters for the model to name."""
    folder = resources.files("server") / "sample"
    catalog = json.loads((folder / "catalog.json").read_text())["items"]
    users = json.loads((folder / "users.json").read_text())["users"]
    if shelf:
        extra = json.loads((folder / "shelf.json").read_text())
        catalog, users = catalog + extra["items"], users + extra["users"]
    return catalog, users


def sample_rows(
    start: datetime, *, shelf: bool = False
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The sample as import rows (server/importer.py's field names): the catalog, and each
    user's items viewed one a day from `start`."""
    catalog, users = load_sample(shelf=shelf)
    items = [
        {
            "id": entry["item_id"],
            "title": entry["title"],
            "description": entry["description"],
            "categories": entry.get("categories", []),
            "tags": entry["tags"],
        }
        for entry in catalog
    ]
    events = [
        {
            "user": user["user_id"],
            "item": item_id,
            "type": "view",
            "time": start + timedelta(days=day),
        }
        for user in users
        for day, item_id in enumerate(user["items"])
    ]
    return items, events


def sample_requests(
    start: datetime,
) -> tuple[catalog_pb2.UpsertItemsRequest, interest_pb2.RecordEventsRequest]:
    items, events = sample_rows(start)
    return (
        catalog_pb2.UpsertItemsRequest(items=[to_item(row, NAMED["items"]) for row in items]),
        interest_pb2.RecordEventsRequest(
            events=[to_event(row, NAMED["events"]) for row in events],
            request_id="sample-events-v1",
        ),
    )


async def wait_serving(channel: grpc.aio.Channel, timeout_s: float) -> None:
    stub = health_pb2_grpc.HealthStub(channel)
    deadline = time.monotonic() + timeout_s
    last = None
    while time.monotonic() < deadline:
        response = await stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=5)
        if response.status == health_pb2.HealthCheckResponse.SERVING:
            return
        if response.status != last:
            print("  waiting for the language model to answer (health NOT_SERVING)…", flush=True)
            last = response.status
        await asyncio.sleep(1.0)
    raise TimeoutError("the server did not become SERVING in time")


async def run_demo(settings: Settings) -> int:
    if settings.port == Settings.model_fields["port"].default:
        settings = settings.model_copy(update={"port": 0})
    started = time.perf_counter()
    print(f"Starting interest-tree (data under {settings.data_dir})…", flush=True)
    runtime = await Runtime.create(settings)
    server, port = await runtime.start_server(f"{settings.host}:{settings.port}")
    await runtime.start_background()
    try:
        async with grpc.aio.insecure_channel(f"{settings.host}:{port}") as channel:
            await wait_serving(channel, settings.embedded_llm_ready_timeout_s)
            print(f"Server SERVING on port {port} after {time.perf_counter() - started:.0f} s.\n")
            interests = InterestServiceStub(channel)
            recommender = RecommendationServiceStub(channel)
            admin = AdminServiceStub(channel)
            # Loaded the way `interest-tree import` loads a file (server/importer.py).
            # With the shelf of uncategorised items, whose clusters the model names.
            item_rows, event_rows = sample_rows(datetime(2024, 1, 1, tzinfo=UTC), shelf=True)
            client = AsyncInterestTreeClient(channel)
            loaded = await import_rows(client, "items", item_rows)
            recorded = await import_rows(client, "events", event_rows)
            if not (loaded.ok and recorded.ok):
                raise RuntimeError(f"bad sample rows: {loaded.bad_rows + recorded.bad_rows}")
            await admin.RefreshModels(admin_pb2.RefreshModelsRequest(), timeout=300)
            print(
                f"Loaded {loaded.sent_rows} items and {recorded.sent_rows} events "
                f"({recorded.stored} new).\n"
            )
            titles = {f"items/{row['id']}": row["title"] for row in item_rows}
            users = sorted({f"users/{row['user']}" for row in event_rows})
            for user in users:
                build_started = time.perf_counter()
                built = await interests.BuildInterestTree(
                    interest_pb2.BuildInterestTreeRequest(user=user), timeout=300
                )
                explained = await interests.ExplainInterests(
                    interest_pb2.ExplainInterestsRequest(user=user), timeout=120
                )
                print(
                    f"== {user}: tree revision {built.tree.revision}, {len(built.tree.nodes)} "
                    f"nodes, built in {time.perf_counter() - build_started:.1f} s "
                    f"(model: {built.tree.model or 'none'})"
                )
                for level in explained.levels:
                    print(f"  Level {level.level} (weight {level.level_weight:.2f})")
                    for node in level.nodes:
                        source = interest_pb2.TextSource.Name(node.label_source)[12:].lower()
                        evidence = ", ".join(titles[name] for name in node.evidence_items[:3])
                        print(f"    - {node.label} [{node.weight:.0%}, label from {source}]")
                        print(f"      {node.explanation}")
                        print(f"      evidence: {evidence}")
                recommended = await recommender.Recommend(
                    recommendation_pb2.RecommendRequest(user=user, page_size=5), timeout=60
                )
                print("  Recommendations:")
                for rec in recommended.recommendations:
                    print(f"    * {titles[rec.item]} (score {rec.score:.3f}) — {rec.reason}")
                print()
    finally:
        await runtime.health.enter_graceful_shutdown()
        await server.stop(settings.grace_period_s)
        await runtime.close()
    print(f"Done in {time.perf_counter() - started:.0f} s.")
    return 0
