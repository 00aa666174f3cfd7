"""The structure of the catalog taxonomy: one hierarchy of the whole catalog, coarse to fine.

Category paths, where items have them, give the upper levels (a caller's own taxonomy is the
best one there is). Below them, and everywhere in a flat catalog, bisecting k-means over the
item vectors of the retrieval space (collaborative vectors once trained, the text or caller
vectors before) splits each group into clusters, and those again, down to `max_depth`.

Each cluster gets data-backed label candidates (the terms its items share and its siblings do
not), every one of which passes `readability_problem`; the model may then pick among them once
per cluster (`taxonomy.shared_taxonomy.naming`). A cluster whose membership barely changed
since the last build keeps its id and its name, so a rebuild only names what changed.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray
from sklearn.cluster import BisectingKMeans
from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS

from taxonomy.models import CatalogTaxonomyNode, Item, TextSource

CATEGORY = "category"
CLUSTER = "cluster"
MAX_LABEL_WORDS = 6
MAX_LABEL_CHARS = 60
MAX_CANDIDATES = 4

_TERM = re.compile(r"[a-z][a-z'-]{2,}")
_LABEL_WORD = re.compile(r"[\w']+")
# Joining words may repeat ("Arts & Crafts & Hobbies" is clumsy but not a paste).
_JOINERS = frozenset({"&", "and", "of", "the", "a", "an", "for", "in", "on", "to", "with"})
# Words that describe every item of a catalog, and the verbs and adjectives of blurbs
# ("provides", "best"): none names what a cluster's items share.
_GENERIC = frozenset(
    [
        "magazine",
        "magazines",
        "issue",
        "issues",
        "subscription",
        "subscriptions",
        "edition",
        "editions",
        "publication",
        "publications",
        "print",
        "digital",
        "copy",
        "copies",
        "year",
        "years",
        "month",
        "months",
        "monthly",
        "week",
        "weekly",
        "day",
        "daily",
        "time",
        "times",
        "new",
        "best",
        "great",
        "top",
        "latest",
        "first",
        "last",
        "every",
        "full",
        "free",
        "more",
        "most",
        "many",
        "much",
        "also",
        "including",
        "includes",
        "include",
        "included",
        "provides",
        "provide",
        "provided",
        "offers",
        "offer",
        "offered",
        "features",
        "feature",
        "featured",
        "serves",
        "serve",
        "covers",
        "cover",
        "covering",
        "brings",
        "bring",
        "make",
        "makes",
        "making",
        "made",
        "get",
        "gets",
        "give",
        "gives",
        "like",
        "need",
        "needs",
        "help",
        "helps",
        "way",
        "ways",
        "look",
        "looks",
        "inside",
        "start",
        "end",
        "edited",
        "written",
        "read",
        "readers",
        "reader",
        "find",
        "finds",
        "keep",
        "keeps",
        "well",
        "good",
        "better",
        "world",
        "today",
        "ever",
        "available",
        "need",
        "one",
        "two",
        "three",
        "world's",
        "whether",
        "just",
        "even",
        "really",
        "make",
        "successful",
        "interesting",
        "timely",
        "trusted",
        "favorite",
        "favorites",
        "fab",
        "pro",
        "hug",
        "stories",
        "story",
        "item",
        "items",
        "product",
        "products",
        "features",
        "information",
        "info",
        "take",
        "takes",
        "know",
        "knows",
        "want",
        "wants",
        "each",
        "own",
        "back",
        "left",
        "right",
        "plus",
        "set",
        "sets",
        "use",
        "uses",
        "used",
        "using",
        "lot",
        "lots",
    ]
)


@dataclass(frozen=True)
class CatalogTaxonomyConfig:
    max_depth: int = 2
    """Levels of the taxonomy. Each level of a user's tree has its own time scale and level
    weight (`recommendation/levels.py`); measured on MovieLens validation, depth-4 projections
    gave NDCG@10 0.1021 against 0.1200 for the per-user trees (depth 2), so 2 is the default."""
    max_category_levels: int = 3
    """Category terms fill at most this many levels; clusters fill the rest."""
    max_branching: int = 16
    min_split_items: int = 6
    """A group of fewer items is a leaf."""
    central_items: int = 8
    keep_name_overlap: float = 0.8
    """Member Jaccard with a node of the previous build at or above which a cluster is the
    same cluster: it keeps that node's id and name and costs no model request."""


