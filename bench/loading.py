"""How the benchmarks load their data: the way a user loads theirs, with `interest-tree import`.

A bench turns the part of its data that the service may see (the catalog, and the history of
the pass: never a held-out item) into rows keyed by the import's field names (`id`, `title`,
`description`, `categories`, `tags`, `vector`; `user`, `item`, `type`, `time`, `weight`) and
loads them through the import command's own functions in server/importer.py:

- `load_files`: the dataset benches (MovieLens, Beauty; Magazine through `load_engine`) write
  JSON Lines files in a temporary directory and import each with `import_file`, as a user
  would run `interest-tree import items|events FILE`;
- `import_memory`, `load_memory_at`: synthetic data made in memory goes through `import_rows`,
  which validates and batches the same way without a file;
- `load_engine`: a bench that opens an engine of its own serves it on a loopback port for the
  import (`serving`).

A row leaves out what the old requests left unset: an event without `type` is recorded as
EVENT_TYPE_UNSPECIFIED, one without `weight` has none. Every loader raises LoadError unless
every row was stored, and times the imports alone ("upsert", "events"), not the writing of
the files.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import tempfile
import time
from collections.abc import AsyncIterator, Iterable, Mapping
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health
from interesttree import AsyncInterestTreeClient

from server.app import create_server
from server.importer import ImportReport, Kind, import_file, import_rows
from taxonomy.engine import InterestEngine
from taxonomy.models import Event, EventType, Item

Rows = Iterable[Mapping[str, Any]]

ITEM_BATCH = 500
EVENT_BATCH = 10_000
"""The batch sizes the benchmarks have always sent (the API's limit for events)."""
BATCH: dict[Kind, int] = {"items": ITEM_BATCH, "events": EVENT_BATCH}
TIMING: dict[Kind, str] = {"items": "upsert", "events": "events"}
"""The name each bench prints the time of an import under."""


class LoadError(RuntimeError):
    """The import stored less than it was given."""


def write_jsonl(path: Path, rows: Rows) -> int:
    """Writes `rows` one JSON object a line; returns how many."""
    count = 0
    with path.open("w", encoding="utf-8") as handle:
        for row in rows:
            handle.write(json.dumps(row, ensure_ascii=False, separators=(",", ":")) + "\n")
            count += 1
    return count


def client_for(channel: grpc.aio.Channel, api_key: str | None = None) -> AsyncInterestTreeClient:
    """A client on a channel the bench owns (closing the client leaves the channel open)."""
    return AsyncInterestTreeClient(channel, api_key=api_key)


def _check(kind: Kind, report: ImportReport, rows: int, where: str) -> None:
    if not report.ok or report.sent_rows != rows:
        bad = "; ".join(f"row {line}: {why}" for line, why in report.bad_rows[:5])
        raise LoadError(
            f"importing {kind} from {where}: {report.sent_rows} of {rows} rows stored"
            + (f" ({len(report.bad_rows)} bad: {bad})" if bad else "")
        )


async def import_jsonl(
    client: AsyncInterestTreeClient,
    kind: Kind,
    rows: Rows,
    directory: Path,
    *,
    batch_size: int | None = None,
) -> float:
    """Writes `rows` to `directory/{kind}.jsonl` and imports the file with `import_file`;
    returns the seconds the import took (writing the file not counted). Raises LoadError
    unless every row was stored."""
    path = directory / f"{kind}.jsonl"
    count = write_jsonl(path, rows)
    started = time.perf_counter()
    report = await import_file(
        client, kind, path, batch_size=batch_size or BATCH[kind], progress=False
    )
    elapsed = time.perf_counter() - started
    _check(kind, report, count, str(path))
    return elapsed


async def import_memory(
    client: AsyncInterestTreeClient,
    kind: Kind,
    rows: Rows,
    *,
    batch_size: int | None = None,
) -> float:
    """Imports rows generated in memory with `import_rows`; returns the seconds it took.
    Raises LoadError unless every row was stored."""
    listed = list(rows)
    started = time.perf_counter()
    report = await import_rows(client, kind, listed, batch_size=batch_size or BATCH[kind])
    elapsed = time.perf_counter() - started
    _check(kind, report, len(listed), "memory")
    return elapsed


async def load_files(
    channel: grpc.aio.Channel,
    items: Rows,
    events: Rows,
    *,
    api_key: str | None = None,
    directory: Path | None = None,
) -> dict[str, float]:
    """Imports the catalog, then the events, each from a JSON Lines file (in `directory`, or
    in a temporary one removed afterwards); returns {"upsert": s, "events": s}."""
    timings: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="interest-tree-bench-") as tmp:
        where = directory or Path(tmp)
        where.mkdir(parents=True, exist_ok=True)
        async with client_for(channel, api_key) as client:
            timings[TIMING["items"]] = await import_jsonl(client, "items", items, where)
            timings[TIMING["events"]] = await import_jsonl(client, "events", events, where)
    return timings


def load_memory_at(
    address: str, items: Rows, events: Rows, *, api_key: str | None = None
) -> dict[str, float]:
    """For a bench without an event loop: imports rows made in memory (`import_rows`) into the
    server at `address` over a channel of its own; returns {"upsert": s, "events": s}."""

    async def load() -> dict[str, float]:
        async with AsyncInterestTreeClient(address, api_key=api_key) as client:
            return {
                TIMING["items"]: await import_memory(client, "items", items),
                TIMING["events"]: await import_memory(client, "events", events),
            }

    return asyncio.run(load())


# Benches that open an engine of their own ----------------------------------------------------


def item_row(item: Item) -> dict[str, Any]:
    """A domain item as a row of `interest-tree import items`."""
    row: dict[str, Any] = {"id": item.item_id, "title": item.title}
    if item.description:
        row["description"] = item.description
    if item.categories:
        row["categories"] = list(item.categories)
    if item.tags:
        row["tags"] = list(item.tags)
    if item.vector is not None:
        row["vector"] = list(item.vector)
    return row


def event_row(event: Event) -> dict[str, Any]:
    """A domain event as a row of `interest-tree import events` (the time in ISO 8601, to the
    microsecond)."""
    row: dict[str, Any] = {"user": event.user_id, "item": event.item_id}
    if event.event_type is not EventType.UNSPECIFIED:
        row["type"] = EventType(event.event_type).name.lower()
    row["time"] = event.event_time.isoformat()
    if event.weight is not None:
        row["weight"] = event.weight
    return row


@contextlib.asynccontextmanager
async def serving(engine: InterestEngine) -> AsyncIterator[grpc.aio.Channel]:
    """A loopback gRPC server (`create_server`, every service) around an engine the bench
    opened itself, and a channel to it: so that the engine is loaded the way a server is."""
    server, port = create_server("127.0.0.1:0", engine, health.aio.HealthServicer())
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            yield channel
    finally:
        await server.stop(1)


async def load_engine(
    engine: InterestEngine, items: Iterable[Item], events: Iterable[Event]
) -> dict[str, float]:
    """Imports domain items and events into `engine` from JSON Lines files, through a loopback
    server around it (`serving`); returns {"upsert": s, "events": s}."""
    async with serving(engine) as channel:
        return await load_files(
            channel, (item_row(item) for item in items), (event_row(e) for e in events)
        )
