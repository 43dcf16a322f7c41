"""The eventsourcing library's recorders, written on actorkv key spaces.

Each recorder wraps one key space laid out as ``actors/_es_layout.py`` describes. Writes
are one ``ks.transact`` each, run inside the key space's actor: the uniqueness check
(``IntegrityError`` on a version conflict, nothing written), gapless notification ids from a
counter the actor alone writes, the events and any tracking position, all in one record.
Reads (``select_events``, ``select_notifications``, ``max_*``) run in the caller's thread
against the key space's published state, which holds only durable records.

Thread-safety: every recorder is thread-safe; a subscription is iterated by one thread at a
time and may be stopped from any thread.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any
from uuid import UUID

from eventsourcing.persistence import (
    AggregateRecorder,
    ApplicationRecorder,
    DataError,
    IntegrityError,
    Notification,
    OperationalError,
    ProcessRecorder,
    StoredEvent,
    Subscription,
    Tracking,
    TrackingRecorder,
)

from actors._es_layout import (
    COUNTER_KEY,
    EVENT_PREFIX,
    MAX_NOTIFICATION_ID,
    NOTIFICATIONS_END,
    VERSION_OFFSET,
    event_key,
    event_value,
    notification_key,
    originator_of,
    originator_prefix,
    tracking_key,
    version_bound,
    version_of,
)
from actors._keyspace import KeySpace
from actors._subscription import Change
from actors._subscription import Subscription as Changes
from actors._transaction import TransactionBatch, TransactionView
from storage.errors import ActorKVError, InvalidInput, InvalidKey, InvalidValue

__all__ = [
    "ActorKVAggregateRecorder",
    "ActorKVApplicationRecorder",
    "ActorKVProcessRecorder",
    "ActorKVSubscription",
    "ActorKVTrackingRecorder",
]


@contextmanager
def _translated() -> Iterator[None]:
    """The errors of actorkv as eventsourcing's: bad data DataError, the rest OperationalError.

    ``IntegrityError`` raised by a transaction passes through as it is.
    """
    try:
        yield
    except (InvalidKey, InvalidValue, InvalidInput, ValueError) as exc:
        raise DataError(str(exc)) from exc
    except ActorKVError as exc:
        raise OperationalError(str(exc)) from exc


class _ActorKVRecorder:
    """What every recorder holds: its key space, and what keeps the key space's store open."""

    def __init__(self, keyspace: KeySpace, *, store_lease: object = None) -> None:
        """Record in ``keyspace`` (of a Store you opened, or from the Factory).

        Args:
            keyspace: A key space with str keys, used by these recorders alone.
            store_lease: Anything whose lifetime must cover the recorder's (the factory's
                lease on the shared store), kept referenced and otherwise unused.
        """
        self.keyspace = keyspace
        self._store_lease = store_lease

    def _insert(
        self, stored_events: Sequence[StoredEvent], tracking: Tracking | None, *, numbered: bool
    ) -> list[int]:
        """Write ``stored_events`` (and ``tracking``) as one record; their notification ids.

        Keys and values are built here, in the caller's thread; the actor only checks
        uniqueness, numbers the events and writes them.
        """
        with _translated():
            rows = [
                (
                    event_key(originator_prefix(event.originator_id), event.originator_version),
                    event.topic,
                    event.state,
                    isinstance(event.originator_id, UUID),
                )
                for event in stored_events
            ]
        if len({row[0] for row in rows}) < len(rows):
            msg = f"Stored events are not unique: {stored_events}"
            raise IntegrityError(msg)
        if not rows and tracking is None:
            return []
        transaction = _insertion(rows, tracking, numbered=numbered)
        with _translated():
            return self.keyspace.transact(transaction)


Row = tuple[str, str, bytes, bool]
"""An event to insert: its ``a/`` key, topic, state and whether its originator is a UUID."""


def _insertion(
    rows: list[Row], tracking: Tracking | None, *, numbered: bool
) -> Callable[[TransactionView, TransactionBatch], list[int]]:
    """The transaction that inserts ``rows`` (and ``tracking``); it returns their ids.

    It runs inside the key space's actor: nothing else writes meanwhile, so the checks and
    the counter are exact, and if a check raises, nothing is written.
    """
    count = len(rows)

    def transaction(view: TransactionView, batch: TransactionBatch) -> list[int]:
        for key, *_ in rows:
            if key in view:
                msg = f"Stored event already recorded: {key}"
                raise IntegrityError(msg)
        if tracking is not None:
            _check_tracking(view, tracking)
        put = batch.put
        ids: list[int] = []
        if numbered and count:
            last: int = batch.increment(COUNTER_KEY, count)
            ids = list(range(last - count + 1, last + 1))
            for number, (key, topic, state, is_uuid) in zip(ids, rows, strict=True):
                put(key, event_value(number, topic, state, is_uuid))
                put(notification_key(number), key)
        else:
            for key, topic, state, is_uuid in rows:
                put(key, event_value(0, topic, state, is_uuid))
        if tracking is not None:
            put(tracking_key(tracking.application_name), tracking.notification_id)
        return ids

    return transaction


