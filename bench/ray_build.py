"""Tree rebuild throughput: Ray Data (`build-trees --engine ray`) against the server's
`BatchBuildInterestTrees`, in one run, on one throwaway PostgreSQL.

Starts a PostgreSQL (Debian's binaries, as the tests do), one `interest-tree serve --no-llm`
on it, loads `--items` items in `--genres` genres and `--events` events for each of `--users`
users, then rebuilds every user's tree `--rounds` times each way:

- server: one `BatchBuildInterestTrees(all_users)` stream (several users in flight);
- ray: `build_trees_on_ray` on a local Ray (`--ray-cpus` CPUs, `--actors` actors), timed from
  the call (actor start included) to the last revision stored; a 2-user Ray build gives the
  fixed cost (the actors' start), so the steady rate is (users - 2) / (full - fixed).

Naming is off on both sides: this measures the orchestration and the store, not a model.
Both embed through one loopback hash-embedding endpoint. Usage:

    .venv/bin/python -m bench.ray_build [--users 200] [--rounds 2]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import ray
from interesttree.v1 import interest_pb2

from bench.loading import load_memory_at
from server.config import Settings
from server.ray_build import build_trees_on_ray
from taxonomy.trees.naming import NamingMode
from tests.reliability.embeddings import HashEmbeddings
from tests.reliability.processes import ServerProcess, start_server
from tests.storage.postgres_server import running_postgres

START = datetime(2024, 1, 1, tzinfo=UTC)
CALL_TIMEOUT_S = 600.0


def seed(server: ServerProcess, items: int, genres: int, users: int, events: int) -> None:
    """The synthetic catalog and events, through `interest-tree import`'s own code (rows made
    in memory, bench/loading.py)."""
    rng = np.random.default_rng(7)
    item_rows = [
        {
            "id": f"i{n}",
            "title": f"Item {n} of genre {n % genres}",
            "categories": [f"Genre {n % genres}", f"Shelf {n % genres}.{(n // genres) % 4}"],
            "tags": [f"tag{n % 7}"],
        }
        for n in range(items)
    ]
    event_rows: list[dict[str, Any]] = []
    for u in range(users):
        liked = rng.choice(genres, size=3, replace=False)
        for k in range(events):
            genre = int(liked[k % 3])
            n = genre + genres * int(rng.integers(0, items // genres))
            event_rows.append(
                {
                    "user": f"u{u:05d}",
                    "item": f"i{n}",
                    "time": START + timedelta(minutes=u * events + k),
                }
            )
    load_memory_at(server.address, item_rows, event_rows)


def server_round(server: ServerProcess, users: int) -> float:
    started = time.perf_counter()
    done = 0
    request = interest_pb2.BatchBuildInterestTreesRequest(all_users=True)
    for result in server.interests.BatchBuildInterestTrees(request, timeout=CALL_TIMEOUT_S):
        assert not result.error, result.error
        done += 1
    assert done == users, done
    return time.perf_counter() - started


def ray_round(settings: Settings, users: list[str], actors: int, batch_size: int) -> float:
    report = build_trees_on_ray(settings, users, concurrency=actors, batch_size=batch_size)
    if report.failed or report.built != len(users):
        raise RuntimeError(f"the Ray build failed: {report}")
    return report.elapsed_s


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--users", type=int, default=200)
    parser.add_argument("--items", type=int, default=400)
    parser.add_argument("--genres", type=int, default=8)
    parser.add_argument("--events", type=int, default=30)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--actors", type=int, default=2)
    parser.add_argument("--ray-cpus", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=16)
    args = parser.parse_args(argv)

    schema = f"bench_{uuid.uuid4().hex[:12]}"
    embeddings = HashEmbeddings()
    with tempfile.TemporaryDirectory(prefix="bench-ray-") as directory, running_postgres() as pg:
        # The Ray workers read the embedding settings from the Settings they are handed.
        os.environ.update(embeddings.env())
        server = start_server(
            Path(directory) / "a",
            env=embeddings.env(),
            args=("--no-llm", "--store-url", pg.url, "--store-schema", schema),
        )
        try:
            seed(server, args.items, args.genres, args.users, args.events)
            settings = Settings(
                store_url=pg.url,
                store_schema=schema,
                data_dir=Path(directory) / "ray",
                embedded_llm=False,
                naming_mode=NamingMode.OFF,
            )
            users = [f"u{u:05d}" for u in range(args.users)]
            ray.init(
                num_cpus=args.ray_cpus,
                object_store_memory=128 * 1024 * 1024,
                include_dashboard=False,
                log_to_driver=False,
            )
            print(
                f"{args.users} users x {args.events} events, {args.items} items; "
                f"Ray: {args.actors} actors on {args.ray_cpus} CPUs, batches of "
                f"{args.batch_size}; load average {os.getloadavg()[0]:.1f}"
            )
            print("| round | path | wall s | users/s |")
            print("| --- | --- | --- | --- |")
            for round_ in range(1, args.rounds + 1):
                elapsed = server_round(server, args.users)
                print(f"| {round_} | BatchBuildInterestTrees | {elapsed:.1f} | "
                      f"{args.users / elapsed:.1f} |")  # fmt: skip
                fixed = ray_round(settings, users[:2], args.actors, args.batch_size)
                elapsed = ray_round(settings, users, args.actors, args.batch_size)
                steady = (args.users - 2) / max(elapsed - fixed, 1e-9)
                print(f"| {round_} | Ray Data, actor start included | {elapsed:.1f} | "
                      f"{args.users / elapsed:.1f} |")  # fmt: skip
                print(f"| {round_} | Ray Data, less a 2-user run ({fixed:.1f} s) | "
                      f"{elapsed - fixed:.1f} | {steady:.1f} |")  # fmt: skip
            print(f"load average at the end {os.getloadavg()[0]:.1f}")
        finally:
            if ray.is_initialized():
                ray.shutdown()
            server.stop()
            embeddings.close()
            pg.drop_schema(schema)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
