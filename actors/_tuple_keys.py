"""Key spaces with tuple keys: ``store.keyspace(name, key_type=tuple)``.

Keys are tuples of None, bool, int, float, str, bytes and nested tuples. They are stored as
their ``storage.tuplekey`` encoding, whose byte order is the tuple order (FoundationDB's),
so the sorted state, the log and the snapshots hold plain bytes and range scans need no
comparator. This handle packs every key on the way in and unpacks it on the way out;
``prefix(("user", 42))`` is the byte range of keys whose encoding starts with that of
``("user", 42)``: exactly the tuples that extend it, itself included.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any, TypeVar

from actors._batch import WriteBatch
from actors._future import Future
from actors._history import Version
from actors._keyspace import Entry, KeySpace, Receipt
from actors._subscription import Change, Subscription
from actors._transaction import TransactionBatch, TransactionView
from actors._view import KeySpaceView
from actors.ops import Op
from storage.errors import InvalidKey
from storage.kvstate import Entry as StoredEntry
from storage.tuplekey import TUPLE_END, pack, unpack

if TYPE_CHECKING:  # Python 3.10 has no typing.Self
    from typing_extensions import Self

__all__ = ["TupleKeySpace", "pack_key"]

T = TypeVar("T")


def pack_key(key: Any) -> bytes:
    """A tuple key's stored form (InvalidKey if it is not a tuple of supported types)."""
    if type(key) is not tuple:
        msg = f"key {key!r:.60} is {type(key).__name__}; this key space takes tuple keys"
        raise InvalidKey(msg)
    return pack(key)


def _bounds(start: Any, stop: Any) -> tuple[bytes | None, bytes | None]:
    return (
        None if start is None else pack_key(start),
        None if stop is None else pack_key(stop),
    )


def _prefix_bounds(prefix: Any) -> tuple[bytes | None, bytes]:
    packed = pack_key(prefix)
    return (packed or None), packed + TUPLE_END


def _unpacked(pairs: Iterator[tuple[bytes, Any]]) -> Iterator[tuple[Any, Any]]:
    return ((unpack(key), value) for key, value in pairs)


