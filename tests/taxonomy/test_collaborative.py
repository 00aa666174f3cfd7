"""Unit tests of the collaborative trainers (taxonomy.recommendation, bench.research_trainers)
and the re-ranker (taxonomy.recommendation.rerank)."""

from __future__ import annotations

import random

import numpy as np
import pytest

from bench.research_trainers import (
    train_cooccurrence_vectors,
    train_transition_vectors,
    truncated,
)
from taxonomy.recommendation import transitions
from taxonomy.recommendation.collaborative_model import CollaborativeModel, context_weights
from taxonomy.recommendation.rerank import RerankConfig, rerank, transition_scores
from taxonomy.recommendation.training import (
    CollaborativeConfig,
    CooccurrenceConfig,
    train_collaborative_model,
)
from taxonomy.recommendation.transitions import TransitionConfig, _sequence_blocks

GROUPS = {g: [f"{g}{k}" for k in range(6)] for g in "abcd"}


def group_sequences(users: int = 200, seed: int = 3) -> list[list[str]]:
    """Each user consumes items of one group only: items of a group always co-occur, items of
    different groups never do."""
    rng = random.Random(seed)
    out = []
    for _ in range(users):
        items = list(GROUPS[rng.choice("abcd")])
        rng.shuffle(items)
        out.append(items[: rng.randrange(3, 7)])
    return out


def chain_sequences(users: int = 300, seed: int = 5) -> list[list[str]]:
    """Ordered walks along one chain: ``g{k}`` is always followed by ``g{k+1}``."""
    rng = random.Random(seed)
    out = []
    for _ in range(users):
        g = rng.choice("abcd")
        start = rng.randrange(0, 3)
        out.append([f"{g}{k}" for k in range(start, start + rng.randrange(3, 5))])
    return out


def cosine(model: CollaborativeModel, a: str, b: str) -> float:
    ra, rb = model.index_of(a), model.index_of(b)
    assert ra is not None and rb is not None
    va = model.item_vectors[ra].astype(np.float64)
    vb = model.item_vectors[rb].astype(np.float64)
    return float(va @ vb / (np.linalg.norm(va) * np.linalg.norm(vb)))


# --------------------------------------------------------------------------------------------
# co-occurrence vectors


def test_cooccurring_items_are_closer_than_never_cooccurring() -> None:
    model = train_cooccurrence_vectors(group_sequences(), config=CooccurrenceConfig(dim=8))
    within = [cosine(model, "a0", f"a{k}") for k in range(1, 6)]
    across = [cosine(model, "a0", f"{g}{k}") for g in "bcd" for k in range(6)]
    assert min(within) > max(across)


def test_cooccurrence_output_shape_dtype_norm() -> None:
    model = train_cooccurrence_vectors(group_sequences(), config=CooccurrenceConfig(dim=8))
    assert model.item_ids == tuple(sorted(model.item_ids))
    assert len(model.item_ids) == 24
    assert model.item_vectors.shape == (24, 8)
    assert model.item_vectors.dtype == np.float32
    assert model.symmetric
    assert model.context_vectors is model.item_vectors
    np.testing.assert_allclose(np.linalg.norm(model.item_vectors, axis=1), 1.0, atol=1e-5)
    assert model.transitions is None


def test_cooccurrence_is_deterministic() -> None:
    seqs = group_sequences()
    one = train_cooccurrence_vectors(seqs, config=CooccurrenceConfig(dim=8))
    two = train_cooccurrence_vectors(seqs, config=CooccurrenceConfig(dim=8))
    assert one.item_ids == two.item_ids
    np.testing.assert_array_equal(one.item_vectors, two.item_vectors)


# --------------------------------------------------------------------------------------------
# transition model


