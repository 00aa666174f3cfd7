"""Offline recommendation benchmark on MovieLens latest-small (LlamaRec protocol).

Run from the project root: ``python bench/movielens_offline.py``.

Every hyper-parameter is tuned on the validation split only; for the test pass every model is
refit on train + validation with the chosen values (EVALUATION.md, section 1). Scoring is exact
(brute force) over all items, history excluded; the service uses HNSW for the fused-vector stage.

Methods:
- popularity; EASE on the whole history (lambda tuned); EASE scores from the last n items.
- item2vec-style PPMI-SVD vectors (64 d), recency-weighted user vector (symmetric space).
- transition vectors (bench.research_trainers): fused user vector from levels
  L0 = all history items (profile), L1 = the user's top genre groups, L2 = top genre pairs,
  L3 = most recent items with strong decay; level weights tuned on validation.
- the same + re-ranking of the top-K fused candidates with the exact transition scores
  (taxonomy.recommendation.rerank).
- reference: the full-rank transition matrix scoring every item (no vectors).
"""

from __future__ import annotations

import itertools
import os
import sys
import time

# Single-threaded BLAS unless the caller says otherwise: reproducible numbers, and on a shared
# 2-core machine OpenBLAS threads slow the dense solves down rather than up.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt
import scipy.linalg
import scipy.sparse as sp

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench.metrics import Metrics, evaluate, history_mask
from bench.movielens_data import MovieLensSplits, load_movielens
from bench.research_trainers import (
    train_cooccurrence_vectors,
    train_transition_vectors,
    truncated,
)
from taxonomy.recommendation.collaborative_model import CollaborativeModel, context_weights
from taxonomy.recommendation.training import (
    CollaborativeConfig,
    CooccurrenceConfig,
    train_collaborative_model,
)
from taxonomy.recommendation.transitions import TransitionConfig

F64 = npt.NDArray[np.float64]
Scorer = Callable[["Pass"], F64]

TRANSITION_CONFIG = TransitionConfig(
    dim=256, window=20, decay=0.8, profile_weight=2.0, profile_power=0.5, l2=100.0
)
TRANSITION_DIMS = (64, 128, 256)
EASE_LAMBDAS = (50.0, 100.0, 200.0, 500.0)
EASE_LAST_N = (3, 5, 8)
I2V_DIMS = (64, 128, 256)
I2V_WINDOWS = ((5, 0.7), (10, 0.5))  # (co-occurrence window, distance decay)
RECENCY_DECAYS = (0.5, 0.6, 0.7, 0.85)  # per-event decay of the recent-items level
RECENT_WINDOW = 50
# level weights: L0 (all items) / L1 (genre groups) / L2 (genre pairs), relative to L3 (recent);
# each long-term level vector is a weighted mean of its items' vectors
LEVEL_W0 = (0.0, 0.25, 0.5, 1.0)
LEVEL_W1 = (0.0, 0.25, 0.5, 1.0)
LEVEL_W2 = (0.0, 0.25, 0.5, 1.0)
HALF_LIVES = (None, 50.0, 10.0)  # recency half-life (events) inside the genre levels
TOP_GENRES = 3
TOP_PAIRS = 3
RERANK_K = (50, 100, 200, 400)
RERANK_BLEND = (0.0, 0.2, 0.4, 0.5, 0.6, 0.8)


@dataclass
class Pass:
    """One evaluation pass: validation (history = train) or test (history = train + valid)."""

    data: MovieLensSplits
    for_test: bool
    histories: list[list[int]] = field(init=False)
    targets: list[int] = field(init=False)
    mask: npt.NDArray[np.bool_] = field(init=False)

    def __post_init__(self) -> None:
        self.histories = self.data.histories(for_test=self.for_test)
        self.targets = self.data.targets(for_test=self.for_test)
        self.mask = history_mask(self.histories, self.data.n_items)

    @property
    def name(self) -> str:
        return "test" if self.for_test else "valid"

    def sequences(self) -> list[list[str]]:
        ids = self.data.item_ids
        return [[ids[i] for i in h] for h in self.histories]

    def evaluate(self, scores: F64) -> Metrics:
        return evaluate(scores, self.histories, self.targets, self.mask)


@dataclass
class Row:
    method: str
    valid: Metrics
    test: Metrics
    params: str


# ---------------------------------------------------------------------------------------------
# helpers


