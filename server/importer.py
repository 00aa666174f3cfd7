"""`interest-tree import items|events FILE`: CSV, JSON Lines or Parquet into a running server.

- **Reading.** CSV and Parquet are read with pyarrow. JSON Lines is read line by line with the
  standard `json` module, so that a line that is not JSON is reported by its number instead of
  failing the whole file.
- **Columns.** Each target field (`ITEM_FIELDS`, `EVENT_FIELDS`) is read from the column of its
  own name, or of one of its aliases, unless `--map target=source` names another column.
  A list field (`categories`, `tags`) is a list column or a string split on `|`.
- **Batches, all or nothing.** Rows are sent in batches through the Python SDK. Every row of a
  batch is validated (with the service's own domain models) before the batch is sent; a batch
  with a bad row is not sent at all, and the row is reported as `LINE: message`. A batch the
  server rejects (an event naming an item not in the catalog) stores nothing either, and its
  field violations are reported by line too. The import goes on with the next batch and exits 1.
- **Resuming.** Each events batch is sent with a `request_id` derived from its content and its
  index in the file, so running the same import again after a crash (or twice) records no
  event twice: the batches already stored are replayed as no-ops. Rerun with the same
  `--batch-size`, and fix a bad row in place rather than deleting it: a batch whose rows
  changed is a new batch (so a fixed batch is stored), and so is every batch after a
  deleted row. UpsertItems creates or
  replaces items by id, so an items import is idempotent as it is.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import sys
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
from google.protobuf.timestamp_pb2 import Timestamp
from interesttree import AsyncInterestTreeClient, InterestTreeError
from interesttree.v1 import catalog_pb2, interest_pb2
from pydantic import ValidationError
from tqdm import tqdm

from taxonomy.models import Event, EventType, Item

Kind = Literal["items", "events"]
Format = Literal["csv", "jsonl", "parquet"]
FORMATS: tuple[Format, ...] = ("csv", "jsonl", "parquet")
EXTENSIONS: dict[str, Format] = {
    ".csv": "csv",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "jsonl",
    ".parquet": "parquet",
    ".pq": "parquet",
}
LIST_SEPARATOR = "|"

# Target field → the column names tried when no --map names one (the field's own name first).
ITEM_FIELDS: dict[str, tuple[str, ...]] = {
    "id": ("id", "item_id", "item", "name"),
    "title": ("title",),
    "description": ("description",),
    "categories": ("categories",),
    "tags": ("tags",),
    "vector": ("vector",),
}
EVENT_FIELDS: dict[str, tuple[str, ...]] = {
    "user": ("user", "user_id"),
    "item": ("item", "item_id"),
    "type": ("type", "event_type"),
    "time": ("time", "event_time", "timestamp"),
    "weight": ("weight",),
}
# Rows whose keys are the field names themselves.
NAMED: dict[Kind, dict[str, str]] = {
    "items": {name: name for name in ITEM_FIELDS},
    "events": {name: name for name in EVENT_FIELDS},
}
REQUIRED: dict[Kind, tuple[str, ...]] = {
    "items": ("id", "title"),
    "events": ("user", "item", "time"),
}
# The API's limits are 1,000 items and 10,000 events a request.
DEFAULT_BATCH: dict[Kind, int] = {"items": 500, "events": 1000}
MAX_BATCH: dict[Kind, int] = {"items": 1000, "events": 10_000}
# Per request: upserting embeds every item's text, which on a CPU takes seconds per hundred.
BATCH_TIMEOUT_S: dict[Kind, float] = {"items": 600.0, "events": 120.0}


class ImportFileError(Exception):
    """The file cannot be imported at all (unknown format, a required column missing)."""


@dataclass
class Row:
    """One row of the file and where it is: `line` is the file's line number for CSV and
    JSON Lines (the CSV header is line 1), the 1-based row number for Parquet."""

    line: int
    values: dict[str, Any] | None
    error: str | None = None


@dataclass
class ImportReport:
    sent_rows: int = 0
    """Rows of batches the server accepted (replayed batches included)."""
    stored: int = 0
    """Events recorded by this run (0 for replayed batches), or items upserted."""
    replayed_batches: int = 0
    bad_rows: list[tuple[int, str]] = field(default_factory=list)
    skipped_batches: int = 0

    @property
    def ok(self) -> bool:
        return not self.bad_rows


def file_format(path: Path, given: str | None) -> Format:
    if given:
        for known in FORMATS:
            if given == known:
                return known
        raise ImportFileError(f"unknown format {given!r} (one of {', '.join(FORMATS)})")
    found = EXTENSIONS.get(path.suffix.lower())
    if found is None:
        raise ImportFileError(f"cannot tell the format of {path.name}: pass --format")
    return found


def parse_mapping(pairs: Sequence[str], kind: Kind) -> dict[str, str]:
    """`target=source` pairs into {target: source}."""
    fields = ITEM_FIELDS if kind == "items" else EVENT_FIELDS
    mapping: dict[str, str] = {}
    for pair in pairs:
        target, sep, source = pair.partition("=")
        if not sep or not target or not source:
            raise ImportFileError(f"--map wants target=source, not {pair!r}")
        if target not in fields:
            raise ImportFileError(f"--map: {kind} have no field {target!r} ({', '.join(fields)})")
        mapping[target] = source
    return mapping


def resolve_columns(
    columns: Sequence[str], kind: Kind, mapping: Mapping[str, str]
) -> dict[str, str]:
    """{target: column of the file} for every target the file has."""
    fields = ITEM_FIELDS if kind == "items" else EVENT_FIELDS
    present = set(columns)
    resolved: dict[str, str] = {}
    for target, aliases in fields.items():
        if target in mapping:
            if mapping[target] not in present:
                raise ImportFileError(
                    f"--map {target}={mapping[target]}: the file has no such column"
                )
            resolved[target] = mapping[target]
            continue
        for alias in aliases:
            if alias in present and alias not in mapping.values():
                resolved[target] = alias
                break
    missing = [target for target in REQUIRED[kind] if target not in resolved]
    if missing:
        raise ImportFileError(
            f"no column for {', '.join(missing)} (columns: {', '.join(columns)}); "
            "name one with --map target=source"
        )
    return resolved


# Reading ------------------------------------------------------------------------------------


def read_rows(path: Path, fmt: Format) -> tuple[list[str], int, Iterator[Row]]:
    """The file's column names, how many rows it has (for the progress bar), and its rows."""
    if fmt == "jsonl":
        with path.open("rb") as handle:
            total = sum(1 for line in handle if line.strip())
        return _jsonl_columns(path), total, _jsonl_rows(path)
    if fmt == "parquet":
        parquet = pq.ParquetFile(path)
        return list(parquet.schema_arrow.names), parquet.metadata.num_rows, _parquet_rows(parquet)
    names, rows = _csv(path)
    return names, len(rows), iter(rows)


