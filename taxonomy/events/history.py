"""Turns a user's raw events into per-item interaction strengths, discounted by recency."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

from taxonomy.models import Event, EventType

DEFAULT_EVENT_TYPE_WEIGHTS: Mapping[EventType, float] = {
    EventType.UNSPECIFIED: 1.0,
    EventType.VIEW: 1.0,
    EventType.CLICK: 1.0,
    EventType.RATE: 1.0,
    EventType.LIKE: 2.0,
    EventType.PURCHASE: 3.0,
}


def event_weight(
    event: Event, type_weights: Mapping[EventType, float] = DEFAULT_EVENT_TYPE_WEIGHTS
) -> float:
    """How much one event counts: its own weight, else its type's."""
    return event.weight if event.weight is not None else type_weights[event.event_type]


@dataclass(frozen=True)
class HistoryItem:
    item_id: str
    strength: float
    """Sum of event weights, each halved per half-life (in events) before the user's last one."""
    interactions: int
    last_time: datetime
    last_position: int
    """Index of the item's latest event in the user's time-ordered events (0 = oldest)."""


def summarize_history(
    events: Sequence[Event],
    *,
    half_life_events: float,
    type_weights: Mapping[EventType, float] = DEFAULT_EVENT_TYPE_WEIGHTS,
) -> list[HistoryItem]:
    """Aggregates events per item, strongest first.

    Recency is measured in events rather than wall-clock time: catalogs replayed from old
    datasets and users who pause for months both keep a meaningful notion of "recent".
    """
    ordered = sorted(enumerate(events), key=lambda pair: (pair[1].event_time, pair[0]))
    total = len(ordered)
    strength: dict[str, float] = {}
    count: dict[str, int] = {}
    last_time: dict[str, datetime] = {}
    last_position: dict[str, int] = {}
    for position, (_, event) in enumerate(ordered):
        age = total - 1 - position
        base = event_weight(event, type_weights)
        decayed = base * 0.5 ** (age / half_life_events)
        strength[event.item_id] = strength.get(event.item_id, 0.0) + decayed
        count[event.item_id] = count.get(event.item_id, 0) + 1
        last_time[event.item_id] = event.event_time
        last_position[event.item_id] = position
    items = [
        HistoryItem(
            item_id, strength[item_id], count[item_id], last_time[item_id], last_position[item_id]
        )
        for item_id in strength
    ]
    items.sort(key=lambda entry: (-entry.strength, -entry.last_position))
    return items
