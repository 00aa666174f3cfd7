"""The on-disk format of an HnswIndex: an hnswlib binary committed by a JSON sidecar.

A directory holds ``index.json`` (the sidecar), the one ``index-<32 hex>.bin`` it names, and an
advisory lock file. A save writes a binary under a fresh name, checks it, and commits it by
atomically replacing the sidecar; any other binary or temporary file is garbage from an older
save or a crash and is removed once the new sidecar is durable.
"""

from __future__ import annotations

import contextlib
import fcntl
import mmap
import os
import re
import struct
import uuid
from collections.abc import Collection, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import hnswlib
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from index.atomic import atomic_write, fsync_directory, fsync_file, leftover_temp_files
from index.validation import Space

__all__ = [
    "SIDECAR_NAME",
    "CorruptIndexError",
    "IndexParams",
    "IndexState",
    "Space",
    "load_files",
    "save_files",
]

SIDECAR_NAME = "index.json"
_BINARY_PREFIX = "index-"
_BINARY_SUFFIX = ".bin"
_BINARY_NAME = re.compile(r"^index-[0-9a-f]{32}\.bin$")
_LOCK_NAME = ".index.lock"


class CorruptIndexError(ValueError):
    """A saved index exists but its sidecar or binary cannot be trusted."""


class IndexParams(BaseModel):
    """Construction and search parameters; persisted in the sidecar so a load rebuilds them."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    dim: int = Field(gt=0)
    space: Space = "cosine"
    # hnswlib draws levels with mult = 1 / ln(M), which is infinite for M = 1.
    m: int = Field(default=16, ge=2)
    ef_construction: int = Field(default=200, ge=1)
    ef_search: int = Field(default=64, ge=1)
    initial_capacity: int = Field(default=1024, ge=1)


@dataclass(frozen=True)
class IndexState:
    """What the wrapper keeps beside the native graph: its id mapping and tombstones."""

    params: IndexParams
    labels: Mapping[int, str]
    deleted: Collection[str]
    next_label: int


class _Sidecar(BaseModel):
    """The commit record of a save: only a binary named here is part of the index."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    format_version: Literal[1]
    params: IndexParams
    dim: int = Field(gt=0)
    space: Space
    labels: dict[int, str]
    deleted: list[str]
    next_label: int = Field(ge=0)
    binary: str = Field(pattern=_BINARY_NAME.pattern)
    element_count: int = Field(ge=0)
    capacity: int = Field(ge=1)

    @model_validator(mode="after")
    def _consistent(self) -> _Sidecar:
        if self.dim != self.params.dim or self.space != self.params.space:
            raise ValueError("dim/space disagree with params")
        if len(self.labels) != self.element_count:
            raise ValueError(f"{len(self.labels)} labels for {self.element_count} elements")
        if len(set(self.labels.values())) != len(self.labels):
            raise ValueError("an id maps to more than one label")
        if any(label < 0 or label >= self.next_label for label in self.labels):
            raise ValueError("a label is outside [0, next_label)")
        known = set(self.labels.values())
        if not set(self.deleted) <= known:
            raise ValueError("a deleted id has no label")
        if len(set(self.deleted)) != len(self.deleted):
            raise ValueError("duplicate deleted ids")
        return self


# The header hnswlib 0.8 saveIndex writes, field by field without padding: offsetLevel0,
# max_elements, cur_element_count, size_data_per_element, label_offset, offsetData (size_t),
# maxlevel (int), enterpoint_node (uint32), maxM, maxM0, M (size_t), mult (double),
# ef_construction (size_t). Level-0 records follow, then one length-prefixed link list each.
_HNSW_HEADER = struct.Struct("=QQQQQQiIQQQdQ")
_LINK_LIST_SIZE = struct.Struct("=I")


def _verify_binary(path: Path, element_count: int) -> None:
    """Walk the file the way hnswlib's loadIndex does before a sidecar may point at it.

    hnswlib's saveIndex writes through an unchecked std::ofstream, so a full disk produces a
    short file and no error. Committing that would replace a good index with an unloadable one.
    """
    with open(path, "rb") as handle:
        size = os.fstat(handle.fileno()).st_size
        if size < _HNSW_HEADER.size:
            raise OSError(f"{path.name}: short hnswlib header ({size} bytes)")
        with mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as data:
            header = _HNSW_HEADER.unpack_from(data, 0)
            count, per_element = header[2], header[3]
            if count != element_count:
                raise OSError(f"{path.name}: holds {count} elements, expected {element_count}")
            position = _HNSW_HEADER.size + count * per_element
            for _ in range(count):
                if position + _LINK_LIST_SIZE.size > size:
                    raise OSError(f"{path.name}: truncated link lists")
                (link_bytes,) = _LINK_LIST_SIZE.unpack_from(data, position)
                position += _LINK_LIST_SIZE.size + link_bytes
    if position != size:
        raise OSError(f"{path.name}: {size} bytes on disk, hnswlib layout implies {position}")