def _jsonl_columns(path: Path) -> list[str]:
    columns: dict[str, None] = {}
    with path.open(encoding="utf-8") as lines:
        for text in lines:
            try:
                value = json.loads(text)
            except json.JSONDecodeError:
                continue
            if isinstance(value, dict):
                columns.update(dict.fromkeys(value))
    return list(columns)


def _jsonl_rows(path: Path) -> Iterator[Row]:
    with path.open(encoding="utf-8") as lines:
        for number, text in enumerate(lines, start=1):
            if not text.strip():
                continue
            try:
                value = json.loads(text)
            except json.JSONDecodeError as error:
                yield Row(number, None, f"not JSON: {error.msg}")
                continue
            if not isinstance(value, dict):
                yield Row(number, None, "not a JSON object")
                continue
            yield Row(number, value)


def _parquet_rows(parquet: pq.ParquetFile) -> Iterator[Row]:
    number = 0
    for batch in parquet.iter_batches(batch_size=4096):
        for values in batch.to_pylist():
            number += 1
            yield Row(number, values)


def _csv(path: Path) -> tuple[list[str], list[Row]]:
    """Every column is read as text (no type guessing: an id `007` stays `007`). A row with the
    wrong number of fields is reported by its line rather than failing the file. Line numbers
    count one line per row, so a quoted value holding a newline shifts the lines after it."""
    invalid: list[Row] = []

    def invalid_row(row: pacsv.InvalidRow) -> str:
        line = row.number if row.number is not None else 0
        invalid.append(
            Row(line, None, f"{row.actual_columns} fields, {row.expected_columns} expected")
        )
        return "skip"

    with path.open("rb") as handle:
        header = handle.readline().decode("utf-8-sig").rstrip("\r\n")
    names = next(iter(_split_header(header)), [])
    table = pacsv.read_csv(
        path,
        read_options=pacsv.ReadOptions(use_threads=False),
        parse_options=pacsv.ParseOptions(invalid_row_handler=invalid_row),
        convert_options=pacsv.ConvertOptions(
            column_types={name: pa.string() for name in names},
            strings_can_be_null=False,
            quoted_strings_can_be_null=False,
        ),
    )
    # pyarrow numbers the lines it skipped (read on one thread); the kept rows fill the rest.
    skipped = {row.line for row in invalid}
    rows: list[Row] = []
    line = 1
    for values in table.to_pylist():
        line += 1
        while line in skipped:
            line += 1
        rows.append(Row(line, values))
    return list(table.column_names), sorted(rows + invalid, key=lambda row: row.line)


