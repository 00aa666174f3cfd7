"""The service's HTTP port (off unless `--http-port` is set): the explainability review page,
its read-only JSON API, Prometheus `/metrics`, and the four services as Connect JSON POST
routes (server/connect.py, which writes through the servicers as the gRPC port does).

It runs on the gRPC server's event loop and reads through the engine's rooms (never the store).
Revisions show the diff stored with them (taxonomy/trees/diff.py). Every review route is a
GET; nothing of the page writes (a user without a tree is reported as such, never built). The
page is static HTML, CSS and vanilla JS from server/review/ and loads nothing from elsewhere,
which the Content-Security-Policy enforces in the browser.
"""

from __future__ import annotations

import logging
import ssl
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from aiohttp import web

from server import overview
from server.auth.context import DEFAULT_TENANT
from server.auth.gate import Gate, bearer_token
from server.auth.roles import METRICS_ROLE, REVIEW_ROLE, Role
from server.connect import ConnectRoutes
from server.convert import echo, level_weights_from_request
from server.errors import PermissionDeniedError, RateLimitedError, UnauthenticatedError
from server.health import ServiceHealth, readiness
from server.interceptors import REQUEST_ID_HEADER, request_id_var
from server.metrics import LlmBackend, ServiceMetrics, probe_llm
from taxonomy.engine import InterestEngine
from taxonomy.errors import DomainError, NotFoundError
from taxonomy.models import (
    ITEM_ID_PATTERN,
    USER_ID_PATTERN,
    InterestNode,
    InterestTree,
    Item,
    TextSource,
    TreeDiff,
)
from taxonomy.recommendation.service import RecommendQuery, RecommendResult
from taxonomy.trees.diff import revision_summary

logger = logging.getLogger("interest_tree.http")

REVIEW_DIR = Path(str(resources.files("server") / "review"))
MAX_REVISIONS = 20
MAX_RECOMMENDATIONS = 10
MAX_USER_SUGGESTIONS = 50
MAX_LEVELS = 16
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
GATE_KEY = web.AppKey("gate", Gate)
HEALTH_KEY = web.AppKey("health", ServiceHealth)
TENANT_ENGINE_KEY = web.RequestKey("tenant_engine", InterestEngine)
"""The request's tenant engine, which `_authenticate` puts on the request."""

REQUEST_ID_KEY = web.RequestKey("request_id", str)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


async def _response_headers(request: web.Request, response: web.StreamResponse) -> None:
    """The security headers and the request id on every response, as it is prepared: also on
    the Connect routes' responses, which their ASGI applications send before they return."""
    response.headers.update(SECURITY_HEADERS)
    if (request_id := request.get(REQUEST_ID_KEY)) is not None:
        response.headers[REQUEST_ID_HEADER] = request_id


