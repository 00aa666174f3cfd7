"""Crash-safe file replacement: a reader sees the old bytes or the new ones, never a mix.

The new content goes to a temporary file beside the target, is flushed and fsynced, and is
renamed over the target with ``os.replace``; the directory is then fsynced so the rename itself
survives a power cut. Temporary files are named ``.<target name>.<32 hex>.tmp``; one left by a
crash is never read by anyone and :func:`leftover_temp_files` finds it for cleanup.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO

__all__ = [
    "atomic_write",
    "atomic_write_with",
    "fsync_directory",
    "fsync_file",
    "leftover_temp_files",
]

_TEMP_SUFFIX = ".tmp"


def _fsync(path: Path, flags: int) -> None:
    fd = os.open(path, flags)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_file(path: Path) -> None:
    """Flush a file that something else wrote (by path) to stable storage."""
    _fsync(path, os.O_RDONLY)


def fsync_directory(path: Path) -> None:
    """Make the entries of directory ``path`` (creations, renames, unlinks) durable."""
    _fsync(path, os.O_RDONLY | os.O_DIRECTORY)


def _temp_prefix(path: Path) -> str:
    return f".{path.name}."


def leftover_temp_files(path: Path) -> Iterator[Path]:
    """Temporary files that interrupted atomic writes to ``path`` left beside it."""
    prefix = _temp_prefix(path)
    for candidate in path.parent.iterdir():
        name = candidate.name
        if name.startswith(prefix) and name.endswith(_TEMP_SUFFIX):
            yield candidate


def atomic_write_with(
    path: Path, write: Callable[[BinaryIO], object], *, sync_directory: bool = True
) -> None:
    """Replace ``path`` with whatever ``write`` writes to the binary handle it is given.

    For content produced by a streaming writer, e.g. ``lambda f: np.savez(f, **arrays)``. If
    ``write`` (or anything before the rename) raises, ``path`` is untouched and the temporary
    file is removed. With ``sync_directory=False`` the caller must :func:`fsync_directory`
    itself; that lets it tell a failed write from a committed one whose fsync failed.
    """
    path = Path(path)
    tmp_path = path.with_name(f"{_temp_prefix(path)}{uuid.uuid4().hex}{_TEMP_SUFFIX}")
    try:
        # O_EXCL: never write through a file (or link) that is already there.
        fd = os.open(tmp_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp_path, path)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise
    if sync_directory:
        fsync_directory(path.parent)


def atomic_write(path: Path, data: bytes, *, sync_directory: bool = True) -> None:
    """Replace ``path`` with ``data``; see :func:`atomic_write_with`."""
    atomic_write_with(path, lambda handle: handle.write(data), sync_directory=sync_directory)
