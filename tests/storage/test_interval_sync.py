"""The ``fsync="interval"`` syncer: never dies quietly, never fails silently, and its window.

The background syncer fsyncs the log's own descriptor (it duplicates nothing, so a shortage
of descriptors cannot stop it); a roll while it is inside its fsync hands it the old
descriptor to close. A failed background fsync makes the log refuse writes, as a foreground
one does, and shows in the actor's ``stats().failed``. Each background fsync covers every
append that returned before it began (``docs/architecture.md``, "Durability"): the tests
prove that from what the fsyncs made durable, not from timing.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from actors import ActorStats, Store, WriteFailed
from storage import SegmentedLog, _fileio
from tests.actors.conftest import TIMEOUT, ProbeCounter
from tests.keyspace.conftest import wait_until
from tests.storage.faults import DurabilityTracker, FaultInjector
from tests.storage.helpers import newest_segment, payload, segment_paths

INTERVAL = 0.005  # seconds between background fsyncs: many ticks per test, never a deadline
ROLLING = 1000  # payload bytes: 1060 on disk, so three fill a 4096-byte segment


def open_fds() -> set[str]:
    return {entry.name for entry in Path("/proc/self/fd").iterdir()}


@contextlib.contextmanager
def descriptor_shortage() -> Iterator[list[str]]:
    """Make every new descriptor outside the test's thread fail with EMFILE, for a moment.

    Yields the list of refused calls (their names); the shortage ends with the block.
    """
    test_thread = threading.current_thread()
    refused: list[str] = []
    saved = {name: getattr(os, name) for name in ("dup", "dup2", "open")}

    def short(name: str) -> Callable[..., Any]:
        def refuse(*args: Any, **kwargs: Any) -> Any:
            if threading.current_thread() is test_thread:
                return saved[name](*args, **kwargs)
            refused.append(name)
            raise OSError(errno.EMFILE, os.strerror(errno.EMFILE))

        return refuse

    for name in saved:
        setattr(os, name, short(name))
    try:
        yield refused
    finally:
        for name, original in saved.items():
            setattr(os, name, original)


@contextlib.contextmanager
def fsync_replaced_by(make: Callable[[Callable[[int], None]], Callable[[int], None]]):
    """Wrap whatever ``_fileio.fsync`` is now (a tracker's, say); restore it on exit."""
    inner = _fileio.fsync
    _fileio.fsync = make(inner)
    try:
        yield
    finally:
        _fileio.fsync = inner


def test_a_moment_without_file_descriptors_does_not_stop_the_background_fsyncs(tmp_path):
    with (
        DurabilityTracker() as tracker,
        SegmentedLog.open(tmp_path, fsync="interval", fsync_interval=INTERVAL) as log,
    ):
        segment = newest_segment(tmp_path)
        with descriptor_shortage() as refused:
            for seq in range(1, 4):  # three ticks of the syncer see unsynced appends
                before = log.fsyncs
                assert log.append(payload(seq)) == seq
                assert wait_until(lambda before=before: refused or log.fsyncs > before)
        fsyncs_after_the_shortage = log.fsyncs
        size = 0
        for seq in range(4, 24):
            assert log.append(payload(seq)) == seq
            size = segment.stat().st_size
        assert wait_until(lambda: tracker.synced_length(segment) == size), (
            f"the syncer stopped: {tracker.synced_length(segment)} of {size} bytes durable, "
            f"descriptor calls refused: {refused}"
        )
        assert log.fsyncs > fsyncs_after_the_shortage
        assert log.failed is None
        assert [s for s, _ in log.read()] == list(range(1, 24))


def open_keyspace(store: Store) -> tuple[Callable[[int], object], Callable[[], ActorStats]]:
    """A write (one put) and the stats of a key space."""
    ks = store.keyspace("ks")
    return lambda n: ks.put(f"k{n}", n), ks.stats


def open_counter(store: Store) -> tuple[Callable[[int], object], Callable[[], ActorStats]]:
    """A write (one command) and the stats of a custom actor."""
    counter = store.spawn("counter", ProbeCounter)
    return lambda n: counter.increment(n).get(timeout=TIMEOUT), counter.stats


@pytest.mark.parametrize("opener", [open_keyspace, open_counter], ids=["keyspace", "actor"])
def test_a_failed_background_fsync_shows_in_stats_and_refuses_writes(tmp_path, opener):
    path = tmp_path / "store"
    with Store.open(path, fsync="interval", fsync_interval=INTERVAL) as store:
        write, stats = opener(store)
        write(1)
        with FaultInjector("fsync", 1, errno.EIO, persistent=True) as fault:
            write(2)  # acknowledged; only the background fsync can fail now
            assert wait_until(lambda: fault.injected >= 1)
            assert wait_until(lambda: stats().failed), "stats().failed stayed False"
            with pytest.raises(WriteFailed, match="refuses writes"):
                write(3)
            assert stats().failed
    with Store.open(path) as store:  # no power was lost: both acknowledged writes are there
        if opener is open_keyspace:
            assert dict(store.keyspace("ks").range()) == {"k1": 1, "k2": 2}
        else:
            assert store.spawn("counter", ProbeCounter).value().get(timeout=TIMEOUT) == 3


def test_each_background_fsync_covers_every_append_that_returned_before_it_began(tmp_path):
    test_thread = threading.current_thread()
    ends: list[int] = []  # end offset of each append, in the order they returned
    observed: list[tuple[int, int | None]] = []  # (appends returned at the start, synced after)

    with DurabilityTracker() as tracker:
        segment: Path | None = None

        def observing(inner: Callable[[int], None]) -> Callable[[int], None]:
            def fsync(fd: int) -> None:
                if threading.current_thread() is test_thread:
                    inner(fd)
                    return
                returned = len(ends)
                inner(fd)
                observed.append((returned, tracker.synced_length(segment)))

            return fsync

        with (
            fsync_replaced_by(observing),
            SegmentedLog.open(tmp_path, fsync="interval", fsync_interval=INTERVAL) as log,
        ):
            segment = newest_segment(tmp_path)
            for seq in range(1, 201):
                assert log.append(payload(seq, 100)) == seq
                ends.append(segment.stat().st_size)
                if seq % 20 == 0:  # let the syncer interleave at least ten times
                    ticks = len(observed)
                    assert wait_until(lambda ticks=ticks: len(observed) > ticks)
            assert wait_until(lambda: observed and observed[-1][0] == len(ends))
    assert len(observed) >= 10
    for returned, synced in observed:
        if returned:
            assert synced is not None
            assert synced >= ends[returned - 1], (
                f"an fsync that began after {returned} appends made {synced} bytes durable, "
                f"not the {ends[returned - 1]} they had written"
            )
    assert observed[-1][1] == ends[-1]


def test_a_roll_while_the_syncer_is_inside_its_fsync_leaks_and_double_closes_nothing(
    tmp_path, caplog
):
    test_thread = threading.current_thread()
    entered = threading.Event()
    release = threading.Event()

    def gated(inner: Callable[[int], None]) -> Callable[[int], None]:
        def fsync(fd: int) -> None:
            if threading.current_thread() is not test_thread and not release.is_set():
                entered.set()
                if not release.wait(TIMEOUT):
                    raise AssertionError("the test never released the syncer")
            inner(fd)

        return fsync

    acked = []
    before = open_fds()
    with (
        caplog.at_level(logging.WARNING, logger="actorkv.storage"),
        DurabilityTracker() as tracker,
        fsync_replaced_by(gated),
    ):
        log = SegmentedLog.open(
            tmp_path, segment_bytes=4096, fsync="interval", fsync_interval=INTERVAL
        )
        try:
            acked.append((1, payload(1, ROLLING)))
            assert log.append(acked[-1][1]) == 1
            assert entered.wait(TIMEOUT), "the syncer never began an fsync"
            for seq in range(2, 12):  # three rolls while the syncer holds the first segment
                acked.append((seq, payload(seq, ROLLING)))
                assert log.append(acked[-1][1]) == seq
            assert len(segment_paths(tmp_path)) == 4
            release.set()
            newest = newest_segment(tmp_path)
            size = newest.stat().st_size
            assert wait_until(lambda: tracker.synced_length(newest) == size)
            acked.append((12, b"after the release"))
            assert log.append(b"after the release") == 12
            assert log.failed is None
            assert list(log.read()) == acked
        finally:
            release.set()
            log.close()
        assert open_fds() == before
        tracker.crash()
    assert [r for r in caplog.records if r.levelno >= logging.ERROR] == []
    with SegmentedLog.open(tmp_path, segment_bytes=4096) as log:
        assert log.recovery is None
        assert list(log.read()) == acked
