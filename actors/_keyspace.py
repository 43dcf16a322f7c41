"""The KeySpace handle: reads in the caller's thread, writes through the key space's actor.

Reads (``get``, ``range``, ``len``, ...) go straight to the committed layer of the sorted
state (see ``storage/kvstate.py`` for why that is safe without a round trip). Writes are
checked and encoded here, in the caller's thread, so bad input raises before anything is
sent; the actor then checks versions, and the call returns once the write is durable.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator, MutableMapping
from typing import Any, Generic, overload

import msgspec
from typing_extensions import TypeVar

from actors._batch import WriteBatch
from actors._core import ActorStats, Command
from actors._future import Future
from actors._handle import ActorHandle
from actors._index import Index, KeySpaceIndexes, reading_decoder
from actors._keyspace_actor import KeySpaceActor, Receipt
from actors._keyspace_history import KeySpaceHistory
from actors._keyspace_input import (
    KeySpaceOptions,
    check_expect,
    check_ttl,
    prefix_end,
)
from actors._snapshots import CompactionReport
from actors._transaction import TransactionBatch, TransactionView
from actors._view import SnapshotItems, SnapshotValues
from actors.ops import Op
from storage.codec import encode_value, on_fresh_stack
from storage.errors import (
    InvalidInput,
    InvalidKey,
    InvalidOption,
    InvalidValue,
    KeyspaceClosed,
    StoreForked,
    ValueTypeMismatch,
)
from storage.kvstate import Entry as StoredEntry
from storage.kvstate import KVState
from storage.snapshot import SnapshotInfo

__all__ = ["Entry", "KeySpace", "KeySpaceOptions", "Receipt", "WriteBatch"]

T = TypeVar("T")
K = TypeVar("K", default=Any)
"""The key type: ``str`` unless opened with ``key_type=``."""
V = TypeVar("V", default=Any)
"""The value type: what ``value_type=`` says, else any MessagePack value."""

_MISSING: Any = object()


class Entry(msgspec.Struct, frozen=True):
    """A key's value with its metadata, as returned by :meth:`KeySpace.get_entry`."""

    value: Any
    version: int
    seq: int
    expires_at: float | None


