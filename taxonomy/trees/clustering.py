"""Structure for items the catalog says nothing about: clusters of their text vectors, named
by the words their items share.

Used by the builder for items with no category path and no tags, so such a history still gets
a hierarchy (level 1 clusters, level 2 sub-clusters) instead of one "Other interests" bucket.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Mapping, Sequence

import numpy as np
from numpy.typing import NDArray
from sklearn.cluster import KMeans
from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS

from taxonomy.models import Item

_WORD = re.compile(r"[a-z][a-z'-]{2,}")
MAX_TOP_CLUSTERS = 6
MIN_ITEMS_TO_SPLIT = 4


def _words(item: Item) -> set[str]:
    text = f"{item.title} {item.description}".casefold()
    return {w for w in _WORD.findall(text) if w not in ENGLISH_STOP_WORDS}


def _kmeans(vectors: NDArray[np.float32], k: int) -> NDArray[np.int32]:
    labels = KMeans(n_clusters=k, n_init=4, random_state=0).fit_predict(vectors)
    return np.asarray(labels, dtype=np.int32)


def _name(
    members: Sequence[str], others: Sequence[str], words: Mapping[str, set[str]], avoid: set[str]
) -> str:
    """The words most of the cluster shares and the rest of the history does not."""
    inside = Counter(w for i in members for w in words[i])
    outside = Counter(w for i in others for w in words[i])
    scored = sorted(
        (
            (count / len(members) - outside[w] / max(1, len(others)), w)
            for w, count in inside.items()
            if count >= 2 and w not in avoid
        ),
        reverse=True,
    )
    chosen = [w for _, w in scored[:2]]
    return " & ".join(w.capitalize() for w in chosen)


def cluster_paths(
    item_ids: Sequence[str],
    items: Mapping[str, Item],
    vectors: Mapping[str, NDArray[np.float32]],
    *,
    fallback: str,
) -> dict[str, list[str]]:
    """Two-level paths for items without metadata; items without vectors get [fallback]."""
    present = [i for i in item_ids if i in vectors]
    paths: dict[str, list[str]] = {i: [fallback] for i in item_ids if i not in vectors}
    if len(present) < 2:
        paths.update({i: [fallback] for i in present})
        return paths
    words = {i: _words(items[i]) for i in present}
    matrix = np.stack([vectors[i] for i in present])
    k = max(2, min(MAX_TOP_CLUSTERS, round(math.sqrt(len(present) / 2))))
    k = min(k, len(present))
    top = _kmeans(matrix, k)
    used: set[str] = set()
    for cluster in range(k):
        members = [i for i, c in zip(present, top, strict=True) if c == cluster]
        if not members:
            continue
        others = [i for i in present if i not in set(members)]
        label = _name(members, others, words, set()) or f"{fallback} {cluster + 1}"
        while label.casefold() in used:
            label = f"{label} (more)"
        used.add(label.casefold())
        if len(members) < MIN_ITEMS_TO_SPLIT:
            paths.update({i: [label] for i in members})
            continue
        sub = _kmeans(np.stack([vectors[i] for i in members]), 2)
        avoid = {w.casefold() for w in label.split(" & ")}
        names: list[str] = []
        for part in range(2):
            part_members = [i for i, c in zip(members, sub, strict=True) if c == part]
            rest = [i for i in members if i not in set(part_members)]
            name = _name(part_members, rest, words, avoid) or f"{label}, part {part + 1}"
            if name.casefold() in {n.casefold() for n in names}:
                name = f"{name} (more)"
            names.append(name)
            paths.update({i: [label, name] for i in part_members})
    return paths
