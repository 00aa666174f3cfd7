"""Recommend latency while RefreshModels trains: idle against during, child process against the
old in-process training.

Starts a real server in its own process (`serve` below: `Runtime` and `create_server`, data-only
trees, SQLite), loads a synthetic catalog of `--items` items with caller vectors (so loading
embeds nothing) in `--genres` genres, and `--users` users with `--events-per-user` events each
(two genres a user, Zipf popularity within a genre), through `interest-tree import`'s own
code (rows made in memory, bench/loading.py), then trains once. Then, for each training
mode and each concurrency in `--concurrency`, against `--probe-users` users whose trees are
built before timing:

- idle: Recommend for `--idle-s` seconds, no refresh running;
- during: a few new events, then RefreshModels; Recommend runs from the call until it returns.
  The server logs each refresh's phases (train_s in the child or worker thread, then index_s:
  load and HNSW build, taxonomy_s: catalog-taxonomy rebuild, flush_s); "train" and "after"
  split the calls by whether they started in the training phase or after it.

Ratios are during p99 over idle p99 of the same mode and concurrency. The load generator runs
in this process, the server in another, so the server's GIL is the server's own.

    .venv/bin/python -m bench.refresh_load [--items 20000] [--users 10000] [--modes child,thread]
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import logging
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import grpc
import numpy as np
from interesttree.v1 import (
    admin_pb2,
    admin_pb2_grpc,
    catalog_pb2_grpc,
    interest_pb2_grpc,
    recommendation_pb2,
    recommendation_pb2_grpc,
)

from bench.loading import client_for, import_memory

START = datetime(2024, 1, 1, tzinfo=UTC)
PHASES = re.compile(r"models refreshed: (.*)$")


# The server ---------------------------------------------------------------------------------


async def _serve(data_dir: Path, port_file: Path, in_process: bool, rerank_max_items: int) -> None:
    import server.app
    from server.app import Runtime, create_server
    from server.config import Settings
    from server.config import engine_config as configure
    from taxonomy.engine import EngineConfig
    from taxonomy.recommendation.training import CollaborativeConfig
    from taxonomy.trees.naming import NamingMode

    def engine_config(settings: Settings, *, naming: bool) -> EngineConfig:
        # The default re-ranker covers 10,000 items: a dense solve of minutes and ~4 GB on a
        # 2-core machine. Fewer keeps a run short; training stays as GIL-heavy as before.
        base = configure(settings, naming=naming)
        collaborative = CollaborativeConfig(rerank_max_items=rerank_max_items)
        return dataclasses.replace(base, collaborative=collaborative)

    vars(server.app)["engine_config"] = engine_config  # what Runtime.create calls
    settings = Settings(
        data_dir=data_dir,
        embedded_llm=False,
        naming_mode=NamingMode.OFF,
        port=0,
        model_refresh_interval_s=10**6,  # only the bench's RefreshModels calls train
    )
    runtime = await Runtime.create(settings)
    runtime.engine.refresher.train_in_process = in_process
    grpc_server, port = create_server("127.0.0.1:0", runtime.engine, runtime.health)
    await grpc_server.start()
    await runtime.start_background()
    info = json.dumps({"port": port, "dim": runtime.engine.embedder.dim})
    await asyncio.to_thread(port_file.write_text, info)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    try:
        await stop.wait()
    finally:
        await grpc_server.stop(1)
        await runtime.close()


class Server:
    def __init__(self, data_dir: Path, in_process: bool, rerank_max_items: int) -> None:
        self.log = data_dir.parent / f"server-{'thread' if in_process else 'child'}.log"
        port_file = data_dir.parent / "port.json"
        port_file.unlink(missing_ok=True)
        command = [sys.executable, "-m", "bench.refresh_load", "serve", str(data_dir)]
        command += [str(port_file), "--rerank-max-items", str(rerank_max_items)]
        if in_process:
            command.append("--in-process")
        self._log_handle = self.log.open("w")
        self.process = subprocess.Popen(command, stdout=self._log_handle, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 300
        while not port_file.exists() or not port_file.read_text():
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the server did not start:\n{self.log.read_text()[-3000:]}")
            time.sleep(0.2)
        info = json.loads(port_file.read_text())
        self.port: int = info["port"]
        self.dim: int = info["dim"]
        self.channel = grpc.aio.insecure_channel(f"127.0.0.1:{self.port}")
        self.catalog = catalog_pb2_grpc.CatalogServiceStub(self.channel)
        self.interests = interest_pb2_grpc.InterestServiceStub(self.channel)
        self.recommender = recommendation_pb2_grpc.RecommendationServiceStub(self.channel)
        self.admin = admin_pb2_grpc.AdminServiceStub(self.channel)

    def phases(self) -> list[dict[str, float]]:
        found = []
        for line in self.log.read_text().splitlines():
            if match := PHASES.search(line):
                parts = (part.rsplit(" ", 1) for part in match.group(1).split(", "))
                found.append({name: float(value) for name, value in parts})
        return found

    async def stop(self) -> None:
        await self.channel.close()
        self.process.terminate()
        self.process.wait(60)
        self._log_handle.close()


# Data ---------------------------------------------------------------------------------------


def item_rows(items: int, genres: int, dim: int) -> Iterator[dict[str, Any]]:
    """The catalog as rows of `interest-tree import items`, each with its caller vector."""
    rng = np.random.default_rng(1)
    centroids = rng.normal(size=(genres, dim))
    for n in range(items):
        genre = n % genres
        vector = centroids[genre] + 0.7 * rng.normal(size=dim)
        yield {
            "id": f"i{n}",
            "title": f"Item {n}",
            "categories": ["Bench", f"Genre {genre}", f"Shelf {genre}.{(n // genres) % 4}"],
            "vector": vector.astype(np.float32).tolist(),
        }


def event_rows(
    users: int, per_user: int, items: int, genres: int, prefix: str = "u", seed: int = 2
) -> Iterator[dict[str, Any]]:
    """Views as rows of `interest-tree import events`: two genres a user, Zipf popularity."""
    rng = np.random.default_rng(seed)
    per_genre = items // genres
    for user in range(users):
        liked = rng.choice(genres, size=2, replace=False)
        for t in range(per_user):
            genre = int(liked[t % 2])
            rank = min(int(rng.zipf(1.3)) - 1, per_genre - 1)
            yield {
                "user": f"{prefix}{user}",
                "item": f"i{rank * genres + genre}",
                "type": "view",
                "time": START + timedelta(minutes=t),
            }


# Load ---------------------------------------------------------------------------------------


async def recommend_loop(
    server: Server, users: Sequence[str], until: asyncio.Future[Any] | float, seed: int
) -> tuple[list[tuple[float, float]], int]:
    """(start, seconds) of every Recommend until `until` (a deadline or a call) is done, and
    the number that failed."""
    rng = np.random.default_rng(seed)
    timings: list[tuple[float, float]] = []
    failed = 0

    def done() -> bool:
        return until.done() if isinstance(until, asyncio.Future) else time.monotonic() >= until

    while not done():
        request = recommendation_pb2.RecommendRequest(
            user=users[int(rng.integers(len(users)))], page_size=10
        )
        started = time.monotonic()
        try:
            await server.recommender.Recommend(request, timeout=60)
        except grpc.aio.AioRpcError:
            failed += 1
            continue
        timings.append((started, time.monotonic() - started))
    return timings, failed


@dataclasses.dataclass(frozen=True)
class Result:
    mode: str
    concurrency: int
    idle: tuple[float, float, int]
    """p50 ms, p99 ms, calls."""
    during: tuple[float, float, int]
    train: tuple[float, float, int]
    """Calls that started while the model trained."""
    after: tuple[float, float, int]
    """Calls that started after training: the HNSW build, the taxonomy rebuild, the flush."""
    failed: int
    refresh_s: float
    phases: dict[str, float]


def quantiles(timings: Sequence[tuple[float, float]]) -> tuple[float, float, int]:
    if not timings:
        return float("nan"), float("nan"), 0
    ms = np.asarray([seconds for _, seconds in timings]) * 1000
    return float(np.percentile(ms, 50)), float(np.percentile(ms, 99)), len(ms)


async def measure(
    server: Server,
    mode: str,
    users: Sequence[str],
    concurrency: int,
    idle_s: float,
    round_: int,
    profile: Path | None,
) -> Result:
    deadline = time.monotonic() + idle_s
    idle = await asyncio.gather(
        *(recommend_loop(server, users, deadline, n) for n in range(concurrency))
    )
    # New events, so that the refresh has something to train on.
    await import_memory(
        client_for(server.channel),
        "events",
        event_rows(20, 5, 1000, 10, prefix=f"new{round_}-", seed=round_),
    )
    before = len(server.phases())
    spy = None
    if profile is not None:
        # The server process alone (not the training child): what it runs while it should
        # only be serving and waiting. Idle threads (waiting on the GIL or I/O) are left out.
        profile.parent.mkdir(parents=True, exist_ok=True)
        spy = subprocess.Popen(  # noqa: ASYNC220 - starting it is instant; it runs alongside
            [
                *(str(Path(sys.executable).parent / "py-spy"), "record", "--rate", "100"),
                *("--pid", str(server.process.pid), "--format", "raw", "--nonblocking"),
                *("--output", str(profile)),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        await asyncio.sleep(1.0)  # py-spy attaches
    started = time.monotonic()
    refresh = asyncio.ensure_future(
        server.admin.RefreshModels(admin_pb2.RefreshModelsRequest(), timeout=3600)
    )
    during = await asyncio.gather(
        *(recommend_loop(server, users, refresh, 100 + n) for n in range(concurrency))
    )
    await refresh
    refresh_s = time.monotonic() - started
    if spy is not None:
        spy.send_signal(signal.SIGINT)
        spy.wait(60)
    for _ in range(50):
        if len(server.phases()) > before:
            break
        await asyncio.sleep(0.1)
    phases = server.phases()[-1]
    train_end = started + phases.get("train_s", 0.0)
    idle_t = [t for timings, _ in idle for t in timings]
    during_t = [t for timings, _ in during for t in timings]
    return Result(
        mode,
        concurrency,
        idle=quantiles(idle_t),
        during=quantiles(during_t),
        train=quantiles([t for t in during_t if t[0] < train_end]),
        after=quantiles([t for t in during_t if t[0] >= train_end]),
        failed=sum(f for _, f in idle) + sum(f for _, f in during),
        refresh_s=refresh_s,
        phases=phases,
    )


async def run(args: argparse.Namespace) -> None:
    root = Path(args.work_dir or tempfile.mkdtemp(prefix="refresh-load-"))
    root.mkdir(parents=True, exist_ok=True)  # noqa: ASYNC240 - once, before any load
    data_dir = root / "data"
    loaded = (root / "loaded").exists()
    results: list[Result] = []
    probe = [f"users/u{n}" for n in range(0, args.users, max(1, args.users // args.probe_users))]
    probe = probe[: args.probe_users]
    for mode in args.modes.split(","):
        server = Server(data_dir, mode == "thread", args.rerank_max_items)
        try:
            if not loaded:
                t = time.monotonic()
                # Through `interest-tree import`'s own code (bench/loading.py).
                client = client_for(server.channel)
                await import_memory(
                    client,
                    "items",
                    item_rows(args.items, args.genres, server.dim),
                    batch_size=1000,
                )
                await import_memory(
                    client,
                    "events",
                    event_rows(args.users, args.events_per_user, args.items, args.genres),
                )
                print(f"loaded in {time.monotonic() - t:.1f} s", flush=True)
                t = time.monotonic()
                await server.admin.RefreshModels(admin_pb2.RefreshModelsRequest(), timeout=3600)
                print(f"first training in {time.monotonic() - t:.1f} s", flush=True)
                (root / "loaded").touch()
                loaded = True
            for user in probe:  # builds each probe user's tree, so timing excludes first builds
                await server.recommender.Recommend(
                    recommendation_pb2.RecommendRequest(user=user, page_size=10), timeout=600
                )
            for concurrency in args.concurrency:
                profile = (
                    args.py_spy / f"{mode}-{concurrency}.txt" if args.py_spy is not None else None
                )
                result = await measure(
                    server, mode, probe, concurrency, args.idle_s, len(results), profile
                )
                results.append(result)
                print(result, flush=True)
        finally:
            await server.stop()
    print(report(args, results))


def report(args: argparse.Namespace, results: list[Result]) -> str:
    lines = [
        f"items {args.items}, users {args.users} x {args.events_per_user} events, "
        f"re-ranker over {args.rerank_max_items} items, {os.cpu_count()} CPUs",
        "",
        "| mode | conc | idle p50 / p99 ms | during p50 / p99 ms (n) | in training p99 (n) "
        "| after training p99 (n) | p99 during/idle | p99 train/idle | failed | refresh s "
        "| phases s |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in results:
        idle, during, train, after = r.idle, r.during, r.train, r.after
        lines.append(
            f"| {r.mode} | {r.concurrency} | {idle[0]:.1f} / {idle[1]:.1f} "
            f"| {during[0]:.1f} / {during[1]:.1f} ({during[2]}) | {train[1]:.1f} ({train[2]}) "
            f"| {after[1]:.1f} ({after[2]}) | {during[1] / idle[1]:.2f} "
            f"| {train[1] / idle[1]:.2f} | {r.failed} | {r.refresh_s:.1f} "
            f"| {', '.join(f'{k[:-2]} {v:.1f}' for k, v in r.phases.items())} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command")
    serve = sub.add_parser("serve", help="(internal) the server process")
    serve.add_argument("data_dir", type=Path)
    serve.add_argument("port_file", type=Path)
    serve.add_argument("--in-process", action="store_true")
    serve.add_argument("--rerank-max-items", type=int, default=2000)
    parser.add_argument("--items", type=int, default=20_000)
    parser.add_argument("--genres", type=int, default=40)
    parser.add_argument("--users", type=int, default=10_000)
    parser.add_argument("--events-per-user", type=int, default=20)
    parser.add_argument("--probe-users", type=int, default=200)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 16])
    parser.add_argument("--idle-s", type=float, default=15.0)
    parser.add_argument("--modes", default="child,thread")
    parser.add_argument("--rerank-max-items", type=int, default=2000)
    parser.add_argument(
        "--py-spy", type=Path, help="record the server with py-spy during each refresh, here"
    )
    parser.add_argument("--work-dir", help="reuse a loaded data directory (kept after the run)")
    args = parser.parse_args()
    if args.command == "serve":
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
        asyncio.run(_serve(args.data_dir, args.port_file, args.in_process, args.rerank_max_items))
        return
    asyncio.run(run(args))


if __name__ == "__main__":
    main()
