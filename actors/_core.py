"""The write path of one actor, whichever runtime hosts it: run, group, write, publish, answer.

An actor has a queue, a state and one *execution right*. Whoever holds the right runs the
queued commands one at a time, writes the group they form with one ``append_batch`` (one
write, at most one fsync), publishes it, answers every caller, and passes the right on. A
blocking caller that finds the actor idle takes the right itself and runs its command in its
own thread; callers arriving meanwhile queue up behind it. When the holder is done, the
right goes to the first queued blocking caller (it was about to be woken anyway: now it
writes the next group), or, for commands sent without waiting, to the actor's *home*
thread, which the runtime provides (LevelDB's writer queue; ``DBImpl::Write``). No command
pays a hop to another thread and back unless its caller chose not to wait.

Per group, in the holder's thread:

1. take queued commands in order and run each against the latest state; the events a
   command emits are applied at once and encoded into one record; its reply waits in the
   group (errors too: a refusal may rest on state that is not durable yet);
2. stop taking when the queue is empty or the group is large (1 MiB; 128 KiB past a small
   first record, so a small write never waits for a huge one to be written);
3. write the records; the log numbers them and checks the numbering the commands saw;
4. publish: the actor's ``on_published`` (the key space publishes its sorted state there),
   then every listener (indexes, subscribers), with the group's sequence range and events;
5. answer every caller of the group.

A failed write or fsync fails the whole group, restores the last durable state and makes
the actor refuse commands until it is spawned again. Whatever escapes a command, the
command's caller gets it; whatever escapes the machinery, every caller of the group gets it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, NamedTuple, Protocol

import msgspec

from actors._actor import EventSourcedActor
from actors._events import EventCodec, Operation, encode_operation
from actors._future import Future
from actors._operations import OperationWindow
from actors._snapshots import CompactionReport, HistoryPolicy, Snapshots
from actors._upcasting import UnknownTag, unknown_tag
from storage import MAX_PAYLOAD_BYTES, SegmentedLog
from storage.errors import (
    ActorKVError,
    ActorStopped,
    CorruptLog,
    InvalidOperation,
    InvalidValue,
    KeyspaceClosed,
    ReadOnlyStore,
    ReplayFailed,
    UnknownEventTag,
    WriteFailed,
)
from storage.histogram import Histogram
from storage.positions import Positions
from storage.snapshot import SnapshotInfo

logger = logging.getLogger("actorkv.actors")

ReplayProgress = Callable[[str, int, int], None]
"""Called as ``progress(actor_name, records_replayed, records_total)`` during replay."""

_PROGRESS_EVERY = 65536  # records between progress reports: ~0.1 s of replay
REPLICATE = "_esa_replicate"  # the command a replica applies a followed record with
CLOSE_SNAPSHOT_FRACTION = 0.1  # a clean close snapshots once the replay passes this share
MAX_GATHER_SECONDS = 0.002  # bounds the latency a gathering wait can add
GROUP_BYTES = 1 << 20  # a group stops taking commands past this many payload bytes...
SMALL_RECORD_BYTES = 128 << 10  # ...or this far past a small first record a caller waits for


class Home(Protocol):
    """The runtime's side of an actor: its home thread, for work nobody waits for."""

    def wake(self) -> None:
        """Have the home thread call ``core.drain()`` soon (it holds the right then)."""

    def stop(self) -> None:
        """Let the home thread go; called once, after the core has shut down."""

    def is_home(self) -> bool:
        """Whether the calling thread is the home thread."""


class HasDirectory(Protocol):
    """A log, as far as naming it in an error goes (a writer's or a reader's)."""

    @property
    def directory(self) -> Path: ...


class Command:
    """A command: which method, its arguments, and how to answer its caller.

    A caller that waits (``ActorCore.call``) gets ``waiter``, a lock it blocks on; one that
    does not (``ActorCore.send``) gets ``future``. ``size`` is what the caller expects the
    command's record to weigh (bytes, 0 if unknown): a group does not take a command that
    would push it past its bound, so a small write never waits for a huge one.
    """

    __slots__ = (
        "abandoned",
        "args",
        "future",
        "kwargs",
        "lead",
        "name",
        "op",
        "outcome",
        "size",
        "started",
        "waiter",
    )

    def __init__(
        self,
        name: str,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        future: Future[Any] | None = None,
        size: int = 0,
        op: bytes | None = None,
    ) -> None:
        self.name = name
        self.args = args
        self.kwargs = kwargs
        self.future = future
        self.size = size
        self.op = op  # an operation id: applied once however often sent (actors._operations)
        self.waiter: threading.Lock | None = None
        self.outcome: tuple[Any, BaseException | None] | None = None
        self.lead = False  # the right was handed to this command's waiting caller
        self.abandoned = False  # its caller stopped waiting (interrupted)
        self.started = time.perf_counter()  # for the write latency (store.metrics())


