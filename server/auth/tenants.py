"""One engine per tenant, each over its own data.

The default tenant (the one unauthenticated loopback mode serves) keeps the layout data_dir
always had; tenant `t` lives in `data_dir/tenants/t/` with the same layout (its SQLite store,
`indexes/`, `models/`). With a PostgreSQL store, tenant `t` has its own schema
(`tenant_schema`) and `data_dir/tenants/t/` for its index files. Nothing is shared between
tenants but the embedder and the chat model, which hold no tenant data. Engines open on a
tenant's first call and stay open.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Awaitable, Callable
from pathlib import Path

from server.auth.context import DEFAULT_TENANT, engine_var
from server.auth.keys import check_tenant
from taxonomy.engine import InterestEngine

EngineFactory = Callable[[str, Path], Awaitable[InterestEngine]]
"""Opens (and starts) the engine of a tenant over its data directory."""
MAX_SCHEMA_CHARS = 63


def tenant_schema(base: str, tenant: str) -> str:
    """The PostgreSQL schema of a tenant: `<base>__t_<tenant>` ('-' as '_'), or a hash of the
    tenant name where that would pass PostgreSQL's 63-character limit (no two tenants share
    one: '_' is not allowed in tenant names, so the mapping is one to one)."""
    name = f"{base}__t_{tenant.replace('-', '_')}"
    if len(name) <= MAX_SCHEMA_CHARS:
        return name
    return f"{base[:30]}__t_{hashlib.sha256(tenant.encode()).hexdigest()[:24]}"


def tenant_dir(data_dir: Path, tenant: str) -> Path:
    if tenant == DEFAULT_TENANT:
        return data_dir
    return data_dir / "tenants" / check_tenant(tenant)


class TenantEngines:
    def __init__(self, data_dir: Path, default: InterestEngine, factory: EngineFactory) -> None:
        self._data_dir = data_dir
        self._factory = factory
        self._engines: dict[str, InterestEngine] = {DEFAULT_TENANT: default}
        self._opening: dict[str, asyncio.Future[InterestEngine]] = {}

    @property
    def default(self) -> InterestEngine:
        return self._engines[DEFAULT_TENANT]

    def current(self) -> InterestEngine:
        """The engine of the call in progress (set by the interceptor), else the default."""
        engine = engine_var.get()
        return engine if engine is not None else self.default

    async def get(self, tenant: str) -> InterestEngine:
        engine = self._engines.get(tenant)
        if engine is not None:
            return engine
        pending = self._opening.get(tenant)
        if pending is None:
            pending = asyncio.ensure_future(
                self._factory(tenant, tenant_dir(self._data_dir, tenant))
            )
            self._opening[tenant] = pending
            try:
                engine = await asyncio.shield(pending)
            finally:
                del self._opening[tenant]
            self._engines[tenant] = engine
            return engine
        return await asyncio.shield(pending)

    def all(self) -> dict[str, InterestEngine]:
        return dict(self._engines)

    async def close(self) -> None:
        """Saves and closes every tenant's engine but the default (its owner closes it)."""
        for tenant, engine in list(self._engines.items()):
            if tenant != DEFAULT_TENANT:
                await engine.close()
                engine.store.close()
                del self._engines[tenant]
