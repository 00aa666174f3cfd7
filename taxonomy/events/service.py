"""The events room: recording interactions, and reading a user's history back."""

from __future__ import annotations

import asyncio
import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

from taxonomy.errors import FieldViolation, InvalidArgumentError, NotFoundError
from taxonomy.events.history import HistoryItem, summarize_history
from taxonomy.models import Event, Item
from taxonomy.ports import Store


@dataclass(frozen=True)
class UserHistory:
    """A user's events on items still in the catalog, summarised per item."""

    history: list[HistoryItem]
    items: dict[str, Item]
    event_count: int


def user_not_found(user_id: str) -> NotFoundError:
    return NotFoundError(
        f"user {user_id!r} has no recorded events",
        resource_type="user",
        resource_name=f"users/{user_id}",
    )


EVENT_CACHE_USERS = 4096
"""Users whose decoded events are kept; a hit costs one indexed COUNT/MAX query."""


class EventLog:
    def __init__(self, store: Store, half_life_events: float) -> None:
        self._store = store
        self._half_life_events = half_life_events
        # Decoding (and validating) every stored event on every Recommend was a large part of
        # its cost; a user's events change only by appending or by deleting the user, both of
        # which change the stamp (count, highest seq).
        self._cache: OrderedDict[str, tuple[tuple[int, int], tuple[Event, ...]]] = OrderedDict()
        self._cache_lock = threading.Lock()

    async def record_events(self, events: Sequence[Event], request_id: str | None) -> int:
        def write() -> int:
            found = self._store.get_items([event.item_id for event in events])
            violations = [
                FieldViolation(f"events[{i}].item", f"item {event.item_id!r} does not exist")
                for i, event in enumerate(events)
                if event.item_id not in found
            ]
            if violations:
                raise InvalidArgumentError(
                    f"{len(violations)} event(s) name items that are not in the catalog",
                    violations,
                    reason="ITEM_NOT_FOUND",
                )
            return self._store.record_events(events, request_id)

        return await asyncio.to_thread(write)

    async def require_user(self, user_id: str) -> None:
        if not await asyncio.to_thread(self._store.user_exists, user_id):
            raise user_not_found(user_id)

    async def user_events(self, user_id: str) -> list[Event]:
        return await asyncio.to_thread(self.events_now, user_id)

    def events_now(self, user_id: str) -> list[Event]:
        """Blocking: the user's events, oldest first, decoded once per change."""
        stamp = self._store.user_event_stamp(user_id)
        with self._cache_lock:
            hit = self._cache.get(user_id)
            if hit is not None and hit[0] == stamp:
                self._cache.move_to_end(user_id)
                return list(hit[1])
        # Read after the stamp: an event recorded in between is included and only makes the
        # next read miss, never serves a stale list.
        events = self._store.user_events(user_id)
        with self._cache_lock:
            if stamp[0] == 0:
                self._cache.pop(user_id, None)
            else:
                self._cache[user_id] = (stamp, tuple(events))
                self._cache.move_to_end(user_id)
                while len(self._cache) > EVENT_CACHE_USERS:
                    self._cache.popitem(last=False)
        return events

    async def user_ids(self) -> list[str]:
        return await asyncio.to_thread(self._store.user_ids)

    def summarize(self, events: Sequence[Event]) -> list[HistoryItem]:
        return summarize_history(events, half_life_events=self._half_life_events)

    def load_history(self, user_id: str) -> UserHistory:
        """Blocking: the user's history on items that still exist."""
        events = self.events_now(user_id)
        items = self._store.get_items([event.item_id for event in events])
        # Events of deleted items stay stored but no longer shape the tree.
        kept = [event for event in events if event.item_id in items]
        return UserHistory(self.summarize(kept), items, len(kept))