class _Snapshot:
    """A request for a snapshot between two groups; ``future`` gets its SnapshotInfo."""

    __slots__ = ("future",)

    def __init__(self, future: Future[Any] | None) -> None:
        self.future = future


class _Stop:
    """The last item of a stopping actor's queue."""

    __slots__ = ("future",)

    def __init__(self, future: Future[None]) -> None:
        self.future = future


class Published(NamedTuple):
    """A group that became durable: what listeners are told, in order, once per group.

    Attributes:
        first_seq: Sequence number of the group's first record.
        last_seq: Sequence number of its last record.
        records: ``(seq, events)`` for each record, the events as emitted.
        time: The records' commit time (seconds since the epoch, from the store's clock).
    """

    first_seq: int
    last_seq: int
    records: list[tuple[int, tuple[Any, ...]]]
    time: float = 0.0


class ActorStats(msgspec.Struct, frozen=True):
    """Counters of one actor since it was spawned.

    Attributes:
        commands: Commands run (accepted or refused).
        events: Events emitted by accepted commands.
        records: Log records written (one per command that emitted events).
        groups: Group writes (one ``append_batch`` each).
        fsyncs: fsyncs of the actor's log.
        largest_group: Most commands answered by one group write.
        events_replayed: Events applied while recovering from the log.
        records_replayed: Records read while recovering from the log.
        failed: Whether the actor refuses writes after a failed write or fsync (a
            background fsync included).
        queued: Commands waiting for the execution right when the stats were taken.
        snapshot_seq: The newest snapshot's seq (0 if none): recovery replays after it.
        history_floor: The first seq the log still holds.
        log_bytes: The log's segments' size on disk.
    """

    commands: int
    events: int
    records: int
    groups: int
    fsyncs: int
    largest_group: int
    events_replayed: int
    records_replayed: int
    failed: bool
    queued: int = 0
    snapshot_seq: int = 0
    history_floor: int = 1
    log_bytes: int = 0


@dataclass(slots=True)
class Counters:
    """Mutable counters written by whoever holds the right; read as :class:`ActorStats`."""

    commands: int = 0
    events: int = 0
    records: int = 0
    groups: int = 0
    largest_group: int = 0
    events_replayed: int = 0
    records_replayed: int = 0
    failed: bool = False
    replay_seconds: float = 0.0
    write_latency: Histogram = field(default_factory=Histogram)
    group_commands: Histogram = field(default_factory=lambda: Histogram(unit=1))


def replay(
    name: str,
    actor: EventSourcedActor[Any],
    log: SegmentedLog,
    codec: EventCodec,
    counters: Counters,
    progress: ReplayProgress | None,
    *,
    snapshot: tuple[Any, int] | None = None,
    operations: dict[bytes, Operation] | None = None,
) -> None:
    """Fold the records of ``log`` into ``actor``'s state.

    From ``initial_state()`` and the first record, or from a snapshot's ``(state, seq)``
    and the record after it. Operation ids met on the way are noted in ``operations``.

    Raises:
        CorruptLog: A damaged record, or one that no longer decodes as this actor's events.
        ReplayFailed: ``apply`` raised on one of the events.
    """
    if snapshot is None:
        state, from_seq = actor.initial_state(), 1
    else:
        state, from_seq = snapshot[0], snapshot[1] + 1
    total = log.last_seq - max(from_seq, log.first_seq) + 1
    bulk = type(actor).apply_records is not EventSourcedActor.apply_records
    records = events = 0
    reported = 0
    for chunk in log.read_chunks(from_seq):
        seqs = [seq for seq, _ in chunk]
        payloads = [payload for _, payload in chunk]
        decoded = decode_chunk(log, codec, seqs, payloads, operations)
        if bulk:
            try:
                state = actor.apply_records(state, zip(seqs, decoded, strict=True))
            except Exception as exc:
                raise ReplayFailed(name, seqs[0], None, exc) from exc
        else:
            state = _apply_each(name, actor, state, zip(seqs, decoded, strict=True))
        records += len(decoded)
        events += sum(map(len, decoded))
        if progress is not None and records - reported >= _PROGRESS_EVERY:
            reported = records
            progress(name, records, total)
    actor._esa_state = state
    actor._esa_seq = max(from_seq - 1, log.last_seq)  # what on_persisted has made durable
    actor.on_persisted()
    counters.records_replayed = records
    counters.events_replayed = events
    if progress is not None:
        progress(name, records, total)
    logger.debug("%s: replayed %d events from %d records", name, events, records)


