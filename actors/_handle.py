"""The caller's side of a spawned actor: a thread-safe handle on its core."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Concatenate, Generic, ParamSpec, TypeVar

from actors._actor import EventSourcedActor, command_of
from actors._core import ActorCore, ActorStats, Command
from actors._future import Future
from actors._names import check_name
from actors._snapshots import CompactionReport
from actors._subscription import ActorEvent, Subscription, actor_events
from storage.chain import Anchor
from storage.errors import InvalidOperation, KeyspaceClosed, StopTimeout, StoreForked
from storage.snapshot import SnapshotInfo

A = TypeVar("A", bound=EventSourcedActor[Any])
P = ParamSpec("P")
R = TypeVar("R")


class ActorHandle(Generic[A]):
    """A handle on a running actor of class ``A``; share it freely between threads.

    Every command method of ``A`` is available on the handle and returns a future at once:
    ``handle.increment(2).get(timeout=5)``; the command runs in the actor's home thread (or
    in whichever thread is writing the actor's groups). ``handle.blocking.increment(2)``
    runs it and returns its result: in the calling thread itself when the actor is idle, so
    no thread is woken. Either way the result comes once the command's events are durable
    under the store's fsync policy, or raises what the command raised.
    """

    def __init__(
        self, name: str, actor_class: type[A], core: ActorCore, commands: frozenset[str]
    ) -> None:
        self.name = name
        self.actor_class = actor_class
        self._core = core
        self._commands = commands
        self.new_future: Callable[[], Future[Any]] = core.new_future
        """Make a new future of the runtime's type, for :meth:`enqueue`."""
        self.blocking: BlockingCalls[A] = BlockingCalls(self)
        """The same commands, run and waited for: ``handle.blocking.increment(2) -> 2``."""

    @property
    def core(self) -> ActorCore:
        """The actor's core: its log, snapshots and group commit (for the layers above)."""
        return self._core

    def __getattr__(self, name: str) -> Callable[..., Future[Any]]:
        """Return a sender for the command ``name`` (cached on the handle)."""
        self._check_command(name)
        core = self._core
        send = core.send
        new_future = core.new_future

        def sender(*args: Any, **kwargs: Any) -> Future[Any]:
            future = new_future()
            send(Command(name, args, kwargs, future))
            return future

        sender.__name__ = name
        self.__dict__[name] = sender
        return sender

    def ask(
        self, command: Callable[Concatenate[A, P], R], /, *args: P.args, **kwargs: P.kwargs
    ) -> Future[R]:
        """Send ``command``, a method of the actor's class, typed for mypy.

        ``handle.ask(Counter.add, 1)`` is ``handle.add(1)`` whose arguments and result type
        mypy checks: it returns a ``Future[int]`` when ``Counter.add`` returns an int.

        Raises:
            AttributeError: ``command`` is not a command of this handle's actor class.
        """
        name = self._command_of(command)
        future: Future[R] = self._core.new_future()
        self._core.send(Command(name, args, kwargs, future))
        return future

    def _command_of(self, command: Callable[..., Any]) -> str:
        """The name of ``command`` if it is this actor class's command method."""
        name = command_of(self.actor_class, command)
        self._check_command(name)
        return name

    def _check_command(self, name: str) -> None:
        if name.startswith("_") or name not in self._commands:
            known = ", ".join(sorted(self._commands)) or "none"
            msg = f"{self.actor_class.__name__} has no command {name!r} (commands: {known})"
            raise AttributeError(msg)

    def execute(self, command: Command) -> Any:
        """Run a command built by the caller (see :class:`Command`) and return its result."""
        return self._core.call(command)

    def enqueue(self, command: Command) -> None:
        """Queue a command whose future the caller made.

        Raises:
            ActorStopped: The actor is stopped or stopping.
            KeyspaceClosed: Its store was closed, its key space dropped (the message says),
                or (``StoreForked``) this process is a fork of the one that owns it.
        """
        self._core.send(command)

    def stats(self) -> ActorStats:
        """A snapshot of the actor's counters. Thread-safe, no round trip."""
        core = self._core
        c = core.counters
        newest = core.snapshots.newest if core.snapshots is not None else None
        return ActorStats(
            commands=c.commands,
            events=c.events,
            records=c.records,
            groups=c.groups,
            fsyncs=core.log.fsyncs,
            largest_group=c.largest_group,
            events_replayed=c.events_replayed,
            records_replayed=c.records_replayed,
            failed=c.failed or core.log.failed is not None,  # a background fsync, too
            queued=core.queued,
            snapshot_seq=newest.seq if newest is not None else 0,
            history_floor=core.log.first_seq,
            log_bytes=core.log.bytes_on_disk,
        )

    def snapshot(self) -> Future[SnapshotInfo]:
        """Take a snapshot now; the future resolves once it is durable (``SnapshotInfo``).

        The state is captured between two groups (a short pause for the writers) and
        written in the background. Without a ``snapshot_state`` the actor's state must be
        something msgspec encodes, else the future raises ``InvalidOperation``.
        """
        return self._core.snapshot()

    def subscribe(
        self, from_seq: int | None = None, *, name: str | None = None
    ) -> Subscription[ActorEvent]:
        """Every durable event of the actor from ``from_seq`` on, as :class:`ActorEvent`.

        The same delivery as ``KeySpace.subscribe`` (history, then live; never dropped;
        ``name=`` for a durable, acknowledged position).
        """
        if name is not None:
            check_name(name, "subscription")
        core = self._core
        return Subscription(core, actor_events, from_seq, name=name, positions=core.positions)

    def anchor(self) -> Anchor:
        """``Anchor(seq, head)`` of the actor's log now (see ``KeySpace.anchor``)."""
        return self._core.log.anchor()

    def compact(self) -> CompactionReport:
        """Apply the retention policy now (see ``Store.open(retention=...)``)."""
        return self._core.compact()

    @property
    def durable_state(self) -> Any:
        """The actor's state as of its last durable group, read in the calling thread.

        No round trip and no waiting: commands never mutate a state (``apply`` returns a
        new one), so the object is safe to read while commands run. It does not include
        what commands emitted since, until their group is durable.
        """
        return self._core.durable_state

    @property
    def last_seq(self) -> int:
        """Sequence number of the newest record written by this actor."""
        return self._core.log.last_seq

    @property
    def alive(self) -> bool:
        """Whether the actor still accepts commands."""
        return self._core.alive

    def stop(self, timeout: float | None = 30.0) -> None:
        """Run every queued command, flush, sync and close the actor's log.

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
        except stopping.timeout_error:
            raise StopTimeout([self.name], timeout or 0.0) from None

    def stop_async(self) -> Future[None]:
        """Refuse new commands and queue the stop; the future resolves once it stopped."""
        return self._core.stop()

    def refuse(self, kind: type[KeyspaceClosed], message: str) -> None:
        """From now on, commands raise ``kind(message)`` (say why the handle is closed)."""
        self._core.refuse(kind, message)

    def forsake(self, message: str) -> None:
        """In a forked child: refuse every command with :class:`StoreForked`; touch nothing."""
        self._core.forsake(StoreForked, message)

    def in_own_thread(self) -> bool:
        """Whether the calling thread is running one of this actor's commands."""
        return self._core.held_here()

    def __repr__(self) -> str:
        state = "running" if self.alive else "stopped"
        return f"<ActorHandle {self.name!r} {self.actor_class.__name__} {state}>"


