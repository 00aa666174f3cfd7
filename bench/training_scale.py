"""Training alone at catalog scale: wall time and peak RSS of ``train_collaborative_model`` on
synthetic sequences (a function call, no gRPC, no store).

Run from the project root: ``python bench/training_scale.py --items 100000 --events 1000000``.

Sequences: users of 50 events on average (geometric lengths, at least 2), items drawn from a
Zipf-like popularity (exponent ``--zipf``) within one of ``items / 50`` taste clusters per
user, so the co-occurrence matrix is sparse and structured as real catalogs are, and every
item has events. Features (``--feature-dim``; 0 = none) are random vectors per cluster plus
noise, for the cold-item map, with 1 % extra items that have features but no events.
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import time
from dataclasses import replace

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from taxonomy.recommendation.training import (
    CollaborativeConfig,
    train_collaborative_model,
)


def peak_rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux


def synthetic(
    n_items: int, n_events: int, zipf: float, seed: int
) -> tuple[list[list[str]], list[int]]:
    rng = np.random.default_rng(seed)
    cluster_size = 50
    n_clusters = max(1, n_items // cluster_size)
    cluster_of_item = np.arange(n_items) % n_clusters
    members = [np.arange(c, n_items, n_clusters) for c in range(n_clusters)]
    ids = [f"item{k:07d}" for k in range(n_items)]
    # The first sequences start with the items of a random permutation (half of each
    # sequence), so every item has events; the rest follow popularity within the cluster.
    sequences: list[list[str]] = []
    remaining = n_events
    order = rng.permutation(n_items)
    seeded = 0
    while remaining > 0:
        length = min(remaining, max(2, int(rng.geometric(1 / 50))))
        c = int(rng.integers(n_clusters))
        pool = members[c]
        weights = 1.0 / np.arange(1, pool.size + 1) ** zipf
        rows = rng.choice(pool, size=length, p=weights / weights.sum())
        if seeded < n_items:
            take = order[seeded : seeded + max(1, length // 2)]
            rows[: take.size] = take
            seeded += take.size
        sequences.append([ids[r] for r in rows.tolist()])
        remaining -= length
    return sequences, cluster_of_item.tolist()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--items", type=int, default=100_000)
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--zipf", type=float, default=1.0)
    parser.add_argument("--feature-dim", type=int, default=384)
    parser.add_argument("--rerank-max-items", type=int, default=None)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    t0 = time.time()
    sequences, cluster_of_item = synthetic(args.items, args.events, args.zipf, args.seed)
    features = None
    if args.feature_dim > 0:
        rng = np.random.default_rng(args.seed + 1)
        n_clusters = max(cluster_of_item) + 1
        centres = rng.standard_normal((n_clusters, args.feature_dim)).astype(np.float32)
        extra = max(1, args.items // 100)
        rows = np.array(cluster_of_item + list(range(extra)), dtype=np.int64) % n_clusters
        matrix = centres[rows]
        # float32 noise added in place: the features alone are 1.5 GB at 10^6 items.
        matrix += 0.5 * rng.standard_normal(matrix.shape, dtype=np.float32)
        ids = [f"item{k:07d}" for k in range(args.items)] + [f"new{k:07d}" for k in range(extra)]
        features = (ids, matrix)
    gen = time.time() - t0
    rss_before = peak_rss_gib()
    print(
        f"generated {sum(map(len, sequences)):,} events in {len(sequences):,} sequences in "
        f"{gen:.0f}s (peak RSS so far {rss_before:.2f} GiB)",
        file=sys.stderr,
        flush=True,
    )
    config = CollaborativeConfig()
    if args.rerank_max_items is not None:
        config = replace(config, rerank_max_items=args.rerank_max_items)
    c0 = time.process_time()
    t1 = time.time()
    model = train_collaborative_model(sequences, config=config, features=features)
    wall, cpu = time.time() - t1, time.process_time() - c0
    print(
        f"items={args.items:,} events={args.events:,} rerank_max_items={config.rerank_max_items:,}"
        f" -> model items={len(model.item_ids):,} dim={model.dim} transitions="
        f"{model.transition_items:,}; training {wall:.0f}s wall / {cpu:.0f}s CPU; peak RSS "
        f"{peak_rss_gib():.2f} GiB (before training {rss_before:.2f} GiB)"
    )


if __name__ == "__main__":
    main()
