"""LogReader: a read-only look at a log directory that never changes a byte of it."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from storage import CorruptLog, LogReader, NotALog, SegmentedLog
from tests.storage.helpers import flip_bit, newest_segment, record_offsets, segment_paths


def snapshot(directory: Path) -> dict[str, bytes]:
    """Every file of the directory and its bytes."""
    return {path.name: path.read_bytes() for path in sorted(directory.iterdir())}


def write(directory: Path, count: int, *, segment_bytes: int = 4096) -> list[tuple[int, bytes]]:
    with SegmentedLog.open(directory, segment_bytes=segment_bytes, fsync="never") as log:
        for i in range(count):
            log.append(f"record {i:04d}".encode() * 3)
        return list(log.read())


def test_a_reader_reads_every_record_and_changes_nothing(tmp_path: Path) -> None:
    written = write(tmp_path / "log", 400)
    before = snapshot(tmp_path / "log")
    reader = LogReader.open(tmp_path / "log")
    assert len(reader.segments) > 1  # several segments, read in order
    assert (reader.first_seq, reader.last_seq) == (1, 400)
    assert list(reader.read()) == written
    assert list(reader.read(from_seq=399)) == written[398:]
    assert reader.damage is None
    assert reader.torn_tail is None
    assert snapshot(tmp_path / "log") == before


def test_a_reader_needs_no_lock_and_reads_while_the_writer_appends(tmp_path: Path) -> None:
    directory = tmp_path / "log"
    with SegmentedLog.open(directory, segment_bytes=4096, fsync="never") as log:
        log.append(b"first")
        stop = threading.Event()

        def append() -> None:
            while not stop.is_set():
                log.append(b"more" * 10)

        writer = threading.Thread(target=append)
        writer.start()
        try:
            for _ in range(50):
                reader = LogReader.open(directory)
                records = list(reader.read())
                assert reader.damage is None
                assert [seq for seq, _ in records] == list(range(1, reader.last_seq + 1))
                assert records[0] == (1, b"first")
        finally:
            stop.set()
            writer.join(30)
        final = log.last_seq
    reader = LogReader.open(directory)
    assert reader.last_seq == final
    assert reader.torn_tail is None


def test_a_torn_tail_is_reported_and_left_in_place(tmp_path: Path) -> None:
    written = write(tmp_path / "log", 10, segment_bytes=1 << 20)
    segment = newest_segment(tmp_path / "log")
    last = record_offsets(segment)[-1]
    with segment.open("r+b") as file:
        file.truncate(last.offset + 7)
    before = snapshot(tmp_path / "log")
    reader = LogReader.open(tmp_path / "log")
    assert reader.last_seq == 9
    assert list(reader.read()) == written[:9]
    assert reader.damage is None
    assert reader.torn_tail is not None
    assert (reader.torn_tail.segment, reader.torn_tail.offset) == (segment, last.offset)
    assert reader.torn_tail.bytes_after == 7
    assert snapshot(tmp_path / "log") == before  # not cut, no side file


def test_damage_in_a_sealed_segment_stops_the_read_there_and_is_reported(tmp_path: Path) -> None:
    written = write(tmp_path / "log", 400)
    oldest = segment_paths(tmp_path / "log")[0]
    victim = record_offsets(oldest)[5]
    flip_bit(oldest, victim.offset + 25)
    before = snapshot(tmp_path / "log")
    reader = LogReader.open(tmp_path / "log")
    assert reader.damage is None  # sealed segments are checked as they are read
    assert list(reader.read()) == written[:5]
    assert isinstance(reader.damage, CorruptLog)
    assert (reader.damage.path, reader.damage.offset) == (oldest, victim.offset)
    assert snapshot(tmp_path / "log") == before


def test_damage_in_the_newest_segment_with_intact_records_after_it_is_damage(
    tmp_path: Path,
) -> None:
    written = write(tmp_path / "log", 20, segment_bytes=1 << 20)
    segment = newest_segment(tmp_path / "log")
    victim = record_offsets(segment)[10]
    flip_bit(segment, victim.offset + 25)
    reader = LogReader.open(tmp_path / "log")
    assert reader.last_seq == 10
    assert isinstance(reader.damage, CorruptLog)
    assert reader.damage.offset == victim.offset
    assert reader.torn_tail is None
    assert list(reader.read()) == written[:10]


def test_a_broken_segment_chain_keeps_the_segments_before_it(tmp_path: Path) -> None:
    written = write(tmp_path / "log", 400)
    paths = segment_paths(tmp_path / "log")
    paths[2].unlink()  # a segment missing in the middle
    reader = LogReader.open(tmp_path / "log")
    assert [segment.path for segment in reader.segments] == paths[:2]
    assert isinstance(reader.damage, CorruptLog)
    assert reader.damage.path == paths[3]
    kept = list(reader.read())
    assert kept == written[: len(kept)]
    assert kept[-1][0] == reader.last_seq


def test_a_path_without_a_log_is_not_a_log(tmp_path: Path) -> None:
    with pytest.raises(NotALog, match="no such directory"):
        LogReader.open(tmp_path / "missing")
    with pytest.raises(NotALog, match="no segment files"):
        LogReader.open(tmp_path)
    assert list(tmp_path.iterdir()) == []
