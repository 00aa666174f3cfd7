"""BatchBuildInterestTrees: one result per user whatever a build raises, never a hang."""

from __future__ import annotations

import asyncio
import logging
from typing import Any, cast

import pytest

from taxonomy.errors import DomainError, InternalError, NotFoundError
from taxonomy.models import InterestTree
from taxonomy.trees.naming import NamingStats
from taxonomy.trees.service import BuildResult, TreeConfig, TreeService

from .helpers import START

HANG_GUARD_S = 60  # only so a regression fails instead of hanging the suite


class ScriptedTrees(TreeService):
    """A TreeService whose build is scripted per user: "boom" raises RuntimeError, "ghost" a
    NotFoundError, "slow" waits until cancelled; every other user gets an empty tree."""

    def __init__(self, in_flight: int) -> None:
        unused = cast(Any, None)
        super().__init__(
            unused,
            unused,
            unused,
            unused,
            unused,
            None,
            asyncio.Lock(),
            TreeConfig(batch_users_in_flight=in_flight),
        )
        self.running = 0
        self.most_running = 0
        self.cancelled: list[str] = []

    async def build_tree(self, user_id: str, *, incremental: bool = True) -> BuildResult:
        self.running += 1
        self.most_running = max(self.most_running, self.running)
        try:
            await asyncio.sleep(0)
            if user_id == "boom":
                raise RuntimeError("the store went away")
            if user_id == "ghost":
                raise NotFoundError("no such user", resource_type="user", resource_name=user_id)
            if user_id == "slow":
                await asyncio.Event().wait()
            tree = InterestTree(
                user_id=user_id, revision=1, nodes=[], create_time=START, event_count=0
            )
            return BuildResult(tree=tree, naming=NamingStats())
        except asyncio.CancelledError:
            self.cancelled.append(user_id)
            raise
        finally:
            self.running -= 1


async def collect(trees: TreeService, users: list[str]) -> dict[str, BuildResult | DomainError]:
    results: dict[str, BuildResult | DomainError] = {}
    async with asyncio.timeout(HANG_GUARD_S):
        async for user_id, result in trees.batch_build(users):
            assert user_id not in results, f"{user_id} yielded twice"
            results[user_id] = result
    return results


async def test_an_unexpected_failure_is_that_users_internal_error(
    caplog: pytest.LogCaptureFixture,
) -> None:
    trees = ScriptedTrees(in_flight=2)
    users = ["a", "boom", "b", "ghost", "c", "d", "e"]
    with caplog.at_level(logging.ERROR, logger="taxonomy.trees.service"):
        results = await collect(trees, users)
    assert set(results) == set(users)
    boom = results["boom"]
    assert isinstance(boom, InternalError) and boom.reason == "INTERNAL"
    assert "RuntimeError" in boom.message
    assert isinstance(results["ghost"], NotFoundError)
    for user_id in ("a", "b", "c", "d", "e"):
        result = results[user_id]
        assert isinstance(result, BuildResult) and result.tree.user_id == user_id
    assert trees.most_running <= 2
    logged = [r for r in caplog.records if r.exc_info and "boom" in r.getMessage()]
    assert logged and logged[0].exc_info is not None
    assert logged[0].exc_info[0] is RuntimeError


async def test_every_user_fails_and_the_stream_still_ends() -> None:
    results = await collect(ScriptedTrees(in_flight=3), ["boom"])
    assert isinstance(results["boom"], InternalError)


async def test_a_consumer_that_stops_early_cancels_the_builds_in_flight() -> None:
    trees = ScriptedTrees(in_flight=2)
    stream = trees.batch_build(["slow", "a", "b", "c"])
    async with asyncio.timeout(HANG_GUARD_S):
        first, _ = await anext(stream)
        await stream.aclose()  # type: ignore[attr-defined]
    assert first == "a"
    assert trees.cancelled == ["slow"]
    assert trees.running == 0