def _split_header(header: str) -> Iterator[list[str]]:
    import csv

    yield from csv.reader([header])


# Rows to messages ---------------------------------------------------------------------------


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value).strip()


def _strings(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, list | tuple):
        return [_text(v) for v in value if _text(v)]
    text = _text(value)
    if text.startswith("["):
        loaded = json.loads(text)
        if isinstance(loaded, list):
            return [_text(v) for v in loaded if _text(v)]
    return [part.strip() for part in text.split(LIST_SEPARATOR) if part.strip()]


def _floats(value: Any) -> list[float] | None:
    if value is None or value == "":
        return None
    if isinstance(value, str):
        value = json.loads(value) if value.strip().startswith("[") else value.split(LIST_SEPARATOR)
    return [float(v) for v in value]


def _event_type(value: Any) -> EventType:
    text = _text(value)
    if not text:
        return EventType.UNSPECIFIED
    if text.isdigit():
        return EventType(int(text))
    name = text.upper().removeprefix("EVENT_TYPE_")
    try:
        return EventType[name]
    except KeyError:
        names = ", ".join(t.name.lower() for t in EventType)
        raise ValueError(f"unknown event type {text!r} (one of {names})") from None


def _time(value: Any) -> datetime:
    if isinstance(value, datetime):
        return value
    if isinstance(value, int | float) and not isinstance(value, bool):
        return datetime.fromtimestamp(value, UTC)
    text = _text(value)
    if not text:
        raise ValueError("no time")
    try:
        return datetime.fromtimestamp(float(text), UTC)
    except ValueError:
        return datetime.fromisoformat(text.replace("Z", "+00:00"))


def _strip(text: str, prefix: str) -> str:
    return text.removeprefix(prefix)


def to_item(values: Mapping[str, Any], columns: Mapping[str, str]) -> catalog_pb2.Item:
    def get(target: str) -> Any:
        return values.get(columns[target]) if target in columns else None

    item = Item(
        item_id=_strip(_text(get("id")), "items/"),
        title=_text(get("title")),
        description=_text(get("description")),
        categories=_strings(get("categories")),
        tags=_strings(get("tags")),
        vector=_floats(get("vector")),
    )
    return catalog_pb2.Item(
        name=f"items/{item.item_id}",
        title=item.title,
        description=item.description,
        categories=item.categories,
        tags=item.tags,
        vector=item.vector or [],
    )


def to_event(values: Mapping[str, Any], columns: Mapping[str, str]) -> interest_pb2.Event:
    def get(target: str) -> Any:
        return values.get(columns[target]) if target in columns else None

    weight = get("weight")
    event = Event(
        user_id=_strip(_text(get("user")), "users/"),
        item_id=_strip(_text(get("item")), "items/"),
        event_type=_event_type(get("type")),
        event_time=_time(get("time")),
        weight=float(weight) if weight not in (None, "") else None,
    )
    timestamp = Timestamp()
    timestamp.FromDatetime(event.event_time)
    message = interest_pb2.Event(
        user=f"users/{event.user_id}",
        item=f"items/{event.item_id}",
        type=int(event.event_type),  # type: ignore[arg-type]
        event_time=timestamp,
    )
    if event.weight is not None:
        message.weight = event.weight
    return message


