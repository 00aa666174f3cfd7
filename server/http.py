"""The service's HTTP port (off unless `--http-port` is set): the explainability review page,
its read-only JSON API, and Prometheus `/metrics`.

It runs on the gRPC server's event loop and reads the engine directly. Every route is a GET;
nothing here writes (a user without a tree is reported as such, never built). The page is
static HTML, CSS and vanilla JS from server/review/ and loads nothing from elsewhere, which the
Content-Security-Policy enforces in the browser.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from aiohttp import web

from server.interceptors import REQUEST_ID_HEADER, request_id_var
from server.metrics import LlmBackend, ServiceMetrics, probe_llm
from taxonomy.engine import InterestEngine
from taxonomy.errors import DomainError, NotFoundError
from taxonomy.models import USER_ID_PATTERN, InterestNode, InterestTree, Item, TextSource
from taxonomy.recommendation.service import RecommendResult

logger = logging.getLogger("interest_tree.http")

REVIEW_DIR = Path(str(resources.files("server") / "review"))
MAX_REVISIONS = 20
MAX_RECOMMENDATIONS = 10
MAX_USER_SUGGESTIONS = 50
# A node whose weight moved less than this between revisions is not reported as changed.
WEIGHT_CHANGE = 0.05
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}

ENGINE_KEY = web.AppKey("engine", InterestEngine)
METRICS_KEY = web.AppKey("metrics", ServiceMetrics)
LLM_KEY = web.AppKey("llm", LlmBackend)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def _request_context(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Request id (from X-Request-Id or new) in every log line and echoed back, one access log
    line per request, and the security headers on every response."""
    request_id = request.headers.get(REQUEST_ID_HEADER, "")[:128] or uuid.uuid4().hex
    token = request_id_var.set(request_id)
    started = time.perf_counter()
    try:
        try:
            response = await handler(request)
        except web.HTTPException as error:
            response = web.json_response({"error": error.reason}, status=error.status)
        response.headers.update(SECURITY_HEADERS)
        response.headers[REQUEST_ID_HEADER] = request_id
        logger.info(
            "http %s %s status=%d",
            request.method,
            request.path,
            response.status,
            extra={
                "http_method": request.method,
                "http_path": request.path,
                "http_status": response.status,
                "duration_ms": (time.perf_counter() - started) * 1000,
            },
        )
        return response
    finally:
        request_id_var.reset(token)


def create_http_app(
    engine: InterestEngine,
    metrics: ServiceMetrics | None = None,
    llm: LlmBackend | None = None,
) -> web.Application:
    app = web.Application(middlewares=[_request_context])
    app[ENGINE_KEY] = engine
    if metrics is not None:
        app[METRICS_KEY] = metrics
        app.router.add_get("/metrics", _metrics)
    if llm is not None:
        app[LLM_KEY] = llm
    app.router.add_get("/", _index)
    app.router.add_get("/api/users", _users)
    app.router.add_get("/api/users/{user_id}", _review)
    app.router.add_static("/static/", REVIEW_DIR)
    return app


@dataclass
class HttpServer:
    runner: web.AppRunner
    port: int

    async def stop(self) -> None:
        await self.runner.cleanup()


async def start_http(app: web.Application, host: str, port: int) -> HttpServer:
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    bound = runner.addresses[0][1]
    return HttpServer(runner, int(bound))


# Handlers --------------------------------------------------------------------------------


async def _index(request: web.Request) -> web.StreamResponse:
    return web.FileResponse(REVIEW_DIR / "index.html", headers={"Cache-Control": "no-cache"})


async def _metrics(request: web.Request) -> web.StreamResponse:
    metrics = request.app[METRICS_KEY]
    llm = request.app.get(LLM_KEY)
    if llm is not None:
        await probe_llm(metrics, llm)
    return web.Response(
        body=metrics.exposition(), headers={"Content-Type": "text/plain; version=0.0.4"}
    )


async def _users(request: web.Request) -> web.StreamResponse:
    engine = request.app[ENGINE_KEY]
    prefix = request.query.get("prefix", "")
    users = await engine.events.user_ids()
    matching = [user for user in users if user.startswith(prefix)][:MAX_USER_SUGGESTIONS]
    return web.json_response({"users": matching}, headers={"Cache-Control": "no-store"})


async def _review(request: web.Request) -> web.StreamResponse:
    engine = request.app[ENGINE_KEY]
    user_id = request.match_info["user_id"]
    if not USER_ID_PATTERN.match(user_id):
        return web.json_response({"error": f"{user_id!r} is not a valid user id"}, status=400)
    try:
        await engine.events.require_user(user_id)
    except NotFoundError:
        return web.json_response({"error": f"no user {user_id!r}"}, status=404)
    payload = await user_review(engine, user_id)
    return web.json_response(payload, headers={"Cache-Control": "no-store"})


# Review payload --------------------------------------------------------------------------


def _source(source: TextSource) -> str:
    return "model" if source is TextSource.MODEL else "data"


def _titled(item_ids: Sequence[str], items: dict[str, Item]) -> list[dict[str, str]]:
    return [
        {"item_id": item_id, "title": items[item_id].title if item_id in items else item_id}
        for item_id in item_ids
    ]


