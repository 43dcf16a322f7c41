"""Projections: actors fed by the changes of key spaces, each change applied exactly once.

A :class:`Projection` is an event-sourced actor whose input is the changes of one or more
source key spaces. A feeder thread per source follows it with a subscription and hands
the projection the changes that are ready, a few hundred at a time, as one command; the
command calls :meth:`Projection.project` for each change (which emits the projection's own,
derived events) and then emits ``Advanced(source, seq, index)``: how far that source has
been applied. Both land in the same record, so after any crash the projection's log holds
either the derived events and the new position, or neither: replay restores the state and
the positions together, and the feeder resumes right after the last applied change (within
a record too: the changes of a batch share a seq, so positions count them by index).

Positions are folded into the actor (not its user state) and kept in its snapshots beside
the user's state, so snapshots and retention work as for any actor.
"""

from __future__ import annotations

import functools
import logging
import threading
import typing
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ClassVar, Generic, TypeVar

import msgspec

from actors._actor import EventSourcedActor
from actors._subscription import Change, Subscription

if TYPE_CHECKING:
    from actors._handle import ActorHandle
    from actors._keyspace import KeySpace

__all__ = ["Advanced", "Projection", "ProjectionFeeder"]

logger = logging.getLogger("actorkv.actors")

S = TypeVar("S")
FEED_BATCH = 500  # changes handed over per command (one record, one fsync)
SUBSCRIPTION_PREFIX = "projection."  # a projection's named subscription on each source


class Advanced(msgspec.Struct, tag="actorkv.advanced", frozen=True):
    """A projection has applied ``source``'s changes up to change ``index`` of record ``seq``."""

    source: str
    seq: int
    index: int


class AdvancedArray(msgspec.Struct, tag="actorkv.advanced", frozen=True, array_like=True):
    """:class:`Advanced` for projections whose events are ``array_like``.

    msgspec decodes a union of tagged Structs only if they are all encoded alike.
    """

    source: str
    seq: int
    index: int


_POSITION_EVENTS = (Advanced, AdvancedArray)


class Projection(EventSourcedActor[S], Generic[S]):
    """Base class of an actor fed by key spaces' changes, exactly once.

    Define ``initial_state``, ``apply`` (for your own event types) and :meth:`project`, and
    start it with ``store.projection(name, MyProjection, sources=[...])``. Read it like any
    actor (``handle.durable_state`` in the caller's thread, or commands you define).

    Example::

        class Totals(Projection[dict]):
            def initial_state(self) -> dict:
                return {}

            def apply(self, state: dict, event: Counted) -> dict:
                return {**state, event.key: state.get(event.key, 0) + event.amount}

            def project(self, source: str, change: Change) -> None:
                if change.op == "put":
                    self.emit(Counted(change.key, change.value))
    """

    hooks: ClassVar[frozenset[str]] = frozenset({"project"})
    """Public methods that are not commands (the framework calls them)."""

    _positions: dict[str, tuple[int, int]]

    _advanced: ClassVar[type[Advanced | AdvancedArray]] = Advanced

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        declared = vars(cls).get("event_types")
        if declared is None and "apply" in vars(cls):
            declared = _annotated_events(cls)
        if declared is not None and not set(declared) & set(_POSITION_EVENTS):
            array_like = any(
                getattr(getattr(event, "__struct_config__", None), "array_like", False)
                for event in declared
            )
            cls._advanced = AdvancedArray if array_like else Advanced
            cls.event_types = (*declared, cls._advanced)
        if "apply" in vars(cls):
            cls.apply = _folding_positions(vars(cls)["apply"])  # type: ignore[method-assign]

    def project(self, source: str, change: Change) -> None:
        """Handle one change of ``source``: emit the projection's events for it (or none).

        It runs inside a command, against the latest state. Raising stops the projection:
        nothing of the batch of changes it was part of is written, and the error is logged.
        """
        raise NotImplementedError

    def project_changes(self, source: str, changes: list[tuple[int, int, Change]]) -> None:
        """The feeder's command: apply ``(seq, index, change)`` items and record the position."""
        positions = self._known_positions()
        done = positions.get(source, (0, -1))
        last = done
        for seq, index, change in changes:
            if (seq, index) <= done:
                continue  # applied before (the feeder resumed from a record's start)
            self.project(source, change)
            last = (seq, index)
        if last != done:
            self.emit(self._advanced(source, *last))

    def positions(self) -> dict[str, tuple[int, int]]:
        """``{source: (seq, index)}``: how far each source has been applied."""
        return dict(self._known_positions())

    def _known_positions(self) -> dict[str, tuple[int, int]]:
        known = self.__dict__.get("_positions")
        if known is None:
            known = self._positions = {}
        return known

    def snapshot_state(self, state: S) -> Any:
        """The user's state and the positions, together."""
        return {"state": state, "positions": self._known_positions()}

    def restore_state(self, data: Any) -> S:
        """Both back from a snapshot (the user's state converted to its annotated type)."""
        self._positions = {
            source: (int(seq), int(index)) for source, (seq, index) in data["positions"].items()
        }
        state_type = _state_type(type(self))
        raw = data["state"]
        restored: S = raw if state_type is None else msgspec.convert(raw, state_type)
        return restored


