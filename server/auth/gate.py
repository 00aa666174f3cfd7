"""The checks every call of our services passes before its handler runs, in this order:
authentication (a Bearer key; or, with authentication off, the default tenant as admin), the
method's role, the tenant's request rate, then the tenant's engine. The interceptor
(server/interceptors.py) and the HTTP port (server/http.py) both call it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from server.auth.context import ANONYMOUS, DEFAULT_TENANT, Principal
from server.auth.keys import KeyStore
from server.auth.oidc import OidcVerifier, looks_like_jwt
from server.auth.quotas import QuotaConfig, Quotas
from server.auth.roles import Role, required_role
from server.auth.tenants import TenantEngines
from server.errors import PermissionDeniedError, UnauthenticatedError
from taxonomy.engine import InterestEngine

AUTHORIZATION = "authorization"
_BEARER = "bearer "
MAX_KEY_CHARS = 8192
"""Longest credential read: API keys are 63 characters, OIDC tokens a few hundred to a few
thousand."""


def bearer_token(value: str | bytes | None) -> str | None:
    """The token of an `authorization: Bearer <token>` value; None if there is none."""
    if value is None:
        return None
    if isinstance(value, bytes):
        value = value.decode("latin-1")
    value = value.strip()
    if len(value) > MAX_KEY_CHARS + len(_BEARER) or not value.lower().startswith(_BEARER):
        return None
    return value[len(_BEARER) :].strip() or None


def metadata_token(metadata: Iterable[tuple[str, str | bytes]] | None) -> str | None:
    for key, value in metadata or ():
        if key == AUTHORIZATION:
            return bearer_token(value)
    return None


@dataclass
class Gate:
    tenants: TenantEngines
    keys: KeyStore | None = None
    require_auth: bool = False
    close_reflection: bool = False
    """Reflection needs a key (any role) too; by default it is open, as health is."""
    quotas: Quotas = field(default_factory=lambda: Quotas(QuotaConfig()))
    oidc: OidcVerifier | None = None
    """Accepts OIDC access tokens too (server/auth/oidc.py)."""

    def authenticate(self, token: str | None) -> Principal:
        """The caller, or UnauthenticatedError (with authentication on)."""
        if not self.require_auth:
            return ANONYMOUS
        if token is None:
            raise UnauthenticatedError(
                "this call needs an API key: send 'authorization: Bearer <key>'",
                reason="API_KEY_MISSING",
            )
        if self.oidc is not None and looks_like_jwt(token):
            principal = self.oidc.authenticate(token)
            if principal is None:
                raise UnauthenticatedError(
                    "the token is not valid (signature, issuer, audience, expiry or claims)",
                    reason="TOKEN_INVALID",
                )
            return principal
        principal = self.keys.authenticate(token) if self.keys is not None else None
        if principal is None:
            raise UnauthenticatedError(
                "the API key is not valid (malformed, unknown or revoked)",
                reason="API_KEY_INVALID",
            )
        return principal

    @staticmethod
    def authorize(principal: Principal, needed: Role | None, what: str) -> None:
        if needed is None:
            raise PermissionDeniedError(f"{what} is open to no role", reason="METHOD_NOT_ALLOWED")
        if principal.role < needed:
            raise PermissionDeniedError(
                f"{what} needs the {needed.label} role; this key is {principal.role.label}",
                reason="ROLE_TOO_WEAK",
            )

    async def admit(self, method: str, principal: Principal) -> InterestEngine:
        """Role, rate, then the tenant's engine for an RPC of `principal`."""
        self.authorize(principal, required_role(method), method.rsplit("/", 1)[-1])
        self.quotas.check_rate(principal.tenant)
        return await self.tenants.get(principal.tenant)

    async def admit_http(self, token: str | None, needed: Role) -> tuple[str, InterestEngine]:
        principal = self.authenticate(token)
        self.authorize(principal, needed, "this page")
        if needed is Role.ADMIN and self.require_auth and principal.tenant != DEFAULT_TENANT:
            # /metrics names every tenant: only the operator (the default tenant) reads it.
            raise PermissionDeniedError(
                "only an admin key of the default tenant reads this", reason="ROLE_TOO_WEAK"
            )
        self.quotas.check_rate(principal.tenant)
        return principal.tenant, await self.tenants.get(principal.tenant)

    async def check_request(self, method: str, request: Any, engine: InterestEngine) -> None:
        await self.quotas.check_request(method, request, engine)
