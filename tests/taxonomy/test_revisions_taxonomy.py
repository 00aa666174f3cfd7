"""Revisions with diffs, the shared taxonomy, batch building and incremental updates."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from pathlib import Path

import grpc
import pytest
from interesttree.v1 import catalog_pb2, interest_pb2

from server.app import Runtime
from taxonomy.engine import EngineConfig, InterestEngine
from taxonomy.models import Event
from taxonomy.storage.sqlite import SqliteStore
from taxonomy.trees.invariants import invariant_violations
from taxonomy.trees.naming import NamingMode

from ..conftest import RunningServer, data_only_settings
from ..server.test_api import START, domain_tree, history_of, load_sample
from .helpers import ScriptedChat


async def record(running: RunningServer, user: str, item: str, hours: int) -> None:
    request = interest_pb2.RecordEventsRequest()
    event = request.events.add(user=user, item=item)
    event.event_time.FromDatetime(START + timedelta(days=60, hours=hours))
    await running.stubs.interests.RecordEvents(request)


@pytest.mark.usefixtures("store_backend")  # SQLite and PostgreSQL
async def test_revisions_are_listed_newest_first_with_diffs(
    data_only_server: RunningServer,
) -> None:
    stubs = data_only_server.stubs
    await load_sample(data_only_server)
    build = interest_pb2.BuildInterestTreeRequest(user="users/alice")
    await stubs.interests.BuildInterestTree(build)
    await record(data_only_server, "users/alice", "items/dracula", 1)
    await stubs.interests.BuildInterestTree(build)

    listed = await stubs.interests.ListInterestTreeRevisions(
        interest_pb2.ListInterestTreeRevisionsRequest(name="users/alice/interestTree", page_size=1)
    )
    assert [r.tree.revision for r in listed.revisions] == [2]
    diff = listed.revisions[0].diff
    assert diff.added_node_ids, "Dracula brings a new Gothic horror group"
    assert diff.changed_evidence_node_ids
    assert "added" in diff.summary
    added_labels = {n.label for n in listed.revisions[0].tree.nodes if n.id in diff.added_node_ids}
    assert "Gothic horror" in added_labels
    older = await stubs.interests.ListInterestTreeRevisions(
        interest_pb2.ListInterestTreeRevisionsRequest(
            name="users/alice/interestTree", page_token=listed.next_page_token
        )
    )
    assert [r.tree.revision for r in older.revisions] == [1]
    assert not older.next_page_token
    assert not older.revisions[0].diff.added_node_ids

    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stubs.interests.ListInterestTreeRevisions(
            interest_pb2.ListInterestTreeRevisionsRequest(name="users/nobody/interestTree")
        )
    assert raised.value.code() == grpc.StatusCode.NOT_FOUND


@pytest.mark.usefixtures("store_backend")  # SQLite and PostgreSQL
async def test_taxonomy_canonicalizes_labels_across_users(data_only_server: RunningServer) -> None:
    stubs = data_only_server.stubs
    await load_sample(data_only_server)
    await stubs.catalog.UpsertItems(
        catalog_pb2.UpsertItemsRequest(
            items=[
                catalog_pb2.Item(name="items/x1", title="Star Voyage", categories=["Sci-Fi", "X"]),
                catalog_pb2.Item(name="items/x2", title="Deep Field", categories=["Sci-Fi", "Y"]),
                catalog_pb2.Item(name="items/y1", title="Ghost Road", categories=["Horror", "Z"]),
            ]
        )
    )
    for hour, item in enumerate(["items/x1", "items/x2", "items/y1"]):
        await record(data_only_server, "users/dave", item, hour)
    alice = await stubs.interests.BuildInterestTree(
        interest_pb2.BuildInterestTreeRequest(user="users/alice")
    )
    dave = await stubs.interests.BuildInterestTree(
        interest_pb2.BuildInterestTreeRequest(user="users/dave")
    )
    alice_scifi = next(n for n in alice.tree.nodes if n.label == "Science fiction")
    dave_scifi = next(n for n in dave.tree.nodes if n.label == "Sci-Fi")
    assert alice_scifi.taxonomy_node == dave_scifi.taxonomy_node
    assert all(n.taxonomy_node.startswith("taxonomyNodes/") for n in dave.tree.nodes)
    space = next(n for n in alice.tree.nodes if n.label == "Space opera")
    assert space.taxonomy_node != alice_scifi.taxonomy_node

    names: list[str] = []
    token = ""
    while True:
        page = await stubs.interests.ListTaxonomyNodes(
            interest_pb2.ListTaxonomyNodesRequest(page_size=4, page_token=token)
        )
        names += [node.name for node in page.taxonomy_nodes]
        counts = [node.node_count for node in page.taxonomy_nodes]
        assert counts == sorted(counts, reverse=True)
        token = page.next_page_token
        if not token:
            break
    assert len(names) == len(set(names))
    assert alice_scifi.taxonomy_node in names
    first = await stubs.interests.ListTaxonomyNodes(interest_pb2.ListTaxonomyNodesRequest())
    merged = next(n for n in first.taxonomy_nodes if n.name == alice_scifi.taxonomy_node)
    assert merged.node_count >= 2
    assert {merged.label, *merged.aliases} >= {"Science fiction", "Sci-Fi"}


@pytest.mark.usefixtures("store_backend")  # SQLite and PostgreSQL
async def test_batch_build_streams_every_user(data_only_server: RunningServer) -> None:
    stubs = data_only_server.stubs
    _, events = await load_sample(data_only_server)
    seen: list[str] = []
    counts: list[int] = []
    async for result in stubs.interests.BatchBuildInterestTrees(
        interest_pb2.BatchBuildInterestTreesRequest(all_users=True)
    ):
        assert not result.error
        assert result.total_count == 3
        counts.append(result.completed_count)
        seen.append(result.user)
        tree = domain_tree(result.tree)
        assert invariant_violations(tree, history_of(events, result.user)) == []
    assert sorted(seen) == ["users/alice", "users/bob", "users/carol"]
    assert counts == [1, 2, 3]

    partial = [
        r
        async for r in stubs.interests.BatchBuildInterestTrees(
            interest_pb2.BatchBuildInterestTreesRequest(users=["users/bob", "users/nobody"])
        )
    ]
    errors = {r.user: r.error for r in partial}
    assert errors["users/bob"] == ""
    assert errors["users/nobody"].startswith("NOT_FOUND USER_NOT_FOUND")

    with pytest.raises(grpc.aio.AioRpcError) as raised:
        async for _ in stubs.interests.BatchBuildInterestTrees(
            interest_pb2.BatchBuildInterestTreesRequest()
        ):
            pass
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_incremental_update_asks_only_about_changed_nodes(tmp_path: Path) -> None:
    runtime = await Runtime.create(data_only_settings(tmp_path / "seed"))
    items, events = await asyncio.to_thread(_sample_domain)
    await runtime.engine.catalog.upsert_items(items)
    await runtime.engine.events.record_events(events, None)
    embedder = runtime.engine.embedder
    await runtime.close()

    chat = ScriptedChat([])
    engine = InterestEngine(
        SqliteStore(tmp_path / "seed" / "interest-tree.sqlite3"),
        tmp_path / "seed",
        embedder,
        chat,
        EngineConfig(naming_mode=NamingMode.FREE),
    )
    await engine.start()
    full = await engine.trees.build_tree("alice")
    assert not full.tree.build_stats.incremental
    new_event = Event(user_id="alice", item_id="dracula", event_time=START + timedelta(days=90))
    await engine.events.record_events([new_event], None)
    update = await engine.trees.build_tree("alice")
    stats = update.tree.build_stats
    assert stats.incremental
    assert 0 < stats.model_requests < full.tree.build_stats.model_requests
    assert update.naming.reused > 0
    assert stats.prompt_tokens + stats.completion_tokens <= 0.4 * (
        full.tree.build_stats.prompt_tokens + full.tree.build_stats.completion_tokens
    )
    rebuilt = await engine.trees.build_tree("alice", incremental=False)
    assert rebuilt.tree.build_stats.model_requests == len(rebuilt.tree.nodes)
    await engine.close()


def _sample_domain() -> tuple[list, list]:  # type: ignore[type-arg]
    from server.demo import load_sample as load
    from taxonomy.models import Item

    catalog, users = load()
    items = [Item(**entry) for entry in catalog]
    events = [
        Event(user_id=user["user_id"], item_id=item_id, event_time=START + timedelta(days=day))
        for user in users
        for day, item_id in enumerate(user["items"])
    ]
    return items, events


async def test_build_trees_command_shows_progress(
    data_only_server: RunningServer, capsys: pytest.CaptureFixture[str]
) -> None:
    from server.batch_cli import build_trees

    await load_sample(data_only_server)
    address = f"127.0.0.1:{data_only_server.port}"
    assert await build_trees(address, [], all_users=True) == 0
    assert "3/3" in capsys.readouterr().err
    assert await build_trees(address, ["bob", "nobody"], all_users=False) == 1
    assert "users/nobody: NOT_FOUND" in capsys.readouterr().err
