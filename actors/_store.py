"""The Store: one data directory, locked, holding the logs of its key spaces and actors.

Layout: ``PATH/LOCK``, one log directory per key space, ``PATH/keyspaces/NAME/``, and one
per custom actor, ``PATH/actors/NAME/``.
"""

from __future__ import annotations

import atexit
import os
import shutil
import threading
import time
import weakref
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, TypeVar

from actors._actor import EventSourcedActor, command_names
from actors._events import event_codec_for
from actors._handle import HANDLE_NAMES, ActorHandle
from actors._host import ActorHost, Counters, ReplayProgress, replay
from actors._keyspace import KeySpace, KeySpaceOptions
from actors._keyspace_actor import KeySpaceActor
from actors._names import check_name
from storage import DEFAULT_SEGMENT_BYTES, DirectoryLock, LogOptions, SegmentedLog
from storage._fileio import fsync_dir as fsync_directory
from storage.errors import ActorStopped, InvalidName, InvalidOption, KeyspaceClosed
from storage.log import FsyncPolicy

if TYPE_CHECKING:  # Python 3.10 has no typing.Self
    from typing_extensions import Self

__all__ = ["Store"]

A = TypeVar("A", bound=EventSourcedActor[Any])

ACTORS_DIR = "actors"
KEYSPACES_DIR = "keyspaces"
DROPPED_PREFIX = ".dropped-"  # a key space being deleted; finished on the next open


