"""Domain objects shared by the store, the tree builder and the server's converters."""

from __future__ import annotations

import enum
import math
import re
from collections.abc import Sequence
from datetime import UTC, datetime

import numpy as np
from numpy.typing import NDArray
from pydantic import BaseModel, ConfigDict, Field, field_validator

ITEM_ID_PATTERN = re.compile(r"^[A-Za-z0-9._~-]{1,128}$")
USER_ID_PATTERN = ITEM_ID_PATTERN

MAX_TITLE_CHARS = 512
MAX_DESCRIPTION_CHARS = 8192
MAX_PATH_ELEMENTS = 8
MAX_TAGS = 64
MAX_TERM_CHARS = 128

EVENT_TIME_MIN = datetime(1, 1, 1, tzinfo=UTC)
EVENT_TIME_MAX = datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC)
"""Event times are UTC instants in [EVENT_TIME_MIN, EVENT_TIME_MAX] (a proto Timestamp's range
at microsecond precision); the store keeps them as whole microseconds, so each round-trips."""


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
    DISLIKE = 6
    """Negative feedback: pushes similar items down (taxonomy/recommendation/negative.py)."""
    HIDE = 7
    """Negative feedback: the item never comes back to this user."""


class TextSource(enum.IntEnum):
    UNSPECIFIED = 0
    DATA = 1
    MODEL = 2


def unit_vector(values: Sequence[float]) -> NDArray[np.float32]:
    """The direction of a caller vector as the catalog stores and indexes it.

    The values are taken as float32 (the proto's type): each must be finite there (|v| below
    about 3.4e38), and at least one must be non-zero there (1e-50 becomes 0). The vector is
    then normalised in float64, scaled by its largest magnitude first, so no intermediate
    overflows or underflows: [1e20]*n, [3.4e38]*n and [1e-30]*n all have a direction, although
    their float32 norms would be inf, inf and 0. ValueError when there is no direction.
    """
    with np.errstate(over="ignore", under="ignore"):
        narrow = np.asarray(values, dtype=np.float64).astype(np.float32)
    if narrow.ndim != 1 or not np.isfinite(narrow).all():
        raise ValueError("must be finite float32 values (magnitudes below 3.4e38)")
    wide = narrow.astype(np.float64)
    peak = float(np.abs(wide).max()) if wide.size else 0.0
    if peak == 0:
        raise ValueError("must have a non-zero value (values below 1e-45 are 0 in float32)")
    scaled = wide / peak
    unit = (scaled / np.linalg.norm(scaled)).astype(np.float32)
    if not (np.isfinite(unit).all() and abs(float(np.linalg.norm(unit)) - 1.0) < 1e-3):
        raise ValueError("has no direction that float32 can hold")  # pragma: no cover
    return unit


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
        if values is not None:
            if not all(math.isfinite(v) for v in values):
                raise ValueError("must be finite")
            unit_vector(values)
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
    """Always UTC once validated; a naive datetime is taken as UTC."""
    weight: float | None = Field(default=None, gt=0, le=1000)

    @field_validator("event_time")
    @classmethod
    def _event_time(cls, value: datetime) -> datetime:
        if value.utcoffset() is None:
            return value.replace(tzinfo=UTC)
        try:
            return value.astimezone(UTC)
        except OverflowError as error:
            raise ValueError(
                f"must lie between {EVENT_TIME_MIN.isoformat()} and {EVENT_TIME_MAX.isoformat()}"
            ) from error


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
    """What changed from one revision of a tree to the next (taxonomy/trees/diff.py makes it;
    the store keeps it). Fields after the first four came later: stored rows without them read
    as empty."""

    added_node_ids: list[str] = Field(default_factory=list)
    removed_node_ids: list[str] = Field(default_factory=list)
    relabeled_node_ids: list[str] = Field(default_factory=list)
    changed_evidence_node_ids: list[str] = Field(default_factory=list)
    reweighted_node_ids: list[str] = Field(default_factory=list)
    """Nodes whose weight moved by at least taxonomy.trees.diff.WEIGHT_CHANGE."""
    evidence_gained: dict[str, list[str]] = Field(default_factory=dict)
    """Per node of changed_evidence_node_ids: item ids new in its evidence, in evidence order."""
    evidence_lost: dict[str, list[str]] = Field(default_factory=dict)
    """Per node of changed_evidence_node_ids: item ids gone from its evidence."""

    @property
    def summary(self) -> str:
        parts = [
            (len(self.added_node_ids), "added"),
            (len(self.removed_node_ids), "removed"),
            (len(self.relabeled_node_ids), "relabeled"),
            (len(self.reweighted_node_ids), "reweighted"),
            (len(self.changed_evidence_node_ids), "with new evidence"),
        ]
        return ", ".join(f"{count} {what}" for count, what in parts if count) or "no change"


class TaxonomyNode(Strict):
    taxonomy_id: str
    label: str
    aliases: list[str] = Field(default_factory=list)
    node_count: int = 0
    parent_id: str | None = None
    """Catalog taxonomy only: the parent node (None at level 1)."""
    level: int = 0
    """Catalog taxonomy only: 1 = coarsest; 0 for a node of the label vocabulary."""
    item_count: int = 0
    central_items: list[str] = Field(default_factory=list)
    """Catalog taxonomy only: the items nearest the node's centroid, most central first."""
    label_source: TextSource = TextSource.UNSPECIFIED


class CatalogTaxonomyNode(Strict):
    """One node of the catalog taxonomy as stored: its items and how its label was made."""

    taxonomy_id: str
    parent_id: str | None
    level: int = Field(ge=1)
    label: str
    label_source: TextSource
    kind: str
    """"category" (a category-path term) or "cluster" (a cluster of item vectors)."""
    items: list[str]
    central_items: list[str]
    named: bool = False
    """The label is settled (the model answered, or there was nothing to choose from): a
    settled cluster is not asked again while its membership stays."""


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
