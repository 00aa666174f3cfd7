"""`interest-tree import` and `export` on real files cut from MovieLens (ml-latest-small, read in
place), against a real server on a real port, through the command line itself."""

from __future__ import annotations

import asyncio
import csv
import json
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from interesttree.v1 import catalog_pb2, interest_pb2

from server import cli
from server.exporter import event_rows
from tests.conftest import RunningServer, data_only_settings, start_server

# Beside the repository (the CI clone has shared/ next to it), or where $MOVIELENS_DIR says.
MOVIELENS = Path(
    os.environ.get(
        "MOVIELENS_DIR",
        Path(__file__).resolve().parents[3] / "shared" / "data" / "ml-latest-small",
    )
)
MOVIES = 120
RATINGS = 300


def _movielens() -> tuple[list[dict[str, str]], list[dict[str, str]]]:
    with (MOVIELENS / "movies.csv").open(encoding="utf-8") as handle:
        movies = [row for _, row in zip(range(MOVIES), csv.DictReader(handle), strict=False)]
    ids = {movie["movieId"] for movie in movies}
    ratings: list[dict[str, str]] = []
    with (MOVIELENS / "ratings.csv").open(encoding="utf-8") as handle:
        for row in csv.DictReader(handle):
            if row["movieId"] in ids:
                ratings.append(row)
                if len(ratings) == RATINGS:
                    break
    return movies, ratings


@pytest.fixture(scope="module")
def movielens() -> tuple[list[dict[str, str]], list[dict[str, str]]]:
    return _movielens()


def _write_csv(path: Path, rows: list[dict[str, str]]) -> Path:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


def _write_jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


async def _cli(*argv: str) -> int:
    # In a thread with its own event loop, as a shell would run it; the server stays on ours.
    return await asyncio.to_thread(cli.main, [*argv])


def _address(server: RunningServer) -> list[str]:
    return ["--address", f"127.0.0.1:{server.port}", "--no-progress"]


def _events_stored(data_dir: Path) -> list[tuple[str, str, str, float | None]]:
    return sorted(
        (r["user"], r["item"], r["time"], r["weight"]) for r in event_rows(data_dir, None)
    )


def _expected_events(ratings: list[dict[str, str]]) -> list[tuple[str, str, str, float | None]]:
    return sorted(
        (
            r["userId"],
            r["movieId"],
            datetime.fromtimestamp(int(r["timestamp"]), UTC).isoformat(),
            float(r["rating"]),
        )
        for r in ratings
    )


RATING_MAP = ["--map", "user=userId", "--map", "item=movieId", "--map", "time=timestamp"]
RATING_MAP += ["--map", "weight=rating"]


