"""The cost of authentication, TLS and tenants, as ratios measured in one run.

One in-process service (data-only trees, the default embedder) serves three gRPC ports over the
same engines: insecure without authentication (today's path), with API keys (`require_auth`),
and with API keys over TLS. Every tenant gets the shipped sample (49 items, with random caller
vectors so that loading embeds nothing, and the events of alice, bob and carol); each user's
tree is built before timing. Then, for each port and for 1 and `--tenants` tenants:

- QPS of Recommend (round-robin over the tenants' users) and of Health/Check (the floor: the
  same transport, no interceptor, no engine), `--requests` calls with `--concurrency` in flight;
- `recommend/health`: Recommend's share of the floor, comparable across ports;
- `vs insecure`: Recommend QPS over the insecure port's Recommend QPS in the same run.

Each figure is the median of `--rounds` rounds, the ports interleaved within each round.

It also times the interceptor's checks alone (`gate_cost`), and reports the process's
resident memory after opening 1 and N tenants. Client and
server share one process and event loop, so absolute QPS is low; the ratios are the point.

    .venv/bin/python -m bench.tenants [--tenants 50] [--requests 600] [--concurrency 8] [--rounds 5]
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import grpc
import numpy as np
from grpc_health.v1 import health_pb2, health_pb2_grpc
from interesttree.v1 import interest_pb2, recommendation_pb2, recommendation_pb2_grpc

from bench.loading import client_for, import_memory
from server.app import Runtime, create_server
from server.auth.gate import Gate, metadata_token
from server.auth.roles import Role
from server.auth.tls import TlsFiles
from server.config import Settings
from server.demo import sample_rows
from taxonomy.trees.naming import NamingMode
from tests.conftest import Stubs, make_stubs
from tests.server.test_tls import write_pki

USERS = ("alice", "bob", "carol")
START = datetime(2024, 1, 1, tzinfo=UTC)


def rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


@dataclass
class Port:
    name: str
    channel: grpc.aio.Channel
    stubs: Stubs
    server: grpc.aio.Server
    keyed: bool


async def load(stubs: Stubs, api_key: str | None, dim: int, seed: int) -> None:
    """The sample, each item with a random caller vector, through `interest-tree import`'s own
    code (rows made in memory, bench/loading.py), into the tenant of `api_key`; then the
    users' trees."""
    items, events = sample_rows(START)
    rng = np.random.default_rng(seed)
    for item in items:
        item["vector"] = rng.normal(size=dim).astype(np.float32).tolist()
    async with client_for(stubs.channel, api_key) as client:
        await import_memory(client, "items", items)
        await import_memory(client, "events", events)
    metadata = (("authorization", f"Bearer {api_key}"),) if api_key else ()
    for user in USERS:
        await stubs.interests.BuildInterestTree(
            interest_pb2.BuildInterestTreeRequest(user=f"users/{user}"), metadata=metadata
        )


async def qps(call: Callable[[int], Awaitable[object]], requests: int, concurrency: int) -> float:
    counter = iter(range(requests))

    async def worker() -> None:
        for n in counter:
            await call(n)

    for n in range(concurrency):  # warm-up
        await call(n)
    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return requests / (time.perf_counter() - started)


