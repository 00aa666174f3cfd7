"""Fixtures shared by the server tests."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from interesttree.v1 import interest_pb2

from ..conftest import data_only_settings
from ..http_server import ServerWithHttp, start_server_with_http
from .test_api import load_sample

# Alice reads three Gothic novels after her first tree, so her second revision has changes.
LATER_READS = ("dracula", "carmilla", "frankenstein")


@pytest.fixture
async def reviewed(tmp_path: Path) -> AsyncIterator[ServerWithHttp]:
    """A live server holding the sample, with two revisions of alice's tree and no tree for
    bob or carol."""
    served = await start_server_with_http(data_only_settings(tmp_path / "data"))
    try:
        await load_sample(served.running)
        interests = served.running.stubs.interests
        alice = interest_pb2.BuildInterestTreeRequest(user="users/alice")
        await interests.BuildInterestTree(alice)
        later = interest_pb2.RecordEventsRequest()
        for hour, item in enumerate(LATER_READS):
            event = later.events.add(
                user="users/alice", item=f"items/{item}", type=interest_pb2.EVENT_TYPE_LIKE
            )
            event.event_time.FromDatetime(datetime(2024, 3, 1, tzinfo=UTC) + timedelta(hours=hour))
        await interests.RecordEvents(later)
        await interests.BuildInterestTree(alice)
        yield served
    finally:
        await served.stop()