def decode_chunk(
    log: HasDirectory,
    codec: EventCodec,
    seqs: list[int],
    payloads: list[bytes],
    operations: dict[bytes, Operation] | None = None,
) -> list[tuple[Any, ...]]:
    """Decode a chunk of records with one decoder call; find the bad one if that fails.

    Operation ids are taken off the events (noted in ``operations`` if given).

    Raises:
        CorruptLog: A record does not decode as the actor's events (it names the seq);
            ``UnknownEventTag`` when an event's tag is neither current nor upcast.
        ReplayFailed: An upcaster raised, or returned what is not a current event.
    """
    try:
        return codec.decode_many(payloads, seqs, operations)
    except (msgspec.DecodeError, UnknownTag):
        pass
    for seq, payload in zip(seqs, payloads, strict=True):
        try:
            codec.decode(payload)
        except UnknownTag as exc:
            raise UnknownEventTag(log.directory, codec.actor_name, seq, exc.tag) from None
        except msgspec.DecodeError as exc:
            tag = unknown_tag(payload, codec.types)
            if tag is not None:
                raise UnknownEventTag(log.directory, codec.actor_name, seq, tag) from exc
            reason = (
                f"record {seq} does not decode as {codec.actor_name}'s events ({exc}); "
                "were event types changed without defaults for new fields?"
            )
            raise CorruptLog(log.directory, 0, reason) from exc
    msg = f"{codec.actor_name}: a chunk of records failed to decode, yet each of them decodes"
    raise AssertionError(msg)  # pragma: no cover - msgspec would be inconsistent


_NO_ROOM_FOR_ID: Final = (
    "the command's events fill a whole log record, leaving no room for its operation id; "
    "emit less per command"
)


def _operation_marker(emitted: list[bytes], op: bytes, result: Any) -> bytes | None:
    """The operation id element for a record of ``emitted``, or None if it cannot fit."""
    room = MAX_PAYLOAD_BYTES - 5 - sum(map(len, emitted))  # 5: the largest array header
    marker = encode_operation(op, result)
    if len(marker) > room:
        marker = encode_operation(op, None)  # without its result, then
    return marker if len(marker) <= room else None


def _apply_each(
    name: str,
    actor: EventSourcedActor[Any],
    state: Any,
    records: Iterable[tuple[int, tuple[Any, ...]]],
) -> Any:
    apply = actor.apply
    for seq, events in records:
        actor._esa_seq = seq
        for event in events:
            try:
                state = apply(state, event)
            except Exception as exc:
                raise ReplayFailed(name, seq, event, exc) from exc
    return state


