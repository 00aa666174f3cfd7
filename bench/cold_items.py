"""New items on the day they arrive: how often an item with no training events is retrieved
for the users who later took it, placed in the collaborative space by the text-to-vector map.

Run from the project root: ``python bench/cold_items.py [--seed 0] [--out FILE]``.

Protocol (MovieLens latest-small, the LlamaRec five-core set of bench/movielens_data.py):

1. A random 10 % of the items are *hidden*: every event of theirs is removed from training.
2. The service's recipe (``train_collaborative_model``) trains on what is left, with the
   text vectors of every item (all-MiniLM-L6-v2 on ``Item.embedding_text()``: title and
   genres, as the catalog embeds them) as ``features``, so the hidden items get mapped vectors.
3. For every (user, hidden item) pair, the query is the user's history *before* they first
   took it (hidden items left out: they are not known as events yet), as one recency-weighted
   user vector (``model.user_vector``), scored exactly against every item of the model (the
   user's history excluded). A hit@K is the hidden item among the K best.

Two views: **all items** (the hidden item competes with the whole catalog, as in the service)
and **hidden items only** (it competes with the other hidden items: is the placement
informative at all). Baselines in the same run: popularity (training counts; a hidden item
has none, so it is never retrieved among all items; among hidden items the *oracle*
popularity, from the hidden events themselves), the text space alone (the user's text
vectors against the items' text vectors), and random (K / candidates).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np
import numpy.typing as npt

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench.movielens_data import load_movielens
from taxonomy.embedder import SentenceTransformerEmbedder, packaged_minilm_path
from taxonomy.models import Item
from taxonomy.recommendation.collaborative_model import CollaborativeModel, context_weights
from taxonomy.recommendation.training import (
    CollaborativeConfig,
    train_collaborative_model,
)

KS = (10, 50, 100)
F32 = npt.NDArray[np.float32]
F64 = npt.NDArray[np.float64]


@dataclass(frozen=True)
class Case:
    history: list[str]
    target: str


def text_vectors(titles: list[str], genres: list[tuple[str, ...]]) -> F32:
    texts = [
        Item(item_id=f"i{k}", title=t, tags=list(g) if g else []).embedding_text()
        for k, (t, g) in enumerate(zip(titles, genres, strict=True))
    ]
    embedder = SentenceTransformerEmbedder(packaged_minilm_path())
    return asyncio.run(embedder.embed(texts))


def hits(scores: F64, candidates: list[str], target: str, excluded: set[str]) -> dict[int, bool]:
    """Whether ``target`` is among the K best ``candidates`` by score (``excluded`` left out)."""
    position = {c: k for k, c in enumerate(candidates)}
    s = scores.copy()
    for item in excluded:
        k = position.get(item)
        if k is not None:
            s[k] = -np.inf
    t = position[target]
    rank = int(np.sum(s > s[t]))  # ties count in the target's favour, as a stable sort would
    return {k: rank < k for k in KS}


def evaluate(
    cases: list[Case],
    candidates: list[str],
    score: dict[str, object],
) -> dict[str, dict[int, float]]:
    """hit@K per method; ``score[method](case)`` gives scores over ``candidates``."""
    out: dict[str, dict[int, float]] = {}
    for method, fn in score.items():
        total = dict.fromkeys(KS, 0)
        for case in cases:
            h = hits(fn(case), candidates, case.target, set(case.history))  # type: ignore[operator]
            for k in KS:
                total[k] += h[k]
        out[method] = {k: total[k] / len(cases) for k in KS}
    return out


def hidden_share_of_top(
    cases: list[Case],
    candidates: list[str],
    hidden: set[str],
    vectors: F64,
    user: object,
    k: int = 10,
) -> float:
    """Mean share of the top ``k`` that hidden items take: placed vectors that crowd out the
    learned ones would take far more than the hidden items' share of events."""
    is_hidden = np.array([c in hidden for c in candidates])
    position = {c: j for j, c in enumerate(candidates)}
    total = 0.0
    for case in cases:
        s = vectors @ user(case)  # type: ignore[operator]
        s[[position[i] for i in case.history if i in position]] = -np.inf
        top = np.argpartition(-s, k)[:k]
        total += float(is_hidden[top].mean())
    return total / len(cases)


