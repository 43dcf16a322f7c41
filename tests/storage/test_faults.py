"""Failed writes, fsyncs and rolls, and power loss, injected at the ``storage._fileio`` seam."""

from __future__ import annotations

import errno
import os
import time
from pathlib import Path
from typing import Any

import pytest

from storage import _fileio
from storage.errors import WriteFailed
from storage.log import SegmentedLog
from tests.storage.faults import DurabilityTracker, FaultInjector

ERRNOS = pytest.mark.parametrize("error", [errno.ENOSPC, errno.EIO], ids=["ENOSPC", "EIO"])
PERSISTENCE = pytest.mark.parametrize("persistent", [False, True], ids=["transient", "persistent"])

# 1000-byte payloads frame to 1060 bytes: three fit a 4096-byte segment, the fourth rolls.
ROLLING_PAYLOAD = 1000
RECORDS_PER_SEGMENT = 3


def payload(seq: int, size: int = 24) -> bytes:
    return f"record {seq} ".encode().ljust(size, b".")


def records(log: SegmentedLog, from_seq: int = 1) -> list[tuple[int, bytes]]:
    return list(log.read(from_seq))


def segment_files(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name.endswith(".seg"))


def append_group(log: SegmentedLog, size: int, *, batch: bool) -> list[tuple[int, bytes]]:
    """Append ``size`` records (one ``append_batch``, or one ``append`` if not ``batch``)."""
    seq = log.last_seq + 1
    group = [payload(s) for s in range(seq, seq + size)]
    if batch:
        assert log.append_batch(group) == seq + size - 1
    else:
        assert log.append(group[0]) == seq
    return list(enumerate(group, seq))


def assert_refuses_writes(log: SegmentedLog) -> None:
    with pytest.raises(WriteFailed):
        log.append(b"after the failure")
    with pytest.raises(WriteFailed):
        log.append_batch([b"a", b"b"])
    with pytest.raises(WriteFailed):
        log.append_batch([])
    with pytest.raises(WriteFailed):
        log.sync()


def assert_reopens_with(directory: Path, acked: list[tuple[int, bytes]], **options: Any) -> None:
    """Reopen without faults: exactly ``acked`` is there, and the log takes new appends."""
    with SegmentedLog.open(directory, **options) as log:
        assert records(log) == acked
        assert log.last_seq == len(acked)
        assert log.failed is None
        seq = log.append(b"after reopen")
        assert seq == len(acked) + 1
        assert records(log, seq) == [(seq, b"after reopen")]
    assert not [p for p in directory.iterdir() if p.name.endswith(".tmp")]


# -- the tools themselves --------------------------------------------------------------------


def test_injector_fails_only_the_nth_call_when_transient(tmp_path: Path) -> None:
    fd = _fileio.create(tmp_path / "f")
    try:
        with FaultInjector("fsync", nth=2, error=errno.EIO) as fault:
            _fileio.fsync(fd)
            with pytest.raises(OSError) as raised:
                _fileio.fsync(fd)
            assert raised.value.errno == errno.EIO
            _fileio.fsync(fd)
        assert (fault.calls, fault.injected) == (3, 1)
    finally:
        os.close(fd)


def test_injector_keeps_failing_after_the_nth_call_when_persistent_until_cleared(
    tmp_path: Path,
) -> None:
    fd = _fileio.create(tmp_path / "f")
    try:
        with FaultInjector("write_all", nth=1, error=errno.ENOSPC, persistent=True) as fault:
            for _ in range(3):
                with pytest.raises(OSError, match="No space"):
                    _fileio.write_all(fd, b"x")
            fault.clear()
            _fileio.write_all(fd, b"ok")
        assert fault.injected == 3
        assert (tmp_path / "f").read_bytes() == b"ok"
    finally:
        os.close(fd)


def test_partial_write_fault_writes_half_the_bytes_then_raises_enospc(tmp_path: Path) -> None:
    fd = _fileio.create(tmp_path / "f")
    try:
        with (
            FaultInjector("write_all", error=errno.ENOSPC, partial=True),
            pytest.raises(OSError) as raised,
        ):
            _fileio.write_all(fd, b"0123456789")
        assert raised.value.errno == errno.ENOSPC
        assert (tmp_path / "f").read_bytes() == b"01234"
    finally:
        os.close(fd)


def test_tracker_crash_truncates_a_file_to_its_last_fsynced_length(tmp_path: Path) -> None:
    path = tmp_path / "data"
    with DurabilityTracker() as tracker:
        fd = _fileio.create(path)
        _fileio.write_all(fd, b"durable!")
        _fileio.fsync(fd)
        _fileio.fsync_dir(tmp_path)
        _fileio.write_all(fd, b" lost in the crash")
        assert tracker.synced_length(path) == 8
        os.close(fd)
        tracker.crash()
    assert path.read_bytes() == b"durable!"


