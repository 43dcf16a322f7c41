"""One actorkv Store per directory per process, shared by the eventsourcing factories.

A Store is process-exclusive (``StoreLocked`` for a second opener, even in the same
process), while eventsourcing makes one infrastructure factory per application, and a
system of applications in one process may point them all at one directory. So factories do
not open stores: they take a :class:`StoreLease` on the directory. The first lease opens the
store; the last one released closes it. A lease is released by ``Factory.close()`` or, if
nobody closes it, once it is garbage (every factory and recorder holding it is gone).

Threads: leases are taken and released under one module lock; the store itself is
thread-safe. After ``fork`` the child forgets the parent's stores (they raise
``StoreForked`` there and belong to the parent): a lease taken in the child opens anew.
"""

from __future__ import annotations

import os
import threading
import weakref
from pathlib import Path
from typing import get_args

from actors._keyspace import KeySpace
from actors._store import Store
from storage.log import FsyncPolicy

__all__ = ["FSYNC_POLICIES", "StoreLease", "open_stores"]

FSYNC_POLICIES: tuple[str, ...] = get_args(FsyncPolicy)


class _Shared:
    """An open store and how many leases hold it."""

    __slots__ = ("fsync", "leases", "store")

    def __init__(self, store: Store, fsync: str) -> None:
        self.store = store
        self.fsync = fsync
        self.leases = 0


# Reentrant: a lease's finalizer may run (garbage collection) while this thread holds it.
_LOCK = threading.RLock()
_OPEN: dict[Path, _Shared] = {}  # guarded by _LOCK


def _forget_in_child() -> None:
    """In a forked child: the parent's stores are not ours to use, close or unlock."""
    global _LOCK  # noqa: PLW0603 - a lock held by another thread at fork stays held forever
    _LOCK = threading.RLock()
    _OPEN.clear()


os.register_at_fork(after_in_child=_forget_in_child)


def open_stores() -> dict[Path, int]:
    """Each directory with an open shared store, and how many leases hold it."""
    with _LOCK:
        return {path: shared.leases for path, shared in _OPEN.items()}


class StoreLease:
    """A claim on the shared store of one directory; :meth:`release` gives it back.

    Thread-safe.
    """

    def __init__(self, path: str | os.PathLike[str], fsync: FsyncPolicy) -> None:
        """Open the store of ``path`` (or join the one already open in this process).

        Raises:
            OSError: The store is open in this process with another fsync policy.
            ActorKVError: Opening failed (``StoreLocked`` if another process owns it,
                ``OpenFailed``, ``CorruptLog``, ...).
        """
        directory = Path(path).absolute()
        with _LOCK:
            while True:
                shared = _OPEN.get(directory)
                if shared is None:
                    shared = _Shared(Store.open(directory, fsync=fsync), fsync)
                    _OPEN[directory] = shared
                elif shared.fsync != fsync:
                    msg = (
                        f"the actorkv store {str(directory)!r} is open in this process with "
                        f"ACTORKV_FSYNC={shared.fsync!r}, not {fsync!r}: give every "
                        "application that shares a store directory the same ACTORKV_FSYNC"
                    )
                    raise OSError(msg)
                shared.leases += 1
                # A collected lease's finalizer may have closed it just before the count
                # went up (the lock is reentrant, and garbage collection runs anywhere).
                if _OPEN.get(directory) is shared:
                    break
        self.path = directory
        self.store = shared.store
        self._release = weakref.finalize(self, _give_back, directory, shared)

    def keyspace(self, name: str) -> KeySpace:
        """The key space ``name`` of the shared store, with history kept for subscribers."""
        return self.store.keyspace(name, retention=None)

    def release(self) -> None:
        """Give the lease back (closing the store if it was the last). Idempotent."""
        self._release()

    @property
    def released(self) -> bool:
        """Whether :meth:`release` was called (or the lease was collected)."""
        return not self._release.alive


def _give_back(directory: Path, shared: _Shared) -> None:
    with _LOCK:
        if _OPEN.get(directory) is not shared:
            return  # forgotten at a fork: the store is the parent's
        shared.leases -= 1
        if shared.leases:
            return
        del _OPEN[directory]
        # Under the lock, so that a lease taken meanwhile does not find the directory
        # still locked by the store being closed.
        shared.store.close()
