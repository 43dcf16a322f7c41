"""The sorted key-value state of one key space: durable entries plus the open group's changes.

Two layers, so that readers never see a write before it is durable:

* ``entries``: a ``SortedDict`` of committed (durable) entries. Every reader reads only this.
* ``pending``: a plain dict of the changes of the group being written (key -> entry, or None
  for a deletion). Only the writer (the key space's actor) reads it, to check versions.

When a group is durable, :meth:`KVState.commit` moves ``pending`` into ``entries`` under
``lock``, all at once, so no reader sees part of a group (and so never part of a batch).

:meth:`KVState.apply` is the fold of the key-value events (``storage.codec``) into the
state, the same live and on replay: the key space's actor and the CLI both use it.

Readers and the lock:

* :meth:`get` takes no lock: one ``dict.get`` is atomic under the GIL, and an entry object
  is never mutated after it is stored (a write stores a new one). But a commit moves a
  group key by key, so a lock-free read could see key A's new value and then key B's old
  one from the same group. ``publishing`` is set for the whole of a commit: a reader that
  finds it set after its lookup reads again under ``lock`` (which the commit holds), so
  once it has seen any write of a group it sees all of them (a seqlock, in effect).
* :meth:`scan` and :meth:`get_many` are each one consistent snapshot, between two groups,
  however many keys they cover: they note the last committed seq and pin it, then resolve
  ``SCAN_CHUNK`` keys at a time under ``lock``, as of that seq, from the recent versions
  (``storage/kv_versions.py``), which keep every change after a pinned seq. So a commit
  waits at most one chunk (~0.1-0.2 ms), never a whole scan. Values are decoded after the
  lock is released. :meth:`__len__` is O(log n) under the lock.

Threads: the writer methods (``stage_*``, ``apply*``, ``commit``, ``discard``) run one at a
time, in whichever thread holds the key space's execution right (the single writer). The
reader methods are safe from any thread.
"""

from __future__ import annotations

import heapq
import math
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from itertools import chain, islice
from typing import Any

import msgspec
from sortedcontainers import SortedDict, SortedList

from storage.codec import Batch, Delete, Expired, KVEvent, Put
from storage.kv_index import Indexes
from storage.kv_versions import (
    DEFAULT_RECENT_VERSIONS,
    RecentVersions,
    ScanPin,
    Tombstone,
    state_before,
)

__all__ = ["Entry", "KVState"]


class Entry(msgspec.Struct, frozen=True, gc=False, array_like=True):
    """One key's committed value (56 bytes: no GC header, five slots).

    Attributes:
        value: The value: MessagePack bytes decoded on every read, or, if ``decoded``,
            the value itself (only immutable ones: bytes, str, numbers, bools, None).
        version: How many times the key was written since it last did not exist (1 on
            creation).
        seq: Sequence number of the log record that wrote it.
        expires_at: When it stops being visible (seconds since the epoch), or None.
        decoded: Whether ``value`` is already decoded.
    """

    value: Any
    version: int
    seq: int
    expires_at: float | None = None
    decoded: bool = False

    def expired(self, now: float) -> bool:
        """Whether the entry is past its ``expires_at`` at ``now``."""
        return self.expires_at is not None and self.expires_at <= now