@pytest.mark.parametrize("dense_max", [0, 10_000])
def test_sequence_blocks_match_brute_force(monkeypatch: pytest.MonkeyPatch, dense_max: int) -> None:
    """Both the dense and the banded/closed-form Gram paths."""
    monkeypatch.setattr(transitions, "_DENSE_GRAM_MAX", dense_max)
    rng = np.random.default_rng(0)
    configs = [
        TransitionConfig(window=3, decay=0.7, profile_weight=1.3, profile_power=0.5),
        TransitionConfig(
            window=4, decay=0.8, profile_weight=0.7, profile_power=1.0, profile_window=5
        ),
        TransitionConfig(window=2, profile_weight=0.0),
    ]
    for cfg in configs:
        for n in (2, 3, 7, 15):
            e = rng.uniform(0.5, 2.0, n)
            gram, s = _sequence_blocks(n, e, cfg)
            brute = np.zeros((n - 1, n))
            lp = n if cfg.profile_window is None else cfg.profile_window
            for t in range(1, n):
                for k in range(t):
                    gap = t - k
                    if gap <= cfg.window:
                        brute[t - 1, k] += cfg.decay ** (gap - 1)
                    if cfg.profile_weight > 0 and gap <= lp:
                        brute[t - 1, k] += cfg.profile_weight / min(t, lp) ** cfg.profile_power
            brute *= e[None, :]
            np.testing.assert_allclose(s, brute, atol=1e-12)
            np.testing.assert_allclose(gram, brute.T @ brute, atol=1e-12)


def test_transitions_predict_the_next_item() -> None:
    cfg = TransitionConfig(dim=8, window=3, profile_weight=0.0, l2=1.0)
    model = train_transition_vectors(chain_sequences(), config=cfg)
    assert model.transitions is not None
    scores = transition_scores(model, ["b1", "b2"], list(model.item_ids))
    assert model.item_ids[int(np.argmax(scores))] == "b3"


def test_transition_vectors_reproduce_exact_scores_at_full_rank() -> None:
    """With dim = n_items the factorisation is exact: u . item_j == sum_i a_i B[i, j]."""
    seqs = chain_sequences()
    n_items = len({i for s in seqs for i in s})
    model = train_transition_vectors(seqs, config=TransitionConfig(dim=n_items, l2=1.0))
    history = ["c0", "c1", "c2"]
    fused = model.item_vectors.astype(np.float64) @ model.user_vector(history).astype(np.float64)
    exact = transition_scores(model, history, list(model.item_ids))
    np.testing.assert_allclose(fused, exact, rtol=1e-3, atol=1e-4 * float(np.abs(exact).max()))


def test_transition_output_shape_dtype_norm_and_determinism() -> None:
    seqs = chain_sequences()
    cfg = TransitionConfig(dim=6, l2=1.0)
    one = train_transition_vectors(seqs, config=cfg)
    two = train_transition_vectors(seqs, config=cfg)
    n = len(one.item_ids)
    assert one.item_vectors.shape == (n, 7)  # dim + the norm-fixing coordinate
    assert one.context_vectors.shape == (n, 7)
    assert one.item_vectors.dtype == np.float32 and one.context_vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(one.item_vectors, axis=1), 1.0, atol=1e-5)
    np.testing.assert_array_equal(one.context_vectors[:, -1], 0.0)
    assert not one.symmetric
    np.testing.assert_array_equal(one.item_vectors, two.item_vectors)
    np.testing.assert_array_equal(one.context_vectors, two.context_vectors)
    assert one.transitions is not None and two.transitions is not None
    np.testing.assert_array_equal(one.transitions, two.transitions)
    small = truncated(one, 3)
    assert small.item_vectors.shape == (n, 4)
    np.testing.assert_allclose(np.linalg.norm(small.item_vectors, axis=1), 1.0, atol=1e-5)
    assert small.index_of(one.item_ids[5]) == 5