@web.middleware
async def _request_context(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Request id (from X-Request-Id or new) in every log line and echoed back, one access log
    line per request, the security headers on every response, and JSON errors."""
    request_id = request.headers.get(REQUEST_ID_HEADER, "")[:128] or uuid.uuid4().hex
    # Still percent-encoded, so that "%0a" cannot start a forged log line.
    path = request.rel_url.raw_path
    token = request_id_var.set(request_id)
    request[REQUEST_ID_KEY] = request_id
    started = time.perf_counter()
    try:
        try:
            response = await handler(request)
        except web.HTTPException as error:
            response = web.json_response({"error": error.reason}, status=error.status)
        except Exception:
            # As on the gRPC port: a generic answer naming the request id, the traceback logged.
            logger.exception("unhandled error in %s %s", request.method, path)
            response = web.json_response(
                {"error": f"internal error; logged under request id {request_id}"}, status=500
            )
        logger.info(
            "http %s %s status=%d",
            request.method,
            path,
            response.status,
            extra={
                "http_method": request.method,
                "http_path": path,
                "http_status": response.status,
                "duration_ms": (time.perf_counter() - started) * 1000,
            },
        )
        return response
    finally:
        request_id_var.reset(token)


def _needed_role(path: str) -> Role | None:
    """The role a path needs; None for the page's static files, which hold no data, and for
    the Connect routes, which server/connect.py admits per method as the gRPC port does."""
    if path == "/metrics":
        return METRICS_ROLE
    if path.startswith("/api/"):
        return REVIEW_ROLE
    return None


@web.middleware
async def _authenticate(request: web.Request, handler: Handler) -> web.StreamResponse:
    """With a gate: the same Bearer key as on the gRPC port, and the key's tenant's engine for
    the handlers (401 without a valid key, 403 for a weak role, 429 over the rate)."""
    gate = request.app.get(GATE_KEY)
    needed = _needed_role(request.path)
    if gate is None or needed is None:
        return await handler(request)
    try:
        _, engine = await gate.admit_http(
            bearer_token(request.headers.get("Authorization")), needed
        )
    except UnauthenticatedError as error:
        return web.json_response(
            {"error": error.message, "reason": error.reason},
            status=401,
            headers={"WWW-Authenticate": "Bearer"},
        )
    except PermissionDeniedError as error:
        return web.json_response({"error": error.message, "reason": error.reason}, status=403)
    except RateLimitedError as error:
        return web.json_response(
            {"error": error.message, "reason": error.reason},
            status=429,
            headers={"Retry-After": str(max(1, round(error.retry_after_s)))},
        )
    request[TENANT_ENGINE_KEY] = engine
    return await handler(request)


def _engine(request: web.Request) -> InterestEngine:
    engine = request.get(TENANT_ENGINE_KEY)
    return engine if isinstance(engine, InterestEngine) else request.app[ENGINE_KEY]


def create_http_app(
    engine: InterestEngine,
    metrics: ServiceMetrics | None = None,
    llm: LlmBackend | None = None,
    gate: Gate | None = None,
    service_health: ServiceHealth | None = None,
) -> web.Application:
    app = web.Application(middlewares=[_request_context, _authenticate])
    app.on_response_prepare.append(_response_headers)
    app[ENGINE_KEY] = engine
    # Kubernetes' HTTP probes (server/health.py); like the gRPC health, they need no key.
    app.router.add_get("/healthz", _healthz)
    if service_health is not None:
        app[HEALTH_KEY] = service_health
        app.router.add_get("/readyz", _readyz)
    if gate is not None:
        app[GATE_KEY] = gate
    if metrics is not None:
        app[METRICS_KEY] = metrics
        app.router.add_get("/metrics", _metrics)
    if llm is not None:
        app[LLM_KEY] = llm
    # JSON over HTTP: the four services over the Connect protocol (server/connect.py), gated
    # per method exactly as on the gRPC port.
    ConnectRoutes(engine, gate, metrics.observe_rpc if metrics is not None else None).add_to(app)
    app.router.add_get("/", _index)
    app.router.add_get("/api/users", _users)
    app.router.add_get("/api/overview", _overview)
    app.router.add_get("/api/user-list", _user_list)
    app.router.add_get("/api/items/{item_id}/users", _item_users)
    app.router.add_get("/api/users/{user_id}", _review)
    app.router.add_static("/static/", REVIEW_DIR)
    return app


@dataclass
class HttpServer:
    runner: web.AppRunner
    port: int

    async def stop(self) -> None:
        await self.runner.cleanup()


async def start_http(
    app: web.Application, host: str, port: int, *, ssl_context: ssl.SSLContext | None = None
) -> HttpServer:
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port, ssl_context=ssl_context)
    await site.start()
    bound = runner.addresses[0][1]
    return HttpServer(runner, int(bound))


# Handlers --------------------------------------------------------------------------------


async def _healthz(request: web.Request) -> web.StreamResponse:
    """Liveness: the process answers requests."""
    return web.json_response({"status": "ok"}, headers={"Cache-Control": "no-store"})


async def _readyz(request: web.Request) -> web.StreamResponse:
    """Readiness: 200 when the store, the models and the services are ready, else 503."""
    ready, checks = await readiness(request.app[ENGINE_KEY], request.app[HEALTH_KEY])
    return web.json_response(
        {"status": "ready" if ready else "not ready", "checks": checks},
        status=200 if ready else 503,
        headers={"Cache-Control": "no-store"},
    )


async def _index(request: web.Request) -> web.StreamResponse:
    return web.FileResponse(REVIEW_DIR / "index.html", headers={"Cache-Control": "no-cache"})


async def _metrics(request: web.Request) -> web.StreamResponse:
    metrics = request.app[METRICS_KEY]
    llm = request.app.get(LLM_KEY)
    if llm is not None:
        await probe_llm(metrics, llm)
    gate = request.app.get(GATE_KEY)
    engines = gate.tenants.all() if gate is not None else {}
    await metrics.count_data(engines or {DEFAULT_TENANT: request.app[ENGINE_KEY]})
    return web.Response(
        body=metrics.exposition(), headers={"Content-Type": "text/plain; version=0.0.4"}
    )


async def _users(request: web.Request) -> web.StreamResponse:
    engine = _engine(request)
    prefix = request.query.get("prefix", "")
    users = await engine.events.user_ids()
    matching = [user for user in users if user.startswith(prefix)][:MAX_USER_SUGGESTIONS]
    return web.json_response({"users": matching}, headers={"Cache-Control": "no-store"})


async def _overview(request: web.Request) -> web.StreamResponse:
    """The page's landing view: counts and recently built users (server/overview.py)."""
    payload = await overview.overview(_engine(request))
    return web.json_response(payload, headers={"Cache-Control": "no-store"})


async def _user_list(request: web.Request) -> web.StreamResponse:
    """`?search=&offset=&limit=`: a page of users whose id contains `search`."""
    query = request.query
    payload = await overview.list_users(
        _engine(request), query.get("search", ""), query.get("offset", ""), query.get("limit", "")
    )
    return web.json_response(payload, headers={"Cache-Control": "no-store"})


async def _item_users(request: web.Request) -> web.StreamResponse:
    """The users whose latest trees cite the item as evidence."""
    item_id = request.match_info["item_id"]
    if not ITEM_ID_PATTERN.fullmatch(item_id):
        return web.json_response({"error": f"{echo(item_id)} is not a valid item id"}, status=400)
    payload = await overview.citing_users(_engine(request), item_id)
    return web.json_response(payload, headers={"Cache-Control": "no-store"})


async def _review(request: web.Request) -> web.StreamResponse:
    engine = _engine(request)
    user_id = request.match_info["user_id"]
    if not USER_ID_PATTERN.fullmatch(user_id):
        return web.json_response({"error": f"{echo(user_id)} is not a valid user id"}, status=400)
    try:
        await engine.events.require_user(user_id)
    except NotFoundError:
        return web.json_response({"error": f"no user {user_id!r}"}, status=404)
    try:
        weights = _level_weights(request.query.get("level_weights", ""))
    except DomainError as error:
        return web.json_response({"error": error.message}, status=400)
    payload = await user_review(engine, user_id, weights)
    return web.json_response(payload, headers={"Cache-Control": "no-store"})


def _level_weights(text: str) -> list[float] | None:
    """`?level_weights=0.2,0.8`: the reviewer's level weights, checked as the API checks them."""
    if not text:
        return None
    try:
        values = [float(part) for part in text.split(",")[:MAX_LEVELS]]
    except ValueError:
        values = [-1.0]
    return level_weights_from_request(values)


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


def _brief(node: InterestNode, nodes: dict[str, InterestNode]) -> dict[str, Any]:
    """A node as a diff names it: with `path`, its ancestors' labels (coarse first) in the
    revision `nodes` holds, so that two "Mystery" nodes of one level can be told apart."""
    path: list[str] = []
    parent = nodes.get(node.parent_id) if node.parent_id else None
    while parent is not None and len(path) < MAX_LEVELS:
        path.insert(0, parent.label)
        parent = nodes.get(parent.parent_id) if parent.parent_id else None
    return {"id": node.node_id, "label": node.label, "level": node.level, "path": path}


def revision_changes(
    diff: TreeDiff, previous: InterestTree, current: InterestTree, items: dict[str, Item]
) -> dict[str, Any]:
    """The stored diff of `current` (taxonomy/trees/diff.py), in terms a reviewer reads: labels
    and item titles rather than ids, looked up in the two revisions it compares."""
    before = {node.node_id: node for node in previous.nodes}
    after = {node.node_id: node for node in current.nodes}

    def common(node_ids: Sequence[str]) -> list[str]:
        return [n for n in node_ids if n in before and n in after]

    return {
        "added": [_brief(after[n], after) for n in diff.added_node_ids if n in after],
        "removed": [_brief(before[n], before) for n in diff.removed_node_ids if n in before],
        "relabeled": [
            {**_brief(after[n], after), "before": before[n].label}
            for n in common(diff.relabeled_node_ids)
        ],
        "reweighted": [
            {**_brief(after[n], after), "before": before[n].weight, "after": after[n].weight}
            for n in common(diff.reweighted_node_ids)
        ],
        "evidence_changed": [
            {
                **_brief(after[n], after),
                "gained": _titled(diff.evidence_gained.get(n, []), items),
                "lost": _titled(diff.evidence_lost.get(n, []), items),
            }
            for n in common(diff.changed_evidence_node_ids)
        ],
        "summary": revision_summary(current.revision, diff),
    }


def _history(
    revisions: Sequence[tuple[InterestTree, TreeDiff]], items: dict[str, Item]
) -> list[dict[str, Any]]:
    """The shown revisions, newest first; `revisions` holds one more where there is one, so
    that the oldest shown can be compared with its predecessor."""
    history = []
    for index, (revision, diff) in enumerate(revisions[:MAX_REVISIONS]):
        previous = revisions[index + 1][0] if index + 1 < len(revisions) else None
        history.append(
            {
                "revision": revision.revision,
                "create_time": revision.create_time.isoformat(),
                "event_count": revision.event_count,
                "model": revision.model,
                "node_count": len(revision.nodes),
                "summary": revision_summary(revision.revision, diff),
                "changes": (
                    revision_changes(diff, previous, revision, items) if previous else None
                ),
                "build_stats": revision.build_stats.model_dump(),
            }
        )
    return history


async def user_review(
    engine: InterestEngine, user_id: str, level_weights: list[float] | None = None
) -> dict[str, Any]:
    """Everything the review page shows for one user, in one JSON object; `level_weights`
    (None: the defaults) shape the recommendations shown."""
    # One more than shown, so that the oldest shown revision can be diffed too.
    try:
        revisions = await engine.trees.list_revisions(user_id, None, MAX_REVISIONS + 1)
    except NotFoundError:
        revisions = []
    if not revisions:
        return {"user": f"users/{user_id}", "tree": None}
    tree = revisions[0][0]
    try:
        result = await engine.recommender.recommend(
            RecommendQuery(user_id, MAX_RECOMMENDATIONS, level_weights=level_weights)
        )
        recommendations_error = ""
    except DomainError as error:
        # The tree is still worth reviewing when recommending fails (say, every item it
        # draws on was deleted).
        result = RecommendResult([], tree.revision, [])
        recommendations_error = error.message
    wanted = {
        item for revision, _ in revisions for n in revision.nodes for item in n.evidence_items
    }
    wanted.update(rec.item_id for rec in result.recommendations)
    items = await engine.catalog.get_items(sorted(wanted))
    applied = result.level_weights or engine.recommender.level_weights(tree.depth, None)
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
                "level_weight": applied[level - 1],
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
        "revisions": _history(revisions, items),
        "more_revisions": len(revisions) > MAX_REVISIONS,
    }