def _problem(error: Exception) -> str:
    if isinstance(error, ValidationError):
        return "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'row'}: {e['msg']}" for e in error.errors()
        )
    return str(error)


# Sending ------------------------------------------------------------------------------------

Message = catalog_pb2.Item | interest_pb2.Event


@dataclass
class Batch:
    index: int
    lines: list[int]
    messages: list[Message]
    bad: list[tuple[int, str]]


def batches(
    rows: Iterable[Row], kind: Kind, columns: Mapping[str, str], size: int
) -> Iterator[Batch]:
    convert = to_item if kind == "items" else to_event
    batch = Batch(0, [], [], [])
    for row in rows:
        if row.values is None:
            batch.bad.append((row.line, row.error or "unreadable"))
        else:
            try:
                batch.messages.append(convert(row.values, columns))
                batch.lines.append(row.line)
            except (ValidationError, ValueError, TypeError, OverflowError) as error:
                batch.bad.append((row.line, _problem(error)))
        if len(batch.lines) + len(batch.bad) >= size:
            yield batch
            batch = Batch(batch.index + 1, [], [], [])
    if batch.lines or batch.bad:
        yield batch


def request_id(kind: Kind, batch: Batch) -> str:
    """The idempotency key of a batch: its index and its content, so the same file imported
    again replays every batch already stored, while a batch whose rows changed is new."""
    digest = hashlib.sha256(f"{kind}/{batch.index}/".encode())
    for message in batch.messages:
        data = message.SerializeToString(deterministic=True)
        digest.update(len(data).to_bytes(4, "big") + data)
    return f"import-{digest.hexdigest()[:48]}"


def _line_of(violation_field: str, batch: Batch) -> int | None:
    # "events[3].item" or "items[3].title" → the line of the batch's fourth row.
    head, _, rest = violation_field.partition("[")
    index, _, _ = rest.partition("]")
    if head in ("events", "items") and index.isdigit() and int(index) < len(batch.lines):
        return batch.lines[int(index)]
    return None


async def send_batches(
    client: AsyncInterestTreeClient,
    kind: Kind,
    source: Iterable[Batch],
    report: ImportReport,
    bar: Any,
) -> None:
    for batch in source:
        bar.update(len(batch.lines) + len(batch.bad))
        if batch.bad:
            report.bad_rows.extend(batch.bad)
            report.skipped_batches += 1
            for line, problem in batch.bad:
                bar.write(f"line {line}: {problem}", file=sys.stderr)
            continue
        try:
            if kind == "items":
                upserted = await client.upsert_items(
                    batch.messages,  # type: ignore[arg-type]
                    timeout=BATCH_TIMEOUT_S[kind],
                )
                stored = len(upserted)
            else:
                stored = await client.record_events(
                    batch.messages,  # type: ignore[arg-type]
                    request_id=request_id(kind, batch),
                    timeout=BATCH_TIMEOUT_S[kind],
                )
                if stored == 0:
                    report.replayed_batches += 1
        except InterestTreeError as error:
            if not error.field_violations:
                raise
            report.skipped_batches += 1
            for violation in error.field_violations:
                line = _line_of(violation.field, batch) or 0
                report.bad_rows.append((line, violation.description))
                bar.write(f"line {line}: {violation.description}", file=sys.stderr)
            continue
        report.sent_rows += len(batch.lines)
        report.stored += stored


async def import_file(
    client: AsyncInterestTreeClient,
    kind: Kind,
    path: Path,
    *,
    fmt: str | None = None,
    mapping: Sequence[str] = (),
    batch_size: int | None = None,
    progress: bool = True,
) -> ImportReport:
    """Imports `path` through `client`; raises ImportFileError when the file cannot be read as
    `kind` at all. Bad rows are in the report, not raised."""
    size = batch_size or DEFAULT_BATCH[kind]
    if not 1 <= size <= MAX_BATCH[kind]:
        raise ImportFileError(f"--batch-size must be 1 to {MAX_BATCH[kind]} for {kind}")
    chosen = file_format(path, fmt)
    names, total, rows = read_rows(path, chosen)
    columns = resolve_columns(names, kind, parse_mapping(mapping, kind))
    report = ImportReport()
    with tqdm(
        total=total, unit="row", desc=f"Importing {kind}", file=sys.stderr, disable=not progress
    ) as bar:
        await send_batches(client, kind, batches(rows, kind, columns, size), report, bar)
    return report


