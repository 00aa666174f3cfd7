"""Domain objects shared by the store, the tree builder and the server's converters."""

from __future__ import annotations

import enum
import math
import re
from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field, field_validator

ITEM_ID_PATTERN = re.compile(r"^[A-Za-z0-9._~-]{1,128}$")
USER_ID_PATTERN = ITEM_ID_PATTERN

MAX_TITLE_CHARS = 512
MAX_DESCRIPTION_CHARS = 8192
MAX_PATH_ELEMENTS = 8
MAX_TAGS = 64
MAX_TERM_CHARS = 128


class Strict(BaseModel):
    """Base for boundary models: unknown fields are an error, instances are immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class EventType(enum.IntEnum):
    """Mirrors interesttree.v1.EventType so stored rows survive proto renames."""

    UNSPECIFIED = 0
    VIEW = 1
    CLICK = 2
    RATE = 3
    LIKE = 4
    PURCHASE = 5


class TextSource(enum.IntEnum):
    UNSPECIFIED = 0
    DATA = 1
    MODEL = 2


def _clean_terms(values: list[str]) -> list[str]:
    cleaned = [" ".join(value.split()) for value in values]
    if any(not value for value in cleaned):
        raise ValueError("must not contain empty strings")
    return cleaned


class Item(Strict):
    item_id: str = Field(pattern=ITEM_ID_PATTERN.pattern)
    title: str = Field(min_length=1, max_length=MAX_TITLE_CHARS)
    description: str = Field(default="", max_length=MAX_DESCRIPTION_CHARS)
    categories: list[str] = Field(default_factory=list, max_length=MAX_PATH_ELEMENTS)
    tags: list[str] = Field(default_factory=list, max_length=MAX_TAGS)
    update_time: datetime | None = None
    vector: list[float] | None = Field(default=None, exclude=True)
    """Caller-supplied embedding, used instead of the text embedding; not stored with the item."""

    @field_validator("vector")
    @classmethod
    def _vector(cls, values: list[float] | None) -> list[float] | None:
        if values is not None and (
            not all(math.isfinite(v) for v in values) or not any(v != 0 for v in values)
        ):
            raise ValueError("must be finite and not all zero")
        return values

    @field_validator("categories", "tags")
    @classmethod
    def _terms(cls, values: list[str]) -> list[str]:
        for value in values:
            if len(value) > MAX_TERM_CHARS:
                raise ValueError(f"elements must be at most {MAX_TERM_CHARS} characters")
        return _clean_terms(values)

    def embedding_text(self) -> str:
        """Text the embedder sees: title first, then the catalog's own structure."""
        parts = [self.title]
        if self.categories:
            parts.append(" > ".join(self.categories))
        if self.tags:
            parts.append(", ".join(self.tags))
        if self.description:
            parts.append(self.description[:500])
        return ". ".join(parts)


class Event(Strict):
    user_id: str = Field(pattern=USER_ID_PATTERN.pattern)
    item_id: str = Field(pattern=ITEM_ID_PATTERN.pattern)
    event_type: EventType = EventType.UNSPECIFIED
    event_time: datetime
    weight: float | None = Field(default=None, gt=0, le=1000)


class InterestNode(Strict):
    node_id: str
    parent_id: str | None
    level: int = Field(ge=1)
    label: str = Field(min_length=1)
    explanation: str
    weight: float = Field(ge=0, le=1)
    evidence_items: list[str] = Field(min_length=1)
    label_source: TextSource = TextSource.DATA
    explanation_source: TextSource = TextSource.DATA
    taxonomy_node: str = ""
    reviewed: bool = False
    """The model answered about this node (accepted or not); an update need not ask again."""


class BuildStats(Strict):
    incremental: bool = False
    model_requests: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    retries: int = 0
    failures: int = 0
    rejected: int = 0

    @property
    def tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


class TreeDiff(Strict):
    added_node_ids: list[str] = Field(default_factory=list)
    removed_node_ids: list[str] = Field(default_factory=list)
    relabeled_node_ids: list[str] = Field(default_factory=list)
    changed_evidence_node_ids: list[str] = Field(default_factory=list)

    @property
    def summary(self) -> str:
        parts = [
            (len(self.added_node_ids), "added"),
            (len(self.removed_node_ids), "removed"),
            (len(self.relabeled_node_ids), "relabeled"),
            (len(self.changed_evidence_node_ids), "with new evidence"),
        ]
        return ", ".join(f"{count} {what}" for count, what in parts if count) or "no change"


class TaxonomyNode(Strict):
    taxonomy_id: str
    label: str
    aliases: list[str] = Field(default_factory=list)
    node_count: int = 0


class InterestTree(Strict):
    user_id: str
    revision: int = Field(ge=0)
    nodes: list[InterestNode]
    create_time: datetime
    event_count: int = Field(ge=0)
    model: str = ""
    build_stats: BuildStats = Field(default_factory=BuildStats)

    @property
    def depth(self) -> int:
        return max((node.level for node in self.nodes), default=0)

    def level_nodes(self, level: int) -> list[InterestNode]:
        return [node for node in self.nodes if node.level == level]
