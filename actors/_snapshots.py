"""An actor's snapshots: what to capture, how to encode and load it, and which to trust.

The core captures a snapshot between two groups (so it is the state as of ``log.last_seq``,
with nothing undurable in it), then a background thread encodes and writes it
(``storage.snapshot``) and lists it in the log directory's manifest. Recovery loads the
newest listed snapshot that verifies and whose records the log still holds after it, and
falls back to older ones; it never builds a state from a snapshot it could not verify to
the end.

Two codecs: the key space's (its sorted entries, ``storage.kv_snapshot``) and the custom
actors' (one item: the state, as ``snapshot_state`` makes it encodable).
"""

from __future__ import annotations

import inspect
import logging
import threading
import time
import typing
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Protocol

import msgspec

from actors._actor import EventSourcedActor
from actors._events import event_types_of
from storage import _fileio
from storage._format import BROKEN_SUFFIX, FORMAT_VERSION, ZERO_HEAD
from storage.errors import CorruptLog, InvalidOperation, SnapshotSchemaMismatch, opening
from storage.histogram import Histogram
from storage.kv_snapshot import capture, encode_chunks, load_state, schema_of
from storage.kv_versions import DEFAULT_RECENT_VERSIONS
from storage.kvstate import KVState
from storage.manifest import (
    ListedSnapshot,
    Manifest,
    read_manifest,
    remove_unfinished_manifest,
    write_manifest,
)
from storage.snapshot import (
    KIND_ACTOR,
    KIND_KEYSPACE,
    SNAPSHOT_SUFFIX,
    SnapshotInfo,
    read_snapshot,
    write_snapshot,
)

logger = logging.getLogger("actorkv.actors")

KEEP_SNAPSHOTS = 2
"""Snapshots kept listed: the newest, and one to fall back to if it is damaged."""


class SnapshotCodec(Protocol):
    """How one kind of actor's state becomes snapshot chunks and back."""

    kind: int

    def capture(self, actor: EventSourcedActor[Any]) -> tuple[int, Any]:
        """``(schema, captured)``: a consistent copy of the state, taken between groups."""

    def chunks(self, captured: Any) -> Iterator[tuple[bytes, int]]:
        """The encoded chunks of a captured state and their item counts (in the background)."""

    def load(self, actor: EventSourcedActor[Any], path: Path) -> tuple[Any, int]:
        """``(state, seq)`` from a snapshot file, verified to its end."""


class KeySpaceSnapshots:
    """The key space's sorted state: keys and entries in key order."""

    kind = KIND_KEYSPACE

    def capture(self, actor: EventSourcedActor[Any]) -> tuple[int, Any]:
        """Two lists of references to the committed entries (entries are immutable)."""
        state: KVState = actor.state
        return schema_of(state), capture(state)

    def chunks(self, captured: Any) -> Iterator[tuple[bytes, int]]:
        """``[keys, entries]`` chunks."""
        keys, entries = captured
        return encode_chunks(keys, entries)

    def load(self, actor: EventSourcedActor[Any], path: Path) -> tuple[Any, int]:
        """A fresh KVState with the actor's clock and scalar policy."""
        initial: KVState = actor.initial_state()
        state, seq = load_state(path, initial.clock, decode_scalars=initial.decode_scalars)
        state.versions.limit = initial.versions.limit
        state.track_after(initial.track_from)
        return state, seq


_ENCODER = msgspec.msgpack.Encoder()


