"""The pykka actor that hosts an EventSourcedActor: command loop, group commit, replay.

Write path, in the actor's thread, per message:

1. ``_run``: call the command; its emitted events are applied at once and encoded into one
   record payload; the reply waits in the open group.
2. If the inbox is empty (no command is waiting behind this one), ``_flush`` writes every
   payload of the group with one ``append_batch`` (one write, at most one fsync), then
   answers every caller of the group.

While a write or fsync runs, new commands queue up in the inbox; they form the next group,
so one fsync serves them all. Callers are answered only after their record is durable, and a
command that emitted nothing but ran after a command still in the group waits with it (it
may have observed that command's state).
"""

from __future__ import annotations

import logging
import queue
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import msgspec
import pykka

from actors._actor import EventSourcedActor
from actors._events import EventCodec
from storage import SegmentedLog
from storage.errors import ActorStopped, CorruptLog, ReplayFailed, WriteFailed

logger = logging.getLogger("actorkv.actors")

ReplayProgress = Callable[[str, int, int], None]
"""Called as ``progress(actor_name, records_replayed, records_total)`` during replay."""

_PROGRESS_EVERY = 65536  # records between progress reports: ~0.1 s of replay
_MAX_GATHER_SECONDS = 0.002  # bounds the latency a gathering wait can add

_THREAD = threading.local()  # .log: the log of the actor this thread hosts, if any


def running_log() -> SegmentedLog | None:
    """The log of the actor whose thread is calling, or None outside actor threads.

    A call that waits for an actor (stop, close) must not be made from that actor's own
    thread: it would wait for itself.
    """
    log: SegmentedLog | None = getattr(_THREAD, "log", None)
    return log


class Command:
    """A command message: which method, its arguments, and the future to answer."""

    __slots__ = ("args", "future", "kwargs", "name")

    def __init__(
        self, name: str, args: tuple[Any, ...], kwargs: dict[str, Any], future: pykka.Future[Any]
    ) -> None:
        self.name = name
        self.args = args
        self.kwargs = kwargs
        self.future = future


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
        failed: Whether the actor refuses writes after a failed write or fsync.
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


@dataclass(slots=True)
class Counters:
    """Mutable counters written by the actor thread; read as :class:`ActorStats`."""

    commands: int = 0
    events: int = 0
    records: int = 0
    groups: int = 0
    largest_group: int = 0
    events_replayed: int = 0
    records_replayed: int = 0
    failed: bool = False


def replay(
    name: str,
    actor: EventSourcedActor[Any],
    log: SegmentedLog,
    codec: EventCodec,
    counters: Counters,
    progress: ReplayProgress | None,
) -> None:
    """Fold every record of ``log`` into ``actor``'s state, from ``initial_state()``.

    Raises:
        CorruptLog: A damaged record, or one that no longer decodes as this actor's events.
    """
    total = log.last_seq - log.first_seq + 1
    apply = actor.apply
    decode = codec.decode
    state = actor.initial_state()
    records = events = 0
    for seq, payload in log.read():
        actor._esa_seq = seq
        try:
            decoded = decode(payload)
        except msgspec.DecodeError as exc:
            reason = (
                f"record {seq} does not decode as {type(actor).__name__}'s events ({exc}); "
                "were event types changed without defaults for new fields?"
            )
            raise CorruptLog(log.directory, 0, reason) from exc
        for event in decoded:
            try:
                state = apply(state, event)
            except Exception as exc:
                raise ReplayFailed(name, seq, event, exc) from exc
        events += len(decoded)
        records += 1
        if progress is not None and records % _PROGRESS_EVERY == 0:
            progress(name, records, total)
    actor._esa_state = state
    actor.on_persisted()
    counters.records_replayed = records
    counters.events_replayed = events
    if progress is not None:
        progress(name, records, total)
    logger.debug("%s: replayed %d events from %d records", name, events, records)


