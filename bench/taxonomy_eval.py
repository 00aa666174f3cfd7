"""Interest-tree quality on Amazon 2018 Magazine Subscriptions (EVALUATION.md, section 2).

    .venv/bin/python bench/taxonomy_eval.py [--users N] [--roles off,choose,free]
        [--model-users 30] [--in-flight 2] [--model-budget-s 780]
        [--out bench/results/taxonomy_eval.md]
    .venv/bin/python bench/taxonomy_eval.py --catalog-taxonomy [--taxonomy-model]
        [--out bench/results/taxonomy_eval_catalog.md]

`--catalog-taxonomy` measures the catalog taxonomy (issue 9) instead: per variant (categories
withheld or sent) and space (collaborative or text vectors), the per-user builder's trees,
then RefreshModels builds the taxonomy and every user's tree is rebuilt as its projection,
scored with the same AMI against the human paths as the k-means baseline of the same run, with
the labels' readability rate. `--taxonomy-model` also names the taxonomy with the embedded
vLLM and reports the naming cost (requests, seconds, tokens), a rebuild's requests (the names
are cached) and model requests per 1,000 users.

Drives the real engine in process (`InterestEngine` over SQLite, hnswlib files and the packaged
all-MiniLM embedder; for model roles the embedded vLLM that `Runtime.create` starts with default
settings, started once and shared by every model role). For every user it upserts the catalog,
records each review as an event (time = unixReviewTime, ties in file order), builds the tree
from all of the user's reviewed items, and scores it:

- faithfulness: share of evidence ids that are in the user's history (must be 1.0);
- coverage: share of history items that are evidence of at least one leaf;
- AMI@L: each history item goes to the highest-weight level-L node citing it (an item on a
  branch that ends above L stays at its leaf); adjusted mutual information with the category
  path cut at L, averaged over users with >= 2 distinct ground-truth labels at L. Items with no
  category path (12 of 157) have no ground truth and are left out of AMI;
- label agreement: share of level-1 labels that name the majority level-1 category of their
  evidence (casefolded equality, or all-MiniLM cosine >= 0.8);
- title copy: share of labels whose words equal, or occur as a contiguous run in, the display
  text of one of the user's items (or the other way round);
- depth distribution, nodes per tree, seconds per tree, model tokens and labels from the model.

The baseline is clustering only: per user, seeded k-means on the item vectors the service
stored (same embedder, same text), k1 = round(sqrt(n / 2)) clamped to [2, 6], and k2 = 2 inside
each level-1 cluster of >= 4 items; a cluster is named by the word most of its items share.

Runs: `off` and the baseline on all users, with the catalog's category path (as a caller sends
it) and without any categories or tags ("no-categories"); model roles on a seeded sample of
users, with `off` and the baseline scored on exactly the users each role covered. The embedded
model is slow on a shared 2-core CPU (free mode: minutes per tree), so a model role starts no
user that would end past its time budget and may cover fewer users than the sample.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import math
import os
import platform
import random
import re
import shutil
import statistics
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray
from openai.types.chat import ChatCompletionMessageParam
from sklearn.cluster import KMeans
from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS
from sklearn.metrics import adjusted_mutual_info_score

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.amazon_data import MagazineData, load_magazines
from bench.loading import load_engine
from server.app import Runtime
from server.config import Settings
from taxonomy.embedder import SentenceTransformerEmbedder, packaged_minilm_path
from taxonomy.engine import EngineConfig, InterestEngine
from taxonomy.models import InterestTree, Item, TextSource
from taxonomy.ports import ChatModel, Completion, Embedder
from taxonomy.storage.sqlite import SqliteStore
from taxonomy.trees.naming import NamingMode

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

LEVELS = (1, 2)
LABEL_MATCH_COSINE = 0.8
SEED = 0
GRACE_S = 300.0
MODEL_ROLES = (NamingMode.CHOOSE, NamingMode.FREE)
_WORD = re.compile(r"[a-z0-9]+(?:'[a-z]+)?")
_LETTERS = re.compile(r"[a-z]{3,}")


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


# Trees in one shape for the engine's trees and the baseline's ---------------------------------


@dataclass(frozen=True)
class EvalNode:
    node_id: str
    parent_id: str | None
    level: int
    label: str
    weight: float
    evidence: tuple[str, ...]
    from_model: bool = False


@dataclass
class UserTree:
    user_id: str
    nodes: list[EvalNode]
    seconds: float
    tokens: int = 0
    requests: int = 0
    retries: int = 0
    failures: int = 0
    rejected: Counter[str] = field(default_factory=Counter)

    @property
    def depth(self) -> int:
        return max((node.level for node in self.nodes), default=0)


def from_interest_tree(tree: InterestTree, seconds: float, rejected: Counter[str]) -> UserTree:
    return UserTree(
        user_id=tree.user_id,
        nodes=[
            EvalNode(
                node_id=node.node_id,
                parent_id=node.parent_id,
                level=node.level,
                label=node.label,
                weight=node.weight,
                evidence=tuple(node.evidence_items),
                from_model=node.label_source is TextSource.MODEL,
            )
            for node in tree.nodes
        ],
        seconds=seconds,
        tokens=tree.build_stats.tokens,
        requests=tree.build_stats.model_requests,
        retries=tree.build_stats.retries,
        failures=tree.build_stats.failures,
        rejected=rejected,
    )


# Metrics ----------------------------------------------------------------------------------------


def words(text: str) -> list[str]:
    return _WORD.findall(text.casefold())


def _contains_run(haystack: Sequence[str], needle: Sequence[str]) -> bool:
    n = len(needle)
    if n == 0 or n > len(haystack):
        return False
    return any(tuple(haystack[i : i + n]) == tuple(needle) for i in range(len(haystack) - n + 1))


def copies_display_text(label: str, display_texts: Sequence[str], *, min_words: int = 1) -> bool:
    """The label equals, or is a contiguous word run of, a display text, or the other way
    round (words casefolded, so "Women" is found in "... for women who ...")."""
    label_words = words(label)
    if len(label_words) < min_words:
        return False
    for text in display_texts:
        text_words = words(text)
        if _contains_run(text_words, label_words) or _contains_run(label_words, text_words):
            return True
    return False


def assignment(tree: UserTree, item_ids: Sequence[str], level: int) -> list[str]:
    """For each item, the highest-weight node at `level` citing it; an item whose branch ends
    above `level` stays at its deepest node."""
    best: dict[str, tuple[int, float, str]] = {}
    for node in tree.nodes:
        if node.level > level:
            continue
        for item_id in node.evidence:
            key = (node.level, node.weight, node.node_id)
            current = best.get(item_id)
            if current is None or key[:2] > current[:2]:
                best[item_id] = key
    return [best[item_id][2] if item_id in best else "<none>" for item_id in item_ids]


@dataclass
class UserScores:
    faithfulness: float
    coverage: float
    ami: dict[int, float]
    level1_labels: list[tuple[str, str]]
    """(label, majority ground-truth level-1 category of its evidence)."""
    labels: list[str]
    title_copies: int
    title_copies_multiword: int


def score_user(tree: UserTree, data: MagazineData) -> UserScores:
    history = data.history(tree.user_id)
    history_set = set(history)
    evidence_refs = [item for node in tree.nodes for item in node.evidence]
    faithfulness = sum(item in history_set for item in evidence_refs) / max(1, len(evidence_refs))
    parents = {node.parent_id for node in tree.nodes}
    leaves = [node for node in tree.nodes if node.node_id not in parents]
    covered = {item for leaf in leaves for item in leaf.evidence}
    coverage = len(covered & history_set) / len(history_set)

    ami: dict[int, float] = {}
    with_truth = [item for item in history if data.magazines[item].path]
    for level in LEVELS:
        truth = ["/".join(data.magazines[item].path[:level]) for item in with_truth]
        if len(set(truth)) < 2:
            continue
        predicted = assignment(tree, with_truth, level)
        ami[level] = float(adjusted_mutual_info_score(truth, predicted))

    level1: list[tuple[str, str]] = []
    for node in tree.nodes:
        if node.level != 1:
            continue
        categories = Counter(
            data.magazines[item].path[0] for item in node.evidence if data.magazines[item].path
        )
        if categories:
            top = min(categories, key=lambda name: (-categories[name], name))
            level1.append((node.label, top))

    displays = [data.magazines[item].display_text for item in history]
    labels = [node.label for node in tree.nodes]
    return UserScores(
        faithfulness=faithfulness,
        coverage=coverage,
        ami=ami,
        level1_labels=level1,
        labels=labels,
        title_copies=sum(copies_display_text(label, displays) for label in labels),
        title_copies_multiword=sum(
            copies_display_text(label, displays, min_words=2) for label in labels
        ),
    )


class LabelMatcher:
    """Casefolded equality, or cosine >= 0.8 between all-MiniLM embeddings of the two texts."""

    def __init__(self, embedder: Embedder) -> None:
        self._embedder = embedder
        self._vectors: dict[str, NDArray[np.float32]] = {}

    async def prepare(self, texts: Sequence[str]) -> None:
        missing = sorted({text for text in texts if text not in self._vectors})
        if missing:
            vectors = await self._embedder.embed(missing)
            self._vectors.update(zip(missing, vectors, strict=True))

    def matches(self, label: str, category: str) -> bool:
        if label.casefold().strip() == category.casefold().strip():
            return True
        cosine = float(np.dot(self._vectors[label], self._vectors[category]))
        return cosine >= LABEL_MATCH_COSINE


@dataclass
class RunSummary:
    name: str
    variant: str
    trees: list[UserTree]
    note: str = ""

    def subset(self, user_ids: set[str], name: str | None = None) -> RunSummary:
        return RunSummary(
            name or self.name,
            self.variant,
            [tree for tree in self.trees if tree.user_id in user_ids],
            self.note,
        )


@dataclass(frozen=True)
class RunMetrics:
    users: int
    faithfulness: float
    coverage: float
    ami: dict[int, tuple[float, int]]
    label_agreement: float
    title_copy: float
    title_copy_multiword: float
    from_model: float
    changed_by_model: float
    ancestor_copies: int
    tokens_per_tree: float
    requests_per_tree: float
    seconds_per_tree: float
    seconds_p50: float
    depths: Counter[int]
    nodes_per_tree: float
    rejected: Counter[str]
    retries: int
    failures: int


def ancestor_copies(tree: UserTree) -> int:
    """Model labels equal (casefolded) to the label of one of the node's ancestors."""
    by_id = {node.node_id: node for node in tree.nodes}
    count = 0
    for node in tree.nodes:
        if not node.from_model:
            continue
        parent = by_id.get(node.parent_id) if node.parent_id else None
        while parent is not None:
            if parent.label.casefold() == node.label.casefold():
                count += 1
                break
            parent = by_id.get(parent.parent_id) if parent.parent_id else None
    return count