def _node(node: InterestNode, items: dict[str, Item]) -> dict[str, Any]:
    return {
        "id": node.node_id,
        "parent_id": node.parent_id or "",
        "level": node.level,
        "label": node.label,
        "explanation": node.explanation,
        "weight": node.weight,
        "label_source": _source(node.label_source),
        "explanation_source": _source(node.explanation_source),
        "evidence": _titled(node.evidence_items, items),
    }


def revision_changes(
    previous: InterestTree, current: InterestTree, items: dict[str, Item]
) -> dict[str, Any]:
    """What changed from `previous` to `current`, in terms a reviewer reads: labels and item
    titles rather than ids."""
    before = {node.node_id: node for node in previous.nodes}
    after = {node.node_id: node for node in current.nodes}
    common = [node_id for node_id in after if node_id in before]

    def brief(node: InterestNode) -> dict[str, Any]:
        return {"id": node.node_id, "label": node.label, "level": node.level}

    evidence_changed = []
    for node_id in common:
        old, new = before[node_id].evidence_items, after[node_id].evidence_items
        gained = [item for item in new if item not in old]
        lost = [item for item in old if item not in new]
        if gained or lost:
            evidence_changed.append(
                {
                    **brief(after[node_id]),
                    "gained": _titled(gained, items),
                    "lost": _titled(lost, items),
                }
            )
    changes: dict[str, Any] = {
        "added": [brief(after[n]) for n in after if n not in before],
        "removed": [brief(before[n]) for n in before if n not in after],
        "relabeled": [
            {**brief(after[n]), "before": before[n].label}
            for n in common
            if before[n].label != after[n].label
        ],
        "reweighted": [
            {**brief(after[n]), "before": before[n].weight, "after": after[n].weight}
            for n in common
            if abs(before[n].weight - after[n].weight) >= WEIGHT_CHANGE
        ],
        "evidence_changed": evidence_changed,
    }
    counts = [
        (len(changes["added"]), "added"),
        (len(changes["removed"]), "removed"),
        (len(changes["relabeled"]), "relabeled"),
        (len(changes["reweighted"]), "reweighted"),
        (len(evidence_changed), "with new evidence"),
    ]
    changes["summary"] = (
        ", ".join(f"{count} {what}" for count, what in counts if count) or "no change"
    )
    return changes


async def user_review(engine: InterestEngine, user_id: str) -> dict[str, Any]:
    """Everything the review page shows for one user, in one JSON object."""
    # One more than shown, so that the oldest shown revision can be diffed too.
    try:
        revisions = [
            tree for tree, _ in await engine.trees.list_revisions(user_id, None, MAX_REVISIONS + 1)
        ]
    except NotFoundError:
        revisions = []
    if not revisions:
        return {"user": f"users/{user_id}", "tree": None}
    tree = revisions[0]
    try:
        result = await engine.recommender.recommend(
            user_id, page_size=MAX_RECOMMENDATIONS, level_weights=None, include_seen=False
        )
        recommendations_error = ""
    except DomainError as error:
        # The tree is still worth reviewing when recommending fails (say, every item it
        # draws on was deleted).
        result = RecommendResult([], tree.revision, [])
        recommendations_error = error.message
    wanted = {item for revision in revisions for n in revision.nodes for item in n.evidence_items}
    wanted.update(rec.item_id for rec in result.recommendations)
    items = await engine.catalog.get_items(sorted(wanted))
    level_weights = engine.recommender.level_weights(tree.depth, None)
    shown = revisions[:MAX_REVISIONS]
    history = []
    for index, revision in enumerate(shown):
        previous = revisions[index + 1] if index + 1 < len(revisions) else None
        entry: dict[str, Any] = {
            "revision": revision.revision,
            "create_time": revision.create_time.isoformat(),
            "event_count": revision.event_count,
            "model": revision.model,
            "node_count": len(revision.nodes),
            "changes": revision_changes(previous, revision, items) if previous else None,
        }
        stats = getattr(revision, "build_stats", None)
        if stats is not None:
            entry["build_stats"] = stats.model_dump()
        history.append(entry)
    return {
        "user": f"users/{user_id}",
        "tree": {
            "revision": tree.revision,
            "create_time": tree.create_time.isoformat(),
            "event_count": tree.event_count,
            "model": tree.model,
            "nodes": [_node(node, items) for node in tree.nodes],
        },
        "levels": [
            {
                "level": level,
                "level_weight": level_weights[level - 1],
                "nodes": [
                    {"id": n.node_id, "label": n.label, "weight": n.weight}
                    for n in sorted(tree.level_nodes(level), key=lambda n: -n.weight)
                ],
            }
            for level in range(1, tree.depth + 1)
        ],
        "recommendations": [
            {
                "item_id": rec.item_id,
                "title": items[rec.item_id].title if rec.item_id in items else rec.item_id,
                "score": rec.score,
                "reason": rec.reason,
                "nodes": [
                    {
                        "id": scored.node.node_id,
                        "label": scored.node.label,
                        "level": scored.node.level,
                        "contribution": scored.contribution,
                    }
                    for scored in rec.nodes
                ],
            }
            for rec in result.recommendations
        ],
        "recommendation_tree_revision": result.tree_revision,
        "recommendations_error": recommendations_error,
        "revisions": history,
        "more_revisions": len(revisions) > MAX_REVISIONS,
    }
