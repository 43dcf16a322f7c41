"""The Store: one data directory, locked, holding the logs of its key spaces and actors.

Layout: ``PATH/LOCK``, one log directory per key space, ``PATH/keyspaces/NAME/``, and one
per custom actor, ``PATH/actors/NAME/``.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, TypedDict, TypeVar, overload

from typing_extensions import Unpack

from actors._actor import EventSourcedActor
from actors._core import ReplayProgress
from actors._drop import DROPPED_PREFIX, drop_directory, finish_drops
from actors._fork import finish_forks, write_fork
from actors._future import Future
from actors._handle import ActorHandle
from actors._history import entries_as_of
from actors._index import Index, reconcile_indexes, value_decoder
from actors._keyspace import KeySpace, KeySpaceOptions
from actors._keyspace_actor import KeySpaceActor
from actors._keyspace_input import key_type_name
from actors._metrics import check_sample_reads, sample_gets
from actors._metrics import collect as collect_metrics
from actors._migrate import MigrationReport, finish_migrations, migrate_actor
from actors._names import ACTORS_DIR, KEYSPACES_DIR, check_name
from actors._open_stores import open_stores
from actors._projection import Projection, ProjectionFeeder, feed_class_check
from actors._shipping import ArchiveStatus, StoreShipper
from actors._snapshots import HistoryPolicy
from actors._starting import start_actor
from actors._store_checks import (
    check_archive_timing,
    check_clock,
    check_history,
    check_shippable,
    qualified_name,
)
from actors._tuple_keys import TupleKeySpace
from actors.runtimes import PykkaRuntime
from storage import DEFAULT_SEGMENT_BYTES, DirectoryLock, LogOptions, _fileio
from storage._format import FORMAT_VERSION
from storage.archive import Archive, open_archive
from storage.errors import (
    ActorStopped,
    InvalidInput,
    InvalidName,
    InvalidOperation,
    InvalidOption,
    KeyspaceClosed,
    StopTimeout,
    StoreForked,
    opening,
)
from storage.kv_versions import DEFAULT_RECENT_VERSIONS
from storage.log import FsyncPolicy
from storage.manifest import Manifest, read_manifest

if TYPE_CHECKING:
    from typing_extensions import Self

    from actors._replica import ReplicaStore  # Python 3.10 has no typing.Self

__all__ = ["Store"]

logger = logging.getLogger("actorkv.actors")

A = TypeVar("A", bound=EventSourcedActor[Any])
K = TypeVar("K")
V = TypeVar("V")


class KeySpaceExtras(TypedDict, total=False):
    """The options of :meth:`Store.keyspace` besides ``key_type`` and ``value_type``."""

    max_key_bytes: int
    max_value_bytes: int
    recovery_budget: float | None
    retention: float | None
    recent_versions: int
    indexes: dict[str, Index] | None
    value_upcaster: Callable[[Any], Any] | None


P = TypeVar("P", bound=Projection[Any])


class _Default:
    """The type of "the store's setting" for per key space options."""


_DEFAULT = _Default()


class Store:
    """An open data directory. Thread-safe. Use :meth:`open`; close it, or use ``with``."""

    _hosted = False
    _sample_reads: int | None = None
    """Set on a remote runtime's host store (``actors._host``): it locks no directory (the
    store that made the host holds the lock) and its commands may carry operation ids."""

    def __init__(
        self,
        path: Path,
        options: LogOptions,
        lock: DirectoryLock | _Unlocked,
        progress: ReplayProgress | None,
        clock: Callable[[], float],
        sweep_interval: float,
        history: HistoryPolicy,
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
        self._owner_pid = os.getpid()
        self._forked = False
        self._runtime = PykkaRuntime()
        self._history = history
        self._feeders: dict[str, ProjectionFeeder] = {}
        self._shipper: StoreShipper | None = None

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
        recovery_budget: float | None = 1.0,
        retention: float | None = None,
        recent_versions: int = DEFAULT_RECENT_VERSIONS,
        chain_key: bytes | None = None,
        archive: Archive | str | None = None,
        archive_interval: float = 1.0,
        archive_lease: float = 15.0,
        runtime: str = "threads",
        ray_options: Any = None,
        sample_reads: int | None = None,
    ) -> Self:
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
            recovery_budget: Seconds a reopen may spend replaying the records after the
                newest snapshot: snapshots are taken automatically (in the background) to
                stay within it, estimated from the replay speed measured on each log. None
                takes snapshots only on request.
            retention: Seconds of history to keep; segments wholly older than that and
                wholly below the newest snapshot are deleted after each snapshot (and by
                ``compact()``). None (default) keeps every event; 0 keeps only what
                recovery needs.
            recent_versions: Changes each key space keeps in memory for reads of the
                past (``at``, ``history``) and for scans that hold no long lock; older
                points are rebuilt from a snapshot and the log. About 200 bytes each
                beside the values (docs/history.md).
            chain_key: A secret (1 to 64 bytes) that keys every log's hash chain, so that
                whoever can write the files but does not hold it cannot make a log that
                ``storage.verify(..., key=)`` accepts. Every open needs the same key
                (``ChainKeyMismatch`` otherwise). None: an unkeyed chain, which still
                proves that a log extends a saved anchor.
            archive: Ship every log to ``"s3://bucket/prefix"``, ``"file:///dir"`` or an
                ``storage.archive.Archive`` (an ``S3Archive`` with its own endpoint or
                client, say), in the background: sealed segments, snapshots, manifests.
                Retention keeps what is not shipped; ``close()`` ships the rest. See
                ``docs/archive.md`` and :meth:`archive_status`.
            archive_interval: Seconds between shipping rounds (at most a third of
                ``archive_lease``).
            archive_lease: Seconds the writer lease on the archive prefix lasts unless
                renewed: a second store opening the prefix gets ``ArchiveLeased`` until
                this store closes or its lease runs out (``storage/lease.py``).
            runtime: ``"threads"`` (default: every actor on a thread of this process) or
                ``"ray"``: every key space and custom actor in a Ray actor of its own, with
                handles of the same methods (``docs/ray.md``; the ``ray`` extra).
            ray_options: For ``runtime="ray"``: an ``actors.RayOptions`` or a dict of its
                fields (CPUs and resources per host, restarts, retries).
            sample_reads: Time every N-th ``get`` of each key space into the
                ``get_latency`` histogram of :meth:`metrics`. None (default) times none
                and costs nothing; on, every get pays for the counting (0.21 -> 0.42 us a
                get here).

        A store belongs to the process that opened it: in a child made by ``fork`` every
        inherited store and handle raises :class:`StoreForked`, and nothing of the parent's
        is flushed, closed or unlocked from the child (the child's exit does not wait).

        Raises:
            InvalidOption: An option is out of range.
            StoreLocked: Another handle, in this or another process, has the store open.
            OpenFailed: The directory could not be created or locked (no space, no file
                descriptors, no permission).
        """
        options = LogOptions(segment_bytes, fsync, fsync_interval, clock, chain_key)
        if (
            isinstance(sweep_interval, bool)
            or not isinstance(sweep_interval, int | float)
            or not 0 < sweep_interval <= 3600
        ):
            msg = f"sweep_interval={sweep_interval!r} must be a number of seconds in (0, 3600]"
            raise InvalidOption(msg)
        check_clock(clock)
        history = check_history(recovery_budget, retention, recent_versions)
        check_archive_timing(archive_interval, archive_lease)
        check_sample_reads(sample_reads)
        if runtime not in ("threads", "ray"):
            msg = f"runtime must be 'threads' or 'ray', got {runtime!r}"
            raise InvalidOption(msg)
        target: type[Store] = cls
        if runtime == "ray":
            from actors._ray_store import RayStore  # noqa: PLC0415  # Ray only when asked for
            from actors.runtimes._ray import RayOptions  # noqa: PLC0415

            check_shippable(archive)
            ray_settings = RayOptions.of(ray_options)
            target = RayStore
        elif ray_options is not None:
            msg = "ray_options= is for runtime='ray'"
            raise InvalidOption(msg)
        shipping = None if archive is None else open_archive(archive)
        directory = Path(path)
        with opening(directory, "creating the store directory"):
            _fileio.make_dirs(directory)
        lock: DirectoryLock | _Unlocked = (
            _Unlocked() if cls._hosted else DirectoryLock.acquire(directory)
        )
        try:
            if not cls._hosted:
                with opening(directory, "removing a dropped key space in"):
                    finish_drops(directory / KEYSPACES_DIR)
                    finish_forks(directory / KEYSPACES_DIR)
                    finish_migrations(directory / ACTORS_DIR)
            shipper = None
            if shipping is not None:
                shipper = StoreShipper.start(
                    shipping, directory, float(archive_interval), float(archive_lease)
                )
        except BaseException:
            lock.release()
            raise
        store = target(directory, options, lock, on_replay, clock, sweep_interval, history)
        store._shipper = shipper
        store._sample_reads = sample_reads
        if runtime == "ray":
            hosts: dict[str, Any] = {
                "fsync": fsync,
                "fsync_interval": fsync_interval,
                "segment_bytes": segment_bytes,
                "on_replay": on_replay,
                "clock": clock,
                "sweep_interval": sweep_interval,
                "recovery_budget": recovery_budget,
                "retention": retention,
                "recent_versions": recent_versions,
                "chain_key": chain_key,
                "sample_reads": sample_reads,
            }
            if shipper is not None:  # each host ships its own log under this store's lease
                hosts["archive"] = (archive, archive_interval, archive_lease)
            store._start_ray(hosts, ray_settings, attached=False)  # type: ignore[attr-defined]
        open_stores.add(store)
        return store  # type: ignore[return-value]  # under the ray runtime, a RayStore

    @classmethod
    def open_replica(
        cls,
        archive: Archive | str,
        cache_dir: str | os.PathLike[str],
        *,
        follow: bool = True,
        poll_interval: float = 1.0,
        **options: Any,
    ) -> ReplicaStore:
        """A read-only store that follows ``archive``, in another process or machine.

        The archive's latest point is restored into ``cache_dir`` (wiped if an earlier
        replica left it), then opened; with ``follow`` the archive is polled every
        ``poll_interval`` seconds and new records are applied. Every read works (``at``,
        ``history``, ``subscribe``); every write raises ``ReadOnlyStore``; ``lag()`` says
        how many records each log is behind. ``options`` go to :meth:`open` (``clock``,
        ``recent_versions``...). See ``actors/_replica.py``.

        Raises:
            InvalidOperation: ``cache_dir`` holds something else. ArchiveError: The
                archive could not be read (or restored).
        """
        from actors._replica import open_replica  # noqa: PLC0415  # it subclasses Store

        return open_replica(
            archive, cache_dir, follow=follow, poll_interval=poll_interval, **options
        )

    @classmethod
    def connect(
        cls,
        name_or_address: str | os.PathLike[str],
        *,
        runtime: str = "ray",
        ray_options: Any = None,
    ) -> Store:
        """Handles on the key spaces and actors of a store another driver runs on Ray.

        ``name_or_address`` is the store's directory as its driver opened it (any path to
        it: it is resolved). Ray is joined (``ray.init(address="auto")``) unless this
        process already did. Nothing is started or stopped: ``keyspace(name)`` and
        ``spawn(name, cls)`` return handles to the running hosts, and ``close()`` only lets
        them go. See ``docs/ray.md``.

        Raises:
            InvalidOption: A runtime other than ``"ray"``. InvalidOperation: No host of
                that store runs.
        """
        if runtime != "ray":
            msg = f"Store.connect attaches to a store run by Ray: runtime='ray', not {runtime!r}"
            raise InvalidOption(msg)
        from actors._ray_store import RayStore  # noqa: PLC0415
        from actors.runtimes._ray import RayOptions  # noqa: PLC0415

        return RayStore.attach(str(Path(name_or_address).resolve()), RayOptions.of(ray_options))

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
            manifest = Manifest(
                format_version=FORMAT_VERSION,
                kind="actor",
                actor_class=qualified_name(actor_class),
            )
            handle, _ = self._start(
                self.path / ACTORS_DIR / name, actor_class, args, kwargs, manifest, self._history
            )
            self._handles[name] = handle
            return handle

    def projection(
        self,
        name: str,
        projection_class: type[P],
        /,
        *args: Any,
        sources: list[str],
        **kwargs: Any,
    ) -> ActorHandle[P]:
        """Start (or resume) the projection ``name`` fed by the key spaces ``sources``.

        A projection is an actor (``actors.Projection``) that applies every change of its
        sources exactly once, whatever crashes: its derived events and how far it has read
        each source are written in the same record (see ``actors/_projection.py``). The
        sources are opened with default options if they are not open. Returns its handle
        (read it like any actor's). It stops with the store.

        Raises:
            TypeError: Not a Projection subclass defining ``project``.
            InvalidInput: No sources, or a source named twice.
        """
        self._check_writes(f"projection({name!r})")
        feed_class_check(projection_class)
        if not sources or len(set(sources)) != len(sources):
            msg = f"projection() needs distinct source key space names, got {sources!r}"
            raise InvalidInput(msg)
        handle = self.spawn(name, projection_class, *args, **kwargs)
        with self._mutex:
            self._check_open()
            running = self._feeders.get(name)
        if running is not None and running.failure is None:
            return handle
        keyspaces = {}
        for source in sources:
            opened = self._keyspaces.get(source)
            keyspaces[source] = opened if opened is not None else self.keyspace(source)
        with self._mutex:
            self._feeders[name] = ProjectionFeeder(handle, keyspaces, name)
        return handle

    @overload
    def keyspace(
        self, name: str, *, value_type: type[V], **options: Unpack[KeySpaceExtras]
    ) -> KeySpace[str, V]: ...

    @overload
    def keyspace(
        self,
        name: str,
        *,
        key_type: type[K],
        value_type: type[V],
        **options: Unpack[KeySpaceExtras],
    ) -> KeySpace[K, V]: ...

    @overload
    def keyspace(
        self,
        name: str,
        *,
        key_type: type[K],
        value_type: Any = None,
        **options: Unpack[KeySpaceExtras],
    ) -> KeySpace[K, Any]: ...

    @overload
    def keyspace(
        self, name: str, *, value_type: Any = None, **options: Unpack[KeySpaceExtras]
    ) -> KeySpace[str, Any]: ...

    def keyspace(
        self,
        name: str,
        *,
        key_type: type = str,
        value_type: Any = None,
        max_key_bytes: int = 1024,
        max_value_bytes: int = 16 * 1024 * 1024,
        recovery_budget: float | _Default | None = _DEFAULT,
        retention: float | _Default | None = _DEFAULT,
        recent_versions: int | _Default = _DEFAULT,
        indexes: dict[str, Index] | None = None,
        value_upcaster: Callable[[Any], Any] | None = None,
    ) -> KeySpace[Any, Any]:
        """Open the key space ``name``, creating it if new and recovering it from its log.

        Opening an open key space returns the same handle (its options must match).

        Args:
            name: 1 to 128 of ``[A-Za-z0-9._-]``, starting with a letter or digit.
            key_type: ``str`` (default), ``bytes`` or ``tuple`` (tuples of None, bool, int,
                float, str, bytes and tuples, in FoundationDB's tuple order; see
                ``storage/tuplekey.py``).
            value_type: Validate values on put and decode them on get as this type.
            max_key_bytes: Longest key in bytes (UTF-8 for str keys).
            max_value_bytes: Largest encoded value in bytes.
            recovery_budget: This key space's own (see :meth:`open`); the store's if omitted.
            retention: This key space's own (see :meth:`open`); the store's if omitted.
            recent_versions: This key space's own (see :meth:`open`); the store's if omitted.
            indexes: Secondary indexes by name (see ``docs/indexes.md``). The manifest
                keeps them: field indexes come back at every open without being named
                again; key-function ones must be passed again (the function is code).
                A new one is built at open, before this returns.
            value_upcaster: For a ``value_type`` that changed: a function of an older
                stored value (decoded untyped) returning a value of ``value_type``. Values
                that decode as ``value_type`` never reach it; older ones are converted on
                every read (and for indexes, on replay), never rewritten.

        Raises:
            InvalidName: A bad name. InvalidOption: A bad option, options that differ from
                the open key space's, or a ``key_type`` other than the one its data was
                written with (kept in the log directory's manifest); an index that differs
                from the manifest's, or a key-function index not given again. CorruptLog: Its log is
                damaged. OpenFailed: The system refused a file (no space, no descriptors).
        """
        check_name(name, "key space")
        options = KeySpaceOptions(key_type, value_type, max_key_bytes, max_value_bytes)
        if value_upcaster is not None and (value_type is None or not callable(value_upcaster)):
            msg = (
                "value_upcaster= converts older values to value_type: give a function and a "
                f"value_type (got value_upcaster={value_upcaster!r:.60}, "
                f"value_type={value_type!r:.60})"
            )
            raise InvalidOption(msg)
        history = check_history(
            self._history.recovery_budget if recovery_budget is _DEFAULT else recovery_budget,
            self._history.retention if retention is _DEFAULT else retention,
            self._history.recent_versions if recent_versions is _DEFAULT else recent_versions,
        )
        with self._mutex:
            self._check_open()
            running = self._keyspaces.get(name)
            if running is not None and running._actor.alive:
                if running.options != options:
                    msg = f"key space {name!r} is open with other options: {running.options}"
                    raise InvalidOption(msg)
                if value_upcaster is not None and value_upcaster is not running.value_upcaster:
                    msg = f"key space {name!r} is open with another value_upcaster"
                    raise InvalidOption(msg)
                if indexes is not None and any(
                    running.indexes().get(index_name) != index
                    for index_name, index in indexes.items()
                ):
                    msg = (
                        f"key space {name!r} is open with other indexes: {running.indexes()}; "
                        "use create_index and drop_index on it"
                    )
                    raise InvalidOption(msg)
                return running
            directory = self.path / KEYSPACES_DIR / name
            stored = read_manifest(directory) if directory.is_dir() else None
            stored_indexes = stored.indexes if stored is not None else ()
            chosen = reconcile_indexes(name, indexes, stored_indexes)
            handle, actor = self._start(
                directory,
                KeySpaceActor,
                (self._clock,),
                # Scalars are decoded once at write time only when reads decode untyped:
                # with a value_type, "2024-01-01" may have to become a datetime.
                {
                    "decode_scalars": value_type is None,
                    "recent_versions": history.recent_versions,
                    "indexes": [index.spec(index_name) for index_name, index in chosen.items()],
                    "decode_value": value_decoder(value_type, value_upcaster),
                },
                Manifest(
                    format_version=FORMAT_VERSION,
                    kind="keyspace",
                    key_type=key_type_name(key_type),
                ),
                history,
            )
            handle_class = TupleKeySpace if key_type is tuple else KeySpace
            keyspace = handle_class(name, handle, actor.state, options, chosen, value_upcaster)
            if self._sample_reads is not None:
                sample_gets(keyspace, self._sample_reads)
            if tuple(index.definition(n) for n, index in sorted(chosen.items())) != stored_indexes:
                keyspace._save_index_definitions()
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

    def fork_keyspace(
        self, source: str, target: str, *, seq: int | None = None, time: float | None = None
    ) -> KeySpace:
        """A new key space ``target`` holding ``source``'s state as of ``seq`` (or ``time``).

        Restore to a point without stopping anything: versions and seqs are preserved, the
        fork's own history starts after the point, and the source is only read (opened with
        default options if it is not open). Neither point given means now. The fork is
        written whole under a temporary name and renamed into place (see ``actors._fork``).

        Raises:
            InvalidOperation: ``target`` exists. HistoryUnavailable: The point is below the
                source's history floor. InvalidName, InvalidInput: A bad name or point.
            OpenFailed: The fork could not be written (nothing is left under its name).
        """
        self._check_writes(f"fork_keyspace({source!r}, {target!r})")
        options = self._write_fork(source, target, seq, time)
        return self.keyspace(
            target,
            key_type=options.key_type,
            value_type=options.value_type,
            max_key_bytes=options.max_key_bytes,
            max_value_bytes=options.max_value_bytes,
        )

    def _write_fork(
        self, source: str, target: str, seq: int | None, time: float | None
    ) -> KeySpaceOptions:
        """Write the fork's folder (``fork_keyspace`` without opening it); its options."""
        check_name(target, "key space")
        running = self._keyspaces.get(source)
        origin = running if running is not None else self.keyspace(source)
        point = origin.at(seq, time=time).seq
        folder = self.path / KEYSPACES_DIR / target
        with self._mutex:
            self._check_open()
            if target in self._keyspaces or folder.exists():
                msg = f"key space {target!r} exists; drop it first or fork to another name"
                raise InvalidOperation(msg)
            log = origin._core.log
            items = entries_as_of(origin._core, source, origin._state, point)
            when = log.time_of(point) if point else 0.0
            with opening(folder, "writing a fork of key space " + repr(source) + " to"):
                write_fork(
                    folder,
                    point,
                    items,
                    key_type=key_type_name(origin.options.key_type),
                    decode_scalars=origin._state.decode_scalars,
                    time=when,
                    keyed=self.options.chain_key is not None,
                )
        return origin.options

    def migrate(
        self, name: str, actor_class: type[EventSourcedActor[Any]] | None = None
    ) -> MigrationReport:
        """Rewrite the log of actor ``name`` through its class's ``upcasters``, offline.

        Every record is written again with the current event types into a new log with the
        same seqs and commit times; the old log is kept as a backup beside it (see
        ``actors/_migrate.py`` for what changes: the chain, snapshots, operation ids).
        Only needed to have old records gone: upcasters read them either way.

        Args:
            name: The actor; it must not be running in this store.
            actor_class: Its class; by default the one its manifest records, imported.

        Raises:
            InvalidOperation: It is running, is a key space (whose values ``value_upcaster``
                converts on read), has no upcasters, or its log does not start at seq 1.
            InvalidInput: No such actor, or its class cannot be imported.
        """
        self._check_writes(f"migrate({name!r})")
        check_name(name, "actor")
        with self._mutex:  # no spawn of it meanwhile
            self._check_open()
            if name in self._handles:
                msg = f"actor {name!r} is running: migrate it before spawning it"
                raise InvalidOperation(msg)
            return migrate_actor(self.path, name, actor_class, self.options.chain_key)

    def drop_keyspace(self, name: str) -> bool:
        """Stop the key space ``name`` if open and delete its log; returns whether it existed.

        A log still open anywhere is never deleted (``StoreLocked``), and a crash midway
        never leaves a half-deleted key space under its name (``actors/_drop.py``).
        Handles on it raise ``KeyspaceClosed``.
        """
        self._check_writes(f"drop_keyspace({name!r})")
        check_name(name, "key space")
        with self._mutex:
            self._check_open()
            running = self._keyspaces.pop(name, None)
            if running is not None:
                running.close(KeyspaceClosed, f"key space {name!r} was dropped")
                running._actor.stop()
            folder = self.path / KEYSPACES_DIR / name
            if not folder.exists():
                return False
            drop_directory(folder)
            return True

    def _start(
        self,
        directory: Path,
        actor_class: type[A],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        manifest: Manifest,
        history: HistoryPolicy,
    ) -> tuple[ActorHandle[A], A]:
        handle, actor = start_actor(
            directory,
            actor_class,
            args,
            kwargs,
            manifest,
            history,
            options=self.options,
            runtime=self._runtime,
            progress=self._progress,
            retried=self._hosted,
        )
        if self._shipper is not None:
            self._shipper.add(directory, handle.core)
        return handle, actor

    def metrics(self) -> dict[str, dict[str, dict[str, Any]]]:
        """Counters and latency histograms of each open key space and actor.

        ``{"keyspaces": {name: {...}}, "actors": {name: {...}}}``: commands, records,
        groups, fsyncs, last seq, history floor, bytes, replay seconds, subscriber and
        archive lag, and the histograms ``write_latency``, ``group_size``,
        ``fsync_latency``, ``snapshot_seconds`` (count, sum, p50, p99, p999, buckets).
        Cheap to leave on (``actors/_metrics.py``); ``actors.metrics`` exports it to
        Prometheus.
        """
        self._check_open()
        return collect_metrics(self)

    def archive_status(self) -> dict[str, ArchiveStatus]:
        """How far each open key space's and actor's log is shipped, by directory name.

        Raises:
            InvalidOperation: The store was opened without an archive.
        """
        if self._shipper is None:
            msg = "this store ships to no archive; open it with Store.open(..., archive=...)"
            raise InvalidOperation(msg)
        return self._shipper.status()

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
                    except KeyspaceClosed:
                        continue

    def _stop_feeders_and_sweeper(self, timeout: float) -> None:
        for feeder in list(self._feeders.values()):  # before their actors and sources stop
            feeder.stop(timeout)
        self._stop_sweeper.set()

    def _check_writes(self, what: str) -> None:
        """Raise if this store may not ``what`` (a replica refuses; see actors._replica)."""

    def _refuse_handles(self, keyspaces: list[KeySpace]) -> None:
        for keyspace in keyspaces:
            message = (
                f"key space {keyspace.name!r} was closed with its store; open the store again "
                f"and call store.keyspace({keyspace.name!r})"
            )
            keyspace.close(KeyspaceClosed, message)
        for handle in self._handles.values():
            message = (
                f"actor {handle.name!r} was stopped when its store was closed; open the store "
                "again and spawn it"
            )
            handle.refuse(ActorStopped, message)

    def close(self, timeout: float = 30.0) -> None:
        """Stop every actor (answering queued commands, syncing logs), then unlock.

        Every actor is asked to stop at once and given ``timeout`` seconds in all. Handles
        of the store's key spaces raise ``KeyspaceClosed`` from now on. Safe to call twice;
        in a forked child it does nothing (the store is the parent's).

        Raises:
            InvalidOperation: Called from inside a command of one of the store's actors,
                where it would wait for that command to finish.
            StopTimeout: Some actors are still running a command after ``timeout``; every
                other actor was stopped and synced, and the directory stays locked until
                the stragglers stop (then it is unlocked in the background).
        """
        if self._forked:
            return
        with self._mutex:
            running = [*self._handles.values(), *(ks._actor for ks in self._keyspaces.values())]
        inside = [handle.name for handle in running if handle.in_own_thread()]
        if inside:
            msg = (
                f"Store.close() was called from inside a command of {inside[0]!r}, an actor "
                "of this store: it would wait for that command to finish. Close the store "
                "from outside its actors' commands"
            )
            raise InvalidOperation(msg)
        with self._mutex:
            if self._closed:
                return
            self._closed = True
            keyspaces = list(self._keyspaces.values())
            handles = [*self._handles.values(), *(keyspace._actor for keyspace in keyspaces)]
        open_stores.discard(self)
        self._stop_feeders_and_sweeper(timeout)
        if self._shipper is not None:
            self._shipper.stop(timeout)
        if self._sweeper is not None:
            self._sweeper.join()
        self._refuse_handles(keyspaces)
        stopping = [(handle, handle.stop_async()) for handle in handles]
        deadline = time.monotonic() + timeout
        stuck = []
        for handle, stopped in stopping:
            try:
                stopped.get(timeout=max(0.0, deadline - time.monotonic()))
            except stopped.timeout_error:
                stuck.append((handle, stopped))
        if self._shipper is not None:  # every log is closed and complete now
            self._shipper.close(max(0.0, deadline - time.monotonic()))
        if not stuck:
            self._lock.release()
            return
        threading.Thread(
            target=_release_when_stopped,
            args=(self._lock, [stopped for _, stopped in stuck]),
            name=f"actorkv-close:{self.path}",
            daemon=True,
        ).start()
        raise StopTimeout([handle.name for handle, _ in stuck], timeout)

    def _forsake(self) -> None:
        """In a forked child: make the store and its handles refuse every use (no locks)."""
        message = self._forked_message()
        self._forked = True
        self._closed = True
        self._mutex = threading.RLock()  # the parent's may have been held at the fork
        for handle in self._handles.values():
            handle.forsake(message)
        for keyspace in self._keyspaces.values():
            keyspace.forsake(message)

    def _forked_message(self) -> str:
        return (
            f"the store at {self.path} belongs to process {self._owner_pid}, which forked this "
            "process; a child must not use, flush, close or unlock its parent's store. Open "
            "the store in the child only once the parent has closed it"
        )

    def _check_open(self) -> None:
        if self._forked:
            raise StoreForked(self._forked_message())
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


class _Unlocked:
    """The lock of a store that holds none (a host's: see ``Store._hosted``)."""

    def release(self) -> None:
        """Nothing to release."""


def _release_when_stopped(lock: DirectoryLock | _Unlocked, stopping: list[Future[None]]) -> None:
    """Body of a closing thread: unlock the directory once every straggler has stopped."""
    for stopped in stopping:
        stopped.get()
    lock.release()