def test_tracker_ignores_fsyncs_after_the_power_is_cut(tmp_path: Path) -> None:
    path = tmp_path / "data"
    with DurabilityTracker() as tracker:
        fd = _fileio.create(path)
        _fileio.write_all(fd, b"durable!")
        _fileio.fsync(fd)
        _fileio.fsync_dir(tmp_path)
        tracker.cut_power()
        _fileio.write_all(fd, b" written as the lights went out")
        _fileio.fsync(fd)
        _fileio.fsync_dir(tmp_path)
        os.close(fd)
        tracker.crash()
    assert path.read_bytes() == b"durable!"


def test_tracker_crash_deletes_files_created_after_the_last_directory_fsync(
    tmp_path: Path,
) -> None:
    with DurabilityTracker() as tracker:
        fd = _fileio.create(tmp_path / "old")
        _fileio.write_all(fd, b"old")
        _fileio.fsync(fd)
        os.close(fd)
        _fileio.fsync_dir(tmp_path)
        fd = _fileio.create(tmp_path / "new")
        _fileio.write_all(fd, b"fsynced, but its entry is not")
        _fileio.fsync(fd)
        os.close(fd)
        fd = _fileio.create(tmp_path / "tmp")
        _fileio.fsync(fd)
        os.close(fd)
        _fileio.rename(tmp_path / "tmp", tmp_path / "final")
        outcome = tracker.crash()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["old"]
    assert (tmp_path / "old").read_bytes() == b"old"
    assert sorted(outcome.values(), key=str) == [3, None, None]


def test_tracker_crash_can_keep_a_torn_or_zero_filled_tail(tmp_path: Path) -> None:
    path = tmp_path / "data"
    with DurabilityTracker() as tracker:
        fd = _fileio.create(path)
        _fileio.fsync_dir(tmp_path)
        _fileio.write_all(fd, b"0123456789")
        os.close(fd)
        tracker.crash(keep=lambda _path, synced, size: synced + 4, zero_fill=True)
    assert path.read_bytes() == b"0123" + bytes(6)


# -- a failed append -------------------------------------------------------------------------


@pytest.mark.parametrize("nth", [1, 2, 3])
@pytest.mark.parametrize("operation", ["write_all", "fsync"])
@pytest.mark.parametrize("batch", [False, True], ids=["append", "append_batch"])
@ERRNOS
@PERSISTENCE
def test_a_failed_append_is_refused_and_vanishes_and_reopening_keeps_what_was_acknowledged(
    tmp_path: Path, nth: int, operation: str, batch: bool, error: int, persistent: bool
) -> None:
    size = 3 if batch else 1
    acked: list[tuple[int, bytes]] = []
    log = SegmentedLog.open(tmp_path)
    try:
        with FaultInjector(operation, nth, error, persistent=persistent) as fault:
            for _ in range(nth - 1):  # each append makes one write and one fsync
                acked.extend(append_group(log, size, batch=batch))
            with pytest.raises(WriteFailed):
                append_group(log, size, batch=batch)
            assert fault.injected == 1
            fault.clear()
            assert isinstance(log.failed, OSError)
            assert log.failed.errno == error
            assert_refuses_writes(log)
            assert records(log) == acked
            assert log.last_seq == len(acked)
    finally:
        log.close()
    assert_reopens_with(tmp_path, acked)


@pytest.mark.parametrize("nth", [1, 2, 3])
def test_enospc_in_the_middle_of_a_batch_leaves_no_part_of_the_batch(
    tmp_path: Path, nth: int
) -> None:
    acked = [(s, payload(s)) for s in range(1, 4)]
    with SegmentedLog.open(tmp_path) as log:
        log.append_batch([p for _, p in acked])
        segment = tmp_path / segment_files(tmp_path)[-1]
        size_before = segment.stat().st_size
        for index in range(nth - 1):
            log.append_batch([payload(100 + index), payload(200 + index)])
            acked.extend(enumerate([payload(100 + index), payload(200 + index)], len(acked) + 1))
            size_before = segment.stat().st_size
        with FaultInjector("write_all", 1, errno.ENOSPC, partial=True) as fault:
            with pytest.raises(WriteFailed):
                log.append_batch([payload(9, 300) for _ in range(5)])
            assert fault.injected == 1
        assert segment.stat().st_size == size_before
        assert log.failed is not None
        assert_refuses_writes(log)
        assert records(log) == acked
    assert_reopens_with(tmp_path, acked)


def test_a_torn_batch_left_by_a_failed_cleanup_is_dropped_whole_on_reopen(tmp_path: Path) -> None:
    acked = [(1, payload(1)), (2, payload(2))]
    with SegmentedLog.open(tmp_path) as log:
        log.append_batch([payload(1), payload(2)])
        with (
            FaultInjector("write_all", 1, errno.ENOSPC, partial=True),
            FaultInjector("truncate", 1, errno.EIO),
            pytest.raises(WriteFailed),
        ):
            log.append_batch([payload(9, 200) for _ in range(6)])
        assert records(log) == acked
    with SegmentedLog.open(tmp_path) as log:
        assert log.recovery is not None
        assert records(log) == acked
    assert_reopens_with(tmp_path, acked)


# -- a failed segment roll -------------------------------------------------------------------


