"""The review page's overview (server/http.py serves it under /api/, gated as the rest of the
page's JSON): the tenant's counts, the users whose trees were built last, the users listed
with paging and search, and the users whose trees cite an item.

Everything is a store query, run off the event loop, none of which reads more than a page of
trees: the counts; `Store.recent_trees` (the latest revisions, newest first, by an index of
build times); `Store.search_user_ids` (a page of ids and how many match); `Store.citing_users`
(by an index of the items each user's latest tree cites). Nothing here writes or builds a
tree.
"""

from __future__ import annotations

import asyncio
from typing import Any

from taxonomy.engine import InterestEngine

RECENT_USERS = 10
MAX_PAGE_SIZE = 100
DEFAULT_PAGE_SIZE = 25
MAX_CITING_USERS = 200
MAX_OFFSET = 2**62


async def overview(engine: InterestEngine) -> dict[str, Any]:
    """Counts and the users whose trees were built last, newest first."""
    store = engine.store
    items, users, events = await asyncio.to_thread(
        lambda: (store.item_count(), store.user_count(), store.event_count())
    )
    trees = await asyncio.to_thread(store.recent_trees, RECENT_USERS)
    return {
        "counts": {"items": items, "users": users, "events": events},
        "recent": [
            {
                "user_id": tree.user_id,
                "revision": tree.revision,
                "create_time": tree.create_time.isoformat(),
                "node_count": len(tree.nodes),
                "event_count": tree.event_count,
            }
            for tree in trees
        ],
    }


def _bounded(text: str, default: int, low: int, high: int) -> int:
    try:
        value = int(text) if text else default
    except ValueError:
        value = default
    return min(max(value, low), high)


async def list_users(
    engine: InterestEngine, search: str, offset: str, limit: str
) -> dict[str, Any]:
    """A page of the users (with events) whose id contains `search` (case-insensitive), in id
    order; `next_offset` is null on the last page."""
    needle = search.strip().lower()
    try:
        start = min(max(int(offset) if offset else 0, 0), MAX_OFFSET)
    except ValueError:
        start = 0
    size = _bounded(limit, DEFAULT_PAGE_SIZE, 1, MAX_PAGE_SIZE)
    page, total = await asyncio.to_thread(engine.store.search_user_ids, needle, start, size)
    start = min(start, total)
    following = start + size
    return {
        "users": page,
        "total": total,
        "offset": start,
        "next_offset": following if following < total else None,
    }


async def citing_users(engine: InterestEngine, item_id: str) -> dict[str, Any]:
    """The users whose latest tree cites `item_id` as evidence, with the citing nodes' labels."""
    items = await engine.catalog.get_items([item_id])
    citing = await asyncio.to_thread(engine.store.citing_users, item_id, MAX_CITING_USERS + 1)
    return {
        "item": {
            "item_id": item_id,
            "title": items[item_id].title if item_id in items else "",
            "exists": item_id in items,
        },
        "users": [
            {"user_id": user_id, "revision": revision, "nodes": labels}
            for user_id, revision, labels in citing[:MAX_CITING_USERS]
        ],
        "more": len(citing) > MAX_CITING_USERS,
    }
