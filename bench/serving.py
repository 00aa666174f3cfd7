"""What Recommend costs a real server, against the Health/Check floor, as the catalog grows.

For each size in `--items`, one `interest-tree serve` process (no LLM, the hash embeddings of
tests/reliability/embeddings.py, so no item text is embedded: every item brings a caller
vector) gets a synthetic catalog, loaded through `interest-tree import`'s own code (rows made
in memory, bench/loading.py): `--categories` categories of 8 shelves each, item vectors
around their category's centre. Users are items/5, each with about `--events-per-user` events
walking 2 or 3 categories (so the collaborative model learns something). Then:

1. RefreshModels (collaborative vectors, the catalog taxonomy): wall time, and the server's
   resident memory (VmRSS now, VmHWM its peak) after it;
2. trees are built for `--bench-users` users (one Recommend each, untimed);
3. Health/Check (the floor: same transport, no engine) and Recommend (page_size 10, round-robin
   over those users) for `--requests` calls at each `--concurrency`: QPS, p50, p99, and
   Recommend's ratio to the floor;
4. with `--during-refresh`: events for a tenth of the users arrive, a RefreshModels starts, and
   Recommend at the highest concurrency is measured while it runs.

The client is this process (grpc.aio), the server another; both share the machine's cores.
Markdown goes to stdout and to `--out`.

    .venv/bin/python -m bench.serving [--items 10000,100000] [--requests 2000]
        [--concurrency 1,16] [--during-refresh] [--out bench/results/serving.md]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import grpc
import numpy as np
from grpc_health.v1 import health_pb2, health_pb2_grpc
from interesttree.v1 import (
    admin_pb2,
    admin_pb2_grpc,
    recommendation_pb2,
    recommendation_pb2_grpc,
)

from bench.loading import client_for, import_memory
from tests.reliability.embeddings import HashEmbeddings
from tests.reliability.processes import ServerProcess, start_server

START = datetime(2024, 1, 1, tzinfo=UTC)
SHELVES = 8
REFRESH_TIMEOUT_S = 3600.0


@dataclass(frozen=True)
class Catalog:
    items: int
    users: int
    events_per_user: int
    categories: int
    dim: int
    seed: int = 7

    def category(self, item: int) -> int:
        return item % self.categories

    def item_rows(self) -> Iterator[dict[str, Any]]:
        """The catalog as rows of `interest-tree import items`, each with its caller vector."""
        rng = np.random.default_rng(self.seed)
        centres = rng.normal(size=(self.categories * SHELVES, self.dim)).astype(np.float32)
        for start in range(0, self.items, 1000):
            count = min(self.items, start + 1000) - start
            noise = rng.normal(scale=0.6, size=(count, self.dim)).astype(np.float32)
            for offset in range(count):
                n = start + offset
                category, shelf = self.category(n), (n // self.categories) % SHELVES
                vector = centres[category * SHELVES + shelf] + noise[offset]
                yield {
                    "id": f"i{n}",
                    "title": f"Item {n}",
                    "categories": [f"Category {category}", f"Shelf {category}.{shelf}"],
                    "tags": [f"tag{(n // 7) % 50}"],
                    "vector": vector.tolist(),
                }

    def user_events(self, user: int, rng: np.random.Generator, count: int) -> list[int]:
        """Items of 2 or 3 categories, the user's favourite category most often."""
        chosen = rng.choice(self.categories, size=int(rng.integers(2, 4)), replace=False)
        per_category = self.items // self.categories
        weights = np.array([0.6, 0.3, 0.1][: len(chosen)])
        picks = rng.choice(chosen, size=count, p=weights / weights.sum())
        return [int(c) + self.categories * int(rng.integers(per_category)) for c in picks]

    def event_rows(
        self, users: range, count: int, seed: int, day: int = 0
    ) -> Iterator[dict[str, Any]]:
        """Views as rows of `interest-tree import events`, a minute apart."""
        rng = np.random.default_rng(seed)
        for user in users:
            for position, item in enumerate(self.user_events(user, rng, count)):
                yield {
                    "user": f"u{user}",
                    "item": f"i{item}",
                    "type": "view",
                    "time": START + timedelta(days=day, minutes=position),
                }


