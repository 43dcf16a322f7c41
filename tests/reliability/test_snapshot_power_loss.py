"""Power loss at every step of a snapshot: the acknowledged state survives, whole.

A snapshot is written in the background, on its own thread (``actorkv-snapshot:NAME``):
``S.snap.tmp`` written and fsynced, renamed to ``S.snap``, the directory fsynced; then the
manifest is rewritten to list it (``MANIFEST.tmp``, fsync, rename, directory fsync), the
snapshot that falls off the list is deleted, and with ``retention=0`` the segments below it
go too. Each test below holds that thread at one of these steps, writes more while it is
held, cuts the power (:class:`~tests.storage.faults.DurabilityTracker` with ``root=``, which
undoes renames and creations no directory fsync made durable), and reopens. The key space
(or the custom counter) must then hold exactly what was acknowledged, values and versions
alike, recovered from the snapshot the manifest durably listed: the new one only once its
listing was durable, else the one before, never an empty or partial state.

After the power is cut nothing reaches the disk any more (:class:`Blackout`): the thread
runs on to its end, but its renames and new files are undone by the crash and its deletions
never happen, as on a machine that went dark at that instant.
"""

from __future__ import annotations

import errno
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

import pytest

from actors import Store
from storage import _fileio
from storage._format import MANIFEST_FILE, TMP_SUFFIX, parse_segment_name
from storage.manifest import read_manifest
from storage.snapshot import SNAPSHOT_SUFFIX, list_snapshots, snapshot_name
from tests.reliability import crash_history_workload as hw
from tests.reliability.conftest import TIMEOUT
from tests.storage.faults import DurabilityTracker, FaultInjector

if TYPE_CHECKING:  # Python 3.10 has no typing.Self
    from typing_extensions import Self

OPTIONS: dict[str, Any] = {"segment_bytes": 4096, "recovery_budget": None, "retention": 0}
"""Snapshots only when a test asks; every segment below a snapshot goes with it."""
PAD = "x" * 48  # bulk, so a phase of writes spans several segments
PHASE = 240  # writes between two snapshots: 3+ segments of 4096 bytes
GROUP = 16  # writes in flight at once: groups stay small, so segments roll at their size
WHILE_HELD = 12  # writes acknowledged while the snapshot thread is held


# -- the seam: hold the snapshot thread, then let nothing more reach the disk --------------


class Hold:
    """Stop the snapshot thread at the first call of one ``_fileio`` function that matches.

    ``after=False`` stops it before the call, ``after=True`` once the call returned. Other
    threads (writers) and other calls pass. :attr:`entered` is set when the thread stops;
    it goes on once :attr:`release` is set (a test that forgets fails after ``TIMEOUT``).
    """

    def __init__(
        self, operation: str, matches: Callable[..., bool], *, after: bool, thread: str
    ) -> None:
        self.operation, self.matches, self.after, self.thread = operation, matches, after, thread
        self.entered = threading.Event()
        self.release = threading.Event()
        self._original: Callable[..., Any] | None = None

    def _stop_here(self, *args: Any) -> bool:
        return (
            not self.entered.is_set()
            and threading.current_thread().name == self.thread
            and self.matches(*args)
        )

    def _wait(self) -> None:
        self.entered.set()
        if not self.release.wait(TIMEOUT):
            msg = "the test never released the snapshot thread"
            raise AssertionError(msg)

    def __enter__(self) -> Self:
        original = self._original = getattr(_fileio, self.operation)

        def held(*args: Any) -> Any:
            stop = self._stop_here(*args)
            if stop and not self.after:
                self._wait()
            result = original(*args)
            if stop and self.after:
                self._wait()
            return result

        setattr(_fileio, self.operation, held)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.release.set()
        setattr(_fileio, self.operation, self._original)


class Blackout:
    """After :meth:`cut`, deletions and truncations no longer happen (the power is off).

    The tracker already discards what is written, fsynced or renamed after its
    ``cut_power()``; a deletion, though, it keeps. Install inside the tracker.
    """

    def __init__(self, tracker: DurabilityTracker) -> None:
        self.tracker = tracker
        self.off = False
        self._saved: list[tuple[str, Any]] = []

    def cut(self) -> None:
        self.tracker.cut_power()
        self.off = True

    def __enter__(self) -> Self:
        for name in ("remove", "truncate"):
            original = getattr(_fileio, name)
            self._saved.append((name, original))

            def dark(*args: Any, _original: Callable[..., Any] = original) -> Any:
                return None if self.off else _original(*args)

            setattr(_fileio, name, dark)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        while self._saved:
            name, original = self._saved.pop()
            setattr(_fileio, name, original)


def fd_name(fd: int) -> str:
    return Path(f"/proc/self/fd/{fd}").readlink().name


# -- what is snapshotted: a key space, and a custom actor ----------------------------------


