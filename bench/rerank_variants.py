"""Which re-ranker scales and still scores: the recipe's re-ranking stage with other next-item
matrices ``B``, on the MovieLens test pass of bench/movielens_offline.py.

Run from the project root: ``python bench/rerank_variants.py [--sansa-python /path/python]``.

The fused-vector stage, K and blend are the recipe's (tuned on validation by
bench/movielens_offline.py: levels w=(0, 0.5, 0.25, 1), genre half-life 50, K=200,
blend 0.6); only ``B`` changes:

- the recipe: the dense transition ridge over every item (3,650 here);
- the same over the ``rerank_max_items`` most frequent items only, tail items getting an exact
  score of 0 (the fused score ranks them), as the service does above that many items;
- the dense ``B`` sparsified to its top-k entries per row (what a top-k-neighbour model stores);
- exact EASE (what sansa approximates), weighted like the transition model and over the last
  5 items; lambda chosen on this test pass, so an optimistic bound;
- sansa itself, fitted in a separate interpreter (``--sansa-python``; its scikit-sparse needs
  Debian's libsuitesparse-dev) on the same interaction matrix.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np
import scipy.sparse as sp

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench.movielens_data import load_movielens
from bench.movielens_offline import (
    F64,
    RECENT_WINDOW,
    TRANSITION_CONFIG,
    Pass,
    build_levels,
    ease_matrix,
    fmt_metrics,
    interaction_matrix,
    last_n,
    low_rank_item_scores,
    model_perm,
    rerank_scores,
    transition_exact,
    unknown_to_neg_inf,
    weight_matrix,
)
from taxonomy.recommendation.training import (
    CollaborativeConfig,
    CooccurrenceConfig,
    train_collaborative_model,
)

K, BLEND = 200, 0.6
LEVELS = (0.0, 0.5, 0.25, 50.0)
SANSA_SCRIPT = Path(__file__).with_name("sansa_fit.py")


def sparsify_rows(b: F64, k: int) -> F64:
    out = np.zeros_like(b)
    top = np.argpartition(-np.abs(b), k, axis=1)[:, :k]
    rows = np.arange(b.shape[0])[:, None]
    out[rows, top] = b[rows, top]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sansa-python", default=None, help="an interpreter with sansa")
    parser.add_argument(
        "--sansa",
        nargs="*",
        default=["100/0.01/icf", "100/0.05/icf", "100/0.05/cholmod"],
        help="sansa fits as l2/density/factorizer",
    )
    parser.add_argument(
        "--only-sansa", action="store_true", help="skip the head, top-k and EASE variants"
    )
    args = parser.parse_args()
    t0 = time.time()
    data = load_movielens()
    test = Pass(data, for_test=True)
    recipe = CollaborativeConfig(
        vectors=CooccurrenceConfig(dim=256, window=5, decay=0.7),
        transitions=TRANSITION_CONFIG,
        query_window=RECENT_WINDOW,
        query_decay=0.6,
    )
    model = train_collaborative_model(test.sequences(), config=recipe)
    sim, perm = low_rank_item_scores(model, test)
    w0, w1, w2, hl = LEVELS
    fused = unknown_to_neg_inf(build_levels(test, 0.6).combine(w0, w1, w2, hl) @ sim, perm)
    exact, _ = transition_exact(model, test)
    rows: list[tuple[str, str]] = []

    def report(name: str, scores: F64) -> None:
        reranked = rerank_scores(fused, scores, test.mask, K, BLEND)
        rows.append((name, fmt_metrics(test.evaluate(reranked))))
        print(f"{name}: {rows[-1][1]} ({time.time() - t0:.0f}s)", file=sys.stderr, flush=True)

    rows.append(("fused vector alone (no re-rank)", fmt_metrics(test.evaluate(fused))))
    report(f"recipe: dense transition B, all {data.n_items:,} items", exact)
    for head in () if args.only_sansa else (2000, 1000, 500):
        small = train_collaborative_model(
            test.sequences(), config=replace(recipe, rerank_max_items=head)
        )
        sim_h, perm_h = low_rank_item_scores(small, test)
        fused_h = unknown_to_neg_inf(
            build_levels(test, 0.6).combine(w0, w1, w2, hl) @ sim_h, perm_h
        )
        exact_h, _ = transition_exact(small, test)
        rows.append(
            (
                f"head only: transition B over the {head:,} most frequent items",
                fmt_metrics(test.evaluate(rerank_scores(fused_h, exact_h, test.mask, K, BLEND))),
            )
        )
        print(rows[-1], file=sys.stderr, flush=True)
    assert model.transitions is not None
    ok = model_perm(model, data.item_ids)
    b_bench = model.transitions[np.ix_(ok, ok)].astype(np.float64)
    weighting = model.rerank_weighting or model.query_weighting
    ctx = weight_matrix(test.histories, data.n_items, weighting.weights)
    for k in () if args.only_sansa else (200, 50):
        report(f"transition B, top-{k} entries per row", ctx @ sparsify_rows(b_bench, k))
    x = interaction_matrix(test.histories, data.n_items)
    last5 = weight_matrix(test.histories, data.n_items, last_n(5))
    for lam in () if args.only_sansa else (50.0, 200.0, 500.0):
        b = ease_matrix(x, lam)
        report(f"exact EASE lambda={lam:g}, transition weighting", ctx @ b)
        report(f"exact EASE lambda={lam:g}, last 5 items", last5 @ b)
    if args.sansa_python:
        with tempfile.TemporaryDirectory() as tmp:
            sp.save_npz(f"{tmp}/x.npz", x.tocsr())
            subprocess.run(
                [args.sansa_python, str(SANSA_SCRIPT), f"{tmp}/x.npz", f"{tmp}/b.npz", *args.sansa],
                check=True,
            )
            with np.load(f"{tmp}/b.npz") as fitted:
                for spec in args.sansa:
                    b = fitted[spec.replace("/", "_").replace(".", "p")].astype(np.float64)
                    report(f"sansa {spec}, transition weighting", ctx @ b)
                    report(f"sansa {spec}, last 5 items", last5 @ b)
    columns = "NDCG@5 NDCG@10 Recall@5 Recall@10 MRR@10"
    print(f"| re-ranking B (test pass) | {columns.replace(' ', ' | ')} |")
    print("| --- |" + " --- |" * 5)
    for name, metrics in rows:
        print(f"| {name} | {metrics.replace(' ', ' | ')} |")
    print(f"\ntotal {time.time() - t0:.0f}s wall")


if __name__ == "__main__":
    main()
