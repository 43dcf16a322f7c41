"""Dropping a key space: its directory leaves its name at once and is deleted after.

The key space's own lock is taken first, so a log still open anywhere is never deleted
(``StoreLocked``). The directory is renamed to a ``.dropped-`` name and the parent fsynced
before any file is deleted, so a crash midway never leaves a half-deleted key space under
its name; the next open of the store deletes what such a crash left (:func:`finish_drops`).
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

from storage import DirectoryLock, _fileio

__all__ = ["DROPPED_PREFIX", "drop_directory", "finish_drops", "remove_leftovers"]

DROPPED_PREFIX = ".dropped-"  # a key space being deleted; finished on the next open


def drop_directory(folder: Path) -> None:
    """Delete the log directory ``folder`` as described above (it must exist).

    Raises:
        StoreLocked: Its log is open, in this or another process.
    """
    lock = DirectoryLock.acquire(folder)
    try:
        doomed = folder.with_name(
            f"{DROPPED_PREFIX}{folder.name}-{os.getpid()}-{time.monotonic_ns()}"
        )
        _fileio.rename(folder, doomed)
        _fileio.fsync_dir(folder.parent)
        shutil.rmtree(doomed)
    finally:
        lock.release()


def finish_drops(folder: Path) -> None:
    """Delete the key spaces in ``folder`` whose drop a crash cut short."""
    remove_leftovers(folder, DROPPED_PREFIX)


def remove_leftovers(folder: Path, prefix: str) -> None:
    """Delete the directories in ``folder`` named ``prefix...`` (work a crash cut short)."""
    leftovers = list(folder.glob(f"{prefix}*"))
    for leftover in leftovers:
        shutil.rmtree(leftover)
    if leftovers:
        _fileio.fsync_dir(folder)
