"""Starting an actor of a store: its log, manifest, snapshots, replay and core."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, TypeVar

import msgspec

from actors._actor import EventSourcedActor, command_names
from actors._core import ActorCore, Counters, ReplayProgress, decode_chunk, replay
from actors._events import EventCodec, Operation, event_codec_for
from actors._handle import HANDLE_NAMES, ActorHandle
from actors._keyspace_actor import KeySpaceActor
from actors._operations import WINDOW_RECORDS, OperationWindow
from actors._snapshots import HistoryPolicy, KeySpaceSnapshots, Snapshots, StateSnapshots
from actors._store_checks import check_manifest, check_replayed_key_type, replay_rate
from actors.runtimes import PykkaRuntime
from storage import LogOptions, SegmentedLog
from storage._format import FORMAT_VERSION
from storage.errors import opening
from storage.manifest import Manifest, write_manifest
from storage.positions import Positions

__all__ = ["start_actor"]

A = TypeVar("A", bound=EventSourcedActor[Any])


def start_actor(
    directory: Path,
    actor_class: type[A],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    manifest: Manifest,
    history: HistoryPolicy,
    *,
    options: LogOptions,
    runtime: PykkaRuntime,
    progress: ReplayProgress | None,
    retried: bool = False,
) -> tuple[ActorHandle[A], A]:
    """Open the actor's log, recover it (snapshot, then replay) and start its core.

    With ``retried`` (its callers may retry a command: a remote runtime) the core keeps an
    operation window (``actors._operations``), rebuilt from the log here.

    Raises:
    TypeError: Commands named like handle members. CorruptLog, OpenFailed, InvalidOption:
        from the log, its manifest or its snapshots (the log is closed again).
    """
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
    log = SegmentedLog.open(
        directory,
        segment_bytes=options.segment_bytes,
        fsync=options.fsync,
        fsync_interval=options.fsync_interval,
        clock=options.clock,
        chain_key=options.chain_key,
    )
    counters = Counters()
    name = directory.name
    try:
        stored = check_manifest(log, manifest)
        snapshot_codec = (
            KeySpaceSnapshots() if isinstance(actor, KeySpaceActor) else StateSnapshots(actor_class)
        )
        snapshots = Snapshots(directory, snapshot_codec)
        if isinstance(actor, KeySpaceActor):
            actor.keep_replayed_versions(log.last_seq)
        opened = time.perf_counter()
        recovered = snapshots.recover(actor, log.first_seq, log.last_seq)
        started = time.perf_counter()
        found: dict[bytes, Operation] | None = {} if retried else None
        replay(name, actor, log, codec, counters, progress, snapshot=recovered, operations=found)
        replayed = time.perf_counter()
        rate = replay_rate(counters.records_replayed, replayed - started)
        counters.replay_seconds = replayed - opened  # the snapshot's load and the replay
        if stored is None:  # new, or written before manifests: record it now
            if manifest.key_type is not None and isinstance(actor, KeySpaceActor):
                check_replayed_key_type(name, actor, manifest.key_type)
            with opening(directory, "writing the manifest of"):
                write_manifest(directory, manifest)
        elif stored.format_version < FORMAT_VERSION or (
            manifest.actor_class is not None and stored.actor_class != manifest.actor_class
        ):  # the log continues in this format, or under the class spawning it now
            upgraded = msgspec.structs.replace(
                stored,
                format_version=FORMAT_VERSION,
                actor_class=manifest.actor_class or stored.actor_class,
            )
            with opening(directory, "upgrading the manifest of"):
                write_manifest(directory, upgraded)
        core = ActorCore(
            name,
            actor,
            log,
            codec,
            counters,
            runtime.future_type,
            snapshots=snapshots,
            policy=msgspec.structs.replace(history, replay_rate=rate),
            since_snapshot=counters.records_replayed,
        )
        if found is not None:
            if recovered is not None:
                _ids_before(log, codec, recovered[1], found)
            core.operations = OperationWindow(actor_class)
            core.operations.recovered(found)
        positions = core.positions = Positions(directory)
        core.holds["named subscriptions"] = lambda: positions.lowest_needed() or 2**63
        runtime.start(core)
    except BaseException:
        log.close()
        raise
    return ActorHandle(name, actor_class, core, commands), actor


def _ids_before(
    log: SegmentedLog, codec: EventCodec, seq: int, found: dict[bytes, Operation]
) -> None:
    """Note the operation ids of the window's worth of records up to ``seq`` (a snapshot's)."""
    start = max(log.first_seq, seq - WINDOW_RECORDS + 1)
    for chunk in log.read_chunks(start):
        records = [record for record in chunk if record[0] <= seq]
        if records:
            seqs, payloads = [s for s, _ in records], [p for _, p in records]
            decode_chunk(log, codec, seqs, payloads, found)
        if len(records) < len(chunk):
            break
