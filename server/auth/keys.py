"""API keys: `itk_<key id>_<secret>`, the secret 32 random bytes (256 bits), stored only as
its SHA-256 in `data_dir/auth/keys.sqlite3` and compared with `hmac.compare_digest`.

The key id (8 random bytes, hex) is public: `keys list` shows it and `keys revoke` takes it. A
running server sees keys created or revoked by the CLI (another process) within
`RELOAD_INTERVAL_S`: it re-reads the table when SQLite's `data_version` says it changed.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
import sqlite3
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from server.auth.context import DEFAULT_TENANT, Principal
from server.auth.roles import Role

KEY_PREFIX = "itk"
SECRET_BYTES = 32
RELOAD_INTERVAL_S = 1.0
TENANT_PATTERN = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")
"""Tenant names: lowercase DNS labels, safe as directory names and metric labels."""
_KEY_PATTERN = re.compile(rf"{KEY_PREFIX}_([0-9a-f]{{16}})_([A-Za-z0-9_-]{{43}})")
_SCHEMA = """
CREATE TABLE IF NOT EXISTS api_keys (
    key_id TEXT PRIMARY KEY,
    tenant TEXT NOT NULL,
    role TEXT NOT NULL,
    secret_sha256 BLOB NOT NULL,
    created_at TEXT NOT NULL,
    revoked_at TEXT
);
"""


def keys_path(data_dir: Path) -> Path:
    return data_dir / "auth" / "keys.sqlite3"


def check_tenant(name: str) -> str:
    if not TENANT_PATTERN.fullmatch(name):
        raise ValueError(
            f"tenant {name[:80]!r} is not a lowercase name of letters, digits and '-' (1-63)"
        )
    return name


@dataclass(frozen=True)
class KeyRecord:
    key_id: str
    tenant: str
    role: Role
    created_at: str
    revoked_at: str | None

    @property
    def revoked(self) -> bool:
        return self.revoked_at is not None


def _digest(secret: str) -> bytes:
    return hashlib.sha256(secret.encode()).digest()


class KeyStore:
    """The key table. Thread-safe; `authenticate` is cheap (an in-memory lookup, a hash)."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA synchronous=FULL")
        self._conn.executescript(_SCHEMA)
        self._cache: dict[str, tuple[bytes, KeyRecord]] = {}
        self._data_version = -1
        self._checked = 0.0
        self._reload()

    # Management (the CLI) -------------------------------------------------------------------

    def create(self, tenant: str, role: Role) -> tuple[KeyRecord, str]:
        """A new key for `tenant` with `role`: its record and the key itself, shown once."""
        check_tenant(tenant)
        key_id = secrets.token_hex(8)
        secret = base64.urlsafe_b64encode(secrets.token_bytes(SECRET_BYTES)).decode().rstrip("=")
        created = datetime.now(UTC).isoformat(timespec="seconds")
        with self._lock:
            self._conn.execute(
                "INSERT INTO api_keys (key_id, tenant, role, secret_sha256, created_at) "
                "VALUES (?, ?, ?, ?, ?)",
                (key_id, tenant, role.label, _digest(secret), created),
            )
        self._reload(force=True)
        return KeyRecord(key_id, tenant, role, created, None), f"{KEY_PREFIX}_{key_id}_{secret}"

    def list(self, tenant: str | None = None) -> list[KeyRecord]:
        with self._lock:
            rows = self._conn.execute(
                "SELECT key_id, tenant, role, created_at, revoked_at FROM api_keys "
                "ORDER BY tenant, created_at, key_id"
            ).fetchall()
        records = [KeyRecord(r[0], r[1], Role.parse(r[2]), r[3], r[4]) for r in rows]
        return [r for r in records if tenant is None or r.tenant == tenant]

    def revoke(self, key_id: str) -> bool:
        """Revokes a key by id (or by the whole key); False if no such unrevoked key."""
        matched = _KEY_PATTERN.fullmatch(key_id)
        if matched:
            key_id = matched.group(1)
        revoked = datetime.now(UTC).isoformat(timespec="seconds")
        with self._lock:
            changed = self._conn.execute(
                "UPDATE api_keys SET revoked_at = ? WHERE key_id = ? AND revoked_at IS NULL",
                (revoked, key_id),
            ).rowcount
        self._reload(force=True)
        return changed > 0

    def tenants(self) -> set[str]:
        with self._lock:
            rows = self._conn.execute("SELECT DISTINCT tenant FROM api_keys").fetchall()
        return {row[0] for row in rows} | {DEFAULT_TENANT}

    # Serving --------------------------------------------------------------------------------

    def _reload(self, *, force: bool = False) -> None:
        with self._lock:
            # data_version changes with other connections' commits (the CLI's), not our own.
            version = int(self._conn.execute("PRAGMA data_version").fetchone()[0])
            self._checked = time.monotonic()
            if version == self._data_version and not force:
                return
            rows = self._conn.execute(
                "SELECT key_id, tenant, role, secret_sha256, created_at, revoked_at FROM api_keys"
            ).fetchall()
            self._cache = {
                r[0]: (bytes(r[3]), KeyRecord(r[0], r[1], Role.parse(r[2]), r[4], r[5]))
                for r in rows
            }
            self._data_version = version

    def authenticate(self, key: str) -> Principal | None:
        """The principal of a valid, unrevoked key; None for anything else."""
        matched = _KEY_PATTERN.fullmatch(key)
        if matched is None:
            return None
        if time.monotonic() - self._checked > RELOAD_INTERVAL_S:
            self._reload()
        entry = self._cache.get(matched.group(1))
        # The digest is compared even for an unknown id, so timing says nothing about ids.
        stored, record = entry if entry is not None else (b"\0" * 32, None)
        if not hmac.compare_digest(stored, _digest(matched.group(2))):
            return None
        if record is None or record.revoked:
            return None
        return Principal(record.tenant, record.role, record.key_id)

    def close(self) -> None:
        with self._lock:
            self._conn.close()