class KeySpaceLog:
    """A key space ``ks``; :attr:`model` is every key's ``(value, version)``."""

    name = "ks"

    def __init__(self) -> None:
        self.model: dict[str, tuple[Any, int]] = {}
        self.handle: Any = None

    def directory(self, store_path: Path) -> Path:
        return store_path / "keyspaces" / self.name

    def open(self, store: Store) -> None:
        self.handle = store.keyspace(self.name)

    def _put(self, key: str, value: Any) -> None:
        previous = self.model.get(key)
        self.model[key] = (value, 1 if previous is None else previous[1] + 1)

    def write(self, phase: int, count: int) -> None:
        """Overwrites and deletes of a few keys, pipelined, then one atomic batch."""
        ks, futures = self.handle, []
        for i in range(count):
            key = f"k{i % 7}"
            if i % 11 == 10:
                futures.append(ks.delete_async(key))
                self.model.pop(key, None)
            else:
                futures.append(ks.put_async(key, [phase, i, PAD]))
                self._put(key, [phase, i, PAD])
            if len(futures) == GROUP or i == count - 1:
                for future in futures:
                    future.get(timeout=TIMEOUT)
                futures.clear()
        with ks.batch() as batch:
            batch.put(f"a{phase}", phase)
            batch.put("b", phase)
            batch.delete("k0")
        self._put(f"a{phase}", phase)
        self._put("b", phase)
        self.model.pop("k0", None)

    def state(self) -> dict[str, tuple[Any, int]]:
        entries = {key: self.handle.get_entry(key) for key, _ in self.handle.range()}
        return {key: (entry.value, entry.version) for key, entry in entries.items()}

    def snapshot(self) -> Any:
        return self.handle.snapshot()


class CounterLog:
    """The crash workload's counter (its state needs ``snapshot_state``); :attr:`model` is
    each slot's ``(count, total, last index)``."""

    name = "counter"

    def __init__(self) -> None:
        self.model: dict[str, tuple[int, int, int]] = {}
        self.handle: Any = None

    def directory(self, store_path: Path) -> Path:
        return store_path / "actors" / self.name

    def open(self, store: Store) -> None:
        self.handle = store.spawn(self.name, hw.Counter)

    def write(self, phase: int, count: int) -> None:
        futures = []
        for i in range(count):
            slot, amount = f"s{i % 3}", phase * 1000 + i
            futures.append(self.handle.add(slot, i, amount))
            count_so_far, total, _ = self.model.get(slot, (0, 0, -1))
            self.model[slot] = (count_so_far + 1, total + amount, i)
            if len(futures) == GROUP or i == count - 1:
                for future in futures:
                    future.get(timeout=TIMEOUT)
                futures.clear()

    def state(self) -> dict[str, tuple[int, int, int]]:
        return self.handle.progress().get(timeout=TIMEOUT)

    def snapshot(self) -> Any:
        return self.handle.snapshot().get(timeout=TIMEOUT)


def segments(directory: Path) -> list[Path]:
    return sorted(p for p in directory.iterdir() if parse_segment_name(p.name) is not None)


def base(path: Path) -> int:
    seq = parse_segment_name(path.name)
    assert seq is not None
    return seq


# -- where the power is cut ----------------------------------------------------------------


@dataclass(frozen=True)
class Point:
    """A step of the snapshot at which the power goes.

    ``matcher(doomed)`` builds the predicate on the call's arguments, given the segments
    the snapshot's retention will delete; ``listed``: whether the new snapshot's listing
    was durable by then; ``floor(doomed, new_seq)``: the first seq the log holds after.
    """

    id: str
    operation: str
    matcher: Callable[[list[Path]], Callable[..., bool]]
    after: bool
    listed: bool
    floor: Callable[[list[Path], int], int] | None = None  # None: the previous floor
    under_log_lock: bool = False  # writers wait for the log while it is held


def _snap_tmp(fd: int) -> bool:
    return fd_name(fd).endswith(SNAPSHOT_SUFFIX + TMP_SUFFIX)


POINTS = [
    Point("snapshot written, not fsynced", "fsync", lambda _: _snap_tmp, after=False, listed=False),
    Point("snapshot fsynced, not renamed", "fsync", lambda _: _snap_tmp, after=True, listed=False),
    Point(
        "snapshot renamed, directory not fsynced",
        "rename",
        lambda _: lambda src, dst: dst.name.endswith(SNAPSHOT_SUFFIX),
        after=True,
        listed=False,
    ),
    Point(
        "snapshot durable, manifest not written",
        "create",
        lambda _: lambda path: path.name == MANIFEST_FILE + TMP_SUFFIX,
        after=False,
        listed=False,
    ),
    Point(
        "manifest written and fsynced, not renamed",
        "rename",
        lambda _: lambda src, dst: dst.name == MANIFEST_FILE,
        after=False,
        listed=False,
    ),
    Point(
        "manifest renamed, directory not fsynced",
        "rename",
        lambda _: lambda src, dst: dst.name == MANIFEST_FILE,
        after=True,
        listed=False,
    ),
    Point(
        "manifest durable, stale snapshot not deleted",
        "remove",
        lambda _: lambda path: path.name.endswith(SNAPSHOT_SUFFIX),
        after=False,
        listed=True,
    ),
    Point(
        "first segment deleted, the others not",
        "remove",
        lambda doomed: lambda path: path.name == doomed[0].name,
        after=True,
        listed=True,
        floor=lambda doomed, _: base(doomed[1]),
        under_log_lock=True,
    ),
    Point(
        "all segments but the last deleted",
        "remove",
        lambda doomed: lambda path: path.name == doomed[-1].name,
        after=False,
        listed=True,
        floor=lambda doomed, _: base(doomed[-1]),
        under_log_lock=True,
    ),
    Point(
        "segments deleted, directory not fsynced",
        "remove",
        lambda doomed: lambda path: path.name == doomed[-1].name,
        after=True,
        listed=True,
        floor=lambda _, seq: seq + 1,
        under_log_lock=True,
    ),
]


