"""Staleness between two replicas sharing one PostgreSQL store.

Starts a throwaway PostgreSQL (Debian's binaries, as the tests do), two `interest-tree serve`
processes A and B on one schema, loads the shipped sample plus `--extra-items` items with
random caller vectors, builds alice's tree, then measures, for `--probes` new items:

- ack: how long A takes to acknowledge the UpsertItems (the commit, and A's own index);
- staleness: from that acknowledgement to the item being recommendable on B (B's Recommend
  with the item as the only candidate returns it), polled every `--poll-ms`.

B learns of A's commit through LISTEN/NOTIFY and fetches only the changed vectors; its
fallback poll runs every `--replica-poll-s` (raise it to see that notifications, not the
poll, carry the change). Usage:

    .venv/bin/python -m bench.replicas [--probes 50] [--extra-items 5000]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from interesttree.v1 import catalog_pb2, interest_pb2

from bench.loading import load_memory_at
from server.demo import sample_rows
from tests.reliability.support import START
from tests.storage.postgres_server import running_postgres
from tests.storage.replicas import (
    CALL_TIMEOUT_S,
    probe_item,
    recommendable,
    replica_pair,
    wait_until_recommendable,
)


def extra_item_rows(count: int, dim: int, seed: int = 11) -> list[dict[str, Any]]:
    """Items with random caller vectors, as rows of `interest-tree import items`."""
    rng = np.random.default_rng(seed)
    return [
        {
            "id": f"extra-{n}",
            "title": f"Extra item {n}",
            "categories": ["Extra", f"Shelf {n % 20}"],
            "vector": rng.normal(size=dim).astype(np.float32).tolist(),
        }
        for n in range(count)
    ]


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--probes", type=int, default=50)
    parser.add_argument("--extra-items", type=int, default=5000)
    parser.add_argument("--poll-ms", type=float, default=2.0)
    parser.add_argument("--replica-poll-s", type=float, default=5.0)
    args = parser.parse_args(argv)

    with (
        tempfile.TemporaryDirectory(prefix="bench-replicas-") as directory,
        running_postgres() as server,
        replica_pair(server, Path(directory), poll_interval_s=args.replica_poll_s) as pair,
    ):
        a, b = pair.a, pair.b
        # The sample and the extra items, through `interest-tree import`'s own code.
        items, events = sample_rows(START)
        items += extra_item_rows(args.extra_items, pair.embeddings.dim)
        load_memory_at(a.address, items, events)
        a.interests.BuildInterestTree(
            interest_pb2.BuildInterestTreeRequest(user="users/alice"), timeout=CALL_TIMEOUT_S
        )
        wait_until_recommendable(b, "users/alice", f"extra-{args.extra_items - 1}")
        acks: list[float] = []
        staleness: list[float] = []
        for n in range(args.probes):
            item = probe_item(f"probe-{n}", pair.embeddings.dim, n % pair.embeddings.dim)
            sent = time.monotonic()
            a.catalog.UpsertItems(
                catalog_pb2.UpsertItemsRequest(items=[item]), timeout=CALL_TIMEOUT_S
            )
            acked = time.monotonic()
            waited = wait_until_recommendable(
                b, "users/alice", f"probe-{n}", interval_s=args.poll_ms / 1000
            )
            acks.append(acked - sent)
            staleness.append(waited)
        # One Recommend round trip on B, the floor of what the poll can resolve.
        started = time.monotonic()
        for _ in range(20):
            recommendable(b, "users/alice", "probe-0")
        round_trip = (time.monotonic() - started) / 20

    catalog_size = 49 + args.extra_items + args.probes
    print(
        f"two replicas on PostgreSQL, {catalog_size} items, {args.probes} probes, "
        f"fallback poll {args.replica_poll_s} s, probe poll {args.poll_ms} ms"
    )
    print("| measure | p50 | p95 | max | mean |")
    print("| --- | --- | --- | --- | --- |")
    for name, values in (
        ("UpsertItems acknowledged by A", acks),
        ("ack on A → recommendable on B", staleness),
    ):
        print(
            f"| {name} | {percentile(values, 50) * 1000:.1f} ms "
            f"| {percentile(values, 95) * 1000:.1f} ms | {max(values) * 1000:.1f} ms "
            f"| {statistics.fmean(values) * 1000:.1f} ms |"
        )
    print(f"| one Recommend round trip on B | {round_trip * 1000:.1f} ms | | | |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