class ActorCore:
    """One actor's queue, execution right and group commit. Thread-safe.

    The runtime provides the home thread (:meth:`attach`) and the future type; the handles
    call :meth:`call` (run now, in this thread if the actor is idle) and :meth:`send`
    (queue, answer through a future).
    """

    def __init__(
        self,
        name: str,
        actor: EventSourcedActor[Any],
        log: SegmentedLog,
        codec: EventCodec,
        counters: Counters,
        new_future: Callable[[], Future[Any]],
        *,
        snapshots: Snapshots | None = None,
        policy: HistoryPolicy | None = None,
        since_snapshot: int = 0,
    ) -> None:
        self.name = name
        self.log = log
        self.counters = counters
        self.new_future = new_future
        self.listeners: list[Callable[[Published], None]] = []
        """Called with each :class:`Published` group, after the actor's ``on_published``.

        Replaced, never mutated, by :meth:`add_listener` / :meth:`remove_listener`, so the
        writer iterates a list nobody changes under it."""
        self.published_seq = log.last_seq
        """The last record published (durable, visible to readers); set before listeners."""
        self.positions: Positions | None = None
        """Named subscriptions' durable positions (set by the store)."""
        self.holds: dict[object, Callable[[], int]] = {}
        """Readers of the log that retention must wait for: each gives the first seq it
        still needs (subscriptions: their position; named ones also from their files)."""
        self._actor = actor
        self._codec = codec
        self._home: Home | None = None
        self._mutex = threading.Lock()  # guards the queue and the right's bookkeeping
        self._arrived = threading.Condition(self._mutex)  # a gathering holder waits on it
        self._gathering = False
        self._queue: deque[Command | _Snapshot | _Stop] = deque()
        self._busy = False  # someone holds the execution right
        self._holder: int | None = None  # thread ident of the holder, while it runs
        self._refusal: tuple[type[KeyspaceClosed], str] | None = None  # set once stopping
        # Set on a replica's actors: every command but REPLICATE raises ReadOnlyStore(it).
        self.read_only: str | None = None
        # The open group: payloads, what each record's events were, and the replies.
        self._payloads: list[bytes] = []
        self._events: list[tuple[Any, ...]] = []
        self._replies: list[tuple[Command, Any, bool]] = []
        self._group_events = 0
        self._durable_state: Any = actor.state
        self._failure: BaseException | None = None
        self._closed = False
        # Gathering (see _gather): how many commands the next group should hold, and how
        # long a group write takes (an exponential moving average, seconds).
        self._expected = 0
        self._write_seconds = 0.0
        # History (see actors._snapshots): records written since the newest snapshot.
        self.snapshots = snapshots
        self.policy = policy or HistoryPolicy(recovery_budget=None)
        self._since_snapshot = since_snapshot
        self._snapshot_every = self.policy.records_per_snapshot
        self._snapshot_pending = False
        self._auto_snapshots = snapshots is not None
        self.operations: OperationWindow | None = None
        """Set when callers may retry (a remote runtime): see ``actors._operations``."""

    @property
    def codec(self) -> EventCodec:
        """How this actor's records decode into events."""
        return self._codec

    def attach(self, home: Home) -> None:
        """Give the core its home thread (before any command)."""
        self._home = home

    # -- callers (any thread) ------------------------------------------------------------------

    def call(self, command: Command) -> Any:
        """Run a command and return its result once durable (or raise what it raised).

        Runs it in this thread if the actor is idle, and then any commands queued behind
        it, as one group; otherwise waits in the queue, and may be handed the right to
        write the next group itself.

        Raises:
            InvalidOperation: Called from inside one of this actor's own commands.
            ActorStopped, KeyspaceClosed: The actor is stopped or stopping.
        """
        if self._holder == threading.get_ident():
            msg = (
                f"a command of {self.name!r} called {self.name!r} and waited for it: it would "
                "wait for itself. Send it without waiting, or do the work in the command"
            )
            raise InvalidOperation(msg)
        waiter = command.waiter = threading.Lock()
        waiter.acquire()
        if self._enqueue(command):
            self._drain()
        while command.outcome is None:
            try:
                waiter.acquire()  # released when answered, or when handed the right
            except BaseException:
                self._abandon(command)
                raise
            if command.outcome is None:
                self._drain()  # handed the right: our command is first in the queue
        value, error = command.outcome
        if error is not None:
            raise error
        return value

    def send(self, command: Command) -> None:
        """Queue a command whose ``future`` the caller holds; answered through it.

        The home thread runs it, unless someone holds the right already.

        Raises:
            ActorStopped, KeyspaceClosed: The actor is stopped or stopping.
        """
        if self._enqueue(command):
            self._hand_home()

    def stop(self) -> Future[None]:
        """Refuse new commands, run the queued ones, flush, close the log.

        Returns a future resolved once stopped. Safe to call twice.
        """
        with self._mutex:
            for item in self._queue:
                if type(item) is _Stop:
                    return item.future
            stopped: Future[None] = self.new_future()
            if self._closed:
                stopped.set(None)
                return stopped
            if self._refusal is None:
                self._refusal = (ActorStopped, f"actor {self.name!r} is stopped; spawn it again")
            self._queue.append(_Stop(stopped))
            idle = not self._busy
            self._busy = True
        if idle:
            self._hand_home()
        return stopped

    def snapshot(self) -> Future[SnapshotInfo]:
        """Take a snapshot between two groups; the future resolves once it is durable.

        Raises:
            InvalidOperation: The actor keeps no snapshots.
            ActorStopped, KeyspaceClosed: The actor is stopped or stopping.
        """
        if self.snapshots is None:
            msg = f"actor {self.name!r} keeps no snapshots"
            raise InvalidOperation(msg)
        future: Future[SnapshotInfo] = self.new_future()
        with self._mutex:
            if self._refusal is not None:
                kind, message = self._refusal
                raise kind(message)
            self._queue.append(_Snapshot(future))
            idle = not self._busy
            self._busy = True
        if idle:
            self._hand_home()
        return future

    def compact(self) -> CompactionReport:
        """Apply the retention policy now: drop whole segments below the newest snapshot."""
        newest = self.snapshots.newest if self.snapshots is not None else None
        return self._drop_history(0 if newest is None else newest.seq)

    def refuse(self, kind: type[KeyspaceClosed], message: str) -> None:
        """From now on, new commands raise ``kind(message)`` (say why the actor stopped)."""
        with self._mutex:
            self._refusal = (kind, message)

    def held_here(self) -> bool:
        """Whether the calling thread is running one of this actor's commands."""
        return self._holder == threading.get_ident()

    @property
    def queued(self) -> int:
        """How many commands wait for the right."""
        with self._mutex:  # a deque must not change while it is iterated
            return sum(1 for item in self._queue if type(item) is Command)

    @property
    def durable_state(self) -> Any:
        """The actor's state as of its last durable group (safe to read from any thread)."""
        return self._durable_state

    @property
    def alive(self) -> bool:
        """Whether the actor still accepts commands."""
        return self._refusal is None and not self._closed

    def forsake(self, kind: type[KeyspaceClosed], message: str) -> None:
        """In a forked child: refuse every command.

        Takes no lock: a parent's thread that held one does not exist here.
        """
        self._mutex = threading.Lock()
        self._refusal = (kind, message)
        self._queue = deque()

    # -- the right -----------------------------------------------------------------------------

    def _enqueue(self, item: Command) -> bool:
        """Queue ``item``; returns whether the caller now holds the right."""
        if self.read_only is not None and item.name != REPLICATE:
            raise ReadOnlyStore(self.read_only)
        with self._mutex:
            if self._refusal is not None:
                kind, message = self._refusal
                raise kind(message)
            self._queue.append(item)
            if self._busy:
                if self._gathering and len(self._queue) >= self._expected:
                    self._arrived.notify()  # once, when the gathering holder has enough
                return False
            self._busy = True
            return True

    def _hand_home(self) -> None:
        home = self._home
        assert home is not None, "attach() the home thread first"
        home.wake()

    def _abandon(self, command: Command) -> None:
        """The caller of ``command`` stopped waiting: never hand it the right again."""
        with self._mutex:
            command.abandoned = True
            if not command.lead:
                return
        self._hand_home()  # it was handed the right and will not use it

    def drain(self) -> None:
        """Run queued groups while holding the right, then pass it on. The holder's thread.

        Called by the runtime's home thread when woken, and by :meth:`call`.
        """
        self._drain()

    def _drain(self) -> None:
        # _holder is cleared under the mutex *before* the right is passed on: once passed,
        # the next holder owns the field.
        self._holder = threading.get_ident()
        try:
            while self._run_group():
                if not self._keep_right():
                    return
            self._holder = None  # stopped
        except BaseException as exc:
            # The machinery itself failed (or this thread was interrupted): nobody may hang,
            # and the right must not die with this thread. The actor refuses from now on,
            # so a bug that would fail again cannot loop.
            logger.exception("%s: internal error; failing every queued command", self.name)
            self._give_up(exc)
            if not isinstance(exc, Exception):
                raise

    def _keep_right(self) -> bool:
        """After a group: keep the right (True), or release it or pass it on (False)."""
        with self._mutex:
            if not self._queue:
                self._holder = None
                self._busy = False
                return False
            first = self._queue[0]
            if type(first) is Command and first.waiter is not None and not first.abandoned:
                # Its caller is about to be woken anyway: now it writes the next group.
                self._holder = None
                first.lead = True
                first.waiter.release()
                return False
            home = self._home
            if home is not None and home.is_home():
                return True  # the home thread serves what nobody waits for
            self._holder = None
        self._hand_home()  # a caller's thread: back to its caller, the rest to the home
        return False

    def _gather(self) -> None:
        """Wait briefly for the callers expected back before starting a smaller group.

        The callers a group answered send their next command a few thread switches later;
        starting the next group at once would write it without them and make them wait a
        whole write more (with 16 blocking callers, groups settle at 8 and 8). So the next
        group expects the callers just answered plus those queued then, and while fewer
        are queued it waits for more, up to twice a group write's time (2 ms at most). A
        lone caller expects only itself and never waits.
        """
        expected = self._expected
        queue = self._queue
        if len(queue) >= expected:
            return
        deadline = time.perf_counter() + min(2 * self._write_seconds, MAX_GATHER_SECONDS)
        with self._mutex:
            self._gathering = True
            try:
                while len(queue) < expected:
                    remaining = deadline - time.perf_counter()
                    if remaining <= 0 or (queue and type(queue[-1]) is _Stop):
                        return
                    self._arrived.wait(remaining)
            finally:
                self._gathering = False

    # -- one group (the holder's thread) -------------------------------------------------------

    def _run_group(self) -> bool:  # noqa: C901, PLR0912, PLR0915 - the hot loop, inlined
        """Run queued commands as one group and write it; False once stopped.

        The hot loop of the write path: it takes whatever is queued under one lock, runs
        each command in order with everything in locals, and puts back what the group
        cannot hold.
        """
        self._gather()
        queue, mutex, actor, counters = self._queue, self._mutex, self._actor, self.counters
        payloads, recorded, replies = self._payloads, self._events, self._replies
        join, answer = self._codec.join, self._answer
        operations = self.operations
        seq = self.log.next_seq + len(payloads)
        limit, size = GROUP_BYTES, 0
        while True:
            with mutex:
                if not queue:
                    break
                taken = list(queue)
                queue.clear()
            for index, item in enumerate(taken):
                if type(item) is _Snapshot:
                    if replies:  # between two groups: write the open one first
                        with mutex:
                            queue.extendleft(reversed(taken[index:]))
                        break
                    self._capture_snapshot(item)
                    continue
                if type(item) is _Stop:  # always the last item
                    if replies:
                        with mutex:
                            queue.appendleft(item)  # write the open group first
                        break
                    self._shut_down(item)
                    return False
                command: Command = item  # type: ignore[assignment]  # not a _Stop
                if size and command.size and size + command.size > limit:
                    with mutex:  # it would overflow the group: it leads the next one
                        queue.extendleft(reversed(taken[index:]))
                    break
                counters.commands += 1
                if self._failure is not None:
                    answer(command, None, self._refused_write())
                    continue
                op = command.op
                if op is not None and operations is not None:
                    earlier = operations.answer(op, command.name)
                    if operations.ran(earlier):  # a retry: answered, not run again
                        if replies:
                            replies.append((command, earlier, False))
                        else:
                            answer(command, earlier, None)
                        continue
                before = actor._esa_state
                emitted: list[bytes] = []
                events: list[Any] = []
                actor._esa_emitted, actor._esa_events, actor._esa_seq = emitted, events, seq
                try:
                    result = getattr(actor, command.name)(*command.args, **command.kwargs)
                except BaseException as exc:
                    # Whatever escapes the command (sys.exit() and KeyboardInterrupt too) is
                    # its caller's answer; the actor rolls back and serves the others.
                    actor._esa_state = before
                    if replies:  # the refusal may rest on state that is not durable yet
                        replies.append((command, exc, True))
                    else:
                        answer(command, None, exc)
                    continue
                finally:
                    actor._esa_emitted = actor._esa_events = None
                if emitted:
                    self._group_events += len(emitted)
                    if op is not None and operations is not None:
                        marker = _operation_marker(emitted, op, result)
                        if marker is None:
                            actor._esa_state = before
                            self._group_events -= len(emitted)
                            answer(command, None, InvalidValue(_NO_ROOM_FOR_ID))
                            continue
                        emitted.append(marker)
                        operations.staged(op, seq, result)
                    payload = join(emitted)
                    payloads.append(payload)
                    recorded.append(tuple(events))
                    replies.append((command, result, False))
                    seq += 1
                    if (
                        not size
                        and command.waiter is not None
                        and len(payload) < SMALL_RECORD_BYTES
                    ):
                        # A caller waits for this small write: keep its group small too.
                        # Sends nobody waits on may fill the whole bound: fewer, larger
                        # groups (pipelined put_async, 1,000 -> 7,000 a group: +25%).
                        limit = len(payload) + SMALL_RECORD_BYTES
                    size += len(payload)
                    if size >= limit:  # full: the rest waits for the next group
                        with mutex:
                            queue.extendleft(reversed(taken[index + 1 :]))
                        break
                elif replies:  # it may have seen the group's state, not durable yet
                    replies.append((command, result, False))
                else:
                    answer(command, result, None)  # it saw only durable state: answer now
            else:
                continue
            break
        if replies:
            self._flush()
        return True

    def _flush(self) -> None:
        payloads, replies, events = self._payloads, self._replies, self._events
        self._payloads, self._replies, self._events = [], [], []
        counters = self.counters
        if payloads:
            first = self.log.next_seq
            started = time.perf_counter()
            try:
                last = self.log.append_batch(payloads, expect_first=first)
            except BaseException as exc:
                if self.operations is not None:
                    self.operations.discarded()
                self._refuse_from_now(exc, durable=False)
                self._fail_replies(replies, self._refused_write())
                return
            if self.operations is not None:
                self.operations.committed()
            self._write_seconds += (time.perf_counter() - started - self._write_seconds) / 8
            counters.records += len(payloads)
            self._since_snapshot += len(payloads)
            counters.events += self._group_events
            counters.groups += 1
            self._group_events = 0
            self._durable_state = self._actor.state
            numbered = list(zip(range(first, last + 1), events, strict=True))
            published = Published(first, last, numbered, self.log.last_time)
            try:
                self._actor.on_published(published)
                # After the group is visible to readers, before the listeners: a subscriber
                # starting after published_seq never misses what a read could not see yet.
                self.published_seq = last
                for listener in self.listeners:
                    listener(published)
            except BaseException as exc:
                # Durable, but the published view may be half updated: an error tells
                # callers the outcome is unknown (true), and the actor stops taking commands.
                logger.exception("%s: publishing a group failed; refusing commands", self.name)
                self._refuse_from_now(exc, durable=True)
                self._fail_replies(replies, self._refused_write())
                return
        counters.largest_group = max(counters.largest_group, len(replies))
        counters.group_commands.record(len(replies))
        due = self._since_snapshot >= self._snapshot_every  # replay outgrows the budget
        if due and self._auto_snapshots and not self._snapshot_pending:
            self._snapshot_pending = True
            with self._mutex:
                self._queue.append(_Snapshot(None))
        self._expected = len(replies) + len(self._queue)
        answer, latency, now = self._answer, counters.write_latency, time.perf_counter()
        for command, outcome, is_error in replies:
            latency.record(now - command.started)
            if is_error:
                answer(command, None, outcome)
            else:
                answer(command, outcome, None)

    def _answer(self, command: Command, value: Any, error: BaseException | None) -> None:
        waiter = command.waiter
        if waiter is not None:
            command.outcome = (value, error)
            waiter.release()
            return
        future = command.future
        assert future is not None
        try:
            if error is None:
                future.set(value)
            else:
                future.set_exception(error)
        except Exception:  # one broken waiter (a closed event loop) must not strand the rest
            logger.exception("%s: could not answer a caller", self.name)

    def _fail_replies(self, replies: list[tuple[Command, Any, bool]], exc: BaseException) -> None:
        for command, _, _ in replies:
            self._answer(command, None, exc)

    def _fail_group(self, exc: BaseException) -> None:
        replies = self._replies
        self._payloads, self._replies, self._events, self._group_events = [], [], [], 0
        self._fail_replies(replies, exc)
        self._restore_durable_state()

    def _give_up(self, exc: BaseException) -> None:
        """After an internal error: fail the open group and the queue, refuse the rest."""
        self._fail_group(exc)
        if self._failure is None:
            self._refuse_from_now(exc, durable=False)
        refusal = self._refused_write()
        with self._mutex:
            self._holder = None
            queued = list(self._queue)
            self._queue.clear()
        stop = None
        for item in queued:
            if type(item) is _Stop:
                stop = item
            elif type(item) is _Snapshot:
                if item.future is not None:
                    item.future.set_exception(refusal)
            else:
                self._answer(item, None, refusal)  # type: ignore[arg-type]
        if stop is not None:
            self._shut_down(stop)
            return
        with self._mutex:
            more = bool(self._queue)  # arrived meanwhile: the home refuses them too
            self._busy = more
        if more:
            self._hand_home()

    def _refuse_from_now(self, exc: BaseException, *, durable: bool) -> None:
        """Refuse every later command; drop undurable state unless the group is durable."""
        self._failure = exc
        self.counters.failed = True
        if not durable:
            logger.warning("%s: write failed; refusing writes until reopened", self.name)
            self._restore_durable_state()

    def _restore_durable_state(self) -> None:
        self._actor._esa_state = self._durable_state
        try:
            self._actor.on_write_failed()
        except Exception:
            logger.exception("%s: on_write_failed failed", self.name)

    def _refused_write(self) -> WriteFailed:
        error = WriteFailed(
            f"actor {self.name!r} refuses commands after a failed write ({self._failure}); "
            "stop and spawn it again (reopening the store) to recover from its log"
        )
        error.__cause__ = self._failure
        return error

    # -- history (the holder's thread, between groups) ---------------------------------------

    def _capture_snapshot(self, request: _Snapshot) -> None:
        """Capture the state as of ``log.last_seq`` and write it in the background."""
        snapshots = self.snapshots
        assert snapshots is not None
        seq = self.log.last_seq
        newest = snapshots.newest
        if newest is not None and newest.seq == seq:  # nothing new since
            self._snapshot_pending = False
            _resolve(request.future, newest, None)
            return
        if self._failure is not None:
            self._snapshot_pending = False
            _resolve(request.future, None, self._refused_write())
            return
        try:
            schema, captured = snapshots.codec.capture(self._actor)
            head = self.log.head  # the chain head at seq: nothing was appended since
            self.log.roll()  # so the history below the snapshot can go whole
        except BaseException as exc:
            self._snapshot_pending = False
            _resolve(request.future, None, exc)
            return
        self._since_snapshot = 0
        self._snapshot_pending = True

        def done(info: SnapshotInfo | None, error: BaseException | None) -> None:
            try:
                if info is not None:
                    self._drop_history(info.seq)
                else:
                    self._snapshot_failed(seq, error, asked=request.future is not None)
            finally:  # whatever happened after it, the snapshot's caller is answered
                self._snapshot_pending = False
                _resolve(request.future, info, error)

        log = self.log
        snapshots.write_in_background(
            seq, schema, captured, done, lambda: log.first_seq, chain_head=head
        )

    def _snapshot_failed(self, seq: int, error: BaseException | None, *, asked: bool) -> None:
        """A state that cannot be encoded stops automatic snapshots (said once)."""
        if isinstance(error, InvalidOperation):
            if self._auto_snapshots:
                self._auto_snapshots = False
                logger.error("%s: no automatic snapshots from now on: %s", self.name, error)
        elif not asked:  # nobody else hears of it
            logger.error("%s: the snapshot at seq %d failed: %s", self.name, seq, error)

    def add_listener(self, listener: Callable[[Published], None]) -> None:
        """Call ``listener`` with every group published from now on (in the writer)."""
        self.listeners = [*self.listeners, listener]

    def remove_listener(self, listener: Callable[[Published], None]) -> None:
        """Stop calling ``listener`` (it may see one more group already under way)."""
        self.listeners = [known for known in self.listeners if known is not listener]

    def _drop_history(self, snapshot_seq: int) -> CompactionReport:
        retention = self.policy.retention
        if retention is None or snapshot_seq == 0:
            return CompactionReport(0, 0, self.log.first_seq)
        before = None if retention == 0 else time.time() - retention
        keep_from = snapshot_seq + 1
        for needed in list(self.holds.values()):  # a subscriber still reading older records
            keep_from = min(keep_from, needed())
        try:
            dropped, freed = self.log.drop_segments(keep_from, written_before=before)
        except ActorKVError:
            logger.exception("%s: could not drop history below seq %d", self.name, snapshot_seq)
            return CompactionReport(0, 0, self.log.first_seq)
        return CompactionReport(dropped, freed, self.log.first_seq)

    def _snapshot_at_close(self) -> None:
        """Leave the next open a short replay: snapshot if it has grown past a tenth."""
        snapshots = self.snapshots
        if snapshots is None:
            return
        snapshots.wait()
        worth = self._since_snapshot >= self._snapshot_every * CLOSE_SNAPSHOT_FRACTION
        if not (worth and self._auto_snapshots and self._failure is None):
            return
        try:
            schema, captured = snapshots.codec.capture(self._actor)
            self.log.roll()
            log = self.log
            info = snapshots.write(
                log.last_seq, schema, captured, first_seq=log.first_seq, chain_head=log.head
            )
            self._drop_history(info.seq)
        except ActorKVError:
            logger.exception("%s: the snapshot at close failed; the next open replays", self.name)

    def _shut_down(self, stop: _Stop) -> None:
        """Close the log and answer the stop; the queue is empty (new commands refused)."""
        self._closed = True
        try:
            self._snapshot_at_close()
            self.log.close()
        finally:
            stop.future.set(None)
            home = self._home
            if home is not None:
                home.stop()


def _resolve(future: Future[Any] | None, value: Any, error: BaseException | None) -> None:
    if future is None:
        return
    if error is None:
        future.set(value)
    else:
        future.set_exception(error)


__all__ = [
    "ActorCore",
    "ActorStats",
    "Command",
    "Counters",
    "Home",
    "Published",
    "ReplayProgress",
    "replay",
]
