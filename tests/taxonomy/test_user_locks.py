"""Per-user build locks live only while a build holds or awaits them: a server that has built
trees for a million users does not keep a million locks (the engine used to keep one per user
ever seen, never released)."""

from __future__ import annotations

import gc
from pathlib import Path

from .helpers import catalog, history, make_engine


async def test_no_lock_outlives_the_builds_of_its_user(tmp_path: Path) -> None:
    engine = await make_engine(tmp_path)
    await engine.catalog.upsert_items(catalog())
    items = [item.item_id for item in catalog()]
    users = [f"user-{k}" for k in range(40)]
    for k, user in enumerate(users):
        await engine.events.record_events(history(user, items[k % 6 : k % 6 + 4]), None)
    for user in users:
        await engine.trees.build_tree(user)
    gc.collect()
    assert len(engine.trees._user_locks) == 0
    await engine.close()
