"""Reading a key space's past: views as of a seq or time, per-key history, the floor.

Recent points are read from the versions the state keeps in memory
(``storage/kv_versions.py``): a view of them costs what a plain read costs. Older points,
down to the *history floor*, are rebuilt: the newest snapshot at or below the point (or the
empty state, when the log still starts at seq 1) plus a replay of the records after it, up
to the point. That takes what an open takes (the snapshot's load and up to a recovery
budget of replay) and is done once per view.

The floor is the first seq whose state can be rebuilt: one past the oldest *base* (a listed
snapshot the log continues from, or seq 0 when it starts at seq 1). Retention moves it up;
nothing at or above it is ever unreadable.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol

import msgspec

from actors._core import decode_chunk
from storage.codec import Batch, Delete, Expired, KVEvent, Put
from storage.errors import CorruptLog, HistoryUnavailable, InvalidInput
from storage.kv_snapshot import load_state
from storage.kv_versions import Tombstone
from storage.kvstate import Entry, KVState

if TYPE_CHECKING:
    from actors._core import ActorCore
    from actors._events import EventCodec
    from storage._framing import TimedRecord
    from storage.manifest import ListedSnapshot

__all__ = [
    "Version",
    "bases",
    "entries_as_of",
    "history_floor",
    "key_history",
    "logged_history",
    "state_as_of",
]

Op = Literal["put", "delete", "expire"]


class HistoryLog(Protocol):
    """What reading the past needs of a log: a writer's ``SegmentedLog`` or a ``LogReader``."""

    @property
    def directory(self) -> Path: ...

    @property
    def first_seq(self) -> int: ...

    def read_timed_chunks(self, from_seq: int = 1) -> Iterator[list[TimedRecord]]: ...

    def time_of(self, seq: int) -> float: ...


class ListedSnapshots(Protocol):
    """The snapshots a state may be rebuilt from, and where their files are."""

    @property
    def directory(self) -> Path: ...

    @property
    def listed(self) -> tuple[ListedSnapshot, ...]: ...


class HistorySource(Protocol):
    """A log with its snapshots and codec: a running actor's core, or a read-only one."""

    @property
    def name(self) -> str: ...

    @property
    def log(self) -> HistoryLog: ...

    @property
    def codec(self) -> EventCodec: ...

    @property
    def snapshots(self) -> ListedSnapshots | None: ...


class Version(msgspec.Struct, frozen=True):
    """One change of a key, as :meth:`KeySpace.history` returns it.

    Attributes:
        seq: The record that made it.
        time: Its commit time (seconds since the epoch; 0.0 for records of format 1).
        op: ``"put"``, ``"delete"`` or ``"expire"`` (removed by its TTL).
        value: The value written (None unless a put).
        version: The key's version after it (0 after a removal).
        expires_at: The expiry time the put set, or None.
    """

    seq: int
    time: float
    op: Op
    value: Any
    version: int
    expires_at: float | None = None


def bases(core: HistorySource) -> list[tuple[int, Path | None]]:
    """Points a state can be rebuilt from, oldest first: ``(seq, snapshot path or None)``."""
    first = core.log.first_seq
    found: list[tuple[int, Path | None]] = [(0, None)] if first <= 1 else []
    snapshots = core.snapshots
    if snapshots is not None:
        found += [
            (listed.seq, snapshots.directory / listed.file)
            for listed in snapshots.listed
            if listed.seq + 1 >= first
        ]
    return sorted(found, key=lambda base: base[0])


def history_floor(core: HistorySource) -> int:
    """The first seq whose state can be read (see the module notes)."""
    found = bases(core)
    return found[0][0] + 1 if found else core.log.first_seq


def state_as_of(core: HistorySource, name: str, seq: int, like: KVState) -> KVState:
    """A fresh state as of record ``seq``: a snapshot at or below it, then a replay.

    Raises:
        HistoryUnavailable: ``seq`` is below the history floor (also when retention
            dropped what it needed while this ran).
        CorruptLog: A record in the range is damaged or does not decode.
    """
    candidates = [base for base in bases(core) if base[0] <= seq]
    while candidates:
        base_seq, path = candidates.pop()
        try:
            if path is None:
                state = KVState(like.clock, decode_scalars=like.decode_scalars)
            else:
                state, _ = load_state(path, like.clock, decode_scalars=like.decode_scalars)
            return _replay_into(core, state, base_seq, seq)
        except (FileNotFoundError, HistoryUnavailable):
            continue  # retention moved on meanwhile: an older base will not do either
        except CorruptLog:
            if path is None or not candidates:
                raise
    raise HistoryUnavailable(name, seq, history_floor(core))


def entries_as_of(core: ActorCore, name: str, state: KVState, seq: int) -> list[tuple[Any, Entry]]:
    """Every stored ``(key, entry)`` as of ``seq``, expired or not, in key order.

    From the kept versions if they reach back to ``seq`` (a pinned, chunked scan), else
    from a rebuilt state.
    """
    source = state
    pin = state.pin_at(seq)
    if pin is None:
        source = state_as_of(core, name, seq, state)
        pin = source.pin_at(seq)
        assert pin is not None
    return list(source.scan_at(pin, None, None, -math.inf))