@dataclass(frozen=True)
class Latency:
    qps: float
    p50_ms: float
    p99_ms: float


async def timed(
    call: Callable[[int], Awaitable[object]], requests: int, concurrency: int
) -> Latency:
    counter = iter(range(requests))
    took: list[float] = []

    async def worker() -> None:
        for n in counter:
            started = time.perf_counter()
            await call(n)
            took.append(time.perf_counter() - started)

    for n in range(concurrency):  # warm-up
        await call(n)
    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    wall = time.perf_counter() - started
    values = np.asarray(took) * 1000
    return Latency(
        len(took) / wall, float(np.percentile(values, 50)), float(np.percentile(values, 99))
    )


def memory_mib(pid: int) -> tuple[float, float]:
    """(VmRSS, VmHWM) of a process, in MiB."""
    found = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            found[key] = int(value.split()[0]) / 1024
    return found["VmRSS"], found["VmHWM"]


def descendants(pid: int) -> list[int]:
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            children = (task / "children").read_text().split()
        except OSError:
            continue
        for child in map(int, children):
            found += [child, *descendants(child)]
    return found


async def peak_tree_rss(pid: int, until: asyncio.Future[Any]) -> float:
    """The largest VmRSS sum (MiB) of `pid` and its descendants (a refresh may train in a
    child process), sampled every 0.2 s until `until` is done."""
    peak = 0.0
    while not until.done():
        total = 0.0
        for member in [pid, *descendants(pid)]:
            try:
                total += memory_mib(member)[0]
            except (OSError, KeyError):
                continue
        peak = max(peak, total)
        await asyncio.wait({until}, timeout=0.2)
    return peak


@dataclass
class SizeResult:
    catalog: Catalog
    events: int
    load_s: float
    rss_loaded: tuple[float, float]
    refresh_s: float
    refresh_peak_mib: float
    """VmRSS of the server and its child processes together, at most, during the refresh."""
    rss_refreshed: tuple[float, float]
    floor: dict[int, Latency]
    recommend: dict[int, Latency]
    during_refresh: Latency | None = None
    during_refresh_s: float | None = None
    rss_end: tuple[float, float] | None = None


async def bench_size(
    server: ServerProcess,
    catalog: Catalog,
    requests: int,
    concurrencies: list[int],
    bench_users: int,
    during_refresh: bool,
    profile_s: float,
) -> SizeResult:
    pid = server.process.pid
    async with grpc.aio.insecure_channel(
        server.address,
        options=[("grpc.max_send_message_length", 64 << 20)],
    ) as channel:
        admin = admin_pb2_grpc.AdminServiceStub(channel)
        recommender = recommendation_pb2_grpc.RecommendationServiceStub(channel)
        health = health_pb2_grpc.HealthStub(channel)

        client = client_for(channel)
        started = time.perf_counter()
        # Through `interest-tree import`'s own code (bench/loading.py), rows made in memory.
        await import_memory(client, "items", catalog.item_rows(), batch_size=1000)
        await import_memory(
            client,
            "events",
            catalog.event_rows(range(catalog.users), catalog.events_per_user, catalog.seed),
        )
        load_s = time.perf_counter() - started
        rss_loaded = memory_mib(pid)
        started = time.perf_counter()
        refreshing = asyncio.ensure_future(
            admin.RefreshModels(admin_pb2.RefreshModelsRequest(), timeout=REFRESH_TIMEOUT_S)
        )
        refresh_peak = await peak_tree_rss(pid, refreshing)
        refreshed = await refreshing
        refresh_s = time.perf_counter() - started
        rss_refreshed = memory_mib(pid)

        users = [f"users/u{n}" for n in range(min(bench_users, catalog.users))]
        for user in users:  # builds each tree, untimed
            await recommender.Recommend(
                recommendation_pb2.RecommendRequest(user=user, page_size=10), timeout=600
            )

        async def recommend(n: int) -> object:
            return await recommender.Recommend(
                recommendation_pb2.RecommendRequest(user=users[n % len(users)], page_size=10),
                timeout=600,
            )

        async def check(n: int) -> object:
            return await health.Check(health_pb2.HealthCheckRequest(service=""), timeout=60)

        floor: dict[int, Latency] = {}
        recommended: dict[int, Latency] = {}
        for concurrency in concurrencies:
            floor[concurrency] = await timed(check, requests, concurrency)
            recommended[concurrency] = await timed(recommend, requests, concurrency)
        if profile_s > 0:
            await profile(pid, recommend, max(concurrencies), profile_s, catalog.items)
        result = SizeResult(
            catalog,
            int(refreshed.event_count),
            load_s,
            rss_loaded,
            refresh_s,
            refresh_peak,
            rss_refreshed,
            floor,
            recommended,
        )
        if during_refresh:
            more = range(0, catalog.users, 10)
            await import_memory(
                client, "events", catalog.event_rows(more, 5, catalog.seed + 1, day=1)
            )
            started = time.perf_counter()
            running = asyncio.ensure_future(
                admin.RefreshModels(admin_pb2.RefreshModelsRequest(), timeout=REFRESH_TIMEOUT_S)
            )
            await asyncio.sleep(0.5)
            # As many calls as fit in the refresh, at most `requests`; at least one round.
            result.during_refresh = await timed(
                recommend,
                requests if not running.done() else max(concurrencies),
                max(concurrencies),
            )
            await running
            result.during_refresh_s = time.perf_counter() - started
        result.rss_end = memory_mib(pid)
        return result


