"""Authentication and roles (server/auth/): the key store, the roles table, the CLI, and the
cross-tenant matrix: every RPC and HTTP route with no key, a revoked key, each role, and the
other tenant's key on this tenant's resource names, each cell's code asserted."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from interesttree.v1 import (
    admin_pb2,
    catalog_pb2,
    interest_pb2,
    recommendation_pb2,
)

from server import cli
from server.app import ExposureError, Runtime, check_exposure
from server.auth import keys as keys_module
from server.auth.gate import bearer_token
from server.auth.keys import KeyStore, keys_path
from server.auth.roles import METHOD_ROLES, Role
from server.config import Settings
from server.demo import sample_requests
from server.errors import ERROR_DOMAIN
from server.http import HttpServer, create_http_app, start_http
from server.servicers import SERVICE_NAMES

from ..conftest import Stubs, data_only_settings, make_stubs
from .helpers import detail, reason
from .test_api import START

Metadata = tuple[tuple[str, str], ...]


def bearer(key: str) -> Metadata:
    return (("authorization", f"Bearer {key}"),)


@dataclass
class Secured:
    """A server with authentication on, its HTTP port, and keys of two tenants."""

    runtime: Runtime
    server: grpc.aio.Server
    port: int
    http: HttpServer
    stubs: Stubs
    keys: dict[str, str]

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.http.port}"

    async def stop(self) -> None:
        await self.stubs.channel.close()
        await self.http.stop()
        await self.server.stop(1)
        await self.runtime.close()


async def start_secured(
    settings: Settings, tenants: tuple[str, ...] = ("acme", "rival")
) -> Secured:
    runtime = await Runtime.create(settings)
    assert runtime.keys is not None
    keys: dict[str, str] = {}
    for tenant in tenants:
        for role in Role:
            keys[f"{tenant}:{role.label}"] = runtime.keys.create(tenant, role)[1]
    record, revoked = runtime.keys.create(tenants[0], Role.ADMIN)
    runtime.keys.revoke(record.key_id)
    keys["revoked"] = revoked
    server, port = await runtime.start_server("127.0.0.1:0")
    await runtime.start_background()
    http = await start_http(
        create_http_app(runtime.engine, runtime.metrics, runtime.llm_backend, runtime.gate),
        "127.0.0.1",
        0,
    )
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    return Secured(runtime, server, port, http, make_stubs(channel), keys)


def secured_settings(data_dir: Path, **overrides: Any) -> Settings:
    return data_only_settings(data_dir).model_copy(update={"require_auth": True, **overrides})


async def load_tenant(stubs: Stubs, key: str) -> None:
    """The shipped sample, through a writer's key, and a tree for alice."""
    items, events = sample_requests(START)
    await stubs.catalog.UpsertItems(items, metadata=bearer(key))
    await stubs.interests.RecordEvents(events, metadata=bearer(key))
    await stubs.interests.BuildInterestTree(
        interest_pb2.BuildInterestTreeRequest(user="users/alice"), metadata=bearer(key)
    )


@pytest.fixture(scope="module")
async def secured(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Secured]:
    running = await start_secured(secured_settings(tmp_path_factory.mktemp("auth") / "data"))
    try:
        await load_tenant(running.stubs, running.keys["acme:writer"])
        yield running
    finally:
        await running.stop()


# The key store -------------------------------------------------------------------------------


def test_keys_are_high_entropy_stored_hashed_and_revocable(tmp_path: Path) -> None:
    store = KeyStore(keys_path(tmp_path))
    record, key = store.create("acme", Role.WRITER)
    secret = key[len("itk_0123456789abcdef_") :]
    assert len(secret) == 43  # 32 random bytes, base64url
    principal = store.authenticate(key)
    assert principal is not None
    assert (principal.tenant, principal.role, principal.key_id) == (
        "acme",
        Role.WRITER,
        record.key_id,
    )
    store.close()
    stored = b"".join(path.read_bytes() for path in (tmp_path / "auth").iterdir())
    assert secret.encode() not in stored
    assert hashlib.sha256(secret.encode()).digest() in stored

    store = KeyStore(keys_path(tmp_path))
    assert store.authenticate(key[:-1] + ("A" if key[-1] != "A" else "B")) is None
    assert store.authenticate(key + "x") is None
    assert store.authenticate("") is None
    assert store.revoke(record.key_id)
    assert not store.revoke(record.key_id)
    assert store.authenticate(key) is None
    assert [r.revoked for r in store.list()] == [True]
    store.close()