async def measure(
    port: Port, keys: list[str], requests: int, concurrency: int
) -> tuple[float, float]:
    recommender: recommendation_pb2_grpc.RecommendationServiceAsyncStub = port.stubs.recommender
    health = health_pb2_grpc.HealthStub(port.channel)

    def metadata(n: int) -> tuple[tuple[str, str], ...]:
        return (("authorization", f"Bearer {keys[n % len(keys)]}"),) if port.keyed else ()

    async def recommend(n: int) -> object:
        user = USERS[(n // max(1, len(keys))) % len(USERS)]
        return await recommender.Recommend(
            recommendation_pb2.RecommendRequest(user=f"users/{user}", page_size=10),
            metadata=metadata(n),
        )

    async def check(n: int) -> object:
        return await health.Check(health_pb2.HealthCheckRequest(service=""))

    floor = await qps(check, requests, concurrency)
    recommended = await qps(recommend, requests, concurrency)
    return recommended, floor


async def gate_cost(gate: Gate, keys: list[str], calls: int = 20_000) -> float:
    """Microseconds the interceptor's checks take per call (key lookup and hash, role, rate,
    the tenant's engine), round-robin over the keys: the part of authentication that does not
    depend on the machine's other load as much as QPS does."""
    method = "/interesttree.v1.RecommendationService/Recommend"
    tokens = [metadata_token((("authorization", f"Bearer {key}"),)) for key in keys]
    started = time.perf_counter()
    for n in range(calls):
        await gate.admit(method, gate.authenticate(tokens[n % len(tokens)]))
    return (time.perf_counter() - started) / calls * 1e6


async def run(tenants: int, requests: int, concurrency: int, rounds: int) -> None:
    logging.disable(logging.INFO)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        pki = write_pki(root)
        settings = Settings(
            data_dir=root / "data",
            embedded_llm=False,
            naming_mode=NamingMode.OFF,
            port=0,
            require_auth=True,
        )
        runtime = await Runtime.create(settings)
        assert runtime.keys is not None
        assert runtime.gate is not None
        await runtime.start_background()
        tls = TlsFiles(pki.server_cert, pki.server_key)
        ports: list[Port] = []
        for name, gate, secure in (
            ("insecure, no auth", None, False),
            ("API key", runtime.gate, False),
            ("API key + TLS", runtime.gate, True),
        ):
            server, bound = create_server(
                "127.0.0.1:0",
                runtime.engine,
                runtime.health,
                gate=gate,
                tls=tls if secure else None,
            )
            await server.start()
            target = f"127.0.0.1:{bound}"
            channel = (
                grpc.aio.secure_channel(target, grpc.ssl_channel_credentials(pki.ca.read_bytes()))
                if secure
                else grpc.aio.insecure_channel(target)
            )
            ports.append(Port(name, channel, make_stubs(channel), server, gate is not None))
        dim = runtime.engine.embedder.dim
        baseline_rss = rss_mib()
        await load(ports[0].stubs, None, dim, seed=0)  # the default tenant, for the insecure port
        keys: list[str] = []
        rows: list[tuple[int, str, float, float, float]] = []
        memory: list[tuple[int, float]] = [(0, baseline_rss)]
        for count in sorted({1, tenants}):
            while len(keys) < count:
                _, key = runtime.keys.create(f"t{len(keys)}", Role.ADMIN)
                await load(ports[1].stubs, key, dim, len(keys))
                keys.append(key)
            memory.append((count, rss_mib()))
            samples: dict[str, list[tuple[float, float]]] = {port.name: [] for port in ports}
            for _ in range(rounds):  # interleaved, so that load from elsewhere hits every port
                for port in ports:
                    samples[port.name].append(await measure(port, keys, requests, concurrency))
            for port in ports:
                recommended = statistics.median(r for r, _ in samples[port.name])
                floor = statistics.median(f for _, f in samples[port.name])
                rows.append((count, port.name, recommended, floor, recommended / floor))
        print(
            f"{'tenants':>7} {'port':<18} {'Recommend/s':>11} {'Health/s':>9} "
            f"{'rec/health':>10} {'vs insecure':>11}"
        )
        for count, name, recommended, floor, ratio in rows:
            insecure = next(r[2] for r in rows if r[0] == count and r[1] == ports[0].name)
            print(
                f"{count:>7} {name:<18} {recommended:>11.0f} {floor:>9.0f} "
                f"{ratio:>10.3f} {recommended / insecure:>11.3f}"
            )
        print()
        print(
            "resident memory (MiB): "
            + ", ".join(f"{count} tenant(s) {mib:.0f}" for count, mib in memory)
        )
        per_tenant = (memory[-1][1] - memory[1][1]) / max(1, memory[-1][0] - memory[1][0])
        print(f"per extra tenant: {per_tenant:.2f} MiB")
        print(f"the gate alone, per call: {await gate_cost(runtime.gate, keys):.1f} µs")
        for port in ports:
            await port.channel.close()
            await port.server.stop(0)
        await runtime.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tenants", type=int, default=50)
    parser.add_argument("--requests", type=int, default=600)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=5, help="medians of this many rounds")
    args = parser.parse_args()
    asyncio.run(run(args.tenants, args.requests, args.concurrency, args.rounds))


if __name__ == "__main__":
    main()