def test_event_weights_scale_context() -> None:
    seqs = [["x", "y", "z"], ["x", "y", "w"]] * 20
    zero_y = [[1.0, 0.0, 1.0], [1.0, 0.0, 1.0]] * 20
    cfg = TransitionConfig(dim=2, window=1, profile_weight=0.0, l2=1.0)
    model = train_transition_vectors(seqs, zero_y, config=cfg)
    assert model.transitions is not None
    row_y = model.index_of("y")
    assert row_y is not None
    np.testing.assert_allclose(model.transitions[row_y], 0.0, atol=1e-7)
    with pytest.raises(ValueError, match="weights"):
        train_transition_vectors(seqs, [[1.0]] * len(seqs), config=cfg)


def test_context_weights() -> None:
    w = context_weights(5, window=2, decay=0.5, profile_weight=2.0, profile_power=1.0)
    np.testing.assert_allclose(w, [0.4, 0.4, 0.4, 0.9, 1.4])
    w = context_weights(4, window=10, decay=0.5, profile_weight=1.0, profile_window=1)
    np.testing.assert_allclose(w, [0.125, 0.25, 0.5, 2.0])
    assert context_weights(0, window=3, decay=0.9).shape == (0,)


# --------------------------------------------------------------------------------------------
# service recipe and re-ranking


def test_collaborative_model_combines_vectors_and_transitions() -> None:
    cfg = CollaborativeConfig(
        vectors=CooccurrenceConfig(dim=6, window=3),
        transitions=TransitionConfig(window=3, profile_weight=0.0, l2=1.0),
        query_window=4,
        query_decay=0.5,
    )
    model = train_collaborative_model(chain_sequences(), config=cfg)
    assert model.symmetric and model.context_vectors is model.item_vectors
    assert model.transitions is not None
    assert model.transitions.shape == (len(model.item_ids),) * 2
    # fused-vector weights: the query weighting; re-rank weights: the transition context
    rows = [model.index_of(i) for i in ("a0", "a1", "a2")]
    assert None not in rows
    q = model.weights_for(["a0", "a1", "a2"])
    assert q == dict(zip(rows, [0.25, 0.5, 1.0], strict=True))
    r = model.rerank_weights_for(["a0", "a1", "a2"])
    assert r == pytest.approx(dict(zip(rows, [0.64, 0.8, 1.0], strict=True)))
    u = model.user_vector(["a0", "a1", "a2"])
    assert u.dtype == np.float32 and u.shape == (6,)
    again = train_collaborative_model(chain_sequences(), config=cfg)
    np.testing.assert_array_equal(model.item_vectors, again.item_vectors)
    assert again.transitions is not None
    np.testing.assert_array_equal(model.transitions, again.transitions)


def test_rerank_orders_by_exact_scores_and_blends() -> None:
    model = train_collaborative_model(
        chain_sequences(),
        config=CollaborativeConfig(
            vectors=CooccurrenceConfig(dim=6),
            transitions=TransitionConfig(window=3, profile_weight=0.0, l2=1.0),
        ),
    )
    history = ["d0", "d1"]
    candidates = ["a4", "d3", "d2", "unknown", "b1"]
    fused = [0.9, 0.8, 0.7, 0.6, 0.5]
    out = rerank(model, history, candidates, fused, RerankConfig(k=5, blend=0.0))
    assert out[0][0] == "d2"
    assert out[-1][0] == "unknown" and out[-1][1] == -np.inf
    exact = transition_scores(model, history, candidates)
    known = [c for c, s in zip(candidates, exact.tolist(), strict=True) if np.isfinite(s)]
    by_exact = sorted(known, key=lambda c: -exact[candidates.index(c)])
    assert [c for c, _ in out[:4]] == by_exact
    # blend = 1 keeps the fused order; k truncates the candidate list
    kept = rerank(model, history, candidates, fused, RerankConfig(k=3, blend=1.0))
    assert [c for c, _ in kept] == ["a4", "d3", "d2"]
    with pytest.raises(ValueError, match="length"):
        rerank(model, history, candidates, fused[:2])


def test_rerank_needs_transitions() -> None:
    model = train_cooccurrence_vectors(group_sequences(), config=CooccurrenceConfig(dim=4))
    with pytest.raises(ValueError, match="transitions"):
        transition_scores(model, ["a0"], ["a1"])
