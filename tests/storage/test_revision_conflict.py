"""Two replicas storing the same revision of one user's tree at the same moment: the loser gets
ABORTED (TREE_REVISION_CONFLICT), never INTERNAL, and nothing of its write is kept."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime

import grpc
import numpy as np
import pytest
from google.rpc import error_details_pb2, status_pb2

from server.errors import status_for
from taxonomy.errors import AbortedError
from taxonomy.models import InterestNode, InterestTree, TaxonomyNode, TreeDiff
from taxonomy.ports import TAXONOMY_VERSION_KEY
from taxonomy.storage.postgres import REVISION_CONFLICT_REASON, PostgresStore

from .postgres_server import PostgresServer

START = datetime(2024, 1, 1, tzinfo=UTC)
REPLICAS = 2
ROUNDS = 5


@pytest.fixture
def schema(postgres_server: PostgresServer) -> Iterator[str]:
    name = f"rc_{uuid.uuid4().hex[:16]}"
    yield name
    postgres_server.drop_schema(name)


def tree(user_id: str, revision: int, label: str) -> InterestTree:
    node = InterestNode(
        node_id="n1",
        parent_id=None,
        level=1,
        label=label,
        explanation="because",
        weight=1.0,
        evidence_items=["a"],
        taxonomy_node=f"t-{label}",
    )
    return InterestTree(
        user_id=user_id, revision=revision, nodes=[node], create_time=START, event_count=1
    )


def new_node(label: str) -> list[tuple[TaxonomyNode, np.ndarray]]:
    vector = np.ones(8, dtype=np.float32) / np.sqrt(8)
    return [(TaxonomyNode(taxonomy_id=f"t-{label}", label=label), vector)]


def test_the_second_store_of_a_revision_is_aborted_and_stores_nothing(
    postgres_server: PostgresServer, schema: str
) -> None:
    a = PostgresStore(postgres_server.url, schema=schema, max_connections=2)
    b = PostgresStore(postgres_server.url, schema=schema, max_connections=2)
    try:
        a.save_tree(tree("u", 1, "first"), TreeDiff(added_node_ids=["n1"]), new_node("first"), {})
        taxonomy_version = b.version(TAXONOMY_VERSION_KEY)
        with pytest.raises(AbortedError) as raised:
            b.save_tree(
                tree("u", 1, "second"), TreeDiff(added_node_ids=["n1"]), new_node("second"), {}
            )
        assert raised.value.reason == REVISION_CONFLICT_REASON
        # All or nothing: neither the tree, its new taxonomy node nor the counter bump stayed.
        latest = a.latest_tree("u")
        assert latest is not None and latest.nodes[0].label == "first"
        assert [n.label for n in a.list_taxonomy(0, 10)] == ["first"]
        assert b.version(TAXONOMY_VERSION_KEY) == taxonomy_version
        # The loser can build again on top of the winner.
        b.save_tree(tree("u", 2, "second"), TreeDiff(), [], {})
        assert [t.revision for t, _ in a.tree_revisions("u", 1 << 30, 10)] == [2, 1]

        # What a client sees: ABORTED, with the reason in the ErrorInfo.
        rendered = status_for(raised.value, "req-1")
        assert rendered.code == grpc.StatusCode.ABORTED
        details = dict(rendered.trailing_metadata)["grpc-status-details-bin"]
        info = error_details_pb2.ErrorInfo()
        packed = status_pb2.Status.FromString(details)
        assert packed.details[0].Unpack(info)
        assert info.reason == REVISION_CONFLICT_REASON and info.domain == "interesttree.v1"
    finally:
        a.close()
        b.close()


def race(stores: list[PostgresStore], revision: int) -> list[str]:
    """Every store saves `revision` of user u at once; what each got ("stored" or a reason)."""
    barrier = threading.Barrier(len(stores))
    outcomes: list[str] = []

    def save(replica: int, store: PostgresStore) -> None:
        label = f"r{revision}-{replica}"
        barrier.wait()
        try:
            store.save_tree(tree("u", revision, label), TreeDiff(), new_node(label), {})
            outcomes.append("stored")
        except AbortedError as error:
            outcomes.append(error.reason)
        except Exception as error:  # anything else would reach the client as INTERNAL
            outcomes.append(f"unexpected {type(error).__name__}: {error}")

    threads = [threading.Thread(target=save, args=(i, store)) for i, store in enumerate(stores)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return outcomes


def test_replicas_racing_on_one_revision_get_one_winner_and_aborts_only(
    postgres_server: PostgresServer, schema: str
) -> None:
    stores = [
        PostgresStore(postgres_server.url, schema=schema, max_connections=2)
        for _ in range(REPLICAS)
    ]
    try:
        for revision in range(1, ROUNDS + 1):
            outcomes = race(stores, revision)
            assert sorted(outcomes) == sorted(
                ["stored"] + [REVISION_CONFLICT_REASON] * (REPLICAS - 1)
            )
        revisions = stores[0].tree_revisions("u", 1 << 30, 100)
        assert [t.revision for t, _ in revisions] == list(range(ROUNDS, 0, -1))
        # Each round kept exactly the winner's taxonomy node.
        assert len(stores[0].list_taxonomy(0, 100)) == ROUNDS
    finally:
        for store in stores:
            store.close()
