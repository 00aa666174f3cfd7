"""Recommendation quality of the real service on MovieLens latest-small (LlamaRec protocol).

    .venv/bin/python bench/eval_movielens.py [--out bench/results/movielens.md]
    .venv/bin/python bench/eval_movielens.py --low-ratings-as-dislikes 2.0 \
        [--out bench/results/movielens_dislikes.md]

For each pass (validation, then test) a fresh server is started on a real port over real
files. The script writes the catalog and the history events (train, or train + validation for
the test pass) to JSON Lines files and loads them with `interest-tree import`'s own code
(bench/loading.py), calls RefreshModels and BatchBuildInterestTrees, and then calls
Recommend for every user. It scores the held-out item, which the service never sees. Level
weights are tuned on validation only. Popularity and EASE baselines are recomputed in the same
run. Trees are built with naming off: the language model only renames nodes, and never changes
the structure or the vectors that retrieval uses.

With ``--low-ratings-as-dislikes T`` the script compares two arms at the default level weights:
every history rating sent as today's event (no type), and ratings <= T sent as
EVENT_TYPE_DISLIKE. Only the history's event types differ: the split, the held-out items
(whatever their rating, as the protocol holds them out) and the scoring are the same.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import grpc
import numpy as np
from interesttree.v1 import admin_pb2, interest_pb2, recommendation_pb2

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.loading import load_files
from bench.metrics import METRIC_NAMES, Metrics, evaluate, metrics_from_ranks
from bench.movielens_data import MovieLensSplits, load_movielens
from server.app import Runtime, create_server
from server.config import Settings
from taxonomy.engine import EngineConfig
from taxonomy.recommendation.negative import DEFAULT_DISLIKE_WEIGHT
from taxonomy.trees.naming import NamingMode
from tests.conftest import Stubs, make_stubs

PAGE = 10
LEVEL_WEIGHT_GRID = [
    EngineConfig().default_level_weights,
    (1.0, 0.0, 0.0, 0.0),
    (0.0, 1.0, 0.0, 0.0),
    (1.0, 1.0, 1.0, 1.0),
    (0.1, 0.9, 0.9, 0.9),
    (0.3, 0.7, 0.7, 0.7),
    (0.5, 0.5, 0.5, 0.5),
]
"""The defaults first; bench/level_sweep.py has the finer sweep with diversity measures."""


def item_rows(data: MovieLensSplits) -> list[dict[str, Any]]:
    """The catalog as rows of `interest-tree import items`: every movie, its genres as tags."""
    return [
        {
            "id": movie.movie_id,
            "title": movie.title,
            "tags": [g for g in movie.genres if g != "(no genres listed)"],
        }
        for movie in data.movies
    ]


def event_rows(
    data: MovieLensSplits, *, for_test: bool, dislike_threshold: float | None = None
) -> list[dict[str, Any]]:
    """The history as rows of `interest-tree import events` (the held-out item of the pass is
    never among them): no type (today's default), or, with `dislike_threshold`, `dislike` for
    every rating at or below it. Times are the ratings' Unix seconds."""
    rows: list[dict[str, Any]] = []
    for user in data.users:
        for item, stamp, rating in zip(
            user.history(for_test=for_test),
            user.history_times(for_test=for_test),
            user.history_ratings(for_test=for_test),
            strict=True,
        ):
            row: dict[str, Any] = {
                "user": user.user_id,
                "item": data.item_ids[item],
                "time": int(stamp),
            }
            if dislike_threshold is not None and rating <= dislike_threshold:
                row["type"] = "dislike"
            rows.append(row)
    return rows


async def load_service(
    stubs: Stubs,
    data: MovieLensSplits,
    *,
    for_test: bool,
    dislike_threshold: float | None = None,
) -> dict[str, float]:
    """Loads the pass through `interest-tree import`'s own code (bench/loading.py): the catalog
    and the history written as JSON Lines files, then imported; "upsert" and "events" time the
    imports. Then RefreshModels and every user's tree."""
    timings = await load_files(
        stubs.channel,
        item_rows(data),
        event_rows(data, for_test=for_test, dislike_threshold=dislike_threshold),
    )
    started = time.perf_counter()
    await stubs.admin.RefreshModels(admin_pb2.RefreshModelsRequest(), timeout=1800)
    timings["refresh"] = time.perf_counter() - started
    started = time.perf_counter()
    async for result in stubs.interests.BatchBuildInterestTrees(
        interest_pb2.BatchBuildInterestTreesRequest(all_users=True), timeout=3600
    ):
        if result.error:
            raise RuntimeError(f"{result.user}: {result.error}")
    timings["trees"] = time.perf_counter() - started
    return timings


async def service_lists(
    stubs: Stubs, data: MovieLensSplits, *, for_test: bool, level_weights: Sequence[float]
) -> list[list[int]]:
    """Every user's top PAGE, as dense item indices (history items never among them)."""
    index = {item_id: k for k, item_id in enumerate(data.item_ids)}

    async def one(user_index: int) -> list[int]:
        user = data.users[user_index]
        response = await stubs.recommender.Recommend(
            recommendation_pb2.RecommendRequest(
                user=f"users/{user.user_id}", page_size=PAGE, level_weights=level_weights
            ),
            timeout=60,
        )
        items = [index[rec.item.removeprefix("items/")] for rec in response.recommendations]
        assert not set(items) & set(user.history(for_test=for_test))
        return items

    lists: list[list[int]] = []
    for start in range(0, data.n_users, 16):
        batch = range(start, min(start + 16, data.n_users))
        lists += await asyncio.gather(*(one(u) for u in batch))
    return lists


def list_ranks(lists: Sequence[Sequence[int]], targets: Sequence[int]) -> np.ndarray:
    """The target's place in each list, PAGE when it is not there."""
    return np.asarray(
        [
            list(items).index(t) if t in items else PAGE
            for items, t in zip(lists, targets, strict=True)
        ],
        dtype=np.int64,
    )


async def service_ranks(
    stubs: Stubs, data: MovieLensSplits, *, for_test: bool, level_weights: Sequence[float]
) -> np.ndarray:
    lists = await service_lists(stubs, data, for_test=for_test, level_weights=level_weights)
    return list_ranks(lists, data.targets(for_test=for_test))


def interaction_matrix(data: MovieLensSplits, *, for_test: bool) -> np.ndarray:
    matrix = np.zeros((data.n_users, data.n_items), dtype=np.float64)
    for row, history in enumerate(data.histories(for_test=for_test)):
        matrix[row, history] = 1.0
    return matrix


def ease_scores(matrix: np.ndarray, l2: float) -> np.ndarray:
    gram = matrix.T @ matrix
    gram[np.diag_indices_from(gram)] += l2
    precision = np.linalg.inv(gram)
    weights = -precision / np.diag(precision)
    weights[np.diag_indices_from(weights)] = 0.0
    scores: np.ndarray = matrix @ weights
    return scores


def baselines(data: MovieLensSplits) -> dict[str, tuple[Metrics, Metrics, str]]:
    results: dict[str, tuple[Metrics, Metrics, str]] = {}
    rows: dict[bool, np.ndarray] = {
        flag: interaction_matrix(data, for_test=flag) for flag in (False, True)
    }

    def score(flag: bool, scores: np.ndarray) -> Metrics:
        return evaluate(scores, data.histories(for_test=flag), data.targets(for_test=flag))

    popularity = {flag: np.tile(rows[flag].sum(axis=0), (data.n_users, 1)) for flag in rows}
    results["popularity"] = (score(False, popularity[False]), score(True, popularity[True]), "")
    best = max(
        (50.0, 100.0, 200.0, 500.0),
        key=lambda l2: score(False, ease_scores(rows[False], l2)).ndcg10,
    )
    results["EASE"] = (
        score(False, ease_scores(rows[False], best)),
        score(True, ease_scores(rows[True], best)),
        f"λ = {best:g} (tuned on validation)",
    )
    return results


@dataclass
class LoadedService:
    stubs: Stubs
    settings: Settings
    timings: dict[str, float]


def item_neighbours(matrix: np.ndarray, k: int = 10) -> np.ndarray:
    """Each item's k nearest items by cosine of their user columns (itself left out), as an
    (n_items, k) array of indices; ties go to the lower index."""
    norms = np.linalg.norm(matrix, axis=0)
    unit = matrix / np.where(norms > 0, norms, 1.0)
    similarity = unit.T @ unit
    np.fill_diagonal(similarity, -np.inf)
    order = np.argsort(-similarity, axis=1, kind="stable")
    neighbours: np.ndarray = order[:, :k]
    return neighbours


def disliked_neighbour_share(
    lists: Sequence[Sequence[int]],
    disliked: Sequence[Sequence[int]],
    neighbours: np.ndarray,
) -> tuple[float, int]:
    """Of the recommended items of users with at least one disliked item, the share that are
    among the k nearest neighbours of one of that user's disliked items; and how many users
    that counts."""
    hits = shown = users = 0
    for items, bad in zip(lists, disliked, strict=True):
        if not bad:
            continue
        near = set(neighbours[list(bad)].ravel().tolist())
        hits += sum(item in near for item in items)
        shown += len(items)
        users += 1
    return (hits / shown if shown else 0.0), users


@contextlib.asynccontextmanager
async def loaded_service(
    data: MovieLensSplits,
    *,
    for_test: bool,
    workdir: Path,
    dislike_threshold: float | None = None,
    dislike_weight: float = DEFAULT_DISLIKE_WEIGHT,
) -> AsyncIterator[LoadedService]:
    """A fresh server on a real port over real files, loaded with one split's history."""
    settings = Settings(
        data_dir=workdir / ("test" if for_test else "validation"),
        embedded_llm=False,
        naming_mode=NamingMode.OFF,
        dislike_weight=dislike_weight,
    )
    runtime = await Runtime.create(settings)
    server, port = create_server("127.0.0.1:0", runtime.engine, runtime.health)
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            stubs = make_stubs(channel)
            timings = await load_service(
                stubs, data, for_test=for_test, dislike_threshold=dislike_threshold
            )
            yield LoadedService(stubs, settings, timings)
    finally:
        await server.stop(1)
        await runtime.close()


async def run_pass(
    data: MovieLensSplits, *, for_test: bool, weight_grid: Sequence[Sequence[float]], workdir: Path
) -> tuple[dict[tuple[float, ...], Metrics], dict[str, float]]:
    async with loaded_service(data, for_test=for_test, workdir=workdir) as service:
        results: dict[tuple[float, ...], Metrics] = {}
        started = time.perf_counter()
        for weights in weight_grid:
            ranks = await service_ranks(
                service.stubs, data, for_test=for_test, level_weights=weights
            )
            results[tuple(weights)] = metrics_from_ranks(ranks)
            print(f"  weights {weights}: NDCG@10 {results[tuple(weights)].ndcg10:.4f}", flush=True)
        service.timings["recommend"] = (time.perf_counter() - started) / len(weight_grid)
        return results, service.timings


def table(rows: list[tuple[str, Metrics, Metrics, str]]) -> str:
    header = "| method | " + " | ".join(f"val {m}" for m in ("NDCG@10", "Recall@10")) + " | "
    header += " | ".join(f"test {m}" for m in METRIC_NAMES) + " | note |"
    lines = [header, "|" + " --- |" * (len(METRIC_NAMES) + 4)]
    for name, valid, test, note in rows:
        cells = [
            f"{valid.ndcg10:.4f}",
            f"{valid.recall10:.4f}",
            *(f"{v:.4f}" for v in test.as_tuple()),
        ]
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {note} |")
    return "\n".join(lines)


@dataclass
class Arm:
    """One arm of the dislike comparison, per pass (False = validation, True = test)."""

    metrics: dict[bool, Metrics]
    liked_targets: dict[bool, Metrics]
    low_targets: dict[bool, Metrics]
    share: dict[bool, float]
    timings: dict[bool, dict[str, float]]


async def dislike_arm(
    data: MovieLensSplits,
    *,
    threshold: float,
    dislike_threshold: float | None,
    workdir: Path,
    dislike_weight: float = DEFAULT_DISLIKE_WEIGHT,
) -> Arm:
    weights = EngineConfig().default_level_weights
    arm = Arm({}, {}, {}, {}, {})
    for for_test in (False, True):
        async with loaded_service(
            data,
            for_test=for_test,
            workdir=workdir,
            dislike_threshold=dislike_threshold,
            dislike_weight=dislike_weight,
        ) as service:
            started = time.perf_counter()
            lists = await service_lists(
                service.stubs, data, for_test=for_test, level_weights=weights
            )
            service.timings["recommend"] = time.perf_counter() - started
        ranks = list_ranks(lists, data.targets(for_test=for_test))
        low = np.asarray([u.target_rating(for_test=for_test) <= threshold for u in data.users])
        disliked = [
            [
                i
                for i, r in zip(
                    u.history(for_test=for_test), u.history_ratings(for_test=for_test), strict=True
                )
                if r <= threshold
            ]
            for u in data.users
        ]
        neighbours = item_neighbours(interaction_matrix(data, for_test=for_test))
        arm.metrics[for_test] = metrics_from_ranks(ranks)
        arm.liked_targets[for_test] = metrics_from_ranks(ranks[~low])
        arm.low_targets[for_test] = metrics_from_ranks(ranks[low])
        arm.share[for_test], _ = disliked_neighbour_share(lists, disliked, neighbours)
        arm.timings[for_test] = service.timings
        name = "test" if for_test else "validation"
        print(
            f"  {name}: NDCG@10 {arm.metrics[for_test].ndcg10:.4f} "
            f"Recall@10 {arm.metrics[for_test].recall10:.4f} "
            f"near-dislike share {arm.share[for_test]:.4f}",
            flush=True,
        )
    return arm


async def compare_dislikes(data: MovieLensSplits, threshold: float, out: Path) -> int:
    started = time.perf_counter()
    arms: dict[str, Arm] = {}
    with tempfile.TemporaryDirectory(prefix="interest-tree-eval-") as tmp:
        for name, cut in (("default", None), ("dislikes", threshold)):
            print(f"Arm {name}…", flush=True)
            arms[name] = await dislike_arm(
                data, threshold=threshold, dislike_threshold=cut, workdir=Path(tmp) / name
            )
    elapsed = time.perf_counter() - started
    low = {
        flag: sum(u.target_rating(for_test=flag) <= threshold for u in data.users)
        for flag in (False, True)
    }
    disliked_events = {
        flag: sum(r <= threshold for u in data.users for r in u.history_ratings(for_test=flag))
        for flag in (False, True)
    }
    users_with = sum(any(r <= threshold for r in u.train_ratings) for u in data.users)
    header = (
        "| history events | val NDCG@10 | val Recall@10 | test NDCG@10 | test Recall@10 "
        "| val / test share of top-10 near a dislike |"
    )
    lines = [header, "| --- | ---: | ---: | ---: | ---: | ---: |"]
    labels = {
        "default": "every rating as an event (today)",
        "dislikes": f"ratings ≤ {threshold:g} as EVENT_TYPE_DISLIKE",
    }
    for name, arm in arms.items():
        m = arm.metrics
        lines.append(
            f"| {labels[name]} | {m[False].ndcg10:.4f} | {m[False].recall10:.4f} "
            f"| {m[True].ndcg10:.4f} | {m[True].recall10:.4f} "
            f"| {arm.share[False]:.4f} / {arm.share[True]:.4f} |"
        )
    split = [
        "| history events | targets | val NDCG@10 | val Recall@10 | test NDCG@10 "
        "| test Recall@10 |",
        "| --- | --- | ---: | ---: | ---: | ---: |",
    ]
    for name, arm in arms.items():
        for kind, part in (
            (f"rated > {threshold:g}", arm.liked_targets),
            (f"rated ≤ {threshold:g}", arm.low_targets),
        ):
            split.append(
                f"| {labels[name]} | {kind} | {part[False].ndcg10:.4f} "
                f"| {part[False].recall10:.4f} | {part[True].ndcg10:.4f} "
                f"| {part[True].recall10:.4f} |"
            )
    timing = "; ".join(
        f"{name} test pass: " + ", ".join(f"{k} {v:.0f} s" for k, v in arm.timings[True].items())
        for name, arm in arms.items()
    )
    report = "\n".join(
        [
            "# MovieLens latest-small, LlamaRec protocol: low ratings as dislikes",
            "",
            f"Command: `.venv/bin/python bench/eval_movielens.py --low-ratings-as-dislikes "
            f"{threshold:g} --out {out}`; run {datetime.now(UTC):%Y-%m-%d} on a 2-core CPU machine "
            f"shared with other jobs; total {elapsed / 60:.1f} min ({timing}).",
            "",
            "Both arms use the default level weights "
            f"{tuple(EngineConfig().default_level_weights)} and the same split, held-out items and "
            "scoring as `bench/results/movielens.md`. Only the event type of history ratings "
            f"≤ {threshold:g} differs: {disliked_events[False]:,} of the validation pass's "
            f"history events and {disliked_events[True]:,} of the test pass's "
            f"({users_with} of {data.n_users} users have at least one). Disliked items stay "
            "excluded from the user's lists, as seen items.",
            "",
            "\n".join(lines),
            "",
            "The last column: of the top-10 items of users with at least one disliked item, "
            "the share that are among the 10 nearest neighbours of one of that user's disliked "
            "items (cosine of the items' user columns in the pass's interaction matrix, the same "
            "neutral judge for both arms).",
            "",
            "The protocol holds out the last and second-to-last item whatever their rating, so "
            f"the targets are unchanged: {low[False]} validation and {low[True]} test targets "
            f"are rated ≤ {threshold:g}, and a hit on them still counts. Split by target rating:",
            "",
            "\n".join(split),
            "",
        ]
    )
    print(report)
    write_report(out, report)
    return 0


def write_report(out: Path, report: str) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(report)


async def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument(
        "--low-ratings-as-dislikes",
        type=float,
        default=None,
        metavar="THRESHOLD",
        help="compare today's events with ratings <= THRESHOLD sent as EVENT_TYPE_DISLIKE",
    )
    args = parser.parse_args(argv)
    started = time.perf_counter()
    data = load_movielens()
    print(f"MovieLens: {data.n_users} users, {data.n_items} items, {data.n_interactions} ratings")
    if args.low_ratings_as_dislikes is not None:
        out = args.out or Path("bench/results/movielens_dislikes.md")
        return await compare_dislikes(data, args.low_ratings_as_dislikes, out)
    args.out = args.out or Path("bench/results/movielens.md")
    with tempfile.TemporaryDirectory(prefix="interest-tree-eval-") as tmp:
        print("Validation pass (tuning level weights)…", flush=True)
        valid, _ = await run_pass(
            data, for_test=False, weight_grid=LEVEL_WEIGHT_GRID, workdir=Path(tmp)
        )
        chosen = max(valid, key=lambda w: valid[w].ndcg10)
        default = tuple(LEVEL_WEIGHT_GRID[0])
        print(f"Test pass with the default and the tuned level weights {chosen}…", flush=True)
        grid = [default] if chosen == default else [default, chosen]
        test, test_timings = await run_pass(
            data, for_test=True, weight_grid=grid, workdir=Path(tmp)
        )
    rows = [
        ("interest-tree, default level weights", valid[default], test[default], f"w = {default}"),
    ]
    if chosen != default:
        rows.append(
            ("interest-tree, tuned level weights", valid[chosen], test[chosen], f"w = {chosen}")
        )
    for name, (v, t, note) in baselines(data).items():
        rows.append((name, v, t, note))
    elapsed = time.perf_counter() - started
    published = (
        "Published on this protocol (test): SASRec NDCG@10 0.0522 / Recall@10 0.0993, "
        "LRURec 0.0705 / 0.1426, LlamaRec 0.0759 / 0.1524."
    )
    timing = ", ".join(f"{k} {v:.0f} s" for k, v in test_timings.items())
    report = "\n".join(
        [
            "# MovieLens latest-small, LlamaRec protocol",
            "",
            f"Command: `.venv/bin/python bench/eval_movielens.py`; run {datetime.now(UTC):%Y-%m-%d}"
            f" on a 2-core CPU machine; total {elapsed / 60:.1f} min (test pass: {timing}).",
            "",
            table(rows),
            "",
            published,
            "",
        ]
    )
    print(report)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(report)
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
