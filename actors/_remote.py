"""The caller's side of hosted key spaces and actors: handles that call a host by name.

A :class:`RemoteKeySpace` has the methods of a :class:`~actors.KeySpace` and a
:class:`RemoteActorHandle` those of an :class:`~actors.ActorHandle`, blocking and async;
each call goes to the host (``actors/_host.py``) through a :class:`Connection`, which the
runtime provides (``actors/runtimes/_ray.py``). What differs, because the state lives in
another process:

- every read is a round trip (there is no caller-thread read across processes);
- what a key space returns as an iterator (``range``, ``items``, ``history``...) is read
  whole by the host and sent as a list: bound big scans with ``limit``;
- a batch is collected here and checked by the host when the block ends, so bad input in
  it raises at the end of the ``with`` block instead of at the call;
- ``transact(fn)`` sends ``fn`` to the host, where it runs (what it closes over is copied).

Every write carries a fresh operation id; a call whose host died (the runtime says so) is
sent again with the same id once the host is back, so it is applied once however often it
is sent (``actors/_operations.py``). Reads are simply sent again.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import weakref
from collections.abc import Callable, Iterable, Iterator, MutableMapping
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from actors._actor import command_of
from actors._future import Future
from storage.errors import ActorKVError, KeyspaceClosed

if TYPE_CHECKING:
    from typing_extensions import Self  # Python 3.10 has no typing.Self

__all__ = [
    "Connection",
    "RemoteActorHandle",
    "RemoteBatch",
    "RemoteIndexQuery",
    "RemoteKeySpace",
    "RemoteSubscription",
    "RemoteView",
]

T = TypeVar("T")

_SUBSCRIPTION_BATCH = 256  # changes fetched per round trip by a subscription's reader
_ASYNC_POLL = 0.2  # seconds each wait of an async iteration lasts in its worker thread


class Connection(Protocol):
    """How a handle reaches its host: a runtime's, with its retries."""

    name: str

    def call(self, method: str, *args: Any) -> Any:
        """Run the host's ``method(*args)`` and return its result (retried if the host died)."""

    def submit(self, method: str, *args: Any) -> Future[Any]:
        """Send the host's ``method(*args)``; the future gets its result."""

    def submit_ordered(self, method: str, *args: Any) -> Future[Any]:
        """Send a pipelined write, which the host queues after this caller's earlier ones."""

    def refuse(self, error: Any) -> None:
        """Raise ``error`` from every call from now on."""


def new_op() -> bytes:
    """A fresh operation id (16 random bytes: unique without coordination)."""
    return os.urandom(16)


