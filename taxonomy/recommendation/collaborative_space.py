"""Collaborative item vectors learned from recorded events, as a retrieval space.

Training is `taxonomy.recommendation.training.train_collaborative_model`; this module turns its
model into a `VectorSpace` (an HNSW index of item vectors, context vectors for queries, exact
re-scoring) and computes a user's item weights from their events.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

from index import HnswIndex
from taxonomy.events.history import event_weight
from taxonomy.models import Event
from taxonomy.recommendation.collaborative_model import CollaborativeModel
from taxonomy.recommendation.rerank import RerankConfig, transition_block
from taxonomy.recommendation.scoring import Reranker
from taxonomy.recommendation.spaces import VectorSpace
from taxonomy.recommendation.training import CollaborativeConfig, train_collaborative_model

COLLABORATIVE_SPACE = "collaborative"


@dataclass(frozen=True)
class CollaborativeRetrieval:
    model: CollaborativeModel
    space: VectorSpace
    event_count: int
    """How many recorded events the model was trained on."""
    placed: dict[str, NDArray[np.float32]] = field(default_factory=dict)
    """Items upserted after training, placed by the model's feature map: their query-side
    vectors (the model is symmetric when it has a map, so they are also what the index holds)."""
    drop_last: bool = False
    """The index and queries leave out the model's last coordinate (see build_retrieval)."""

    def place(self, item_ids: Sequence[str], vectors: NDArray[np.floating]) -> list[str]:
        """Put items the model has no events for into the index from their text or caller
        vectors (the model's feature map), so a new item is recommendable at once. Items the
        model learned from events keep their learned vector. Returns the ids placed; none when
        the model has no feature map or the vectors are of another dimension."""
        ids = list(item_ids)
        if not ids:
            return []
        keep = [k for k, item_id in enumerate(ids) if self.model.index_of(item_id) is None]
        if not keep:
            return []
        placed = self.model.place(np.asarray(vectors)[keep])
        if placed is None:
            return []
        if self.drop_last:
            placed = np.ascontiguousarray(placed[:, :-1])
        names = [ids[k] for k in keep]
        self.space.index.upsert(names, placed)
        self.placed.update(zip(names, placed, strict=True))
        return names

    def reranker(
        self, events: Sequence[Event], weight: Callable[[Event], float], config: RerankConfig
    ) -> Reranker | None:
        """The full-rank next-item model over the user's history, weighted as the trainer
        weighted its contexts; None when the model keeps no full-rank matrix."""
        if self.model.transitions is None:
            return None
        rows = self.model.rerank_weights_for(
            [event.item_id for event in events], [weight(event) for event in events]
        )
        model = self.model
        return Reranker(
            history=[model.item_ids[row] for row in rows],
            weights=np.fromiter(rows.values(), dtype=np.float64, count=len(rows)),
            transitions=lambda history, items: transition_block(model, history, items),
            blend=config.blend,
            candidates=config.k,
        )

    def forget(self, item_ids: Iterable[str]) -> None:
        """Deleted items leave the index at once; the model drops them at the next refresh."""
        ids = list(item_ids)
        for item_id in ids:
            self.placed.pop(item_id, None)
        self.space.index.delete(ids)


def build_retrieval(
    model: CollaborativeModel,
    event_count: int,
    ef_search: int,
    live_items: set[str],
    prebuilt: HnswIndex | None = None,
) -> CollaborativeRetrieval:
    """The model as a retrieval space over the live items. `prebuilt` is an index of every
    model item the training process built (`prebuilt_index`); it is used only when it holds
    exactly the model's items, else the index is built here."""
    keep = [row for row, item_id in enumerate(model.item_ids) if item_id in live_items]
    item_vectors, context_vectors, drop_last = _searchable(model)
    if prebuilt is not None and _matches(prebuilt, model, item_vectors.shape[1]):
        index = prebuilt
        index.set_ef(ef_search)
        index.delete([item_id for item_id in model.item_ids if item_id not in live_items])
    else:
        index = _new_index(model, item_vectors, keep, ef_search)

    placed: dict[str, NDArray[np.float32]] = {}

    def query_vectors(item_ids: Sequence[str]) -> NDArray[np.float32]:
        out: list[NDArray[np.float32]] = []
        for item_id in item_ids:
            row = model.index_of(item_id)
            if row is not None:
                out.append(context_vectors[row])
            elif (vector := placed.get(item_id)) is not None:
                out.append(vector)
        if not out:
            return context_vectors[:0]
        return np.stack(out)

    def has_vector(item_id: str) -> bool:
        return model.index_of(item_id) is not None or item_id in placed

    space = VectorSpace(COLLABORATIVE_SPACE, index, query_vectors, has_vector)
    return CollaborativeRetrieval(model, space, event_count, placed, drop_last)


def _searchable(model: CollaborativeModel) -> tuple[NDArray[np.float32], NDArray[np.float32], bool]:
    """The item and context vectors as the index searches them, and whether the model's last
    coordinate was dropped."""
    item_vectors, context_vectors = model.item_vectors, model.context_vectors
    drop_last = bool(np.allclose(context_vectors[:, -1], 0.0))
    if drop_last:
        # The model appends a coordinate that makes item vectors unit length (so cosine would
        # rank like inner product). HNSW navigates that badly: measured on MovieLens, recall@10
        # vs exact was 0.27 (cosine, ef=128) against 0.9975 searching inner product without it.
        item_vectors = np.ascontiguousarray(item_vectors[:, :-1])
        context_vectors = np.ascontiguousarray(context_vectors[:, :-1])
    return item_vectors, context_vectors, drop_last


def _new_index(
    model: CollaborativeModel, item_vectors: NDArray[np.float32], keep: list[int], ef_search: int
) -> HnswIndex:
    index = HnswIndex(
        item_vectors.shape[1],
        space="ip",
        ef_search=ef_search,
        initial_capacity=max(1024, len(keep)),
    )
    if keep:
        index.upsert([model.item_ids[row] for row in keep], item_vectors[keep])
    return index


def _matches(index: HnswIndex, model: CollaborativeModel, dim: int) -> bool:
    return (
        index.dim == dim
        and len(index) == len(model.item_ids)
        and set(index.ids()) == set(model.item_ids)
    )


def prebuilt_index(model: CollaborativeModel) -> HnswIndex:
    """The HNSW index of every model item, as `build_retrieval` would build it. The training
    process builds and saves it, so that the serving process only loads the graph: building it
    there took 13-17 s of both cores at 20,000 items, and Recommend p99 rose to 3.9x idle."""
    item_vectors, _, _ = _searchable(model)
    # The search breadth is the serving process's to set (build_retrieval does).
    return _new_index(model, item_vectors, list(range(len(model.item_ids))), 128)


def train_collaborative(
    sequences: Sequence[Sequence[Event]],
    config: CollaborativeConfig,
    features: tuple[Sequence[str], NDArray[np.float32]] | None = None,
) -> CollaborativeModel:
    """Train on the recorded event sequences. ``features`` (item ids and their text or caller
    vectors, row-aligned) place items without events in the collaborative space."""
    return train_collaborative_model(
        [[event.item_id for event in sequence] for sequence in sequences],
        [[event_weight(event) for event in sequence] for sequence in sequences],
        config,
        features,
    )