def test_a_running_server_sees_keys_another_process_revokes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(keys_module, "RELOAD_INTERVAL_S", 0.0)
    serving = KeyStore(keys_path(tmp_path))
    cli_side = KeyStore(keys_path(tmp_path))
    record, key = cli_side.create("acme", Role.READER)
    assert serving.authenticate(key) is not None
    cli_side.revoke(record.key_id)
    assert serving.authenticate(key) is None
    serving.close()
    cli_side.close()


def test_tenant_names_are_checked(tmp_path: Path) -> None:
    store = KeyStore(keys_path(tmp_path))
    for bad in ("", "Acme", "../etc", "a" * 64, "-x", "x y"):
        with pytest.raises(ValueError, match="tenant"):
            store.create(bad, Role.READER)
    store.close()


def test_bearer_token_parsing() -> None:
    assert bearer_token("Bearer abc") == "abc"
    assert bearer_token("bearer  abc ") == "abc"
    assert bearer_token("Basic abc") is None
    assert bearer_token("Bearer ") is None
    assert bearer_token(None) is None
    assert bearer_token("Bearer " + "x" * 10_000) is None


def test_the_keys_cli_creates_lists_and_revokes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = str(tmp_path)
    assert (
        cli.main(["keys", "create", "--data-dir", data, "--tenant", "acme", "--role", "admin"]) == 0
    )
    key = capsys.readouterr().out.strip().splitlines()[-1]
    assert key.startswith("itk_")
    assert cli.main(["keys", "list", "--data-dir", data]) == 0
    listed = capsys.readouterr().out
    key_id = key[4:20]
    assert key_id in listed and "acme" in listed and "admin" in listed and "active" in listed
    assert key[21:] not in listed
    assert cli.main(["keys", "revoke", "--data-dir", data, key_id]) == 0
    assert cli.main(["keys", "revoke", "--data-dir", data, key_id]) == 1
    assert cli.main(["keys", "list", "--data-dir", data]) == 0
    assert "revoked" in capsys.readouterr().out
    assert (
        cli.main(["keys", "create", "--data-dir", data, "--tenant", "Bad!", "--role", "reader"])
        == 2
    )


def test_start_up_refuses_a_public_address_without_auth(tmp_path: Path) -> None:
    base = data_only_settings(tmp_path)
    check_exposure(base)  # loopback: the quickstart needs no key
    for host in ("0.0.0.0", "10.1.2.3", "::", "example.com"):
        with pytest.raises(ExposureError, match="--require-auth"):
            check_exposure(base.model_copy(update={"host": host}))
        check_exposure(base.model_copy(update={"host": host, "require_auth": True}))
        check_exposure(base.model_copy(update={"host": host, "insecure": True}))
    with pytest.raises(ExposureError):
        check_exposure(base.model_copy(update={"http_port": 0, "http_host": "0.0.0.0"}))
    with pytest.raises(ExposureError, match="tls"):
        check_exposure(base.model_copy(update={"tls_cert": tmp_path / "cert.pem"}))
    assert cli.main(["serve", "--host", "0.0.0.0", "--data-dir", str(tmp_path), "--no-llm"]) == 2


# The roles table -----------------------------------------------------------------------------


def all_methods() -> set[str]:
    modules = (catalog_pb2, interest_pb2, recommendation_pb2, admin_pb2)
    methods: set[str] = set()
    for module in modules:
        for service in module.DESCRIPTOR.services_by_name.values():
            assert service.full_name in SERVICE_NAMES
            methods.update(f"/{service.full_name}/{m.name}" for m in service.methods)
    return methods