class KeySpace(KeySpaceHistory, KeySpaceIndexes, MutableMapping[K, V], Generic[K, V]):
    """A sorted, durable key-value map owned by one actor. Thread-safe; share it freely.

    Writes block until durable and return a :class:`Receipt`; ``*_async`` variants return a
    future; ``a*`` variants are awaitable without blocking the event loop. Reads never block
    on the actor and see every acknowledged write, never one that is not yet durable.
    """

    def __init__(
        self,
        name: str,
        actor: ActorHandle[KeySpaceActor],
        state: KVState,
        options: KeySpaceOptions,
        indexes: dict[str, Index] | None = None,
        value_upcaster: Callable[[Any], Any] | None = None,
    ) -> None:
        """Wrap a running key space actor; use ``Store.keyspace`` instead."""
        self.name = name
        self._index_definitions = dict(indexes or {})
        self.options = options
        self._actor = actor
        self._state = state
        self._entries_get = state.entries.get
        self._clock = state.clock
        # Tuple keys are stored packed (actors._tuple_keys): the stored type is bytes.
        self._key_type = bytes if options.key_type is tuple else options.key_type
        self._max_key_bytes = options.max_key_bytes
        self._max_value_bytes = options.max_value_bytes
        value_type = self._value_type = options.value_type
        self.value_upcaster = value_upcaster
        self._decode = reading_decoder(value_type, value_upcaster)  # reads: old values too
        self._check_value = reading_decoder(value_type)  # writes: only the current type
        # Blocking writes run in the caller's thread when the actor is idle (actors._core);
        # the *_async ones queue and are answered through a future.
        self._execute = actor.execute
        self._enqueue = actor.enqueue
        self._new_future = actor.new_future
        self._call_delete = actor.blocking.delete
        self._send_delete = actor.delete
        self._closed: tuple[type[KeyspaceClosed], str] | None = None
        self._core = actor.core

    # -- reads (caller's thread) -------------------------------------------------------------

    @overload
    def get(self, key: K, /) -> V | None: ...

    @overload
    def get(self, key: K, /, default: V | T) -> V | T: ...

    def get(self, key: K, default: Any = None) -> Any:
        """The value of ``key``, or ``default`` if it does not exist or has expired. O(1).

        Raises:
            InvalidKey: ``key`` is not of the key space's key type.
            KeyspaceClosed: The key space was closed or dropped.
            ValueTypeMismatch: The stored value does not decode as ``value_type``.
        """
        if type(key) is not self._key_type:
            self._check_key_type(key)
        entry = self._entries_get(key)  # raises once closed (see _close)
        if self._state.publishing:  # a group is being published: read it whole
            entry = self._state.get_published(key)
        if entry is None:
            return default
        expires_at = entry.expires_at
        if expires_at is not None and expires_at <= self._clock():
            return default
        if entry.decoded:
            return entry.value
        return self._value(key, entry)

    def get_entry(self, key: Any) -> Entry | None:
        """Value, version, seq and expiry of ``key``, or None. O(1)."""
        self._check_open()
        self._check_key_type(key)
        entry = self._state.get(key)
        if entry is None:
            return None
        return Entry(self._value(key, entry), entry.version, entry.seq, entry.expires_at)

    def get_many(self, keys: Iterable[K]) -> dict[K, V]:
        """The values of those ``keys`` that exist, read as one snapshot. O(k)."""
        self._check_open()
        keys = list(keys)
        for key in keys:
            self._check_key_type(key)
        value = self._value
        return {key: value(key, entry) for key, entry in self._state.get_many(keys).items()}

    def range(
        self,
        start: K | None = None,
        stop: K | None = None,
        *,
        reverse: bool = False,
        limit: int | None = None,
    ) -> Iterator[tuple[K, V]]:
        """``(key, value)`` for ``start <= key < stop`` in key order (None: open end).

        The range is read as one snapshot when called; values are decoded as you iterate.
        Concurrent writes never make it raise, skip or repeat a key. O(log n + m).

        Raises:
            InvalidKey: A bound is not of the key type. InvalidOption: A bad ``limit``.
            KeyspaceClosed: The key space was closed or dropped.
        """
        self._check_range(start, stop, limit)
        return self._decoded(self._state.scan_chunks(start, stop, reverse=reverse, limit=limit))

    def _decoded(
        self, chunks: Iterator[list[tuple[Any, StoredEntry]]]
    ) -> Iterator[tuple[Any, Any]]:
        value = self._value
        for chunk in chunks:
            for key, entry in chunk:
                yield key, (entry.value if entry.decoded else value(key, entry))

    def _index_results(
        self, found: list[tuple[Any, Any, StoredEntry]]
    ) -> Iterator[tuple[Any, Any, Any]]:
        value = self._value
        for index_value, key, entry in found:
            yield index_value, key, (entry.value if entry.decoded else value(key, entry))

    def prefix(
        self, prefix: K, *, reverse: bool = False, limit: int | None = None
    ) -> Iterator[tuple[K, V]]:
        """``(key, value)`` for every key starting with ``prefix``, in key order."""
        self._check_key_type(prefix)
        start: Any = prefix  # a str or bytes key: checked above
        stop: Any = prefix_end(start)
        return self.range(start or None, stop, reverse=reverse, limit=limit)

    def _check_range(self, start: Any, stop: Any, limit: int | None) -> None:
        self._check_open()
        for bound in (start, stop):
            if bound is not None:
                self._check_key_type(bound)
        if limit is not None and (
            isinstance(limit, bool) or not isinstance(limit, int) or limit < 0
        ):
            msg = f"limit must be a non-negative int or None, got {limit!r}"
            raise InvalidOption(msg)

    def _public_entry(self, key: Any, entry: StoredEntry) -> Entry:
        return Entry(self._value(key, entry), entry.version, entry.seq, entry.expires_at)

    def _value(self, key: Any, entry: StoredEntry) -> Any:
        if entry.decoded:
            return entry.value
        try:
            try:
                return self._decode(entry.value)
            except RecursionError:  # the caller's stack is deep: not the value
                return on_fresh_stack(self._decode, entry.value)
        except msgspec.ValidationError as exc:
            raise ValueTypeMismatch(key, self.options.value_type, exc) from exc

    def __getitem__(self, key: K) -> V:
        """The value of ``key``; KeyError if missing."""
        value = self.get(key, _MISSING)
        if value is _MISSING:
            raise KeyError(key)
        return value

    def __contains__(self, key: object) -> bool:
        """Whether ``key`` exists (and has not expired)."""
        self._check_open()
        if not isinstance(key, self._key_type):
            return False
        return self._state.get(key) is not None

    def __iter__(self) -> Iterator[K]:
        """Keys in order, from one snapshot."""
        self._check_open()
        return (key for key, _ in self._state.scan())

    def items(self) -> SnapshotItems:
        """``(key, value)`` pairs; iterating reads them as one snapshot (a scan)."""
        return SnapshotItems(self)

    def values(self) -> SnapshotValues:
        """Values in key order; iterating reads them as one snapshot (a scan)."""
        return SnapshotValues(self)

    def __len__(self) -> int:
        """Number of keys that exist and have not expired. O(log n)."""
        self._check_open()
        return len(self._state)

    # -- writes ------------------------------------------------------------------------------

    def put(
        self,
        key: K,
        value: V,
        *,
        ttl: float | None = None,
        expect_version: int | None = None,
    ) -> Receipt:
        """Write ``key``; returns once durable.

        Args:
            key: The key (the key space's key type, non-empty, within ``max_key_bytes``).
            value: Any MessagePack value (or of ``value_type``).
            ttl: Seconds until the key expires; None keeps it forever.
            expect_version: Compare-and-set: write only if the key's version is this
                (0: only if the key does not exist).

        Raises:
            InvalidKey, InvalidValue: Bad input; nothing was sent.
            VersionConflict: ``expect_version`` did not match; nothing was written.
            WriteFailed: The write or fsync failed; the key space refuses writes until the
                store is reopened.
        """
        args = self._put_args(key, value, ttl, expect_version)
        receipt: Receipt = self._execute(Command("put", args, {}, None, len(args[1])))
        return receipt

    def put_async(
        self,
        key: K,
        value: V,
        *,
        ttl: float | None = None,
        expect_version: int | None = None,
    ) -> Future[Receipt]:
        """Like :meth:`put`, but returns a future at once; many in flight share one fsync."""
        args = self._put_args(key, value, ttl, expect_version)
        future: Future[Receipt] = self._new_future()
        self._enqueue(Command("put", args, {}, future, len(args[1])))
        return future

    def delete(self, key: K, *, expect_version: int | None = None) -> Receipt | None:
        """Remove ``key``; returns once durable, or None if it did not exist (no write).

        Raises:
            InvalidKey: Bad key. VersionConflict: ``expect_version`` did not match.
        """
        self._check_key(key)
        check_expect(expect_version)
        receipt: Receipt | None = self._call_delete(key, expect_version)
        return receipt

    def delete_async(self, key: K, *, expect_version: int | None = None) -> Future[Receipt | None]:
        """Like :meth:`delete`, but returns a future at once."""
        self._check_key(key)
        check_expect(expect_version)
        return self._send_delete(key, expect_version)

    def increment(self, key: K, by: int = 1) -> int:
        """Add ``by`` to ``key``'s int value, atomically; returns the new value once durable.

        A missing key counts as 0. It runs in the key space's actor, so many threads
        incrementing one key never lose an update (no compare-and-set retry loop). The key
        keeps its expiry time.

        Raises:
            InvalidKey: Bad key. InvalidValue: ``by`` is not an int, the key holds
                something else, the sum does not fit in 64 bits, or ``value_type`` does not
                accept ints; nothing was written.
        """
        self._check_key(key)
        checked = self._check_increment(by)
        total: int = self._execute(Command("increment", (key, checked), {}, None))
        return total

    def operate(
        self, key: Any, operations: Iterable[Op], *, expect_version: int | None = None
    ) -> list[Any]:
        """Run record operations (see :mod:`actors.ops`) on ``key`` atomically, in order.

        ``ks.operate("u1", [ops.add("visits", 1), ops.read("visits")])`` returns one result
        per operation once the new value is durable. A missing key starts as ``{}``; the key
        keeps its expiry time; only reads: nothing is written.

        Raises:
            InvalidKey: Bad key. InvalidInput: ``operations`` holds something not made by
                ``actors.ops``. InvalidValue: An operation does not fit the record, or the
                result does not fit ``value_type``; nothing was written.
            VersionConflict: ``expect_version`` did not match; nothing was written.
        """
        self._check_key(key)
        if expect_version is not None:
            check_expect(expect_version)
        given: object = operations
        checked: list[object] = [given] if isinstance(given, Op) else list(operations)
        for op in checked:
            if not isinstance(op, Op):
                msg = f"operate takes operations made by actors.ops, got {op!r:.60}"
                raise InvalidInput(msg)
        if not checked:
            msg = "operate needs at least one operation"
            raise InvalidInput(msg)
        args = (key, checked, expect_version, self.encode_value)
        results: list[Any] = self._execute(Command("operate", args, {}, None))
        return results

    def transact(self, fn: Callable[[TransactionView, TransactionBatch], T]) -> T:
        """Run ``fn(view, batch)`` inside the key space's actor; returns what it returns.

        ``view`` (``get``, ``get_many``, ``in``, ``range``, ``prefix``) reads the latest
        state and the transaction's own writes; ``batch.put``, ``batch.delete`` and
        ``batch.increment`` (which returns the new value) are written as one record once
        ``fn`` returns, and the call returns when that record is durable. No other write
        to the key space runs meanwhile, so the transaction is serializable; keep ``fn``
        short, since writers wait for it. If ``fn`` raises, nothing is written and the
        exception reaches the caller. ``fn`` must not call this key space's handle
        (``InvalidOperation``: it would wait for itself).
        """
        self._check_open()
        unchecked: object = fn  # typed callers pass a function; untyped ones may not
        if not callable(unchecked):
            msg = f"transact() needs a function fn(view, batch), got {unchecked!r:.60}"
            raise InvalidInput(msg)
        result: T = self._execute(Command("transact", (fn, self), {}, None))
        return result

    def _check_increment(self, by: object) -> int:
        if isinstance(by, bool) or not isinstance(by, int):
            msg = f"increment by must be an int, got {by!r:.60}"
            raise InvalidValue(msg)
        if self._value_type is not None:
            self.encode_value(by)  # InvalidValue if the value type takes no ints
        return by

    def batch(self) -> WriteBatch:
        """An atomic batch: ``with ks.batch() as b: b.put(...); b.delete(...)``.

        Everything in the block is written as one log record when the block ends, or
        nothing is (if the block raises, or an ``expect_version`` fails).
        """
        return WriteBatch(self)

    def sweep(self) -> int:
        """Record the expiry of keys past their TTL now; returns how many were removed.

        The store does this periodically; expired keys are invisible to reads either way.
        """
        return int(self._actor.blocking.sweep())

    def clear(self) -> None:
        """Delete every key, atomically (one record)."""
        with self.batch() as batch:
            for key in self:
                batch.delete(key)

    def __setitem__(self, key: K, value: V) -> None:
        """``ks[key] = value``: a durable put."""
        self.put(key, value)

    def __delitem__(self, key: K) -> None:
        """``del ks[key]``: a durable delete; KeyError if missing."""
        if self.delete(key) is None:
            raise KeyError(key)

    # -- asyncio -----------------------------------------------------------------------------

    async def aput(
        self,
        key: K,
        value: V,
        *,
        ttl: float | None = None,
        expect_version: int | None = None,
    ) -> Receipt:
        """Awaitable :meth:`put`; the event loop keeps running while the write is durable."""
        receipt: Receipt = await self.put_async(key, value, ttl=ttl, expect_version=expect_version)
        return receipt

    async def adelete(self, key: K, *, expect_version: int | None = None) -> Receipt | None:
        """Awaitable :meth:`delete`."""
        receipt: Receipt | None = await self.delete_async(key, expect_version=expect_version)
        return receipt

    async def aget(self, key: K, default: V | None = None) -> V | None:
        """Awaitable :meth:`get` (reads never wait for the actor, so this never blocks)."""
        return self.get(key, default)

    # -- misc --------------------------------------------------------------------------------

    @property
    def last_seq(self) -> int:
        """Sequence number of the newest record written to this key space's log."""
        return self._actor.last_seq

    def snapshot(self) -> SnapshotInfo:
        """Take a snapshot now and return once it is durable.

        Writers pause while the committed entries are captured (two lists of references:
        ~0.2 s for 1,000,000 keys); encoding and writing happen in the background. The
        next open loads it and replays only the records after ``seq``.

        Raises:
            KeyspaceClosed: The key space was closed or dropped.
            OpenFailed: The snapshot could not be written (nothing was listed).
        """
        self._check_open()
        info: SnapshotInfo = self._actor.snapshot().get()
        return info

    def compact(self) -> CompactionReport:
        """Apply the retention policy now: delete whole segments it no longer needs."""
        self._check_open()
        return self._actor.compact()

    def stats(self) -> ActorStats:
        """The key space actor's counters (see :class:`actors.ActorStats`)."""
        return self._actor.stats()

    def __repr__(self) -> str:
        if self._closed is not None:
            return f"<KeySpace {self.name!r} closed>"
        return f"<KeySpace {self.name!r} keys={len(self)} last_seq={self.last_seq}>"

    # -- lifecycle (called by the Store) -----------------------------------------------------

    def close(self, kind: type[KeyspaceClosed], message: str) -> None:
        """Make every later read and write raise ``kind(message)``; the Store stops the actor.

        A closed handle must not answer from its frozen state: after a reopen elsewhere
        that would be old data.
        """
        self._closed = (kind, message)
        self._actor.refuse(kind, message)
        self._entries_get = self._refuse_read  # get stays free of an extra check

    def forsake(self, message: str) -> None:
        """In a forked child: refuse every use with ``StoreForked``; take no lock."""
        self._closed = (StoreForked, message)
        self._actor.forsake(message)
        self._entries_get = self._refuse_read

    def _refuse_read(self, _key: Any) -> StoredEntry | None:
        self._check_open()
        return None

    def _check_open(self) -> None:
        if self._closed is not None:
            kind, message = self._closed
            raise kind(message)

    # -- input checks (caller's thread) ------------------------------------------------------

    def _check_key_type(self, key: Any) -> None:
        if not isinstance(key, self._key_type) or isinstance(key, bool):
            msg = (
                f"key {key!r:.60} is {type(key).__name__}; key space {self.name!r} takes "
                f"{self._key_type.__name__} keys"
            )
            raise InvalidKey(msg)

    def _check_key(self, key: Any) -> None:
        key_type = type(key)
        if key_type is str and self._key_type is str and key.isascii():  # the usual key
            if 0 < len(key) <= self._max_key_bytes:  # ASCII text is its own UTF-8
                return
        elif key_type is not self._key_type:  # the exact type needs no further check
            self._check_key_type(key)
        if isinstance(key, str):
            try:
                # ASCII text is its own UTF-8 (and isascii() is a flag check, O(1)).
                size = len(key) if key.isascii() else len(key.encode())
            except UnicodeEncodeError as exc:
                msg = f"key {key!r:.60} is not valid Unicode text (lone surrogate?): {exc}"
                raise InvalidKey(msg) from exc
        else:
            size = len(key)
        if size == 0:
            msg = "keys cannot be empty"
            raise InvalidKey(msg)
        if size > self._max_key_bytes:
            msg = (
                f"key of {size} bytes is over the {self._max_key_bytes}-byte limit (max_key_bytes)"
            )
            raise InvalidKey(msg)

    def encode_value(self, value: Any) -> msgspec.Raw:
        """Encode and check a value as a put would (InvalidValue if it cannot be stored)."""
        raw = encode_value(value)
        if len(raw) > self._max_value_bytes:
            msg = (
                f"value of {len(raw)} bytes (encoded) is over the "
                f"{self._max_value_bytes}-byte limit (max_value_bytes)"
            )
            raise InvalidValue(msg)
        if self._value_type is not None:
            try:
                self._check_value(raw)
            except msgspec.ValidationError as exc:
                msg = f"value does not match value_type {self.options.value_type!r}: {exc}"
                raise InvalidValue(msg) from exc
        return raw

    def _put_args(
        self, key: Any, value: Any, ttl: float | None, expect_version: int | None
    ) -> tuple[Any, msgspec.Raw, float | None, int | None]:
        self._check_key(key)
        if expect_version is not None:
            check_expect(expect_version)
        expires_at = None
        if ttl is not None:
            expires_at = self._clock() + check_ttl(ttl)
            if not math.isfinite(expires_at):
                msg = f"ttl={ttl!r} puts the expiry past the largest time a float holds"
                raise InvalidValue(msg)
        return key, self.encode_value(value), expires_at, expect_version
