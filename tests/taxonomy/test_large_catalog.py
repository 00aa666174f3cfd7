"""A catalog above the old 10,000-item vocabulary cap: every item with events gets a vector,
and a long-tail item (ranked below the 10,000 most frequent) is retrieved for a user whose
history points at it. Real trainer, real HNSW index."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
import scipy.sparse as sp

from taxonomy.models import Event
from taxonomy.recommendation import training
from taxonomy.recommendation.collaborative_space import build_retrieval, train_collaborative
from taxonomy.recommendation.rerank import transition_block, transition_scores
from taxonomy.recommendation.training import CollaborativeConfig, CooccurrenceConfig
from taxonomy.recommendation.transitions import TransitionConfig

HEAD_ITEMS = 10_200
"""Items seen three times each: more than the old cap, all more frequent than the tail."""
TAIL = [f"tail{k}" for k in range(4)]
"""Seen twice each, always together: ranks 10,201 to 10,204 by frequency."""
T0 = datetime(2024, 1, 1, tzinfo=UTC)


def sequences(seed: int = 7) -> list[list[str]]:
    rng = random.Random(seed)
    head = [f"h{k:05d}" for k in range(HEAD_ITEMS)]
    out: list[list[str]] = []
    for _ in range(3):
        # Groups of 6 consecutive items are consumed together, in random user sessions.
        for g in range(0, HEAD_ITEMS, 6):
            group = head[g : g + 6]
            rng.shuffle(group)
            out.append(group)
    out += [list(TAIL), list(reversed(TAIL))]
    return out


def as_events(seqs: list[list[str]]) -> list[list[Event]]:
    return [
        [
            Event(user_id=f"u{u}", item_id=item, event_time=T0 + timedelta(minutes=t))
            for t, item in enumerate(seq)
        ]
        for u, seq in enumerate(seqs)
    ]


def test_tail_item_above_the_old_cap_gets_a_vector_and_is_retrieved() -> None:
    config = CollaborativeConfig(
        vectors=CooccurrenceConfig(dim=32, power_iters=2),
        transitions=TransitionConfig(window=3, profile_weight=0.0, l2=1.0),
        rerank_max_items=300,
    )
    model = train_collaborative(as_events(sequences()), config)
    assert len(model.item_ids) == HEAD_ITEMS + len(TAIL) > 10_000
    assert model.transitions is not None and model.transitions.shape == (300, 300)
    # The re-ranker's rows are the most frequent items and the model's first rows.
    assert all(model.item_ids[row].startswith("h") for row in range(300))
    tail_rows = [model.index_of(item) for item in TAIL]
    assert all(row is not None and row >= 10_000 for row in tail_rows)

    retrieval = build_retrieval(model, 0, 64, set(model.item_ids))
    user = retrieval.space.query_vectors(TAIL[:2]).sum(axis=0)
    found = [item for item, _ in retrieval.space.index.query(user, 10, exclude=set(TAIL[:2]))]
    assert set(TAIL[2:]) <= set(found[:2])

    # Outside the next-item matrix a tail item scores 0 (the fused score ranks it), not -inf;
    # an item the model never saw still sinks.
    exact = transition_scores(model, [model.item_ids[0], *TAIL[:2]], [TAIL[2], "unknown"])
    assert exact[0] == 0.0 and exact[1] == -np.inf
    block = transition_block(model, [TAIL[0], model.item_ids[0]], [TAIL[1], model.item_ids[1]])
    assert block[0].tolist() == [0.0, 0.0] and block[1, 0] == 0.0
    # The re-rank weighting only names rows the next-item matrix has.
    assert set(model.rerank_weights_for([*TAIL, model.item_ids[0]])) == {0}


def test_float32_svd_of_very_large_catalogs_agrees_with_float64(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Above ``_F64_SVD_MAX_ENTRIES`` the SVD runs in float32 with a Gram-matrix final step;
    forced on a small matrix, it finds the same values and subspace."""
    rng = np.random.default_rng(1)
    mat = sp.random(2000, 2000, density=0.01, random_state=rng, format="csr")
    mat = (mat + mat.T).tocsr()
    u64, s64 = training._randomized_svd(mat, 24, 4, 0)
    monkeypatch.setattr(training, "_F64_SVD_MAX_ENTRIES", 0)
    u32, s32 = training._randomized_svd(mat, 24, 4, 0)
    assert u32.dtype == np.float32 and u64.dtype == np.float64
    np.testing.assert_allclose(s32, s64, rtol=1e-4)
    np.testing.assert_allclose(np.abs(np.sum(u32 * u64, axis=0)), 1.0, atol=1e-3)