def readability_problem(label: str) -> str | None:
    """Why a label does not read as a noun phrase a person would write, or None.

    Catches the pastes the old per-user builder made ("Sea stories: sea", "Drama (other)"),
    repeated words, sentences and markup."""
    text = " ".join(label.split())
    words = _LABEL_WORD.findall(text.casefold())
    if not words or len(text) > MAX_LABEL_CHARS or len(words) > MAX_LABEL_WORDS:
        return "not_a_short_phrase"
    if any(ch in text for ch in ":;|"):
        return "category_tag_paste"
    if any(ch in text for ch in '()[]{}<>\n"') or text.endswith((".", "!", "?", ",")):
        return "not_a_noun_phrase"
    content = [w for w in words if w not in _JOINERS]
    if len(content) != len(set(content)):
        return "repeated_word"
    if not content:
        return "not_a_short_phrase"
    return None


def _id(*parts: str) -> str:
    return "t" + hashlib.sha1("\x1f".join(parts).encode("utf-8")).hexdigest()[:12]


def _category_path(item: Item) -> list[str]:
    path: list[str] = []
    for term in item.categories:
        term = " ".join(term.split())
        if term and (not path or path[-1].casefold() != term.casefold()):
            path.append(term)
    return path


def _terms(item: Item) -> set[str]:
    """An item's describing terms: its tags as phrases, then the words of its text."""
    tags = {" ".join(tag.split()) for tag in item.tags if tag.strip()}
    text = f"{item.title} {item.description}".casefold()
    words = {
        w
        for w in _TERM.findall(text)
        if w not in ENGLISH_STOP_WORDS and w not in _GENERIC and not w.endswith("'s")
    }
    return tags | words


def _display(term: str) -> str:
    return term if any(ch.isupper() for ch in term) else term.capitalize()


@dataclass
class DraftNode:
    """A node while the taxonomy is built: candidates and vectors live only here."""

    taxonomy_id: str
    parent_id: str | None
    level: int
    kind: str
    items: list[str]
    label: str = ""
    candidates: list[str] = field(default_factory=list)
    central_items: list[str] = field(default_factory=list)
    label_source: TextSource = TextSource.DATA
    named: bool = False
    children: list[DraftNode] = field(default_factory=list)

    def stored(self) -> CatalogTaxonomyNode:
        return CatalogTaxonomyNode(
            taxonomy_id=self.taxonomy_id,
            parent_id=self.parent_id,
            level=self.level,
            label=self.label,
            label_source=self.label_source,
            kind=self.kind,
            items=self.items,
            central_items=self.central_items,
            named=self.named,
        )


