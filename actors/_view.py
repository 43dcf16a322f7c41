"""KeySpaceView: a read-only key space as of one point of its history.

A view of a point the live state's kept versions still reach reads them (a dict lookup and
a bisection a key) and *pins* the point: the key space keeps every change after it in
memory while the view lives (``close()`` or dropping the view lets them go), so the view
stays readable whatever retention or later writes do. A view of an older point is rebuilt
when it is taken (``actors._history.state_as_of``: a snapshot plus a replay) and reads
that copy. Scans hold the state lock one chunk at a time either way.

Expiry is judged at the view's time: the commit time of its seq (``at(seq=...)``), the time
asked for (``at(time=...)``), or now (``at()``).
"""

from __future__ import annotations

from collections.abc import Callable, ItemsView, Iterable, Iterator, ValuesView
from typing import TYPE_CHECKING, Any, NamedTuple

from actors._keyspace_input import prefix_end
from storage.errors import InvalidOperation
from storage.kv_versions import ScanPin
from storage.kvstate import Entry as StoredEntry
from storage.kvstate import KVState

if TYPE_CHECKING:  # Python 3.10 has no typing.Self
    from typing_extensions import Self

    from actors._keyspace import Entry

__all__ = ["KeySpaceView", "SnapshotItems", "SnapshotValues", "ViewReads"]


class SnapshotItems(ItemsView[Any, Any]):
    """``ks.items()``: iterated as one scan (one snapshot), not a key then a lookup each."""

    def __iter__(self) -> Iterator[tuple[Any, Any]]:
        return iter(self._mapping.range())  # type: ignore[attr-defined]


class SnapshotValues(ValuesView[Any]):
    """``ks.values()``: iterated as one scan (one snapshot)."""

    def __iter__(self) -> Iterator[Any]:
        return (value for _, value in self._mapping.range())  # type: ignore[attr-defined]


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
        source: KVState,
        pin: ScanPin | None,
        time: float,
        reads: ViewReads,
    ) -> None:
        """Use :meth:`KeySpace.at` instead.

        ``source`` is the live state with ``pin`` holding the point, or (``pin`` None) a
        state rebuilt as of the point.
        """
        self.name = name
        self.seq = pin.seq if pin is not None else source.seq
        self.time = time
        self._key_type = key_type
        self._reads = reads
        self._source = source
        self._pin = pin
        self._closed = False

    # -- reads -------------------------------------------------------------------------------

    def get(self, key: Any, default: Any = None) -> Any:
        """The value of ``key`` as of the view's point, or ``default``."""
        if type(key) is not self._key_type or self._closed:  # the usual key: no calls
            self._reads.check_key(key)
            self._readable()
        entry: StoredEntry | None = self._source.get_at(key, self.seq, self.time)
        if entry is None:
            return default
        if entry.decoded:
            return entry.value
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
        found = self._readable().get_many_at(keys, self.seq, self.time)
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
            (key, entry.value if entry.decoded else decoded(key, entry))
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
        entry: StoredEntry | None = self._readable().get_at(key, self.seq, self.time)
        return entry

    def _scan(
        self,
        start: Any,
        stop: Any,
        reverse: bool,
        limit: int | None,
    ) -> Iterator[tuple[Any, StoredEntry]]:
        source = self._readable()
        pin = source.pin_at(self.seq)
        assert pin is not None, "a view's own pin keeps its point readable"
        return source.scan_at(pin, start, stop, self.time, reverse=reverse, limit=limit)

    def _readable(self) -> KVState:
        if self._closed:
            msg = f"this view of {self.name!r} at seq {self.seq} is closed; take another"
            raise InvalidOperation(msg)
        return self._source

    # -- lifetime ------------------------------------------------------------------------------

    def close(self) -> None:
        """Let the key space drop the changes this view kept in memory. Idempotent."""
        self._closed = True
        if self._pin is not None:
            self._pin.release()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()
