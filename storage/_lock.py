"""The directory lock: one owner per data directory, across threads and processes.

``fcntl.flock`` locks belong to an open file description, so a second open of the same
directory conflicts even inside the same process, and the kernel drops the lock when the
owner dies (kill -9 included): a stale LOCK file never blocks a restart.

The same sharing makes ``fork`` dangerous: a child inherits the descriptor, and its
``LOCK_UN`` would unlock the parent's directory while the parent still writes. So a lock
remembers the process that took it, and a release from any other process only closes that
process's copy of the descriptor.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path

from storage._format import LOCK_FILE
from storage.errors import OpenFailed, StoreLocked


class DirectoryLock:
    """An exclusive lock on a directory, held until :meth:`release`. Not thread-safe."""

    def __init__(self, directory: Path, fd: int) -> None:
        """Wrap an already locked descriptor; use :meth:`acquire`."""
        self.directory = directory
        self._fd: int | None = fd
        self.owner_pid = os.getpid()
        """The process that took the lock; only it may unlock."""

    @classmethod
    def acquire(cls, directory: Path) -> DirectoryLock:
        """Lock ``directory`` (which must exist) and record this process's pid.

        Raises:
            StoreLocked: Another open handle holds the lock; names its pid.
            OpenFailed: The LOCK file could not be created or written (no space, no file
                descriptors, no permission).
        """
        path = directory / LOCK_FILE
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as exc:
            raise OpenFailed(path, exc, "creating the lock file") from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_pid(fd)
            os.close(fd)
            raise StoreLocked(directory, holder) from None
        except BaseException:
            os.close(fd)
            raise
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        except OSError as exc:
            os.close(fd)  # also drops the lock: nobody else holds this description
            raise OpenFailed(path, exc, "writing the lock file") from exc
        return cls(directory, fd)

    def release(self) -> None:
        """Unlock; safe to call twice.

        In a forked child this only closes the child's copy of the descriptor: the lock
        stays with the parent, which owns it.
        """
        if self._fd is not None:
            fd, self._fd = self._fd, None
            if os.getpid() == self.owner_pid:
                with contextlib.suppress(OSError):
                    fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)


def _read_pid(fd: int) -> int | None:
    try:
        return int(os.pread(fd, 32, 0).decode().strip())
    except (OSError, ValueError):
        return None
