"""TLS and mutual TLS on the gRPC port and the HTTP port, with a CA this test generates, from
the Python SDK, the TypeScript SDK (Node, against the same server) and plain HTTPS."""

from __future__ import annotations

import ipaddress
import json
import shutil
import ssl
import subprocess
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import grpc
import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from interesttree import AsyncInterestTreeClient, InterestTreeError
from interesttree.v1 import catalog_pb2

from server.app import Runtime
from server.auth.roles import Role
from server.http import HttpServer, create_http_app, start_http

from ..conftest import data_only_settings

REPO = Path(__file__).resolve().parents[2]
TS_DIST = REPO / "clients" / "typescript" / "dist" / "src" / "index.js"


@dataclass(frozen=True)
class Pki:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    other_ca: Path
    """A CA the server does not trust, and a client certificate it signed."""
    stranger_cert: Path
    stranger_key: Path


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _name(common: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])


def _ca(common: str) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = _key()
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(common))
        .issuer_name(_name(common))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .sign(key, hashes.SHA256())
    )
    return cert, key


def _leaf(
    ca: tuple[x509.Certificate, ec.EllipticCurvePrivateKey], common: str, *, server: bool
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = _key()
    now = datetime.now(UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(common))
        .issuer_name(ca[0].subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
    )
    if server:
        builder = builder.add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
    return builder.sign(ca[1], hashes.SHA256()), key


def _write(directory: Path, name: str, cert: x509.Certificate) -> Path:
    path = directory / f"{name}.pem"
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return path


def _write_key(directory: Path, name: str, key: ec.EllipticCurvePrivateKey) -> Path:
    path = directory / f"{name}-key.pem"
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return path


def write_pki(directory: Path) -> Pki:
    """A throwaway CA, a server certificate for localhost and 127.0.0.1, a client certificate,
    and a client certificate of a CA nobody trusts, as PEM files in `directory`."""
    ca = _ca("interest-tree test CA")
    other = _ca("a CA nobody trusts")
    server_cert, server_key = _leaf(ca, "localhost", server=True)
    client_cert, client_key = _leaf(ca, "backend", server=False)
    stranger_cert, stranger_key = _leaf(other, "stranger", server=False)
    return Pki(
        ca=_write(directory, "ca", ca[0]),
        server_cert=_write(directory, "server", server_cert),
        server_key=_write_key(directory, "server", server_key),
        client_cert=_write(directory, "client", client_cert),
        client_key=_write_key(directory, "client", client_key),
        other_ca=_write(directory, "other-ca", other[0]),
        stranger_cert=_write(directory, "stranger", stranger_cert),
        stranger_key=_write_key(directory, "stranger", stranger_key),
    )


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return write_pki(tmp_path_factory.mktemp("pki"))


@dataclass
class TlsServer:
    runtime: Runtime
    server: grpc.aio.Server
    port: int
    http: HttpServer
    key: str

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def stop(self) -> None:
        await self.http.stop()
        await self.server.stop(1)
        await self.runtime.close()


async def start_tls(data_dir: Path, pki: Pki, *, mutual: bool) -> TlsServer:
    settings = data_only_settings(data_dir).model_copy(
        update={
            "require_auth": True,
            "tls_cert": pki.server_cert,
            "tls_key": pki.server_key,
            "tls_client_ca": pki.ca if mutual else None,
        }
    )
    runtime = await Runtime.create(settings)
    assert runtime.keys is not None and runtime.tls is not None
    _, key = runtime.keys.create("acme", Role.ADMIN)
    server, port = await runtime.start_server("127.0.0.1:0")
    await runtime.start_background()
    http = await start_http(
        create_http_app(runtime.engine, runtime.metrics, None, runtime.gate),
        "127.0.0.1",
        0,
        ssl_context=runtime.tls.ssl_context(),
    )
    return TlsServer(runtime, server, port, http, key)


@pytest.fixture(scope="module")
async def tls_server(
    tmp_path_factory: pytest.TempPathFactory, pki: Pki
) -> AsyncIterator[TlsServer]:
    running = await start_tls(tmp_path_factory.mktemp("tls") / "data", pki, mutual=False)
    yield running
    await running.stop()


@pytest.fixture(scope="module")
async def mtls_server(
    tmp_path_factory: pytest.TempPathFactory, pki: Pki
) -> AsyncIterator[TlsServer]:
    running = await start_tls(tmp_path_factory.mktemp("mtls") / "data", pki, mutual=True)
    yield running
    await running.stop()


ITEM = catalog_pb2.Item(name="items/tls-1", title="Over TLS", categories=["Books"])


async def test_python_sdk_over_tls(tls_server: TlsServer, pki: Pki) -> None:
    async with AsyncInterestTreeClient(
        tls_server.target, root_certificates=pki.ca.read_bytes(), api_key=tls_server.key
    ) as client:
        await client.upsert_items([ITEM])
        assert (await client.get_item("items/tls-1")).title == "Over TLS"
    # An insecure channel, or one that trusts another CA, gets nowhere.
    for roots in (None, pki.other_ca.read_bytes()):
        async with AsyncInterestTreeClient(
            tls_server.target, api_key=tls_server.key, root_certificates=roots
        ) as client:
            with pytest.raises(InterestTreeError) as raised:
                await client.get_item("items/tls-1", timeout=5)
            assert raised.value.code == grpc.StatusCode.UNAVAILABLE


async def test_python_sdk_over_mutual_tls(mtls_server: TlsServer, pki: Pki) -> None:
    ca = pki.ca.read_bytes()
    async with AsyncInterestTreeClient(
        mtls_server.target,
        root_certificates=ca,
        private_key=pki.client_key.read_bytes(),
        certificate_chain=pki.client_cert.read_bytes(),
        api_key=mtls_server.key,
    ) as client:
        await client.upsert_items([ITEM])
        assert (await client.get_item("items/tls-1")).name == "items/tls-1"
    # No client certificate, or one from a CA the server does not trust: no connection.
    for key, chain in ((None, None), (pki.stranger_key, pki.stranger_cert)):
        async with AsyncInterestTreeClient(
            mtls_server.target,
            root_certificates=ca,
            api_key=mtls_server.key,
            private_key=key.read_bytes() if key else None,
            certificate_chain=chain.read_bytes() if chain else None,
        ) as client:
            with pytest.raises(InterestTreeError) as raised:
                await client.get_item("items/tls-1", timeout=5)
            assert raised.value.code == grpc.StatusCode.UNAVAILABLE


async def test_https_and_mutual_https(
    tls_server: TlsServer, mtls_server: TlsServer, pki: Pki
) -> None:
    trust = ssl.create_default_context(cafile=str(pki.ca))
    headers = {"Authorization": f"Bearer {tls_server.key}"}
    async with httpx.AsyncClient(verify=trust) as client:
        answer = await client.get(
            f"https://127.0.0.1:{tls_server.http.port}/api/users", headers=headers
        )
        assert answer.status_code == 200
    async with httpx.AsyncClient() as client:
        with pytest.raises(httpx.ConnectError):
            await client.get(f"https://127.0.0.1:{tls_server.http.port}/api/users")
    mutual = ssl.create_default_context(cafile=str(pki.ca))
    mutual.load_cert_chain(pki.client_cert, pki.client_key)
    url = f"https://127.0.0.1:{mtls_server.http.port}/api/users"
    headers = {"Authorization": f"Bearer {mtls_server.key}"}
    async with httpx.AsyncClient(verify=mutual) as client:
        assert (await client.get(url, headers=headers)).status_code == 200
    async with httpx.AsyncClient(verify=trust) as client:
        with pytest.raises((httpx.ConnectError, httpx.ReadError, httpx.RemoteProtocolError)):
            await client.get(url, headers=headers)


NODE_SCRIPT = """
import { readFileSync } from "node:fs";
const { InterestTreeClient } = await import(process.env.SDK);
const pem = (name) => readFileSync(process.env[name]);
const result = {};
for (const [label, tls] of [
  ["mutual", { ca: pem("CA"), cert: pem("CERT"), key: pem("KEY") }],
  ["no-client-cert", { ca: pem("CA") }],
]) {
  const client = new InterestTreeClient(process.env.URL, { apiKey: process.env.API_KEY, tls });
  try {
    const item = await client.getItem("items/tls-1", { timeoutMs: 5000 });
    result[label] = item.title;
  } catch (error) {
    result[label] = "error " + error.code;
  } finally {
    client.close();
  }
}
const anonymous = new InterestTreeClient(process.env.URL, {
  tls: { ca: pem("CA"), cert: pem("CERT"), key: pem("KEY") },
});
try {
  await anonymous.getItem("items/tls-1", { timeoutMs: 5000 });
} catch (error) {
  result["no-key"] = error.reason;
} finally {
  anonymous.close();
}
console.log(JSON.stringify(result));
"""


def _built_ts_sdk() -> Path:
    """The TypeScript SDK, compiled from the current sources."""
    tsc = REPO / "clients" / "typescript" / "node_modules" / ".bin" / "tsc"
    assert shutil.which("node") and tsc.exists(), "make sdk-ts installs the TypeScript SDK"
    subprocess.run([str(tsc), "-p", "tsconfig.json"], cwd=tsc.parents[2], check=True, timeout=300)
    return TS_DIST


async def test_typescript_sdk_over_mutual_tls(mtls_server: TlsServer, pki: Pki) -> None:
    async with AsyncInterestTreeClient(
        mtls_server.target,
        root_certificates=pki.ca.read_bytes(),
        private_key=pki.client_key.read_bytes(),
        certificate_chain=pki.client_cert.read_bytes(),
        api_key=mtls_server.key,
    ) as client:
        await client.upsert_items([ITEM])
    sdk = _built_ts_sdk()
    env = {
        "PATH": "/usr/bin:/bin:/usr/local/bin",
        "SDK": sdk.as_uri(),
        "URL": f"https://127.0.0.1:{mtls_server.port}",
        "CA": str(pki.ca),
        "CERT": str(pki.client_cert),
        "KEY": str(pki.client_key),
        "API_KEY": mtls_server.key,
    }
    process = await _run_node(env)
    assert process["mutual"] == "Over TLS"
    assert process["no-client-cert"].startswith("error")
    assert process["no-key"] == "API_KEY_MISSING"


async def _run_node(env: dict[str, str]) -> dict[str, str]:
    import asyncio

    node = shutil.which("node")
    assert node is not None
    proc = await asyncio.create_subprocess_exec(
        node,
        "--input-type=module",
        "-e",
        NODE_SCRIPT,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout=120)
    assert proc.returncode == 0, err.decode()
    parsed: dict[str, str] = json.loads(out.decode().strip().splitlines()[-1])
    return parsed