async def test_round_trip_csv_jsonl_parquet(
    data_only_server: RunningServer,
    tmp_path: Path,
    movielens: tuple[list[dict[str, str]], list[dict[str, str]]],
) -> None:
    movies, ratings = movielens
    address = _address(data_only_server)
    data_dir = tmp_path / "data"
    # Items as MovieLens ships them (CSV), mapped: genres are tags ("|"-separated).
    movies_csv = _write_csv(tmp_path / "movies.csv", movies)
    mapping = ["--map", "id=movieId", "--map", "tags=genres"]
    assert await _cli("import", "items", str(movies_csv), *mapping, *address) == 0
    # Events: half as JSON Lines, half as Parquet, both in MovieLens' own columns.
    half = len(ratings) // 2
    first = _write_jsonl(tmp_path / "ratings.jsonl", [dict(r) for r in ratings[:half]])
    second = tmp_path / "ratings.parquet"
    pq.write_table(
        pa.table(
            {
                "userId": [int(r["userId"]) for r in ratings[half:]],
                "movieId": [int(r["movieId"]) for r in ratings[half:]],
                "rating": [float(r["rating"]) for r in ratings[half:]],
                "timestamp": [int(r["timestamp"]) for r in ratings[half:]],
            }
        ),
        second,
    )
    assert await _cli("import", "events", str(first), *RATING_MAP, *address) == 0
    assert await _cli("import", "events", str(second), *RATING_MAP, *address) == 0

    # Items back out, in each format, equal what went in.
    expected_items = {
        m["movieId"]: (m["title"], [g for g in m["genres"].split("|") if g]) for m in movies
    }
    for fmt in ("jsonl", "csv", "parquet"):
        out = tmp_path / f"items-out.{fmt}"
        assert await _cli("export", "items", "--out", str(out), *address[:2]) == 0
        if fmt == "jsonl":
            rows = [json.loads(line) for line in out.read_text().splitlines()]
        elif fmt == "parquet":
            rows = pq.read_table(out).to_pylist()
        else:
            with out.open(encoding="utf-8") as handle:
                rows = list(csv.DictReader(handle))
            for row in rows:
                row["tags"] = [t for t in row["tags"].split("|") if t]
        assert {str(r["id"]): (r["title"], list(r["tags"])) for r in rows} == expected_items

    # Events back out (from the store: the API cannot list events) equal the ratings.
    events_out = tmp_path / "events-out.csv"
    assert (
        await _cli("export", "events", "--out", str(events_out), "--data-dir", str(data_dir)) == 0
    )
    assert _events_stored(data_dir) == _expected_events(ratings)
    # ...and both exports load a second server as they are (their own columns, type names,
    # ISO times), which then holds the same catalog and events.
    second_server = await start_server(data_only_settings(tmp_path / "data2"))
    try:
        address2 = _address(second_server)
        items_out = tmp_path / "items-out.parquet"
        assert await _cli("import", "items", str(items_out), *address2) == 0
        assert await _cli("import", "events", str(events_out), *address2) == 0
        assert _events_stored(tmp_path / "data2") == _expected_events(ratings)
        listed = await second_server.stubs.catalog.ListItems(
            catalog_pb2.ListItemsRequest(page_size=1000)
        )
        assert {i.name.removeprefix("items/"): (i.title, list(i.tags)) for i in listed.items} == (
            expected_items
        )
    finally:
        await second_server.stop()

    # Trees: build one user's tree, export it, one row per node.
    user = f"users/{ratings[0]['userId']}"
    await data_only_server.stubs.interests.BuildInterestTree(
        interest_pb2.BuildInterestTreeRequest(user=user)
    )
    trees_out = tmp_path / "trees.jsonl"
    assert (
        await _cli(
            "export", "trees", "--out", str(trees_out), "--data-dir", str(data_dir), *address[:2]
        )
        == 0
    )
    nodes = [json.loads(line) for line in trees_out.read_text().splitlines()]
    assert nodes and {n["user"] for n in nodes} == {ratings[0]["userId"]}
    assert {n["level"] for n in nodes} >= {1}
    assert all(n["evidence_items"] for n in nodes)


async def test_bad_rows_are_reported_by_line_and_their_batch_is_not_stored(
    data_only_server: RunningServer,
    tmp_path: Path,
    movielens: tuple[list[dict[str, str]], list[dict[str, str]]],
    capsys: pytest.CaptureFixture[str],
) -> None:
    movies, ratings = movielens
    address = _address(data_only_server)
    data_dir = tmp_path / "data"
    movies_csv = _write_csv(tmp_path / "movies.csv", movies)
    assert await _cli("import", "items", str(movies_csv), "--map", "id=movieId", *address) == 0
    rows = [dict(r) for r in ratings[:200]]
    rows[74]["timestamp"] = "yesterday"  # line 76 of the CSV (the header is line 1)
    rows[130]["movieId"] = "999999999"  # not in the catalog: the server rejects that batch
    bad = _write_csv(tmp_path / "ratings.csv", rows)
    capsys.readouterr()
    code = await _cli("import", "events", str(bad), *RATING_MAP, "--batch-size", "50", *address)
    assert code == 1
    err = capsys.readouterr().err
    assert "line 76: " in err and "yesterday" in err
    assert "line 132: item '999999999' does not exist" in err
    # Batches 2 (lines 52-101) and 3 (102-151) stored nothing; batches 1 and 4 all.
    kept = rows[:50] + rows[150:]
    assert _events_stored(data_dir) == _expected_events(kept)

    # Fixed in place and imported again: the two batches are stored, the others replayed.
    rows[74]["timestamp"] = ratings[74]["timestamp"]
    rows[130]["movieId"] = ratings[130]["movieId"]
    fixed = _write_csv(tmp_path / "ratings.csv", rows)
    code = await _cli("import", "events", str(fixed), *RATING_MAP, "--batch-size", "50", *address)
    assert code == 0
    assert "100 events recorded from 200 rows, batches already imported: 2" in (
        capsys.readouterr().err
    )
    assert _events_stored(data_dir) == _expected_events(ratings[:200])


