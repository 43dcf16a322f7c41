"""storage.repair(): the explicit way past corruption, keeping ``.broken`` copies."""

from __future__ import annotations

import pytest

from storage import CorruptLog, SegmentedLog, StoreLocked, repair
from storage._segment import encode_header
from tests.storage.helpers import (
    flip_bit,
    newest_segment,
    payload,
    record_offsets,
    segment_paths,
    side_files,
    truncate,
)

SMALL = 4096
SIZE = 50
LAST = 200
EXPECTED = [(i, payload(i, SIZE)) for i in range(1, LAST + 1)]


@pytest.fixture
def log_dir(tmp_path):
    path = tmp_path / "log"
    with SegmentedLog.open(path, segment_bytes=SMALL, fsync="never") as log:
        for seq in range(1, LAST + 1):
            log.append(payload(seq, SIZE))
    assert len(segment_paths(path)) >= 4
    return path


def snapshot(path):
    return {p.name: p.read_bytes() for p in path.iterdir() if p.name != "LOCK"}


def test_repair_of_a_sound_log_changes_nothing(log_dir):
    before = snapshot(log_dir)
    report = repair(log_dir)
    assert not report.changed
    assert report.damaged is None
    assert report.last_seq == LAST
    assert report.bytes_cut == 0
    assert report.backups == []
    assert snapshot(log_dir) == before


def test_repair_of_an_empty_log_changes_nothing(tmp_path):
    with SegmentedLog.open(tmp_path):
        pass
    before = snapshot(tmp_path)
    report = repair(tmp_path)
    assert not report.changed
    assert report.last_seq == 0
    assert snapshot(tmp_path) == before


def test_repair_cuts_at_a_bit_flip_in_a_sealed_segment_and_keeps_broken_copies(log_dir):
    segments = segment_paths(log_dir)
    damaged = segments[1]
    victim = record_offsets(damaged)[5]
    original = damaged.read_bytes()
    later = {p: p.read_bytes() for p in segments[2:]}
    flip_bit(damaged, victim.offset + 33, bit=6)
    damaged_bytes = damaged.read_bytes()

    report = repair(log_dir)

    assert report.changed
    assert report.damaged == damaged
    assert report.offset == victim.offset
    assert "checksum" in report.reason
    assert report.last_seq == victim.seq - 1
    assert report.bytes_cut == len(original) - victim.offset + sum(map(len, later.values()))
    broken = damaged.with_name(damaged.name + ".broken")
    assert broken.read_bytes() == damaged_bytes
    assert damaged.read_bytes() == original[: victim.offset]
    for path, data in later.items():
        assert not path.exists()
        assert path.with_name(path.name + ".broken").read_bytes() == data
    assert set(report.backups) == {broken} | {p.with_name(p.name + ".broken") for p in later}
    assert segment_paths(log_dir) == segments[:2]

    with SegmentedLog.open(log_dir, segment_bytes=SMALL) as log:
        assert log.recovery is None
        assert log.last_seq == victim.seq - 1
        assert list(log.read()) == EXPECTED[: victim.seq - 1]
        assert log.append(b"after repair") == victim.seq
    with SegmentedLog.open(log_dir) as log:
        assert log.verify() == victim.seq


def test_repair_of_a_mid_log_bit_flip_in_the_newest_segment(log_dir):
    newest = newest_segment(log_dir)
    victim = record_offsets(newest)[1]
    flip_bit(newest, victim.offset + 2)
    with pytest.raises(CorruptLog):
        SegmentedLog.open(log_dir)
    report = repair(log_dir)
    assert report.damaged == newest
    assert report.offset == victim.offset
    assert report.last_seq == victim.seq - 1
    assert newest.with_name(newest.name + ".broken").exists()
    with SegmentedLog.open(log_dir) as log:
        assert list(log.read()) == EXPECTED[: victim.seq - 1]


def test_repair_drops_a_group_broken_in_the_middle_whole(tmp_path):
    with SegmentedLog.open(tmp_path) as log:
        log.append_batch([payload(1, SIZE), payload(2, SIZE)])
        log.append_batch([payload(i, SIZE) for i in range(3, 8)])
        log.append(payload(8, SIZE))
    segment = newest_segment(tmp_path)
    records = record_offsets(segment)
    flip_bit(segment, records[4].offset + 30)
    report = repair(tmp_path)
    assert report.offset == records[2].offset
    assert report.last_seq == 2
    with SegmentedLog.open(tmp_path) as log:
        assert list(log.read()) == [(1, payload(1, SIZE)), (2, payload(2, SIZE))]


