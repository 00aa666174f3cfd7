"""The checks a model answer must pass before it replaces a node's data-derived text.

A label must be a short noun phrase, not an item's title, distinct from its siblings and
ancestors, and (in free mode) supported by more than one evidence item; an explanation must be
one whole sentence that names no item outside the evidence and copies no item text.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from taxonomy.models import Item

MAX_LABEL_WORDS = 6
MAX_LABEL_CHARS = 60
MIN_EXPLANATION_CHARS = 20
MAX_EXPLANATION_CHARS = 240
COPIED_RUN_WORDS = 5

_WORD = re.compile(r"[\w']+")


def _words(text: str) -> list[str]:
    return [w.casefold() for w in _WORD.findall(text)]


def _contains_run(haystack: Sequence[str], needle: Sequence[str]) -> bool:
    size = len(needle)
    return any(
        list(haystack[i : i + size]) == list(needle) for i in range(len(haystack) - size + 1)
    )


def _has_copied_run(text: str, sources: Sequence[str], run: int = COPIED_RUN_WORDS) -> bool:
    words = _words(text)
    grams = {tuple(words[i : i + run]) for i in range(len(words) - run + 1)}
    if not grams:
        return False
    for source in sources:
        source_words = _words(source)
        for i in range(len(source_words) - run + 1):
            if tuple(source_words[i : i + run]) in grams:
                return True
    return False


def label_problem(
    label: str,
    *,
    evidence: Sequence[Item],
    history: Sequence[Item],
    sibling_labels: Sequence[str],
    candidates: Sequence[str] | None,
    ancestor_labels: Sequence[str] = (),
) -> str | None:
    """Why a model label is unacceptable, or None if it may replace the data label."""
    text = " ".join(label.split())
    folded = text.casefold()
    if candidates is not None and text not in candidates:
        return "not_a_candidate"
    if not text or len(text) > MAX_LABEL_CHARS or len(text.split()) > MAX_LABEL_WORDS:
        return "not_a_short_phrase"
    if any(ch in text for ch in "{}<>\n") or text.endswith((".", "!", "?")):
        return "not_a_noun_phrase"
    if candidates is None:
        # Enum candidates are built from catalog terms; a free label must not echo a title
        # (whole words, so "Women" is not a copy of "…for women who…").
        label_words_all = _words(text)
        for item in history:
            title_words = _words(item.title)
            if label_words_all and (
                _contains_run(title_words, label_words_all)
                or (len(title_words) >= 2 and _contains_run(label_words_all, title_words))
            ):
                return "copies_a_title"
    if folded in {s.casefold() for s in sibling_labels}:
        return "same_as_sibling"
    if folded in {a.casefold() for a in ancestor_labels}:
        # A child renamed to its parent's label flattens the hierarchy.
        return "same_as_ancestor"
    if candidates is None:
        if len(evidence) < 2:
            return "not_supported_by_evidence"
        # A free label must rest on the group's own metadata, and on more than one item.
        label_words = {w for w in _words(text) if len(w) > 3}
        supporters = sum(
            1
            for item in evidence
            if label_words & set(_words(" ".join([*item.categories, *item.tags, item.description])))
        )
        if supporters < min(2, len(evidence)) or (len(evidence) > 1 and supporters < 2):
            return "not_supported_by_evidence"
    return None


def explanation_problem(
    explanation: str, *, evidence: Sequence[Item], history: Sequence[Item]
) -> str | None:
    """Why a model explanation is unacceptable, or None if it may replace the data one."""
    text = " ".join(explanation.split())
    if not (MIN_EXPLANATION_CHARS <= len(text) <= MAX_EXPLANATION_CHARS):
        return "bad_length"
    if not text.endswith((".", "!", "?")):
        return "not_a_whole_sentence"
    if any(ch in text for ch in "{}<>"):
        return "markup"
    evidence_ids = {item.item_id for item in evidence}
    folded = text.casefold()
    for item in history:
        outside = item.item_id not in evidence_ids and len(item.title) >= 4
        if outside and item.title.casefold() in folded:
            return "names_item_outside_evidence"
    if _has_copied_run(text, [f"{item.title} {item.description}" for item in history]):
        return "copies_item_text"
    return None