def summarize(
    run: RunSummary,
    data: MagazineData,
    matcher: LabelMatcher,
    reference: dict[tuple[str, str], str],
) -> RunMetrics:
    """`reference` holds the `off` label of every (user, node id), to tell model labels that
    differ from the data label from ones that only confirm it."""
    scores = [score_user(tree, data) for tree in run.trees]
    nodes = [node for tree in run.trees for node in tree.nodes]
    changed = sum(
        node.from_model and reference.get((tree.user_id, node.node_id)) != node.label
        for tree in run.trees
        for node in tree.nodes
    )
    level1 = [pair for score in scores for pair in score.level1_labels]
    label_count = sum(len(score.labels) for score in scores)
    rejected: Counter[str] = Counter()
    for tree in run.trees:
        rejected.update(tree.rejected)
    ami: dict[int, tuple[float, int]] = {}
    for level in LEVELS:
        values = [score.ami[level] for score in scores if level in score.ami]
        ami[level] = (statistics.fmean(values) if values else math.nan, len(values))
    seconds = [tree.seconds for tree in run.trees]
    return RunMetrics(
        users=len(run.trees),
        faithfulness=statistics.fmean(score.faithfulness for score in scores),
        coverage=statistics.fmean(score.coverage for score in scores),
        ami=ami,
        label_agreement=(
            sum(matcher.matches(label, category) for label, category in level1) / len(level1)
            if level1
            else math.nan
        ),
        title_copy=sum(score.title_copies for score in scores) / max(1, label_count),
        title_copy_multiword=sum(score.title_copies_multiword for score in scores)
        / max(1, label_count),
        from_model=sum(node.from_model for node in nodes) / max(1, len(nodes)),
        changed_by_model=changed / max(1, len(nodes)),
        ancestor_copies=sum(ancestor_copies(tree) for tree in run.trees),
        tokens_per_tree=statistics.fmean(tree.tokens for tree in run.trees),
        requests_per_tree=statistics.fmean(tree.requests for tree in run.trees),
        seconds_per_tree=statistics.fmean(seconds),
        seconds_p50=statistics.median(seconds),
        depths=Counter(tree.depth for tree in run.trees),
        nodes_per_tree=len(nodes) / len(run.trees),
        rejected=rejected,
        retries=sum(tree.retries for tree in run.trees),
        failures=sum(tree.failures for tree in run.trees),
    )


# The engine -------------------------------------------------------------------------------------