async def profile(
    pid: int, call: Callable[[int], Awaitable[object]], concurrency: int, seconds: float, size: int
) -> None:
    """py-spy on the server while Recommend runs at `concurrency`: an SVG flame graph and the
    top of the flat profile under bench/results/."""
    out = Path("bench/results") / f"serving-profile-{size}.txt"
    spy = await asyncio.create_subprocess_exec(
        str(Path(sys.executable).with_name("py-spy")),
        "record",
        "--pid",
        str(pid),
        "--duration",
        str(int(seconds)),
        "--format",
        "raw",
        "--output",
        str(out.with_suffix(".raw")),
        "--nonblocking",
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    stop = time.perf_counter() + seconds
    counter = iter(range(10**9))

    async def worker() -> None:
        for n in counter:
            if time.perf_counter() > stop:
                return
            await call(n)

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    await spy.wait()
    raw = out.with_suffix(".raw")
    if raw.exists():
        out.write_text(flat_profile(raw.read_text()))


def flat_profile(raw: str, top: int = 40) -> str:
    """Self and inclusive sample shares per function, from py-spy's collapsed stacks."""
    inclusive: dict[str, int] = {}
    own: dict[str, int] = {}
    total = 0
    for line in raw.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        samples = int(count)
        total += samples
        frames = stack.split(";")
        for frame in set(frames):
            inclusive[frame] = inclusive.get(frame, 0) + samples
        own[frames[-1]] = own.get(frames[-1], 0) + samples
    lines = [f"{total} samples", "", "inclusive:"]
    for frame, n in sorted(inclusive.items(), key=lambda p: -p[1])[:top]:
        lines.append(f"{n / total:6.1%}  {frame}")
    lines += ["", "self:"]
    for frame, n in sorted(own.items(), key=lambda p: -p[1])[:top]:
        lines.append(f"{n / total:6.1%}  {frame}")
    return "\n".join(lines) + "\n"


def mib(pair: tuple[float, float] | None) -> str:
    return "-" if pair is None else f"{pair[0]:.0f} / {pair[1]:.0f}"


def report(results: list[SizeResult], command: str, concurrencies: list[int]) -> str:
    lines = [
        "# Serving: Recommend against the Health/Check floor",
        "",
        f"`{command}`",
        "",
        "One `interest-tree serve` process (SQLite, no LLM, caller vectors of 64 values); the "
        "client is another process on the same machine. Recommend: page_size 10, round-robin "
        "over the benched users, trees built beforehand.",
        "",
        "| items | users | events | c | floor QPS | floor p50 / p99 ms | Recommend QPS "
        "| Recommend p50 / p99 ms | QPS ratio | p99 ratio |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in results:
        for c in concurrencies:
            f, m = r.floor[c], r.recommend[c]
            lines.append(
                f"| {r.catalog.items:,} | {r.catalog.users:,} | {r.events:,} | {c} "
                f"| {f.qps:.0f} | {f.p50_ms:.1f} / {f.p99_ms:.1f} | {m.qps:.0f} "
                f"| {m.p50_ms:.1f} / {m.p99_ms:.1f} | {m.qps / f.qps:.3f} "
                f"| {m.p99_ms / f.p99_ms:.2f} |"
            )
    lines += [
        "",
        "Server memory: VmRSS / VmHWM (its peak) of the serving process, MiB; the refresh's "
        "peak adds its child processes (sampled every 0.2 s).",
        "",
        "| items | load s | RSS / peak after load | RefreshModels s | refresh peak, with children "
        "| RSS / peak after refresh | RSS / peak at end |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in results:
        lines.append(
            f"| {r.catalog.items:,} | {r.load_s:.0f} | {mib(r.rss_loaded)} | {r.refresh_s:.1f} "
            f"| {r.refresh_peak_mib:.0f} | {mib(r.rss_refreshed)} | {mib(r.rss_end)} |"
        )
    if any(r.during_refresh for r in results):
        c = max(concurrencies)
        lines += [
            "",
            f"While a RefreshModels runs (c={c}; events for a tenth of the users recorded first):",
            "",
            "| items | RefreshModels s | Recommend QPS | p50 / p99 ms | QPS vs idle |",
            "| --- | --- | --- | --- | --- |",
        ]
        for r in results:
            d = r.during_refresh
            if d is None:
                continue
            lines.append(
                f"| {r.catalog.items:,} | {r.during_refresh_s or 0:.1f} | {d.qps:.0f} "
                f"| {d.p50_ms:.1f} / {d.p99_ms:.1f} | {d.qps / r.recommend[c].qps:.3f} |"
            )
    return "\n".join(lines) + "\n"


async def run(args: argparse.Namespace) -> list[SizeResult]:
    sizes = [int(s) for s in args.items.split(",")]
    concurrencies = [int(c) for c in args.concurrency.split(",")]
    results: list[SizeResult] = []
    embeddings = HashEmbeddings()
    try:
        for size in sizes:
            catalog = Catalog(
                items=size,
                users=max(1, size // 5),
                events_per_user=args.events_per_user,
                categories=args.categories,
                dim=embeddings.dim,
            )
            with tempfile.TemporaryDirectory(prefix="bench-serving-") as directory:
                env = {
                    **embeddings.env(),
                    # The bench starts every refresh itself.
                    "INTEREST_TREE_MODEL_REFRESH_INTERVAL_S": "1000000",
                }
                server = start_server(Path(directory) / "data", env=env)
                try:
                    results.append(
                        await bench_size(
                            server,
                            catalog,
                            args.requests,
                            concurrencies,
                            args.bench_users,
                            args.during_refresh,
                            args.profile_s,
                        )
                    )
                finally:
                    server.stop()
            print(report(results[-1:], "", concurrencies), file=sys.stderr, flush=True)
    finally:
        embeddings.close()
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--items", default="10000,100000", help="catalog sizes, comma-separated")
    parser.add_argument("--events-per-user", type=int, default=35)
    parser.add_argument("--categories", type=int, default=40)
    parser.add_argument("--bench-users", type=int, default=200)
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--concurrency", default="1,16")
    parser.add_argument("--during-refresh", action="store_true")
    parser.add_argument(
        "--profile-s", type=float, default=0.0, help="py-spy the server this long, if > 0"
    )
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    results = asyncio.run(run(args))
    command = "python -m bench.serving " + " ".join(argv if argv is not None else sys.argv[1:])
    text = report(results, command, [int(c) for c in args.concurrency.split(",")])
    print(text)
    if args.out is not None:
        args.out.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
