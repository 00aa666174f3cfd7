"""The learned collaborative model as the service holds it: item vectors for the fused-vector
index, the full-rank next-item matrix for re-ranking, and the history weightings of both.

Training lives in :mod:`taxonomy.recommendation.training`; this module only describes and
applies a trained model, so serving code never imports the trainer.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

F32 = npt.NDArray[np.float32]
F64 = npt.NDArray[np.float64]

__all__ = ["CollaborativeModel", "Weighting", "context_weights", "place_vectors", "unit_rows"]


def unit_rows(x: F64) -> F64:
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    out: F64 = x / np.where(norms > 0, norms, 1.0)
    return out


def place_vectors(features: npt.NDArray[np.floating], feature_map: F32, scale: float = 1.0) -> F32:
    """Collaborative vectors of items known only by their text or caller vectors: the ridge
    map of the unit-normalised features, at length ``scale``.

    Unit length (the learned vectors' length) let placed items crowd the learned ones out: on
    MovieLens, with 10 % of the items placed, they took 27 % of every top 10 while their
    users' events were 9.8 % of all events (bench/cold_items.py). The ridge prediction's own
    length (far below 1) buried them instead, and so did the map's mean cosine with the
    learned vectors (0.41). The ridge map pulls directions toward the centre of the space,
    where user vectors point; ``scale`` (``CollaborativeConfig.placed_length``) is a length
    between, tuned so placed items keep their recall without crowding."""
    x = unit_rows(np.asarray(features, dtype=np.float64))
    out: F32 = (scale * unit_rows(x @ feature_map.astype(np.float64))).astype(np.float32)
    return out


@dataclass(frozen=True)
class CollaborativeModel:
    """Item vectors for the fused-vector index plus what re-ranking needs.

    ``item_vectors[k]`` and ``context_vectors[k]`` belong to ``item_ids[k]``.
    """

    item_ids: tuple[str, ...]
    item_vectors: F32
    """Index-side vectors, unit L2 norm, shape (n_items, dim')."""
    context_vectors: F32
    """Query-side vectors: a user vector is a weighted sum of these rows."""
    transitions: F32 | None
    """Full-rank next-item matrix ``B`` (row = context item, column = candidate), or ``None``.
    Square over the model's first ``transitions.shape[0]`` items (the most frequent ones);
    the other items have no next-item score."""
    window: int = 10
    """``window`` .. ``profile_window``: the query weighting of :meth:`weights_for` (the item
    weights of the fused user vector), see :func:`context_weights`."""
    decay: float = 0.85
    profile_weight: float = 0.0
    profile_power: float = 0.5
    profile_window: int | None = None
    symmetric: bool = False
    """``context_vectors`` equal ``item_vectors`` (co-occurrence space)."""
    rerank_weighting: Weighting | None = None
    """History weighting of the exact ``transitions`` scores (``None``: the query weighting)."""
    feature_map: F32 | None = None
    """Ridge map (feature dim, dim) from an item's text or caller vector to this space, fitted
    on the items that have both; places items without events (:meth:`place`)."""
    feature_scale: float = 1.0
    """Length of a placed vector (see :func:`place_vectors`)."""
    _index: dict[str, int] = field(default_factory=dict, repr=False, compare=False)

    def __post_init__(self) -> None:
        self._index.update({item: k for k, item in enumerate(self.item_ids)})

    @property
    def dim(self) -> int:
        return int(self.item_vectors.shape[1])

    def index_of(self, item_id: str) -> int | None:
        """Row of ``item_id`` or ``None`` when the item has no vector."""
        return self._index.get(item_id)

    @property
    def transition_items(self) -> int:
        """How many of the first items have rows and columns in ``transitions``."""
        return 0 if self.transitions is None else int(self.transitions.shape[0])

    def transition_index_of(self, item_id: str) -> int | None:
        """Row and column of ``item_id`` in ``transitions``, ``None`` outside it."""
        row = self._index.get(item_id)
        return row if row is not None and row < self.transition_items else None

    def place(self, features: npt.NDArray[np.floating]) -> F32 | None:
        """Vectors in this space for items known only by their text or caller vectors (rows
        of ``features``); ``None`` when the model has no feature map or the dimension differs."""
        if self.feature_map is None or features.ndim != 2:
            return None
        if features.shape[1] != self.feature_map.shape[0]:
            return None
        return place_vectors(features, self.feature_map, self.feature_scale)

    @property
    def query_weighting(self) -> Weighting:
        """How :meth:`weights_for` weighs a history for the fused user vector."""
        return Weighting(
            self.window, self.decay, self.profile_weight, self.profile_power, self.profile_window
        )

    def weights_for(
        self, history: Sequence[str], event_weights: Sequence[float] | None = None
    ) -> dict[int, float]:
        """Per-row query weights of a time-ordered history for the fused user vector.

        Unknown items are skipped; repeated items accumulate.
        """
        return self._weights(self.query_weighting, history, event_weights)

    def rerank_weights_for(
        self, history: Sequence[str], event_weights: Sequence[float] | None = None
    ) -> dict[int, float]:
        """Per-row weights of a time-ordered history for the exact ``transitions`` scores
        (the transition trainer's context weighting)."""
        weighting = self.rerank_weighting or self.query_weighting
        return self._weights(weighting, history, event_weights, self.transition_items or None)

    def _weights(
        self,
        weighting: Weighting,
        history: Sequence[str],
        event_weights: Sequence[float] | None,
        rows_below: int | None = None,
    ) -> dict[int, float]:
        pos = weighting.weights(len(history))
        if event_weights is not None:
            pos = pos * np.asarray(event_weights, dtype=np.float64)
        out: dict[int, float] = {}
        for item, w in zip(history, pos.tolist(), strict=True):
            row = self._index.get(item)
            if row is not None and w != 0.0 and (rows_below is None or row < rows_below):
                out[row] = out.get(row, 0.0) + float(w)
        return out

    def user_vector(
        self, history: Sequence[str], event_weights: Sequence[float] | None = None
    ) -> F32:
        """Query vector of a time-ordered history: sum of weighted ``context_vectors`` rows."""
        weights = self.weights_for(history, event_weights)
        u = np.zeros(self.context_vectors.shape[1], dtype=np.float64)
        if weights:
            rows = np.fromiter(weights.keys(), dtype=np.int64)
            w = np.fromiter(weights.values(), dtype=np.float64)
            u = w @ self.context_vectors[rows].astype(np.float64)
        return u.astype(np.float32)


@dataclass(frozen=True)
class Weighting:
    """A history weighting, see :func:`context_weights`."""

    window: int
    decay: float
    profile_weight: float = 0.0
    profile_power: float = 0.5
    profile_window: int | None = None

    def weights(self, n: int) -> F64:
        return context_weights(
            n,
            window=self.window,
            decay=self.decay,
            profile_weight=self.profile_weight,
            profile_power=self.profile_power,
            profile_window=self.profile_window,
        )


def context_weights(
    n: int,
    *,
    window: int,
    decay: float,
    profile_weight: float = 0.0,
    profile_power: float = 0.5,
    profile_window: int | None = None,
) -> F64:
    """Weights of the ``n`` events of a time-ordered history (oldest first) as one query.

    Recency part: ``decay**age`` for the ``window`` newest events (age 0 = newest). Profile part:
    ``profile_weight / m**profile_power`` for each of the ``m`` newest events in the profile
    window. This is exactly the context a training row uses for the event that follows.
    """
    w = np.zeros(n, dtype=np.float64)
    if n == 0:
        return w
    age = np.arange(n - 1, -1, -1, dtype=np.float64)
    recent = age < window
    w[recent] += decay ** age[recent]
    if profile_weight > 0.0:
        m = n if profile_window is None else min(n, profile_window)
        w[n - m :] += profile_weight / float(m) ** profile_power
    return w