class _Reads:
    """The point reads and scans a hosted key space and a view of it share."""

    def _read(self, method: str, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError

    def get(self, key: Any, default: Any = None) -> Any:
        """The value of ``key``, or ``default``."""
        return self._read("get", key, default)

    def get_entry(self, key: Any) -> Any:
        """The key's :class:`~actors.Entry` (value, version, seq, expiry), or None."""
        return self._read("get_entry", key)

    def get_many(self, keys: Iterable[Any]) -> dict[Any, Any]:
        """The values of the keys that exist."""
        result: dict[Any, Any] = self._read("get_many", list(keys))
        return result

    def range(
        self,
        start: Any = None,
        stop: Any = None,
        *,
        reverse: bool = False,
        limit: int | None = None,
    ) -> Iterator[tuple[Any, Any]]:
        """``(key, value)`` for ``start <= key < stop``, read whole as one snapshot."""
        return iter(self._read("range", start, stop, reverse=reverse, limit=limit))

    def prefix(
        self, prefix: Any, *, reverse: bool = False, limit: int | None = None
    ) -> Iterator[tuple[Any, Any]]:
        """``(key, value)`` for every key starting with ``prefix``."""
        return iter(self._read("prefix", prefix, reverse=reverse, limit=limit))

    def __getitem__(self, key: Any) -> Any:
        return self._read("__getitem__", key)

    def __contains__(self, key: object) -> bool:
        return bool(self._read("__contains__", key))

    def __len__(self) -> int:
        return int(self._read("__len__"))


class RemoteKeySpace(_Reads, MutableMapping[Any, Any]):
    """A key space hosted in another process; the methods of :class:`actors.KeySpace`."""

    def __init__(self, name: str, connection: Connection, options: Any) -> None:
        self.name = name
        self.options = options
        self._connection = connection

    def __repr__(self) -> str:
        return f"<RemoteKeySpace {self.name!r} via {self._connection.name}>"

    def _read(self, method: str, *args: Any, **kwargs: Any) -> Any:
        return self._connection.call("call", method, args, kwargs, None)

    def _write(self, method: str, *args: Any, **kwargs: Any) -> Any:
        return self._connection.call("call", method, args, kwargs, new_op())

    # -- reads: get, get_entry, get_many, range, prefix from _Reads ---------------------------

    def items(self) -> list[tuple[Any, Any]]:  # type: ignore[override]
        """Every ``(key, value)``, in key order, as one snapshot."""
        result: list[tuple[Any, Any]] = self._read("items")
        return result

    def values(self) -> list[Any]:  # type: ignore[override]
        """Every value, in key order."""
        result: list[Any] = self._read("values")
        return result

    def keys(self) -> list[Any]:  # type: ignore[override]
        """Every key, in order."""
        result: list[Any] = self._read("keys")
        return result

    def __iter__(self) -> Iterator[Any]:
        return iter(self.keys())

    # -- writes --------------------------------------------------------------------------------

    def put(
        self, key: Any, value: Any, *, ttl: float | None = None, expect_version: int | None = None
    ) -> Any:
        """Write ``key``; returns its :class:`~actors.Receipt` once durable."""
        return self._write("put", key, value, ttl=ttl, expect_version=expect_version)

    def put_async(
        self, key: Any, value: Any, *, ttl: float | None = None, expect_version: int | None = None
    ) -> Future[Any]:
        """Like :meth:`put`, returning a future at once (queued in the order sent)."""
        kwargs = {"ttl": ttl, "expect_version": expect_version}
        return self._connection.submit_ordered("put_async", (key, value), kwargs, new_op())

    def delete(self, key: Any, *, expect_version: int | None = None) -> Any:
        """Remove ``key``; its receipt, or None if it did not exist."""
        return self._write("delete", key, expect_version=expect_version)

    def delete_async(self, key: Any, *, expect_version: int | None = None) -> Future[Any]:
        """Like :meth:`delete`, returning a future at once."""
        kwargs = {"expect_version": expect_version}
        return self._connection.submit_ordered("delete_async", (key,), kwargs, new_op())

    def increment(self, key: Any, by: int = 1) -> int:
        """Add ``by`` to ``key``'s int value; returns the new value once durable."""
        return int(self._write("increment", key, by))

    def operate(
        self, key: Any, operations: Iterable[Any], *, expect_version: int | None = None
    ) -> list[Any]:
        """Record operations (``actors.ops``) on ``key``, atomically."""
        result: list[Any] = self._write(
            "operate", key, list(operations), expect_version=expect_version
        )
        return result

    def transact(self, fn: Callable[[Any, Any], T]) -> T:
        """Run ``fn(view, batch)`` in the key space's actor, in its host."""
        result: T = self._write("transact", fn)
        return result

    def batch(self) -> RemoteBatch:
        """An atomic batch, written as one record when the ``with`` block ends."""
        return RemoteBatch(self)

    def sweep(self) -> int:
        """Record the expiry of keys past their TTL now."""
        return int(self._write("sweep"))

    def clear(self) -> None:
        """Delete every key, atomically."""
        self._write("clear")

    def __setitem__(self, key: Any, value: Any) -> None:
        self.put(key, value)

    def __delitem__(self, key: Any) -> None:
        if self.delete(key) is None:
            raise KeyError(key)

    async def aput(
        self, key: Any, value: Any, *, ttl: float | None = None, expect_version: int | None = None
    ) -> Any:
        """Awaitable :meth:`put`."""
        return await self.put_async(key, value, ttl=ttl, expect_version=expect_version)

    async def adelete(self, key: Any, *, expect_version: int | None = None) -> Any:
        """Awaitable :meth:`delete`."""
        return await self.delete_async(key, expect_version=expect_version)

    async def aget(self, key: Any, default: Any = None) -> Any:
        """Awaitable :meth:`get`."""
        return await self._connection.submit("call", "get", (key, default), {}, None)

    # -- the log, history, indexes ---------------------------------------------------------------

    @property
    def last_seq(self) -> int:
        """The newest record's seq."""
        return int(self._read("last_seq"))

    def snapshot(self) -> Any:
        """Take a snapshot now; its :class:`~storage.SnapshotInfo` once durable."""
        return self._read("snapshot")

    def compact(self) -> Any:
        """Delete what retention no longer needs; a compaction report."""
        return self._read("compact")

    def stats(self) -> Any:
        """The key space actor's counters."""
        return self._read("stats")

    def anchor(self) -> Any:
        """``Anchor(seq, head)`` of the log now."""
        return self._read("anchor")

    def history(self, key: Any, *, limit: int | None = None) -> list[Any]:
        """Every retained version of ``key``, oldest first."""
        result: list[Any] = self._read("history", key, limit=limit)
        return result

    def seq_at(self, time: float) -> int:
        """The last record committed at or before ``time``."""
        return int(self._read("seq_at", time))

    def time_of(self, seq: int) -> float:
        """The commit time of record ``seq``."""
        return float(self._read("time_of", seq))

    def at(self, seq: int | None = None, *, time: float | None = None) -> RemoteView:
        """The key space as of ``seq`` (or ``time``), read-only."""
        serial, point, when = self._connection.call("open_view", seq, time)
        return RemoteView(self.name, self._connection, serial, point, when)

    def subscribe(
        self, from_seq: int | None = None, *, prefix: Any = None, name: str | None = None
    ) -> RemoteSubscription:
        """Every durable change from ``from_seq`` on, in seq order (see KeySpace.subscribe)."""
        kwargs = {"from_seq": from_seq, "prefix": prefix, "name": name}
        return RemoteSubscription(
            self._connection, name, *self._connection.call("subscribe", kwargs)
        )

    def create_index(self, name: str, index: Any) -> None:
        """Add a secondary index (see ``docs/indexes.md``)."""
        self._write("create_index", name, index)

    def drop_index(self, name: str) -> bool:
        """Remove an index; whether it existed."""
        return bool(self._write("drop_index", name))

    def indexes(self) -> dict[str, Any]:
        """The key space's indexes by name."""
        result: dict[str, Any] = self._read("indexes")
        return result

    def index(self, name: str, *, wait: bool = True) -> RemoteIndexQuery:
        """Queries of the index ``name``."""
        serial = self._connection.call("open_index", name, wait)
        return RemoteIndexQuery(self._connection, name, serial, wait)


class RemoteBatch:
    """``with ks.batch() as b: b.put(...)``: collected here, written by the host at the end."""

    def __init__(self, keyspace: RemoteKeySpace) -> None:
        self._keyspace = keyspace
        self._writes: list[tuple[str, tuple[Any, ...], dict[str, Any]]] = []
        self.receipt: Any = None

    def put(
        self, key: Any, value: Any, *, ttl: float | None = None, expect_version: int | None = None
    ) -> None:
        """Add a put."""
        self._writes.append(("put", (key, value), {"ttl": ttl, "expect_version": expect_version}))

    def increment(self, key: Any, by: int = 1) -> None:
        """Add an increment."""
        self._writes.append(("increment", (key, by), {}))

    def delete(self, key: Any, *, expect_version: int | None = None) -> None:
        """Add a delete."""
        self._writes.append(("delete", (key,), {"expect_version": expect_version}))

    def __len__(self) -> int:
        return len(self._writes)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *_: object) -> None:
        if exc_type is None and self._writes:
            connection = self._keyspace._connection
            self.receipt = connection.call("batch", self._writes, new_op())