class BlockingCalls(Generic[A]):
    """``handle.blocking.<command>(...)``: run a command and wait for its durable result."""

    def __init__(self, handle: ActorHandle[A]) -> None:
        self._handle = handle

    def ask(
        self, command: Callable[Concatenate[A, P], R], /, *args: P.args, **kwargs: P.kwargs
    ) -> R:
        """Run ``command`` (a method of the actor's class) and return its result, typed.

        ``handle.blocking.ask(Counter.add, 1)`` is ``handle.blocking.add(1)``, checked by
        mypy: its arguments against ``Counter.add``'s, its result as what that returns.
        """
        handle = self._handle
        result: R = handle._core.call(Command(handle._command_of(command), args, kwargs))
        return result

    def __getattr__(self, name: str) -> Callable[..., Any]:
        handle = self._handle
        handle._check_command(name)
        call = handle._core.call

        def caller(*args: Any, **kwargs: Any) -> Any:
            return call(Command(name, args, kwargs))

        caller.__name__ = name
        self.__dict__[name] = caller
        return caller


HANDLE_NAMES = frozenset(
    name
    for name in [*vars(ActorHandle), "name", "actor_class", "blocking", "new_future"]
    if not name.startswith("_")
)
"""Public names of the handle itself, which no command may use."""
