"""One key space or actor of a store, hosted for callers in other processes.

A remote runtime (``actors/runtimes/_ray.py``) runs one :class:`Host` per key space and per
custom actor, each in a process of its own. The host opens its one log directory of the
store through the same code as an in-process store (the same ``Store.keyspace`` /
``Store.spawn``, core, log and snapshots, with pykka home threads inside the host), and runs
the calls its callers send by name: :meth:`Host.call` for a handle method,
:meth:`Host.view_call` for a view of the past, :meth:`Host.index_call` for an index query,
and the subscription and batch methods below. Results come back whole: what a handle
returns as an iterator (``range``, ``items``, ``history``...) is sent as a list.

Callers may retry a write whose answer they lost (the host died after running it): every
write carries an operation id, which the core writes into the command's own record and
answers from when it sees the id again (``actors/_operations.py``). So the host keeps no
state of its own that a restart could lose, beyond open subscriptions, whose callers are
told (``KeyspaceClosed``) and subscribe again.

The store directory's lock is held by the store that made the hosts; a host locks only its
own log directory (as every log does), so two hosts can never open the same log.
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import logging
import shutil
import threading
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, TypeVar

from actors._core import Command
from actors._handle import ActorHandle
from actors._index import IndexQuery
from actors._keyspace import KeySpace
from actors._shipping import StoreShipper
from actors._store import Store
from actors._subscription import Subscription
from actors._view import KeySpaceView
from storage import _fileio
from storage.archive import Archive, open_archive
from storage.errors import InvalidOperation, KeyspaceClosed
from storage.lease import LeaseView
from storage.restore import restore

__all__ = ["READS", "Host"]

logger = logging.getLogger("actorkv.actors")

READS = frozenset(
    {
        "get",
        "get_entry",
        "get_many",
        "__getitem__",
        "range",
        "prefix",
        "items",
        "values",
        "keys",
        "__contains__",
        "__len__",
        "last_seq",
        "stats",
        "anchor",
        "history",
        "seq_at",
        "time_of",
        "indexes",
        "durable_state",
    }
)
"""Key space and handle methods that write nothing: retried freely, without an id."""

_INLINE_READS = frozenset(
    {"get", "get_entry", "get_many", "__getitem__", "__contains__", "__len__", "last_seq"}
)
"""Reads of memory only: run in the host's event loop, no thread hop."""

_ORDERED_SENDS = frozenset({"put_async", "delete_async"})
"""Queued in the order they arrive (a pipelining caller's order), then awaited."""

TURN_WAIT = 5.0
"""Seconds a caller's pipelined write waits for its predecessor before it goes anyway."""

_current_op = threading.local()

T = TypeVar("T")


class HostStore(Store):
    """The store a host opens: unlocked, its commands carrying operation ids."""

    _hosted = True


