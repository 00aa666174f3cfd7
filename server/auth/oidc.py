"""Optional OIDC access tokens (JWTs, verified with pyjwt) beside API keys, for teams that have
an identity provider: `--oidc-issuer`, `--oidc-audience` and `--oidc-jwks-file`.

The issuer's signing keys come from a JWKS file (the JSON the issuer serves at its `jwks_uri`),
which the operator keeps current (a cron job, a sidecar); the file is re-read when it changes,
at most once per `RELOAD_INTERVAL_S`. Nothing is fetched over the network on the request path.
A token must be signed with RS256, PS256 or ES256 by a key of the file (chosen by `kid`), name
the issuer and the audience, carry `exp`, and name the tenant and the role in its claims
(`tenant` and `role` by default). Anything else is no principal: UNAUTHENTICATED.
"""

from __future__ import annotations

import contextlib
import threading
import time
from pathlib import Path

import jwt

from server.auth.context import Principal
from server.auth.keys import TENANT_PATTERN
from server.auth.roles import Role

ALGORITHMS = ("RS256", "PS256", "ES256")
RELOAD_INTERVAL_S = 1.0
LEEWAY_S = 30


def looks_like_jwt(token: str) -> bool:
    return token.count(".") == 2 and not token.startswith("itk_")


class OidcVerifier:
    def __init__(
        self,
        issuer: str,
        audience: str,
        jwks_file: Path,
        *,
        tenant_claim: str = "tenant",
        role_claim: str = "role",
    ) -> None:
        self._issuer = issuer
        self._audience = audience
        self._jwks_file = jwks_file
        self._tenant_claim = tenant_claim
        self._role_claim = role_claim
        self._lock = threading.Lock()
        self._keys: dict[str, jwt.PyJWK] = {}
        self._stamp: tuple[int, int] | None = None
        self._checked = 0.0
        self._load()  # a missing or broken file fails the start, not the first call

    def _load(self) -> None:
        stat = self._jwks_file.stat()
        stamp = (stat.st_mtime_ns, stat.st_size)
        if stamp == self._stamp:
            return
        keys = jwt.PyJWKSet.from_json(self._jwks_file.read_text()).keys
        self._keys = {key.key_id: key for key in keys if key.key_id}
        self._stamp = stamp

    def _signing_key(self, kid: str) -> jwt.PyJWK | None:
        with self._lock:
            if time.monotonic() - self._checked > RELOAD_INTERVAL_S:
                self._checked = time.monotonic()
                # A missing or broken file keeps the keys last read in service.
                with contextlib.suppress(OSError, jwt.PyJWTError, ValueError):
                    self._load()
            return self._keys.get(kid)

    def authenticate(self, token: str) -> Principal | None:
        try:
            header = jwt.get_unverified_header(token)
            kid = header.get("kid")
            if not isinstance(kid, str) or header.get("alg") not in ALGORITHMS:
                return None
            key = self._signing_key(kid)
            if key is None:
                return None
            claims = jwt.decode(
                token,
                key,
                algorithms=[header["alg"]],
                audience=self._audience,
                issuer=self._issuer,
                leeway=LEEWAY_S,
                options={"require": ["exp", "iss", "aud"]},
            )
        except (jwt.PyJWTError, ValueError, TypeError):
            return None
        tenant = claims.get(self._tenant_claim)
        role = claims.get(self._role_claim)
        if not isinstance(tenant, str) or not TENANT_PATTERN.fullmatch(tenant):
            return None
        if not isinstance(role, str):
            return None
        try:
            parsed = Role.parse(role)
        except ValueError:
            return None
        subject = claims.get("sub")
        return Principal(tenant, parsed, f"oidc:{subject}"[:200] if subject else "oidc")
