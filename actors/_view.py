"""KeySpaceView: a read-only key space as of one point of its history.

A view reads the live state's kept versions while its point is at or above their horizon
(a dict lookup and a bisection a key; scans hold the state lock one chunk at a time and pin
the point, so they stay consistent however long they run). Once the horizon has moved past
the point (more than ``recent_versions`` changes since), or if it already had, the view
rebuilds the state as of its point once (``actors._history.state_as_of``) and reads that.

Expiry is judged at the view's time: the commit time of its seq (``at(seq=...)``), the time
asked for (``at(time=...)``), or now (``at()``).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any, NamedTuple

from actors._keyspace_input import prefix_end
from storage.kvstate import BELOW_HORIZON, KVState
from storage.kvstate import Entry as StoredEntry

if TYPE_CHECKING:
    from actors._keyspace import Entry

__all__ = ["KeySpaceView", "ViewReads"]


class ViewReads(NamedTuple):
    """What a view borrows from its key space: input checks and value decoding."""

    check_key: Callable[[Any], None]
    decode: Callable[[Any, StoredEntry], Any]
    entry: Callable[[Any, StoredEntry], Entry]
    check_range: Callable[[Any, Any, int | None], None]


_MISSING: Any = object()


class KeySpaceView:
    """The key space as of record ``seq``, read-only. Thread-safe.

    Attributes:
        name: The key space's name.
        seq: The point: the state after record ``seq``.
        time: The time expiry is judged at.
    """

    def __init__(
        self,
        name: str,
        key_type: type,
        live: KVState,
        seq: int,
        time: float,
        reads: ViewReads,
        rebuild: Callable[[int], KVState],
    ) -> None:
        """Use :meth:`KeySpace.at` instead."""
        self.name = name
        self.seq = seq
        self.time = time
        self._key_type = key_type
        self._reads = reads
        self._live = live
        self._rebuild = rebuild
        self._rebuilt: KVState | None = None
        self._rebuilding = threading.Lock()

    # -- reads -------------------------------------------------------------------------------

    def get(self, key: Any, default: Any = None) -> Any:
        """The value of ``key`` as of the view's point, or ``default``."""
        entry = self._entry(key)
        if entry is None:
            return default
        return self._reads.decode(key, entry)

    def get_entry(self, key: Any) -> Entry | None:
        """Value, version, seq and expiry of ``key`` as of the view's point, or None."""
        entry = self._entry(key)
        return None if entry is None else self._reads.entry(key, entry)

    def get_many(self, keys: Iterable[Any]) -> dict[Any, Any]:
        """The values of those ``keys`` that existed at the point."""
        keys = list(keys)
        for key in keys:
            self._reads.check_key(key)
        found = self._state().get_many_at(keys, self.seq, self.time)
        if found is BELOW_HORIZON:
            found = self._rebuilt_state().get_many_at(keys, self.seq, self.time)
        decoded = self._reads.decode
        return {key: decoded(key, entry) for key, entry in found.items()}

    def range(
        self,
        start: Any = None,
        stop: Any = None,
        *,
        reverse: bool = False,
        limit: int | None = None,
    ) -> Iterator[tuple[Any, Any]]:
        """``(key, value)`` for ``start <= key < stop`` as of the point, in key order."""
        self._reads.check_range(start, stop, limit)
        decoded = self._reads.decode
        return (
            (key, decoded(key, entry))
            for key, entry in self._scan(start, stop, reverse=reverse, limit=limit)
        )

    def prefix(
        self, prefix: Any, *, reverse: bool = False, limit: int | None = None
    ) -> Iterator[tuple[Any, Any]]:
        """``(key, value)`` for every key starting with ``prefix`` as of the point."""
        self._reads.check_key(prefix)
        return self.range(prefix or None, prefix_end(prefix), reverse=reverse, limit=limit)

    def keys(self) -> Iterator[Any]:
        """Keys in order as of the point."""
        return (key for key, _ in self._scan(None, None, reverse=False, limit=None))

    def items(self) -> Iterator[tuple[Any, Any]]:
        """``(key, value)`` in key order as of the point."""
        return self.range()

    def values(self) -> Iterator[Any]:
        """Values in key order as of the point."""
        return (value for _, value in self.range())

    def __iter__(self) -> Iterator[Any]:
        """Keys in order as of the point."""
        return self.keys()

    def __len__(self) -> int:
        """How many keys existed (and had not expired) at the point. O(n): a scan."""
        return sum(1 for _ in self._scan(None, None, reverse=False, limit=None))

    def __contains__(self, key: object) -> bool:
        """Whether ``key`` existed (and had not expired) at the point."""
        if not isinstance(key, self._key_type):
            return False
        return self._entry(key) is not None

    def __getitem__(self, key: Any) -> Any:
        """The value of ``key`` at the point; KeyError if it did not exist."""
        value = self.get(key, _MISSING)
        if value is _MISSING:
            raise KeyError(key)
        return value

    def __repr__(self) -> str:
        return f"<KeySpaceView {self.name!r} seq={self.seq}>"

    # -- where the point is read from ---------------------------------------------------------

    def _entry(self, key: Any) -> StoredEntry | None:
        self._reads.check_key(key)
        entry = self._state().get_at(key, self.seq, self.time)
        if entry is BELOW_HORIZON:
            entry = self._rebuilt_state().get_at(key, self.seq, self.time)
        found: StoredEntry | None = entry
        return found

    def _scan(
        self,
        start: Any,
        stop: Any,
        reverse: bool,
        limit: int | None,
    ) -> Iterator[tuple[Any, StoredEntry]]:
        state = self._state()
        pin = state.pin_at(self.seq)
        if pin is None:  # the live state moved past the point: rebuild it
            state = self._rebuilt_state()
            pin = state.pin_at(self.seq)
            assert pin is not None
        return state.scan_at(pin, start, stop, self.time, reverse=reverse, limit=limit)

    def _state(self) -> KVState:
        return self._rebuilt if self._rebuilt is not None else self._live

    def _rebuilt_state(self) -> KVState:
        with self._rebuilding:
            if self._rebuilt is None:
                self._rebuilt = self._rebuild(self.seq)
            return self._rebuilt
