"""The few system calls the log makes, behind one seam.

Every write, fsync, truncate, rename and open the storage engine performs goes through this
module, so fault-injection tests can patch one place (``storage._fileio.fsync`` and friends)
to fail the Nth call with ENOSPC or EIO, or to record what was made durable.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

__all__ = [
    "create",
    "fsync",
    "fsync_dir",
    "make_dir",
    "make_dirs",
    "open_append",
    "open_read",
    "open_write",
    "remove",
    "rename",
    "truncate",
    "unused_name",
    "write_all",
    "write_file",
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


def write_file(path: Path, data: bytes) -> None:
    """Create ``path`` holding ``data`` and fsync it; on failure remove it again.

    The directory entry is the caller's to make durable (``fsync_dir``), or to replace by a
    rename first.

    Raises:
        OSError: The file could not be written (nothing is left behind, if removable).
    """
    fd = create(path)
    try:
        try:
            write_all(fd, data)
            fsync(fd)
        finally:
            os.close(fd)
    except OSError:
        with contextlib.suppress(OSError):
            remove(path)
        raise


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


def make_dir(path: Path) -> None:
    """Create one directory (its parent must exist); the caller fsyncs the parent.

    Raises:
        FileExistsError: ``path`` exists already.
    """
    path.mkdir()


def make_dirs(path: Path) -> None:
    """Create ``path`` and any missing parents, each one durable before it is used.

    A directory entry is only as durable as its parent directory: after every ``mkdir`` the
    parent is fsynced, so a log created in a brand-new directory survives a power loss with
    its directory. Existing components are left alone (and are not fsynced again).
    """
    missing: list[Path] = []
    current = path
    while not current.exists():
        missing.append(current)
        if current.parent == current:
            break
        current = current.parent
    for directory in reversed(missing):
        with contextlib.suppress(FileExistsError):  # made meanwhile by another opener
            make_dir(directory)
        fsync_dir(directory.parent)


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