class Host:
    """A key space or actor of the store at ``path``, opened in this process.

    Args:
        path: The store directory (on this machine).
        kind: ``"keyspace"`` or ``"actor"``.
        name: The key space's or actor's name.
        store_options: ``Store.open`` options (fsync, segment_bytes, clock, ...).
        spec: For a key space, ``Store.keyspace`` options; for an actor, ``(actor_class,
            args, kwargs)`` as ``Store.spawn`` takes them.
    """

    def __init__(
        self,
        path: str,
        kind: str,
        name: str,
        store_options: dict[str, Any],
        spec: Any,
    ) -> None:
        self.kind = kind
        self.name = name
        options = dict(store_options)
        shipping = options.pop("archive", None)
        directory = f"{'keyspaces' if kind == 'keyspace' else 'actors'}/{name}"
        if shipping is not None:
            restore_if_missing(Path(path), directory, open_archive(shipping[0]))
        self.store = HostStore.open(Path(path), **options)
        if shipping is not None:
            archive, interval, seconds, holder, token = shipping
            source = open_archive(archive)
            view = LeaseView(source, float(seconds), holder, token)
            self.store._shipper = StoreShipper(source, Path(path), float(interval), view)
        self.keyspace: KeySpace | None = None
        self.handle: ActorHandle[Any]
        if kind == "keyspace":
            keyspace = self.store.keyspace(name, **spec)
            _stamp_operations(keyspace)
            self.keyspace = keyspace
            self.handle = keyspace._actor
        else:
            actor_class, args, kwargs = spec
            self.handle = self.store.spawn(name, actor_class, *args, **kwargs)
        self._subscriptions: dict[int, Subscription[Any]] = {}
        self._views: dict[int, KeySpaceView] = {}
        self._queries: dict[int, IndexQuery] = {}
        self._turns: dict[bytes, int] = {}  # each pipelining caller's next write (ordered)
        self._turns_changed: asyncio.Condition | None = None
        self._serials = itertools.count(1)

    # -- what callers send -----------------------------------------------------------------------

    async def call(
        self, method: str, args: tuple[Any, ...], kwargs: dict[str, Any], op: bytes | None
    ) -> Any:
        """Run a handle method (a key space's, or an actor's command) and return its result."""
        if self.keyspace is None:
            return await self._command(method, args, kwargs, op)
        keyspace = self.keyspace
        if method in _ORDERED_SENDS:
            future = _with_op(op, getattr(keyspace, method), args, kwargs)
            return await future
        if method in _INLINE_READS:
            return _materialize(_member(keyspace, method, args, kwargs))  # memory only: inline
        return await asyncio.to_thread(self._blocking, keyspace, method, args, kwargs, op)

    async def ordered(
        self,
        turn: tuple[bytes, int, int],
        method: str | None,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        op: bytes | None,
    ) -> Any:
        """A caller's pipelined write, queued in its turn: ``(caller, number, floor)``.

        A caller numbers the writes it pipelines; ``floor`` is its oldest one not answered
        yet. The host queues number ``n`` once it queued ``n - 1`` (or after
        :data:`TURN_WAIT` seconds, should ``n - 1`` never come), so the caller's order holds
        although Ray may start its calls in any order. A host that restarted starts each
        caller from its floor, which is where its retries begin.
        """
        caller, number, floor = turn
        if self._turns_changed is None:
            self._turns_changed = asyncio.Condition()
        changed = self._turns_changed
        async with changed:
            self._turns[caller] = max(self._turns.get(caller, floor), floor)
            try:
                await asyncio.wait_for(
                    changed.wait_for(lambda: self._turns[caller] >= number), TURN_WAIT
                )
            except asyncio.TimeoutError:  # not the builtin before Python 3.11
                logger.warning(
                    "%s: write %d of a caller came before %d", self.name, number, number - 1
                )
            future: Any = None
            if method is None:
                pass  # a write its caller could not send: its turn passes
            elif self.keyspace is None:
                future = self.handle.new_future()
                self.handle.enqueue(Command(method, args, kwargs, future, op=op))
            else:
                future = _with_op(op, getattr(self.keyspace, method), args, kwargs)
            self._turns[caller] = max(self._turns[caller], number + 1)
            changed.notify_all()
        return None if future is None else await future

    async def command_async(
        self, method: str, args: tuple[Any, ...], kwargs: dict[str, Any], op: bytes | None
    ) -> Any:
        """An actor command queued in arrival order (a pipelining caller's), then awaited."""
        future = self.handle.new_future()
        self.handle.enqueue(Command(method, args, kwargs, future, op=op))
        return await future

    async def handle_call(self, method: str, args: tuple[Any, ...]) -> Any:
        """A method of the actor's handle itself (``stats``, ``snapshot``, ``compact``...)."""
        return await asyncio.to_thread(self._handle_member, method, args)

    async def open_view(self, seq: int | None, when: float | None) -> tuple[int, int, float]:
        """Open ``keyspace.at(seq, time=when)`` here; returns ``(id, its seq, its time)``.

        The view holds its point (retention waits for it) until its caller closes it.
        """

        def run() -> tuple[int, int, float]:
            view = self._keyspace().at(seq, time=when)
            serial = next(self._serials)
            self._views[serial] = view
            return serial, view.seq, view.time

        return await asyncio.to_thread(run)

    async def view_call(
        self, serial: int, method: str, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Any:
        """``view.method(*args, **kwargs)`` of an open view, read whole."""

        def run() -> Any:
            view = self._held(self._views, serial, "view", "take it again with at()")
            return _materialize(getattr(view, method)(*args, **kwargs))

        return await asyncio.to_thread(run)

    async def close_view(self, serial: int) -> None:
        """Let a view's point go (nothing if it is gone)."""
        view = self._views.pop(serial, None)
        if view is not None:
            view.close()

    async def open_index(self, index: str, wait: bool) -> int:
        """``keyspace.index(index, wait=wait)`` held here; returns the id to query it by."""

        def run() -> int:
            query = self._keyspace().index(index, wait=wait)
            serial = next(self._serials)
            self._queries[serial] = query
            return serial

        return await asyncio.to_thread(run)

    async def index_call(
        self, serial: int, method: str, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Any:
        """``query.method(*args, **kwargs)`` of a held index query, as a list."""

        def run() -> Any:
            query = self._held(self._queries, serial, "index query", "ask for it again")
            return _materialize(getattr(query, method)(*args, **kwargs))

        return await asyncio.to_thread(run)

    async def close_index(self, serial: int) -> None:
        """Let a held index query go."""
        self._queries.pop(serial, None)

    async def subscribe(self, kwargs: dict[str, Any]) -> tuple[int, int, int]:
        """Open a subscription here; returns ``(id, acked, delivered)``."""

        def run() -> tuple[int, int, int]:
            target = self.keyspace if self.keyspace is not None else self.handle
            subscription = target.subscribe(**kwargs)
            serial = next(self._serials)
            self._subscriptions[serial] = subscription
            return serial, subscription.acked, subscription.delivered

        return await asyncio.to_thread(run)

    async def next_changes(
        self, serial: int, timeout: float | None, most: int
    ) -> tuple[list[Any], bool]:
        """Up to ``most`` changes: waits up to ``timeout`` for the first; and if it ended."""

        def run() -> tuple[list[Any], bool]:
            subscription = self._subscription(serial)
            changes: list[Any] = []
            try:
                first = subscription.next(timeout)
                if first is not None:
                    changes.append(first)
                    while len(changes) < most:
                        more = subscription.next(0)
                        if more is None:
                            break
                        changes.append(more)
            except StopIteration:  # closed, or its key space: it cannot cross a thread
                return changes, True
            return changes, False

        return await asyncio.to_thread(run)

    async def ack(self, serial: int, seq: int) -> int:
        """``subscription.ack(seq)``; returns its acknowledged position."""

        def run() -> int:
            subscription = self._subscription(serial)
            subscription.ack(seq)
            return subscription.acked

        return await asyncio.to_thread(run)

    async def close_subscription(self, serial: int) -> None:
        """Close a subscription (nothing if it is gone)."""
        subscription = self._subscriptions.pop(serial, None)
        if subscription is not None:
            await asyncio.to_thread(subscription.close)

    async def batch(
        self, writes: list[tuple[str, tuple[Any, ...], dict[str, Any]]], op: bytes
    ) -> Any:
        """Write a caller's batch as one record; returns its receipt."""

        def run() -> Any:
            keyspace = self._keyspace()
            _current_op.value = op
            try:
                with keyspace.batch() as batch:
                    for method, args, kwargs in writes:
                        getattr(batch, method)(*args, **kwargs)
                return batch.receipt
            finally:
                _current_op.value = None

        return await asyncio.to_thread(run)

    async def fork(self, target: str, seq: int | None, when: float | None) -> dict[str, Any]:
        """Write the fork ``target`` of the hosted key space (``Store.fork_keyspace``).

        Only its folder: the driver opens it in a host of its own. Returns its options.
        """
        keyspace = self._keyspace()

        def run() -> dict[str, Any]:
            options = self.store._write_fork(keyspace.name, target, seq, when)
            return dataclasses.asdict(options)

        return await asyncio.to_thread(run)

    def metrics(self) -> dict[str, dict[str, dict[str, Any]]]:
        """The hosted key space's or actor's ``store.metrics()``."""
        return self.store.metrics()

    def archive_status(self) -> dict[str, Any]:
        """How far the hosted log is shipped (``Store.archive_status``)."""
        return self.store.archive_status()

    def ping(self) -> str:
        """The host is up (its constructor ran: the log is recovered)."""
        return self.name

    def close(self, timeout: float = 30.0) -> None:
        """Close the subscriptions and the store (the log is synced)."""
        for subscription in list(self._subscriptions.values()):
            subscription.close()
        self._subscriptions.clear()
        for view in list(self._views.values()):
            view.close()
        self._views.clear()
        self.store.close(timeout)

    # -- inside --------------------------------------------------------------------------------

    def _keyspace(self) -> KeySpace:
        if self.keyspace is None:
            msg = f"{self.name!r} is an actor, not a key space"
            raise InvalidOperation(msg)
        return self.keyspace

    def _subscription(self, serial: int) -> Subscription[Any]:
        again = "subscribe again (a named subscription resumes after its last ack)"
        return self._held(self._subscriptions, serial, "subscription", again)

    def _held(self, table: dict[int, T], serial: int, what: str, again: str) -> T:
        """What a caller holds here by ``serial``; gone once this host restarted."""
        held = table.get(serial)
        if held is None:
            msg = (
                f"the {what} of {self.name!r} is gone: its host restarted (or it was "
                f"closed); {again}"
            )
            raise KeyspaceClosed(msg)
        return held

    @staticmethod
    def _blocking(
        keyspace: KeySpace,
        method: str,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        op: bytes | None,
    ) -> Any:
        _current_op.value = op
        try:
            return _materialize(_member(keyspace, method, args, kwargs))
        finally:
            _current_op.value = None

    async def _command(
        self, method: str, args: tuple[Any, ...], kwargs: dict[str, Any], op: bytes | None
    ) -> Any:
        execute = self.handle.execute
        return await asyncio.to_thread(lambda: execute(Command(method, args, kwargs, op=op)))

    def _handle_member(self, method: str, args: tuple[Any, ...]) -> Any:
        member = getattr(self.handle, method)
        result = member(*args) if callable(member) else member
        if method == "snapshot":
            result = result.get()  # a future: its SnapshotInfo
        return result


def restore_if_missing(store: Path, directory: str, archive: Archive) -> bool:
    """Restore ``directory`` of ``store`` from ``archive`` if it is not here but shipped.

    A host that Ray starts on a node without its log (the node that held it is gone) comes
    back with what was shipped. Restored beside the store and renamed into place, so a
    crash midway leaves no half log under the name. Returns whether it restored.
    """
    target = store / directory
    if target.exists() or not archive.list(f"{directory}/MANIFEST"):
        return False
    scratch = store / ".restoring" / directory.replace("/", "-")
    if scratch.exists():
        shutil.rmtree(scratch)  # a restore cut short: begin again
    restore(archive, scratch, names=[directory])
    _fileio.make_dirs(target.parent)
    _fileio.rename(scratch / directory, target)
    _fileio.fsync_dir(target.parent)
    shutil.rmtree(store / ".restoring")
    logger.warning("%s: its log was not here; restored it from %r", target, archive)
    return True


def _member(target: Any, method: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    member = getattr(target, method)
    return member(*args, **kwargs) if callable(member) else member


def _materialize(result: Any) -> Any:
    """What is sent back: an iterator (or a key space's live items view) as a list."""
    if isinstance(result, Iterator) or type(result).__name__ in ("SnapshotItems", "SnapshotValues"):
        return list(result)
    if isinstance(result, Iterable) and not isinstance(result, str | bytes | list | tuple | dict):
        return list(result)
    return result


def _with_op(
    op: bytes | None, send: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Any:
    _current_op.value = op
    try:
        return send(*args, **kwargs)
    finally:
        _current_op.value = None


def _stamp_operations(keyspace: KeySpace) -> None:
    """Have the key space's commands carry the operation id of the call running them."""
    handle = keyspace._actor
    execute, enqueue = handle.execute, handle.enqueue

    def execute_stamped(command: Command) -> Any:
        command.op = getattr(_current_op, "value", None)
        return execute(command)

    def enqueue_stamped(command: Command) -> None:
        command.op = getattr(_current_op, "value", None)
        enqueue(command)

    def call_delete(key: Any, expect_version: int | None) -> Any:
        return execute_stamped(Command("delete", (key, expect_version), {}))

    def send_delete(key: Any, expect_version: int | None) -> Any:
        future = handle.new_future()
        enqueue_stamped(Command("delete", (key, expect_version), {}, future))
        return future

    keyspace._execute = execute_stamped
    keyspace._enqueue = enqueue_stamped
    keyspace._call_delete = call_delete
    keyspace._send_delete = send_delete
