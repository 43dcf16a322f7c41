"""The caller's side of a spawned actor: a thread-safe handle whose commands return futures."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, Generic, TypeVar

import pykka

from actors._actor import EventSourcedActor
from actors._future import Reply
from actors._host import ActorStats, Command, Counters, running_log
from storage import SegmentedLog
from storage.errors import (
    ActorStopped,
    InvalidOperation,
    KeyspaceClosed,
    StopTimeout,
    StoreForked,
)

A = TypeVar("A", bound=EventSourcedActor[Any])


class ActorHandle(Generic[A]):
    """A handle on a running actor of class ``A``; share it freely between threads.

    Every command method of ``A`` is available on the handle and returns a pykka future:
    ``handle.increment(2).get(timeout=5)``. The future resolves once the command's events
    are durable under the store's fsync policy, or raises what the command raised.
    """

    def __init__(
        self,
        name: str,
        actor_class: type[A],
        ref: pykka.ActorRef[Any],
        commands: frozenset[str],
        counters: Counters,
        log: SegmentedLog,
    ) -> None:
        self.name = name
        self.actor_class = actor_class
        self._ref = ref
        self._commands = commands
        self._counters = counters
        self._log = log
        # Held while a command is queued and while stopping: no command can slip into the
        # inbox after the stop message, where nobody would answer it.
        self._gate = threading.Lock()
        self._stopped = False
        self._refusal: tuple[type[KeyspaceClosed], str] = (
            ActorStopped,
            f"actor {name!r} is stopped; spawn it again",
        )

    def __getattr__(self, name: str) -> Callable[..., pykka.Future[Any]]:
        """Return a sender for the command ``name`` (cached on the handle)."""
        if name.startswith("_") or name not in self._commands:
            known = ", ".join(sorted(self._commands)) or "none"
            msg = f"{self.actor_class.__name__} has no command {name!r} (commands: {known})"
            raise AttributeError(msg)
        enqueue = self.enqueue

        def send(*args: Any, **kwargs: Any) -> pykka.Future[Any]:
            future: pykka.Future[Any] = Reply()
            enqueue(Command(name, args, kwargs, future))
            return future

        send.__name__ = name
        self.__dict__[name] = send
        return send

    def enqueue(self, command: Command) -> None:
        """Queue a command whose future the caller made (to bridge to asyncio, say).

        Raises:
            ActorStopped: The actor is stopped or stopping.
            KeyspaceClosed: Its store was closed, its key space dropped (the message says),
                or (``StoreForked``) this process is a fork of the one that owns it.
        """
        with self._gate:
            if self._stopped:
                kind, message = self._refusal
                raise kind(message)
            try:
                self._ref.tell(command)
            except pykka.ActorDeadError as exc:
                msg = f"actor {self.name!r} has stopped: {exc}"
                raise ActorStopped(msg) from exc

    def stats(self) -> ActorStats:
        """A snapshot of the actor's counters. Thread-safe, no round trip."""
        c = self._counters
        return ActorStats(
            commands=c.commands,
            events=c.events,
            records=c.records,
            groups=c.groups,
            fsyncs=self._log.fsyncs,
            largest_group=c.largest_group,
            events_replayed=c.events_replayed,
            records_replayed=c.records_replayed,
            failed=c.failed or self._log.failed is not None,  # a background fsync, too
        )

    @property
    def last_seq(self) -> int:
        """Sequence number of the newest record written by this actor."""
        return self._log.last_seq

    @property
    def alive(self) -> bool:
        """Whether the actor still accepts commands."""
        return not self._stopped and self._ref.is_alive()

    def stop(self, timeout: float | None = 30.0) -> None:
        """Answer every queued command, flush, sync and close the actor's log.

        Commands sent after this raise :class:`ActorStopped`. Safe to call twice.

        Raises:
            InvalidOperation: Called from inside one of this actor's own commands, where it
                would wait for itself.
            StopTimeout: The actor did not stop within ``timeout`` seconds (a command is
                still running); it stops, and closes its log, once that command returns.
        """
        if self.in_own_thread():
            msg = (
                f"actor {self.name!r} cannot be stopped from inside its own command (it would "
                "wait for itself); stop it from another thread"
            )
            raise InvalidOperation(msg)
        stopping = self.stop_async()
        try:
            stopping.get(timeout=timeout)
        except pykka.Timeout:
            raise StopTimeout([self.name], timeout or 0.0) from None

    def stop_async(self) -> pykka.Future[Any]:
        """Refuse new commands and queue the stop; the future resolves once it stopped."""
        with self._gate:
            self._stopped = True
        return self._ref.stop(block=False)

    def refuse(self, kind: type[KeyspaceClosed], message: str) -> None:
        """From now on, commands raise ``kind(message)`` (say why the handle is closed)."""
        with self._gate:
            self._stopped = True
            self._refusal = (kind, message)

    def forsake(self, message: str) -> None:
        """In a forked child: refuse every command with :class:`StoreForked`; touch nothing.

        Takes no lock a parent's thread may have held at the fork (it does not exist here).
        """
        self._gate = threading.Lock()
        self._stopped = True
        self._refusal = (StoreForked, message)

    def in_own_thread(self) -> bool:
        """Whether the calling thread is this actor's own (inside one of its commands)."""
        return running_log() is self._log

    def __repr__(self) -> str:
        state = "running" if self.alive else "stopped"
        return f"<ActorHandle {self.name!r} {self.actor_class.__name__} {state}>"


HANDLE_NAMES = frozenset(
    name for name in [*vars(ActorHandle), "name", "actor_class"] if not name.startswith("_")
)
"""Public names of the handle itself, which no command may use."""