class KVState:
    """Sorted, versioned key-value state with a durable layer and a pending layer."""

    __slots__ = (
        "clock",
        "decode_scalars",
        "entries",
        "expiring",
        "generation",
        "indexes",
        "lock",
        "pending",
        "pending_ttl",
        "publishing",
        "seq",
        "staged",
        "track_from",
        "tracking",
        "versions",
    )

    def __init__(
        self,
        clock: Callable[[], float] = time.time,
        *,
        decode_scalars: bool = True,
        recent_versions: int = DEFAULT_RECENT_VERSIONS,
    ) -> None:
        """Start empty.

        Args:
            clock: Decides expiry (injectable for tests).
            decode_scalars: Keep immutable scalar values decoded (see :meth:`apply`); off
                when reads decode to a ``value_type``, which may turn a str into a datetime.
            recent_versions: How many changes to keep in memory for reads as of a past
                seq (see ``storage/kv_versions.py``).
        """
        self.clock = clock
        self.decode_scalars = decode_scalars
        self.entries: SortedDict = SortedDict()
        self.expiring: SortedList = SortedList()  # (expires_at, key) of committed TTL entries
        self.pending: dict[Any, Entry | None] = {}
        self.pending_ttl = False  # whether some staged entry has an expiry time
        self.lock = threading.Lock()
        # Set while commit() moves a group into entries (see the module notes).
        self.publishing = False
        # Odd while a commit changes entries or versions (a seqlock): a lock-free reader of
        # a past point retries under the lock if it changed during the read.
        self.generation = 0
        self.seq = 0
        """The last record whose changes are committed (published to readers)."""
        self.versions = RecentVersions(0, recent_versions)
        # Changes staged for the open group, (seq, key, new state), kept in ``versions`` at
        # commit; only those of records above ``track_from`` (none during a replay, which
        # would otherwise hold every change of the log here at once).
        self.staged: list[tuple[int, Any, Entry | Tombstone]] = []
        self.track_from = NOT_TRACKING
        self.tracking = False  # whether versions holds every change after its horizon
        # Secondary indexes (storage/kv_index.py), attached once the state is recovered.
        self.indexes: Indexes | None = None

    # -- writer side (one thread) ------------------------------------------------------------

    def stored(self, key: Any) -> Entry | None:
        """The entry of ``key`` as the writer sees it (pending first), expired or not. O(1)."""
        pending = self.pending
        return pending[key] if key in pending else self.entries.get(key)

    def current(self, key: Any, now: float) -> Entry | None:
        """The live entry of ``key`` as the writer sees it, or None if absent or expired."""
        entry = self.stored(key)
        if entry is None or entry.expired(now):
            return None
        return entry

    def stage_put(
        self, key: Any, value: Any, seq: int, expires_at: float | None, *, decoded: bool = False
    ) -> Entry:
        """Stage a write of ``key``; returns the new entry. O(1).

        The version counts on from the stored entry even if it has expired: expiry changes
        versions only through an explicit deletion, so replay never depends on the clock.
        """
        previous = self.stored(key)
        version = 1 if previous is None else previous.version + 1
        entry = Entry(value, version, seq, expires_at, decoded)
        self.pending[key] = entry
        if seq > self.track_from:
            self.staged.append((seq, key, entry))
        if expires_at is not None:
            self.pending_ttl = True
        return entry

    def apply(self, event: KVEvent, seq: int) -> None:
        """Stage the changes of one key-value event written as record ``seq``.

        Immutable scalar values (see ``SCALAR_MARKERS``) are decoded here, once, when
        ``decode_scalars`` is on, so a get of them is a dict lookup.
        """
        match event:
            case Put():
                self._stage_encoded_put(event, seq)
            case Delete(key=key):
                self.stage_delete(key, seq)
            case Expired(keys=keys):
                for key in keys:
                    self.stage_delete(key, seq, expired=True)
            case Batch(events=events):
                stage_put = self._stage_encoded_put
                for inner in events:  # a batch's hot loop: no match, no recursion
                    if type(inner) is Put:
                        stage_put(inner, seq)
                    else:
                        self.apply(inner, seq)

    def apply_records(self, records: Iterable[tuple[int, Iterable[KVEvent]]]) -> None:
        """Stage many records' events, ``(seq, events)`` each: replay's hot loop.

        The same as :meth:`apply` for each event, with the common event (a put) staged
        inline: 3.6 -> ~2 us a record when replaying single puts.
        """
        pending, entries = self.pending, self.entries
        decode_scalars, apply = self.decode_scalars, self.apply
        track_from, stage = self.track_from, self.staged.append
        tracking = self.tracking
        ttl = False
        for seq, events in records:
            if seq > track_from and not tracking:  # a replay reached the records to keep
                if ttl:  # the commit below must index the expiry of what it publishes
                    self.pending_ttl = True
                    ttl = False
                self._begin_tracking(seq - 1)
                tracking = True
            for event in events:
                if type(event) is not Put:
                    apply(event, seq)
                    continue
                data = bytes(event.value)
                key = event.key
                previous = pending[key] if key in pending else entries.get(key)
                version = 1 if previous is None else previous.version + 1
                expires_at = event.expires_at
                if decode_scalars and data[0] in SCALAR_MARKERS:
                    entry = Entry(_decode(data), version, seq, expires_at, True)  # noqa: FBT003
                else:
                    entry = Entry(data, version, seq, expires_at)
                pending[key] = entry
                if seq > track_from:
                    stage((seq, key, entry))
                if expires_at is not None:
                    ttl = True
        if ttl:
            self.pending_ttl = True

    def _stage_encoded_put(self, put: Put, seq: int) -> None:
        # stage_put, inlined: once per put of every batch and of every replayed record.
        data = bytes(put.value)
        key = put.key
        pending = self.pending
        previous = pending[key] if key in pending else self.entries.get(key)
        version = 1 if previous is None else previous.version + 1
        expires_at = put.expires_at
        if self.decode_scalars and data[0] in SCALAR_MARKERS:
            entry = Entry(_decode(data), version, seq, expires_at, True)  # noqa: FBT003
        else:
            entry = Entry(data, version, seq, expires_at)
        pending[key] = entry
        if seq > self.track_from:
            self.staged.append((seq, key, entry))
        if expires_at is not None:
            self.pending_ttl = True

    def stage_delete(self, key: Any, seq: int = 0, *, expired: bool = False) -> None:
        """Stage the removal of ``key`` by record ``seq`` (``expired``: by its TTL). O(1)."""
        self.pending[key] = None
        if seq > self.track_from:
            self.staged.append((seq, key, Tombstone(seq, expired)))

    def commit(self, first: int = 0, last: int = 0, time: float = 0.0) -> None:
        """Publish every staged change to readers at once, as records ``first..last``.

        ``time`` is the records' commit time (kept for reads as of a time). O(k log n) for
        k changes; a group larger than a tenth of the state (replay, a big batch) is merged
        in bulk instead, one sort of all keys: replaying 1,000,000 puts took 3.1 s with a
        per-key insert and 0.8 s merged in bulk.
        """
        pending = self.pending
        with self.lock:
            self.publishing = True
            self.generation += 1
            try:
                self._keep_history(first, last, time)  # first: it reads the old entries
                if pending:
                    self._publish(pending)
                versions = self.versions
                if len(versions.changes) > versions.limit:
                    versions.evict(self.entries)
            finally:
                self.generation += 1
                self.publishing = False
        pending.clear()
        self.staged.clear()
        self.pending_ttl = False
        if self.indexes is not None:
            self.indexes.forget_prepared()

    def _keep_history(self, first: int, last: int, time: float) -> None:
        """Keep the group's changes and times in ``versions``; advance ``seq``. Under lock."""
        staged, versions = self.staged, self.versions
        if staged:
            versions.record(self.entries, staged)
            last = max(last, staged[-1][0])
        if first > self.track_from and last >= first:
            versions.record_times(first, last, time)
        self.seq = max(self.seq, last)

    def _publish(self, pending: dict[Any, Entry | None]) -> None:
        """Move the group's changes into ``entries``. Under lock, ``publishing`` set."""
        entries = self.entries
        if self.indexes:
            self.indexes.publish(pending)  # first: it must see which keys are removed
        if self.expiring or self.pending_ttl:  # else no entry, old or new, has a TTL
            self._reindex_expiring(pending)
        if len(pending) * 10 > len(entries):
            # SortedDict.update re-sorts every key once the new ones are a tenth or more.
            for key in [key for key, entry in pending.items() if entry is None]:
                entries.pop(key, None)
                del pending[key]
            entries.update(pending)
        else:
            replace = dict.__setitem__  # SortedDict is a dict: a key it holds keeps
            for key, entry in pending.items():  # its place, only the value changes
                if entry is None:
                    entries.pop(key, None)
                elif key in entries:
                    replace(entries, key, entry)
                else:
                    entries[key] = entry

    def _reindex_expiring(self, pending: dict[Any, Entry | None]) -> None:
        """Move the expiry index from the committed entries to ``pending``'s. Under lock."""
        entries, expiring = self.entries, self.expiring
        for key, entry in pending.items():
            old = entries.get(key)
            if old is not None and old.expires_at is not None:
                expiring.remove((old.expires_at, key))
            if entry is not None and entry.expires_at is not None:
                expiring.add((entry.expires_at, key))

    def track_after(self, seq: int) -> None:
        """Before a replay: keep the changes of the records after ``seq`` (the last few)."""
        self.track_from = seq

    def _begin_tracking(self, seq: int) -> None:
        """Mid-replay: publish what came before record ``seq + 1``, and keep what follows."""
        if self.pending:
            self.commit(0, seq)
        self.seq = max(self.seq, seq)
        self.versions.reset(self.seq)
        self.tracking = True

    def start_tracking(self) -> None:
        """Keep the changes of every record from now on (after a replay)."""
        if not self.tracking:
            self.versions.reset(self.seq)
            self.tracking = True
        self.track_from = self.seq

    def discard(self) -> None:
        """Drop every staged change (their write failed)."""
        self.pending.clear()
        self.staged.clear()
        self.pending_ttl = False
        if self.indexes is not None:
            self.indexes.forget_prepared()

    def has_expired(self, now: float) -> bool:
        """Whether some committed key has expired by ``now`` (safe from any thread). O(1)."""
        with self.lock:
            return bool(self.expiring) and self.expiring[0][0] <= now

    def expired_keys(self, now: float) -> list[Any]:
        """Committed keys whose ``expires_at`` is at or before ``now``, oldest first."""
        stop = self.expiring.bisect_left((math.nextafter(now, math.inf),))
        return [key for _, key in islice(self.expiring, stop)]

    # -- reader side (any thread) ------------------------------------------------------------

    def get(self, key: Any) -> Entry | None:
        """The committed, unexpired entry of ``key``, or None. O(1), lock-free."""
        entry: Entry | None = self.entries.get(key)
        if self.publishing:  # maybe mid-group: read again once the group is whole
            entry = self.get_published(key)
        if entry is None:
            return None
        expires_at = entry.expires_at
        if expires_at is not None and expires_at <= self.clock():
            return None
        return entry

    def get_published(self, key: Any) -> Entry | None:
        """The committed entry of ``key`` (expired or not), read under ``lock``.

        For lock-free readers that found ``publishing`` set: waits for the commit to end.
        """
        with self.lock:
            entry: Entry | None = self.entries.get(key)
            return entry

    def get_many(self, keys: Iterable[Any]) -> dict[Any, Entry]:
        """The committed, unexpired entries of ``keys`` that exist, as one snapshot."""
        with self.lock:
            pin = self.pin(self.seq)
        return self._get_many_pinned(list(keys), pin, self.clock())

    def scan(
        self,
        start: Any = None,
        stop: Any = None,
        *,
        reverse: bool = False,
        limit: int | None = None,
    ) -> Iterator[tuple[Any, Entry]]:
        """Committed, unexpired ``(key, entry)`` with ``start <= key < stop``, in key order.

        ``None`` leaves that end open. One consistent snapshot, as of the moment of the
        call, however long the iteration takes; the lock is held for one chunk of keys at a
        time (see :meth:`scan_at`). O(log n + m) for m results.
        """
        return chain.from_iterable(self.scan_chunks(start, stop, reverse=reverse, limit=limit))

    def scan_chunks(
        self,
        start: Any = None,
        stop: Any = None,
        *,
        reverse: bool = False,
        limit: int | None = None,
    ) -> Iterator[list[tuple[Any, Entry]]]:
        """:meth:`scan`, a chunk (a list) at a time: one generator step per chunk."""
        with self.lock:
            pin = self.pin(self.seq)
        return self._scan_chunks(pin, start, stop, self.clock(), reverse, limit)

    def pin(self, seq: int) -> ScanPin:
        """Keep the changes after ``seq`` in memory while the returned pin lives. Under lock."""
        return ScanPin(self.versions.pins, seq)

    def pin_at(self, seq: int) -> ScanPin | None:
        """A pin of ``seq`` if the kept versions reach back to it, else None."""
        with self.lock:
            if seq < self.versions.horizon:
                return None
            return ScanPin(self.versions.pins, seq)

    def scan_at(
        self,
        pin: ScanPin,
        start: Any,
        stop: Any,
        now: float,
        *,
        reverse: bool = False,
        limit: int | None = None,
    ) -> Iterator[tuple[Any, Entry]]:
        """``(key, entry)`` as of ``pin.seq`` (pinned, >= the horizon), alive at ``now``.

        Keys are resolved ``SCAN_CHUNK`` at a time under the lock (about 0.2 ms), so a
        writer waits at most that long however large the range; between chunks the pinned
        seq keeps every change after it in memory, so later chunks still see that point.
        """
        return chain.from_iterable(self._scan_chunks(pin, start, stop, now, reverse, limit))

    def _scan_chunks(
        self,
        pin: ScanPin,
        start: Any,
        stop: Any,
        now: float,
        reverse: bool,
        limit: int | None,
    ) -> Iterator[list[tuple[Any, Entry]]]:
        seq = pin.seq
        remaining = math.inf if limit is None else limit
        low, high, inclusive = start, stop, (True, False)
        try:
            while remaining > 0:
                keys, found = self._scan_chunk(seq, low, high, inclusive, reverse)
                if not keys:
                    return
                alive = [
                    (key, entry)
                    for key, entry in found
                    if entry is not None and (entry.expires_at is None or entry.expires_at > now)
                ]
                if len(alive) >= remaining:
                    yield alive[: int(remaining)]
                    return
                remaining -= len(alive)
                if alive:
                    yield alive
                if len(keys) < SCAN_CHUNK:
                    return
                if reverse:
                    high, inclusive = keys[-1], (inclusive[0], False)
                else:
                    low, inclusive = keys[-1], (False, inclusive[1])
        finally:
            pin.release()

    def _scan_chunk(
        self,
        seq: int,
        low: Any,
        high: Any,
        inclusive: tuple[bool, bool],
        reverse: bool,
    ) -> tuple[list[Any], list[tuple[Any, Entry | None]]]:
        """The next ``SCAN_CHUNK`` keys in range and their entries as of ``seq``."""
        entries, versions = self.entries, self.versions
        with self.lock:
            keys = list(islice(entries.irange(low, high, inclusive, reverse), SCAN_CHUNK))
            ghosts = versions.ghosts
            if ghosts:  # removed keys: a point before their removal still holds them
                removed = list(islice(ghosts.irange(low, high, inclusive, reverse), SCAN_CHUNK))
                if removed:
                    keys = list(heapq.merge(keys, removed, reverse=reverse))[:SCAN_CHUNK]
            if versions.by_key:
                return keys, versions.states_at(entries, keys, seq)
            # Nothing changed since the horizon: the entries are the state at every seq.
            return keys, list(zip(keys, map(entries.__getitem__, keys), strict=True))

    def get_at(self, key: Any, seq: int, now: float) -> Any:
        """``key``'s entry as of ``seq`` if alive at ``now``, else None.

        ``BELOW_HORIZON`` if the kept versions do not reach back to ``seq``. Lock-free
        unless a commit runs meanwhile (then read again under the lock): 0.3 us.
        """
        generation = self.generation
        versions = self.versions
        if not generation & 1 and seq >= versions.horizon:
            states = versions.by_key.get(key)
            try:
                if states is None:
                    entry = self.entries.get(key)
                else:  # a commit may trim the list under the bisection: then read again
                    state = states[-1]
                    if state.seq > seq:
                        state = state_before(states, seq)
                    entry = None if type(state) is Tombstone else state
            except IndexError:
                entry = None
                generation = -1
            if self.generation != generation:  # a commit ran meanwhile: read again
                entry = self._get_at_locked(key, seq)
        else:
            entry = self._get_at_locked(key, seq)
        if entry is BELOW_HORIZON or entry is None:
            return entry
        if entry.expires_at is not None and entry.expires_at <= now:
            return None
        return entry

    def _get_at_locked(self, key: Any, seq: int) -> Any:
        with self.lock:
            if seq < self.versions.horizon:
                return BELOW_HORIZON
            return self.versions.state_at(self.entries, key, seq)

    def get_many_at(self, keys: Iterable[Any], seq: int, now: float) -> Any:
        """The entries of ``keys`` alive as of ``seq`` at ``now``, as one snapshot.

        ``BELOW_HORIZON`` if the kept versions do not reach back to ``seq``.
        """
        pin = self.pin_at(seq)
        if pin is None:
            return BELOW_HORIZON
        return self._get_many_pinned(list(keys), pin, now)

    def _get_many_pinned(self, keys: list[Any], pin: ScanPin, now: float) -> dict[Any, Entry]:
        """Look ``keys`` up as of ``pin.seq``, ``SCAN_CHUNK`` per hold of the lock."""
        entries, versions, seq = self.entries, self.versions, pin.seq
        found: dict[Any, Entry] = {}
        try:
            for start in range(0, len(keys), SCAN_CHUNK):
                with self.lock:
                    state_at = versions.state_at
                    chunk = [
                        (key, state_at(entries, key, seq))
                        for key in keys[start : start + SCAN_CHUNK]
                    ]
                found.update(
                    (key, entry)
                    for key, entry in chunk
                    if entry is not None and (entry.expires_at is None or entry.expires_at > now)
                )
        finally:
            pin.release()
        return found

    def __len__(self) -> int:
        """Committed, unexpired keys. O(log n)."""
        now = self.clock()
        with self.lock:
            expired: int = self.expiring.bisect_left((math.nextafter(now, math.inf),))
            return len(self.entries) - expired

    def _check(self) -> None:
        """Assert every invariant (for tests): the expiry index matches the entries."""
        with self.lock:
            expected = sorted(
                (entry.expires_at, key)
                for key, entry in self.entries.items()
                if entry.expires_at is not None
            )
            assert list(self.expiring) == expected
            self.entries._check()  # sortedcontainers' own invariant check


BELOW_HORIZON: Any = object()  # a read as of a point the kept versions do not reach
NOT_TRACKING = 2**63  # a track_from no seq passes: keep no changes
SCAN_CHUNK = 512  # keys resolved per hold of the lock: ~0.1-0.2 ms

# First bytes of MessagePack scalars whose Python value is immutable: nil, bools, ints,
# floats, str, bin. Such values are decoded once when written, not on every read, so a get
# is a dict lookup (40% of a get's time was the decode). Arrays, maps and extension types
# (lists, dicts, datetimes) stay encoded: a reader gets a fresh copy it may mutate.
SCALAR_MARKERS = frozenset(
    [
        *range(0x80),  # positive fixint
        *range(0xA0, 0xC0),  # fixstr
        0xC0,
        0xC2,
        0xC3,  # nil, false, true
        0xC4,
        0xC5,
        0xC6,  # bin 8/16/32
        0xCA,
        0xCB,  # float 32/64
        *range(0xCC, 0xD4),  # uint/int 8-64
        0xD9,
        0xDA,
        0xDB,  # str 8/16/32
        *range(0xE0, 0x100),  # negative fixint
    ]
)
_decode = msgspec.msgpack.Decoder().decode
