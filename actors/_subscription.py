"""Subscriptions: every durable change of a log, in order, to every subscriber, however slow.

A subscription is at a *position*: the next seq it delivers. While it keeps up it is *live*:
the writer hands it each published group (already decoded, in memory) through a listener,
and it queues them, up to ``LIVE_LIMIT`` events. A group that does not fit, or that does not
follow the last one queued, is not queued: the subscription falls back to *reading the log*
from its position, ``LOG_CHUNK`` records at a time, up to the last published record, and
goes live again once it has caught up. The log is the buffer, so nothing is ever dropped and
a subscription holds at most ``LIVE_LIMIT`` queued events plus one chunk, whatever the
writers do. Only published (durable) records are delivered, each exactly once.

While a subscription is open, retention keeps the records from its position on; a *named*
subscription's acknowledged position is durable (``storage/positions.py``), so retention
keeps what it has not acknowledged even while it is not running, and it resumes there.
"""

from __future__ import annotations

import asyncio
import threading
import weakref
from collections import deque
from collections.abc import Callable, Iterator
from types import TracebackType
from typing import TYPE_CHECKING, Any, Generic, Literal, TypeVar

import msgspec

from actors._core import decode_chunk
from storage._reading import LogCursor
from storage.codec import Batch, Delete, Expired, Put
from storage.errors import HistoryUnavailable, InvalidInput, KeyspaceClosed
from storage.positions import Positions

if TYPE_CHECKING:  # Python 3.10 has no typing.Self
    from typing_extensions import Self

    from actors._core import ActorCore, Published

__all__ = ["ActorEvent", "Change", "Subscription", "actor_events", "keyspace_changes"]

T = TypeVar("T")
LIVE_LIMIT = 10_000  # events queued for a live subscriber before it reads the log instead
LOG_CHUNK = 1_024  # records read from the log at a time while catching up
_POLL = 0.25  # seconds an async waiter's thread waits before checking for cancellation
Expander = Callable[[int, float, tuple[Any, ...]], list[Any]]


class Change(msgspec.Struct, frozen=True):
    """One change of a key space, as a subscription delivers it.

    Attributes:
        seq: The record that made it (the changes of one batch share it, in batch order).
        time: The record's commit time.
        key: The key.
        op: ``"put"``, ``"delete"`` or ``"expire"``.
        value: The value put (None unless a put).
        version: The key's version after it (0 after a removal; 0 for puts written before
            records carried versions).
        expires_at: The expiry the put set, or None.
    """

    seq: int
    time: float
    key: Any
    op: Literal["put", "delete", "expire"]
    value: Any
    version: int
    expires_at: float | None = None


class ActorEvent(msgspec.Struct, frozen=True):
    """One event of a custom actor, as a subscription delivers it."""

    seq: int
    time: float
    event: Any


def keyspace_changes(
    decode: Callable[[Any, bytes], Any],
    prefix: Any = None,
    public_key: Callable[[Any], Any] | None = None,
) -> Expander:
    """How a key space's records become :class:`Change` items.

    ``prefix`` filters the stored keys; ``public_key`` turns a stored key into the caller's
    (tuple key spaces unpack theirs).
    """

    def expand(seq: int, time: float, events: tuple[Any, ...]) -> list[Change]:
        found: list[Change] = []
        for event in events:
            _changes(event, seq, time, decode, found)
        if prefix is not None:
            found = [change for change in found if change.key.startswith(prefix)]
        if public_key is not None:
            found = [
                msgspec.structs.replace(change, key=public_key(change.key)) for change in found
            ]
        return found

    return expand


def _changes(
    event: Any, seq: int, time: float, decode: Callable[[Any, bytes], Any], out: list[Change]
) -> None:
    if type(event) is Put:
        value = decode(event.key, bytes(event.value))
        out.append(Change(seq, time, event.key, "put", value, event.version, event.expires_at))
    elif type(event) is Delete:
        out.append(Change(seq, time, event.key, "delete", None, 0))
    elif type(event) is Expired:
        out.extend(Change(seq, time, key, "expire", None, 0) for key in event.keys)
    elif type(event) is Batch:
        for inner in event.events:
            _changes(inner, seq, time, decode, out)


def actor_events(seq: int, time: float, events: tuple[Any, ...]) -> list[ActorEvent]:
    """How a custom actor's records become :class:`ActorEvent` items."""
    return [ActorEvent(seq, time, event) for event in events]


