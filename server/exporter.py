"""`interest-tree export items|events|trees --out FILE`: the data back out, as JSON Lines, CSV
or Parquet, in the columns `interest-tree import` reads.

- **items** come over the API (ListItems, every page).
- **events** cannot be listed over the API (it has no ListEvents), so they are read from the
  store itself: `--data-dir` (SQLite, safe beside a running server) or `--store-url`
  (PostgreSQL). Only the default tenant's store is read.
- **trees** are each user's latest revision over the API (GetInterestTree), one row per node.
  The users are `--user` ids, or, with `--data-dir`/`--store-url`, every user with events.

In CSV a list (categories, tags, evidence items) is joined with `|`, as the import splits it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
from interesttree import AsyncInterestTreeClient, InterestTreeError, NotFoundError
from interesttree.v1 import interest_pb2

from server.importer import (
    FORMATS,
    LIST_SEPARATOR,
    Format,
    ImportFileError,
    add_connection_flags,
    file_format,
)
from taxonomy.models import EventType

What = Literal["items", "events", "trees"]
Rows = list[dict[str, Any]]

ITEM_COLUMNS = ("id", "title", "description", "categories", "tags", "update_time")
EVENT_COLUMNS = ("user", "item", "type", "time", "weight")
TREE_COLUMNS = (
    "user",
    "revision",
    "create_time",
    "event_count",
    "model",
    "node_id",
    "parent_id",
    "level",
    "label",
    "explanation",
    "weight",
    "evidence_items",
    "label_source",
    "explanation_source",
    "taxonomy_node",
)


def _iso(value: datetime | None) -> str | None:
    return value.astimezone(UTC).isoformat() if value is not None else None


async def item_rows(client: AsyncInterestTreeClient) -> Rows:
    rows: Rows = []
    async for item in client.iter_items(page_size=1000):
        rows.append(
            {
                "id": item.name.removeprefix("items/"),
                "title": item.title,
                "description": item.description,
                "categories": list(item.categories),
                "tags": list(item.tags),
                "update_time": _iso(item.update_time.ToDatetime(UTC))
                if item.HasField("update_time")
                else None,
            }
        )
    return rows


def event_rows(data_dir: Path | None, store_url: str | None) -> Rows:
    """Every event of the store, user by user in time order."""
    rows: Rows = []
    for user_id, events in _sequences(data_dir, store_url):
        for event in events:
            rows.append(
                {
                    "user": user_id,
                    "item": event.item_id,
                    "type": EventType(event.event_type).name.lower(),
                    "time": _iso(event.event_time),
                    "weight": event.weight,
                }
            )
    return rows


def _sequences(data_dir: Path | None, store_url: str | None) -> Iterator[tuple[str, list[Any]]]:
    from server.app import open_store
    from server.config import Settings

    if data_dir is None and store_url is None:
        raise ImportFileError(
            "events cannot be listed over the API: pass --data-dir (or --store-url) of the server"
        )
    overrides: dict[str, Any] = {"store_url": store_url}
    if data_dir is not None:
        if store_url is None and not (data_dir / "interest-tree.sqlite3").exists():
            raise ImportFileError(f"no store in {data_dir} (interest-tree.sqlite3)")
        overrides["data_dir"] = data_dir
    store = open_store(Settings(**overrides))
    try:
        yield from store.all_sequences()
    finally:
        store.close()


def store_user_ids(data_dir: Path | None, store_url: str | None) -> list[str]:
    return [user_id for user_id, _ in _sequences(data_dir, store_url)]


async def tree_rows(client: AsyncInterestTreeClient, users: Sequence[str]) -> Rows:
    rows: Rows = []
    for user_id in users:
        user = user_id if user_id.startswith("users/") else f"users/{user_id}"
        try:
            tree = await client.get_interest_tree(user)
        except NotFoundError:
            continue  # no tree built yet
        common = {
            "user": user.removeprefix("users/"),
            "revision": tree.revision,
            "create_time": _iso(tree.create_time.ToDatetime(UTC)),
            "event_count": tree.event_count,
            "model": tree.model,
        }
        for node in tree.nodes:
            rows.append(
                {
                    **common,
                    "node_id": node.id,
                    "parent_id": node.parent_id,
                    "level": node.level,
                    "label": node.label,
                    "explanation": node.explanation,
                    "weight": node.weight,
                    "evidence_items": [e.removeprefix("items/") for e in node.evidence_items],
                    "label_source": _source(node.label_source),
                    "explanation_source": _source(node.explanation_source),
                    "taxonomy_node": node.taxonomy_node,
                }
            )
    return rows


def _source(value: int) -> str:
    return interest_pb2.TextSource.Name(value).removeprefix("TEXT_SOURCE_").lower()  # type: ignore[arg-type]


def write_rows(rows: Rows, columns: Sequence[str], out: Path, fmt: Format) -> None:
    """Writes `rows` (dicts with `columns`) to `out`; the file is replaced only once whole."""
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(out.name + ".partial")
    if fmt == "jsonl":
        with partial.open("w", encoding="utf-8") as handle:
            for row in rows:
                handle.write(json.dumps({c: row.get(c) for c in columns}, ensure_ascii=False))
                handle.write("\n")
    elif fmt == "parquet":
        pq.write_table(_table(rows, columns, join_lists=False), partial)
    else:
        pacsv.write_csv(_table(rows, columns, join_lists=True), partial)
    partial.replace(out)


def _table(rows: Rows, columns: Sequence[str], *, join_lists: bool) -> pa.Table:
    data: dict[str, list[Any]] = {c: [row.get(c) for row in rows] for c in columns}
    if join_lists:
        for values in data.values():
            for i, value in enumerate(values):
                if isinstance(value, list):
                    values[i] = LIST_SEPARATOR.join(value)
    arrays = {c: pa.array(v) if rows else pa.array([], pa.string()) for c, v in data.items()}
    return pa.table(arrays)


async def run_export(
    address: str,
    what: What,
    out: Path,
    *,
    fmt: str | None = None,
    users: Sequence[str] = (),
    data_dir: Path | None = None,
    store_url: str | None = None,
    api_key: str | None = None,
    tls_ca: bytes | None = None,
) -> int:
    """The `export` command: 0 once the file is written, 2 when it cannot be."""
    rows: Rows
    columns: Sequence[str]
    try:
        chosen = file_format(out, fmt)
        if what == "events":
            rows, columns = event_rows(data_dir, store_url), EVENT_COLUMNS
        else:
            async with AsyncInterestTreeClient(
                address, api_key=api_key, root_certificates=tls_ca
            ) as client:
                if what == "items":
                    rows, columns = await item_rows(client), ITEM_COLUMNS
                else:
                    chosen_users = list(users) or store_user_ids(data_dir, store_url)
                    rows, columns = await tree_rows(client, chosen_users), TREE_COLUMNS
        write_rows(rows, columns, out, chosen)
    except (ImportFileError, InterestTreeError, OSError) as error:
        print(f"interest-tree export: {error}", file=sys.stderr)
        return 2
    print(f"{len(rows)} {what} rows written to {out}", file=sys.stderr)
    return 0


def add_export_command(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    command = commands.add_parser(
        "export", help="write the catalog, the events or the trees to JSON Lines, CSV or Parquet"
    )
    command.add_argument("what", choices=["items", "events", "trees"])
    command.add_argument("--out", type=Path, required=True, help="the file to write")
    command.add_argument(
        "--format", choices=FORMATS, default=None, help="default: from the file's extension"
    )
    command.add_argument(
        "--data-dir",
        type=Path,
        default=None,
        help="the server's data directory: events are read from its store (and trees' users)",
    )
    command.add_argument("--store-url", default=None, help="postgresql://… instead of --data-dir")
    command.add_argument(
        "--user", action="append", default=[], help="trees: this user's (repeatable)"
    )
    add_connection_flags(command)


def export_main(args: argparse.Namespace) -> int:
    return asyncio.run(
        run_export(
            args.address,
            args.what,
            args.out,
            fmt=args.format,
            users=args.user,
            data_dir=args.data_dir,
            store_url=args.store_url,
            api_key=args.api_key,
            tls_ca=args.tls_ca.read_bytes() if args.tls_ca else None,
        )
    )