async def open_engine(
    directory: Path,
    embedder: Embedder,
    chat: ChatModel | None,
    mode: NamingMode,
    items: Sequence[Item],
    data: MagazineData,
) -> InterestEngine:
    await asyncio.to_thread(directory.mkdir, parents=True, exist_ok=True)
    store = SqliteStore(directory / "interest-tree.sqlite3")
    engine = InterestEngine(store, directory, embedder, chat, EngineConfig(naming_mode=mode))
    await engine.start()
    # Through `interest-tree import`'s own code (JSON Lines files, bench/loading.py).
    await load_engine(engine, items, data.events_in_time_order())
    return engine


async def close_engine(engine: InterestEngine) -> None:
    await engine.close()
    engine.store.close()


async def build_trees(
    engine: InterestEngine,
    user_ids: Sequence[str],
    *,
    in_flight: int,
    label: str,
    budget_s: float | None = None,
) -> list[UserTree]:
    """Builds users' trees in order (from scratch: no reuse of an earlier revision's model
    text), `in_flight` users at a time; seconds are each build's own wall time.

    With `budget_s`, a user is started only while the elapsed time plus the mean build time so
    far fits in the budget, and builds still running `GRACE_S` after it are cancelled (not
    counted), so a slow role covers fewer users instead of overrunning."""
    started = time.perf_counter()
    pending = iter(user_ids)
    trees: dict[str, UserTree] = {}
    latencies: list[float] = []

    def may_start() -> bool:
        if budget_s is None:
            return True
        expected = statistics.fmean(latencies) if latencies else 0.0
        return time.perf_counter() - started + expected <= budget_s

    async def worker() -> None:
        for user_id in pending:
            if not may_start():
                return
            begin = time.perf_counter()
            result = await engine.trees.build_tree(user_id, incremental=False)
            elapsed = time.perf_counter() - begin
            latencies.append(elapsed)
            trees[user_id] = from_interest_tree(
                result.tree, elapsed, Counter(result.naming.rejected)
            )
            done = len(trees)
            if budget_s is not None or done % max(1, len(user_ids) // 10) == 0:
                log(
                    f"  {label}: {done}/{len(user_ids)} trees, "
                    f"{time.perf_counter() - started:.0f} s"
                )

    workers = [asyncio.create_task(worker()) for _ in range(max(1, in_flight))]
    timeout = None if budget_s is None else budget_s + GRACE_S
    finished, unfinished = await asyncio.wait(workers, timeout=timeout)
    for task in unfinished:
        task.cancel()
    await asyncio.gather(*unfinished, return_exceptions=True)
    for task in finished:
        task.result()
    if unfinished:
        log(f"  {label}: cancelled {len(unfinished)} build(s) still running after the budget")
    return [trees[user_id] for user_id in user_ids if user_id in trees]


async def stored_vectors(engine: InterestEngine) -> dict[str, NDArray[np.float32]]:
    ids, matrix = await asyncio.to_thread(engine.store.item_vectors, "text")
    return {item_id: matrix[row] for row, item_id in enumerate(ids)}


# The baseline -----------------------------------------------------------------------------------


def cluster_label(texts: Sequence[str]) -> str:
    """The word the most items share (stopwords removed); ties: more occurrences, then a-z."""
    shared: Counter[str] = Counter()
    total: Counter[str] = Counter()
    for text in texts:
        tokens = [w for w in _LETTERS.findall(text.casefold()) if w not in ENGLISH_STOP_WORDS]
        total.update(tokens)
        shared.update(set(tokens))
    if not shared:
        return "Items"
    word = min(shared, key=lambda w: (-shared[w], -total[w], w))
    return word.capitalize()


def _kmeans(vectors: NDArray[np.float32], k: int) -> list[int]:
    distinct = len({row.tobytes() for row in vectors})
    k = max(1, min(k, distinct))
    if k == 1:
        return [0] * len(vectors)
    model = KMeans(n_clusters=k, n_init=10, random_state=SEED)
    return [int(label) for label in model.fit_predict(vectors.astype(np.float64))]


def level1_k(n: int) -> int:
    return min(n, max(2, min(6, round(math.sqrt(n / 2)))))


def baseline_tree(
    user_id: str,
    item_ids: Sequence[str],
    vectors: dict[str, NDArray[np.float32]],
    texts: dict[str, str],
) -> UserTree:
    begin = time.perf_counter()
    matrix = np.stack([vectors[item] for item in item_ids])
    nodes: list[EvalNode] = []
    level1 = _kmeans(matrix, level1_k(len(item_ids)))
    total = len(item_ids)
    for cluster in sorted(set(level1)):
        members = [item for item, c in zip(item_ids, level1, strict=True) if c == cluster]
        parent_id = f"b{cluster}"
        nodes.append(
            EvalNode(
                parent_id,
                None,
                1,
                cluster_label([texts[item] for item in members]),
                len(members) / total,
                tuple(members),
            )
        )
        if len(members) < 4:
            continue
        level2 = _kmeans(np.stack([vectors[item] for item in members]), 2)
        for sub in sorted(set(level2)):
            children = [item for item, c in zip(members, level2, strict=True) if c == sub]
            nodes.append(
                EvalNode(
                    f"{parent_id}.{sub}",
                    parent_id,
                    2,
                    cluster_label([texts[item] for item in children]),
                    len(children) / total,
                    tuple(children),
                )
            )
    # Level-2 weights sum to 1 over the nodes that exist at level 2.
    level2_mass = sum(node.weight for node in nodes if node.level == 2)
    if level2_mass:
        nodes = [
            EvalNode(n.node_id, n.parent_id, n.level, n.label, n.weight / level2_mass, n.evidence)
            if n.level == 2
            else n
            for n in nodes
        ]
    return UserTree(user_id, nodes, time.perf_counter() - begin)


def baseline_run(
    data: MagazineData,
    user_ids: Sequence[str],
    vectors: dict[str, NDArray[np.float32]],
    items: dict[str, Item],
    variant: str,
) -> RunSummary:
    texts = {item_id: item.embedding_text() for item_id, item in items.items()}
    trees = [baseline_tree(user, data.history(user), vectors, texts) for user in user_ids]
    return RunSummary("baseline k-means", variant, trees)


# Report -----------------------------------------------------------------------------------------


def _f(value: float, digits: int = 3) -> str:
    return "n/a" if math.isnan(value) else f"{value:.{digits}f}"


def results_table(rows: Sequence[tuple[RunSummary, RunMetrics]]) -> list[str]:
    lines = [
        "| run | variant | users | faithfulness | coverage | AMI@1 (users) | AMI@2 (users) "
        "| label agreement | title-copy rate | labels from model | tokens / tree | s / tree |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for run, m in rows:
        lines.append(
            f"| {run.name} | {run.variant} | {m.users} | {_f(m.faithfulness)} | {_f(m.coverage)} "
            f"| {_f(m.ami[1][0])} ({m.ami[1][1]}) | {_f(m.ami[2][0])} ({m.ami[2][1]}) "
            f"| {_f(m.label_agreement)} | {_f(m.title_copy)} | {_f(m.from_model)} "
            f"| {m.tokens_per_tree:.0f} | {_f(m.seconds_per_tree, 2)} |"
        )
    return lines


def structure_table(rows: Sequence[tuple[RunSummary, RunMetrics]]) -> list[str]:
    lines = [
        "| run | variant | users | depth distribution | nodes / tree | title copy, labels of "
        "≥ 2 words | labels changed by model | model label = an ancestor's | model requests "
        "/ tree | retries, failures | s / tree (median) | rejected model answers |",
        "| --- | --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for run, m in rows:
        depths = ", ".join(f"{d}: {m.depths[d]}" for d in sorted(m.depths))
        rejected = ", ".join(f"{k} {v}" for k, v in m.rejected.most_common()) or "-"
        lines.append(
            f"| {run.name} | {run.variant} | {m.users} | {depths} | {m.nodes_per_tree:.1f} "
            f"| {_f(m.title_copy_multiword)} | {_f(m.changed_by_model)} | {m.ancestor_copies} "
            f"| {m.requests_per_tree:.1f} | {m.retries}, {m.failures} "
            f"| {_f(m.seconds_p50, 2)} | {rejected} |"
        )
    return lines


def example_labels(
    run: RunSummary, reference: dict[tuple[str, str], str], count: int = 5
) -> list[str]:
    """Up to `count` distinct labels, those the model changed first, each with the data label
    the `off` tree gave the same node (node ids hash the category path, so they match across
    roles)."""
    seen: set[str] = set()
    picked: list[str] = []
    nodes = [(tree.user_id, node) for tree in run.trees for node in tree.nodes]

    def order(pair: tuple[str, EvalNode]) -> tuple[bool, bool, int]:
        user_id, node = pair
        changed = node.from_model and reference.get((user_id, node.node_id)) != node.label
        return (not changed, not node.from_model, node.level)

    nodes.sort(key=order)
    for user_id, node in nodes:
        if node.label in seen:
            continue
        seen.add(node.label)
        data_label = reference.get((user_id, node.node_id))
        origin = "model" if node.from_model else "data"
        if data_label is not None and data_label != node.label:
            picked.append(f"`{node.label}` (level {node.level}, {origin}; data: `{data_label}`)")
        else:
            picked.append(f"`{node.label}` (level {node.level}, {origin})")
        if len(picked) == count:
            break
    return picked


# Main -------------------------------------------------------------------------------------------


class RecordingChat:
    """Passes requests to the real chat model and keeps each raw answer for the report."""

    def __init__(self, inner: ChatModel) -> None:
        self._inner = inner
        self.answers: list[Completion] = []

    @property
    def model_name(self) -> str:
        return self._inner.model_name

    async def complete_json(
        self,
        messages: Sequence[ChatCompletionMessageParam],
        *,
        schema_name: str,
        schema: dict[str, Any],
        max_tokens: int,
    ) -> Completion:
        completion = await self._inner.complete_json(
            messages, schema_name=schema_name, schema=schema, max_tokens=max_tokens
        )
        self.answers.append(completion)
        return completion

    async def close(self) -> None:
        """The runtime owns (and closes) the real client."""


async def start_model(workdir: Path) -> tuple[Runtime, ChatModel]:
    """The embedded vLLM through the service's Runtime with default settings (choose mode,
    embedded_llm=True), waited on until it answers."""
    runtime = await Runtime.create(Settings(data_dir=workdir / "runtime", port=0))
    if runtime.chat is None:
        raise RuntimeError("the runtime started no language model")
    if runtime.supervisor is not None:
        await runtime.supervisor.start()
        await runtime.supervisor.wait_ready(900)
    chat = runtime.chat
    for attempt in range(30):
        try:
            await chat.complete_json(
                [{"role": "user", "content": "Say ok."}],
                schema_name="probe",
                schema={
                    "type": "object",
                    "properties": {"ok": {"type": "boolean"}},
                    "required": ["ok"],
                    "additionalProperties": False,
                },
                max_tokens=8,
            )
            break
        except Exception as error:
            log(f"  model not answering yet ({attempt}): {error}")
            await asyncio.sleep(2.0)
    return runtime, chat


@dataclass
class ModelRoleRun:
    role: NamingMode
    summary: RunSummary
    requested: int
    wall_s: float
    answers: list[Completion]


async def run(args: argparse.Namespace) -> int:
    started = time.perf_counter()
    logging.basicConfig(level=logging.ERROR)
    roles = [NamingMode(role.strip()) for role in args.roles.split(",") if role.strip()]
    data = load_magazines()
    users = data.user_ids[: args.users] if args.users else data.user_ids
    sample = random.Random(SEED).sample(users, min(args.model_users, len(users)))
    model_roles = [role for role in roles if role in MODEL_ROLES]
    log(
        f"{len(data.reviews)} reviews, {len(users)} users, {len(data.magazines)} items; "
        f"roles {[r.value for r in roles]}; model sample {len(sample)} users"
    )
    workdir = Path(tempfile.mkdtemp(prefix="taxonomy-eval-"))
    embedder = await asyncio.to_thread(SentenceTransformerEmbedder, packaged_minilm_path())
    matcher = LabelMatcher(embedder)
    variants: dict[str, dict[str, Item]] = {
        "categories": {a: m.to_item() for a, m in data.magazines.items()},
        "no-categories": {a: m.to_item(with_categories=False) for a, m in data.magazines.items()},
    }
    runs: dict[tuple[str, str], RunSummary] = {}
    model_runs: list[ModelRoleRun] = []
    runtime: Runtime | None = None
    model_start_s = math.nan
    try:
        for variant, items in variants.items():
            log(f"[{variant}] engine (off): upserting {len(items)} items, recording events")
            engine = await open_engine(
                workdir / f"off-{variant}",
                embedder,
                None,
                NamingMode.OFF,
                list(items.values()),
                data,
            )
            try:
                trees = await build_trees(engine, users, in_flight=1, label=f"off/{variant}")
                runs[("off", variant)] = RunSummary("off (data only)", variant, trees)
                vectors = await stored_vectors(engine)
            finally:
                await close_engine(engine)
            log(f"[{variant}] baseline k-means on the stored item vectors")
            runs[("baseline", variant)] = baseline_run(data, users, vectors, items, variant)

        if model_roles:
            log("starting the embedded vLLM (Runtime.create, default settings)")
            model_started = time.perf_counter()
            runtime, chat = await start_model(workdir)
            model_start_s = time.perf_counter() - model_started
            log(f"  model answers after {model_start_s:.0f} s")
            for role in model_roles:
                recording = RecordingChat(chat)
                engine = await open_engine(
                    workdir / f"{role.value}-categories",
                    embedder,
                    recording,
                    role,
                    list(variants["categories"].values()),
                    data,
                )
                log(f"[{role.value}] building up to {len(sample)} trees")
                try:
                    role_started = time.perf_counter()
                    trees = await build_trees(
                        engine,
                        sample,
                        in_flight=args.in_flight,
                        label=role.value,
                        budget_s=args.model_budget_s,
                    )
                    wall = time.perf_counter() - role_started
                finally:
                    await close_engine(engine)
                summary = RunSummary(f"{role.value} (model)", "categories", trees)
                runs[(role.value, "categories")] = summary
                model_runs.append(ModelRoleRun(role, summary, len(sample), wall, recording.answers))
    finally:
        if runtime is not None:
            await runtime.close()
        shutil.rmtree(workdir, ignore_errors=True)

    # Label agreement needs embeddings of every level-1 label and category.
    texts = [
        node.label
        for summary in runs.values()
        for tree in summary.trees
        for node in tree.nodes
        if node.level == 1
    ]
    texts.extend({m.path[0] for m in data.magazines.values() if m.path})
    await matcher.prepare(texts)
    reference = {
        (tree.user_id, node.node_id): node.label
        for tree in runs[("off", "categories")].trees
        for node in tree.nodes
    }

    all_rows = [
        (runs[key], summarize(runs[key], data, matcher, reference))
        for key in [
            ("baseline", "categories"),
            ("off", "categories"),
            ("baseline", "no-categories"),
            ("off", "no-categories"),
        ]
    ]
    # One table per set of users a model role covered (a slow role may cover fewer): the
    # baseline, `off` and every model role that covered all of them, scored on exactly them.
    sample_tables: list[tuple[int, list[tuple[RunSummary, RunMetrics]]]] = []
    covered = [{tree.user_id for tree in mr.summary.trees} for mr in model_runs]
    for user_set in sorted({frozenset(c) for c in covered if c}, key=len, reverse=True):
        rows: list[tuple[RunSummary, RunMetrics]] = []
        for key in [("baseline", "categories"), ("off", "categories")]:
            subset = runs[key].subset(set(user_set))
            rows.append((subset, summarize(subset, data, matcher, reference)))
        for mr, users_of_role in zip(model_runs, covered, strict=True):
            if user_set <= users_of_role:
                subset = mr.summary.subset(set(user_set))
                rows.append((subset, summarize(subset, data, matcher, reference)))
        sample_tables.append((len(user_set), rows))

    examples = {
        f"{summary.name} / {summary.variant}": example_labels(summary, reference)
        for summary in runs.values()
    }
    elapsed = time.perf_counter() - started
    report = render(
        Report(
            args=args,
            data=data,
            users=users,
            sample=sample,
            all_rows=all_rows,
            sample_tables=sample_tables,
            examples=examples,
            model_runs=model_runs,
            model_start_s=model_start_s,
            elapsed=elapsed,
        )
    )
    print("\n".join(report))
    out = Path(args.out)
    await asyncio.to_thread(write_report, out, report)
    log(f"wrote {out} ({elapsed:.0f} s in all)")
    return 0


@dataclass
class Report:
    args: argparse.Namespace
    data: MagazineData
    users: Sequence[str]
    sample: Sequence[str]
    all_rows: list[tuple[RunSummary, RunMetrics]]
    sample_tables: list[tuple[int, list[tuple[RunSummary, RunMetrics]]]]
    examples: dict[str, list[str]]
    model_runs: list[ModelRoleRun]
    model_start_s: float
    elapsed: float


def _answer_text(completion: Completion) -> str:
    text = " ".join(completion.text.split())
    if len(text) > 160:
        text = text[:157] + "..."
    return f"`{text}` ({completion.finish_reason}, {completion.completion_tokens} tokens)"


def render(r: Report) -> list[str]:
    command = " ".join([".venv/bin/python", "bench/taxonomy_eval.py", *sys.argv[1:]])
    load = os.getloadavg()
    data = r.data
    lines = [
        "# Interest-tree quality: Amazon 2018 Magazine Subscriptions (EVALUATION.md §2)",
        "",
        f"- command: `{command}`",
        f"- date: {datetime.now(UTC):%Y-%m-%d %H:%M} UTC; total runtime {r.elapsed / 60:.1f} min",
        f"- machine: {platform.machine()}, {os.cpu_count()} CPU cores shared with other "
        f"engineers' jobs (load average at the end {load[0]:.1f} / {load[1]:.1f} / "
        f"{load[2]:.1f}), no GPU; Python {platform.python_version()}",
        f"- data: {len(data.reviews)} reviews, {len(r.users)} users, {len(data.magazines)} items; "
        "ground truth = `category` without the root, HTML-unescaped; the "
        f"{sum(not m.path for m in data.magazines.values())} items without a path are left out "
        "of AMI and label agreement (so 340 users, not SOURCE.md's 342, have two level-1 "
        "categories); item title = first words of the description + brand; tags = [brand]",
        "- engine: in-process `InterestEngine` (SQLite, hnswlib, packaged all-MiniLM-L6-v2), "
        "default `EngineConfig` except the naming mode; every tree built from scratch "
        "(`incremental=False`); `off` builds one user at a time",
        "- variants: `categories` sends each item's category path (as a catalog would); "
        "`no-categories` sends no categories and no tags (title and description only)",
    ]
    if r.model_runs:
        lines.append(
            f"- model roles: embedded vLLM (SmolLM2-135M-Instruct) started once by "
            f"`Runtime.create` with default settings ({r.model_start_s:.0f} s to the first "
            f"answer), shared by the roles; users taken in a seeded order (seed {SEED}) from a "
            f"sample of {len(r.sample)}, {r.args.in_flight} users in flight (the engine allows "
            f"4 model requests in flight); a role starts no user once its budget of "
            f"{r.args.model_budget_s:.0f} s would be exceeded"
        )
        for mr in r.model_runs:
            n = len(mr.summary.trees)
            per_tree = mr.wall_s / n if n else math.nan
            lines.append(
                f"  - {mr.role.value}: {n} of {mr.requested} users in {mr.wall_s:.0f} s wall "
                f"({_f(per_tree, 1)} s per tree of throughput)"
            )
    lines += [
        "",
        "Metrics: faithfulness = share of evidence ids in the user's history; coverage = share "
        "of history items cited by a leaf; AMI@L = adjusted mutual information between "
        "(item → highest-weight level-L node citing it) and the category path cut at L, mean "
        "over users with ≥ 2 distinct labels at L (their count in brackets); label agreement = "
        "share of level-1 labels naming the majority level-1 category of their evidence "
        "(casefolded equality or all-MiniLM cosine ≥ 0.8); title-copy rate = share of labels "
        "whose words equal or occur as a run in one of the user's item display texts (or the "
        "reverse); labels from model = share of nodes whose label source is MODEL (a model "
        "that confirms the data label counts too); s / tree = mean wall time of one build (for "
        "the baseline: k-means and naming only, vectors precomputed).",
        "",
        f"## All users ({len(r.users)})",
        "",
        *results_table(r.all_rows),
        "",
    ]
    sample_rows: list[tuple[RunSummary, RunMetrics]] = []
    for size, rows in r.sample_tables:
        noun = "user" if size == 1 else "users"
        lines += [f"## Model roles, the same {size} {noun}", "", *results_table(rows), ""]
        sample_rows.extend(rows)
    lines += [
        "## Structure and model use",
        "",
        *structure_table([*r.all_rows, *sample_rows]),
        "",
        "## Example labels",
        "",
    ]
    for name, picked in r.examples.items():
        lines.append(f"- {name}: " + "; ".join(picked))
    for mr in r.model_runs:
        if mr.answers:
            shown = [_answer_text(c) for c in mr.answers[:5]]
            lines += ["", f"Raw model answers, {mr.role.value} (first 5):", ""]
            lines += [f"- {text}" for text in shown]
    return lines


# The catalog taxonomy (issue 9): users' trees as projections onto one named taxonomy ----------


@dataclass
class TaxonomyRun:
    variant: str
    space: str
    builder: RunMetrics
    projection: RunMetrics
    baseline: RunMetrics
    taxonomy_nodes: int
    taxonomy_depth: int
    clusters: int
    readable_taxonomy: float
    readable_projection: float
    readable_builder: float
    build_s: float
    examples: list[str]
    problems: Counter[str]


@dataclass
class TaxonomyNamingRun:
    variant: str
    space: str
    clusters: int
    requests: int
    cached: int
    single_candidate: int
    failures: int
    labels_changed: int
    tokens: int
    naming_s: float
    rebuild_requests: int
    user_requests: int
    users: int
    readable: float
    from_model: float
    ami: dict[int, tuple[float, int]]
    examples: list[str]
    problems: Counter[str]


def readable_share(labels: Sequence[str]) -> tuple[float, Counter[str]]:
    from taxonomy.shared_taxonomy.catalog import readability_problem

    problems = Counter(p for p in (readability_problem(label) for label in labels) if p)
    return 1 - sum(problems.values()) / max(1, len(labels)), problems


def tree_labels(run: RunSummary) -> list[str]:
    return [node.label for tree in run.trees for node in tree.nodes]


def engine_config(mode: NamingMode, space: str, budget_s: float | None = None) -> EngineConfig:
    from taxonomy.shared_taxonomy.service import CatalogTaxonomyNaming

    return EngineConfig(
        naming_mode=mode,
        collaborative=EngineConfig().collaborative if space == "collaborative" else None,
        taxonomy_naming=CatalogTaxonomyNaming(budget_s=budget_s),
    )


async def open_taxonomy_engine(
    directory: Path,
    embedder: Embedder,
    chat: ChatModel | None,
    config: EngineConfig,
    items: Sequence[Item],
    data: MagazineData,
) -> InterestEngine:
    await asyncio.to_thread(directory.mkdir, parents=True, exist_ok=True)
    store = SqliteStore(directory / "interest-tree.sqlite3")
    engine = InterestEngine(store, directory, embedder, chat, config)
    await engine.start()
    # Through `interest-tree import`'s own code (JSON Lines files, bench/loading.py).
    await load_engine(engine, items, data.events_in_time_order())
    return engine


def taxonomy_examples(engine: InterestEngine, count: int = 8) -> list[str]:
    catalog = engine.catalog_taxonomy
    assert catalog is not None
    picked = [n for n in catalog.nodes if n.kind == "cluster"][:count]
    return [
        f"`{n.label}` (level {n.level}, {len(n.items)} items, "
        f"{'model' if n.label_source is TextSource.MODEL else 'data'})"
        for n in picked
    ]


async def catalog_taxonomy_runs(
    data: MagazineData,
    users: Sequence[str],
    embedder: Embedder,
    matcher: LabelMatcher,
    workdir: Path,
    variants: dict[str, dict[str, Item]],
    spaces: Sequence[str],
) -> list[TaxonomyRun]:
    """Per variant and space: the per-user builder (no RefreshModels), then RefreshModels
    builds the catalog taxonomy and every user's tree is rebuilt as its projection; the k-means
    baseline runs on the same engine's stored vectors. Naming off: structure only."""
    results: list[TaxonomyRun] = []
    for variant, items in variants.items():
        builder: RunSummary | None = None
        for space in spaces:
            tag = f"{variant}/{space}"
            engine = await open_taxonomy_engine(
                workdir / f"taxonomy-{variant}-{space}",
                embedder,
                None,
                engine_config(NamingMode.OFF, space),
                list(items.values()),
                data,
            )
            try:
                if builder is None:
                    # The per-user builder reads no vectors of the refresh: once per variant.
                    log(f"[taxonomy {tag}] builder trees (before RefreshModels)")
                    builder = RunSummary(
                        "builder (per user)",
                        variant,
                        await build_trees(engine, users, in_flight=1, label=f"builder/{tag}"),
                    )
                begin = time.perf_counter()
                await engine.refresher.refresh_models()
                build_s = time.perf_counter() - begin
                catalog = engine.catalog_taxonomy
                assert catalog is not None
                assert catalog.last_build is not None
                log(
                    f"[taxonomy {tag}] taxonomy: {catalog.last_build.nodes} nodes, "
                    f"space {catalog.last_build.space}, {build_s:.1f} s; projecting"
                )
                projection = RunSummary(
                    "taxonomy projection",
                    variant,
                    await build_trees(engine, users, in_flight=1, label=f"projection/{tag}"),
                )
                vectors = await stored_vectors(engine)
                taxonomy_labels = [node.label for node in catalog.nodes]
                examples = taxonomy_examples(engine)
                stats = catalog.last_build
            finally:
                await close_engine(engine)
            baseline = baseline_run(data, users, vectors, items, variant)
            texts = [
                node.label
                for run in (builder, projection, baseline)
                for tree in run.trees
                for node in tree.nodes
                if node.level == 1
            ]
            texts.extend({m.path[0] for m in data.magazines.values() if m.path})
            await matcher.prepare(texts)
            reference = {(t.user_id, n.node_id): n.label for t in builder.trees for n in t.nodes}
            readable_tax, problems = readable_share(taxonomy_labels)
            results.append(
                TaxonomyRun(
                    variant=variant,
                    space=stats.space,
                    builder=summarize(builder, data, matcher, reference),
                    projection=summarize(projection, data, matcher, {}),
                    baseline=summarize(baseline, data, matcher, {}),
                    taxonomy_nodes=stats.nodes,
                    taxonomy_depth=stats.depth,
                    clusters=stats.clusters,
                    readable_taxonomy=readable_tax,
                    readable_projection=readable_share(tree_labels(projection))[0],
                    readable_builder=readable_share(tree_labels(builder))[0],
                    build_s=build_s,
                    examples=examples,
                    problems=problems,
                )
            )
    return results


async def catalog_taxonomy_naming_run(
    data: MagazineData,
    users: Sequence[str],
    embedder: Embedder,
    workdir: Path,
    chat: ChatModel,
    variant: str,
    items: dict[str, Item],
    space: str,
    budget_s: float,
) -> TaxonomyNamingRun:
    """The model names the taxonomy once (choose mode), a second rebuild over unchanged data
    shows the names are cached, then every user's projection is built with the model there."""
    engine = await open_taxonomy_engine(
        workdir / f"naming-{variant}-{space}",
        embedder,
        chat,
        engine_config(NamingMode.CHOOSE, space, budget_s),
        list(items.values()),
        data,
    )
    try:
        await engine.refresher.refresh_models()
        catalog = engine.catalog_taxonomy
        assert catalog is not None
        assert catalog.last_build is not None
        first = catalog.last_build
        log(
            f"[naming {variant}/{space}] {first.naming.requests} requests for "
            f"{first.naming.clusters} clusters in {first.naming.seconds:.0f} s"
        )
        # Same catalog and vectors: a forced rebuild re-clusters and must ask nothing.
        ids, matrix = await asyncio.to_thread(engine.store.item_vectors, "text")
        text = {i: matrix[row] for row, i in enumerate(ids)}
        collaborative = engine.recommender.collaborative
        space_vectors = text
        if collaborative is not None:
            model = collaborative.model
            space_vectors = {i: model.item_vectors[r] for r, i in enumerate(model.item_ids)}
        second = await catalog.rebuild(
            items, space_vectors, text, space=first.space, fingerprint=(-1, None)
        )
        trees = await build_trees(engine, users, in_flight=2, label=f"naming/{variant}")
        run = RunSummary("taxonomy projection, model-named", variant, trees)
        labels = [node.label for node in catalog.nodes]
        examples = taxonomy_examples(engine)
        from_model = sum(n.label_source is TextSource.MODEL for n in catalog.nodes) / max(
            1, sum(n.kind == "cluster" for n in catalog.nodes)
        )
    finally:
        await close_engine(engine)
    scores = [score_user(tree, data) for tree in run.trees]
    ami: dict[int, tuple[float, int]] = {}
    for level in LEVELS:
        values = [score.ami[level] for score in scores if level in score.ami]
        ami[level] = (statistics.fmean(values) if values else math.nan, len(values))
    readable, problems = readable_share(labels)
    return TaxonomyNamingRun(
        variant=variant,
        space=first.space,
        clusters=first.naming.clusters,
        requests=first.naming.requests,
        cached=first.naming.cached,
        single_candidate=first.naming.single_candidate,
        failures=first.naming.failures,
        labels_changed=first.naming.labels_changed,
        tokens=first.naming.prompt_tokens + first.naming.completion_tokens,
        naming_s=first.naming.seconds,
        rebuild_requests=second.naming.requests,
        user_requests=sum(tree.requests for tree in run.trees),
        users=len(run.trees),
        readable=readable,
        from_model=from_model,
        ami=ami,
        examples=examples,
        problems=problems,
    )


def render_catalog_taxonomy(
    args: argparse.Namespace,
    data: MagazineData,
    users: Sequence[str],
    runs: Sequence[TaxonomyRun],
    naming: Sequence[TaxonomyNamingRun],
    model_start_s: float,
    elapsed: float,
) -> list[str]:
    command = " ".join([".venv/bin/python", "bench/taxonomy_eval.py", *sys.argv[1:]])
    load = os.getloadavg()
    lines = [
        "# The catalog taxonomy on Amazon 2018 Magazine Subscriptions (issue 9, EVALUATION.md §2)",
        "",
        f"- command: `{command}`",
        f"- date: {datetime.now(UTC):%Y-%m-%d %H:%M} UTC; total runtime {elapsed / 60:.1f} min",
        f"- machine: {platform.machine()}, {os.cpu_count()} CPU cores shared with other "
        f"engineers' jobs (load average at the end {load[0]:.1f} / {load[1]:.1f} / "
        f"{load[2]:.1f}), no GPU; Python {platform.python_version()}",
        f"- data: {len(data.reviews)} reviews, {len(users)} users, {len(data.magazines)} items; "
        "ground truth = `category` without the root; items without a path are left out of AMI",
        "- per variant and space, one in-process `InterestEngine` (SQLite, hnswlib, packaged "
        "all-MiniLM-L6-v2): `builder (per user)` = every user's tree built before any "
        "RefreshModels (the per-user data tree); then `RefreshModels` builds the catalog "
        "taxonomy and `taxonomy projection` = every user's tree rebuilt as its projection; "
        "`baseline k-means` = per-user k-means on the same engine's stored text vectors "
        "(k1 = round(sqrt(n/2)) in [2, 6], k2 = 2)",
        "- `no-categories` withholds the categories and tags from the service (title and "
        "description only), so the taxonomy's upper levels are clusters too; `categories` sends "
        "each item's path",
        "- space `collaborative` = the PPMI-SVD item vectors RefreshModels trains (2,375 events "
        "≥ `collaborative_min_events`); `text` = the engine with collaborative training off "
        "(text vectors)",
        "",
        "AMI@L is as in `bench/results/taxonomy_eval.md`: per user, (item → highest-weight "
        "level-L node citing it) against the human path cut at L, mean over users with ≥ 2 "
        "distinct paths (their count in brackets). Readable = share of labels passing "
        "`taxonomy.shared_taxonomy.catalog.readability_problem` (no `Category: tag` pastes, no "
        "repeated words, no brackets or sentences, at most 6 words); for trees, over every "
        "node of every user's tree.",
        "",
        "## Structure (naming off)",
        "",
        "| variant | space | run | AMI@1 (users) | AMI@2 (users) | faithfulness | coverage | "
        "nodes / tree | readable labels |",
        "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]

    def ami(m: RunMetrics, level: int) -> str:
        value, count = m.ami[level]
        return f"{_f(value)} ({count})"

    for r in runs:
        for name, m, readable in (
            ("baseline k-means", r.baseline, math.nan),
            ("builder (per user)", r.builder, r.readable_builder),
            ("taxonomy projection", r.projection, r.readable_projection),
        ):
            lines.append(
                f"| {r.variant} | {r.space} | {name} | {ami(m, 1)} | {ami(m, 2)} | "
                f"{_f(m.faithfulness)} | {_f(m.coverage)} | {m.nodes_per_tree:.1f} | "
                f"{_f(readable)} |"
            )
    lines += [
        "",
        "| variant | space | taxonomy nodes | clusters | depth | readable taxonomy labels | "
        "unreadable (why) | build s (naming off) |",
        "| --- | --- | ---: | ---: | ---: | ---: | --- | ---: |",
    ]
    for r in runs:
        why = ", ".join(f"{k} {v}" for k, v in r.problems.most_common()) or "-"
        lines.append(
            f"| {r.variant} | {r.space} | {r.taxonomy_nodes} | {r.clusters} | "
            f"{r.taxonomy_depth} | {_f(r.readable_taxonomy)} | {why} | {r.build_s:.1f} |"
        )
    for r in runs:
        lines.append(f"- {r.variant}/{r.space}: " + "; ".join(r.examples))
    if naming:
        lines += [
            "",
            "## Naming cost (choose mode)",
            "",
            (
                f"The embedded vLLM (SmolLM2-135M-Instruct) was started once by `Runtime.create` "
                f"with default settings ({model_start_s:.0f} s to the first answer)."
                if args.taxonomy_model
                else "Without `--taxonomy-model` the chat model is a double that answers at "
                "once with the first candidate: requests, the cache and requests per 1,000 "
                "users are exact, seconds are not a model's."
            ),
            "Each cluster is named once from its 8 most central items, picking from its "
            "data-backed candidates; a second rebuild over unchanged data re-clusters and must "
            "ask nothing (names cached); then every user's projection is built with the model "
            "present.",
            "",
            "| variant | space | clusters | model requests | naming s | tokens | failures | "
            "labels changed by model | rebuild requests (cached) | per-user requests | users | "
            "requests / 1,000 users | readable taxonomy labels | AMI@1 | AMI@2 |",
            "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: "
            "| ---: | ---: | ---: |",
        ]
        for n in naming:
            per_1000 = 1000 * (n.requests + n.user_requests) / max(1, n.users)
            lines.append(
                f"| {n.variant} | {n.space} | {n.clusters} | {n.requests} | {n.naming_s:.0f} | "
                f"{n.tokens} | {n.failures} | {n.labels_changed} | {n.rebuild_requests} | "
                f"{n.user_requests} | {n.users} | {per_1000:.0f} | {_f(n.readable)} | "
                f"{_f(n.ami[1][0])} | {_f(n.ami[2][0])} |"
            )
        for n in naming:
            lines.append(f"- {n.variant}/{n.space}, model-named: " + "; ".join(n.examples))
    return lines


class FirstCandidateChat:
    """Answers every naming request at once with the first (data) candidate: counts requests,
    the cache and requests per 1,000 users exactly, without a model's latency."""

    @property
    def model_name(self) -> str:
        return "first-candidate double"

    async def complete_json(
        self,
        messages: Sequence[ChatCompletionMessageParam],
        *,
        schema_name: str,
        schema: dict[str, Any],
        max_tokens: int,
    ) -> Completion:
        label = schema["properties"]["label"].get("enum", ["Interests"])[0]
        return Completion(json.dumps({"label": label}), 0, 0, "stop")

    async def close(self) -> None:
        return None


async def run_catalog_taxonomy(args: argparse.Namespace) -> int:
    started = time.perf_counter()
    logging.basicConfig(level=logging.ERROR)
    data = load_magazines()
    users = data.user_ids[: args.users] if args.users else data.user_ids
    workdir = Path(tempfile.mkdtemp(prefix="taxonomy-catalog-"))
    embedder = await asyncio.to_thread(SentenceTransformerEmbedder, packaged_minilm_path())
    matcher = LabelMatcher(embedder)
    variants: dict[str, dict[str, Item]] = {
        "no-categories": {a: m.to_item(with_categories=False) for a, m in data.magazines.items()},
        "categories": {a: m.to_item() for a, m in data.magazines.items()},
    }
    runtime: Runtime | None = None
    model_start_s = math.nan
    naming: list[TaxonomyNamingRun] = []
    try:
        runs = await catalog_taxonomy_runs(
            data, users, embedder, matcher, workdir, variants, ("collaborative", "text")
        )
        chat: ChatModel = FirstCandidateChat()
        if args.taxonomy_model:
            log("starting the embedded vLLM (Runtime.create, default settings)")
            begin = time.perf_counter()
            runtime, chat = await start_model(workdir)
            model_start_s = time.perf_counter() - begin
        for variant in ("no-categories", "categories"):
            naming.append(
                await catalog_taxonomy_naming_run(
                    data,
                    users,
                    embedder,
                    workdir,
                    chat,
                    variant,
                    variants[variant],
                    "collaborative",
                    args.model_budget_s,
                )
            )
    finally:
        if runtime is not None:
            await runtime.close()
        shutil.rmtree(workdir, ignore_errors=True)
    report = render_catalog_taxonomy(
        args, data, users, runs, naming, model_start_s, time.perf_counter() - started
    )
    write_report(Path(args.out), report)
    log(f"wrote {args.out}")
    return 0


def write_report(out: Path, report: Sequence[str]) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(report) + "\n")


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--users", type=int, default=0, help="first N users only (0 = all)")
    parser.add_argument("--roles", default="off,choose,free", help="comma-separated naming modes")
    parser.add_argument(
        "--model-users", type=int, default=30, help="seeded user sample for model roles"
    )
    parser.add_argument("--in-flight", type=int, default=2, help="users built at once (models)")
    parser.add_argument(
        "--model-budget-s",
        type=float,
        default=780.0,
        help="per model role: start no user that would end past this many seconds",
    )
    parser.add_argument(
        "--catalog-taxonomy",
        action="store_true",
        help="measure the catalog taxonomy and users' projections instead (issue 9)",
    )
    parser.add_argument(
        "--taxonomy-model",
        action="store_true",
        help="with --catalog-taxonomy: also name the taxonomy with the embedded vLLM",
    )
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    if args.out is None:
        args.out = (
            "bench/results/taxonomy_eval_catalog.md"
            if args.catalog_taxonomy
            else "bench/results/taxonomy_eval.md"
        )
    roles = {role.strip() for role in args.roles.split(",") if role.strip()}
    unknown = roles - {mode.value for mode in NamingMode}
    if unknown:
        parser.error(f"unknown roles {sorted(unknown)}")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    return asyncio.run(run_catalog_taxonomy(args) if args.catalog_taxonomy else run(args))


if __name__ == "__main__":
    raise SystemExit(main())
