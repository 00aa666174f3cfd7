"""The trained collaborative model on disk: one .npz file, replaced atomically, so a reader
never sees half a model and a crash mid-save leaves the previous one."""

from __future__ import annotations

import dataclasses
import io
import json
import shutil
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from index import HnswIndex
from index.atomic import atomic_write
from taxonomy.recommendation.collaborative_model import CollaborativeModel, Weighting

MODEL_FILE = "collaborative.npz"
INDEX_DIR = "collaborative-index"


def save_model(directory: Path, model: CollaborativeModel, event_count: int) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    meta = {
        "event_count": event_count,
        "window": model.window,
        "decay": model.decay,
        "profile_weight": model.profile_weight,
        "profile_power": model.profile_power,
        "profile_window": model.profile_window,
        "symmetric": model.symmetric,
        "feature_scale": model.feature_scale,
        "rerank_weighting": (
            dataclasses.asdict(model.rerank_weighting) if model.rerank_weighting else None
        ),
    }
    arrays: dict[str, NDArray[np.generic]] = {
        "item_ids": np.array(model.item_ids, dtype=np.str_),
        "item_vectors": model.item_vectors,
        "meta": np.array(json.dumps(meta)),
    }
    if not (model.symmetric and model.context_vectors is model.item_vectors):
        # A symmetric model's vectors are one array; saving them twice doubled the file.
        arrays["context_vectors"] = model.context_vectors
    if model.transitions is not None:
        arrays["transitions"] = model.transitions
    if model.feature_map is not None:
        arrays["feature_map"] = model.feature_map
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)  # type: ignore[arg-type]
    atomic_write(directory / MODEL_FILE, buffer.getvalue())


def delete_model(directory: Path) -> None:
    """Removes the saved model, so that a restart cannot bring back what it learned."""
    (directory / MODEL_FILE).unlink(missing_ok=True)
    shutil.rmtree(directory / INDEX_DIR, ignore_errors=True)


def save_index(directory: Path, index: HnswIndex) -> None:
    """Saves the training process's HNSW index of the model's items beside the model file;
    written before the model file, which stays the commit point of a training."""
    index.save(directory / INDEX_DIR)


def load_index(directory: Path) -> HnswIndex | None:
    """The saved index, or None when there is none or it cannot be read (then the caller
    builds one from the model)."""
    try:
        return HnswIndex.load(directory / INDEX_DIR)
    except (OSError, ValueError):
        return None


def load_model(directory: Path) -> tuple[CollaborativeModel, int] | None:
    path = directory / MODEL_FILE
    if not path.exists():
        return None
    with np.load(path, allow_pickle=False) as data:
        meta = json.loads(str(data["meta"]))
        item_vectors = data["item_vectors"]
        model = CollaborativeModel(
            item_ids=tuple(str(item_id) for item_id in data["item_ids"]),
            item_vectors=item_vectors,
            context_vectors=(
                data["context_vectors"] if "context_vectors" in data.files else item_vectors
            ),
            transitions=data.get("transitions"),
            window=meta["window"],
            decay=meta["decay"],
            profile_weight=meta["profile_weight"],
            profile_power=meta["profile_power"],
            profile_window=meta["profile_window"],
            symmetric=meta["symmetric"],
            rerank_weighting=(
                Weighting(**meta["rerank_weighting"]) if meta["rerank_weighting"] else None
            ),
            feature_map=data["feature_map"] if "feature_map" in data.files else None,
            feature_scale=float(meta.get("feature_scale", 1.0)),
        )
    return model, int(meta["event_count"])
