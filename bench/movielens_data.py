"""MovieLens latest-small under the LlamaRec protocol (EVALUATION.md, section 1).

Steps, exactly as the protocol states them:

1. Read ``ratings.csv`` and ``movies.csv``; keep every rating (no threshold); drop items without a
   title (none are dropped on this copy).
2. Iterative 5-core filter: drop users and items with fewer than 5 interactions until stable.
3. Sort each user's interactions by timestamp; ties are broken by the row order in ``ratings.csv``
   (a stable sort of the rows as read).
4. Leave-one-out: last item = test, second-to-last = validation, the rest = train.
5. Check numbers: 610 users, 3,650 items, 90,274 interactions, mean sequence length 147.99.

The data is read in place (``$MOVIELENS_DIR`` or ``/work/shared/data/ml-latest-small``); it is
never copied into the project.
"""

from __future__ import annotations

import csv
import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

DEFAULT_DIR = Path(os.environ.get("MOVIELENS_DIR", "/work/shared/data/ml-latest-small"))

EXPECTED_USERS = 610
EXPECTED_ITEMS = 3650
EXPECTED_INTERACTIONS = 90274
EXPECTED_MEAN_LEN = 147.99
MIN_COUNT = 5


@dataclass(frozen=True)
class Movie:
    """One catalogue entry from ``movies.csv``."""

    movie_id: str
    title: str
    genres: tuple[str, ...]


@dataclass(frozen=True)
class UserSplit:
    """One user's leave-one-out split. Items are dense indices into ``MovieLensSplits.item_ids``."""

    user_id: str
    train_items: list[int]
    train_times: list[int]
    train_ratings: list[float]
    valid_item: int
    valid_time: int
    test_item: int
    test_time: int
    valid_rating: float = 0.0
    test_rating: float = 0.0

    def history(self, *, for_test: bool) -> list[int]:
        """Items shown to the system: train (validation pass) or train + validation (test pass)."""
        return [*self.train_items, self.valid_item] if for_test else list(self.train_items)

    def history_times(self, *, for_test: bool) -> list[int]:
        """Timestamps aligned with :meth:`history`."""
        return [*self.train_times, self.valid_time] if for_test else list(self.train_times)

    def history_ratings(self, *, for_test: bool) -> list[float]:
        """Ratings aligned with :meth:`history`."""
        return [*self.train_ratings, self.valid_rating] if for_test else list(self.train_ratings)

    def target(self, *, for_test: bool) -> int:
        """The held-out item of the pass."""
        return self.test_item if for_test else self.valid_item

    def target_rating(self, *, for_test: bool) -> float:
        """The held-out item's rating (never sent: the protocol holds it out whatever it is)."""
        return self.test_rating if for_test else self.valid_rating


@dataclass(frozen=True)
class MovieLensSplits:
    """Preprocessed data set. ``item_ids[k]`` is the movieId (as text) of dense item ``k``."""

    item_ids: list[str]
    movies: list[Movie]
    users: list[UserSplit]
    n_interactions: int

    @property
    def n_items(self) -> int:
        return len(self.item_ids)

    @property
    def n_users(self) -> int:
        return len(self.users)

    def histories(self, *, for_test: bool) -> list[list[int]]:
        return [u.history(for_test=for_test) for u in self.users]

    def history_times(self, *, for_test: bool) -> list[list[int]]:
        return [u.history_times(for_test=for_test) for u in self.users]

    def targets(self, *, for_test: bool) -> list[int]:
        return [u.target(for_test=for_test) for u in self.users]


@dataclass(frozen=True)
class _Row:
    user: str
    item: str
    rating: float
    ts: int


def _read_movies(data_dir: Path) -> dict[str, Movie]:
    movies: dict[str, Movie] = {}
    with (data_dir / "movies.csv").open(newline="", encoding="utf-8") as fh:
        for rec in csv.DictReader(fh):
            title = rec["title"].strip()
            if not title:
                continue
            raw = rec["genres"].strip()
            genres = () if raw in ("", "(no genres listed)") else tuple(raw.split("|"))
            movies[rec["movieId"]] = Movie(rec["movieId"], title, genres)
    return movies


def _read_ratings(data_dir: Path) -> list[_Row]:
    with (data_dir / "ratings.csv").open(newline="", encoding="utf-8") as fh:
        return [
            _Row(r["userId"], r["movieId"], float(r["rating"]), int(r["timestamp"]))
            for r in csv.DictReader(fh)
        ]


def _five_core(rows: list[_Row], min_count: int) -> list[_Row]:
    while True:
        users = Counter(r.user for r in rows)
        items = Counter(r.item for r in rows)
        kept = [r for r in rows if users[r.user] >= min_count and items[r.item] >= min_count]
        if len(kept) == len(rows):
            return kept
        rows = kept


def load_movielens(data_dir: Path | None = None, *, check: bool = True) -> MovieLensSplits:
    """Load and preprocess ml-latest-small per the LlamaRec protocol; assert the check numbers."""
    ddir = data_dir if data_dir is not None else DEFAULT_DIR
    movies = _read_movies(ddir)
    rows = [r for r in _read_ratings(ddir) if r.item in movies]
    rows = _five_core(rows, MIN_COUNT)

    # Dense ids in order of first appearance in ratings.csv (deterministic).
    item_index: dict[str, int] = {}
    for r in rows:
        item_index.setdefault(r.item, len(item_index))
    per_user: dict[str, list[_Row]] = {}
    for r in rows:  # rows keep ratings.csv order, so a stable sort breaks ties by row order
        per_user.setdefault(r.user, []).append(r)

    users: list[UserSplit] = []
    for uid, urows in per_user.items():
        seq = sorted(urows, key=lambda x: x.ts)
        items = [item_index[x.item] for x in seq]
        times = [x.ts for x in seq]
        users.append(
            UserSplit(
                user_id=uid,
                train_items=items[:-2],
                train_times=times[:-2],
                train_ratings=[x.rating for x in seq[:-2]],
                valid_item=items[-2],
                valid_time=times[-2],
                test_item=items[-1],
                test_time=times[-1],
                valid_rating=seq[-2].rating,
                test_rating=seq[-1].rating,
            )
        )
    item_ids = list(item_index)
    splits = MovieLensSplits(
        item_ids=item_ids,
        movies=[movies[i] for i in item_ids],
        users=users,
        n_interactions=len(rows),
    )
    if check:
        mean_len = splits.n_interactions / splits.n_users
        assert splits.n_users == EXPECTED_USERS, splits.n_users
        assert splits.n_items == EXPECTED_ITEMS, splits.n_items
        assert splits.n_interactions == EXPECTED_INTERACTIONS, splits.n_interactions
        assert round(mean_len, 2) == EXPECTED_MEAN_LEN, mean_len
    return splits


if __name__ == "__main__":
    s = load_movielens()
    print(
        f"users={s.n_users} items={s.n_items} interactions={s.n_interactions} "
        f"mean_len={s.n_interactions / s.n_users:.2f}"
    )