def _check_tracking(view: TransactionView, tracking: Tracking) -> None:
    current = view.get(tracking_key(tracking.application_name))
    if current is not None and current >= tracking.notification_id:
        msg = (
            f"Tracking notification ID {tracking.notification_id} not greater than current "
            f"max tracking ID {current} of {tracking.application_name!r}"
        )
        raise IntegrityError(msg)


class ActorKVAggregateRecorder(_ActorKVRecorder, AggregateRecorder):
    """Stored events per originator (snapshots, or events without notifications)."""

    def insert_events(
        self,
        stored_events: Sequence[StoredEvent],
        **kwargs: Any,  # noqa: ARG002 - the base class's signature; no options here
    ) -> Sequence[int] | None:
        """Write ``stored_events`` atomically; returns None (no notification ids).

        Raises:
            IntegrityError: One of them is recorded already, or two are the same (nothing
                is written).
            DataError: A version outside signed 64 bits, an id or state too large.
            OperationalError: The store is closed or refuses writes (a failed fsync).
        """
        self._insert(stored_events, None, numbered=False)
        return None

    def select_events(
        self,
        originator_id: UUID | str,
        *,
        gt: int | None = None,
        lte: int | None = None,
        desc: bool = False,
        limit: int | None = None,
    ) -> Sequence[StoredEvent]:
        """The events of ``originator_id`` with ``gt < version <= lte``, by version.

        O(log n + m): one scan of the originator's keys, in the caller's thread.
        """
        prefix = originator_prefix(originator_id)
        low = -VERSION_OFFSET if gt is None else gt + 1
        high = VERSION_OFFSET if lte is None else lte + 1  # exclusive
        low, high = max(low, -VERSION_OFFSET), min(high, VERSION_OFFSET)
        if low >= high or limit == 0:
            return []
        start = prefix + version_bound(low)
        # Past every version: the prefix with its closing "/" raised to "0".
        stop = prefix[:-1] + "0" if high == VERSION_OFFSET else prefix + version_bound(high)
        with _translated():
            items = list(self.keyspace.range(start, stop, reverse=desc, limit=limit))
        if not items:
            return []
        is_uuid = bool(items[0][1][3])
        if isinstance(originator_id, UUID) == is_uuid:
            originator = originator_id
        else:
            originator = UUID(str(originator_id)) if is_uuid else str(originator_id)
        return [
            StoredEvent(originator, version_of(key), topic, state)
            for key, (_, topic, state, _) in items
        ]


class ActorKVApplicationRecorder(ActorKVAggregateRecorder, ApplicationRecorder):
    """Stored events numbered in one gapless application sequence, with subscriptions."""

    def insert_events(
        self,
        stored_events: Sequence[StoredEvent],
        **kwargs: Any,  # noqa: ARG002 - tracking= is the process recorder's
    ) -> Sequence[int] | None:
        """Write ``stored_events`` atomically; returns their notification ids, in order.

        The ids are the next ones of the application sequence, given inside the key
        space's actor (no gaps, no retries); the events of one call get consecutive ids.

        Raises:
            IntegrityError: One of them is recorded already, or two are the same.
            DataError, OperationalError: As :meth:`ActorKVAggregateRecorder.insert_events`.
        """
        return self._insert(stored_events, None, numbered=True)

    def select_notifications(
        self,
        start: int | None,
        limit: int,
        stop: int | None = None,
        topics: Sequence[str] = (),
        *,
        inclusive_of_start: bool = True,
    ) -> Sequence[Notification]:
        """Up to ``limit`` notifications with ids from ``start`` to ``stop``, in order.

        ``topics`` keeps the notifications of those topics. O(log n + m) without topics; with
        them, every notification between is looked at until ``limit`` match.
        """
        first = 1 if start is None else start if inclusive_of_start else start + 1
        first = max(first, 1)
        last = MAX_NOTIFICATION_ID if stop is None else min(stop, MAX_NOTIFICATION_ID)
        if first > last or limit <= 0:
            return []
        wanted = frozenset(topics)
        # Past the last id: the prefix with its "/" raised to "0" (t/ keys sort after n/).
        upper = NOTIFICATIONS_END if last == MAX_NOTIFICATION_ID else notification_key(last + 1)
        keyspace = self.keyspace
        get = keyspace.get
        found: list[Notification] = []
        with _translated():
            pointers = keyspace.range(
                notification_key(first), upper, limit=None if wanted else limit
            )
            for _, key in pointers:
                pointed = get(key)
                if pointed is None:  # pragma: no cover - notifications are never deleted
                    continue
                number, topic, state, is_uuid = pointed
                if wanted and topic not in wanted:
                    continue
                originator = originator_of(key, is_uuid)
                found.append(Notification(originator, version_of(key), topic, state, number))
                if len(found) == limit:
                    break
        return found

    def max_notification_id(self) -> int | None:
        """The last notification id given, or None before the first event. O(1)."""
        with _translated():
            last: int | None = self.keyspace.get(COUNTER_KEY)
        return last

    def subscribe(
        self, gt: int | None = None, topics: Sequence[str] = ()
    ) -> Subscription[ApplicationRecorder]:
        """Every notification with an id above ``gt``, then each new one as it is durable.

        Delivered from the key space's log and then live (actorkv's subscriptions: never
        dropped, never polled); see :class:`ActorKVSubscription`.
        """
        return ActorKVSubscription(self, gt=gt, topics=topics)

    def changes_after(self, gt: int | None) -> Changes[Change]:
        """The key space's event changes from the record holding notification ``gt`` on.

        Ids grow with the log's records, so the record that holds the last id at or below
        ``gt`` starts everything above ``gt`` (an id above the last given starts at that
        last one's record); the log holds every record (``retention=None``).
        """
        keyspace = self.keyspace
        with _translated():
            last = keyspace.get(COUNTER_KEY) or 0
            known = min(gt or 0, last)
            entry = keyspace.get_entry(notification_key(known)) if known > 0 else None
            from_seq = 1 if entry is None else entry.seq
            return keyspace.subscribe(from_seq, prefix=EVENT_PREFIX)


