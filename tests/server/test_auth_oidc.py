"""OIDC access tokens beside API keys (server/auth/oidc.py): a token of a key the JWKS file
holds, for the configured issuer and audience, unexpired, with tenant and role claims, is that
tenant's principal; every other token is UNAUTHENTICATED (TOKEN_INVALID)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from pathlib import Path
from typing import Any

import grpc
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from interesttree.v1 import catalog_pb2

from server.auth.oidc import OidcVerifier
from server.auth.roles import Role

from .helpers import expect_code, reason
from .test_auth import bearer, secured_settings, start_secured

ISSUER = "https://id.example.com/"
AUDIENCE = "interest-tree"


def _jwk(key: Any, kid: str) -> dict[str, Any]:
    algorithm = jwt.algorithms.RSAAlgorithm if isinstance(key, rsa.RSAPrivateKey) else None
    if algorithm is None:
        jwk = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(key.public_key()))
    else:
        jwk = json.loads(algorithm.to_jwk(key.public_key()))
    jwk["kid"] = kid
    return dict(jwk)


@pytest.fixture
def signer(tmp_path: Path) -> tuple[rsa.RSAPrivateKey, ec.EllipticCurvePrivateKey, Path]:
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    ec_key = ec.generate_private_key(ec.SECP256R1())
    jwks = tmp_path / "jwks.json"
    jwks.write_text(json.dumps({"keys": [_jwk(rsa_key, "r1"), _jwk(ec_key, "e1")]}))
    return rsa_key, ec_key, jwks


def token(key: Any, kid: str = "r1", alg: str = "RS256", **claims: Any) -> str:
    body = {
        "iss": ISSUER,
        "aud": AUDIENCE,
        "exp": int(time.time()) + 600,
        "sub": "svc-recs",
        "tenant": "acme",
        "role": "writer",
        **claims,
    }
    body = {name: value for name, value in body.items() if value is not None}
    return jwt.encode(body, key, algorithm=alg, headers={"kid": kid})


def forged(alg: str, secret: bytes) -> str:
    """A token pyjwt would refuse to make: `alg` none, or HMAC keyed with public key text."""

    def part(data: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()

    claims = {"iss": ISSUER, "aud": AUDIENCE, "exp": int(time.time()) + 600}
    signing = (
        f"{part({'alg': alg, 'kid': 'r1'})}.{part({**claims, 'tenant': 'acme', 'role': 'admin'})}"
    )
    mac = hmac.new(secret, signing.encode(), hashlib.sha256).digest() if secret else b""
    return f"{signing}.{base64.urlsafe_b64encode(mac).rstrip(b'=').decode()}"


def test_tokens_are_verified(signer: tuple[Any, Any, Path]) -> None:
    rsa_key, ec_key, jwks = signer
    verifier = OidcVerifier(ISSUER, AUDIENCE, jwks)
    good = verifier.authenticate(token(rsa_key))
    assert good is not None
    assert (good.tenant, good.role, good.key_id) == ("acme", Role.WRITER, "oidc:svc-recs")
    assert verifier.authenticate(token(ec_key, kid="e1", alg="ES256", role="admin")) is not None
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    public_pem = jwks.read_text()
    for bad in (
        token(rsa_key, exp=int(time.time()) - 3600),  # expired
        token(rsa_key, exp=None),  # never expires
        token(rsa_key, aud="someone-else"),
        token(rsa_key, iss="https://evil.example.com/"),
        token(rsa_key, tenant="Not A Tenant"),
        token(rsa_key, tenant=None),
        token(rsa_key, role="owner"),
        token(rsa_key, role=None),
        token(other),  # signed by a key the file does not hold, under its kid
        token(rsa_key, kid="unknown"),
        token(ec_key, kid="r1", alg="ES256"),  # the kid of another key
        forged("none", b""),  # unsigned
        forged("HS256", public_pem.encode()),  # the public keys used as an HMAC secret
        "a.b.c",
        "..",
    ):
        assert verifier.authenticate(bad) is None, bad[:60]


def test_a_rotated_jwks_file_is_read_again(
    signer: tuple[Any, Any, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    from server.auth import oidc

    monkeypatch.setattr(oidc, "RELOAD_INTERVAL_S", 0.0)
    rsa_key, _, jwks = signer
    verifier = OidcVerifier(ISSUER, AUDIENCE, jwks)
    fresh = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    assert verifier.authenticate(token(fresh, kid="r2")) is None
    jwks.write_text(
        json.dumps({"keys": [_jwk(fresh, "r2"), _jwk(rsa_key, "r1"), {"kty": "x"}][:2]})
    )
    assert verifier.authenticate(token(fresh, kid="r2")) is not None
    jwks.write_text("not json")
    assert verifier.authenticate(token(fresh, kid="r2")) is not None  # the last good keys


async def test_tokens_and_keys_on_one_server(tmp_path: Path, signer: tuple[Any, Any, Path]) -> None:
    rsa_key, _, jwks = signer
    settings = secured_settings(
        tmp_path / "data", oidc_issuer=ISSUER, oidc_audience=AUDIENCE, oidc_jwks_file=jwks
    )
    running = await start_secured(settings, tenants=("acme",))
    try:
        catalog = running.stubs.catalog
        item = catalog_pb2.Item(name="items/jwt-1", title="By token", categories=["Books"])
        upsert = catalog_pb2.UpsertItemsRequest(items=[item])
        await catalog.UpsertItems(upsert, metadata=bearer(token(rsa_key)))
        # The token's tenant is the key's tenant: one catalog.
        got = await catalog.GetItem(
            catalog_pb2.GetItemRequest(name="items/jwt-1"),
            metadata=bearer(running.keys["acme:reader"]),
        )
        assert got.item.title == "By token"
        error = await expect_code(
            catalog.UpsertItems(upsert, metadata=bearer(token(rsa_key, role="reader"))),
            grpc.StatusCode.PERMISSION_DENIED,
        )
        assert reason(error) == "ROLE_TOO_WEAK"
        error = await expect_code(
            catalog.ListItems(
                catalog_pb2.ListItemsRequest(), metadata=bearer(token(rsa_key, aud="x"))
            ),
            grpc.StatusCode.UNAUTHENTICATED,
        )
        assert reason(error) == "TOKEN_INVALID"
    finally:
        await running.stop()