async def import_rows(
    client: AsyncInterestTreeClient,
    kind: Kind,
    rows: Iterable[Mapping[str, Any]],
    *,
    batch_size: int | None = None,
) -> ImportReport:
    """Imports rows already in memory, keyed by the field names (`ITEM_FIELDS`,
    `EVENT_FIELDS`), the way `import_file` imports a file's: validated, batched, with the same
    idempotency keys. A row's "line" in the report is its 1-based position."""
    numbered = (Row(number, dict(values)) for number, values in enumerate(rows, start=1))
    report = ImportReport()
    with tqdm(disable=True) as bar:
        chosen = batch_size or DEFAULT_BATCH[kind]
        await send_batches(client, kind, batches(numbered, kind, NAMED[kind], chosen), report, bar)
    return report


async def run_import(
    address: str,
    kind: Kind,
    path: Path,
    *,
    fmt: str | None = None,
    mapping: Sequence[str] = (),
    batch_size: int | None = None,
    api_key: str | None = None,
    tls_ca: bytes | None = None,
    progress: bool = True,
) -> int:
    """The `import` command: 0 when every row was stored, 1 with bad rows, 2 when the file
    cannot be imported. Prints a summary line to stderr."""
    try:
        async with AsyncInterestTreeClient(
            address, api_key=api_key, root_certificates=tls_ca
        ) as client:
            report = await import_file(
                client,
                kind,
                path,
                fmt=fmt,
                mapping=mapping,
                batch_size=batch_size,
                progress=progress,
            )
    except (ImportFileError, OSError, pa.ArrowInvalid) as error:
        print(f"interest-tree import: {error}", file=sys.stderr)
        return 2
    except InterestTreeError as error:
        print(f"interest-tree import: {error}", file=sys.stderr)
        return 2
    noun = "events recorded" if kind == "events" else "items upserted"
    summary = f"{report.stored} {noun} from {report.sent_rows} rows"
    if report.replayed_batches:
        summary += f", batches already imported: {report.replayed_batches}"
    if report.bad_rows:
        summary += (
            f"; {len(report.bad_rows)} bad rows, {report.skipped_batches} batches not stored "
            "(fix them and run the same command again)"
        )
    print(summary, file=sys.stderr)
    return 0 if report.ok else 1


# The command line ---------------------------------------------------------------------------


def add_connection_flags(command: argparse.ArgumentParser) -> None:
    command.add_argument("--address", default="127.0.0.1:50051", help="host:port of the server")
    command.add_argument(
        "--api-key",
        default=os.environ.get("INTEREST_TREE_API_KEY"),
        help="a key (default: $INTEREST_TREE_API_KEY), for a server with --require-auth",
    )
    command.add_argument("--tls-ca", type=Path, default=None, help="PEM CA: connect over TLS")


def add_import_command(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    command = commands.add_parser(
        "import",
        help="load items or events from CSV, JSON Lines or Parquet into a running server",
    )
    command.add_argument("kind", choices=["items", "events"])
    command.add_argument("file", type=Path)
    command.add_argument(
        "--format", choices=FORMATS, default=None, help="default: from the file's extension"
    )
    command.add_argument(
        "--map",
        action="append",
        default=[],
        metavar="TARGET=SOURCE",
        help="read field TARGET from column SOURCE; items: "
        + ", ".join(ITEM_FIELDS)
        + "; events: "
        + ", ".join(EVENT_FIELDS),
    )
    command.add_argument(
        "--batch-size", type=int, default=None, help="rows per request (items 500, events 1000)"
    )
    command.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_connection_flags(command)


def import_main(args: argparse.Namespace) -> int:
    return asyncio.run(
        run_import(
            args.address,
            args.kind,
            args.file,
            fmt=args.format,
            mapping=args.map,
            batch_size=args.batch_size,
            api_key=args.api_key,
            tls_ca=args.tls_ca.read_bytes() if args.tls_ca else None,
            progress=not args.no_progress,
        )
    )
