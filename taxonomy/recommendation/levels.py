"""What each tree level means to retrieval: its own time scale over the user's history.

Every complete level partitions the same history, so with one item weighting every level's
vector would be the same history mean and the level weights would change nothing (measured:
one-hot level-1 and deepest-level top-10 lists had mean Jaccard 0.983 on MovieLens). Each level
therefore weighs the history on its own time scale: the coarsest level long-term (slow decay,
long window: the lasting interests, for exploration within them), the deepest level recent (the
current taste, for precision), the levels between interpolated.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from taxonomy.models import Event
from taxonomy.recommendation.collaborative_model import context_weights


@dataclass(frozen=True)
class TimeScale:
    decay: float
    """Weight `decay**age` of an event `age` events before the user's latest."""
    window: int
    """Only the `window` most recent events count."""


@dataclass(frozen=True)
class LevelTimeScales:
    """Tuned on MovieLens validation (bench/level_sweep.py): long-term 0.95 over 200 events at
    the top, the collaborative model's recent 0.6 over 50 at the bottom."""

    coarsest: TimeScale = TimeScale(decay=0.95, window=200)
    deepest: TimeScale = TimeScale(decay=0.6, window=50)

    def for_level(self, level: int, depth: int) -> TimeScale:
        share = (level - 1) / (depth - 1) if depth > 1 else 1.0
        top, bottom = self.coarsest, self.deepest
        decay = top.decay + (bottom.decay - top.decay) * share
        window = round(top.window * (bottom.window / top.window) ** share)
        return TimeScale(decay=decay, window=max(1, window))


def level_item_weights(
    events: Sequence[Event],
    scale: TimeScale,
    event_weight: Callable[[Event], float],
    keep: Callable[[str], bool],
) -> dict[str, float]:
    """Per-item weight of a time-ordered history on one time scale; repeats accumulate, items
    `keep` refuses (no vector in the space) are left out."""
    positional = context_weights(len(events), window=scale.window, decay=scale.decay)
    weights: dict[str, float] = {}
    for event, position_weight in zip(events, positional.tolist(), strict=True):
        weight = position_weight * event_weight(event)
        if weight > 0 and keep(event.item_id):
            weights[event.item_id] = weights.get(event.item_id, 0.0) + weight
    return weights
