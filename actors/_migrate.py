"""``store.migrate(name)``: rewrite an actor's log through its upcasters, offline.

Old records are read through the actor's ``upcasters`` (``actors/_upcasting.py``) and
written again with the current event types into a new log with the same seqs and commit
times; a record whose events were all retired stays, empty, so that every seq still means
what it meant. The new log is written whole under a temporary name, renamed to
``.migrated-NAME-...`` once complete (every file and the directory fsynced), then the old
log is renamed to ``.premigrate-NAME-...`` (the backup, kept) and the new one into place.
A crash at any point leaves the old log in place, or the complete new one, never a mix: the
next open of the store finishes a complete migration and deletes an incomplete one.

What changes: the hash chain (the bytes are new: anchors of the old log no longer verify
against it, and an archive must take it under a new prefix), snapshots (none are carried
over: the next open replays the new log and takes them again), and operation ids (dropped:
there is no retried call in flight to an actor that is not running).
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec

from actors._actor import EventSourcedActor, import_actor_class
from actors._core import decode_chunk
from actors._events import EventCodec, event_codec_for
from actors._names import ACTORS_DIR, KEYSPACES_DIR
from storage import DirectoryLock, SegmentedLog, _fileio
from storage.errors import InvalidInput, InvalidOperation, opening
from storage.manifest import read_manifest, write_manifest
from storage.positions import POSITIONS_DIR
from storage.reader import LogReader

__all__ = [
    "MIGRATED_PREFIX",
    "MigrationReport",
    "finish_migrations",
    "migrate_actor",
    "migrate_log",
]

MIGRATING_PREFIX = ".migrating-"  # being written: deleted by the next open
MIGRATED_PREFIX = ".migrated-"  # complete: put in place by the next open if a crash came
BACKUP_PREFIX = ".premigrate-"  # the old log, kept


@dataclass(frozen=True, slots=True)
class MigrationReport:
    """What a migration did.

    Attributes:
        records: Records rewritten (every record of the log, the same seqs).
        upcast: Records that held at least one old event.
        emptied: Records whose events were all retired (kept, empty).
        backup: Where the old log is now.
    """

    records: int
    upcast: int
    emptied: int
    backup: Path


def migrate_actor(
    store: Path,
    name: str,
    actor_class: type[EventSourcedActor[Any]] | None,
    chain_key: bytes | None,
) -> MigrationReport:
    """``store.migrate(name)`` once the store has checked the actor is not running.

    Raises:
        InvalidOperation: ``name`` is a key space (``value_upcaster`` converts its values
            on read), or see :func:`migrate_log`. InvalidInput: No such actor, or its class
            cannot be imported.
    """
    directory = store / ACTORS_DIR / name
    if not directory.is_dir():
        if (store / KEYSPACES_DIR / name).is_dir():
            msg = (
                f"{name!r} is a key space: its values are converted on read by "
                "value_upcaster=; migrate rewrites an actor's events"
            )
            raise InvalidOperation(msg)
        msg = f"the store has no actor {name!r}"
        raise InvalidInput(msg)
    if actor_class is None:
        stored = read_manifest(directory)
        recorded = stored.actor_class if stored is not None else None
        if not recorded:
            msg = f"actor {name!r}: its manifest names no class; pass actor_class"
            raise InvalidInput(msg)
        actor_class = import_actor_class(recorded, name)
    lock = DirectoryLock.acquire(directory)  # nothing else opens the log meanwhile
    try:
        return migrate_log(directory, actor_class, chain_key=chain_key)
    finally:
        lock.release()


def migrate_log(directory: Path, actor_class: type, *, chain_key: bytes | None) -> MigrationReport:
    """Rewrite the log in ``directory`` through ``actor_class``'s upcasters.

    Raises:
        InvalidOperation: The log no longer starts at seq 1 (every record is needed), or
            the class has no upcasters. CorruptLog, ReplayFailed: A record cannot be read
            through them (nothing is changed).
        OpenFailed: A file could not be written (nothing is changed).
    """
    codec = event_codec_for(actor_class)
    if codec.upcasting is None:
        msg = f"{actor_class.__name__} has no upcasters: its log has nothing to migrate"
        raise InvalidOperation(msg)
    reader = LogReader.open(directory)
    if reader.first_seq > 1:
        msg = (
            f"{directory}: the log starts at seq {reader.first_seq}; a migration rewrites "
            "every record: restore the whole log (from the archive) first"
        )
        raise InvalidOperation(msg)
    stamp = f"{directory.name}-{os.getpid()}-{time.monotonic_ns()}"
    tmp = directory.with_name(MIGRATING_PREFIX + stamp)
    counts = [0, 0, 0]
    try:
        with opening(tmp, "writing the migrated log in"):
            _write(reader, codec, tmp, chain_key, counts)
            _carry_over(directory, tmp)
            complete = directory.with_name(MIGRATED_PREFIX + stamp)
            _fileio.rename(tmp, complete)
            _fileio.fsync_dir(directory.parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    backup = _put_in_place(complete, directory)
    return MigrationReport(counts[0], counts[1], counts[2], backup)


def _write(
    reader: LogReader, codec: EventCodec, tmp: Path, chain_key: bytes | None, counts: list[int]
) -> None:
    when = [reader.time_of(1) if reader.last_seq else time.time()]  # the clock appends read
    log = SegmentedLog.open(tmp, fsync="never", clock=lambda: when[0], chain_key=chain_key)
    try:
        for group, committed in _groups(reader, codec, counts):
            when[0] = committed  # each record keeps its commit time
            log.append_batch(group)
        log.sync()
    finally:
        log.close()


def _groups(
    reader: LogReader, codec: EventCodec, counts: list[int]
) -> Iterator[tuple[list[bytes], float]]:
    """Runs of re-encoded records that share a commit time (one append each)."""
    for chunk in reader.read_timed_chunks(1):
        seqs = [seq for seq, _, _ in chunk]
        payloads = [payload for _, _, payload in chunk]
        decoded = decode_chunk(reader, codec, seqs, payloads)
        counts[1] += sum(1 for payload in payloads if not _is_current(codec, payload))
        group: list[bytes] = []
        when = chunk[0][1]
        for (_, record_time, _), events in zip(chunk, decoded, strict=True):
            if record_time != when and group:
                yield group, when
                group, when = [], record_time
            kept = [event for event in events if not isinstance(event, msgspec.msgpack.Ext)]
            counts[2] += not kept
            group.append(codec.join([codec.encode_one(event) for event in kept]))
            counts[0] += 1
        if group:
            yield group, when


def _is_current(codec: EventCodec, payload: bytes) -> bool:
    """Whether the record decodes with the current types alone (no upcaster needed)."""
    try:
        codec.decoder.decode(payload)
    except msgspec.DecodeError:
        return False
    return True


def _carry_over(directory: Path, tmp: Path) -> None:
    """The manifest (without snapshots: none are carried) and the named positions."""
    manifest = read_manifest(directory)
    if manifest is not None:
        write_manifest(tmp, msgspec.structs.replace(manifest, snapshots=()))
    positions = directory / POSITIONS_DIR
    if positions.is_dir():
        _fileio.make_dirs(tmp / POSITIONS_DIR)
        for path in sorted(positions.glob("*.pos")):
            _fileio.write_file(tmp / POSITIONS_DIR / path.name, path.read_bytes())
        _fileio.fsync_dir(tmp / POSITIONS_DIR)
    _fileio.fsync_dir(tmp)


def _put_in_place(complete: Path, directory: Path) -> Path:
    """Old log -> backup, complete new log -> its name; each rename made durable."""
    backup = directory.with_name(BACKUP_PREFIX + complete.name[len(MIGRATED_PREFIX) :])
    with opening(directory, "putting the migrated log in place of"):
        if directory.exists():
            _fileio.rename(directory, backup)
            _fileio.fsync_dir(directory.parent)
        _fileio.rename(complete, directory)
        _fileio.fsync_dir(directory.parent)
    return backup


def finish_migrations(folder: Path) -> None:
    """At open: put complete migrations a crash interrupted in place; delete incomplete ones."""
    if not folder.is_dir():
        return
    for leftover in sorted(folder.glob(f"{MIGRATING_PREFIX}*")):
        shutil.rmtree(leftover)
        _fileio.fsync_dir(folder)
    for complete in sorted(folder.glob(f"{MIGRATED_PREFIX}*")):
        name = complete.name[len(MIGRATED_PREFIX) :].rsplit("-", 2)[0]
        _put_in_place(complete, folder / name)