def _replay_into(core: HistorySource, state: KVState, base_seq: int, seq: int) -> KVState:
    codec = core.codec
    for chunk in _records(core, base_seq + 1, seq):
        seqs = [record[0] for record in chunk]
        decoded = decode_chunk(core.log, codec, seqs, [record[2] for record in chunk])
        state.apply_records(zip(seqs, decoded, strict=True))
    state.commit(0, seq)
    return state


def _records(
    core: HistorySource, first: int, last: int
) -> Iterator[list[tuple[int, float, bytes]]]:
    """Records ``first..last`` with their commit times, in chunks.

    Raises:
        HistoryUnavailable: The log no longer holds ``first`` (retention dropped it).
    """
    if first > last:
        return
    log = core.log
    if first < log.first_seq:
        raise HistoryUnavailable(core.name, first, history_floor(core))
    for chunk in log.read_timed_chunks(first):
        if chunk[-1][0] > last:
            wanted = [record for record in chunk if record[0] <= last]
            if wanted:
                yield wanted
            return
        yield chunk


def key_history(
    core: ActorCore, state: KVState, key: Any, decode: Any, limit: int | None
) -> list[Version]:
    """Every retained change of ``key``, oldest first (the newest ``limit`` if given)."""
    floor = history_floor(core)
    with state.lock:
        horizon = state.versions.horizon
        recent = state.versions.changes_of(key)
    older: list[Version] = []
    if horizon >= floor:  # the changes from the floor to the horizon are the log's
        older = logged_history(core, state, key, decode, floor, horizon)
    versions = [version for version in older if version.seq >= floor]
    versions += [_version(core, state, change, decode) for change in recent if change.seq >= floor]
    if limit is None:
        return versions
    return versions[max(0, len(versions) - limit) :] if limit else []


def logged_history(
    core: HistorySource, state: KVState, key: Any, decode: Any, floor: int, last: int
) -> list[Version]:
    """``key``'s changes in records ``floor..last``, read from the base and the log."""
    base = state_as_of(core, core.name, floor - 1, state)
    entry = base.entries.get(key)
    version = 0 if entry is None else entry.version
    needle = msgspec.msgpack.encode(key)  # a record that changes the key holds its encoding
    found: list[Version] = []
    codec = core.codec
    for chunk in _records(core, floor, last):
        for seq, time, payload in chunk:
            if needle not in payload:
                continue
            for event in codec.decode(payload):
                version = _fold(event, key, seq, time, version, decode, found)
    return found


def _fold(
    event: KVEvent, key: Any, seq: int, time: float, version: int, decode: Any, out: list[Version]
) -> int:
    """Append ``event``'s changes of ``key`` to ``out``; returns the key's version after."""
    match event:
        case Put(key=k, value=value, expires_at=expires_at) if k == key:
            version += 1
            out.append(Version(seq, time, "put", decode(bytes(value)), version, expires_at))
        case Delete(key=k) if k == key:
            version = 0
            out.append(Version(seq, time, "delete", None, 0))
        case Expired(keys=keys) if key in keys:
            version = 0
            out.append(Version(seq, time, "expire", None, 0))
        case Batch(events=events):
            for inner in events:
                version = _fold(inner, key, seq, time, version, decode, out)
    return version


def _version(core: ActorCore, state: KVState, change: Entry | Tombstone, decode: Any) -> Version:
    time = record_time(core, state, change.seq)
    if type(change) is Tombstone:
        return Version(change.seq, time, "expire" if change.expired else "delete", None, 0)
    assert isinstance(change, Entry)
    value = change.value if change.decoded else decode(change.value)
    return Version(change.seq, time, "put", value, change.version, change.expires_at)


def record_time(core: ActorCore, state: KVState, seq: int) -> float:
    """The commit time of record ``seq`` (memory first, then the log)."""
    with state.lock:
        time = state.versions.time_of(seq)
    if time is not None:
        return time
    return core.log.time_of(seq)


def seq_at(core: ActorCore, state: KVState, time: float) -> int:
    """The last record committed at or before ``time`` (0 if none, from seq 1).

    Raises:
        HistoryUnavailable: ``time`` is before the oldest retained record (and the log no
            longer starts at seq 1, so what came before is not known).
    """
    with state.lock:
        seq = state.versions.seq_at(time)
    if seq is not None:
        return seq
    return core.log.seq_at(time)


def check_seq(name: str, seq: object, last: int) -> int:
    """``seq`` as a point to read at, checked against the newest committed record."""
    if isinstance(seq, bool) or not isinstance(seq, int) or seq < 0:
        msg = f"seq must be an int >= 0, got {seq!r:.40}"
        raise InvalidInput(msg)
    if seq > last:
        msg = f"{name}: seq {seq} is after the last committed record {last}"
        raise InvalidInput(msg)
    return seq