@pytest.mark.parametrize("point", POINTS, ids=[point.id for point in POINTS])
@pytest.mark.parametrize("subject", [KeySpaceLog, CounterLog], ids=["keyspace", "counter"])
def test_a_power_cut_at_any_step_of_a_snapshot_keeps_exactly_the_acknowledged_state(
    tmp_path: Path, subject: type[KeySpaceLog | CounterLog], point: Point
):
    path = tmp_path / "store"
    log = subject()
    directory = log.directory(path)
    with DurabilityTracker(root=tmp_path) as tracker, Blackout(tracker) as blackout:
        store = Store.open(path, **OPTIONS)
        log.open(store)
        log.write(1, PHASE)
        first = log.snapshot()
        log.write(2, PHASE)
        second = log.snapshot()  # two listed now: the next one pushes `first` off
        log.write(3, PHASE)
        doomed = segments(directory)  # the snapshot seals the active one: all of them go
        assert len(doomed) >= 3, "the phase should span several segments"
        new_seq = log.handle.last_seq
        taken: list[Any] = []
        with Hold(
            point.operation,
            point.matcher(doomed),
            after=point.after,
            thread=f"actorkv-snapshot:{log.name}",
        ) as hold:
            taking = threading.Thread(target=lambda: taken.append(log.snapshot()), daemon=True)
            taking.start()
            assert hold.entered.wait(TIMEOUT), f"the snapshot never reached: {point.id}"
            if not point.under_log_lock:
                log.write(4, WHILE_HELD)  # acknowledged while the snapshot is written
            blackout.cut()
            hold.release.set()
            taking.join(TIMEOUT)
            assert not taking.is_alive(), "the snapshot did not finish after its release"
        assert [info.seq for info in taken] == [new_seq]
        store.close()
        tracker.crash()

    with Store.open(path, **OPTIONS) as store:
        log.open(store)
        assert log.state() == log.model
        stats = log.handle.stats()
        recovered = new_seq if point.listed else second.seq
        assert stats.snapshot_seq == recovered
        assert stats.records_replayed == log.handle.last_seq - recovered
        floor = second.seq + 1 if point.floor is None else point.floor(doomed, new_seq)
        assert stats.history_floor == floor
        listed = [new_seq, second.seq] if point.listed else [second.seq, first.seq]
        manifest = read_manifest(directory)
        assert manifest is not None
        assert [entry.seq for entry in manifest.snapshots] == listed
        assert [path.name for _, path in list_snapshots(directory)] == [
            snapshot_name(seq) for seq in listed
        ]  # a snapshot that was not listed, or fell off the list, is gone
        assert not [p for p in directory.iterdir() if p.name.endswith(TMP_SUFFIX)]
        log.write(5, WHILE_HELD)  # versions and seqs go on from the acknowledged state
        assert log.state() == log.model
    with Store.open(path, **OPTIONS) as store:
        log.open(store)
        assert log.state() == log.model


# -- a segment deletion that fails ---------------------------------------------------------


def test_a_segment_deletion_that_fails_after_a_snapshot_still_answers_the_snapshot(tmp_path):
    log = KeySpaceLog()
    path = tmp_path / "store"
    directory = log.directory(path)
    with Store.open(path, **OPTIONS) as store:
        log.open(store)
        log.write(1, PHASE)
        doomed = segments(directory)
        assert len(doomed) >= 3
        new_seq = log.handle.last_seq
        taken: list[Any] = []
        with FaultInjector("remove", 2, errno.EIO) as fault:
            taking = threading.Thread(target=lambda: taken.append(log.snapshot()), daemon=True)
            taking.start()
            taking.join(TIMEOUT)
            assert fault.injected == 1
        assert not taking.is_alive(), "snapshot() never returned after a failed deletion"
        assert [info.seq for info in taken] == [new_seq]  # the snapshot itself is durable
        stats = log.handle.stats()
        assert (stats.snapshot_seq, stats.history_floor) == (new_seq, base(doomed[1]))
        report = log.handle.compact()  # the disk works again: retention catches up
        assert (report.segments_removed, report.floor) == (len(doomed) - 1, new_seq + 1)
        log.write(2, WHILE_HELD)
    with Store.open(path, **OPTIONS) as store:
        log.open(store)
        assert log.state() == log.model
        assert log.handle.stats().snapshot_seq == new_seq
