"""The base class users subclass to write event-sourced actors.

An actor is a fold: ``state = apply(apply(initial_state(), e1), e2) ...``. Commands are the
public methods of the subclass. A command checks its rules against ``self.state`` and calls
``self.emit(...)``; each emitted event is applied at once (so the rest of the command, and
every later command, sees it) and all events of one command are written as one log record.
The command's caller hears back only once that record is durable.

Threads: commands run one at a time, never two at once, each against the latest state, but
not always in the same thread: whoever holds the actor's execution right runs them (a
blocking caller that finds the actor idle runs its own command in its own thread; commands
sent without waiting run in the actor's home thread). So a command must not rely on
thread-local state or on which thread it runs in. ``initial_state`` and ``apply`` also run
on replay, in the thread that spawns the actor. The hooks run in the thread that wrote the
group.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, ClassVar, Generic, TypeVar

from actors._events import EventCodec
from storage.errors import InvalidInput

if TYPE_CHECKING:
    from actors._core import Published

S = TypeVar("S")

# Names on the base class that are not commands, even though they are public.
FRAMEWORK_NAMES = frozenset(
    {
        "apply",
        "apply_records",
        "check_event_fields",
        "emit",
        "event_types",
        "initial_state",
        "on_persisted",
        "on_published",
        "on_write_failed",
        "record_seq",
        "restore_state",
        "schema_version",
        "snapshot_state",
        "state",
    }
)


class EventSourcedActor(Generic[S]):
    """Base class of an event-sourced actor whose state has type ``S``.

    Subclasses define :meth:`initial_state`, :meth:`apply` and their commands. Event types
    are msgspec Structs declared with ``tag=True`` (``frozen=True`` recommended); they are
    found from the annotation of ``apply``'s ``event`` parameter, or from ``event_types``.

    Example::

        class Counter(EventSourcedActor[int]):
            def initial_state(self) -> int:
                return 0

            def apply(self, state: int, event: Incremented) -> int:
                return state + event.by

            def increment(self, by: int) -> int:
                if by <= 0:
                    raise ValueError("by must be positive")
                self.emit(Incremented(by))
                return self.state
    """

    event_types: ClassVar[tuple[type, ...] | None] = None
    """The event types, if they cannot be read from the annotation of :meth:`apply`."""

    schema_version: ClassVar[int | None] = None
    """Identifies what this actor's snapshots hold; None derives it from the state and event
    type names. Change it when the state's shape changes, so old snapshots are not trusted
    (recovery then replays the log)."""

    check_event_fields: ClassVar[bool] = True
    """Decode each emitted event once to check its field types (msgspec does not check
    them when a Struct is built). Turn off only where every field is checked already."""

    # Set by the framework: the current state, and the events of the running command.
    _esa_state: S
    _esa_emitted: list[bytes] | None = None
    _esa_events: list[Any] | None = None
    _esa_encode: Callable[[Any], bytes]
    _esa_seq: int = 0

    def initial_state(self) -> S:
        """Return the state before any event. Called once per spawn, before replay."""
        raise NotImplementedError

    def apply(self, state: S, event: Any) -> S:
        """Return the state after ``event``. Must be pure: same inputs, same result.

        It runs live (from :meth:`emit`) and on replay, so it must not read clocks, random
        numbers or anything outside its arguments, and must return a new state rather than
        mutate ``state`` (a failed command rolls back by keeping the old state object).
        """
        raise NotImplementedError

    @property
    def state(self) -> S:
        """The current state, including every event emitted so far (durable or not yet)."""
        return self._esa_state

    @property
    def record_seq(self) -> int:
        """Sequence number of the log record being built (command) or applied (apply).

        Valid in commands and in :meth:`apply`, live and on replay: a deterministic input
        that ``apply`` may use. In a command it is the number the log gives the record
        when its group is written (the log checks the numbering; a receipt carries it).
        """
        return self._esa_seq

    def _esa_replicate(self, events: tuple[Any, ...]) -> None:
        """A replica's command: record another store's record, as it was (its seq is next)."""
        self.emit(*events)

    def emit(self, *events: Any) -> None:
        """Record ``events`` as this command's outcome and apply them to the state now.

        Every event is checked and encoded before any is applied, so a bad event changes
        nothing. The events of one command are written as one record after the command
        returns; if the command raises, none of them is written and the state is rolled back
        to the object it was before the command (see :meth:`apply`).

        Raises:
            RuntimeError: Called outside a command.
            InvalidValue: An event is not one of this actor's event types, cannot be
                encoded, or the command's events would not fit in one log record.
        """
        emitted = self._esa_emitted
        if emitted is None:
            msg = "emit() can only be called from a command running in the actor"
            raise RuntimeError(msg)
        if len(events) == 1 and not emitted:
            # The usual command: one event, whose encoder already refused anything over a
            # record's size, so there is no total to check (-0.4 us a command).
            (event,) = events
            encoded_one = self._esa_encode(event)
            self._esa_state = self.apply(self._esa_state, event)
            emitted.append(encoded_one)
            recorded = self._esa_events
            if recorded is not None:
                recorded.append(event)
            return
        encoded = [self._esa_encode(event) for event in events]
        EventCodec.check_record_size(emitted, encoded)  # before anything is applied
        apply = self.apply
        state = self._esa_state
        for event in events:
            state = apply(state, event)
        self._esa_state = state
        emitted.extend(encoded)
        recorded = self._esa_events
        if recorded is not None:
            recorded.extend(events)

    def apply_records(self, state: S, records: Iterable[tuple[int, tuple[Any, ...]]]) -> S:
        """Fold many records at once on replay: ``(seq, events)`` each, in order.

        Optional, for speed: by default replay calls :meth:`apply` for each event (with
        :attr:`record_seq` set). An actor whose state is a structure it updates in place
        (the key space) may fold a whole chunk in one call; it must give the same state
        as applying each event in turn.
        """
        apply = self.apply
        for seq, events in records:
            self._esa_seq = seq
            for event in events:
                state = apply(state, event)
        return state

    def snapshot_state(self, state: S) -> Any:
        """What a snapshot stores of ``state``: by default the state itself.

        Override when msgspec cannot encode the state (return something it can), together
        with :meth:`restore_state`. Runs in the writing thread, between groups: keep it quick
        (the encoding itself happens in the background).
        """
        return state

    def restore_state(self, data: Any) -> S:
        """The state from what :meth:`snapshot_state` stored; by default ``data`` itself.

        Without an override, ``data`` is converted to the return type of ``initial_state``
        when that is annotated (a Struct, a tuple, ...); an override gets what was stored.
        """
        state: S = data
        return state

    def on_published(self, group: Published) -> None:  # noqa: ARG002 - for overriders
        """Hook: a group of records is durable; runs before its callers are answered.

        ``group`` has ``first_seq``, ``last_seq`` and each record's ``(seq, events)``. The
        default calls :meth:`on_persisted`. Override it to see the events.
        """
        self.on_persisted()

    def on_persisted(self) -> None:
        """Hook: the events emitted so far are durable. The writing thread.

        Called after each group write succeeds, before its callers are answered, and once
        after replay. The default does nothing; an actor that publishes state to other
        threads (the key space's read view) does it here.
        """

    def on_write_failed(self) -> None:
        """Hook: a group write failed; its events are not durable. The writing thread.

        The framework restores the last durable state object before calling this; an actor
        that keeps state outside ``state`` discards its undurable part here. The actor then
        refuses commands until it is spawned again.
        """


def command_names(actor_class: type) -> frozenset[str]:
    """The public methods of ``actor_class`` that are commands."""
    names = set()
    hooks: frozenset[str] = getattr(actor_class, "hooks", frozenset())  # the framework's
    for klass in actor_class.__mro__:
        if klass in (EventSourcedActor, Generic, object):
            continue
        for name, member in vars(klass).items():
            if name.startswith("_") or name in FRAMEWORK_NAMES or name in hooks:
                continue
            if callable(member):
                names.add(name)
    return frozenset(names)


def command_of(actor_class: type, command: object) -> str:
    """The name of ``command``, if it is a method of ``actor_class`` (for a typed ``ask``).

    Raises:
        AttributeError: It is not (a function of another class, or not a method at all).
    """
    name = getattr(command, "__name__", None)
    if not isinstance(name, str) or getattr(actor_class, name, None) is not command:
        owner = actor_class.__name__
        msg = (
            f"ask() takes a command of {owner} itself, like handle.ask({owner}.<command>, "
            f"...); got {command!r:.80}"
        )
        raise AttributeError(msg)
    return name


def import_actor_class(recorded: str, name: str) -> type[EventSourcedActor[Any]]:
    """The class a manifest records (``module.QualName``) for the actor ``name``, imported.

    Raises:
        InvalidInput: It cannot be imported here (says where it is looked for).
    """
    module, _, qualname = recorded.rpartition(".")
    try:
        found: Any = importlib.import_module(module)
        for part in qualname.split("."):
            found = getattr(found, part)
    except (ImportError, AttributeError, ValueError) as exc:
        msg = (
            f"actor {name!r} is a {recorded}, which cannot be imported here ({exc}); run "
            "this where its code is importable (PYTHONPATH), or pass its class"
        )
        raise InvalidInput(msg) from None
    if not (isinstance(found, type) and issubclass(found, EventSourcedActor)):
        msg = f"actor {name!r}: {recorded} is not an EventSourcedActor class"
        raise InvalidInput(msg)
    return found
