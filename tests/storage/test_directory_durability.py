"""Directory entries are durable before anything relies on them (a power loss keeps them).

``docs/architecture.md``, "Durability": each ``mkdir`` and rename is followed by an fsync of
the parent directory; side files and ``.broken`` backups are fsynced, file and directory,
before the bytes they keep are truncated. The power losses are played by
``DurabilityTracker(root=...)``, which also undoes directories and renames whose parent was
not fsynced; the last tests check that model itself.
"""

from __future__ import annotations

import contextlib
import errno
from collections.abc import Iterator
from pathlib import Path

import pytest

from actors import Store
from storage import CorruptLog, SegmentedLog, _fileio, repair
from storage.errors import OpenFailed
from tests.actors.conftest import TIMEOUT, ProbeCounter
from tests.storage.faults import DurabilityTracker, FaultInjector
from tests.storage.helpers import (
    append_bytes,
    flip_bit,
    newest_segment,
    payload,
    record_offsets,
    side_files,
)

SIZE = 50
ACKED = [(seq, payload(seq, SIZE)) for seq in range(1, 21)]
TORN = b"\x07" * 13  # shorter than a record header: a torn write


@contextlib.contextmanager
def listing_directory_fsyncs() -> Iterator[dict[Path, set[str]]]:
    """Record, per directory, every name a successful ``fsync_dir`` made durable.

    Install inside a tracker and outside a fault, so only fsyncs that happened are seen.
    A file is durable only if a listing of its directory after its creation holds it, however
    it was made: the tracker takes a file it first sees when it is opened through the seam
    as durable, so a copy made around the seam (``shutil.copyfile``) would pass it.
    """
    listed: dict[Path, set[str]] = {}
    inner = _fileio.fsync_dir

    def fsync_dir(path: Path) -> None:
        inner(path)
        listed.setdefault(Path(path).resolve(), set()).update(p.name for p in Path(path).iterdir())

    _fileio.fsync_dir = fsync_dir
    try:
        yield listed
    finally:
        _fileio.fsync_dir = inner


def write_log(log_dir: Path) -> Path:
    """A closed log holding ACKED; returns its segment."""
    with SegmentedLog.open(log_dir, fsync="never") as log:
        for seq, data in ACKED:
            assert log.append(data) == seq
    return newest_segment(log_dir)


# -- brand-new directories survive a power loss --------------------------------------------


def test_a_put_in_a_new_keyspace_of_a_new_store_survives_a_power_loss(tmp_path):
    path = tmp_path / "store"
    with DurabilityTracker(root=tmp_path) as tracker:
        store = Store.open(path)
        store.keyspace("ks").put("k", "acknowledged")
        tracker.cut_power()  # right after the acknowledgment
        store.close()
        tracker.crash()
    assert (path / "keyspaces" / "ks").is_dir()
    with Store.open(path) as store:
        assert store.keyspaces() == ["ks"]
        assert dict(store.keyspace("ks").range()) == {"k": "acknowledged"}


def test_the_first_command_of_a_new_actor_in_a_new_store_survives_a_power_loss(tmp_path):
    path = tmp_path / "store"
    with DurabilityTracker(root=tmp_path) as tracker:
        store = Store.open(path)
        assert store.spawn("counter", ProbeCounter).increment(5).get(timeout=TIMEOUT) == 5
        tracker.cut_power()
        store.close()
        tracker.crash()
    assert (path / "actors" / "counter").is_dir()
    with Store.open(path) as store:
        assert store.spawn("counter", ProbeCounter).value().get(timeout=TIMEOUT) == 5


def test_a_log_opened_in_new_nested_directories_survives_a_power_loss(tmp_path):
    log_dir = tmp_path / "a" / "b" / "log"
    with DurabilityTracker(root=tmp_path) as tracker:
        log = SegmentedLog.open(log_dir)
        assert log.append(b"acknowledged") == 1
        tracker.cut_power()
        log.close()
        tracker.crash()
    with SegmentedLog.open(log_dir) as log:
        assert log.recovery is None
        assert list(log.read()) == [(1, b"acknowledged")]


# -- nothing is truncated before its copy is durable ---------------------------------------


def test_a_torn_tail_cut_while_directory_fsyncs_fail_is_kept_in_the_segment_or_a_side_file(
    tmp_path,
):
    log_dir = tmp_path / "log"
    segment = write_log(log_dir)
    end = segment.stat().st_size
    append_bytes(segment, TORN)
    with DurabilityTracker(root=tmp_path) as tracker:
        with (
            FaultInjector("fsync_dir", 1, errno.EIO, persistent=True) as fault,
            pytest.raises(OpenFailed) as raised,
        ):
            SegmentedLog.open(log_dir)
        assert fault.injected >= 1
        assert raised.value.errno == errno.EIO
        tracker.crash()
    kept = segment.read_bytes()
    copies = [p.read_bytes() for p in side_files(log_dir, ".cut-")]
    assert kept[end:] == TORN or (len(kept) == end and copies == [TORN]), (
        f"the torn bytes are gone: segment {len(kept)} bytes (was {end + len(TORN)}), "
        f"side files {copies}"
    )
    with SegmentedLog.open(log_dir) as log:  # the disk works again: the cut goes through
        assert list(log.read()) == ACKED
    assert TORN in [p.read_bytes() for p in side_files(log_dir, ".cut-")]


