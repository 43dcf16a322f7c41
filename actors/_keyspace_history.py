"""The reads of a key space's past and its follow-up: points, history, subscriptions, anchor.

A mixin of :class:`actors.KeySpace`, kept apart because it is one concern: everything that
reads the log's history rather than the present state (see ``docs/history.md`` and
``docs/subscriptions.md``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from actors import _history as history
from actors._history import Version
from actors._keyspace_input import check_time
from actors._names import check_name
from actors._subscription import Change, Subscription, keyspace_changes
from actors._view import KeySpaceView, ViewReads
from storage.chain import Anchor
from storage.errors import HistoryUnavailable, InvalidInput, InvalidOption
from storage.kvstate import Entry as StoredEntry

if TYPE_CHECKING:
    from collections.abc import Callable

    from actors._core import ActorCore
    from actors._keyspace import Entry, KeySpaceOptions
    from storage.kvstate import KVState

__all__ = ["KeySpaceHistory"]


class KeySpaceHistory:
    """Reads of the past: ``at``, ``history``, ``seq_at``, ``time_of``, ``subscribe``, ``anchor``.

    The stubs below are what it uses of :class:`actors.KeySpace`, which defines them.
    """

    # Provided by KeySpace.
    name: str
    options: KeySpaceOptions
    _core: ActorCore
    _state: KVState
    _clock: Callable[[], float]
    _key_type: type

    def _check_open(self) -> None:
        raise NotImplementedError

    def _check_key_type(self, key: Any) -> None:
        raise NotImplementedError

    def _public_key(self, key: Any) -> Any:
        """A stored key as callers see it (tuple key spaces unpack it)."""
        return key

    def _check_range(self, start: Any, stop: Any, limit: int | None) -> None:
        raise NotImplementedError

    def _value(self, key: Any, entry: StoredEntry) -> Any:
        raise NotImplementedError

    def _public_entry(self, key: Any, entry: StoredEntry) -> Entry:
        raise NotImplementedError

    def at(self, seq: int | None = None, *, time: float | None = None) -> KeySpaceView:
        """A read-only view of the key space as of record ``seq``, or as of ``time``.

        ``time=`` means the last record committed at or before it; neither means now.
        Points since the last ``recent_versions`` changes read from memory (the current
        point costs what a plain read costs); older ones are rebuilt once, from a snapshot
        and the log, which costs about what a reopen costs. Expiry is judged at the
        point's commit time (``seq=``), at ``time`` (``time=``), or now.

        Raises:
            HistoryUnavailable: The point is below the history floor (``stats()``).
            InvalidInput: Both or a bad ``seq`` / ``time``, or a seq not yet committed.
        """
        self._check_open()
        core, state = self._core, self._state
        with state.lock:
            current = state.seq
        if seq is not None and time is not None:
            msg = "at() takes seq= or time=, not both"
            raise InvalidInput(msg)
        if time is not None:
            when = check_time(time)
            point = history.seq_at(core, state, when)
        elif seq is not None:
            point = history.check_seq(self.name, seq, current)
            when = None
        else:
            point, when = current, self._clock()
        if point != current:
            floor = history.history_floor(core)
            if point < floor:
                raise HistoryUnavailable(self.name, point, floor)
        if when is None:
            when = history.record_time(core, state, point) if point else 0.0
        reads = ViewReads(self._check_key_type, self._value, self._public_entry, self._check_range)
        pin = state.pin_at(point)
        source = state if pin is not None else history.state_as_of(core, self.name, point, state)
        return KeySpaceView(self.name, self._key_type, source, pin, when, reads)

    def subscribe(
        self, from_seq: int | None = None, *, prefix: Any = None, name: str | None = None
    ) -> Subscription[Change]:
        """Every durable change from ``from_seq`` on (None: the next one), in seq order.

        An iterator of :class:`Change` (``async for`` too, without blocking the loop):
        history from the log first when ``from_seq`` is in the past, then live, with no gap
        and no duplicate; a subscriber that falls behind reads the log and is never
        dropped. ``prefix`` keeps the keys that start with it. ``name`` makes it durable:
        ``sub.ack(seq)`` records its position, retention keeps what it has not
        acknowledged, and ``subscribe(name=...)`` resumes after its last ack. Close it
        (or use ``with``) when done. See ``actors/_subscription.py``.

        Raises:
            HistoryUnavailable: ``from_seq`` is below the log's first record.
            InvalidInput, InvalidName, InvalidKey: A bad position, name or prefix.
        """
        self._check_open()
        if prefix is not None:
            self._check_key_type(prefix)
        if name is not None:
            check_name(name, "subscription")

        def decode(key: Any, raw: bytes) -> Any:
            return self._value(key, StoredEntry(raw, 0, 0, None))

        public_key = (
            None if type(self)._public_key is KeySpaceHistory._public_key else self._public_key
        )
        expand = keyspace_changes(decode, prefix, public_key)
        core = self._core
        return Subscription(core, expand, from_seq, name=name, positions=core.positions)

    def anchor(self) -> Anchor:
        """``Anchor(seq, head)``: the hash chain's head after the newest record.

        Small enough to print (``str(anchor)``), store elsewhere or publish;
        ``storage.verify(path, anchor=...)`` later proves the log still extends it, so no
        record at or before ``seq`` was edited, removed or reordered since.
        """
        self._check_open()
        return self._core.log.anchor()

    def history(self, key: Any, *, limit: int | None = None) -> list[Version]:
        """Every retained change of ``key``, oldest first: the newest ``limit`` if given.

        Changes since the last ``recent_versions`` come from memory; older ones, down to
        the history floor, are read from the log (a scan of it from the floor).
        """
        self._check_open()
        self._check_key_type(key)
        if limit is not None and (
            isinstance(limit, bool) or not isinstance(limit, int) or limit < 0
        ):
            msg = f"limit must be a non-negative int or None, got {limit!r}"
            raise InvalidOption(msg)
        return history.key_history(
            self._core,
            self._state,
            key,
            lambda raw: self._value(key, StoredEntry(raw, 0, 0, None)),
            limit,
        )

    def seq_at(self, time: float) -> int:
        """The last record committed at or before ``time`` (0 if none yet).

        Raises:
            HistoryUnavailable: ``time`` is before the oldest retained record.
        """
        self._check_open()
        return history.seq_at(self._core, self._state, check_time(time))

    def time_of(self, seq: int) -> float:
        """The commit time of record ``seq``.

        Raises:
            HistoryUnavailable: The log no longer holds ``seq``. InvalidInput: ``seq`` is
                not a committed record.
        """
        self._check_open()
        with self._state.lock:
            current = self._state.seq
        point = history.check_seq(self.name, seq, current)
        if point < 1:
            msg = f"{self.name}: seq {seq} is not a record (records start at 1)"
            raise InvalidInput(msg)
        first = self._core.log.first_seq
        if point < first:
            raise HistoryUnavailable(self.name, point, first)
        return history.record_time(self._core, self._state, point)