class _Builder:
    def __init__(
        self,
        items: Mapping[str, Item],
        space: Mapping[str, NDArray[np.float32]],
        text: Mapping[str, NDArray[np.float32]],
        previous: Sequence[CatalogTaxonomyNode],
        config: CatalogTaxonomyConfig,
    ) -> None:
        self.items = items
        self.space = space
        self.text = text
        self.config = config
        self.terms = {item_id: _terms(item) for item_id, item in items.items()}
        self.previous = [p for p in previous if p.kind == CLUSTER]
        self.previous_sets = [set(p.items) for p in self.previous]
        self.previous_by_id = {p.taxonomy_id: p for p in previous}
        self.claimed: set[str] = set()

    # Structure ---------------------------------------------------------------------------

    def build(self) -> list[DraftNode]:
        paths = {i: _category_path(item) for i, item in self.items.items()}
        with_path = [p for p in paths.values() if p]
        # Terms every categorised item shares ("Magazine Subscriptions") name no distinction.
        root: list[str] = []
        while with_path and all(len(p) > len(root) + 1 for p in with_path):
            heads = {p[len(root)].casefold() for p in with_path}
            if len(heads) != 1:
                break
            root.append(with_path[0][len(root)])
        paths = {i: p[len(root) :] for i, p in paths.items()}
        top = self._grow(None, 0, sorted(self.items), paths, (), [])
        return top

    def _grow(
        self,
        parent: DraftNode | None,
        level: int,
        item_ids: list[str],
        paths: Mapping[str, list[str]],
        prefix: tuple[str, ...],
        ancestors: list[str],
    ) -> list[DraftNode]:
        """The children of a node at `level` (0: the root) holding `item_ids`."""
        if level >= self.config.max_depth:
            return []
        by_term: dict[str, list[str]] = {}
        rest: list[str] = []
        for item_id in item_ids:
            path = paths[item_id]
            if len(prefix) < self.config.max_category_levels and len(path) > len(prefix):
                term = path[len(prefix)]
                by_term.setdefault(term.casefold(), []).append(item_id)
            else:
                rest.append(item_id)
        children: list[DraftNode] = []
        if by_term:
            for members in sorted(by_term.values(), key=lambda m: (-len(m), paths[m[0]])):
                term = paths[members[0]][len(prefix)]
                node = DraftNode(
                    taxonomy_id=_id(CATEGORY, *prefix, term.casefold()),
                    parent_id=parent.taxonomy_id if parent else None,
                    level=level + 1,
                    kind=CATEGORY,
                    items=members,
                    label=term,
                    candidates=[term],
                    label_source=TextSource.DATA,
                    named=True,
                )
                children.append(node)
            if rest:
                # Items whose path ends here still need a node one level down: clusters,
                # beside the category terms.
                children += self._clusters(parent, level, rest, item_ids, ancestors, force=True)
        elif len(item_ids) >= self.config.min_split_items:
            # The root always splits: a taxonomy needs a first level.
            children = self._clusters(
                parent, level, item_ids, item_ids, ancestors, force=parent is None
            )
        self._label_siblings(children, ancestors)
        for child in children:
            child_prefix = (*prefix, child.label) if child.kind == CATEGORY else prefix
            child.central_items = self._central(child.items)
            child.children = self._grow(
                child,
                level + 1,
                child.items,
                paths if child.kind == CATEGORY else {i: [] for i in child.items},
                child_prefix,
                [*ancestors, child.label],
            )
        return children

    def _vectors(self, item_ids: Sequence[str]) -> tuple[Mapping[str, NDArray[np.float32]], bool]:
        """The space to cluster a group in: the retrieval space if it holds most of the group,
        else the text vectors (True when the retrieval space is used)."""
        held = sum(1 for i in item_ids if i in self.space)
        if held >= max(2, 0.8 * len(item_ids)):
            return self.space, True
        return self.text, False

    def _clusters(
        self,
        parent: DraftNode | None,
        level: int,
        item_ids: list[str],
        group: list[str],
        ancestors: list[str],
        *,
        force: bool,
    ) -> list[DraftNode]:
        vectors, _ = self._vectors(item_ids)
        present = [i for i in item_ids if i in vectors]
        # sqrt(n) children: measured on Amazon Magazine (bench/taxonomy_eval.py), per-user AMI
        # against the human paths was 0.30 / 0.43 at levels 1 / 2, against 0.23 / 0.38 with
        # sqrt(n / 2) and 0.08 / 0.15 with the silhouette's choice (mostly 2).
        k = min(self.config.max_branching, round(math.sqrt(len(item_ids))), len(present) // 2)
        assignment: dict[str, int] = {}
        if k >= 2:
            matrix = np.stack([_unit(vectors[i]) for i in present])
            labels = _split(matrix, k)
            assignment = {i: int(c) for i, c in zip(present, labels, strict=True)}
        if len(set(assignment.values())) < 2:
            if not force:
                return []
            assignment = {i: 0 for i in item_ids}
        self._place_missing(item_ids, assignment)
        groups: dict[int, list[str]] = {}
        for item_id in item_ids:
            groups.setdefault(assignment[item_id], []).append(item_id)
        parts = sorted(groups.values(), key=lambda m: (-len(m), m[0]))
        candidates = [self._candidates(members, group, ancestors) for members in parts]
        if not force and not all(candidates):
            # A part no shared term tells apart would be named "Mixed group": no split.
            return []
        nodes: list[DraftNode] = []
        for members, names in zip(parts, candidates, strict=True):
            node = DraftNode(
                taxonomy_id="",
                parent_id=parent.taxonomy_id if parent else None,
                level=level + 1,
                kind=CLUSTER,
                items=members,
                candidates=names,
            )
            self._reuse(node)
            nodes.append(node)
        return nodes

    def _place_missing(self, item_ids: Sequence[str], assignment: dict[str, int]) -> None:
        """Items without a vector in the clustering space join the cluster whose text centroid
        is nearest (the largest cluster if they have no text vector either)."""
        missing = [i for i in item_ids if i not in assignment]
        if not missing:
            return
        clusters = sorted(set(assignment.values()))
        largest = Counter(assignment.values()).most_common(1)[0][0]
        centroids: dict[int, NDArray[np.float32]] = {}
        for cluster in clusters:
            held = [self.text[i] for i, c in assignment.items() if c == cluster and i in self.text]
            if held:
                centroids[cluster] = _unit(np.mean(np.stack(held), axis=0))
        for item_id in missing:
            vector = self.text.get(item_id)
            if vector is None or not centroids:
                assignment[item_id] = largest
                continue
            query = _unit(vector)
            assignment[item_id] = max(centroids, key=lambda c: float(centroids[c] @ query))

    def _central(self, members: Sequence[str]) -> list[str]:
        vectors, _ = self._vectors(members)
        present = [i for i in members if i in vectors]
        if not present:
            return list(members[: self.config.central_items])
        matrix = np.stack([_unit(vectors[i]) for i in present])
        centroid = _unit(matrix.mean(axis=0))
        order = np.argsort(-(matrix @ centroid), kind="stable")
        return [present[int(row)] for row in order[: self.config.central_items]]

    # Names -------------------------------------------------------------------------------

    def _candidates(
        self, members: Sequence[str], group: Sequence[str], ancestors: Sequence[str]
    ) -> list[str]:
        """Readable data labels, best first: the two most distinctive terms joined by "&",
        each alone, the second and third joined."""
        inside = Counter(t for i in members for t in self.terms[i])
        member_set = set(members)
        others = [i for i in group if i not in member_set]
        outside = Counter(t for i in others for t in self.terms[i])
        need = 2 if len(members) >= 2 else 1

        def lift(count: int, term: str) -> float:
            # Shared by most of the cluster and rare beside it: share_in * log(in / out).
            share_in = count / len(members)
            share_out = outside[term] / max(1, len(others))
            return share_in * math.log((share_in + 0.05) / (share_out + 0.05))

        scored = sorted(
            (
                (score, -len(t), t)
                for t, count in inside.items()
                if count >= need and (score := lift(count, t)) > 0
            ),
            reverse=True,
        )
        terms: list[str] = []
        seen_words: set[str] = set()
        for _, _, term in scored:
            words = set(_LABEL_WORD.findall(term.casefold()))
            if words & seen_words or readability_problem(_display(term)) is not None:
                continue
            terms.append(_display(term))
            seen_words |= words
            if len(terms) == 5:
                break
        candidates: list[str] = []
        if len(terms) >= 2:
            candidates.append(f"{terms[0]} & {terms[1]}")
        if terms:
            candidates.append(terms[0])
        if len(terms) >= 2:
            candidates.append(terms[1])
        if len(terms) >= 3:
            candidates.append(f"{terms[1]} & {terms[2]}")
        # Further single terms only serve when siblings hold all the better ones.
        candidates += terms[2:]
        return [c for c in dict.fromkeys(candidates) if readability_problem(c) is None]

    def _reuse(self, node: DraftNode) -> None:
        """Gives a cluster the id and name of the previous build's node it matches."""
        members = set(node.items)
        best, best_overlap = None, 0.0
        for previous, old in zip(self.previous, self.previous_sets, strict=True):
            if previous.taxonomy_id in self.claimed or previous.level != node.level:
                continue
            overlap = len(members & old) / len(members | old)
            if overlap > best_overlap:
                best, best_overlap = previous, overlap
        if best is not None and best_overlap >= self.config.keep_name_overlap:
            self.claimed.add(best.taxonomy_id)
            node.taxonomy_id = best.taxonomy_id
            node.label = best.label
            node.label_source = best.label_source
            node.named = best.named
            return
        node.taxonomy_id = _id(CLUSTER, *sorted(members))
        while node.taxonomy_id in self.claimed or node.taxonomy_id in self.previous_by_id:
            node.taxonomy_id = _id(node.taxonomy_id)
        self.claimed.add(node.taxonomy_id)

    def _label_siblings(self, siblings: list[DraftNode], ancestors: Sequence[str]) -> None:
        """Every sibling gets a distinct readable label; a kept name wins over a new one."""
        used: set[str] = set()
        blocked = {a.casefold() for a in ancestors}
        for node in sorted(siblings, key=lambda s: not s.label):
            if not node.label or node.label.casefold() in used | blocked:
                free = [c for c in node.candidates if c.casefold() not in used | blocked]
                node.label = free[0] if free else _fallback(len(used) + 1, used | blocked)
                node.label_source = TextSource.DATA
                node.named = node.kind == CATEGORY
            used.add(node.label.casefold())
        for node in siblings:
            # The model may only pick a candidate no sibling holds already, among the best few.
            others = {s.label.casefold() for s in siblings if s is not node}
            node.candidates = [
                c
                for c in dict.fromkeys([node.label, *node.candidates])
                if c == node.label or c.casefold() not in others | blocked
            ][:MAX_CANDIDATES]


def _split(matrix: NDArray[np.float32], k: int) -> NDArray[np.int64]:
    """Bisecting k-means into k clusters: the largest-inertia cluster is halved until there
    are k, so the split is a divisive hierarchy itself."""
    return np.asarray(
        BisectingKMeans(
            n_clusters=k, n_init=4, random_state=0, bisecting_strategy="biggest_inertia"
        ).fit_predict(matrix),
        dtype=np.int64,
    )


def _fallback(n: int, used: set[str]) -> str:
    words = ("One", "Two", "Three", "Four", "Five", "Six", "Seven", "Eight", "Nine", "Ten")
    while True:
        label = f"Mixed group {words[(n - 1) % len(words)]}" + (f" {n}" if n > len(words) else "")
        if label.casefold() not in used:
            return label
        n += 1


def _unit(vector: NDArray[np.float32] | NDArray[np.float64]) -> NDArray[np.float32]:
    v = np.asarray(vector, dtype=np.float32)
    norm = float(np.linalg.norm(v))
    return v / norm if norm > 0 else v


def build_structure(
    items: Mapping[str, Item],
    space_vectors: Mapping[str, NDArray[np.float32]],
    text_vectors: Mapping[str, NDArray[np.float32]],
    previous: Sequence[CatalogTaxonomyNode],
    config: CatalogTaxonomyConfig | None = None,
) -> list[DraftNode]:
    """The taxonomy's level-1 nodes (each with its subtree), labelled from the data.

    `space_vectors` are the retrieval space's item vectors (collaborative once trained; the
    text vectors before); `text_vectors` place items the space lacks; `previous` is the last
    build, whose names matching clusters keep."""
    return _Builder(
        items, space_vectors, text_vectors, previous, config or CatalogTaxonomyConfig()
    ).build()


def walk(nodes: Sequence[DraftNode]) -> list[DraftNode]:
    """Every node, level by level (coarse first), each level in build order."""
    ordered: list[DraftNode] = []
    frontier = list(nodes)
    while frontier:
        ordered += frontier
        frontier = [child for node in frontier for child in node.children]
    return ordered