class Store:
    """An open data directory. Thread-safe. Use :meth:`open`; close it, or use ``with``."""

    def __init__(
        self,
        path: Path,
        options: LogOptions,
        lock: DirectoryLock,
        progress: ReplayProgress | None,
        clock: Callable[[], float],
        sweep_interval: float,
    ) -> None:
        """Wrap a locked directory; use :meth:`open` instead."""
        self.path = path
        self.options = options
        self._lock = lock
        self._progress = progress
        self._handles: dict[str, ActorHandle[Any]] = {}
        self._keyspaces: dict[str, KeySpace] = {}
        self._mutex = threading.RLock()
        self._closed = False
        self._clock = clock
        self._sweep_interval = sweep_interval
        self._sweeper: threading.Thread | None = None
        self._stop_sweeper = threading.Event()

    @classmethod
    def open(
        cls,
        path: str | os.PathLike[str],
        *,
        fsync: FsyncPolicy = "always",
        fsync_interval: float = 0.1,
        segment_bytes: int = DEFAULT_SEGMENT_BYTES,
        on_replay: ReplayProgress | None = None,
        clock: Callable[[], float] = time.time,
        sweep_interval: float = 1.0,
    ) -> Store:
        """Open (creating if needed) the store in directory ``path`` and lock it.

        Args:
            path: The data directory.
            fsync: Durability policy of every log in the store; see ``storage.LogOptions``.
            fsync_interval: Seconds between background fsyncs under ``fsync="interval"``.
            segment_bytes: Size at which logs roll to a new segment.
            on_replay: Called as ``on_replay(name, records_done, records_total)`` while an
                actor replays its log (for progress bars).
            clock: Seconds since the epoch, for TTLs (injectable for tests).
            sweep_interval: Seconds between sweeps that record the expiry of keys past
                their TTL (expired keys are invisible to reads at once either way).

        Raises:
            InvalidOption: An option is out of range.
            StoreLocked: Another handle, in this or another process, has the store open.
        """
        options = LogOptions(segment_bytes, fsync, fsync_interval)
        if (
            isinstance(sweep_interval, bool)
            or not isinstance(sweep_interval, int | float)
            or not 0 < sweep_interval <= 3600
        ):
            msg = f"sweep_interval={sweep_interval!r} must be a number of seconds in (0, 3600]"
            raise InvalidOption(msg)
        directory = Path(path)
        directory.mkdir(parents=True, exist_ok=True)
        lock = DirectoryLock.acquire(directory)
        for leftover in (directory / KEYSPACES_DIR).glob(f"{DROPPED_PREFIX}*"):
            shutil.rmtree(leftover)  # a drop cut short by a crash: its name is already gone
        store = cls(directory, options, lock, on_replay, clock, sweep_interval)
        _OPEN_STORES.add(store)
        return store

    def spawn(
        self, name: str, actor_class: type[A], /, *args: Any, **kwargs: Any
    ) -> ActorHandle[A]:
        """Start the actor ``name`` (recovering it from its log), or return it if running.

        ``args`` and ``kwargs`` go to ``actor_class``'s constructor on first spawn.

        Raises:
            InvalidName: ``name`` is not a safe name, or is running as another class.
            TypeError: ``actor_class`` is not an EventSourcedActor with decodable events.
            CorruptLog: The actor's log is damaged (see ``storage.repair``).
        """
        check_name(name)
        unchecked: object = actor_class  # typed callers pass a class; untyped ones may not
        if not (isinstance(unchecked, type) and issubclass(unchecked, EventSourcedActor)):
            msg = f"spawn() needs an EventSourcedActor subclass, got {actor_class!r}"
            raise TypeError(msg)
        with self._mutex:
            self._check_open()
            running = self._handles.get(name)
            if running is not None and running.alive:
                if running.actor_class is not actor_class:
                    msg = f"actor {name!r} is running as {running.actor_class.__name__}"
                    raise InvalidName(msg)
                return running
            handle, _ = self._start(self.path / ACTORS_DIR / name, actor_class, args, kwargs)
            self._handles[name] = handle
            return handle

    def keyspace(
        self,
        name: str,
        *,
        key_type: type = str,
        value_type: Any = None,
        max_key_bytes: int = 1024,
        max_value_bytes: int = 16 * 1024 * 1024,
    ) -> KeySpace:
        """Open the key space ``name``, creating it if new and recovering it from its log.

        Opening an open key space returns the same handle (its options must match).

        Args:
            name: 1 to 128 of ``[A-Za-z0-9._-]``, starting with a letter or digit.
            key_type: ``str`` (default) or ``bytes``.
            value_type: Validate values on put and decode them on get as this type.
            max_key_bytes: Longest key in bytes (UTF-8 for str keys).
            max_value_bytes: Largest encoded value in bytes.

        Raises:
            InvalidName: A bad name. InvalidOption: A bad option, or options that differ
                from the open key space's. CorruptLog: Its log is damaged.
        """
        check_name(name, "key space")
        options = KeySpaceOptions(key_type, value_type, max_key_bytes, max_value_bytes)
        with self._mutex:
            self._check_open()
            running = self._keyspaces.get(name)
            if running is not None and running._actor.alive:
                if running.options != options:
                    msg = f"key space {name!r} is open with other options: {running.options}"
                    raise InvalidOption(msg)
                return running
            handle, actor = self._start(
                self.path / KEYSPACES_DIR / name,
                KeySpaceActor,
                (self._clock,),
                # Scalars are decoded once at write time only when reads decode untyped:
                # with a value_type, "2024-01-01" may have to become a datetime.
                {"decode_scalars": value_type is None},
            )
            keyspace = KeySpace(name, handle, actor.state, options)
            self._keyspaces[name] = keyspace
            self._start_sweeper()
            return keyspace

    def keyspaces(self) -> list[str]:
        """Names of every key space in the store (open or not), sorted."""
        folder = self.path / KEYSPACES_DIR
        if not folder.is_dir():
            return []
        return sorted(
            entry.name
            for entry in folder.iterdir()
            if entry.is_dir() and not entry.name.startswith(DROPPED_PREFIX)
        )

    def drop_keyspace(self, name: str) -> bool:
        """Stop the key space ``name`` if open and delete its log; returns whether it existed.

        The directory is renamed away and the store directory fsynced before the files are
        deleted, so a crash midway never leaves a half-deleted key space under its name.
        """
        check_name(name, "key space")
        with self._mutex:
            self._check_open()
            running = self._keyspaces.pop(name, None)
            if running is not None:
                running._actor.stop()
            folder = self.path / KEYSPACES_DIR / name
            if not folder.exists():
                return False
            doomed = folder.with_name(f"{DROPPED_PREFIX}{name}-{os.getpid()}-{time.monotonic_ns()}")
            folder.rename(doomed)
            fsync_directory(folder.parent)
            shutil.rmtree(doomed)
            return True

    def _start(
        self,
        directory: Path,
        actor_class: type[A],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> tuple[ActorHandle[A], A]:
        codec = event_codec_for(actor_class)
        commands = command_names(actor_class)
        shadowed = sorted(commands & HANDLE_NAMES)
        if shadowed:
            msg = (
                f"{actor_class.__name__} has commands named like ActorHandle members "
                f"({', '.join(shadowed)}); rename them so handle.{shadowed[0]}() is not ambiguous"
            )
            raise TypeError(msg)
        actor = actor_class(*args, **kwargs)
        actor._esa_encode = codec.encode_one
        options = self.options
        log = SegmentedLog.open(
            directory,
            segment_bytes=options.segment_bytes,
            fsync=options.fsync,
            fsync_interval=options.fsync_interval,
        )
        counters = Counters()
        name = directory.name
        try:
            replay(name, actor, log, codec, counters, self._progress)
            ref = ActorHost.start(name, actor, log, codec, counters)
        except BaseException:
            log.close()
            raise
        return ActorHandle(name, actor_class, ref, commands, counters, log), actor

    def _start_sweeper(self) -> None:
        if self._sweeper is None:
            self._sweeper = threading.Thread(
                target=self._sweep_periodically, name=f"actorkv-sweep:{self.path}", daemon=True
            )
            self._sweeper.start()

    def _sweep_periodically(self) -> None:
        """Ask each key space with expired keys to record their expiry. Own daemon thread."""
        while not self._stop_sweeper.wait(self._sweep_interval):
            with self._mutex:
                keyspaces = list(self._keyspaces.values())
            now = self._clock()
            for keyspace in keyspaces:
                if keyspace._state.has_expired(now):
                    try:
                        keyspace._actor.sweep()  # fire and forget: the next tick retries
                    except ActorStopped:
                        continue

    def close(self) -> None:
        """Stop every actor (answering queued commands, syncing logs), then unlock.

        Safe to call twice.
        """
        with self._mutex:
            if self._closed:
                return
            self._closed = True
            handles = list(self._handles.values())
            handles += [keyspace._actor for keyspace in self._keyspaces.values()]
        _OPEN_STORES.discard(self)
        self._stop_sweeper.set()
        if self._sweeper is not None:
            self._sweeper.join()
        try:
            for handle in handles:
                handle.stop()
        finally:
            self._lock.release()

    def _check_open(self) -> None:
        if self._closed:
            msg = f"the store at {self.path} is closed; open it again"
            raise KeyspaceClosed(msg)

    def __enter__(self) -> Self:
        """Return the store itself."""
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        """Close the store."""
        self.close()

    def __repr__(self) -> str:
        return (
            f"<Store {self.path} keyspaces={sorted(self._keyspaces)} "
            f"actors={sorted(self._handles)} fsync={self.options.fsync}>"
        )


_OPEN_STORES: weakref.WeakSet[Store] = weakref.WeakSet()


@atexit.register
def _close_open_stores() -> None:
    """Close every store still open at interpreter exit.

    Queued commands are answered and logs synced; the actor threads are daemons, so nothing
    else would do it.
    """
    for store in list(_OPEN_STORES):
        store.close()