class TupleKeySpace(KeySpace):
    """A :class:`KeySpace` whose keys are tuples (see the module notes)."""

    def _public_key(self, key: bytes) -> Any:
        return unpack(key)

    # -- reads -------------------------------------------------------------------------------

    def get(self, key: Any, default: Any = None) -> Any:
        """The value of ``key``, or ``default`` (see :meth:`KeySpace.get`)."""
        return super().get(pack_key(key), default)

    def get_entry(self, key: Any) -> Entry | None:
        """Value, version, seq and expiry of ``key``, or None."""
        return super().get_entry(pack_key(key))

    def get_many(self, keys: Iterable[Any]) -> dict[Any, Any]:
        """The values of those ``keys`` that exist, read as one snapshot."""
        packed = {pack_key(key): key for key in keys}
        return {packed[key]: value for key, value in super().get_many(list(packed)).items()}

    def range(
        self,
        start: Any = None,
        stop: Any = None,
        *,
        reverse: bool = False,
        limit: int | None = None,
    ) -> Iterator[tuple[Any, Any]]:
        """``(key, value)`` for ``start <= key < stop`` in tuple order (None: open end)."""
        low, high = _bounds(start, stop)
        return _unpacked(super().range(low, high, reverse=reverse, limit=limit))

    def prefix(
        self, prefix: Any, *, reverse: bool = False, limit: int | None = None
    ) -> Iterator[tuple[Any, Any]]:
        """``(key, value)`` for every key that extends the tuple ``prefix`` (or equals it)."""
        low, high = _prefix_bounds(prefix)
        return _unpacked(super().range(low, high, reverse=reverse, limit=limit))

    def __contains__(self, key: object) -> bool:
        """Whether ``key`` exists (and has not expired)."""
        if type(key) is not tuple:
            return False
        try:
            packed = pack(key)
        except InvalidKey:
            return False
        return super().__contains__(packed)

    def __iter__(self) -> Iterator[Any]:
        """Keys in order, from one snapshot."""
        return (unpack(key) for key in super().__iter__())

    def history(self, key: Any, *, limit: int | None = None) -> list[Version]:
        """Every retained change of ``key`` (see :meth:`KeySpace.history`)."""
        return super().history(pack_key(key), limit=limit)

    def at(self, seq: int | None = None, *, time: float | None = None) -> KeySpaceView:
        """A read-only view as of ``seq`` or ``time`` (see :meth:`KeySpace.at`)."""
        return TupleKeyView(super().at(seq, time=time))  # type: ignore[return-value]

    def subscribe(
        self, from_seq: int | None = None, *, prefix: Any = None, name: str | None = None
    ) -> Subscription[Change]:
        """Every durable change from ``from_seq`` on (see :meth:`KeySpace.subscribe`)."""
        packed = None if prefix is None else pack_key(prefix)
        return super().subscribe(from_seq, prefix=packed, name=name)

    def _index_results(
        self, found: list[tuple[Any, Any, StoredEntry]]
    ) -> Iterator[tuple[Any, Any, Any]]:
        return (
            (index_value, unpack(key), value)
            for index_value, key, value in super()._index_results(found)
        )

    # -- writes ------------------------------------------------------------------------------

    def put(
        self,
        key: Any,
        value: Any,
        *,
        ttl: float | None = None,
        expect_version: int | None = None,
    ) -> Receipt:
        """Write ``key``; returns once durable (see :meth:`KeySpace.put`)."""
        return super().put(pack_key(key), value, ttl=ttl, expect_version=expect_version)

    def put_async(
        self,
        key: Any,
        value: Any,
        *,
        ttl: float | None = None,
        expect_version: int | None = None,
    ) -> Future[Receipt]:
        """Like :meth:`put`, but returns a future at once."""
        return super().put_async(pack_key(key), value, ttl=ttl, expect_version=expect_version)

    def delete(self, key: Any, *, expect_version: int | None = None) -> Receipt | None:
        """Remove ``key``; returns once durable, or None if it did not exist."""
        return super().delete(pack_key(key), expect_version=expect_version)

    def delete_async(
        self, key: Any, *, expect_version: int | None = None
    ) -> Future[Receipt | None]:
        """Like :meth:`delete`, but returns a future at once."""
        return super().delete_async(pack_key(key), expect_version=expect_version)

    def increment(self, key: Any, by: int = 1) -> int:
        """Add ``by`` to ``key``'s int value, atomically (see :meth:`KeySpace.increment`)."""
        return super().increment(pack_key(key), by)

    def operate(
        self, key: Any, operations: Iterable[Op], *, expect_version: int | None = None
    ) -> list[Any]:
        """Record operations on ``key`` (see :meth:`KeySpace.operate`)."""
        return super().operate(pack_key(key), operations, expect_version=expect_version)

    def batch(self) -> WriteBatch:
        """An atomic batch whose keys are tuples (see :meth:`KeySpace.batch`)."""
        return TupleKeyBatch(self)

    def transact(self, fn: Callable[[TransactionView, TransactionBatch], T]) -> T:
        """Run ``fn(view, batch)`` in the actor, with tuple keys (see :meth:`KeySpace.transact`)."""

        def packed(view: TransactionView, batch: TransactionBatch) -> T:
            return fn(TupleKeyView(view), TupleKeyWrites(batch))  # type: ignore[arg-type]

        return super().transact(packed)

    def clear(self) -> None:
        """Delete every key, atomically (one record)."""
        with super().batch() as batch:
            for key in super().__iter__():
                batch.delete(key)


