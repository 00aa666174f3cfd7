"""The shared taxonomy room: one vocabulary of interests across all users' trees.

Two labels are one taxonomy node when their embeddings are within `threshold` cosine and
neither only refines the other; each stored tree node points to its taxonomy node.
"""

from __future__ import annotations

import asyncio
import re
import uuid

import numpy as np
from numpy.typing import NDArray

from index.versioned import VersionedIndex
from taxonomy.models import InterestNode, InterestTree, TaxonomyNode, TreeDiff
from taxonomy.ports import TAXONOMY_VERSION_KEY, Store

_WORDS = re.compile(r"[a-z0-9]+")


def is_refinement(first: str, second: str) -> bool:
    """True if one label is the other plus more words ("Fiction" / "Science fiction"): a
    narrower interest, however close the embeddings (all-MiniLM-L6-v2 gives 0.81 there)."""
    a, b = set(_WORDS.findall(first.casefold())), set(_WORDS.findall(second.casefold()))
    return a != b and (a < b or b < a)


class SharedTaxonomy:
    def __init__(self, store: Store, index: VersionedIndex, threshold: float) -> None:
        self._store = store
        self.index = index
        self._threshold = threshold
        self._labels: dict[str, str] = {}

    def index_version(self) -> tuple[int, ...]:
        return (self._store.version(TAXONOMY_VERSION_KEY),)

    def open(self) -> None:
        self.index.load_or_rebuild(self.index_version(), self._store.taxonomy_vectors)
        self._labels = {
            node.taxonomy_id: node.label for node in self._store.list_taxonomy(0, 1 << 30)
        }

    async def list_nodes(self, offset: int, limit: int) -> list[TaxonomyNode]:
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