class RemoteView(_Reads):
    """A hosted key space as of one seq (what ``RemoteKeySpace.at`` returns).

    The host holds the view's point (retention waits for it) until :meth:`close`.

    Attributes:
        name: The key space's name.
        seq: The point: the state after record ``seq``.
        time: The time expiry is judged at.
    """

    def __init__(
        self, name: str, connection: Connection, serial: int, seq: int, time: float
    ) -> None:
        self.name = name
        self.seq = seq
        self.time = time
        self._connection = connection
        self._serial = serial
        self._closed = False
        self._release = weakref.finalize(self, _release, connection, "close_view", serial)

    def _read(self, method: str, *args: Any, **kwargs: Any) -> Any:
        return self._connection.call("view_call", self._serial, method, args, kwargs)

    def keys(self) -> Iterator[Any]:
        """Every key then."""
        return iter(self._read("keys"))

    def items(self) -> Iterator[tuple[Any, Any]]:
        """Every ``(key, value)`` then."""
        return iter(self._read("items"))

    def values(self) -> Iterator[Any]:
        """Every value then."""
        return iter(self._read("values"))

    def __iter__(self) -> Iterator[Any]:
        return self.keys()

    def close(self) -> None:
        """Let the host drop the view's point (also when the view is garbage)."""
        self._release()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()