class TupleKeyBatch(WriteBatch):
    """A :class:`WriteBatch` of a tuple-keyed key space."""

    def put(
        self, key: Any, value: Any, *, ttl: float | None = None, expect_version: int | None = None
    ) -> None:
        """Add a put (see :meth:`WriteBatch.put`)."""
        super().put(pack_key(key), value, ttl=ttl, expect_version=expect_version)

    def increment(self, key: Any, by: int = 1) -> None:
        """Add an increment (see :meth:`WriteBatch.increment`)."""
        super().increment(pack_key(key), by)

    def delete(self, key: Any, *, expect_version: int | None = None) -> None:
        """Add a delete (see :meth:`WriteBatch.delete`)."""
        super().delete(pack_key(key), expect_version=expect_version)


class TupleKeyWrites:
    """A transaction's batch with tuple keys."""

    def __init__(self, batch: TransactionBatch) -> None:
        self._batch = batch

    def put(
        self, key: Any, value: Any, *, ttl: float | None = None, expect_version: int | None = None
    ) -> None:
        """Write ``key`` in the transaction."""
        self._batch.put(pack_key(key), value, ttl=ttl, expect_version=expect_version)

    def delete(self, key: Any, *, expect_version: int | None = None) -> None:
        """Remove ``key`` in the transaction."""
        self._batch.delete(pack_key(key), expect_version=expect_version)

    def increment(self, key: Any, by: int = 1) -> int:
        """Add ``by`` to ``key``'s int value as the transaction sees it; returns the sum."""
        return self._batch.increment(pack_key(key), by)

    def __len__(self) -> int:
        return len(self._batch)


class TupleKeyView:
    """A read-only view (``at()``, or a transaction's view) with tuple keys."""

    def __init__(self, view: KeySpaceView | TransactionView) -> None:
        self._view = view

    def __getattr__(self, name: str) -> Any:  # seq, time, name, close, ...
        return getattr(self._view, name)

    def get(self, key: Any, default: Any = None) -> Any:
        """The value of ``key``, or ``default``."""
        return self._view.get(pack_key(key), default)

    def get_entry(self, key: Any) -> Entry | None:
        """Value, version, seq and expiry of ``key``, or None."""
        view = self._view
        assert isinstance(view, KeySpaceView)
        return view.get_entry(pack_key(key))

    def get_many(self, keys: Iterable[Any]) -> dict[Any, Any]:
        """The values of those ``keys`` that exist."""
        packed = {pack_key(key): key for key in keys}
        return {packed[key]: value for key, value in self._view.get_many(list(packed)).items()}

    def range(
        self,
        start: Any = None,
        stop: Any = None,
        *,
        reverse: bool = False,
        limit: int | None = None,
    ) -> Iterator[tuple[Any, Any]]:
        """``(key, value)`` for ``start <= key < stop`` in tuple order."""
        low, high = _bounds(start, stop)
        return _unpacked(self._view.range(low, high, reverse=reverse, limit=limit))

    def prefix(
        self, prefix: Any, *, reverse: bool = False, limit: int | None = None
    ) -> Iterator[tuple[Any, Any]]:
        """``(key, value)`` for every key that extends the tuple ``prefix``."""
        low, high = _prefix_bounds(prefix)
        return _unpacked(self._view.range(low, high, reverse=reverse, limit=limit))

    def keys(self) -> Iterator[Any]:
        """Keys in order."""
        return (key for key, _ in self.range())

    def items(self) -> Iterator[tuple[Any, Any]]:
        """``(key, value)`` in key order."""
        return self.range()

    def values(self) -> Iterator[Any]:
        """Values in key order."""
        return (value for _, value in self.range())

    def __iter__(self) -> Iterator[Any]:
        return self.keys()

    def __len__(self) -> int:
        return sum(1 for _ in self.range())

    def __contains__(self, key: object) -> bool:
        if type(key) is not tuple:
            return False
        try:
            return pack(key) in self._view
        except InvalidKey:
            return False

    def __getitem__(self, key: Any) -> Any:
        missing = object()
        value = self.get(key, missing)
        if value is missing:
            raise KeyError(key)
        return value

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *_exc: object) -> None:
        self._view.close()  # type: ignore[union-attr]

    def __repr__(self) -> str:
        return repr(self._view)
