"""Recall@10 of the service's HNSW search against exact search, on the service's own vectors.

    .venv/bin/python bench/service_recall.py

Trains the collaborative model exactly as RefreshModels does (same defaults) on the MovieLens
test-pass history, builds the item index the service queries, and for every user compares the
HNSW top 10 with the exact top 10 for the user's query vector, excluding the user's history.
Also prints the exact/HNSW query-time ratio measured in the same run.
"""

from __future__ import annotations

import sys
import time
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.movielens_data import load_movielens
from taxonomy.engine import EngineConfig
from taxonomy.events.history import event_weight
from taxonomy.models import Event
from taxonomy.recommendation.collaborative_space import build_retrieval, train_collaborative
from taxonomy.recommendation.levels import LevelTimeScales, level_item_weights
from taxonomy.recommendation.training import CollaborativeConfig


def main() -> int:
    data = load_movielens()
    sequences = [
        [
            Event(
                user_id=user.user_id,
                item_id=data.item_ids[item],
                event_time=datetime.fromtimestamp(stamp, tz=UTC),
            )
            for item, stamp in zip(
                user.history(for_test=True), user.history_times(for_test=True), strict=True
            )
        ]
        for user in data.users
    ]
    config = EngineConfig()
    started = time.perf_counter()
    model = train_collaborative(sequences, config.collaborative or CollaborativeConfig())
    trained = time.perf_counter() - started
    retrieval = build_retrieval(
        model, sum(map(len, sequences)), config.hnsw_ef_search, set(data.item_ids)
    )
    index = retrieval.space.index
    hits = 0
    hnsw_s = exact_s = 0.0
    for events in sequences:
        weights = level_item_weights(
            events, LevelTimeScales().deepest, event_weight, retrieval.space.has_vector
        )
        query = sum(w * retrieval.space.query_vectors([i])[0] for i, w in weights.items())
        seen = {event.item_id for event in events}
        started = time.perf_counter()
        approximate = {item for item, _ in index.query(query, 10, exclude=seen)}
        hnsw_s += time.perf_counter() - started
        started = time.perf_counter()
        exact = {item for item, _ in index.exact_query(query, 10, exclude=seen)}
        exact_s += time.perf_counter() - started
        hits += len(approximate & exact)
    recall = hits / (10 * len(sequences))
    print(f"training: {trained:.1f} s on {sum(map(len, sequences))} events, dim {model.dim}")
    print(f"HNSW recall@10 vs exact (ef={config.hnsw_ef_search}): {recall:.4f}")
    print(
        f"query time: HNSW {hnsw_s / len(sequences) * 1000:.2f} ms, exact "
        f"{exact_s / len(sequences) * 1000:.2f} ms, ratio exact/HNSW {exact_s / hnsw_s:.1f}x"
    )
    return 0 if recall >= 0.95 else 1


if __name__ == "__main__":
    sys.exit(main())