def test_a_repair_while_directory_fsyncs_fail_keeps_the_damaged_bytes_in_place_or_a_backup(
    tmp_path,
):
    log_dir = tmp_path / "log"
    segment = write_log(log_dir)
    victim = record_offsets(segment)[len(ACKED) // 2]
    flip_bit(segment, victim.offset + 25)
    damaged = segment.read_bytes()
    with pytest.raises(CorruptLog):
        SegmentedLog.open(log_dir)
    with DurabilityTracker(root=tmp_path) as tracker:
        with listing_directory_fsyncs() as listed:
            with (
                FaultInjector("fsync_dir", 1, errno.EIO, persistent=True) as fault,
                pytest.raises(OpenFailed, match="repairing the log") as raised,
            ):
                repair(log_dir)
            assert fault.injected >= 1
            assert raised.value.errno == errno.EIO
        tracker.crash()
    durable_backups = [
        p.read_bytes()
        for p in side_files(log_dir, ".broken")
        if p.name in listed.get(log_dir.resolve(), set())
    ]
    assert segment.read_bytes() == damaged or durable_backups == [damaged], (
        f"the damaged segment is {len(segment.read_bytes())} bytes (was {len(damaged)}) "
        f"and no durable backup holds it ({len(durable_backups)} durable backups)"
    )
    report = repair(log_dir)  # the disk works again
    assert report.changed
    assert report.offset == victim.offset
    assert damaged in [p.read_bytes() for p in report.backups]
    with SegmentedLog.open(log_dir) as log:
        assert list(log.read()) == ACKED[: victim.seq - 1]


# -- the tracker's model of directories and renames ----------------------------------------


def test_tracker_crash_removes_a_plain_mkdir_under_root_that_was_never_fsynced(tmp_path):
    with DurabilityTracker(root=tmp_path) as tracker:
        (tmp_path / "new" / "deeper").mkdir(parents=True)
        _fileio.write_file(tmp_path / "new" / "deeper" / "data", b"fsynced, entry too")
        _fileio.fsync_dir(tmp_path / "new" / "deeper")
        _fileio.fsync_dir(tmp_path / "new")  # lists deeper, but new itself is not durable
        outcome = tracker.crash()
    assert list(tmp_path.iterdir()) == []
    assert outcome == {(tmp_path / "new" / "deeper" / "data").resolve(): None}


def test_tracker_crash_keeps_a_plain_mkdir_under_root_once_its_parent_was_fsynced(tmp_path):
    with DurabilityTracker(root=tmp_path) as tracker:
        (tmp_path / "kept").mkdir()
        (tmp_path / "lost").mkdir()
        _fileio.write_file(tmp_path / "kept" / "data", b"durable")
        _fileio.fsync_dir(tmp_path / "kept")
        _fileio.fsync_dir(tmp_path)  # lists kept and lost
        (tmp_path / "kept" / "later").mkdir()  # after the last fsync of kept
        tracker.crash()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["kept", "lost"]
    assert sorted(p.name for p in (tmp_path / "kept").iterdir()) == ["data"]
    assert (tmp_path / "kept" / "data").read_bytes() == b"durable"


def test_tracker_crash_removes_a_seam_made_directory_unless_its_parent_was_fsynced(tmp_path):
    (tmp_path / "old").mkdir()
    with DurabilityTracker(root=tmp_path) as tracker:
        _fileio.make_dir(tmp_path / "old" / "lost")
        _fileio.make_dir(tmp_path / "old" / "lost" / "inside")
        _fileio.fsync_dir(tmp_path / "old" / "lost")
        _fileio.make_dirs(tmp_path / "new" / "a" / "b")  # each one's parent fsynced
        tracker.crash()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["new", "old"]
    assert list((tmp_path / "old").iterdir()) == []
    assert (tmp_path / "new" / "a" / "b").is_dir()


def test_tracker_crash_undoes_a_rename_not_followed_by_a_directory_fsync(tmp_path):
    target, staged = tmp_path / "target", tmp_path / "staged"
    with DurabilityTracker(root=tmp_path) as tracker:
        _fileio.write_file(target, b"old and durable")
        _fileio.write_file(staged, b"new")
        _fileio.fsync_dir(tmp_path)
        _fileio.rename(staged, target)
        assert target.read_bytes() == b"new"
        tracker.crash()
    assert target.read_bytes() == b"old and durable"
    assert staged.read_bytes() == b"new"  # its own entry was durable: back under its name


def test_tracker_crash_drops_a_renamed_file_whose_own_entry_was_never_durable(tmp_path):
    target, staged = tmp_path / "target", tmp_path / "staged"
    with DurabilityTracker(root=tmp_path) as tracker:
        _fileio.write_file(target, b"old and durable")
        _fileio.fsync_dir(tmp_path)
        _fileio.write_file(staged, b"new")
        _fileio.rename(staged, target)
        tracker.crash()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["target"]
    assert target.read_bytes() == b"old and durable"


def test_tracker_crash_keeps_a_rename_once_its_directory_was_fsynced(tmp_path):
    target, staged = tmp_path / "target", tmp_path / "staged"
    with DurabilityTracker(root=tmp_path) as tracker:
        _fileio.write_file(target, b"old")
        _fileio.write_file(staged, b"new")
        _fileio.fsync_dir(tmp_path)
        _fileio.rename(staged, target)
        _fileio.fsync_dir(tmp_path)
        tracker.crash()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["target"]
    assert target.read_bytes() == b"new"


def test_tracker_crash_undoes_a_directory_rename_not_followed_by_a_directory_fsync(tmp_path):
    (tmp_path / "ks").mkdir()
    (tmp_path / "ks" / "data").write_bytes(b"durable before install")
    with DurabilityTracker(root=tmp_path) as tracker:
        tracker.assume_durable(tmp_path / "ks")
        _fileio.rename(tmp_path / "ks", tmp_path / "dropped-ks")
        tracker.crash()
    assert [p.name for p in tmp_path.iterdir()] == ["ks"]
    assert (tmp_path / "ks" / "data").read_bytes() == b"durable before install"