async def test_a_rerun_stores_nothing_twice(
    data_only_server: RunningServer,
    tmp_path: Path,
    movielens: tuple[list[dict[str, str]], list[dict[str, str]]],
    capsys: pytest.CaptureFixture[str],
) -> None:
    movies, ratings = movielens
    address = _address(data_only_server)
    data_dir = tmp_path / "data"
    # Items as JSON Lines in the import's own column names, categories as a list.
    items = [
        {"id": m["movieId"], "title": m["title"], "categories": ["Movies"], "tags": m["genres"]}
        for m in movies
    ]
    items_file = _write_jsonl(tmp_path / "items.jsonl", items)
    assert await _cli("import", "items", str(items_file), *address) == 0
    events_file = _write_csv(tmp_path / "ratings.csv", ratings)
    args = ("import", "events", str(events_file), *RATING_MAP, "--batch-size", "64", *address)
    assert await _cli(*args) == 0
    once = _events_stored(data_dir)
    assert len(once) == len(ratings)
    capsys.readouterr()
    assert await _cli(*args) == 0  # as after a crash: the same command again
    assert f"0 events recorded from {len(ratings)} rows, batches already imported: 5" in (
        capsys.readouterr().err
    )
    assert _events_stored(data_dir) == once
    assert await _cli("import", "items", str(items_file), *address) == 0
    listed = await data_only_server.stubs.catalog.ListItems(
        catalog_pb2.ListItemsRequest(page_size=1000)
    )
    assert len(listed.items) == len(movies)
    assert all(list(item.categories) == ["Movies"] for item in listed.items)


async def test_a_missing_column_names_the_mapping_flag(
    data_only_server: RunningServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _write_csv(tmp_path / "items.csv", [{"movieId": "1", "title": "Toy Story"}])
    assert await _cli("import", "items", str(path), *_address(data_only_server)) == 2
    assert "no column for id" in capsys.readouterr().err


async def test_unreadable_lines_are_reported_by_number(
    data_only_server: RunningServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    address = _address(data_only_server)
    broken_csv = tmp_path / "items.csv"
    broken_csv.write_text("id,title\na,Alpha\nb,Beta,extra\nc,Gamma\nd,Delta\n")
    broken_jsonl = tmp_path / "items.jsonl"
    broken_jsonl.write_text('{"id": "e", "title": "Epsilon"}\n\n{"id": "f", \n')
    capsys.readouterr()
    assert await _cli("import", "items", str(broken_csv), "--batch-size", "2", *address) == 1
    assert await _cli("import", "items", str(broken_jsonl), *address) == 1
    err = capsys.readouterr().err
    assert "line 3: 3 fields, 2 expected" in err
    assert "line 3: not JSON" in err
    listed = await data_only_server.stubs.catalog.ListItems(catalog_pb2.ListItemsRequest())
    # Lines 2-3 were one batch (not stored), lines 4-5 the next; the JSON Lines file's only
    # batch held the bad line 3.
    assert [item.name for item in listed.items] == ["items/c", "items/d"]
