"""The Store: one data directory, locked, holding the logs of every actor spawned in it.

Layout: ``PATH/LOCK`` and one log directory per actor, ``PATH/actors/NAME/``.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from types import TracebackType
from typing import Any, Self, TypeVar

from actors._actor import EventSourcedActor, command_names
from actors._events import event_codec_for
from actors._handle import ActorHandle
from actors._host import ActorHost, Counters, ReplayProgress, replay
from actors._names import check_name
from storage import DEFAULT_SEGMENT_BYTES, DirectoryLock, LogOptions, SegmentedLog
from storage.errors import InvalidName, KeyspaceClosed
from storage.log import FsyncPolicy

__all__ = ["Store"]

A = TypeVar("A", bound=EventSourcedActor[Any])

ACTORS_DIR = "actors"


class Store:
    """An open data directory. Thread-safe. Use :meth:`open`; close it, or use ``with``."""

    def __init__(
        self,
        path: Path,
        options: LogOptions,
        lock: DirectoryLock,
        progress: ReplayProgress | None,
    ) -> None:
        """Wrap a locked directory; use :meth:`open` instead."""
        self.path = path
        self.options = options
        self._lock = lock
        self._progress = progress
        self._handles: dict[str, ActorHandle[Any]] = {}
        self._mutex = threading.Lock()
        self._closed = False

    @classmethod
    def open(
        cls,
        path: str | os.PathLike[str],
        *,
        fsync: FsyncPolicy = "always",
        fsync_interval: float = 0.1,
        segment_bytes: int = DEFAULT_SEGMENT_BYTES,
        on_replay: ReplayProgress | None = None,
    ) -> Store:
        """Open (creating if needed) the store in directory ``path`` and lock it.

        Args:
            path: The data directory.
            fsync: Durability policy of every log in the store; see ``storage.LogOptions``.
            fsync_interval: Seconds between background fsyncs under ``fsync="interval"``.
            segment_bytes: Size at which logs roll to a new segment.
            on_replay: Called as ``on_replay(name, records_done, records_total)`` while an
                actor replays its log (for progress bars).

        Raises:
            InvalidOption: An option is out of range.
            StoreLocked: Another handle, in this or another process, has the store open.
        """
        options = LogOptions(segment_bytes, fsync, fsync_interval)
        directory = Path(path)
        directory.mkdir(parents=True, exist_ok=True)
        lock = DirectoryLock.acquire(directory)
        return cls(directory, options, lock, on_replay)

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
            handle = self._start(name, actor_class, args, kwargs)
            self._handles[name] = handle
            return handle

    def _start(
        self, name: str, actor_class: type[A], args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> ActorHandle[A]:
        codec = event_codec_for(actor_class)
        commands = command_names(actor_class)
        actor = actor_class(*args, **kwargs)
        actor._esa_encode = codec.encode_one
        options = self.options
        log = SegmentedLog.open(
            self.path / ACTORS_DIR / name,
            segment_bytes=options.segment_bytes,
            fsync=options.fsync,
            fsync_interval=options.fsync_interval,
        )
        counters = Counters()
        try:
            replay(name, actor, log, codec, counters, self._progress)
            ref = ActorHost.start(name, actor, log, codec, counters)
        except BaseException:
            log.close()
            raise
        return ActorHandle(name, actor_class, ref, commands, counters, log)

    def close(self) -> None:
        """Stop every actor (answering queued commands, syncing logs), then unlock.

        Safe to call twice.
        """
        with self._mutex:
            if self._closed:
                return
            self._closed = True
            handles = list(self._handles.values())
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
        return f"<Store {self.path} actors={sorted(self._handles)} fsync={self.options.fsync}>"
