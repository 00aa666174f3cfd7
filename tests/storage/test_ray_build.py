"""`interest-tree build-trees --engine ray` on a local Ray (`ray.init`, 2 CPUs, a small object
store) against a real PostgreSQL: Ray Data actors rebuild every user's tree, and each tree is
the in-process builder's (`engine.trees.build_tree`) for the same user, node for node.

The first test builds with `--no-llm` (naming off: the data tree, no model needed), so every
node's text is compared too. The e2e test names through the embedded CPU vLLM (SmolLM2-135M,
started once for the module, as `tests/server/test_vllm_embedded.py` starts it): each side's
requests go to the same endpoint through the chat port, and the trees are compared on
structure and evidence, which naming never changes (it rewrites labels and explanations only,
and a small model's wording is not repeatable run to run).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import ray

from server.cli import main
from server.config import Settings
from server.model_cache import ensure_hf_checkpoint, packaged_gguf_path
from server.ray_build import RayBuildError, _open_engine, build_trees_on_ray, check_settings
from taxonomy.engine import InterestEngine
from taxonomy.models import Event, InterestNode, InterestTree, Item, TreeDiff
from taxonomy.storage.postgres import PostgresStore
from taxonomy.trees.naming import NamingMode

if TYPE_CHECKING:
    from server.vllm_supervisor import VllmSupervisor

from .postgres_server import PostgresServer

START = datetime(2024, 1, 1, tzinfo=UTC)
GENRES = {
    "scifi": ("space opera", "time travel", "cyberpunk"),
    "horror": ("gothic", "cosmic"),
    "cooking": ("baking", "grilling", "vegan"),
}
USERS = 12
NAMED_USERS = 2
NAMING_BUDGET_S = 60.0
"""Per tree: a loaded 2-core machine generates a few tokens a second; nodes still waiting when
it runs out keep data text, which changes no structure."""
SERVED_NAME = "smollm2-135m-ray"
VLLM_READY_TIMEOUT_S = 900.0


@pytest.fixture(scope="module")
def local_ray() -> Iterator[None]:
    ray.init(
        num_cpus=2,
        object_store_memory=96 * 1024 * 1024,
        include_dashboard=False,
        log_to_driver=False,
    )
    try:
        yield
    finally:
        ray.shutdown()


@pytest.fixture
def schema(postgres_server: PostgresServer) -> Iterator[str]:
    name = f"ray_{uuid.uuid4().hex[:16]}"
    yield name
    postgres_server.drop_schema(name)


def catalog() -> list[Item]:
    items = [
        Item(
            item_id=f"{genre}-{sub.replace(' ', '-')}-{k}",
            title=f"{sub} {genre} book {k}",
            categories=[genre, sub],
            tags=[sub.split()[0]],
        )
        for genre, subs in GENRES.items()
        for sub in subs
        for k in range(4)
    ]
    # Items without categories or tags are grouped by their text vectors, which the Ray
    # actors' item indexes must have caught up with.
    items += [
        Item(item_id=f"bare-{k}", title=title)
        for k, title in enumerate(["A quiet garden diary", "Notes on pruning roses", "Sea shanty"])
    ]
    return items


def events(items: list[Item]) -> list[Event]:
    out: list[Event] = []
    for u in range(USERS):
        chosen = [item for k, item in enumerate(items) if (k * (u + 3)) % 7 < 2 + u % 3]
        out += [
            Event(
                user_id=f"user-{u:02d}",
                item_id=item.item_id,
                event_time=START + timedelta(hours=u * 100 + k),
            )
            for k, item in enumerate(chosen)
        ]
    return out


def structure(tree: InterestTree) -> list[tuple[object, ...]]:
    """Every node's place, text, evidence and taxonomy node, exactly; weights are compared
    apart, to 1e-12: another process may sum the same decayed event weights one ulp apart."""

    def row(node: InterestNode) -> tuple[object, ...]:
        return (
            node.node_id,
            node.parent_id,
            node.level,
            node.label,
            node.explanation,
            tuple(node.evidence_items),
            node.taxonomy_node,
        )

    return sorted(row(node) for node in tree.nodes)


def weights(tree: InterestTree) -> dict[str, float]:
    return {node.node_id: node.weight for node in tree.nodes}


def settings_for(server: PostgresServer, schema: str, data_dir: Path) -> Settings:
    return Settings(
        store_url=server.url,
        store_schema=schema,
        data_dir=data_dir,
        embedded_llm=False,
        naming_mode=NamingMode.OFF,
    )


async def test_ray_builds_the_trees_the_in_process_builder_builds(
    local_ray: None, postgres_server: PostgresServer, schema: str, tmp_path: Path
) -> None:
    settings = settings_for(postgres_server, schema, tmp_path / "data")
    engine, _ = await _open_engine(settings, tmp_path / "in-process")
    items = catalog()
    await engine.catalog.upsert_items(items)
    await engine.events.record_events(events(items), None)
    users = sorted(await engine.events.user_ids())
    assert len(users) == USERS
    in_process = {user: (await engine.trees.build_tree(user)).tree for user in users}

    status = main(
        [
            "build-trees", "--engine", "ray", "--all", "--no-llm",
            "--store-url", postgres_server.url, "--store-schema", schema,
            "--ray-concurrency", "2", "--ray-batch-size", "3",
        ]
    )  # fmt: skip
    assert status == 0

    store = engine.store
    assert isinstance(store, PostgresStore)
    for user in users:
        on_ray = store.latest_tree(user)
        assert on_ray is not None and on_ray.revision == in_process[user].revision + 1
        assert structure(on_ray) == structure(in_process[user]), user
        assert weights(on_ray) == pytest.approx(weights(in_process[user]), rel=1e-12, abs=0)
        assert on_ray.event_count == in_process[user].event_count
        # Stored through the store as a replica stores it: the diff against the in-process
        # revision is empty.
        (_, diff), *_ = store.tree_revisions(user, 1 << 30, 1)
        assert diff == TreeDiff()
    # Evidence covers data trees of both kinds: categorised and text-grouped items.
    evidence = {e for tree in in_process.values() for n in tree.nodes for e in n.evidence_items}
    assert any(e.startswith("bare-") for e in evidence)

    # A subset, through the library call, with one actor.
    report = build_trees_on_ray(settings, users[:2], concurrency=1, batch_size=1)
    assert (report.built, report.failed) == (2, {})
    assert [store.latest_tree(u).revision for u in users[:2]] == [3, 3]  # type: ignore[union-attr]
    await engine.close()


def test_a_sqlite_store_is_refused_with_what_to_pass(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    status = main(["build-trees", "--engine", "ray", "--all", "--no-llm"])
    assert status == 2
    assert "--store-url postgresql://" in capsys.readouterr().err
    with pytest.raises(RayBuildError, match="--llm-url"):
        check_settings(
            Settings(store_url="postgresql://u@h/db", data_dir=tmp_path, embedded_llm=True)
        )


@pytest.fixture(scope="module")
async def vllm(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[VllmSupervisor]:
    from server.vllm_supervisor import VllmSupervisor

    env_dir = os.environ.get("INTEREST_TREE_CACHE_DIR")
    cache_dir = Path(env_dir) if env_dir else tmp_path_factory.mktemp("model-cache")
    checkpoint = ensure_hf_checkpoint(packaged_gguf_path(), cache_dir)
    log_path = tmp_path_factory.mktemp("vllm") / "vllm.log"
    supervisor = VllmSupervisor(checkpoint, SERVED_NAME, log_path=log_path)
    await supervisor.start()
    try:
        await supervisor.wait_ready(VLLM_READY_TIMEOUT_S)
        yield supervisor
    finally:
        await supervisor.stop()


def skeleton(tree: InterestTree) -> list[tuple[object, ...]]:
    """Structure and evidence: what naming never touches."""
    return sorted(
        (node.node_id, node.parent_id, node.level, tuple(node.evidence_items))
        for node in tree.nodes
    )


async def seeded_engine(settings: Settings, directory: Path) -> tuple[InterestEngine, list[str]]:
    engine, _ = await _open_engine(settings, directory)
    items = catalog()
    await engine.catalog.upsert_items(items)
    await engine.events.record_events(
        [e for e in events(items) if int(e.user_id.removeprefix("user-")) < NAMED_USERS], None
    )
    return engine, sorted(await engine.events.user_ids())


@pytest.mark.e2e
async def test_ray_names_through_the_embedded_vllm_like_the_in_process_builder(
    local_ray: None,
    vllm: VllmSupervisor,
    postgres_server: PostgresServer,
    tmp_path: Path,
) -> None:
    # Two schemas with the same data, so neither side's build is incremental on the other's
    # (an incremental build reuses earlier answers and would ask the model nothing).
    schemas = [f"rayllm_{uuid.uuid4().hex[:12]}" for _ in range(2)]
    try:
        named = [
            Settings(
                store_url=postgres_server.url,
                store_schema=name,
                data_dir=tmp_path / name,
                embedded_llm=False,
                llm_url=vllm.base_url,
                llm_model=SERVED_NAME,
                naming_mode=NamingMode.CHOOSE,
                naming_budget_s=NAMING_BUDGET_S,
            )
            for name in schemas
        ]
        in_process_engine, users = await seeded_engine(named[0], tmp_path / "in-process")
        assert len(users) == NAMED_USERS
        in_process = {u: (await in_process_engine.trees.build_tree(u)).tree for u in users}
        ray_engine, ray_users = await seeded_engine(named[1], tmp_path / "ray-seed")
        assert ray_users == users

        report = build_trees_on_ray(named[1], (), concurrency=2, batch_size=2)
        assert (report.built, report.failed) == (NAMED_USERS, {})

        store = ray_engine.store
        requests = 0
        for user in users:
            on_ray = store.latest_tree(user)
            assert on_ray is not None and on_ray.revision == 1
            assert skeleton(on_ray) == skeleton(in_process[user]), user
            assert weights(on_ray) == pytest.approx(weights(in_process[user]), rel=1e-12, abs=0)
            requests += on_ray.build_stats.model_requests
        # The Ray actors asked the embedded vLLM, through the chat port.
        assert requests > 0
        await in_process_engine.close()
        await ray_engine.close()
    finally:
        for name in schemas:
            postgres_server.drop_schema(name)
