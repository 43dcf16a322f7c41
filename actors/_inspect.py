"""Reading a store's directory without opening it: what the ``actorkv`` command line shows.

Everything here is read-only: no lock is taken, no torn tail cut, no file created or
removed, so it works while another process has the store open for writing. It reads up to
the last complete record (a record being written is left out, and reported as a torn
tail). A key space's state at a point is rebuilt as a reopen would: the newest listed
snapshot at or below the point, then a replay of the records after it (``actors._history``
does the rebuilding; :class:`ReadOnlyLog` gives it a ``LogReader`` in place of a writer's
log).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import msgspec

from actors._events import OPERATION_EXT, EventCodec, event_codec_for
from actors._history import Version, bases, history_floor, logged_history, state_as_of
from actors._keyspace_actor import KeySpaceActor
from actors._names import ACTORS_DIR, KEYSPACES_DIR
from storage import tuplekey
from storage.errors import HistoryUnavailable, InvalidInput, NotALog
from storage.kvstate import Entry, KVState
from storage.manifest import ListedSnapshot
from storage.positions import read_positions
from storage.reader import LogReader

__all__ = ["LogInfo", "ReadOnlyLog", "find_logs", "log_info", "parse_point"]

KINDS = {KEYSPACES_DIR: "keyspace", ACTORS_DIR: "actor"}


@dataclass(frozen=True, slots=True)
class LogInfo:
    """What one key space's or actor's log holds (``actorkv inspect``)."""

    kind: str
    name: str
    directory: str
    first_seq: int
    last_seq: int
    records: int
    bytes: int
    segments: int
    snapshots: list[int]
    history_floor: int
    chain_head: str
    last_time: float
    torn_tail: str | None
    damage: str | None
    subscribers: dict[str, int] = field(default_factory=dict)
    key_type: str | None = None
    actor_class: str | None = None
    indexes: list[str] = field(default_factory=list)
    archived_seq: int | None = None


class _Snapshots:
    def __init__(self, directory: Path, listed: tuple[ListedSnapshot, ...]) -> None:
        self.directory = directory
        self.listed = listed


class ReadOnlyLog:
    """One log of a store, read without opening it; a ``HistorySource`` for the past."""

    def __init__(self, store: Path, kind: str, name: str) -> None:
        folder = KEYSPACES_DIR if kind == "keyspace" else ACTORS_DIR
        self.kind = kind
        self.name = name
        self.path = store / folder / name
        try:
            self.log = LogReader.open(self.path)
        except NotALog as exc:
            what = "key space" if kind == "keyspace" else "actor"
            known = [found for of, found, _ in find_logs(store) if of == kind]
            msg = f"{store} has no {what} {name!r} (there: {', '.join(known) or 'none'}): {exc}"
            raise InvalidInput(msg) from None
        self.manifest = self.log.manifest
        listed = self.manifest.snapshots if self.manifest is not None else ()
        self.snapshots = _Snapshots(self.path, listed)
        self.key_type = self.manifest.key_type if self.manifest is not None else None
        self.codec: EventCodec = _KEYSPACE_CODEC  # a key space's; an actor's are read untyped
        self._decode = self.codec.decode if kind == "keyspace" else _decode_untyped

    # -- a key space's state --------------------------------------------------------------

    def state(self, seq: int | None = None) -> KVState:
        """The key space's state as of ``seq`` (None: the last complete record)."""
        self._check_keyspace()
        point = self.log.last_seq if seq is None else self.check_seq(seq)
        like = KVState(time.time)
        return state_as_of(self, self.name, point, like)

    def entries(self, state: KVState, now: float) -> Iterator[tuple[Any, Any, Entry]]:
        """``(key, value, entry)`` of every live key of ``state`` at ``now``, in key order."""
        pin = state.pin_at(state.seq)
        assert pin is not None  # a state pins its own point
        for key, entry in state.scan_at(pin, None, None, now):
            yield self.public_key(key), _value(entry), entry

    def history(self, key: Any) -> list[Version]:
        """Every retained change of ``key``, oldest first."""
        self._check_keyspace()
        like = KVState(time.time)
        floor = history_floor(self)
        stored = self.stored_key(key)
        return logged_history(self, like, stored, msgspec.msgpack.decode, floor, self.log.last_seq)

    def check_seq(self, seq: int) -> int:
        if not 0 <= seq <= self.log.last_seq:
            msg = f"{self.name}: seq {seq} is not in 0..{self.log.last_seq} (the last record)"
            raise InvalidInput(msg)
        floor = history_floor(self)
        if seq < floor - 1 and not any(base == seq for base, _ in bases(self)):
            raise HistoryUnavailable(self.name, seq, floor)
        return seq

    def stored_key(self, key: Any) -> Any:
        return tuplekey.pack(key) if self.key_type == "tuple" else key

    def public_key(self, key: Any) -> Any:
        return tuplekey.unpack(key) if self.key_type == "tuple" else key

    def _check_keyspace(self) -> None:
        if self.kind != "keyspace":
            msg = f"{self.name!r} is an actor's log: only key spaces have keys to read"
            raise InvalidInput(msg)

    # -- records ----------------------------------------------------------------------------

    def events(self, first: int, last: int | None = None) -> Iterator[tuple[int, float, list[Any]]]:
        """``(seq, commit time, events)`` of the records ``first..last`` (None: to the end)."""
        end = self.log.last_seq if last is None else min(last, self.log.last_seq)
        if first < self.log.first_seq and first <= end:
            raise HistoryUnavailable(self.name, first, self.log.first_seq)
        for chunk in self.log.read_timed_chunks(max(first, 1)):
            for seq, when, payload in chunk:
                if seq > end:
                    return
                yield seq, when, self._decode(payload)