class StateSnapshots:
    """A custom actor's state as one item: ``snapshot_state(state)``, encoded by msgspec.

    The schema id is a CRC of the actor's event and state type names (or its
    ``schema_version``), so a snapshot written by another shape of the actor is not trusted.
    """

    kind = KIND_ACTOR

    def __init__(self, actor_class: type[EventSourcedActor[Any]]) -> None:
        self._schema = schema_id(actor_class)
        # Snapshots written before the inferred event types were part of the id are the
        # same schema: their id is the earlier derivation's.
        self._same = {self._schema, schema_id(actor_class, legacy=True)}
        self._state_type = _state_type(actor_class)

    def capture(self, actor: EventSourcedActor[Any]) -> tuple[int, Any]:
        """``snapshot_state(state)`` (``apply`` returns new states; nothing mutates them)."""
        return self._schema, (type(actor).__name__, actor.snapshot_state(actor.state))

    def chunks(self, captured: Any) -> Iterator[tuple[bytes, int]]:
        """One chunk holding one item (encoded here, in the background).

        Raises:
            InvalidOperation: The state cannot be encoded; says how to make it so.
        """
        name, data = captured
        try:
            encoded = _ENCODER.encode([data])
        except (TypeError, ValueError, OverflowError, msgspec.EncodeError) as exc:
            msg = (
                f"{name}'s state ({type(data).__name__}) cannot be encoded for a snapshot "
                f"({exc}); define snapshot_state(state) returning something msgspec encodes, "
                "and restore_state(data) -> state"
            )
            raise InvalidOperation(msg) from exc
        yield encoded, 1

    def load(self, actor: EventSourcedActor[Any], path: Path) -> tuple[Any, int]:
        """``restore_state`` of the decoded item, checked against the schema id."""
        kind, seq, schema, chunks = read_snapshot(path)
        if kind != KIND_ACTOR:
            raise CorruptLog(path, 10, f"snapshot of kind {kind} is not an actor's")
        other = schema not in self._same
        converts = other and takes_schema_version(type(actor))
        if other and not converts:
            raise OtherSchema(path, schema, self._schema)
        items: list[Any] = []
        for payload in chunks:  # consumed to the end: the digest is checked last
            items.extend(msgspec.msgpack.decode(payload))
        if len(items) != 1:
            raise CorruptLog(path, 0, f"an actor's snapshot holds {len(items)} items, not 1")
        data = items[0]
        if converts:  # the actor converts snapshots of its other schemas itself
            return actor.restore_state(data, schema), seq  # type: ignore[call-arg]
        overridden = type(actor).restore_state is not EventSourcedActor.restore_state
        if self._state_type is not None and not overridden:
            try:
                data = msgspec.convert(data, self._state_type)
            except msgspec.ValidationError as exc:
                reason = f"snapshot does not fit the state type ({exc})"
                raise CorruptLog(path, 0, reason) from exc
        return actor.restore_state(data), seq


class OtherSchema(CorruptLog):
    """A snapshot written by another schema of the actor: not damaged, not usable as is."""

    def __init__(self, path: Path, written: int, current: int) -> None:
        super().__init__(path, 20, f"written by schema {written}, the actor's is {current}")
        self.written = written
        self.current = current