def interaction_matrix(histories: Sequence[Sequence[int]], n_items: int) -> sp.csr_matrix:
    rows = np.repeat(np.arange(len(histories)), [len(h) for h in histories])
    cols = np.fromiter(itertools.chain.from_iterable(histories), dtype=np.int64)
    return sp.csr_matrix(
        (np.ones(cols.size), (rows, cols)), shape=(len(histories), n_items), dtype=np.float64
    )


def ease_matrix(x: sp.csr_matrix, lam: float) -> F64:
    gram = np.asarray((x.T @ x).toarray(), dtype=np.float64)
    gram[np.diag_indices_from(gram)] += lam
    p = scipy.linalg.inv(gram, overwrite_a=True, check_finite=False)
    b = -p / np.diag(p)[None, :]
    b[np.diag_indices_from(b)] = 0.0
    return np.asarray(b)


def weight_matrix(
    histories: Sequence[Sequence[int]], n_items: int, weigh: Callable[[int], F64]
) -> F64:
    """(n_users, n_items) query weights; ``weigh(n)`` gives per-position weights (oldest first)."""
    out = np.zeros((len(histories), n_items))
    for u, h in enumerate(histories):
        np.add.at(out[u], np.asarray(h, dtype=np.int64), weigh(len(h)))
    return out


def last_n(n: int) -> Callable[[int], F64]:
    def weigh(length: int) -> F64:
        w = np.zeros(length)
        w[max(0, length - n) :] = 1.0
        return w

    return weigh


def positional_decay(decay: float, window: int) -> Callable[[int], F64]:
    return lambda n: context_weights(n, window=window, decay=decay)


def model_perm(model: CollaborativeModel, item_ids: Sequence[str]) -> npt.NDArray[np.int64]:
    """Model row of each benchmark item (-1 when the model has no vector for it)."""
    rows = [model.index_of(i) for i in item_ids]
    return np.asarray([-1 if r is None else r for r in rows], dtype=np.int64)


def gather_rows(mat: npt.NDArray[np.float32], perm: npt.NDArray[np.int64]) -> F64:
    out = np.zeros((perm.size, mat.shape[1]))
    ok = perm >= 0
    out[ok] = mat[perm[ok]]
    return out


def unknown_to_neg_inf(scores: F64, perm: npt.NDArray[np.int64]) -> F64:
    scores = scores.copy()
    scores[:, perm < 0] = -np.inf
    return scores


# ---------------------------------------------------------------------------------------------
# levels


def genre_level(
    histories: Sequence[Sequence[int]],
    groups_of: Sequence[Sequence[str]],
    n_items: int,
    top: int,
    half_life: float | None,
) -> F64:
    """Weights of a 'top groups' level: mean over the user's top groups of the group's
    (recency-weighted) mean item, groups weighted by their share. Each row sums to 1."""
    out = np.zeros((len(histories), n_items))
    for u, h in enumerate(histories):
        n = len(h)
        age = np.arange(n - 1, -1, -1, dtype=np.float64)
        r = np.ones(n) if half_life is None else 0.5 ** (age / half_life)
        mass: dict[str, float] = {}
        members: dict[str, list[int]] = {}
        for pos, item in enumerate(h):
            for g in groups_of[item]:
                mass[g] = mass.get(g, 0.0) + float(r[pos])
                members.setdefault(g, []).append(pos)
        chosen = sorted(mass, key=lambda g: (-mass[g], g))[:top]
        total = sum(mass[g] for g in chosen)
        if total <= 0.0:
            out[u, np.asarray(h, dtype=np.int64)] = 1.0 / max(n, 1)
            continue
        for g in chosen:
            pos_arr = np.asarray(members[g], dtype=np.int64)
            share = mass[g] / total
            np.add.at(out[u], np.asarray(h, dtype=np.int64)[pos_arr], share * r[pos_arr] / mass[g])
    return out


def item_groups(data: MovieLensSplits) -> tuple[list[list[str]], list[list[str]]]:
    """Genre groups (level 1) and genre-pair groups (level 2) of every item."""
    genres: list[list[str]] = []
    pairs: list[list[str]] = []
    for m in data.movies:
        gs = sorted(m.genres) if m.genres else ["(none)"]
        genres.append(gs)
        ps = [f"{a}|{b}" for a, b in itertools.combinations(gs, 2)] if len(gs) > 1 else gs
        pairs.append(ps)
    return genres, pairs


