"""InterestService.DeleteUser: the user's events, revisions and taxonomy references go, it is
idempotent, and no byte of the user id is left in any file of the data directory (the SQLite
database, its WAL, the index files and sidecars, the model files)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import grpc
from interesttree.v1 import admin_pb2, interest_pb2, recommendation_pb2

from ..conftest import RunningServer, data_only_settings, start_server
from .helpers import expect_code, expect_invalid
from .test_api import START, load_sample

SUBJECT = "erasure-subject-5f1c9d"
"""A user id that no item text contains, so any occurrence in a file is the user's."""


def traces(data_dir: Path, needle: str) -> list[str]:
    """Files under `data_dir` containing `needle` (as UTF-8 or in a numpy UTF-32 array)."""
    found = []
    patterns = (needle.encode(), needle.encode("utf-32-le"))
    for path in sorted(data_dir.rglob("*")):
        if path.is_file():
            content = path.read_bytes()
            if any(pattern in content for pattern in patterns):
                found.append(str(path.relative_to(data_dir)))
    return found


def references(data_dir: Path) -> int:
    """The subject's rows in the tables that name users."""
    with sqlite3.connect(data_dir / "interest-tree.sqlite3") as conn:
        return sum(
            conn.execute(f"SELECT COUNT(*) FROM {table} WHERE user_id = ?", (SUBJECT,)).fetchone()[
                0
            ]
            for table in ("events", "trees", "tree_node_taxonomy")
        )


def _history(user: str) -> interest_pb2.RecordEventsRequest:
    request = interest_pb2.RecordEventsRequest()
    for hour, item in enumerate(
        ("time-machine", "war-of-the-worlds", "skylark-of-space", "triplanetary", "star-kings")
    ):
        event = request.events.add(
            user=f"users/{user}", item=f"items/{item}", type=interest_pb2.EVENT_TYPE_LIKE
        )
        event.event_time.FromDatetime(START.replace(hour=hour))
    return request


async def test_delete_user_leaves_no_trace(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    running: RunningServer = await start_server(data_only_settings(data_dir))
    try:
        stubs = running.stubs
        await load_sample(running)
        await stubs.interests.RecordEvents(_history(SUBJECT))
        user = f"users/{SUBJECT}"
        await stubs.interests.BuildInterestTree(interest_pb2.BuildInterestTreeRequest(user=user))
        await stubs.interests.BuildInterestTree(interest_pb2.BuildInterestTreeRequest(user=user))
        await stubs.interests.BuildInterestTree(
            interest_pb2.BuildInterestTreeRequest(user="users/alice")
        )
        await stubs.recommender.Recommend(recommendation_pb2.RecommendRequest(user=user))
        await stubs.admin.RefreshModels(admin_pb2.RefreshModelsRequest())
        assert references(data_dir) > 0
        assert traces(data_dir, SUBJECT), "the scan must see the user before the erasure"

        erased = await stubs.interests.DeleteUser(interest_pb2.DeleteUserRequest(name=user))
        assert erased.deleted
        assert erased.deleted_event_count == 5
        assert erased.deleted_revision_count == 2
        await stubs.admin.RefreshModels(admin_pb2.RefreshModelsRequest())  # saves every index
        assert traces(data_dir, SUBJECT) == []

        for call in (
            stubs.interests.GetInterestTree(
                interest_pb2.GetInterestTreeRequest(name=f"{user}/interestTree")
            ),
            stubs.interests.ExplainInterests(interest_pb2.ExplainInterestsRequest(user=user)),
            stubs.recommender.Recommend(recommendation_pb2.RecommendRequest(user=user)),
            stubs.interests.ListInterestTreeRevisions(
                interest_pb2.ListInterestTreeRevisionsRequest(name=f"{user}/interestTree")
            ),
        ):
            await expect_code(call, grpc.StatusCode.NOT_FOUND)
        assert references(data_dir) == 0
        # Others keep everything.
        alice = await stubs.interests.GetInterestTree(
            interest_pb2.GetInterestTreeRequest(name="users/alice/interestTree")
        )
        assert alice.tree.nodes

        again = await stubs.interests.DeleteUser(interest_pb2.DeleteUserRequest(name=user))
        assert not again.deleted and again.deleted_event_count == 0
        await expect_invalid(
            stubs.interests.DeleteUser(interest_pb2.DeleteUserRequest(name="people/x")), "name"
        )
        await expect_invalid(stubs.interests.DeleteUser(interest_pb2.DeleteUserRequest()), "name")
    finally:
        await running.stop()
    # Still nothing once the server has shut down and saved everything.
    assert traces(data_dir, SUBJECT) == []
