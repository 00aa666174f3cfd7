"""Shared doubles for the taxonomy tests: a hash embedder, a small catalog and an engine."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray
from openai.types.chat import ChatCompletionMessageParam

from taxonomy.engine import EngineConfig, InterestEngine
from taxonomy.models import Event, Item
from taxonomy.ports import ChatModel, Completion
from taxonomy.storage.sqlite import SqliteStore

from ..storage.backends import StoreBackend

START = datetime(2024, 1, 1, tzinfo=UTC)
DB_NAME = "db.sqlite3"


class HashEmbedder:
    """Deterministic unit vectors per text; `zero_for` texts embed to the zero vector."""

    def __init__(self, dim: int = 16, zero_for: str | None = None) -> None:
        self._dim = dim
        self._zero_for = zero_for

    @property
    def dim(self) -> int:
        return self._dim

    @property
    def name(self) -> str:
        return "hash"

    async def embed(self, texts: Sequence[str]) -> NDArray[np.float32]:
        rows = np.zeros((len(texts), self._dim), dtype=np.float64)
        for row, text in zip(rows, texts, strict=True):
            if self._zero_for is not None and self._zero_for in text:
                continue
            rng = np.random.default_rng(abs(hash(text)) % (2**32))
            vector = rng.normal(size=self._dim)
            row[:] = vector / np.linalg.norm(vector)
        return rows.astype(np.float32)


def catalog() -> list[Item]:
    """Two genres, each with two sub-genres of three books: trees with two levels."""
    return [
        Item(item_id=f"{genre}-{sub}-{k}", title=f"{genre} {sub} book {k}", categories=[genre, sub])
        for genre, subs in (("scifi", ("space", "time")), ("horror", ("gothic", "cosmic")))
        for sub in subs
        for k in range(3)
    ]


def history(user_id: str, item_ids: Sequence[str]) -> list[Event]:
    return [
        Event(user_id=user_id, item_id=item_id, event_time=START + timedelta(hours=hour))
        for hour, item_id in enumerate(item_ids)
    ]


def sample_events() -> list[Event]:
    """alice reads science fiction, bob horror; each touches every sub-genre."""
    scifi = [item.item_id for item in catalog() if item.item_id.startswith("scifi")]
    horror = [item.item_id for item in catalog() if item.item_id.startswith("horror")]
    return history("alice", scifi[:5]) + history("bob", horror[:5])


async def make_engine(
    data_dir: Path,
    *,
    embedder: HashEmbedder | None = None,
    chat: ChatModel | None = None,
    config: EngineConfig | None = None,
    backend: StoreBackend | None = None,
) -> InterestEngine:
    """An engine over `data_dir`; its store is SQLite there unless `backend` says otherwise."""
    engine = InterestEngine(
        backend.open(data_dir, DB_NAME) if backend else SqliteStore(data_dir / DB_NAME),
        data_dir,
        embedder or HashEmbedder(),
        chat,
        config or EngineConfig(collaborative=None),
    )
    await engine.start()
    return engine


class ScriptedChat:
    """Answers each request with the next scripted reply (a string, or an exception)."""

    def __init__(self, replies: Sequence[str | Exception | None] = ()) -> None:
        self._replies = list(replies)
        self.prompts: list[str] = []

    @property
    def requests(self) -> int:
        """How many requests it was sent."""
        return len(self.prompts)

    @property
    def model_name(self) -> str:
        return "scripted"

    async def complete_json(
        self,
        messages: Sequence[ChatCompletionMessageParam],
        *,
        schema_name: str,
        schema: dict[str, Any],
        max_tokens: int,
    ) -> Completion:
        self.prompts.append(str(messages[-1]["content"]))
        reply = self._replies.pop(0) if self._replies else None
        if isinstance(reply, Exception):
            raise reply
        if reply is None:
            # Default: choose the last allowed label (free mode: a label the tags support).
            label = schema["properties"]["label"].get("enum", ["Space opera"])[-1]
            answer = {"label": label}
            if "explanation" in schema["properties"]:
                answer["explanation"] = "You keep returning to stories of this kind."
            reply = json.dumps(answer)
        return Completion(reply, 100, 20, "stop")

    async def close(self) -> None:
        return None