class Subscription(Generic[T]):
    """An iterator (and async iterator) of one log's changes from a position on.

    Thread-safe to close from any thread; iterate it from one thread (or task) at a time.
    """

    def __init__(
        self,
        core: ActorCore,
        expand: Callable[[int, float, tuple[Any, ...]], list[T]],
        from_seq: int | None,
        *,
        name: str | None = None,
        positions: Positions | None = None,
    ) -> None:
        """Use ``KeySpace.subscribe`` or ``ActorHandle.subscribe``."""
        self._core = core
        self._expand = expand
        self.name = name
        self._positions = positions
        # Hold retention back before the position is checked (a snapshot may drop segments
        # meanwhile); until it is known, everything is held. Weakly: a subscription dropped
        # without close() must not be kept alive, nor hold retention, by the writer.
        self._next = 1
        self._listener = _weak_listener(core, self)
        self._holding = object()
        core.holds[self._holding] = self._listener.needed
        weakref.finalize(self, core.holds.pop, self._holding, None)
        published = core.published_seq
        if name is not None and positions is not None and from_seq is None:
            acked = positions.get(name)
            if acked is not None:
                if acked > published:  # written before acks synced the log (older versions)
                    acked = published
                    positions.set(name, acked)
                from_seq = acked + 1
        start = published + 1 if from_seq is None else _check_from(core, from_seq, published)
        self._next = start  # the next seq to hand over (the position)
        self.acked = start - 1
        """The last seq acknowledged (named subscriptions: durably)."""
        if name is not None and positions is not None and positions.get(name) is None:
            positions.set(name, self.acked)  # retention keeps what follows from now on
        self._buffer: deque[T] = deque()
        self._cond = threading.Condition()
        self._queue: deque[Published] = deque()
        self._queued = 0
        self._live = False
        self._expected = start  # the first seq of the next group the listener may queue
        self._closed = False
        self._cursor: LogCursor | None = None  # where reading the log goes on from
        self.delivered = start - 1
        """The seq of the last change :meth:`next` returned."""
        core.add_listener(self._listener)

    # -- iteration ---------------------------------------------------------------------------

    def __iter__(self) -> Iterator[T]:
        return self

    def __next__(self) -> T:
        """The next change, waiting for it if none is published yet."""
        item = self.next(timeout=None)
        assert item is not None
        return item

    def next(self, timeout: float | None = None) -> T | None:
        """The next change, or None if none comes within ``timeout`` seconds.

        Raises:
            StopIteration: The subscription (or its key space) is closed.
            HistoryUnavailable: Retention dropped records this subscription had not read
                (only an unnamed one that was not open when they went).
        """
        while True:
            if self._buffer:
                item = self._buffer.popleft()
                self.delivered = item.seq  # type: ignore[attr-defined]
                return item
            group = self._take_live(timeout)
            if group is _TIMED_OUT:
                return None
            if group is not None:
                self._hand_over(group.records, group.time)
                continue
            if not self._read_log():
                self._go_live()

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> T:
        """The next change, waited for in a worker thread (the event loop never blocks)."""
        while True:
            try:
                item = await asyncio.to_thread(self.next, _POLL)
            except StopIteration:
                raise StopAsyncIteration from None
            if item is not None:
                return item

    # -- acknowledgement ------------------------------------------------------------------------

    def ack(self, seq: int) -> None:
        """Record that every change up to ``seq`` is handled (durably, if named).

        Raises:
            InvalidInput: ``seq`` was not delivered yet, or is below an earlier ack.
            OpenFailed: The position could not be written (the previous one holds).
        """
        if isinstance(seq, bool) or not isinstance(seq, int):
            msg = f"ack() takes a seq (int), got {seq!r:.40}"
            raise InvalidInput(msg)
        if seq < self.acked or seq > max(self.delivered, self.acked):
            msg = (
                f"ack({seq}): acknowledged up to {self.acked}, delivered up to "
                f"{max(self.delivered, self.acked)}; ack a delivered seq, never going back"
            )
            raise InvalidInput(msg)
        if self.name is not None and self._positions is not None and seq > self.acked:
            # The records acknowledged must be as durable as the position: under
            # fsync="interval" or "never" a power cut could otherwise leave the position
            # past the log's end, and new records reusing those seqs would be skipped.
            self._core.log.sync()
            self._positions.set(self.name, seq)
        self.acked = seq

    # -- lifecycle ---------------------------------------------------------------------------

    def close(self) -> None:
        """Stop delivering; iteration ends. Idempotent; a named position stays."""
        with self._cond:
            if self._closed:
                return
            self._closed = True
            self._queue.clear()
            self._cond.notify_all()
        self._core.remove_listener(self._listener)
        self._core.holds.pop(self._holding, None)

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called (or its key space closed)."""
        return self._closed

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        mode = "closed" if self._closed else "live" if self._live else "reading the log"
        return f"<Subscription at seq {self._next} ({mode})>"

    # -- the writer's side (the listener) -------------------------------------------------------

    def _on_published(self, group: Published) -> None:
        """Queue ``group`` if live, in order and within the bound; else leave it to the log."""
        with self._cond:
            if not self._live or self._closed:
                return
            events = sum(len(events) for _, events in group.records)
            if group.first_seq != self._expected or self._queued + events > LIVE_LIMIT:
                self._live = False  # the reader will find it in the log
                return
            self._queue.append(group)
            self._queued += events
            self._expected = group.last_seq + 1
            self._cond.notify()

    # -- the reader's side ---------------------------------------------------------------------

    def _take_live(self, timeout: float | None) -> Any:
        """A queued group; None to read the log; ``_TIMED_OUT`` if nothing came in time."""
        with self._cond:
            while True:
                if self._closed:
                    raise StopIteration
                if self._queue:
                    group = self._queue.popleft()
                    self._queued -= sum(len(events) for _, events in group.records)
                    return group
                if not self._live:
                    return None
                if not self._core.alive and self._core.published_seq < self._next:
                    self._closed = True  # the key space stopped: nothing more will come
                    raise StopIteration
                waited = self._cond.wait(timeout if timeout is not None else _POLL)
                if not waited and timeout is not None:
                    return _TIMED_OUT

    def _hand_over(self, records: list[tuple[int, tuple[Any, ...]]], time: float) -> None:
        for seq, events in records:
            if seq >= self._next:
                self._buffer.extend(self._expand(seq, time, events))
                self._next = seq + 1

    def _read_log(self) -> bool:
        """Read up to ``LOG_CHUNK`` published records from the position; whether any were."""
        core = self._core
        last = core.published_seq
        if self._next > last:
            return False
        log = core.log
        if self._next < log.first_seq:
            raise HistoryUnavailable(core.name, self._next, log.first_seq)
        try:
            cursor = self._cursor
            if cursor is None or cursor.next_seq != self._next:
                cursor = self._cursor = log.cursor(self._next)
            records = cursor.read(last, LOG_CHUNK)
        except KeyspaceClosed:
            with self._cond:
                self._closed = True
            raise StopIteration from None
        seqs = [record[0] for record in records]
        decoded = decode_chunk(log, core.codec, seqs, [record[2] for record in records])
        for (seq, time, _), events in zip(records, decoded, strict=True):
            self._buffer.extend(self._expand(seq, time, events))
            self._next = seq + 1
        return bool(records)

    def _go_live(self) -> None:
        """Caught up with the log: take groups from the writer from here on."""
        with self._cond:
            # Checked under the condition: a group published after this check reaches the
            # listener after it too (the writer sets published_seq before calling it).
            if self._core.published_seq < self._next:
                self._live = True
                self._expected = self._next

    def _needed(self) -> int:
        """The first seq retention must keep for this subscription."""
        return self._next


_TIMED_OUT: Any = object()
_NOTHING_NEEDED = 2**63


class _WeakListener:
    """The writer's handle on a subscription, which lets it go once it is garbage."""

    __slots__ = ("__weakref__", "_core", "_subscription")

    def __init__(self, core: ActorCore, subscription: Subscription[Any]) -> None:
        self._core = core
        self._subscription = weakref.ref(subscription)

    def __call__(self, group: Published) -> None:
        subscription = self._subscription()
        if subscription is None:
            self._core.remove_listener(self)
            return
        subscription._on_published(group)

    def needed(self) -> int:
        subscription = self._subscription()
        return _NOTHING_NEEDED if subscription is None else subscription._needed()


def _weak_listener(core: ActorCore, subscription: Subscription[Any]) -> _WeakListener:
    return _WeakListener(core, subscription)


def _check_from(core: ActorCore, from_seq: object, published: int) -> int:
    if isinstance(from_seq, bool) or not isinstance(from_seq, int) or from_seq < 1:
        msg = f"from_seq must be an int >= 1 or None, got {from_seq!r:.40}"
        raise InvalidInput(msg)
    if from_seq > published + 1:
        msg = f"{core.name}: from_seq {from_seq} is after the next record, {published + 1}"
        raise InvalidInput(msg)
    if from_seq < core.log.first_seq:
        raise HistoryUnavailable(core.name, from_seq, core.log.first_seq)
    return from_seq