@contextlib.contextmanager
def _directory_lock(directory: Path, *, exclusive: bool) -> Iterator[None]:
    """Serialise savers (and keep loaders off a binary that a saver is about to delete).

    An advisory flock. It binds to the open file description, so it serialises savers in other
    processes and also threads of this one (which save under the shared side of the wrapper's
    lock, so two of them may save at once).
    """
    fd: int | None = None
    try:
        fd = os.open(directory / _LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError:
        # A read-only directory cannot change under a loader, so it needs no lock.
        if exclusive:
            raise
    try:
        if fd is not None:
            fcntl.flock(fd, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
        yield
    finally:
        if fd is not None:
            os.close(fd)


def save_files(directory: Path, native: Any, state: IndexState) -> None:
    """Atomically replace the index saved in ``directory`` with ``native`` and ``state``.

    The binary goes to a fresh file name and the sidecar naming it is swapped in with
    ``os.replace``; that rename is the commit point, so a crash at any moment leaves either
    the old or the new index loadable. Unreferenced binaries are removed afterwards. The
    caller must keep ``native`` and ``state`` from changing until this returns.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    with _directory_lock(directory, exclusive=True):
        binary_name = f"{_BINARY_PREFIX}{uuid.uuid4().hex}{_BINARY_SUFFIX}"
        binary_path = directory / binary_name
        sidecar = _Sidecar(
            format_version=1,
            params=state.params,
            dim=state.params.dim,
            space=state.params.space,
            labels=dict(state.labels),
            deleted=sorted(state.deleted),
            next_label=state.next_label,
            binary=binary_name,
            element_count=int(native.get_current_count()),
            capacity=int(native.get_max_elements()),
        )
        try:
            native.save_index(str(binary_path))
            fsync_file(binary_path)
            _verify_binary(binary_path, sidecar.element_count)
            # The binary's directory entry must be durable before a sidecar can name it.
            fsync_directory(directory)
            atomic_write(
                directory / SIDECAR_NAME,
                sidecar.model_dump_json(indent=1).encode("utf-8"),
                sync_directory=False,
            )
        except BaseException:
            # Nothing references the binary yet, so it is garbage, not a half-written index.
            binary_path.unlink(missing_ok=True)
            raise
        # Make the rename itself durable before deleting the binary the old sidecar named.
        fsync_directory(directory)
        _remove_stale(directory, keep=binary_name)


def _remove_stale(directory: Path, keep: str) -> None:
    stale = [
        path
        for path in directory.iterdir()
        if path.name.startswith(_BINARY_PREFIX)
        and path.name.endswith(_BINARY_SUFFIX)
        and path.name != keep
    ]
    stale.extend(leftover_temp_files(directory / SIDECAR_NAME))
    for path in stale:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def load_files(directory: Path) -> tuple[Any, IndexState] | None:
    """The native index and state committed in ``directory``; None when nothing was saved.

    The native index searches with ``params.ef_search`` (hnswlib's binary does not store ef).
    """
    directory = Path(directory)
    if not (directory / SIDECAR_NAME).is_file():
        return None
    with _directory_lock(directory, exclusive=False):
        try:
            raw = (directory / SIDECAR_NAME).read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
        try:
            sidecar = _Sidecar.model_validate_json(raw)
        except ValidationError as exc:
            raise CorruptIndexError(f"invalid {SIDECAR_NAME} in {directory}: {exc}") from exc
        params = sidecar.params
        native = hnswlib.Index(space=params.space, dim=params.dim)
        binary_path = directory / sidecar.binary
        try:
            native.load_index(str(binary_path), max_elements=sidecar.capacity)
        except RuntimeError as exc:
            raise CorruptIndexError(f"cannot load {binary_path}: {exc}") from exc
        if int(native.get_current_count()) != sidecar.element_count:
            raise CorruptIndexError(
                f"{binary_path} holds {native.get_current_count()} elements, "
                f"{SIDECAR_NAME} says {sidecar.element_count}"
            )
    # ef is not stored in hnswlib's binary (a loaded index searches with ef=10).
    native.set_ef(params.ef_search)
    state = IndexState(
        params=params,
        labels=sidecar.labels,
        deleted=frozenset(sidecar.deleted),
        next_label=sidecar.next_label,
    )
    return native, state
