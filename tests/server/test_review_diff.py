"""One tree diff: computed when a revision is stored, read by the API and the review page alike
(which reads through the engine's rooms, never the store), with one wording of revision 1."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from interesttree.v1 import interest_pb2

from server.config import Settings
from server.convert_trees import diff_to_proto
from taxonomy.engine import EngineConfig
from taxonomy.models import InterestNode, InterestTree, TreeDiff
from taxonomy.trees.diff import FIRST_REVISION, diff_trees, revision_summary

from ..http_server import ServerWithHttp

NOW = datetime(2024, 1, 1, tzinfo=UTC)


def node(node_id: str, label: str, weight: float, evidence: list[str]) -> InterestNode:
    return InterestNode(
        node_id=node_id,
        parent_id=None,
        level=1,
        label=label,
        explanation="",
        weight=weight,
        evidence_items=evidence,
    )


def tree(revision: int, *nodes: InterestNode) -> InterestTree:
    return InterestTree(
        user_id="u", revision=revision, nodes=list(nodes), create_time=NOW, event_count=1
    )


def test_the_diff_has_reweighted_nodes_and_evidence_per_node() -> None:
    before = tree(1, node("a", "Books", 0.5, ["x", "y"]), node("b", "Films", 0.5, ["z"]))
    after = tree(2, node("a", "Reading", 0.8, ["y", "w"]), node("c", "Music", 0.2, ["v"]))
    diff = diff_trees(before, after)
    assert diff.added_node_ids == ["c"] and diff.removed_node_ids == ["b"]
    assert diff.relabeled_node_ids == ["a"] and diff.reweighted_node_ids == ["a"]
    assert diff.changed_evidence_node_ids == ["a"]
    assert diff.evidence_gained == {"a": ["w"]} and diff.evidence_lost == {"a": ["x"]}
    assert revision_summary(2, diff) == "1 added, 1 removed, 1 relabeled, 1 reweighted, " + (
        "1 with new evidence"
    )
    # The API's message keeps exactly its fields.
    message = diff_to_proto(2, diff)
    assert list(message.added_node_ids) == ["c"]
    assert list(message.changed_evidence_node_ids) == ["a"]
    assert message.summary == revision_summary(2, diff)
    assert diff_to_proto(1, diff_trees(None, before)).summary == FIRST_REVISION


def test_diffs_stored_before_the_new_fields_still_load() -> None:
    old = '{"added_node_ids":["a"],"removed_node_ids":[],"relabeled_node_ids":[],'
    old += '"changed_evidence_node_ids":[]}'
    diff = TreeDiff.model_validate_json(old)
    assert diff.added_node_ids == ["a"]
    assert diff.reweighted_node_ids == [] and diff.evidence_gained == {} == diff.evidence_lost


class PoisonedStore:
    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"the review page touched engine.store.{name}")


async def test_the_page_shows_the_stored_diff_with_the_api_wording(
    reviewed: ServerWithHttp, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = reviewed.running.runtime.engine
    monkeypatch.setattr(engine, "store", PoisonedStore())
    async with httpx.AsyncClient(base_url=reviewed.base_url) as client:
        response = await client.get("/api/users/alice")
        assert response.status_code == 200
        review = response.json()
        assert (await client.get("/api/users/a%0a")).status_code == 400
    monkeypatch.undo()

    listed = await reviewed.running.stubs.interests.ListInterestTreeRevisions(
        interest_pb2.ListInterestTreeRevisionsRequest(name="users/alice/interestTree")
    )
    latest, first = review["revisions"]
    api_latest, api_first = listed.revisions
    # One wording for both views, revision 1 included.
    assert first["summary"] == api_first.diff.summary == FIRST_REVISION
    assert latest["changes"]["summary"] == latest["summary"] == api_latest.diff.summary
    # The page lists what the stored diff holds, node for node.
    changes = latest["changes"]
    assert [n["id"] for n in changes["added"]] == list(api_latest.diff.added_node_ids)
    assert [n["id"] for n in changes["evidence_changed"]] == list(
        api_latest.diff.changed_evidence_node_ids
    )
    stored = (await engine.trees.list_revisions("alice", None, 1))[0][1]
    assert [n["id"] for n in changes["reweighted"]] == stored.reweighted_node_ids
    assert stored.reweighted_node_ids, "three Gothic novels move some weight"
    gained = {t["title"] for n in changes["evidence_changed"] for t in n["gained"]}
    assert {"Dracula", "Carmilla", "Frankenstein"} <= gained


def test_settings_take_their_defaults_from_the_engine() -> None:
    engine, settings = EngineConfig(), Settings()
    assert settings.half_life_events == engine.half_life_events
    assert settings.level_weights == engine.default_level_weights
    assert settings.hnsw_ef_search == engine.hnsw_ef_search
    assert settings.llm_concurrency == engine.llm_concurrency
    assert settings.naming_mode == engine.naming_mode