class ActorHost(pykka.ThreadingActor):
    """Runs one EventSourcedActor's commands in its own thread and persists their events."""

    # A store left open must not keep the interpreter from exiting: with non-daemon actor
    # threads, exit waits for them forever. Open stores are closed by an atexit hook instead
    # (see actors._store), which flushes and syncs before the threads go.
    use_daemon_thread = True

    @staticmethod
    def _create_actor_inbox() -> queue.SimpleQueue[Any]:
        # pykka's hook for actor implementations. SimpleQueue (C) instead of queue.Queue
        # (Python, a Condition per put/get): the inbox is taken twice per command, and
        # `empty()` once more to decide when to flush a group.
        return queue.SimpleQueue()

    def __init__(
        self,
        name: str,
        actor: EventSourcedActor[Any],
        log: SegmentedLog,
        codec: EventCodec,
        counters: Counters,
    ) -> None:
        super().__init__()
        self._name = name
        self._actor = actor
        self._log = log
        self._codec = codec
        self._counters = counters
        self._payloads: list[bytes] = []
        # (future, result or exc_info, whether it is an error): answered when the group is
        # durable, errors included, since a refusal may rest on state not yet durable.
        self._replies: list[tuple[pykka.Future[Any], Any, bool]] = []
        self._group_events = 0
        self._durable_state: Any = actor.state
        self._failure: BaseException | None = None
        self._closed = False
        # Group gathering (see _gather): how many commands the next group should hold, and
        # how long a group write takes (an exponential moving average, seconds).
        self._expected = 0
        self._write_seconds = 0.0

    def on_start(self) -> None:
        """Mark this thread as the actor's own (see :func:`running_log`). Actor thread."""
        _THREAD.log = self._log

    def on_receive(self, message: Any) -> None:
        """Run a command; flush the group when nothing else is waiting. Actor thread."""
        try:
            if type(message) is Command:
                self._run(message)
            else:
                logger.warning("%s ignored an unexpected message: %r", self._name, message)
            if self._replies and self.actor_inbox.empty():
                self._gather()
                self._flush()
        except BaseException:
            # A bug here must not leave callers hanging: fail the group, keep serving reads.
            logger.exception("%s: internal error; failing the open group", self._name)
            self._fail_group(sys.exc_info()[1] or RuntimeError("internal error"))

    def on_stop(self) -> None:
        """Flush the open group, close the log, fail anything still queued. Actor thread."""
        self._shut_down()

    def on_failure(self, *_exc_info: object) -> None:
        """Same clean-up as :meth:`on_stop` when the actor dies of an unexpected error."""
        self._shut_down()

    def _run(self, command: Command) -> None:
        future = command.future
        counters = self._counters
        counters.commands += 1
        if self._closed:
            future.set_exception(_exc_info(ActorStopped(f"actor {self._name!r} is stopped")))
            return
        if self._failure is not None:
            future.set_exception(_exc_info(self._refusal()))
            return
        actor = self._actor
        before = actor._esa_state
        emitted: list[bytes] = []
        actor._esa_emitted = emitted
        actor._esa_seq = self._log.last_seq + len(self._payloads) + 1
        try:
            result = getattr(actor, command.name)(*command.args, **command.kwargs)
        except BaseException as exc:
            # Whatever escapes the command (sys.exit() and KeyboardInterrupt included) is
            # its caller's answer; the actor rolls back and goes on serving the others.
            actor._esa_state = before
            self._answer_error(future, _exc_info(exc))
            return
        finally:
            actor._esa_emitted = None
        if not emitted and not self._replies:
            future.set(result)  # it saw only durable state: answer now
            return
        if emitted:
            payload = self._codec.join(emitted)
            self._payloads.append(payload)
            self._group_events += len(emitted)
        self._replies.append((future, result, False))

    def _gather(self) -> None:
        """Wait briefly for callers expected back before writing a smaller group.

        Callers answered by a group send their next command a few thread switches later;
        writing at the first empty inbox would fsync for the first of them and make the rest
        wait a whole write more (with 16 blocking callers, groups settle at 8 and 8). So the
        next group expects the callers just answered plus the commands already queued, and
        while fewer are pending it waits for more, up to twice a group write's time (2 ms
        at most). A lone caller never waits (it expects itself). Measured on a 2-core
        machine, 16 blocking callers under fsync="always": 7.9 -> 14 commands per group.
        """
        target = self._expected
        if len(self._replies) >= target:
            return
        inbox = self.actor_inbox
        deadline = time.perf_counter() + min(2 * self._write_seconds, _MAX_GATHER_SECONDS)
        while len(self._replies) < target:
            remaining = deadline - time.perf_counter()
            if remaining <= 0:
                return
            try:
                envelope = inbox.get(timeout=remaining)  # type: ignore[call-arg]
            except queue.Empty:
                return
            if type(envelope.message) is not Command:
                # A stop request: it is always the last message (the handle's gate keeps
                # commands out after it), so putting it back keeps the order.
                inbox.put(envelope)
                return
            self._run(envelope.message)

    def _answer_error(self, future: pykka.Future[Any], error: Any) -> None:
        if self._replies:  # the refusal may rest on state that is not durable yet
            self._replies.append((future, error, True))
        else:
            future.set_exception(error)

    def _flush(self) -> None:
        payloads, replies = self._payloads, self._replies
        self._payloads, self._replies = [], []
        counters = self._counters
        if payloads:
            started = time.perf_counter()
            try:
                self._log.append_batch(payloads)
            except BaseException as exc:
                self._refuse_from_now(exc, durable=False)
                _fail_all(replies, self._refusal())
                return
            elapsed = time.perf_counter() - started
            self._write_seconds += (elapsed - self._write_seconds) / 8
            counters.records += len(payloads)
            counters.events += self._group_events
            counters.groups += 1
            self._group_events = 0
            self._durable_state = self._actor.state
            try:
                self._actor.on_persisted()
            except BaseException as exc:
                # Durable, but the actor's view may be half updated: an error tells callers
                # the outcome is unknown (true), and the actor stops taking commands.
                logger.exception("%s: on_persisted failed; refusing commands", self._name)
                self._refuse_from_now(exc, durable=True)
                _fail_all(replies, self._refusal())
                return
        self._expected = len(replies) + self.actor_inbox.qsize()  # type: ignore[attr-defined]
        counters.largest_group = max(counters.largest_group, len(replies))
        for future, outcome, is_error in replies:
            try:
                if is_error:
                    future.set_exception(outcome)
                else:
                    future.set(outcome)
            except Exception:  # one broken waiter (a closed event loop) must not strand the rest
                logger.exception("%s: could not answer a caller", self._name)

    def _fail_group(self, exc: BaseException) -> None:
        replies = self._replies
        self._payloads, self._replies, self._group_events = [], [], 0
        _fail_all(replies, exc)
        self._restore_durable_state()

    def _refuse_from_now(self, exc: BaseException, *, durable: bool) -> None:
        """Refuse every later command; drop undurable state unless the group is durable."""
        self._failure = exc
        self._counters.failed = True
        if not durable:
            logger.warning("%s: write failed; refusing writes until reopened", self._name)
            self._restore_durable_state()

    def _restore_durable_state(self) -> None:
        self._actor._esa_state = self._durable_state
        try:
            self._actor.on_write_failed()
        except Exception:
            logger.exception("%s: on_write_failed failed", self._name)

    def _refusal(self) -> WriteFailed:
        error = WriteFailed(
            f"actor {self._name!r} refuses commands after a failed write ({self._failure}); "
            "stop and spawn it again (reopening the store) to recover from its log"
        )
        error.__cause__ = self._failure
        return error

    def _shut_down(self) -> None:
        if self._closed:
            return
        try:
            if self._replies:
                self._flush()
        finally:
            self._closed = True
            self._log.close()
            stopped = _exc_info(ActorStopped(f"actor {self._name!r} stopped before running this"))
            inbox = self.actor_inbox
            while not inbox.empty():
                message = inbox.get().message
                if type(message) is Command:
                    message.future.set_exception(stopped)


def _fail_all(replies: list[tuple[pykka.Future[Any], Any, bool]], exc: BaseException) -> None:
    error = _exc_info(exc)
    for future, _, _ in replies:
        try:
            future.set_exception(error)
        except Exception:
            logger.exception("could not answer a caller")


def _exc_info(exc: BaseException) -> tuple[type[BaseException], BaseException, Any]:
    return (type(exc), exc, exc.__traceback__)