def test_every_method_of_the_service_descriptors_has_a_role() -> None:
    assert set(METHOD_ROLES) == all_methods()


# The matrix ----------------------------------------------------------------------------------

Call = Callable[[Stubs, Metadata], Awaitable[Any]]


async def _drain(stream: Any) -> list[Any]:
    return [response async for response in stream]


@dataclass(frozen=True)
class Cell:
    method: str
    call: Call
    cross_tenant: grpc.StatusCode
    """What the other tenant's admin key gets on acme's resource names."""


def _cells() -> list[Cell]:
    c, i, r, a = (
        "/interesttree.v1.CatalogService/",
        "/interesttree.v1.InterestService/",
        "/interesttree.v1.RecommendationService/",
        "/interesttree.v1.AdminService/",
    )
    ok, missing = grpc.StatusCode.OK, grpc.StatusCode.NOT_FOUND
    item = catalog_pb2.Item(name="items/matrix-item", title="Matrix", categories=["Books"])
    return [
        Cell(
            c + "GetItem",
            lambda s, m: s.catalog.GetItem(
                catalog_pb2.GetItemRequest(name="items/time-machine"), metadata=m
            ),
            missing,
        ),
        Cell(
            c + "ListItems",
            lambda s, m: s.catalog.ListItems(catalog_pb2.ListItemsRequest(), metadata=m),
            ok,
        ),
        Cell(
            c + "UpsertItems",
            lambda s, m: s.catalog.UpsertItems(
                catalog_pb2.UpsertItemsRequest(items=[item]), metadata=m
            ),
            ok,
        ),
        Cell(
            c + "DeleteItems",
            lambda s, m: s.catalog.DeleteItems(
                catalog_pb2.DeleteItemsRequest(names=["items/matrix-item"], allow_missing=True),
                metadata=m,
            ),
            ok,
        ),
        Cell(
            i + "RecordEvents",
            lambda s, m: s.interests.RecordEvents(
                _events("users/alice", "time-machine"), metadata=m
            ),
            grpc.StatusCode.INVALID_ARGUMENT,
        ),
        Cell(
            i + "BuildInterestTree",
            lambda s, m: s.interests.BuildInterestTree(
                interest_pb2.BuildInterestTreeRequest(user="users/bob"), metadata=m
            ),
            missing,
        ),
        Cell(
            i + "GetInterestTree",
            lambda s, m: s.interests.GetInterestTree(
                interest_pb2.GetInterestTreeRequest(name="users/alice/interestTree"), metadata=m
            ),
            missing,
        ),
        Cell(
            i + "ExplainInterests",
            lambda s, m: s.interests.ExplainInterests(
                interest_pb2.ExplainInterestsRequest(user="users/alice"), metadata=m
            ),
            missing,
        ),
        Cell(
            i + "ListInterestTreeRevisions",
            lambda s, m: s.interests.ListInterestTreeRevisions(
                interest_pb2.ListInterestTreeRevisionsRequest(name="users/alice/interestTree"),
                metadata=m,
            ),
            missing,
        ),
        Cell(
            i + "BatchBuildInterestTrees",
            lambda s, m: _drain(
                s.interests.BatchBuildInterestTrees(
                    interest_pb2.BatchBuildInterestTreesRequest(users=["users/carol"]), metadata=m
                )
            ),
            ok,  # streamed: each user's result carries its own error
        ),
        Cell(
            i + "ListTaxonomyNodes",
            lambda s, m: s.interests.ListTaxonomyNodes(
                interest_pb2.ListTaxonomyNodesRequest(), metadata=m
            ),
            ok,
        ),
        Cell(
            i + "DeleteUser",
            lambda s, m: s.interests.DeleteUser(
                interest_pb2.DeleteUserRequest(name="users/nobody"), metadata=m
            ),
            ok,
        ),
        Cell(
            r + "Recommend",
            lambda s, m: s.recommender.Recommend(
                recommendation_pb2.RecommendRequest(user="users/alice"), metadata=m
            ),
            missing,
        ),
        Cell(
            r + "RecommendByInterest",
            lambda s, m: s.recommender.RecommendByInterest(
                recommendation_pb2.RecommendByInterestRequest(user="users/alice"), metadata=m
            ),
            missing,
        ),
        Cell(
            r + "ListSimilarItems",
            lambda s, m: s.recommender.ListSimilarItems(
                recommendation_pb2.ListSimilarItemsRequest(item="items/time-machine"), metadata=m
            ),
            missing,
        ),
        Cell(
            a + "RefreshModels",
            lambda s, m: s.admin.RefreshModels(admin_pb2.RefreshModelsRequest(), metadata=m),
            ok,
        ),
    ]