def _folding_positions(apply: Callable[..., Any]) -> Callable[..., Any]:
    """``apply``, with ``Advanced`` events folded into the positions instead."""

    @functools.wraps(apply)  # keeps its annotations resolvable (they name its events)
    def folded(self: Projection[Any], state: Any, event: Any) -> Any:
        if type(event) in _POSITION_EVENTS:
            self._known_positions()[event.source] = (event.seq, event.index)
            return state
        return apply(self, state, event)

    return folded


def _annotated_events(cls: type) -> tuple[type, ...] | None:
    try:
        hint = typing.get_type_hints(cls.apply).get("event")  # type: ignore[attr-defined]
    except (NameError, TypeError, AttributeError):
        return None
    if hint is None:
        return None
    members = typing.get_args(hint) or (hint,)
    return tuple(member for member in members if isinstance(member, type))


def _state_type(cls: type) -> Any:
    try:
        return typing.get_type_hints(cls.initial_state).get("return")  # type: ignore[attr-defined]
    except (NameError, TypeError):
        return None


class ProjectionFeeder:
    """One thread per source: follows it and hands the projection what is ready."""

    def __init__(self, handle: ActorHandle[Any], sources: dict[str, KeySpace], name: str) -> None:
        self.name = name
        self._handle = handle
        self._stopping = threading.Event()
        self.failure: BaseException | None = None
        """What stopped the projection, if something did."""
        positions: dict[str, tuple[int, int]] = handle.blocking.positions()
        self._subscriptions: list[Subscription[Change]] = []
        self._threads: list[threading.Thread] = []
        for source, keyspace in sources.items():
            seq, index = positions.get(source, (0, -1))
            # From the record of the last applied change: its rest may not be applied yet.
            # Named, so that retention keeps that record and what follows while the
            # projection is not running (the projection's own positions decide what is
            # applied; the name's acks only hold the source's history).
            subscription = keyspace.subscribe(
                from_seq=max(seq, 1), name=f"{SUBSCRIPTION_PREFIX}{name}"
            )
            self._subscriptions.append(subscription)
            thread = threading.Thread(
                target=self._feed,
                args=(source, subscription, (seq, index)),
                name=f"actorkv-projection:{name}<-{source}",
                daemon=True,
            )
            self._threads.append(thread)
        for thread in self._threads:
            thread.start()

    def _feed(self, source: str, subscription: Subscription[Change], done: tuple[int, int]) -> None:
        send = self._handle.blocking.project_changes
        seq, index = 0, -1
        try:
            while not self._stopping.is_set():
                first = subscription.next(timeout=0.25)
                if first is None:
                    continue
                batch: list[tuple[int, int, Change]] = []
                change: Change | None = first
                while change is not None:
                    index = index + 1 if change.seq == seq else 0
                    seq = change.seq
                    if (seq, index) > done:
                        batch.append((seq, index, change))
                    if len(batch) >= FEED_BATCH:
                        break
                    change = subscription.next(timeout=0)
                if batch:
                    send(source, batch)
                    first_needed = batch[-1][0]  # its record may hold changes still to come
                    if first_needed - 1 > subscription.acked:
                        subscription.ack(first_needed - 1)
        except StopIteration:
            return  # the subscription (or its key space) closed
        except BaseException as exc:
            self.failure = exc
            logger.exception("projection %r stopped on %r's changes", self.name, source)

    def stop(self, timeout: float = 30.0) -> None:
        """Stop feeding (the changes in flight are applied or not, never half)."""
        self._stopping.set()
        for subscription in self._subscriptions:
            subscription.close()
        for thread in self._threads:
            thread.join(timeout)


def feed_class_check(cls: object) -> None:
    """Refuse a class that is not a Projection subclass with ``project`` defined."""
    if not (isinstance(cls, type) and issubclass(cls, Projection)):
        msg = f"projection() needs a Projection subclass, got {cls!r}"
        raise TypeError(msg)
    if cls.project is Projection.project:
        msg = f"{cls.__name__} must define project(self, source, change)"
        raise TypeError(msg)