@dataclass
class LevelWeights:
    """Per-level (n_users, n_items) weight matrices of one pass."""

    profile: F64
    genres: dict[float | None, F64]
    pairs: dict[float | None, F64]
    recent: F64

    def combine(self, w0: float, w1: float, w2: float, half_life: float | None) -> F64:
        """Query weights of ``w0*L0 + w1*L1 + w2*L2 + L3``."""
        return (
            self.recent
            + w0 * self.profile
            + w1 * self.genres[half_life]
            + w2 * self.pairs[half_life]
        )


def build_levels(p: Pass, recent_decay: float) -> LevelWeights:
    n_items = p.data.n_items
    genres, pairs = item_groups(p.data)
    profile = weight_matrix(p.histories, n_items, lambda n: np.full(n, 1.0 / n))
    recent = weight_matrix(p.histories, n_items, positional_decay(recent_decay, RECENT_WINDOW))
    return LevelWeights(
        profile=profile,
        genres={hl: genre_level(p.histories, genres, n_items, TOP_GENRES, hl) for hl in HALF_LIVES},
        pairs={hl: genre_level(p.histories, pairs, n_items, TOP_PAIRS, hl) for hl in HALF_LIVES},
        recent=recent,
    )


# ---------------------------------------------------------------------------------------------
# re-ranking (vectorised equivalent of taxonomy.recommendation.rerank.rerank over all users)


def _zscore_rows(x: F64) -> F64:
    mu = x.mean(axis=1, keepdims=True)
    sd = x.std(axis=1, keepdims=True)
    out: F64 = (x - mu) / np.where(sd > 0, sd, 1.0)
    return out


def rerank_scores(fused: F64, exact: F64, mask: npt.NDArray[np.bool_], k: int, blend: float) -> F64:
    """Top-``k`` of ``fused`` (history excluded) re-scored by the blend; others get -inf."""
    f = np.where(mask, -np.inf, fused)
    top = np.argpartition(-f, k, axis=1)[:, :k]
    rows = np.arange(f.shape[0])[:, None]
    final = (1.0 - blend) * _zscore_rows(exact[rows, top])
    if blend:
        final += blend * _zscore_rows(f[rows, top])
    out = np.full_like(fused, -np.inf)
    out[rows, top] = final
    return out


# ---------------------------------------------------------------------------------------------
# experiment


def fmt_metrics(m: Metrics) -> str:
    return " ".join(f"{x:.4f}" for x in m.as_tuple())


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def tune(candidates: dict[str, F64], p: Pass) -> tuple[str, Metrics]:
    """Best key by validation NDCG@10 (ties: Recall@10, then first)."""
    best_key = ""
    best: Metrics | None = None
    for key, scores in candidates.items():
        m = p.evaluate(scores)
        if best is None or (m.ndcg10, m.recall10) > (best.ndcg10, best.recall10):
            best_key, best = key, m
    assert best is not None
    return best_key, best


def transition_exact(model: CollaborativeModel, p: Pass) -> tuple[F64, npt.NDArray[np.int64]]:
    """Exact scores ``a @ B`` (``a`` = the model's re-rank weighting) in benchmark order, and the
    perm."""
    n_items = p.data.n_items
    perm = model_perm(model, p.data.item_ids)
    # Items outside the next-item matrix (the tail) keep an exact score of 0, as in the service.
    ok = (perm >= 0) & (perm < model.transition_items)
    assert model.transitions is not None
    b = np.zeros((n_items, n_items))
    b[np.ix_(ok, ok)] = model.transitions[np.ix_(perm[ok], perm[ok])]
    weighting = model.rerank_weighting or model.query_weighting
    weights = weight_matrix(p.histories, n_items, weighting.weights)
    return unknown_to_neg_inf(weights @ b, perm), perm


def low_rank_item_scores(model: CollaborativeModel, p: Pass) -> tuple[F64, npt.NDArray[np.int64]]:
    """(n_items, n_items) ``context_i . item_j`` in benchmark order, and the perm."""
    perm = model_perm(model, p.data.item_ids)
    ctx = gather_rows(model.context_vectors, perm)
    vec = gather_rows(model.item_vectors, perm)
    return ctx @ vec.T, perm