class ActorKVSubscription(Subscription[ActorKVApplicationRecorder]):
    """Notifications above ``gt`` from an actorkv subscription of the recorder's key space.

    It reads the log from the record of notification ``gt`` and then takes each durable
    group from the writer: no polling, no gap, no duplicate, and a slow iterator is never
    dropped (actorkv's subscriptions fall back to the log). :meth:`stop` ends an iteration
    waiting in another thread.
    """

    def __init__(
        self,
        recorder: ActorKVApplicationRecorder,
        gt: int | None = None,
        topics: Sequence[str] = (),
    ) -> None:
        """Use ``recorder.subscribe(gt, topics)``."""
        super().__init__(recorder=recorder, gt=gt, topics=topics)
        self._wanted = frozenset(topics)
        self._changes = recorder.changes_after(gt)
        self._next_change: Callable[[], Change] = self._changes.__next__

    def stop(self) -> None:
        """End the subscription; an iteration waiting for a notification ends too."""
        super().stop()
        self._changes.close()

    def __next__(self) -> Notification:
        """The next notification, waiting until one is durable.

        Raises:
            StopIteration: Stopped, or the store was closed.
        """
        wanted = self._wanted
        after = self._last_notification_id or 0
        next_change = self._next_change
        while not self._has_been_stopped:
            try:
                change = next_change()
            except StopIteration:
                break
            number, topic, state, is_uuid = change.value
            if number <= after:
                continue
            self._last_notification_id = after = number
            if wanted and topic not in wanted:
                continue
            key = change.key
            return Notification(originator_of(key, is_uuid), version_of(key), topic, state, number)
        self.stop()
        raise StopIteration


class ActorKVTrackingRecorder(_ActorKVRecorder, TrackingRecorder):
    """Positions of upstream applications (``t/`` keys), for projections and processes."""

    def insert_tracking(self, tracking: Tracking) -> None:
        """Record ``tracking``, durably.

        Raises:
            IntegrityError: Its application's position is already at or past it.
        """
        self._insert((), tracking, numbered=False)

    def max_tracking_id(self, application_name: str) -> int | None:
        """The highest notification id recorded for ``application_name``, or None. O(1)."""
        with _translated():
            position: int | None = self.keyspace.get(tracking_key(application_name))
        return position


class ActorKVProcessRecorder(ActorKVTrackingRecorder, ActorKVApplicationRecorder, ProcessRecorder):
    """An application recorder whose inserts may carry a tracking position, atomically."""

    def insert_events(
        self, stored_events: Sequence[StoredEvent], **kwargs: Any
    ) -> Sequence[int] | None:
        """Write ``stored_events`` and ``tracking=`` (if given) as one record; their ids.

        Raises:
            IntegrityError: An event is recorded already, or the tracking position is not
                above the recorded one (nothing is written).
        """
        tracking: Tracking | None = kwargs.get("tracking")
        return self._insert(stored_events, tracking, numbered=True)
