"""Per-tenant quotas: a request rate (a token bucket per tenant) and caps on the items, events
and users a tenant may hold. Every limit is off (None) unless configured.

Over the rate, a call is RESOURCE_EXHAUSTED with a google.rpc.RetryInfo saying when a token
will be there; a write that would take a tenant over a cap is RESOURCE_EXHAUSTED with a
QuotaFailure naming the cap, and stores nothing.
"""

from __future__ import annotations

import asyncio
import threading
import time
from dataclasses import dataclass
from typing import Any

from interesttree.v1 import catalog_pb2, interest_pb2

from server.errors import QuotaExceededError, RateLimitedError
from taxonomy.engine import InterestEngine


@dataclass(frozen=True)
class QuotaConfig:
    rate_per_s: float | None = None
    """Requests per second per tenant (health and reflection not counted); None: no limit."""
    burst: int | None = None
    """Bucket size; None: one second's worth of requests (at least 1)."""
    max_items: int | None = None
    max_events: int | None = None
    max_users: int | None = None

    @property
    def caps(self) -> bool:
        return any(cap is not None for cap in (self.max_items, self.max_events, self.max_users))


class TokenBucket:
    def __init__(self, rate: float, burst: float) -> None:
        self._rate = rate
        self._burst = burst
        self._tokens = burst
        self._stamp = time.monotonic()

    def take(self) -> float:
        """0.0 if a token was taken, else the seconds until one is there."""
        now = time.monotonic()
        self._tokens = min(self._burst, self._tokens + (now - self._stamp) * self._rate)
        self._stamp = now
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return 0.0
        return (1.0 - self._tokens) / self._rate


class Quotas:
    def __init__(self, config: QuotaConfig) -> None:
        self.config = config
        self._buckets: dict[str, TokenBucket] = {}
        self._lock = threading.Lock()

    def check_rate(self, tenant: str) -> None:
        rate = self.config.rate_per_s
        if rate is None:
            return
        with self._lock:
            bucket = self._buckets.get(tenant)
            if bucket is None:
                burst = self.config.burst or max(1, int(rate))
                bucket = self._buckets[tenant] = TokenBucket(rate, float(burst))
            wait = bucket.take()
        if wait > 0:
            raise RateLimitedError(
                f"tenant request rate over {rate:g}/s; retry in {wait:.2f} s", retry_after_s=wait
            )

    async def check_request(self, method: str, request: Any, engine: InterestEngine) -> None:
        """Raises QuotaExceededError if `request` would take the tenant over a cap."""
        if not self.config.caps:
            return
        if method.endswith("/UpsertItems") and isinstance(request, catalog_pb2.UpsertItemsRequest):
            await asyncio.to_thread(self._check_items, request, engine)
        elif method.endswith("/RecordEvents") and isinstance(
            request, interest_pb2.RecordEventsRequest
        ):
            await asyncio.to_thread(self._check_events, request, engine)

    def _check_items(self, request: catalog_pb2.UpsertItemsRequest, engine: InterestEngine) -> None:
        cap = self.config.max_items
        if cap is None:
            return
        names = {item.name.removeprefix("items/") for item in request.items}
        known = engine.store.get_items(sorted(names))
        held = len(engine.catalog.index.index)
        new = len(names - set(known))
        if held + new > cap:
            raise QuotaExceededError(
                f"the tenant holds {held} items and may hold {cap}", subject="items"
            )

    def _check_events(
        self, request: interest_pb2.RecordEventsRequest, engine: InterestEngine
    ) -> None:
        store = engine.store
        if self.config.max_events is not None:
            held = store.event_count()
            if held + len(request.events) > self.config.max_events:
                raise QuotaExceededError(
                    f"the tenant holds {held} events and may hold {self.config.max_events}",
                    subject="events",
                )
        cap = self.config.max_users
        if cap is not None:
            users = {event.user.removeprefix("users/") for event in request.events}
            new = [user for user in users if not store.user_exists(user)]
            if new:
                held = len(store.user_ids())
                if held + len(new) > cap:
                    raise QuotaExceededError(
                        f"the tenant holds {held} users and may hold {cap}", subject="users"
                    )