def _events(user: str, item: str) -> interest_pb2.RecordEventsRequest:
    request = interest_pb2.RecordEventsRequest()
    event = request.events.add(user=user, item=f"items/{item}", type=interest_pb2.EVENT_TYPE_LIKE)
    event.event_time.FromDatetime(START)
    return request


CELLS = _cells()


def test_the_matrix_covers_every_method() -> None:
    assert {cell.method for cell in CELLS} == all_methods()


async def code_of(call: Awaitable[Any]) -> tuple[grpc.StatusCode, grpc.aio.AioRpcError | None]:
    try:
        await call
    except grpc.aio.AioRpcError as error:
        return error.code(), error
    return grpc.StatusCode.OK, None


@pytest.mark.parametrize("cell", CELLS, ids=lambda cell: cell.method.rsplit("/", 1)[-1])
async def test_matrix(secured: Secured, cell: Cell) -> None:
    stubs = secured.stubs
    needed = METHOD_ROLES[cell.method]
    for credentials, expected_reason in (
        ((), "API_KEY_MISSING"),
        (bearer(secured.keys["revoked"]), "API_KEY_INVALID"),
        (bearer("itk_nope"), "API_KEY_INVALID"),
    ):
        code, error = await code_of(cell.call(stubs, credentials))
        assert code == grpc.StatusCode.UNAUTHENTICATED, (cell.method, credentials, code)
        assert error is not None and reason(error) == expected_reason
        info = detail(error, error_details_pb2.ErrorInfo)
        assert info.domain == ERROR_DOMAIN
    for role in Role:
        code, error = await code_of(cell.call(stubs, bearer(secured.keys[f"acme:{role.label}"])))
        if role < needed:
            assert code == grpc.StatusCode.PERMISSION_DENIED, (cell.method, role, code)
            assert error is not None and reason(error) == "ROLE_TOO_WEAK"
        else:
            assert code == grpc.StatusCode.OK, (cell.method, role, code, error and error.details())
    code, error = await code_of(cell.call(stubs, bearer(secured.keys["rival:admin"])))
    assert code == cell.cross_tenant, (cell.method, code, error and error.details())


async def test_the_other_tenant_sees_none_of_acme(secured: Secured) -> None:
    rival = bearer(secured.keys["rival:admin"])
    listed = await secured.stubs.catalog.ListItems(catalog_pb2.ListItemsRequest(), metadata=rival)
    assert [item.name for item in listed.items] in ([], ["items/matrix-item"])
    nodes = await secured.stubs.interests.ListTaxonomyNodes(
        interest_pb2.ListTaxonomyNodesRequest(), metadata=rival
    )
    assert list(nodes.taxonomy_nodes) == []
    acme = bearer(secured.keys["acme:reader"])
    tree = await secured.stubs.interests.GetInterestTree(
        interest_pb2.GetInterestTreeRequest(name="users/alice/interestTree"), metadata=acme
    )
    assert tree.tree.nodes