@pytest.mark.parametrize(
    "operation", ["create", "write_all", "fsync", "rename", "fsync_dir", "open_append"]
)
@ERRNOS
def test_a_failed_segment_roll_is_refused_and_reopening_keeps_every_acknowledged_record(
    tmp_path: Path, operation: str, error: int
) -> None:
    options = {"segment_bytes": 4096}
    acked: list[tuple[int, bytes]] = []
    with SegmentedLog.open(tmp_path, segment_bytes=4096) as log:
        for seq in range(1, RECORDS_PER_SEGMENT + 1):
            log.append(payload(seq, ROLLING_PAYLOAD))
            acked.append((seq, payload(seq, ROLLING_PAYLOAD)))
        assert len(segment_files(tmp_path)) == 1
        with FaultInjector(operation, 1, error) as fault:
            with pytest.raises(WriteFailed, match="new segment"):
                log.append(payload(99, ROLLING_PAYLOAD))
            assert fault.injected == 1
        assert log.failed is not None
        assert_refuses_writes(log)
        assert records(log) == acked
    if operation == "rename":
        assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".seg.tmp")]
    assert_reopens_with(tmp_path, acked, **options)
    with SegmentedLog.open(tmp_path, segment_bytes=4096) as log:
        for _ in range(2 * RECORDS_PER_SEGMENT):  # rolls work again
            log.append(payload(log.last_seq + 1, ROLLING_PAYLOAD))
        assert [s for s, _ in records(log)] == list(range(1, log.last_seq + 1))
    assert len(segment_files(tmp_path)) >= 3


# -- the background fsync --------------------------------------------------------------------


@ERRNOS
def test_a_failed_background_fsync_makes_the_next_append_raise(tmp_path: Path, error: int) -> None:
    with (
        SegmentedLog.open(tmp_path, fsync="interval", fsync_interval=0.01) as log,
        FaultInjector("fsync", 1, error, persistent=True) as fault,
    ):
        assert log.append(b"acknowledged") == 1
        deadline = time.monotonic() + 10
        while log.failed is None and time.monotonic() < deadline:
            time.sleep(0.005)
        assert fault.injected >= 1
        assert isinstance(log.failed, OSError)
        assert log.failed.errno == error
        assert_refuses_writes(log)
        assert records(log) == [(1, b"acknowledged")]
    assert_reopens_with(tmp_path, [(1, b"acknowledged")], fsync="interval")


# -- power loss ------------------------------------------------------------------------------


def test_every_acknowledged_append_survives_a_power_loss_under_fsync_always(
    tmp_path: Path,
) -> None:
    acked: list[tuple[int, bytes]] = []
    with DurabilityTracker() as tracker:
        for round_ in range(12):
            with SegmentedLog.open(tmp_path, segment_bytes=4096) as log:
                seq = log.last_seq + 1
                group = [payload(seq + i, 700) for i in range(round_ % 3 + 1)]
                assert log.append_batch(group) == seq + len(group) - 1
                acked.extend(enumerate(group, seq))
                tracker.cut_power()  # before close() can fsync what append did not
            tracker.crash()
            with SegmentedLog.open(tmp_path, segment_bytes=4096) as log:
                assert log.recovery is None
                assert records(log) == acked
    assert len(segment_files(tmp_path)) > 1


def test_a_power_loss_during_a_roll_leaves_no_segment_or_an_empty_valid_one(
    tmp_path: Path,
) -> None:
    acked = [(s, payload(s, ROLLING_PAYLOAD)) for s in range(1, RECORDS_PER_SEGMENT + 1)]
    with DurabilityTracker() as tracker:
        with SegmentedLog.open(tmp_path, segment_bytes=4096) as log:
            log.append_batch([p for _, p in acked])
            with FaultInjector("fsync_dir", 1, errno.EIO), pytest.raises(WriteFailed):
                log.append(payload(99, ROLLING_PAYLOAD))
        assert len(segment_files(tmp_path)) == 2
        tracker.crash()
        assert len(segment_files(tmp_path)) == 1
    assert_reopens_with(tmp_path, acked, segment_bytes=4096)


def test_a_roll_makes_records_of_an_earlier_handle_durable_under_fsync_never(
    tmp_path: Path,
) -> None:
    # Regression: a roll used to fsync the sealed segment only if this handle had appended
    # to it, so a power loss could empty it while the next segment survived (a hole).
    first = [(s, payload(s, ROLLING_PAYLOAD)) for s in range(1, RECORDS_PER_SEGMENT + 1)]
    with DurabilityTracker() as tracker:
        with SegmentedLog.open(tmp_path, segment_bytes=4096, fsync="never") as log:
            log.append_batch([p for _, p in first])
        with SegmentedLog.open(tmp_path, segment_bytes=4096, fsync="never") as log:
            log.append(payload(99, ROLLING_PAYLOAD))  # rolls, sealing the first segment
        assert len(segment_files(tmp_path)) == 2
        tracker.crash()
    with SegmentedLog.open(tmp_path, segment_bytes=4096, fsync="never") as log:
        assert records(log) == first
