"""The few system calls the log makes, behind one seam.

Every write, fsync, truncate, rename and open the storage engine performs goes through this
module, so fault-injection tests can patch one place (``storage._fileio.fsync`` and friends)
to fail the Nth call with ENOSPC or EIO, or to record what was made durable.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = [
    "create",
    "fsync",
    "fsync_dir",
    "open_append",
    "open_read",
    "open_write",
    "remove",
    "rename",
    "truncate",
    "unused_name",
    "write_all",
]


def open_append(path: Path) -> int:
    """Open an existing file for appending; returns the descriptor."""
    return os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC)


def create(path: Path) -> int:
    """Create (or empty) a file for writing; returns the descriptor."""
    return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)


def open_write(path: Path) -> int:
    """Open an existing file for writing at any offset (truncation); returns the descriptor."""
    return os.open(path, os.O_WRONLY | os.O_CLOEXEC)


def open_read(path: Path) -> int:
    """Open a file read-only; returns the descriptor."""
    return os.open(path, os.O_RDONLY | os.O_CLOEXEC)


def write_all(fd: int, data: bytes) -> None:
    """Write every byte of ``data`` or raise ``OSError`` (a short write is retried)."""
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def fsync(fd: int) -> None:
    """Flush a file's data and metadata to stable storage."""
    os.fsync(fd)


def fsync_dir(path: Path) -> None:
    """Make a directory's entries (created, renamed, removed files) durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def truncate(fd: int, size: int) -> None:
    """Cut an open file to ``size`` bytes."""
    os.ftruncate(fd, size)


def rename(src: Path, dst: Path) -> None:
    """Atomically rename ``src`` to ``dst`` (the caller fsyncs the directory)."""
    src.replace(dst)


def remove(path: Path) -> None:
    """Delete a file (the caller fsyncs the directory)."""
    path.unlink()


def unused_name(path: Path) -> Path:
    """``path``, or ``path.1``, ``path.2``, ... whichever does not exist yet.

    Side files and backups never overwrite an earlier one: it may hold the only copy.
    """
    candidate = path
    serial = 1
    while candidate.exists():
        candidate = path.with_name(f"{path.name}.{serial}")
        serial += 1
    return candidate