def takes_schema_version(actor_class: type) -> bool:
    """Whether the class's ``restore_state`` takes ``(data, schema_version)``."""
    method = getattr(actor_class, "restore_state", None)
    if method is None or method is EventSourcedActor.restore_state:
        return False
    try:
        parameters = list(inspect.signature(method).parameters.values())
    except (TypeError, ValueError):
        return False
    positional = [p for p in parameters if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    return len(positional) >= 3 or any(p.name == "schema_version" for p in parameters)


def schema_id(actor_class: type[EventSourcedActor[Any]], *, legacy: bool = False) -> int:
    """A stable id of what an actor's snapshots hold: ``schema_version``, or type names.

    Derived from the state type's name and the event types' (declared in ``event_types``
    or inferred from ``apply``'s annotation). ``legacy``: the id as derived before inferred
    event types counted (declared ones only), which snapshots written then carry.
    """
    explicit = getattr(actor_class, "schema_version", None)
    if explicit is not None:
        return int(explicit) & 0xFFFFFFFF
    hints = _state_type(actor_class)
    events: tuple[Any, ...] = getattr(actor_class, "event_types", None) or ()
    if not events and not legacy:
        try:
            events = event_types_of(actor_class)
        except TypeError:
            events = ()
    names = [getattr(hints, "__qualname__", repr(hints))]
    names += sorted(getattr(event, "__qualname__", repr(event)) for event in events)
    return zlib.crc32("|".join(names).encode())


def _state_type(actor_class: type[EventSourcedActor[Any]]) -> Any:
    try:
        return typing.get_type_hints(actor_class.initial_state).get("return")
    except (NameError, TypeError):
        return None


class Snapshots:
    """One actor's snapshots: listing, background writes, recovery. Thread-safe."""

    def __init__(self, directory: Path, codec: SnapshotCodec) -> None:
        self.directory = directory
        self.write_seconds = Histogram()  # each snapshot's encoding and write
        self.codec = codec
        self._manifest_lock = threading.Lock()  # one manifest rewrite at a time
        self._writing: threading.Thread | None = None
        self.newest: SnapshotInfo | None = None
        """The newest listed snapshot (after recovery, or the last one written)."""
        self.listed: tuple[ListedSnapshot, ...] = ()
        """What the manifest lists, newest first (reads as of a past seq start from one)."""

    # -- recovery ------------------------------------------------------------------------------

    def recover(
        self, actor: EventSourcedActor[Any], first_seq: int, last_seq: int
    ) -> tuple[Any, int] | None:
        """The newest listed snapshot that verifies and that the log can continue.

        Returns ``(state, seq)``, or None when there is none and the log starts at seq 1
        (replay from the beginning).

        Raises:
            CorruptLog: The log no longer starts at seq 1 and no snapshot that could
                continue it verifies; or a snapshot is ahead of the log's end.
        """
        with opening(self.directory, "removing unfinished snapshots in"):
            remove_unfinished_manifest(self.directory)
            self._remove_unlisted()
        manifest = read_manifest(self.directory)
        listed = self.listed = manifest.snapshots if manifest is not None else ()
        failures: list[str] = []
        others: list[OtherSchema] = []
        for entry in listed:
            path = self.directory / entry.file
            if entry.seq > last_seq:
                reason = (
                    f"snapshot {entry.file} includes records up to {entry.seq}, but the log "
                    f"ends at {last_seq}: records the snapshot rests on are missing"
                )
                raise CorruptLog(path, 0, reason)
            if entry.seq + 1 < first_seq:
                failures.append(f"{entry.file}: the log starts at {first_seq}, after it")
                continue
            try:
                state, seq = self.codec.load(actor, path)
            except OtherSchema as exc:  # not damaged: kept listed, for the code that wrote it
                logger.warning("snapshot %s is of another schema (%s); not used", path, exc)
                others.append(exc)
                continue
            except (CorruptLog, OSError) as exc:
                logger.warning("snapshot %s is not usable (%s); trying an older one", path, exc)
                failures.append(f"{entry.file}: {exc}")
                continue
            if seq != entry.seq:
                failures.append(f"{entry.file}: holds seq {seq}, listed as {entry.seq}")
                continue
            if failures:
                self._unlist_failed(entry.seq)
            self.newest = SnapshotInfo(seq, entry.bytes, path, entry.items)
            return state, seq
        if first_seq <= 1:
            return None  # what no snapshot gives, a replay from the first record does
        if others:
            raise SnapshotSchemaMismatch(
                type(actor).__name__,
                str(others[0].path),
                others[0].written,
                others[0].current,
                first_seq,
            )
        reason = (
            f"the log starts at seq {first_seq} (older segments were dropped) and no "
            f"snapshot that could continue it verifies: {'; '.join(failures) or 'none listed'}"
        )
        raise CorruptLog(self.directory, 0, reason)

    def _unlist_failed(self, usable_seq: int) -> None:
        """Stop listing the snapshots newer than the one recovery used: they failed.

        Kept as ``NAME.broken`` for inspection; the usable one stays the fallback of the
        next snapshot, instead of a known-bad one.
        """
        with self._manifest_lock, opening(self.directory, "unlisting damaged snapshots in"):
            manifest = read_manifest(self.directory)
            if manifest is None:
                return
            bad = [entry for entry in manifest.snapshots if entry.seq > usable_seq]
            kept = tuple(entry for entry in manifest.snapshots if entry.seq <= usable_seq)
            write_manifest(self.directory, msgspec.structs.replace(manifest, snapshots=kept))
            self.listed = kept
            for entry in bad:
                path = self.directory / entry.file
                if path.exists():
                    broken = _fileio.unused_name(path.with_name(path.name + BROKEN_SUFFIX))
                    _fileio.rename(path, broken)
            if bad:
                _fileio.fsync_dir(self.directory)

    def _remove_unlisted(self) -> None:
        """Delete snapshot files (and temporary ones) the manifest does not list."""
        manifest = read_manifest(self.directory)
        listed = {entry.file for entry in manifest.snapshots} if manifest is not None else set()
        for path in list(self.directory.iterdir()):
            name = path.name
            if (name.endswith(SNAPSHOT_SUFFIX) and name not in listed) or name.endswith(
                SNAPSHOT_SUFFIX + ".tmp"
            ):
                _fileio.remove(path)

    # -- writing -------------------------------------------------------------------------------

    def write(
        self,
        seq: int,
        schema: int,
        captured: Any,
        *,
        first_seq: int = 1,
        chain_head: bytes = ZERO_HEAD,
    ) -> SnapshotInfo:
        """Write a captured state as the snapshot of ``seq`` and list it (this thread).

        ``first_seq`` is the log's first record: the oldest snapshot the log continues
        from stays listed too, as the base of reads as of the oldest retained points.
        ``chain_head`` is the log's chain head at ``seq``, kept in the snapshot so the chain
        stays verifiable once the records below it are dropped.

        Raises:
            OpenFailed: The file or the manifest could not be written (nothing is listed).
        """
        started = time.perf_counter()
        with opening(self.directory, "writing a snapshot in"):
            info = write_snapshot(
                self.directory,
                seq,
                self.codec.kind,
                schema,
                self.codec.chunks(captured),
                chain_head=chain_head,
            )
            self._list(info, first_seq)
        self.newest = info
        self.write_seconds.record(time.perf_counter() - started)
        return info

    def write_in_background(
        self,
        seq: int,
        schema: int,
        captured: Any,
        done: Callable[[SnapshotInfo | None, BaseException | None], None],
        first_seq: Callable[[], int] = lambda: 1,
        chain_head: bytes = ZERO_HEAD,
    ) -> None:
        """Write on a thread of its own; ``done(info, error)`` is called there when it ends."""
        self.wait()

        def run() -> None:
            try:
                info = self.write(
                    seq, schema, captured, first_seq=first_seq(), chain_head=chain_head
                )
            except BaseException as exc:
                done(None, exc)  # which reports it: to a caller, or to the log
                return
            done(info, None)

        self._writing = threading.Thread(
            target=run, name=f"actorkv-snapshot:{self.directory.name}", daemon=True
        )
        self._writing.start()

    def wait(self) -> None:
        """Wait for a background write to finish (before the next, or before closing)."""
        writing = self._writing
        if writing is not None and writing is not threading.current_thread():
            writing.join()

    def rewrite_manifest(self, change: Callable[[Manifest], Manifest]) -> None:
        """Replace the manifest with ``change(manifest)``, durably, between snapshot listings."""
        with self._manifest_lock, opening(self.directory, "rewriting the manifest of"):
            manifest = read_manifest(self.directory)
            if manifest is None:
                manifest = Manifest(format_version=FORMAT_VERSION)
            write_manifest(self.directory, change(manifest))

    def _list(self, info: SnapshotInfo, first_seq: int) -> None:
        """Put ``info`` first in the manifest (durably), then delete what falls off.

        Kept: the newest ``KEEP_SNAPSHOTS``, and the oldest one the log continues from
        when the log no longer starts at seq 1 (the base of the history floor).
        """
        with self._manifest_lock:
            manifest = read_manifest(self.directory)
            if manifest is None:  # a bare log: the store writes one at open
                manifest = Manifest(format_version=FORMAT_VERSION)
            entry = ListedSnapshot(info.seq, info.path.name, info.bytes, info.items)
            every = [entry, *(old for old in manifest.snapshots if old.seq != info.seq)]
            every.sort(key=lambda listed: listed.seq, reverse=True)
            kept = every[:KEEP_SNAPSHOTS]
            bases = [old for old in every if old.seq + 1 >= first_seq]
            if first_seq > 1 and bases and bases[-1] not in kept:
                kept.append(bases[-1])
            dropped = [old for old in every if old not in kept]
            listed = msgspec.structs.replace(manifest, snapshots=tuple(kept))
            write_manifest(self.directory, listed)
            self.listed = listed.snapshots
            for old in dropped:  # unlisted durably first: safe to delete
                stale = self.directory / old.file
                if stale.exists():
                    _fileio.remove(stale)
            if dropped:
                _fileio.fsync_dir(self.directory)


class HistoryPolicy(msgspec.Struct, frozen=True):
    """When an actor snapshots itself and how much history its log keeps.

    Attributes:
        recovery_budget: Seconds a reopen may spend replaying after the newest snapshot;
            snapshots are taken automatically to stay within it (None: only on request).
        retention: Seconds of history to keep (None: all of it); segments wholly older
            than that and wholly below the newest snapshot are deleted. 0 keeps only what
            recovery needs.
        replay_rate: Records per second this log replays at (measured at open).
        recent_versions: Changes a key space keeps in memory for reads of the past.
    """

    recovery_budget: float | None = 1.0
    retention: float | None = None
    replay_rate: float = 300_000.0
    recent_versions: int = DEFAULT_RECENT_VERSIONS

    @property
    def records_per_snapshot(self) -> float:
        """Records after which the replay would exceed the budget (inf: never)."""
        if self.recovery_budget is None:
            return float("inf")
        return max(1.0, self.recovery_budget * self.replay_rate)


class CompactionReport(msgspec.Struct, frozen=True):
    """What applying the retention policy did.

    Attributes:
        segments_removed: Whole segments deleted.
        bytes_freed: Their size.
        floor: The first seq the log holds now.
    """

    segments_removed: int
    bytes_freed: int
    floor: int