def _release(connection: Connection, method: str, serial: int) -> None:
    """Let the host drop what it holds for a handle's view or query (nobody waits)."""
    with contextlib.suppress(ActorKVError):  # the store is closed: its host took it along
        connection.submit(method, serial)


class RemoteIndexQuery:
    """Queries of a hosted key space's index (what ``RemoteKeySpace.index`` returns).

    The host holds the query, so one made before its index was dropped says so.
    """

    def __init__(self, connection: Connection, name: str, serial: int, wait: bool) -> None:
        self.name = name
        self._connection = connection
        self._serial = serial
        self._wait = wait
        weakref.finalize(self, _release, connection, "close_index", serial)

    def _query(self, method: str, args: tuple[Any, ...], wait: bool | None) -> Any:
        kwargs = {"wait": self._wait if wait is None else wait}
        return self._connection.call("index_call", self._serial, method, args, kwargs)

    def get(self, value: Any, *, wait: bool | None = None) -> Iterator[tuple[Any, Any, Any]]:
        """``(index value, key, value)`` of the keys whose index value is ``value``."""
        return iter(self._query("get", (value,), wait))

    def range(
        self,
        lo: Any = None,
        hi: Any = None,
        *,
        reverse: bool = False,
        limit: int | None = None,
        wait: bool | None = None,
    ) -> Iterator[tuple[Any, Any, Any]]:
        """``(index value, key, value)`` for ``lo <= index value < hi``."""
        waits = self._wait if wait is None else wait
        kwargs = {"reverse": reverse, "limit": limit, "wait": waits}
        return iter(self._connection.call("index_call", self._serial, "range", (lo, hi), kwargs))

    def count(self, lo: Any = None, hi: Any = None, *, wait: bool | None = None) -> int:
        """How many entries have ``lo <= index value < hi``."""
        return int(self._query("count", (lo, hi), wait))


class RemoteSubscription:
    """A subscription held by a host, read here a batch of changes per round trip.

    Attributes:
        name: Its name (named subscriptions), or None.
        acked: The last seq acknowledged.
        delivered: The seq of the last change :meth:`next` returned.
    """

    def __init__(
        self, connection: Connection, name: str | None, serial: int, acked: int, delivered: int
    ) -> None:
        self.name = name
        self.acked = acked
        self.delivered = delivered
        self._connection = connection
        self._serial = serial
        self._buffer: list[Any] = []
        self._ended = False
        self._closed = False

    def next(self, timeout: float | None = None) -> Any:
        """The next change, waiting up to ``timeout`` seconds (None: forever); None if none.

        Raises:
            StopIteration: The subscription (or its key space) is closed.
        """
        if not self._buffer and not self._ended:
            try:
                changes, self._ended = self._connection.call(
                    "next_changes", self._serial, timeout, _SUBSCRIPTION_BATCH
                )
            except KeyspaceClosed:  # its store closed: it ends, as the key space's does
                changes, self._ended = [], True
            self._buffer = list(reversed(changes))
        if self._buffer:
            change = self._buffer.pop()
            self.delivered = change.seq
            return change
        if self._ended:
            raise StopIteration
        return None

    def __iter__(self) -> Iterator[Any]:
        return self

    def __next__(self) -> Any:
        change = self.next(None)
        assert change is not None
        return change

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> Any:
        """The next change, waited for in a worker thread (the event loop never blocks)."""
        while True:
            try:
                change = await asyncio.to_thread(self.next, _ASYNC_POLL)
            except StopIteration:
                raise StopAsyncIteration from None
            if change is not None:
                return change

    def ack(self, seq: int) -> None:
        """Record that everything up to ``seq`` is handled (durably, if named)."""
        self.acked = int(self._connection.call("ack", self._serial, seq))

    def close(self) -> None:
        """Stop it (in the host)."""
        if not self._closed:
            self._closed = True
            self._ended = True
            with contextlib.suppress(KeyspaceClosed):  # its store closed it already
                self._connection.call("close_subscription", self._serial)

    @property
    def closed(self) -> bool:
        """Whether it was closed (here, or by its host's key space closing)."""
        return self._closed or (self._ended and not self._buffer)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()


