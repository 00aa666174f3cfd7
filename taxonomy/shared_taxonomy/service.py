"""The shared taxonomy room: the catalog taxonomy every user's tree projects onto, and the
label vocabulary that maps the nodes of trees built before one exists.

`CatalogTaxonomy` is built on RefreshModels (see `catalog.py` for the structure, `naming.py`
for the model's one request per cluster) and is what `ListTaxonomyNodes` serves once built.
Before the first build, `SharedTaxonomy` maps data-tree nodes by label: two labels are one node
when their embeddings are within `threshold` cosine and neither only refines the other.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from index.versioned import VersionedIndex
from taxonomy.models import (
    CatalogTaxonomyNode,
    InterestNode,
    InterestTree,
    Item,
    TaxonomyNode,
    TreeDiff,
)
from taxonomy.ports import TAXONOMY_VERSION_KEY, ChatModel, Store
from taxonomy.shared_taxonomy.catalog import (
    CLUSTER,
    CatalogTaxonomyConfig,
    build_structure,
    walk,
)
from taxonomy.shared_taxonomy.naming import TaxonomyNamingStats, name_clusters

logger = logging.getLogger(__name__)

_WORDS = re.compile(r"[a-z0-9]+")


def is_refinement(first: str, second: str) -> bool:
    """True if one label is the other plus more words ("Fiction" / "Science fiction"): a
    narrower interest, however close the embeddings (all-MiniLM-L6-v2 gives 0.81 there)."""
    a, b = set(_WORDS.findall(first.casefold())), set(_WORDS.findall(second.casefold()))
    return a != b and (a < b or b < a)


class SharedTaxonomy:
    def __init__(
        self,
        store: Store,
        index: VersionedIndex,
        threshold: float,
        catalog: CatalogTaxonomy | None = None,
    ) -> None:
        self._store = store
        self.index = index
        self._threshold = threshold
        self._labels: dict[str, str] = {}
        self.catalog = catalog

    def index_version(self) -> tuple[int, ...]:
        return (self._store.version(TAXONOMY_VERSION_KEY),)

    def open(self) -> None:
        self.index.load_or_rebuild(self.index_version(), self._store.taxonomy_vectors)
        self._labels = {
            node.taxonomy_id: node.label for node in self._store.list_taxonomy(0, 1 << 30)
        }

    async def list_nodes(self, offset: int, limit: int) -> list[TaxonomyNode]:
        """The catalog taxonomy, coarse to fine, once built; before that the label
        vocabulary, most used first."""
        if self.catalog is not None and self.catalog.built:
            return await asyncio.to_thread(self.catalog.list_nodes, offset, limit)
        return await asyncio.to_thread(self._store.list_taxonomy, offset, limit)

    def _match(self, label: str, vector: NDArray[np.float32], new: dict[str, str]) -> str | None:
        index = self.index.index
        for taxonomy_id, similarity in index.query(vector, 3) if len(index) else []:
            canonical = new.get(taxonomy_id) or self._labels.get(taxonomy_id, "")
            if similarity >= self._threshold and not is_refinement(canonical, label):
                return str(taxonomy_id)
        return None

    def store_tree(
        self, tree: InterestTree, diff: TreeDiff, label_vectors: NDArray[np.float32]
    ) -> InterestTree:
        """Blocking, under the engine's write lock: maps every node to a taxonomy node and
        stores the revision with the new taxonomy nodes in one transaction."""
        created: list[tuple[TaxonomyNode, NDArray[np.float32]]] = []
        aliases: dict[str, str] = {}
        new_labels: dict[str, str] = {}
        nodes: list[InterestNode] = []
        for node, vector in zip(tree.nodes, label_vectors, strict=True):
            if node.taxonomy_node:
                # A projection's node is a catalog-taxonomy node already.
                nodes.append(node)
                continue
            taxonomy_id = self._match(node.label, vector, new_labels)
            if taxonomy_id is None:
                taxonomy_id = f"t{uuid.uuid4().hex[:12]}"
                created.append((TaxonomyNode(taxonomy_id=taxonomy_id, label=node.label), vector))
                new_labels[taxonomy_id] = node.label
                self.index.index.upsert([taxonomy_id], vector[np.newaxis, :])
            else:
                canonical = new_labels.get(taxonomy_id) or self._labels.get(taxonomy_id, "")
                if canonical.casefold() != node.label.casefold():
                    aliases[taxonomy_id] = node.label
            nodes.append(node.model_copy(update={"taxonomy_node": taxonomy_id}))
        mapped = tree.model_copy(update={"nodes": nodes})
        try:
            self._store.save_tree(mapped, diff, created, aliases)
        except BaseException:
            self.index.index.delete([node.taxonomy_id for node, _ in created])
            raise
        self._labels.update(new_labels)
        if created:
            self.index.dirty = True
        return mapped


@dataclass(frozen=True)
class TaxonomyBuild:
    """What one catalog-taxonomy build did and cost."""

    nodes: int
    clusters: int
    depth: int
    space: str
    seconds: float
    naming: TaxonomyNamingStats


@dataclass(frozen=True)
class CatalogTaxonomyNaming:
    enabled: bool = True
    concurrency: int = 4
    budget_s: float | None = 120.0
    """Time the model requests of one build may take together, well inside RefreshModels'
    300 s deadline; clusters still waiting keep their data labels and are asked next time."""


class CatalogTaxonomy:
    """The catalog taxonomy that `ListTaxonomyNodes` serves and users' trees project onto.

    Built on RefreshModels, stored whole (names included) in one transaction, and held in
    memory for the tree builds that read it."""

    def __init__(
        self,
        store: Store,
        chat: ChatModel | None,
        text_vectors: Callable[[Sequence[str]], Mapping[str, NDArray[np.float32]]],
        config: CatalogTaxonomyConfig | None = None,
        naming: CatalogTaxonomyNaming | None = None,
    ) -> None:
        self._store = store
        self._chat = chat
        self._text_vectors = text_vectors
        self._config = config or CatalogTaxonomyConfig()
        self._naming = naming or CatalogTaxonomyNaming()
        self._nodes: list[CatalogTaxonomyNode] = []
        self._by_id: dict[str, CatalogTaxonomyNode] = {}
        self._children: dict[str | None, list[CatalogTaxonomyNode]] = {}
        self._leaf_of: dict[str, str] = {}
        self._centroids: dict[str, NDArray[np.float32]] | None = None
        self._built_for: tuple[int, int | None] | None = None
        self._lock = asyncio.Lock()
        self.last_build: TaxonomyBuild | None = None

    def open(self) -> None:
        self._install(self._store.catalog_taxonomy())

    def _install(self, nodes: list[CatalogTaxonomyNode]) -> None:
        by_id = {node.taxonomy_id: node for node in nodes}
        children: dict[str | None, list[CatalogTaxonomyNode]] = {}
        leaf_of: dict[str, str] = {}
        for node in nodes:  # stored coarse to fine, so deeper nodes overwrite
            children.setdefault(node.parent_id, []).append(node)
            for item_id in node.items:
                leaf_of[item_id] = node.taxonomy_id
        self._nodes, self._by_id, self._children, self._leaf_of = nodes, by_id, children, leaf_of
        self._centroids = None

    @property
    def built(self) -> bool:
        return bool(self._nodes)

    @property
    def nodes(self) -> list[CatalogTaxonomyNode]:
        return list(self._nodes)

    def path(self, item_id: str) -> list[CatalogTaxonomyNode]:
        """The item's nodes from level 1 down (empty if the taxonomy does not hold it)."""
        node = self._by_id.get(self._leaf_of.get(item_id, ""))
        chain: list[CatalogTaxonomyNode] = []
        while node is not None:
            chain.append(node)
            node = self._by_id.get(node.parent_id) if node.parent_id else None
        return chain[::-1]

    def place(self, item_id: str) -> list[CatalogTaxonomyNode]:
        """An item added since the build: down from level 1, the child whose text centroid is
        nearest its text vector (the biggest child if it has none). Blocking."""
        vector = self._text_vectors([item_id]).get(item_id)
        centroids = self._node_centroids()
        chain: list[CatalogTaxonomyNode] = []
        parent: str | None = None
        while children := self._children.get(parent):
            if vector is not None:
                scored = [c for c in children if c.taxonomy_id in centroids]
                query = vector / max(float(np.linalg.norm(vector)), 1e-12)
                best = max(
                    scored or children,
                    key=lambda c: (
                        float(centroids[c.taxonomy_id] @ query)
                        if c.taxonomy_id in centroids
                        else -2.0
                    ),
                )
            else:
                best = max(children, key=lambda c: len(c.items))
            chain.append(best)
            parent = best.taxonomy_id
        return chain

    def _node_centroids(self) -> dict[str, NDArray[np.float32]]:
        if self._centroids is None:
            members = sorted({i for node in self._nodes for i in node.items})
            vectors = self._text_vectors(members)
            centroids: dict[str, NDArray[np.float32]] = {}
            for node in self._nodes:
                held = [vectors[i] for i in node.items if i in vectors]
                if held:
                    mean = np.mean(np.stack(held), axis=0).astype(np.float32)
                    centroids[node.taxonomy_id] = mean / max(float(np.linalg.norm(mean)), 1e-12)
            self._centroids = centroids
        return self._centroids

    def stale(self, fingerprint: tuple[int, int | None]) -> bool:
        return not self.built or self._built_for != fingerprint

    async def rebuild(
        self,
        items: Mapping[str, Item],
        space_vectors: Mapping[str, NDArray[np.float32]],
        text_vectors: Mapping[str, NDArray[np.float32]],
        *,
        space: str,
        fingerprint: tuple[int, int | None],
    ) -> TaxonomyBuild:
        """Clusters the catalog, names new clusters (one request each), stores the result."""
        async with self._lock:
            started = time.perf_counter()
            previous = self._nodes
            roots = await asyncio.to_thread(
                build_structure, items, space_vectors, text_vectors, previous, self._config
            )
            stats = TaxonomyNamingStats()
            if self._chat is not None and self._naming.enabled:
                stats = await name_clusters(
                    roots,
                    items,
                    self._chat,
                    concurrency=self._naming.concurrency,
                    budget_s=self._naming.budget_s,
                )
            else:
                stats.clusters = sum(1 for node in walk(roots) if node.kind == CLUSTER)
            stored = [node.stored() for node in walk(roots)]
            await asyncio.to_thread(self._store.replace_catalog_taxonomy, stored)
            self._install(stored)
            self._built_for = fingerprint
            build = TaxonomyBuild(
                nodes=len(stored),
                clusters=stats.clusters,
                depth=max((node.level for node in stored), default=0),
                space=space,
                seconds=time.perf_counter() - started,
                naming=stats,
            )
            self.last_build = build
            logger.info(
                "catalog taxonomy: %d nodes (%d clusters, depth %d, %s space), %d model "
                "request(s), %d cached name(s), %.1f s",
                build.nodes,
                build.clusters,
                build.depth,
                space,
                stats.requests,
                stats.cached,
                build.seconds,
            )
            return build

    def list_nodes(self, offset: int, limit: int) -> list[TaxonomyNode]:
        """Coarse to fine; blocking (reads the tree-node counts)."""
        page = self._nodes[offset : offset + limit]
        counts = self._store.taxonomy_node_counts() if page else {}
        return [
            TaxonomyNode(
                taxonomy_id=node.taxonomy_id,
                label=node.label,
                node_count=counts.get(node.taxonomy_id, 0),
                parent_id=node.parent_id,
                level=node.level,
                item_count=len(node.items),
                central_items=node.central_items,
                label_source=node.label_source,
            )
            for node in page
        ]
