"""Turns a user's raw events into per-item interaction strengths, discounted by recency, and
their negative feedback (dislikes, hidden items) into what recommending must avoid.

DISLIKE and HIDE events are no interest: they weigh 0 wherever interest is measured (trees,
level vectors, the collaborative models), and `negative_feedback` reads them instead."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from taxonomy.models import Event, EventType

DEFAULT_EVENT_TYPE_WEIGHTS: Mapping[EventType, float] = {
    EventType.UNSPECIFIED: 1.0,
    EventType.VIEW: 1.0,
    EventType.CLICK: 1.0,
    EventType.RATE: 1.0,
    EventType.LIKE: 2.0,
    EventType.PURCHASE: 3.0,
    EventType.DISLIKE: 0.0,
    EventType.HIDE: 0.0,
}
NEGATIVE_EVENT_TYPES = frozenset({EventType.DISLIKE, EventType.HIDE})
"""Feedback against an item: never interest, whatever its `weight`."""
REVOKES_DISLIKE = frozenset({EventType.LIKE, EventType.PURCHASE})
"""A later event of these types means the user no longer dislikes the item."""


def event_weight(
    event: Event, type_weights: Mapping[EventType, float] = DEFAULT_EVENT_TYPE_WEIGHTS
) -> float:
    """How much one event counts as interest: its own weight, else its type's; 0 for negative
    feedback (whose `weight` says how strongly it counts against, see `negative_feedback`)."""
    if event.event_type in NEGATIVE_EVENT_TYPES:
        return 0.0
    return event.weight if event.weight is not None else type_weights[event.event_type]


def is_interest(event: Event) -> bool:
    """Whether the event tells of interest (every type but DISLIKE and HIDE)."""
    return event.event_type not in NEGATIVE_EVENT_TYPES


@dataclass(frozen=True)
class NegativeFeedback:
    """What a user's negative events ask of recommending."""

    hidden: frozenset[str] = frozenset()
    """Items the user hid: never returned to this user again."""
    disliked: Mapping[str, float] = field(default_factory=dict)
    """Items the user dislikes (not revoked by a later LIKE or PURCHASE), with how strongly:
    the sum of their DISLIKE events' weights (1 each by default)."""

    def __bool__(self) -> bool:
        return bool(self.hidden or self.disliked)


def negative_feedback(events: Sequence[Event]) -> NegativeFeedback:
    """Hidden and disliked items of one user's events (any order; time decides)."""
    ordered = sorted(enumerate(events), key=lambda pair: (pair[1].event_time, pair[0]))
    hidden: set[str] = set()
    disliked: dict[str, float] = {}
    for _, event in ordered:
        if event.event_type is EventType.HIDE:
            hidden.add(event.item_id)
        elif event.event_type is EventType.DISLIKE:
            strength = event.weight if event.weight is not None else 1.0
            disliked[event.item_id] = disliked.get(event.item_id, 0.0) + strength
        elif event.event_type in REVOKES_DISLIKE:
            disliked.pop(event.item_id, None)
    return NegativeFeedback(frozenset(hidden), disliked)


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
    # Negative feedback is no interaction of interest: it neither joins nor ages the history.
    interest = [event for event in events if is_interest(event)]
    ordered = sorted(enumerate(interest), key=lambda pair: (pair[1].event_time, pair[0]))
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