class RemoteActorHandle:
    """A custom actor hosted in another process; the methods of :class:`actors.ActorHandle`.

    ``handle.increment(2)`` returns a future; ``handle.blocking.increment(2)`` the result.
    """

    def __init__(
        self, name: str, actor_class: type, connection: Connection, commands: frozenset[str]
    ) -> None:
        self.name = name
        self.actor_class = actor_class
        self._connection = connection
        self._commands = commands
        self.blocking = _RemoteBlocking(self)

    def __repr__(self) -> str:
        return f"<RemoteActorHandle {self.name!r} ({self.actor_class.__name__})>"

    def _check_command(self, name: str) -> None:
        if name.startswith("_") or name not in self._commands:
            known = ", ".join(sorted(self._commands)) or "none"
            msg = f"{self.actor_class.__name__} has no command {name!r} (commands: {known})"
            raise AttributeError(msg)

    def __getattr__(self, name: str) -> Callable[..., Future[Any]]:
        self._check_command(name)
        connection = self._connection

        def sender(*args: Any, **kwargs: Any) -> Future[Any]:
            return connection.submit_ordered(name, args, kwargs, new_op())

        sender.__name__ = name
        self.__dict__[name] = sender
        return sender

    def ask(self, command: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        """Send ``command`` (a method of the actor's class), as ``ActorHandle.ask``."""
        return getattr(self, self._command_of(command))(*args, **kwargs)  # type: ignore[no-any-return]

    def _command_of(self, command: Callable[..., Any]) -> str:
        name = command_of(self.actor_class, command)
        self._check_command(name)
        return name

    def _member(self, method: str, *args: Any) -> Any:
        return self._connection.call("handle_call", method, args)

    def stats(self) -> Any:
        """The actor's counters."""
        return self._member("stats")

    def snapshot(self) -> Future[Any]:
        """Take a snapshot now; the future gets its ``SnapshotInfo`` once durable."""
        return self._connection.submit("handle_call", "snapshot", ())

    def subscribe(
        self, from_seq: int | None = None, *, name: str | None = None
    ) -> RemoteSubscription:
        """The actor's events from ``from_seq`` on, in seq order."""
        kwargs = {"from_seq": from_seq, "name": name}
        return RemoteSubscription(
            self._connection, name, *self._connection.call("subscribe", kwargs)
        )

    def anchor(self) -> Any:
        """``Anchor(seq, head)`` of the log now."""
        return self._member("anchor")

    def compact(self) -> Any:
        """Delete what retention no longer needs."""
        return self._member("compact")

    @property
    def durable_state(self) -> Any:
        """The state as of the last durable record."""
        return self._member("durable_state")

    @property
    def last_seq(self) -> int:
        """The newest record's seq."""
        return int(self._member("last_seq"))

    @property
    def alive(self) -> bool:
        """Whether the actor's host answers (False once its store closed it)."""
        try:
            self._connection.call("ping")
        except ActorKVError:
            return False
        return True


class _RemoteBlocking:
    def __init__(self, handle: RemoteActorHandle) -> None:
        self._handle = handle

    def ask(self, command: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
        """Run ``command`` (a method of the actor's class), as ``BlockingCalls.ask``."""
        return getattr(self, self._handle._command_of(command))(*args, **kwargs)

    def __getattr__(self, name: str) -> Callable[..., Any]:
        handle = self._handle
        handle._check_command(name)
        connection = handle._connection

        def caller(*args: Any, **kwargs: Any) -> Any:
            return connection.call("call", name, args, kwargs, new_op())

        caller.__name__ = name
        self.__dict__[name] = caller
        return caller
