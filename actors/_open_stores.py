"""The stores this process has open, for the two moments a store cannot be told: exit, fork.

At interpreter exit every open store is closed (queued commands answered, logs synced): the
actors' home threads are daemons, so nothing else would do it. In a child made by ``fork``
every inherited store is forsaken: it belongs to the parent, and the child must not flush,
close or unlock it (``StoreForked``).
"""

from __future__ import annotations

import atexit
import logging
import os
import weakref
from typing import Protocol

from storage.errors import StopTimeout

__all__ = ["open_stores"]

logger = logging.getLogger("actorkv.actors")


class _OpenStore(Protocol):
    def close(self, timeout: float = ...) -> None: ...

    def _forsake(self) -> None: ...


open_stores: weakref.WeakSet[_OpenStore] = weakref.WeakSet()


@atexit.register
def _close_open_stores() -> None:
    """Close every store still open (one that cannot stop an actor in time is left)."""
    for store in list(open_stores):
        try:
            store.close()
        except StopTimeout as exc:
            logger.warning("at exit: %s", exc)


def _forsake_inherited_stores() -> None:
    for store in list(open_stores):
        store._forsake()
    open_stores.clear()


os.register_at_fork(after_in_child=_forsake_inherited_stores)