def test_repair_cuts_a_torn_tail_like_open_would(log_dir):
    newest = newest_segment(log_dir)
    final = record_offsets(newest)[-1]
    truncate(newest, final.offset + 9)
    report = repair(log_dir)
    assert report.damaged == newest
    assert report.offset == final.offset
    assert report.bytes_cut == 9
    assert report.last_seq == LAST - 1
    with SegmentedLog.open(log_dir) as log:
        assert log.recovery is None
        assert log.last_seq == LAST - 1


def test_repair_of_a_bad_first_segment_header_leaves_an_empty_openable_log(log_dir):
    segments = segment_paths(log_dir)
    flip_bit(segments[0], 3)
    with pytest.raises(CorruptLog):
        SegmentedLog.open(log_dir)
    sizes = sum(p.stat().st_size for p in segments)

    report = repair(log_dir)

    assert report.changed
    assert report.damaged == segments[0]
    assert report.last_seq == 0
    assert report.bytes_cut == sizes
    assert len(side_files(log_dir, ".broken")) == len(segments)
    with SegmentedLog.open(log_dir) as log:
        assert log.first_seq == 1
        assert log.last_seq == 0
        assert list(log.read()) == []
        assert log.append(b"fresh") == 1
    with SegmentedLog.open(log_dir) as log:
        assert list(log.read()) == [(1, b"fresh")]


def test_repair_of_a_bad_later_segment_header_keeps_the_segments_before_it(log_dir):
    segments = segment_paths(log_dir)
    flip_bit(segments[2], 14)
    report = repair(log_dir)
    assert report.damaged == segments[2]
    kept = record_offsets(segments[1])[-1].seq
    assert report.last_seq == kept
    assert segment_paths(log_dir) == segments[:2]
    with SegmentedLog.open(log_dir) as log:
        assert list(log.read()) == EXPECTED[:kept]


def test_repair_of_a_missing_middle_segment_keeps_the_records_before_the_gap(log_dir):
    segments = segment_paths(log_dir)
    segments[2].unlink()
    report = repair(log_dir)
    assert report.changed
    kept = record_offsets(segments[1])[-1].seq
    assert report.last_seq == kept
    assert segment_paths(log_dir) == segments[:2]
    with SegmentedLog.open(log_dir) as log:
        assert list(log.read()) == EXPECTED[:kept]


def test_repair_removes_a_stale_segment_tmp_file(log_dir):
    tmp = log_dir / f"{LAST + 1:020d}.seg.tmp"
    tmp.write_bytes(encode_header(LAST + 1, 1))
    report = repair(log_dir)
    assert not tmp.exists()
    assert not report.changed


def test_repair_while_the_log_is_open_raises_store_locked(log_dir):
    flip_bit(segment_paths(log_dir)[0], record_offsets(segment_paths(log_dir)[0])[0].offset + 40)
    before = snapshot(log_dir)
    with SegmentedLog.open(log_dir), pytest.raises(StoreLocked):
        repair(log_dir)
    assert snapshot(log_dir) == before


def test_a_failed_open_releases_the_lock_so_repair_can_run(log_dir):
    newest = newest_segment(log_dir)
    flip_bit(newest, record_offsets(newest)[0].offset + 1)
    with pytest.raises(CorruptLog):
        SegmentedLog.open(log_dir)
    assert repair(log_dir).changed


def test_a_second_repair_keeps_the_backup_of_the_first(log_dir):
    damaged = segment_paths(log_dir)[1]
    flip_bit(damaged, record_offsets(damaged)[5].offset + 30)
    first_damage = damaged.read_bytes()
    repair(log_dir)
    with SegmentedLog.open(log_dir, segment_bytes=SMALL) as log:
        log.append(b"after the first repair")
    flip_bit(damaged, record_offsets(damaged)[2].offset + 30)
    repair(log_dir)
    kept = [p.read_bytes() for p in side_files(log_dir, ".broken")]
    assert first_damage in kept
