"""The pieces of `bench/eval_movielens.py --low-ratings-as-dislikes`: which history events become
dislikes (the held-out items never do), and the near-a-dislike share of the lists."""

from __future__ import annotations

import numpy as np
from interesttree.v1 import interest_pb2

from bench.eval_movielens import (
    disliked_neighbour_share,
    event_rows,
    item_neighbours,
    list_ranks,
)
from bench.movielens_data import Movie, MovieLensSplits, UserSplit
from server.importer import NAMED, to_event


def _splits() -> MovieLensSplits:
    user = UserSplit(
        user_id="1",
        train_items=[0, 1, 2],
        train_times=[10, 20, 30],
        train_ratings=[5.0, 2.0, 1.5],
        valid_item=3,
        valid_time=40,
        test_item=4,
        test_time=50,
        valid_rating=1.0,
        test_rating=0.5,
    )
    ids = [str(k) for k in range(5)]
    return MovieLensSplits(ids, [Movie(i, f"m{i}", ()) for i in ids], [user], 5)


def _types(data: MovieLensSplits, *, for_test: bool, cut: float | None) -> dict[str, int]:
    rows = event_rows(data, for_test=for_test, dislike_threshold=cut)
    events = [to_event(row, NAMED["events"]) for row in rows]
    return {event.item: event.type for event in events}


def test_only_history_ratings_at_or_below_the_threshold_become_dislikes() -> None:
    data = _splits()
    dislike = interest_pb2.EVENT_TYPE_DISLIKE
    unset = interest_pb2.EVENT_TYPE_UNSPECIFIED
    assert _types(data, for_test=False, cut=None) == dict.fromkeys(
        ["items/0", "items/1", "items/2"], unset
    )
    assert _types(data, for_test=False, cut=2.0) == {
        "items/0": unset,
        "items/1": dislike,
        "items/2": dislike,
    }
    # The test pass sends the validation item, rated 1.0, as a dislike; the test item is held out.
    test = _types(data, for_test=True, cut=2.0)
    assert test["items/3"] == dislike and "items/4" not in test
    assert data.users[0].target_rating(for_test=True) == 0.5


def test_item_neighbours_by_cosine_leave_the_item_out() -> None:
    # Items 0 and 1 share users, so do 2 and 3; item 4's one user also rated 1, 2 and 3, and
    # 2 and 3 tie for it (cosine 0.71 against 0.58 for item 1): the lower index wins.
    matrix = np.array(
        [[1, 1, 0, 0, 0], [1, 1, 0, 0, 0], [0, 0, 1, 1, 0], [0, 1, 1, 1, 1]], dtype=np.float64
    )
    near = item_neighbours(matrix, k=1)
    assert near[:, 0].tolist() == [1, 0, 3, 2, 2]


def test_disliked_neighbour_share_counts_only_users_with_dislikes() -> None:
    neighbours = np.array([[1, 2], [0, 2], [0, 1], [4, 0], [3, 0]])
    lists = [[1, 2, 3, 4], [0, 1], [3, 4]]
    disliked = [[0], [], [3]]
    share, users = disliked_neighbour_share(lists, disliked, neighbours)
    assert users == 2
    assert share == (2 + 1) / (4 + 2)
    assert disliked_neighbour_share([[1]], [[]], neighbours) == (0.0, 0)


def test_list_ranks_mark_a_miss_as_the_page_size() -> None:
    assert list_ranks([[5, 6, 7], [1]], [7, 9]).tolist() == [2, 10]