async def test_hostile_authorization_values_are_unauthenticated_never_internal(
    secured: Secured,
) -> None:
    request = catalog_pb2.ListItemsRequest()
    for value in (
        "Bearer",
        "Bearer ",
        "Basic dXNlcjpwYXNz",
        "Bearer " + "A" * 8000,
        "Bearer itk_0123456789abcdef_" + "A" * 43,
        "Bearer itk_0123456789abcdef_" + "A" * 42 + "%",
        "bearer  itk_x",
        "Bearer ../../etc/passwd",
    ):
        code, _ = await code_of(
            secured.stubs.catalog.ListItems(request, metadata=(("authorization", value),))
        )
        assert code == grpc.StatusCode.UNAUTHENTICATED, value[:40]
    # A malformed body from an unauthenticated caller: authentication comes first.
    raw: grpc.aio.UnaryUnaryMultiCallable[bytes, bytes] = secured.stubs.channel.unary_unary(
        "/interesttree.v1.CatalogService/GetItem"
    )
    code, _ = await code_of(raw(b"\xff\xff\xff"))
    assert code == grpc.StatusCode.UNAUTHENTICATED


async def test_health_and_reflection_stay_open(secured: Secured) -> None:
    health = health_pb2_grpc.HealthStub(secured.stubs.channel)
    answer = await health.Check(health_pb2.HealthCheckRequest(service=""))
    assert answer.status == health_pb2.HealthCheckResponse.SERVING
    assert "interesttree.v1.CatalogService" in await list_services(secured.stubs.channel, ())


async def list_services(channel: grpc.aio.Channel, metadata: Metadata) -> list[str]:
    stub = reflection_pb2_grpc.ServerReflectionStub(channel)
    responses = stub.ServerReflectionInfo(
        iter([reflection_pb2.ServerReflectionRequest(list_services="")]), metadata=metadata
    )
    names: list[str] = []
    async for response in responses:
        names.extend(s.name for s in response.list_services_response.service)
    return names


async def test_a_flag_closes_reflection(tmp_path: Path) -> None:
    running = await start_secured(
        secured_settings(tmp_path / "data", close_reflection=True), tenants=("acme",)
    )
    try:
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await list_services(running.stubs.channel, ())
        assert raised.value.code() == grpc.StatusCode.UNAUTHENTICATED
        names = await list_services(running.stubs.channel, bearer(running.keys["acme:reader"]))
        assert "interesttree.v1.InterestService" in names
        health = health_pb2_grpc.HealthStub(running.stubs.channel)
        await health.Check(health_pb2.HealthCheckRequest(service=""))
    finally:
        await running.stop()


# HTTP ----------------------------------------------------------------------------------------


async def test_http_routes_under_the_same_rules(secured: Secured) -> None:
    keys = secured.keys
    routes = {"/api/users": 200, "/api/users/alice": 200, "/metrics": 200}
    async with httpx.AsyncClient(base_url=secured.base_url) as client:
        page = await client.get("/")
        assert page.status_code == 200  # static, no data
        for route in routes:
            assert (await client.get(route)).status_code == 401
            revoked = {"Authorization": f"Bearer {keys['revoked']}"}
            assert (await client.get(route, headers=revoked)).status_code == 401
        for role in Role:
            headers = {"Authorization": f"Bearer {keys[f'acme:{role.label}']}"}
            users = await client.get("/api/users", headers=headers)
            assert users.status_code == 200 and "alice" in users.json()["users"]
            assert (await client.get("/api/users/alice", headers=headers)).status_code == 200
            # /metrics names every tenant: only the default tenant's admin (the operator).
            assert (await client.get("/metrics", headers=headers)).status_code == 403
        rival = {"Authorization": f"Bearer {keys['rival:admin']}"}
        assert (await client.get("/api/users", headers=rival)).json()["users"] == []
        assert (await client.get("/api/users/alice", headers=rival)).status_code == 404
    assert secured.runtime.keys is not None
    _, operator = secured.runtime.keys.create("default", Role.ADMIN)
    async with httpx.AsyncClient(base_url=secured.base_url) as client:
        scraped = await client.get("/metrics", headers={"Authorization": f"Bearer {operator}"})
    assert scraped.status_code == 200
    upserts = 'code="OK",method="/interesttree.v1.CatalogService/UpsertItems"'
    assert f'interesttree_tenant_rpcs_total{{{upserts},tenant="acme"}}' in scraped.text
    assert 'tenant="-"' in scraped.text
