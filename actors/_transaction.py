"""ks.transact(fn): a function run inside the key space's actor, its writes one record.

``fn(view, batch)`` runs while the caller holds the key space's execution right, so no other
command interleaves: it is serializable. ``view`` reads the latest state, including writes
of the open group that are not durable yet (if that group fails, so does the transaction,
whose answer waits for the same fsync), and the transaction's own earlier writes. Its writes
(``batch.put``, ``batch.delete``, ``batch.increment``) are checked as they are made and
become one ``Batch`` record when ``fn`` returns; if ``fn`` raises, nothing is written and
the caller gets the exception.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any

from actors._keyspace_actor import BatchOp, DeleteOp, PutOp, counter_value
from actors._keyspace_input import check_expect, prefix_end
from storage.kvstate import Entry, KVState

if TYPE_CHECKING:
    from actors._keyspace import KeySpace

__all__ = ["TransactionBatch", "TransactionView"]

_DELETED: Any = object()


class TransactionBatch:
    """The writes of one transaction, in order; the view sees them at once."""

    def __init__(self, keyspace: KeySpace, view: TransactionView) -> None:
        self._keyspace = keyspace
        self._view = view
        self.ops: list[BatchOp] = []

    def put(
        self, key: Any, value: Any, *, ttl: float | None = None, expect_version: int | None = None
    ) -> None:
        """Write ``key`` (checked now, as ``ks.put`` checks it)."""
        op = PutOp(*self._keyspace._put_args(key, value, ttl, expect_version))
        self.ops.append(op)
        self._view.written[op.key] = Entry(bytes(op.value), 0, 0, op.expires_at)

    def delete(self, key: Any, *, expect_version: int | None = None) -> None:
        """Remove ``key`` (a missing key is skipped unless ``expect_version`` says otherwise)."""
        self._keyspace._check_key(key)
        check_expect(expect_version)
        self.ops.append(DeleteOp(key, expect_version))
        self._view.written[key] = _DELETED

    def increment(self, key: Any, by: int = 1) -> int:
        """Add ``by`` to ``key``'s int value as the transaction sees it; returns the sum."""
        keyspace = self._keyspace
        keyspace._check_key(key)
        step = keyspace._check_increment(by)
        entry = self._view.entry(key)
        total = step if entry is None else counter_value(key, entry) + step
        expires_at = None if entry is None else entry.expires_at
        raw = keyspace.encode_value(total)
        self.ops.append(PutOp(key, raw, expires_at, None))
        self._view.written[key] = Entry(bytes(raw), 0, 0, expires_at)
        return total

    def __len__(self) -> int:
        return len(self.ops)


class TransactionView:
    """The key space as the transaction sees it: latest state plus its own writes."""

    def __init__(self, keyspace: KeySpace, state: KVState, now: float) -> None:
        self._keyspace = keyspace
        self._state = state
        self._now = now
        self.written: dict[Any, Any] = {}  # key -> Entry (unversioned) or _DELETED

    def entry(self, key: Any) -> Entry | None:
        """The stored entry of ``key`` as the transaction sees it (alive at its start)."""
        written = self.written.get(key)
        if written is not None:
            return None if written is _DELETED else written
        return self._state.current(key, self._now)

    def get(self, key: Any, default: Any = None) -> Any:
        """The value of ``key``, or ``default``."""
        self._keyspace._check_key_type(key)
        entry = self.entry(key)
        return default if entry is None else self._keyspace._value(key, entry)

    def get_many(self, keys: Iterable[Any]) -> dict[Any, Any]:
        """The values of those ``keys`` that exist."""
        found = {}
        for key in keys:
            self._keyspace._check_key_type(key)
            entry = self.entry(key)
            if entry is not None:
                found[key] = self._keyspace._value(key, entry)
        return found

    def __contains__(self, key: object) -> bool:
        if not isinstance(key, self._keyspace._key_type):
            return False
        return self.entry(key) is not None

    def range(
        self,
        start: Any = None,
        stop: Any = None,
        *,
        reverse: bool = False,
        limit: int | None = None,
    ) -> Iterator[tuple[Any, Any]]:
        """``(key, value)`` for ``start <= key < stop`` in key order, as seen from here.

        O(m log m) for m keys in range, with the key space's writers waiting meanwhile.
        """
        keyspace = self._keyspace
        keyspace._check_range(start, stop, limit)
        state = self._state
        keys = set(state.entries.irange(start, stop, inclusive=(True, False)))
        for changed in (state.pending, self.written):
            keys.update(key for key in changed if _within(key, start, stop))
        found: list[tuple[Any, Any]] = []
        wanted = math.inf if limit is None else limit
        for key in sorted(keys, reverse=reverse):
            if len(found) >= wanted:
                break
            entry = self.entry(key)
            if entry is not None:
                found.append((key, keyspace._value(key, entry)))
        return iter(found)

    def prefix(
        self, prefix: Any, *, reverse: bool = False, limit: int | None = None
    ) -> Iterator[tuple[Any, Any]]:
        """``(key, value)`` for every key starting with ``prefix``, in key order."""
        self._keyspace._check_key_type(prefix)
        return self.range(prefix or None, prefix_end(prefix), reverse=reverse, limit=limit)


def _within(key: Any, start: Any, stop: Any) -> bool:
    return (start is None or key >= start) and (stop is None or key < stop)