def find_logs(store: Path) -> list[tuple[str, str, Path]]:
    """``(kind, name, path)`` of every key space and actor log of the store, by kind and name.

    Raises:
        InvalidInput: ``store`` is not a store's directory.
    """
    if not store.is_dir():
        msg = f"{store} is not a directory; give a store's directory (where Store.open wrote)"
        raise InvalidInput(msg)
    found = [
        (kind, path.name, path)
        for folder, kind in KINDS.items()
        if (store / folder).is_dir()
        for path in sorted((store / folder).iterdir())
        if path.is_dir() and not path.name.startswith(".")  # not a fork or drop in progress
    ]
    if not found and not (store / "LOCK").exists():
        msg = f"{store} holds no key spaces or actors: is it a store's directory?"
        raise InvalidInput(msg)
    return found


def log_info(log: ReadOnlyLog, archived: int | None = None) -> LogInfo:
    """What ``log`` holds (read only); ``archived``: the last seq an archive holds of it."""
    reader, manifest = log.log, log.manifest
    size = sum(entry.stat().st_size for entry in log.path.iterdir() if entry.is_file())
    torn = reader.torn_tail
    return LogInfo(
        kind=log.kind,
        name=log.name,
        directory=str(log.path),
        first_seq=reader.first_seq,
        last_seq=reader.last_seq,
        records=max(0, reader.last_seq - reader.first_seq + 1),
        bytes=size,
        segments=len(reader.segments),
        snapshots=[snapshot.seq for snapshot in log.snapshots.listed],
        history_floor=history_floor(log),
        chain_head=reader.head.hex(),
        last_time=reader.last_time,
        torn_tail=None if torn is None else f"{torn.segment.name} at {torn.offset}: {torn.reason}",
        damage=None if reader.damage is None else str(reader.damage),
        subscribers=read_positions(log.path),
        key_type=log.key_type,
        actor_class=manifest.actor_class if manifest is not None else None,
        indexes=[index.name for index in manifest.indexes] if manifest is not None else [],
        archived_seq=archived,
    )


def parse_point(text: str) -> tuple[int | None, float | None]:
    """``SEQ`` or ``TIME`` as the command line takes them: ``(seq, None)`` or ``(None, time)``.

    A plain integer is a seq; a number with a decimal point is seconds since the epoch; an
    ISO 8601 date and time (``2026-12-03T10:00:00``, UTC unless it names a zone) is a time.
    """
    text = text.strip()
    if text.isdigit():
        return int(text), None
    try:
        return None, float(text)
    except ValueError:
        pass
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        msg = (
            f"{text!r} is neither a seq (an integer), seconds since the epoch (1764756000.5) "
            "nor an ISO 8601 time (2026-12-03T10:00:00, UTC unless a zone is given)"
        )
        raise InvalidInput(msg) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return None, moment.timestamp()


def _value(entry: Entry) -> Any:
    return entry.value if entry.decoded else msgspec.msgpack.decode(entry.value)


def _decode_untyped(payload: bytes) -> list[Any]:
    """An actor's record without its classes: events as plain maps and lists."""
    events: list[Any] = msgspec.msgpack.decode(payload)
    last = events[-1] if events else None
    if isinstance(last, msgspec.msgpack.Ext) and last.code == OPERATION_EXT:
        events = events[:-1]  # the operation id of a retried command
    return events


_KEYSPACE_CODEC = event_codec_for(KeySpaceActor)