def measure(
    model: CollaborativeModel,
    cases: list[Case],
    hidden: set[str],
    feature_of: dict[str, F32],
    counts: dict[str, int],
    oracle: dict[str, int],
    key: str,
    *,
    baselines: bool,
) -> tuple[dict[str, dict[int, float]], float]:
    """hit@K of the mapped vectors (and, with ``baselines``, of the baselines) in both views,
    and the hidden items' share of the top 10."""
    candidates = list(model.item_ids)
    hidden_list = sorted(hidden)
    vec = model.item_vectors.astype(np.float64)
    rows = [model.index_of(i) for i in hidden_list]
    hidden_vec = vec[[row for row in rows if row is not None]]
    assert hidden_vec.shape[0] == len(hidden_list)

    def user(case: Case) -> F64:
        return model.user_vector(case.history).astype(np.float64)

    def text_user(case: Case) -> F64:
        w = context_weights(len(case.history), window=model.window, decay=model.decay)
        return w @ np.stack([feature_of[i] for i in case.history]).astype(np.float64)

    out = {
        f"all items, mapped vectors ({key})": evaluate(
            cases, candidates, {"m": lambda c: vec @ user(c)}
        )["m"],
        f"hidden items only, mapped vectors ({key})": evaluate(
            cases, hidden_list, {"m": lambda c: hidden_vec @ user(c)}
        )["m"],
    }
    crowding = hidden_share_of_top(cases, candidates, hidden, vec, user)
    if baselines:
        text_all = np.stack([feature_of[i] for i in candidates]).astype(np.float64)
        text_hidden = np.stack([feature_of[i] for i in hidden_list]).astype(np.float64)
        pop_all = np.array([counts.get(i, 0) for i in candidates], dtype=np.float64)
        pop_hidden = np.array([oracle.get(i, 0) for i in hidden_list], dtype=np.float64)
        out["all items, popularity"] = evaluate(cases, candidates, {"m": lambda c: pop_all})["m"]
        out["all items, text space alone"] = evaluate(
            cases, candidates, {"m": lambda c: text_all @ text_user(c)}
        )["m"]
        out["hidden items only, oracle popularity"] = evaluate(
            cases, hidden_list, {"m": lambda c: pop_hidden}
        )["m"]
        out["hidden items only, text space alone"] = evaluate(
            cases, hidden_list, {"m": lambda c: text_hidden @ text_user(c)}
        )["m"]
        out["hidden items only, random"] = {k: k / len(hidden_list) for k in KS}
    return out, crowding


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--hide", type=float, default=0.1, help="share of items hidden")
    parser.add_argument(
        "--l2", type=float, nargs="*", default=[], help="also report these feature_l2 values"
    )
    parser.add_argument("--out", type=Path, default=None, help="write the markdown table here")
    parser.add_argument(
        "--lengths", type=float, nargs="*", default=[], help="also place at these lengths"
    )
    parser.add_argument(
        "--features-cache", type=Path, default=None, help="an .npy of the text vectors to reuse"
    )
    args = parser.parse_args()
    t0 = time.time()
    data = load_movielens()
    n_items = len(data.item_ids)
    ids = [f"m{movie}" for movie in data.item_ids]
    rng = np.random.default_rng(args.seed)
    hidden_rows = rng.choice(n_items, size=round(args.hide * n_items), replace=False)
    hidden = {ids[k] for k in hidden_rows.tolist()}

    full = [[ids[k] for k in [*u.train_items, u.valid_item, u.test_item]] for u in data.users]
    train = [[i for i in seq if i not in hidden] for seq in full]
    cases: list[Case] = []
    for seq in full:
        seen: set[str] = set()
        for t, item in enumerate(seq):
            if item in hidden and item not in seen:
                seen.add(item)
                history = [i for i in seq[:t] if i not in hidden]
                if history:
                    cases.append(Case(history, item))
    hidden_events = sum(1 for seq in full for i in seq if i in hidden)

    if args.features_cache is not None and args.features_cache.exists():
        features = np.load(args.features_cache)
    else:
        features = text_vectors([m.title for m in data.movies], [m.genres for m in data.movies])
        if args.features_cache is not None:
            np.save(args.features_cache, features)
    feature_of = {item: features[k] for k, item in enumerate(ids)}
    print(f"data and text vectors in {time.time() - t0:.0f}s", file=sys.stderr)

    base = CollaborativeConfig()
    results: dict[str, dict[int, float]] = {}
    l2_values = [base.feature_l2, *[v for v in args.l2 if v != base.feature_l2]]
    counts: dict[str, int] = {}
    for seq in train:
        for i in seq:
            counts[i] = counts.get(i, 0) + 1
    oracle: dict[str, int] = {}
    for seq in full:
        for i in seq:
            if i in hidden:
                oracle[i] = oracle.get(i, 0) + 1
    train_wall = 0.0
    crowding: dict[str, float] = {}
    for l2 in l2_values:
        t1 = time.time()
        model = train_collaborative_model(
            train, config=replace(base, feature_l2=l2), features=(ids, features)
        )
        train_wall = train_wall or time.time() - t1
        assert all(model.index_of(i) is not None for i in hidden)
        key = f"l2={l2:g}, length {model.feature_scale:.2f}"
        found, crowding[key] = measure(
            model, cases, hidden, feature_of, counts, oracle, key, baselines=l2 == base.feature_l2
        )
        results.update(found)
        assert model.feature_map is not None
        rows = [model.index_of(i) for i in sorted(hidden)]
        x = np.stack([feature_of[i] for i in sorted(hidden)]).astype(np.float64)
        x /= np.linalg.norm(x, axis=1, keepdims=True)
        raw = x @ model.feature_map.astype(np.float64)
        unit = raw / np.linalg.norm(raw, axis=1, keepdims=True)
        for name, placed in (
            ("unit length", unit),
            ("ridge prediction's own length", raw),
            *((f"length {length:g}", length * unit) for length in args.lengths),
        ):
            vectors = model.item_vectors.copy()
            vectors[[r for r in rows if r is not None]] = placed.astype(np.float32)
            variant = replace(model, item_vectors=vectors, context_vectors=vectors)
            found, crowding[f"{key}, {name}"] = measure(
                variant,
                cases,
                hidden,
                feature_of,
                counts,
                oracle,
                f"{key}, {name}",
                baselines=False,
            )
            results.update(found)
        print(f"{key} done in {time.time() - t1:.0f}s", file=sys.stderr)

    lines = [
        f"MovieLens latest-small (five-core, {n_items:,} items, {len(data.users):,} users): "
        f"{len(hidden):,} items hidden (seed {args.seed}) with {hidden_events:,} events; "
        f"{len(cases):,} (user, hidden item) cases; training on the rest took "
        f"{train_wall:.1f}s wall.",
        "",
        "| view, method | hit@10 | hit@50 | hit@100 |",
        "| --- | --- | --- | --- |",
    ]
    for method, m in results.items():
        lines.append(f"| {method} | {m[10]:.4f} | {m[50]:.4f} | {m[100]:.4f} |")
    lines.append("")
    lines.append(
        "Share of the top 10 (all items, the same cases) taken by hidden items, against their "
        f"{hidden_events / sum(map(len, full)):.1%} share of all events: "
        + ", ".join(f"{key}: {share:.1%}" for key, share in crowding.items())
    )
    lines.append("")
    lines.append(f"total {time.time() - t0:.0f}s wall")
    text = "\n".join(lines)
    print(text)
    if args.out is not None:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
