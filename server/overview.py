"""The review page's overview (server/http.py serves it under /api/, gated as the rest of the
page's JSON): the tenant's counts, the users whose trees were built last, the users listed
with paging and search, and the users whose trees cite an item.

Counts are store queries. Recent builds and citations come from one scan of the latest tree
of at most `MAX_SCANNED_USERS` users (in id order), run off the event loop; beyond that the
answer says `partial: true`. Nothing here writes or builds a tree.
"""

from __future__ import annotations

import asyncio
from typing import Any

from taxonomy.engine import InterestEngine
from taxonomy.models import InterestTree

MAX_SCANNED_USERS = 5000
RECENT_USERS = 10
MAX_PAGE_SIZE = 100
DEFAULT_PAGE_SIZE = 25
MAX_CITING_USERS = 200


async def _latest_trees(engine: InterestEngine) -> tuple[list[InterestTree], bool]:
    users = await engine.events.user_ids()
    store = engine.store

    def scan() -> list[InterestTree]:
        trees = (store.latest_tree(user) for user in users[:MAX_SCANNED_USERS])
        return [tree for tree in trees if tree is not None]

    return await asyncio.to_thread(scan), len(users) > MAX_SCANNED_USERS


async def overview(engine: InterestEngine) -> dict[str, Any]:
    """Counts and the users whose trees were built last, newest first."""
    store = engine.store
    items, users, events = await asyncio.to_thread(
        lambda: (store.item_count(), store.user_count(), store.event_count())
    )
    trees, partial = await _latest_trees(engine)
    trees.sort(key=lambda tree: (tree.create_time, tree.user_id), reverse=True)
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
            for tree in trees[:RECENT_USERS]
        ],
        "partial": partial,
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
    users = [user for user in await engine.events.user_ids() if needle in user.lower()]
    start = _bounded(offset, 0, 0, len(users))
    size = _bounded(limit, DEFAULT_PAGE_SIZE, 1, MAX_PAGE_SIZE)
    page = users[start : start + size]
    following = start + size
    return {
        "users": page,
        "total": len(users),
        "offset": start,
        "next_offset": following if following < len(users) else None,
    }


async def citing_users(engine: InterestEngine, item_id: str) -> dict[str, Any]:
    """The users whose latest tree cites `item_id` as evidence, with the citing nodes' labels."""
    items = await engine.catalog.get_items([item_id])
    trees, partial = await _latest_trees(engine)
    citing = []
    for tree in trees:
        labels = [node.label for node in tree.nodes if item_id in node.evidence_items]
        if labels:
            citing.append({"user_id": tree.user_id, "revision": tree.revision, "nodes": labels})
    return {
        "item": {
            "item_id": item_id,
            "title": items[item_id].title if item_id in items else "",
            "exists": item_id in items,
        },
        "users": citing[:MAX_CITING_USERS],
        "more": len(citing) > MAX_CITING_USERS,
        "partial": partial,
    }
