"""Durable file writes: write to a temporary file, fsync, rename into place, fsync the directory.

The one implementation behind every file streamkm writes that must never be seen
half-written (checkpoints, LSTM weights). Standard library only, so the math
packages may use it too.

A reader sees either the old file or the whole new one: ``os.replace`` is atomic
on POSIX file systems, and the directory fsync makes the rename itself survive a
crash (without it the new name can vanish on power loss even though the data was
fsynced).

Examples
--------
>>> import tempfile, pathlib
>>> d = pathlib.Path(tempfile.mkdtemp())
>>> atomic_write(d / "a.bin", b"hello")
>>> (d / "a.bin").read_bytes()
b'hello'
>>> sorted(p.name for p in d.iterdir())  # no temp file left behind
['a.bin']
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path

__all__ = ["atomic_write", "write_durable", "fsync_dir", "TMP_PREFIX"]

#: Prefix of the temporary files (callers that clean up stale ones look for it).
TMP_PREFIX = ".tmp-"


def fsync_dir(path: str | os.PathLike[str]) -> None:
    """fsync a directory, so that renames and unlinks inside it are durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_durable(path: str | os.PathLike[str], data: bytes) -> None:
    """Create *path* (it must not exist), write *data* completely and fsync it."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        view = memoryview(data)
        while view:
            n = os.write(fd, view)
            view = view[n:]
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: str | os.PathLike[str], data: bytes) -> None:
    """Replace *path* with *data* atomically and durably.

    The temporary file (``.tmp-<name>-<random>`` in the same directory) is removed
    if anything fails, and the previous content of *path*, if any, is then intact.
    """
    path = Path(path)
    tmp = path.with_name(f"{TMP_PREFIX}{path.name}-{uuid.uuid4().hex[:12]}")
    try:
        write_durable(tmp, data)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)
