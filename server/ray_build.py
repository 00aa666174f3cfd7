"""`interest-tree build-trees --engine ray`: rebuilds many users' trees on Ray Data.

The driver reads the user ids from the store and hands them to
`ray.data.from_items(...).map_batches(TreeBuilder, concurrency=N)`. Each `TreeBuilder` actor
opens an engine of its own on the shared PostgreSQL store (its HNSW caches in a scratch
directory of the worker), catches up with every replica's writes (`ReplicaSync`) before each
batch, and builds the batch's trees with `engine.trees.batch_build`, several users in flight,
storing each revision through the store as a serving replica would. Naming requests go to the
OpenAI-compatible endpoint at `--llm-url` through the project's own async naming
(`taxonomy.llm.OpenAIChatModel`, the chat port): the same prompts, limiter, budget and
fallbacks as `BuildInterestTree`, so a tree built on Ray is the tree a replica builds.

PostgreSQL is required: Ray workers may run on other machines, and several processes writing
one SQLite file would each keep index caches that the others' writes never reach.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from server.config import EMBEDDED_MODEL_NAME, Settings, engine_config
from taxonomy.errors import DomainError
from taxonomy.trees.naming import NamingMode

if TYPE_CHECKING:
    from taxonomy.engine import InterestEngine
    from taxonomy.storage.postgres_replica import ReplicaSync

__all__ = [
    "RayBuildError",
    "RayBuildReport",
    "TreeBuilder",
    "build_trees_on_ray",
    "check_settings",
    "run_build_trees",
]

logger = logging.getLogger(__name__)

DEFAULT_BATCH_SIZE = 16


class RayBuildError(Exception):
    """The settings cannot run a Ray build (no shared store, no reachable model)."""


@dataclass(frozen=True)
class RayBuildReport:
    built: int
    failed: dict[str, str]
    """user id → why its build failed (a DomainError's message, or the exception's type)."""
    elapsed_s: float

    @property
    def users_per_s(self) -> float:
        total = self.built + len(self.failed)
        return total / self.elapsed_s if self.elapsed_s > 0 else 0.0


def check_settings(settings: Settings) -> None:
    """Refuses settings a Ray build cannot honour, with a message saying what to pass."""
    if not settings.store_url:
        raise RayBuildError(
            "build-trees --engine ray needs a store every Ray worker shares: pass "
            "--store-url postgresql://USER@HOST/DB (or set INTEREST_TREE_STORE_URL); "
            "a SQLite store is built through its server (--engine server)"
        )
    if (
        settings.naming_mode is not NamingMode.OFF
        and not settings.llm_url
        and settings.embedded_llm
    ):
        raise RayBuildError(
            "build-trees --engine ray names nodes through an OpenAI-compatible endpoint that "
            "every worker reaches: pass --llm-url http://HOST:PORT/v1, or --no-llm to build "
            "data trees (Ray workers start no embedded model)"
        )


async def _open_engine(settings: Settings, data_dir: Path) -> tuple[InterestEngine, ReplicaSync]:
    """An engine on the shared store, configured as `Runtime.create` configures a replica's,
    with its caches in `data_dir`; returns (engine, replica sync)."""
    from server.app import _make_embedder, open_store
    from taxonomy.engine import InterestEngine
    from taxonomy.llm import OpenAIChatModel
    from taxonomy.storage.postgres import PostgresStore
    from taxonomy.storage.postgres_replica import ReplicaSync

    chat = None
    if settings.llm_url and settings.naming_mode is not NamingMode.OFF:
        chat = OpenAIChatModel(
            settings.llm_url,
            settings.llm_model or EMBEDDED_MODEL_NAME,
            api_key=settings.llm_api_key,
            timeout_s=settings.llm_timeout_s,
        )
    embedder = await asyncio.to_thread(_make_embedder, settings)
    store = await asyncio.to_thread(open_store, settings)
    if not isinstance(store, PostgresStore):
        raise RayBuildError("Ray workers need the shared PostgreSQL store (--store-url)")
    config = engine_config(settings, naming=chat is not None)
    engine = InterestEngine(store, data_dir, embedder, chat, config)
    await engine.start()
    replica = ReplicaSync(engine, store, data_dir / "models")
    return engine, replica


class TreeBuilder:
    """A Ray Data actor (a callable class for `map_batches`): one engine, reused batch after
    batch, on an event loop of its own."""

    def __init__(self, settings: Settings) -> None:
        self._scratch = Path(tempfile.mkdtemp(prefix="interest-tree-ray-"))
        self._loop = asyncio.new_event_loop()
        self._engine, self._replica = self._loop.run_until_complete(
            _open_engine(settings, self._scratch)
        )

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        user_ids = [str(user_id) for user_id in batch["user_id"]]
        return self._loop.run_until_complete(self._build(user_ids))

    async def _build(self, user_ids: list[str]) -> dict[str, np.ndarray]:
        # Items, taxonomy and models written by replicas (or other actors) since the last batch.
        await self._replica.catch_up()
        revisions: dict[str, int] = {}
        errors: dict[str, str] = {}
        async for user_id, result in self._engine.trees.batch_build(user_ids):
            if isinstance(result, DomainError):
                errors[user_id] = f"{result.reason}: {result.message}"
            else:
                revisions[user_id] = result.tree.revision
        await self._engine.flush()
        return {
            "user_id": np.array(user_ids, dtype=object),
            "revision": np.array([revisions.get(u, 0) for u in user_ids], dtype=np.int64),
            "error": np.array([errors.get(u, "") for u in user_ids], dtype=object),
        }

    def __del__(self) -> None:
        shutil.rmtree(getattr(self, "_scratch", ""), ignore_errors=True)


def _user_ids(settings: Settings) -> list[str]:
    from server.app import open_store

    store = open_store(settings)
    try:
        return store.user_ids()
    finally:
        close = getattr(store, "close", None)
        if close is not None:
            close()


def build_trees_on_ray(
    settings: Settings,
    users: Sequence[str] = (),
    *,
    concurrency: int = 2,
    batch_size: int = DEFAULT_BATCH_SIZE,
    num_cpus_per_actor: float = 1.0,
) -> RayBuildReport:
    """Builds the trees of `users` (every user with events when empty) on the Ray cluster
    this process is connected to (`ray.init` first), `concurrency` actors at a time."""
    import ray

    check_settings(settings)
    user_ids = [u.removeprefix("users/") for u in users] or _user_ids(settings)
    started = time.perf_counter()
    if not user_ids:
        return RayBuildReport(0, {}, 0.0)
    dataset = ray.data.from_items([{"user_id": user_id} for user_id in user_ids])
    built = dataset.map_batches(
        TreeBuilder,
        fn_constructor_kwargs={"settings": settings},
        compute=ray.data.ActorPoolStrategy(size=concurrency),
        batch_size=batch_size,
        num_cpus=num_cpus_per_actor,
    )
    rows = built.take_all()
    failed = {str(row["user_id"]): str(row["error"]) for row in rows if row["error"]}
    return RayBuildReport(len(rows) - len(failed), failed, time.perf_counter() - started)


def run_build_trees(
    settings: Settings,
    users: Sequence[str],
    *,
    ray_address: str | None,
    concurrency: int,
    batch_size: int,
) -> int:
    """The CLI's entry: connects to Ray (a local instance without an address), builds, prints
    a summary; returns the exit status (0 all built, 1 some failed, 2 cannot run)."""
    try:
        check_settings(settings)
        import ray
    except RayBuildError as error:
        print(f"interest-tree: {error}", file=sys.stderr)
        return 2
    except ImportError:
        print(
            "interest-tree: --engine ray needs Ray Data: pip install 'interest-tree[ray]'",
            file=sys.stderr,
        )
        return 2
    connected = not ray.is_initialized()  # a caller (a test, a notebook) may have connected
    if connected:
        ray.init(address=ray_address, log_to_driver=False)
    try:
        report = build_trees_on_ray(settings, users, concurrency=concurrency, batch_size=batch_size)
    finally:
        if connected:
            ray.shutdown()
    for user_id, why in sorted(report.failed.items()):
        print(f"users/{user_id}: {why}", file=sys.stderr)
    print(
        f"built {report.built} tree(s), {len(report.failed)} failed, in {report.elapsed_s:.1f} s "
        f"({report.users_per_s:.2f} users/s)",
        file=sys.stderr,
    )
    return 1 if report.failed else 0