def check_rerank_module(
    model: CollaborativeModel, p: Pass, fused: F64, k: int, blend: float, vectorised: F64
) -> int:
    """Run taxonomy.recommendation.rerank.rerank for 25 users; count users whose top-10 differs
    from ours."""
    from taxonomy.recommendation.rerank import RerankConfig, rerank

    ids = p.data.item_ids
    bad = 0
    for u in range(25):
        f = np.where(p.mask[u], -np.inf, fused[u])
        cand = np.argsort(-f, kind="stable")[:k]
        out = rerank(
            model,
            [ids[i] for i in p.histories[u]],
            [ids[i] for i in cand],
            f[cand].tolist(),
            RerankConfig(k=k, blend=blend),
        )
        ours = np.argsort(-vectorised[u], kind="stable")[:10]
        if [o[0] for o in out[:10]] != [ids[i] for i in ours]:
            bad += 1
    return bad


def main() -> None:
    t_start = time.time()
    cpu_start = time.process_time()
    data = load_movielens()
    valid, test = Pass(data, for_test=False), Pass(data, for_test=True)
    n_items = data.n_items
    rows: list[Row] = []

    # popularity -----------------------------------------------------------------------------
    def pop_scores(p: Pass) -> F64:
        x = interaction_matrix(p.histories, n_items)
        pop = np.asarray(x.sum(axis=0)).ravel()
        return np.tile(pop, (len(p.histories), 1))

    rows.append(
        Row("popularity", valid.evaluate(pop_scores(valid)), test.evaluate(pop_scores(test)), "")
    )

    # EASE -------------------------------------------------------------------------------------
    t0 = time.time()
    xv = interaction_matrix(valid.histories, n_items)
    full_c: dict[str, F64] = {}
    last_c: dict[str, F64] = {}
    last_q = {n: weight_matrix(valid.histories, n_items, last_n(n)) for n in EASE_LAST_N}
    for lam in EASE_LAMBDAS:
        b = ease_matrix(xv, lam)
        full_c[f"{lam:g}"] = np.asarray(xv @ b)
        for n in EASE_LAST_N:
            last_c[f"{lam:g}/{n}"] = last_q[n] @ b
    k_full, m_full = tune(full_c, valid)
    k_last, m_last = tune(last_c, valid)
    del full_c, last_c, last_q
    xt = interaction_matrix(test.histories, n_items)
    b_full = ease_matrix(xt, float(k_full))
    rows.append(
        Row(
            "EASE (whole history)",
            m_full,
            test.evaluate(np.asarray(xt @ b_full)),
            f"lambda={k_full}",
        )
    )
    lam_s, n_s = k_last.split("/")
    b_last = b_full if float(lam_s) == float(k_full) else ease_matrix(xt, float(lam_s))
    q_t = weight_matrix(test.histories, n_items, last_n(int(n_s)))
    rows.append(
        Row(
            "EASE from the last n items",
            m_last,
            test.evaluate(q_t @ b_last),
            f"lambda={lam_s} n={n_s}",
        )
    )
    del b_full, b_last
    log(f"EASE done in {time.time() - t0:.0f}s")

    # transition model (re-ranker; also an asymmetric vector space) ------------------------------
    t0 = time.time()
    c0 = time.process_time()
    trans_v = train_transition_vectors(valid.sequences(), config=TRANSITION_CONFIG)
    trans_wall, trans_cpu = time.time() - t0, time.process_time() - c0
    log(f"transition model (valid) trained in {trans_wall:.1f}s wall, {trans_cpu:.1f}s CPU")
    exact_v, perm_tv = transition_exact(trans_v, valid)
    ctx_v = weight_matrix(
        valid.histories,
        n_items,
        lambda n: context_weights(
            n,
            window=trans_v.window,
            decay=trans_v.decay,
            profile_weight=trans_v.profile_weight,
            profile_power=trans_v.profile_power,
        ),
    )
    dim_c: dict[str, F64] = {}
    for d in TRANSITION_DIMS:
        lr, _ = low_rank_item_scores(truncated(trans_v, d), valid)
        dim_c[str(d)] = unknown_to_neg_inf(ctx_v @ lr, perm_tv)
    k_tdim, m_tvec = tune(dim_c, valid)
    tvec_v = dim_c[k_tdim]
    del dim_c
    trr_c = {
        f"{k}/{bl:g}": rerank_scores(tvec_v, exact_v, valid.mask, k, bl)
        for k, bl in itertools.product(RERANK_K, RERANK_BLEND)
    }
    k_trr, m_trr = tune(trr_c, valid)
    del trr_c
    log(f"transition tuning done in {time.time() - t0:.0f}s")

    # item2vec-style PPMI-SVD vectors: the fused-vector index --------------------------------
    t0 = time.time()
    i2v_c: dict[str, F64] = {}
    recency_q = {
        d: weight_matrix(valid.histories, n_items, positional_decay(d, RECENT_WINDOW))
        for d in RECENCY_DECAYS
    }
    i2v_models: dict[str, CollaborativeModel] = {}
    for dim, (win, dec) in itertools.product(I2V_DIMS, I2V_WINDOWS):
        key = f"{dim}/{win}/{dec:g}"
        i2v_models[key] = train_cooccurrence_vectors(
            valid.sequences(), config=CooccurrenceConfig(dim=dim, window=win, decay=dec)
        )
        sim, perm = low_rank_item_scores(i2v_models[key], valid)
        for qd, q in recency_q.items():
            i2v_c[f"{key}/{qd:g}"] = unknown_to_neg_inf(q @ sim, perm)
    k_i2v, m_i2v = tune(i2v_c, valid)
    del i2v_c
    dim_s, win_s, dec_s, qd_s = k_i2v.split("/")
    i2v_cfg = CooccurrenceConfig(dim=int(dim_s), window=int(win_s), decay=float(dec_s))
    rec_decay = float(qd_s)
    sim_v, perm_iv = low_rank_item_scores(i2v_models[f"{dim_s}/{win_s}/{dec_s}"], valid)
    del i2v_models
    log(f"item2vec tuning done in {time.time() - t0:.0f}s")

    # levels on the item2vec space
    t0 = time.time()
    levels_v = build_levels(valid, rec_decay)
    level_c: dict[str, F64] = {}
    for w0, w1, w2, hl in itertools.product(LEVEL_W0, LEVEL_W1, LEVEL_W2, HALF_LIVES):
        if w1 == 0.0 and w2 == 0.0 and hl is not None:
            continue
        level_c[f"{w0:g}/{w1:g}/{w2:g}/{hl}"] = unknown_to_neg_inf(
            levels_v.combine(w0, w1, w2, hl) @ sim_v, perm_iv
        )
    k_lvl, m_lvl = tune(level_c, valid)
    del level_c
    w0s, w1s, w2s, hls = k_lvl.split("/")
    w0, w1, w2 = float(w0s), float(w1s), float(w2s)
    hl = None if hls == "None" else float(hls)
    fused_v = unknown_to_neg_inf(levels_v.combine(w0, w1, w2, hl) @ sim_v, perm_iv)

    # re-rank the fused candidates with the exact transition scores
    rr_c = {
        f"{k}/{bl:g}": rerank_scores(fused_v, exact_v, valid.mask, k, bl)
        for k, bl in itertools.product(RERANK_K, RERANK_BLEND)
    }
    k_rr, m_rr = tune(rr_c, valid)
    del rr_c
    k_rer, blend_s = (int(k_rr.split("/")[0]), float(k_rr.split("/")[1]))
    mismatches = check_rerank_module(
        trans_v,
        valid,
        fused_v,
        k_rer,
        blend_s,
        rerank_scores(fused_v, exact_v, valid.mask, k_rer, blend_s),
    )
    log(
        f"levels + re-rank tuning done in {time.time() - t0:.0f}s; "
        f"taxonomy.recommendation.rerank top-10 mismatches on 25 users: {mismatches}"
    )
    m_exact_v = valid.evaluate(exact_v)
    del exact_v, tvec_v, fused_v, sim_v

    # test pass: refit everything on train + validation with the chosen values -------------------
    t0 = time.time()
    trans_t = train_transition_vectors(test.sequences(), config=TRANSITION_CONFIG)
    exact_t, perm_tt = transition_exact(trans_t, test)
    ctx_t = weight_matrix(
        test.histories,
        n_items,
        lambda n: context_weights(
            n,
            window=trans_t.window,
            decay=trans_t.decay,
            profile_weight=trans_t.profile_weight,
            profile_power=trans_t.profile_power,
        ),
    )
    lr_t, _ = low_rank_item_scores(truncated(trans_t, int(k_tdim)), test)
    tvec_t = unknown_to_neg_inf(ctx_t @ lr_t, perm_tt)
    del lr_t
    # the service recipe, trained in one call exactly as the server would
    recipe = CollaborativeConfig(
        vectors=i2v_cfg,
        transitions=TRANSITION_CONFIG,
        query_window=RECENT_WINDOW,
        query_decay=rec_decay,
    )
    c0 = time.process_time()
    t1 = time.time()
    model_t = train_collaborative_model(test.sequences(), config=recipe)
    recipe_wall, recipe_cpu = time.time() - t1, time.process_time() - c0
    sim_t, perm_it = low_rank_item_scores(model_t, test)
    recipe_exact_t, _ = transition_exact(model_t, test)
    levels_t = build_levels(test, rec_decay)
    single_t = unknown_to_neg_inf(levels_t.recent @ sim_t, perm_it)
    fused_t = unknown_to_neg_inf(levels_t.combine(w0, w1, w2, hl) @ sim_t, perm_it)
    recipe_t = rerank_scores(fused_t, recipe_exact_t, test.mask, k_rer, blend_s)
    mismatches_t = check_rerank_module(model_t, test, fused_t, k_rer, blend_s, recipe_t)
    log(f"taxonomy.recommendation.rerank top-10 mismatches on 25 test users: {mismatches_t}")
    log(f"test pass done in {time.time() - t0:.0f}s")

    cfg = TRANSITION_CONFIG
    tparams = (
        f"window={cfg.window} decay={cfg.decay} beta={cfg.profile_weight:g} "
        f"power={cfg.profile_power:g} l2={cfg.l2:g}"
    )
    k_trer, blend_t = k_trr.split("/")
    rows += [
        Row(
            "transition model, full rank, all items (reference)",
            m_exact_v,
            test.evaluate(exact_t),
            tparams,
        ),
        Row(
            "transition vectors (asymmetric), single user vector",
            m_tvec,
            test.evaluate(tvec_t),
            f"dim={k_tdim}",
        ),
        Row(
            "  + re-rank top-K with exact transition scores",
            m_trr,
            test.evaluate(rerank_scores(tvec_t, exact_t, test.mask, int(k_trer), float(blend_t))),
            f"K={k_trer} blend={blend_t}",
        ),
        Row(
            "item2vec PPMI-SVD, single recency-weighted mean",
            m_i2v,
            test.evaluate(single_t),
            f"dim={dim_s} window={win_s} decay={dec_s} recency decay={qd_s}/event "
            f"(last {RECENT_WINDOW})",
        ),
        Row(
            "item2vec PPMI-SVD, 4-level fused vector",
            m_lvl,
            test.evaluate(fused_t),
            f"w(L0 all, L1 genres, L2 genre pairs, L3 recent)=({w0:g},{w1:g},{w2:g},1); "
            f"genre half-life={hls}",
        ),
        Row(
            "  + re-rank top-K with exact transition scores [recipe]",
            m_rr,
            test.evaluate(recipe_t),
            f"K={k_rer} blend={blend_s:g} (fused-score weight)",
        ),
    ]

    # table -------------------------------------------------------------------------------------
    head = "NDCG@5 NDCG@10 Recall@5 Recall@10 MRR@10"
    print(f"\n{'method':<58} | valid: {head} | test: {head} | hyper-parameters")
    for r in rows:
        print(
            f"{r.method:<58} | {fmt_metrics(r.valid):>{len(head) + 7}} | "
            f"{fmt_metrics(r.test):>{len(head) + 6}} | {r.params}"
        )
    print(
        f"\ntraining time: recipe (train_collaborative_model on train+valid, 3,650 items, "
        f"{sum(len(h) for h in test.histories):,} events) {recipe_cpu:.1f}s CPU / "
        f"{recipe_wall:.1f}s wall; transition vectors (train) {trans_cpu:.1f}s CPU / "
        f"{trans_wall:.1f}s wall"
    )
    print(
        "recipe defaults: "
        + ", ".join(
            [
                f"vectors dim={i2v_cfg.dim} window={i2v_cfg.window} decay={i2v_cfg.decay:g}",
                f"query decay={rec_decay:g} over {RECENT_WINDOW} events",
                f"levels w=({w0:g},{w1:g},{w2:g},1) half-life={hls}",
                f"re-rank K={k_rer} blend={blend_s:g}",
            ]
        )
    )
    print(
        f"total runtime {time.time() - t_start:.0f}s wall, "
        f"{time.process_time() - cpu_start:.0f}s CPU"
    )


if __name__ == "__main__":
    main()
