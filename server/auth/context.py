"""The authenticated caller of the current call, as context variables.

The interceptor (server/interceptors.py) sets them around each call; servicers read the tenant's
engine through `current_engine`, so the servicers themselves know nothing about tenants.
"""

from __future__ import annotations

import contextvars
from dataclasses import dataclass

from server.auth.roles import Role
from taxonomy.engine import InterestEngine

DEFAULT_TENANT = "default"


@dataclass(frozen=True)
class Principal:
    """Who is calling: a key's id, its tenant and its role (`key_id` "" when unauthenticated)."""

    tenant: str
    role: Role
    key_id: str = ""


ANONYMOUS = Principal(DEFAULT_TENANT, Role.ADMIN)
"""The caller when authentication is off (the loopback quickstart): the default tenant."""

tenant_var: contextvars.ContextVar[str] = contextvars.ContextVar("tenant", default=DEFAULT_TENANT)
engine_var: contextvars.ContextVar[InterestEngine | None] = contextvars.ContextVar(
    "engine", default=None
)
