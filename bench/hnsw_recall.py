"""Recall@k and speed of HnswIndex.query against its own brute-force exact_query.

Usage: python bench/hnsw_recall.py [--n 20000] [--dim 64] [--ef 16 32 64 128] [--queries 500]

Data are seeded, clustered gaussians (clusters make the graph search harder than uniform noise
and look more like real embeddings). Queries are fresh draws from the same mixture, so no query
is itself in the index. Both query paths go through the same one-query-at-a-time public API and
are timed in the same run, so the ratio is comparable even on a noisy machine.

The exact baseline is one BLAS matrix-vector product per query; on a small or busy machine
OpenBLAS threading can make it many times slower, so compare with OPENBLAS_NUM_THREADS=1 too.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

# Run as a plain script from the repository root without installing the package.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from index import HnswIndex
from index.hnsw import Space


def clustered(
    rng: np.random.Generator, n: int, centers: NDArray[np.float64], spread: float
) -> NDArray[np.float32]:
    assignment = rng.integers(0, centers.shape[0], size=n)
    noise = rng.normal(scale=spread, size=(n, centers.shape[1]))
    points: NDArray[np.float32] = (centers[assignment] + noise).astype(np.float32)
    return points


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--n", type=int, default=20_000, help="indexed vectors")
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--ef", type=int, nargs="+", default=[16, 32, 64, 128], help="ef_search")
    parser.add_argument("--queries", type=int, default=500)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--clusters", type=int, default=100)
    parser.add_argument("--spread", type=float, default=0.35, help="within-cluster std dev")
    parser.add_argument("--m", type=int, default=16)
    parser.add_argument("--ef-construction", type=int, default=200)
    parser.add_argument("--space", choices=["cosine", "ip", "l2"], default="cosine")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    space: Space = args.space

    rng = np.random.default_rng(args.seed)
    centers = rng.normal(size=(args.clusters, args.dim))
    data = clustered(rng, args.n, centers, args.spread)
    queries = clustered(rng, args.queries, centers, args.spread)
    ids = [f"v{i}" for i in range(args.n)]

    index = HnswIndex(
        args.dim,
        space=space,
        m=args.m,
        ef_construction=args.ef_construction,
        initial_capacity=args.n,
    )
    started = time.perf_counter()
    index.upsert(ids, data)
    build_s = time.perf_counter() - started

    # The first exact query materialises the live-vector cache; keep that out of the timing.
    index.exact_query(queries[0], args.k)
    started = time.perf_counter()
    truth = [[item_id for item_id, _ in index.exact_query(q, args.k)] for q in queries]
    exact_s = time.perf_counter() - started

    rows = []
    for ef in args.ef:
        index.set_ef(ef)
        for q in queries[:20]:
            index.query(q, args.k)
        started = time.perf_counter()
        found = [[item_id for item_id, _ in index.query(q, args.k)] for q in queries]
        hnsw_s = time.perf_counter() - started
        hits = sum(len(set(f) & set(t)) for f, t in zip(found, truth, strict=True))
        recall = hits / sum(len(t) for t in truth)
        rows.append((ef, recall, hnsw_s, exact_s / hnsw_s))

    per_query = 1000.0 / args.queries
    print(
        f"n={args.n} dim={args.dim} space={space} M={args.m} "
        f"ef_construction={args.ef_construction} clusters={args.clusters} "
        f"queries={args.queries} k={args.k} seed={args.seed}"
    )
    print(f"build: {build_s:.2f} s   exact_query: {exact_s * per_query:.3f} ms/query")
    header = f"{'ef':>6} | {'recall@' + str(args.k):>10} | {'hnsw ms/q':>10} | {'exact/hnsw':>10}"
    print(header)
    print("-" * len(header))
    for ef, recall, hnsw_s, ratio in rows:
        print(f"{ef:>6} | {recall:>10.4f} | {hnsw_s * per_query:>10.3f} | {ratio:>9.1f}x")


if __name__ == "__main__":
    main()
