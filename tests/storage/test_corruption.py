"""Byte-level fault tests in the style of LevelDB's log_test.cc.

Each test copies a pristine log, damages the copy through ``helpers`` and reopens it. The
rule under test (``docs/format.md``, "Recovery"): damage at the end of the newest segment
is a torn write and is cut into a side file; damage anywhere else raises ``CorruptLog``.
"""

from __future__ import annotations

import logging
import random
import shutil

import pytest

from storage import CorruptLog, SegmentedLog
from storage._segment import encode_header
from tests.storage.helpers import (
    RECORD_HEADER_SIZE,
    SEGMENT_HEADER_SIZE,
    append_bytes,
    copy_log,
    flip_bit,
    newest_segment,
    overwrite,
    payload,
    record_offsets,
    segment_paths,
    side_files,
    truncate,
)

SMALL = 4096
SIZE = 50  # payload bytes: every record is 110 bytes on disk
RECORD = RECORD_HEADER_SIZE + SIZE
LAST = 150  # records in the pristine log; they fill three segments
GROUP = 3  # the pristine group log ends with an append_batch of this many records
EXPECTED = [(i, payload(i, SIZE)) for i in range(1, LAST + 1)]


@pytest.fixture(scope="module")
def pristine(tmp_path_factory):
    """A closed log of LAST records over several segments."""
    log_dir = tmp_path_factory.mktemp("pristine")
    with SegmentedLog.open(log_dir, segment_bytes=SMALL, fsync="never") as log:
        for seq in range(1, LAST + 1):
            log.append(payload(seq, SIZE))
    assert len(segment_paths(log_dir)) >= 3
    assert len(record_offsets(newest_segment(log_dir))) >= 4
    return log_dir


@pytest.fixture(scope="module")
def pristine_group(tmp_path_factory):
    """A closed log whose last write was one append_batch of GROUP records."""
    log_dir = tmp_path_factory.mktemp("pristine-group")
    with SegmentedLog.open(log_dir, segment_bytes=SMALL, fsync="never") as log:
        for seq in range(1, LAST - GROUP + 1):
            log.append(payload(seq, SIZE))
        log.append_batch([payload(seq, SIZE) for seq in range(LAST - GROUP + 1, LAST + 1)])
    assert len(record_offsets(newest_segment(log_dir))) > GROUP
    return log_dir


@pytest.fixture
def log_dir(pristine, tmp_path):
    return copy_log(pristine, tmp_path / "log")


def open_log(path):
    return SegmentedLog.open(path, segment_bytes=SMALL)


def assert_appends_continue(path, last_seq):
    """Appending after a recovery gives gapless seqs that read back after another reopen."""
    with open_log(path) as log:
        assert log.last_seq == last_seq
        assert log.append(b"after-1") == last_seq + 1
        assert log.append_batch([b"after-2", b"after-3"]) == last_seq + 3
    with open_log(path) as log:
        assert log.recovery is None
        records = list(log.read())
    assert [seq for seq, _ in records] == list(range(1, last_seq + 4))
    assert records[:last_seq] == EXPECTED[:last_seq]
    assert [data for _, data in records[last_seq:]] == [b"after-1", b"after-2", b"after-3"]


def assert_torn_tail_cut(path, segment, offset, torn, last_seq):
    """Opening cuts ``torn`` (the bytes from ``offset``) into a side file and keeps the rest."""
    with open_log(path) as log:
        cut = log.recovery
        assert cut is not None
        assert cut.segment == segment
        assert cut.offset == offset
        assert cut.bytes_cut == len(torn)
        assert cut.side_file == segment.with_name(f"{segment.name}.cut-{offset}")
        assert cut.side_file.read_bytes() == torn
        assert segment.stat().st_size == offset
        assert log.last_seq == last_seq
        assert list(log.read()) == EXPECTED[:last_seq]
    assert_appends_continue(path, last_seq)


def assert_corrupt_at_open(path, segment, offset):
    before = {p: p.read_bytes() for p in segment_paths(path)}
    with pytest.raises(CorruptLog) as raised:
        open_log(path)
    assert raised.value.path == segment
    assert raised.value.offset == offset
    # nothing was cut, and the lock was released: a second attempt fails the same way
    assert {p: p.read_bytes() for p in segment_paths(path)} == before
    assert side_files(path, ".cut-") == []
    with pytest.raises(CorruptLog):
        open_log(path)


# -- torn tails of the newest segment ------------------------------------------------------


@pytest.mark.parametrize("keep", range(1, RECORD))
def test_truncated_trailing_record_is_cut_and_kept_in_a_side_file(log_dir, keep):
    newest = newest_segment(log_dir)
    final = record_offsets(newest)[-1]
    torn = newest.read_bytes()[final.offset : final.offset + keep]
    truncate(newest, final.offset + keep)
    assert_torn_tail_cut(log_dir, newest, final.offset, torn, LAST - 1)


def test_truncation_at_a_record_boundary_is_a_clean_end(log_dir):
    newest = newest_segment(log_dir)
    truncate(newest, record_offsets(newest)[-1].offset)
    with open_log(log_dir) as log:
        assert log.recovery is None
        assert log.last_seq == LAST - 1
    assert side_files(log_dir, ".cut-") == []
    assert_appends_continue(log_dir, LAST - 1)


@pytest.mark.parametrize("keep", range(1, GROUP * RECORD))
def test_torn_final_group_is_dropped_whole(pristine_group, tmp_path, keep):
    path = copy_log(pristine_group, tmp_path / "log")
    newest = newest_segment(path)
    group_start = record_offsets(newest)[-GROUP].offset
    torn = newest.read_bytes()[group_start : group_start + keep]
    truncate(newest, group_start + keep)
    assert_torn_tail_cut(path, newest, group_start, torn, LAST - GROUP)


@pytest.mark.parametrize("position", [0, 4, 9, 16, 20, 27, 28, 59, 60, RECORD - 1])
def test_bit_flip_in_the_last_record_of_the_final_group_drops_the_group(
    pristine_group, tmp_path, position
):
    path = copy_log(pristine_group, tmp_path / "log")
    newest = newest_segment(path)
    records = record_offsets(newest)
    flip_bit(newest, records[-1].offset + position, bit=position % 8)
    torn = newest.read_bytes()[records[-GROUP].offset :]
    assert_torn_tail_cut(path, newest, records[-GROUP].offset, torn, LAST - GROUP)


def test_bit_flip_in_the_first_record_of_the_final_group_is_corruption(pristine_group, tmp_path):
    path = copy_log(pristine_group, tmp_path / "log")
    newest = newest_segment(path)
    first = record_offsets(newest)[-GROUP]
    flip_bit(newest, first.offset + 25)
    assert_corrupt_at_open(path, newest, first.offset)


@pytest.mark.parametrize("position", range(RECORD))
def test_bit_flip_in_the_final_record_is_treated_as_a_torn_tail(log_dir, position):
    newest = newest_segment(log_dir)
    final = record_offsets(newest)[-1]
    flip_bit(newest, final.offset + position, bit=position % 8)
    torn = newest.read_bytes()[final.offset :]
    assert_torn_tail_cut(log_dir, newest, final.offset, torn, LAST - 1)


@pytest.mark.parametrize(
    "length", [0, SIZE - 1, SIZE + 1, 2**28 + 1, 2**32 - 1], ids=lambda n: f"length={n}"
)
def test_bad_length_field_in_the_final_record_is_a_torn_tail(log_dir, length):
    newest = newest_segment(log_dir)
    final = record_offsets(newest)[-1]
    overwrite(newest, final.offset + 4, length.to_bytes(4, "little"))
    torn = newest.read_bytes()[final.offset :]
    assert_torn_tail_cut(log_dir, newest, final.offset, torn, LAST - 1)


@pytest.mark.parametrize("size", [1, 59, 60, 4096], ids=lambda n: f"{n}-zeros")
def test_zero_filled_tail_is_cut_and_nothing_surfaces(log_dir, size):
    newest = newest_segment(log_dir)
    end = newest.stat().st_size
    append_bytes(newest, bytes(size))
    assert_torn_tail_cut(log_dir, newest, end, bytes(size), LAST)


BIG_TAIL = 3 * 1024 * 1024 + 5  # longer than the 1 MiB read chunk of _segment.scan_segment


def test_zero_filled_tail_longer_than_a_read_chunk_is_cut_whole(log_dir):
    newest = newest_segment(log_dir)
    end = newest.stat().st_size
    append_bytes(newest, bytes(BIG_TAIL))
    with open_log(log_dir) as log:
        assert log.recovery is not None
        assert log.recovery.offset == end
        assert log.recovery.side_file.read_bytes() == bytes(BIG_TAIL)
        assert newest.stat().st_size == end
        assert list(log.read()) == EXPECTED
    assert_appends_continue(log_dir, LAST)


def test_bytes_cut_counts_a_tail_longer_than_a_read_chunk(log_dir):
    newest = newest_segment(log_dir)
    append_bytes(newest, bytes(BIG_TAIL))
    with open_log(log_dir) as log:
        assert log.recovery is not None
        assert log.recovery.bytes_cut == BIG_TAIL


def test_torn_record_followed_by_preallocated_zeros_is_cut(log_dir):
    newest = newest_segment(log_dir)
    final = record_offsets(newest)[-1]
    truncate(newest, final.offset + RECORD // 2)
    append_bytes(newest, bytes(4096))
    torn = newest.read_bytes()[final.offset :]
    assert_torn_tail_cut(log_dir, newest, final.offset, torn, LAST - 1)


@pytest.mark.parametrize("size", [1, 59, 60, 61, RECORD, 1000, 5000])
def test_garbage_after_the_last_record_is_cut_and_never_read_as_data(log_dir, size):
    newest = newest_segment(log_dir)
    end = newest.stat().st_size
    garbage = random.Random(size).randbytes(size)
    append_bytes(newest, garbage)
    assert_torn_tail_cut(log_dir, newest, end, garbage, LAST)


def test_a_stale_copy_of_the_last_record_after_it_is_cut(log_dir):
    newest = newest_segment(log_dir)
    final = record_offsets(newest)[-1]
    stale = newest.read_bytes()[final.offset :]
    end = newest.stat().st_size
    append_bytes(newest, stale)
    assert_torn_tail_cut(log_dir, newest, end, stale, LAST)


def test_an_empty_newest_segment_with_a_torn_first_record_keeps_the_older_segments(tmp_path):
    with open_log(tmp_path) as log:
        seq = 0
        while len(segment_paths(tmp_path)) < 2:
            seq = log.append(payload(seq + 1, SIZE))
    newest = newest_segment(tmp_path)
    truncate(newest, SEGMENT_HEADER_SIZE + 7)
    with open_log(tmp_path) as log:
        assert log.recovery is not None
        assert log.recovery.offset == SEGMENT_HEADER_SIZE
        assert log.last_seq == seq - 1
        assert segment_paths(tmp_path)[-1] == newest
        assert log.append(b"next") == seq
        assert list(log.read(seq - 1)) == [(seq - 1, payload(seq - 1, SIZE)), (seq, b"next")]


def test_a_second_cut_at_the_same_offset_keeps_both_side_files(log_dir):
    newest = newest_segment(log_dir)
    end = newest.stat().st_size
    append_bytes(newest, b"first torn write")
    with open_log(log_dir):
        pass
    append_bytes(newest, b"second torn write")
    with open_log(log_dir) as log:
        assert log.recovery is not None
        assert log.recovery.offset == end
        assert log.recovery.side_file.read_bytes() == b"second torn write"
    kept = {p.name: p.read_bytes() for p in side_files(log_dir, ".cut-")}
    assert kept == {
        f"{newest.name}.cut-{end}": b"first torn write",
        f"{newest.name}.cut-{end}.1": b"second torn write",
    }


def test_cutting_a_torn_tail_logs_a_warning(log_dir, caplog):
    newest = newest_segment(log_dir)
    append_bytes(newest, b"torn")
    with caplog.at_level(logging.WARNING, logger="actorkv.storage"), open_log(log_dir):
        pass
    assert any("torn tail" in r.getMessage() for r in caplog.records)


# -- damage in the middle: CorruptLog, nothing cut -----------------------------------------


@pytest.mark.parametrize("position", range(RECORD))
def test_bit_flip_in_a_record_followed_by_intact_records_is_corruption(log_dir, position):
    newest = newest_segment(log_dir)
    victim = record_offsets(newest)[-3]
    flip_bit(newest, victim.offset + position, bit=(position * 3) % 8)
    assert_corrupt_at_open(log_dir, newest, victim.offset)


@pytest.mark.parametrize(
    "length", [0, SIZE - 1, SIZE + 1, 10_000, 2**28 + 1, 2**32 - 1], ids=lambda n: f"length={n}"
)
def test_bad_length_field_in_the_middle_is_corruption(log_dir, length):
    newest = newest_segment(log_dir)
    victim = record_offsets(newest)[-2]
    overwrite(newest, victim.offset + 4, length.to_bytes(4, "little"))
    assert_corrupt_at_open(log_dir, newest, victim.offset)


@pytest.mark.parametrize("position", [0, 7, 8, 10, 12, 19, 20, 27, 28, 45, 59, 60, 67, 68, 71])
@pytest.mark.parametrize("which", ["oldest", "middle", "newest"])
def test_corrupt_segment_header_is_corruption_naming_the_file(log_dir, which, position):
    segments = segment_paths(log_dir)
    victim = {"oldest": segments[0], "middle": segments[1], "newest": segments[-1]}[which]
    flip_bit(victim, position, bit=position % 8)
    with pytest.raises(CorruptLog) as raised:
        open_log(log_dir)
    assert raised.value.path == victim


def test_short_newest_segment_header_is_corruption(log_dir):
    newest = newest_segment(log_dir)
    truncate(newest, 40)
    assert_corrupt_at_open(log_dir, newest, 0)


def test_missing_middle_segment_is_corruption_at_open(log_dir):
    segments = segment_paths(log_dir)
    segments[1].unlink()
    with pytest.raises(CorruptLog) as raised:
        open_log(log_dir)
    assert raised.value.path == segments[2]


def test_segment_renamed_out_of_order_is_corruption(log_dir):
    segments = segment_paths(log_dir)
    base = record_offsets(segments[1])[0].seq
    moved = segments[1].with_name(f"{base + 1:020d}.seg")
    segments[1].rename(moved)
    with pytest.raises(CorruptLog) as raised:
        open_log(log_dir)
    assert raised.value.path == moved


def test_copy_of_an_older_segment_after_the_newest_is_corruption(log_dir):
    segments = segment_paths(log_dir)
    copy = segments[0].with_name(f"{LAST + 1:020d}.seg")
    shutil.copyfile(segments[0], copy)
    with pytest.raises(CorruptLog) as raised:
        open_log(log_dir)
    assert raised.value.path == copy


def test_second_segment_claiming_the_same_predecessor_is_corruption(log_dir):
    segments = segment_paths(log_dir)
    older_base = record_offsets(segments[0])[0].seq
    fork = segments[0].with_name(f"{LAST + 1:020d}.seg")
    fork.write_bytes(encode_header(LAST + 1, older_base))
    with pytest.raises(CorruptLog) as raised:
        open_log(log_dir)
    assert raised.value.path == fork
    assert raised.value.offset == 20


def test_stale_segment_tmp_file_from_a_crashed_roll_is_removed_on_open(log_dir):
    tmp = log_dir / f"{LAST + 1:020d}.seg.tmp"
    tmp.write_bytes(encode_header(LAST + 1, record_offsets(newest_segment(log_dir))[0].seq))
    half_written = log_dir / f"{LAST + 2:020d}.seg.tmp"
    half_written.write_bytes(b"AKV")
    with open_log(log_dir) as log:
        assert not tmp.exists()
        assert not half_written.exists()
        assert log.recovery is None
        assert log.last_seq == LAST
    assert_appends_continue(log_dir, LAST)


# -- sealed segments: not scanned at open, checked by read() and verify() ------------------


@pytest.mark.parametrize("index", [0, 1, -1], ids=["first", "second", "last"])
def test_bit_flip_in_a_sealed_segment_is_reported_by_read_and_verify(log_dir, index):
    sealed = segment_paths(log_dir)[0]
    records = record_offsets(sealed)
    victim = records[index]
    flip_bit(sealed, victim.offset + 30, bit=3)
    with open_log(log_dir) as log:
        assert log.recovery is None
        assert log.last_seq == LAST
        with pytest.raises(CorruptLog) as raised:
            log.verify()
        assert raised.value.path == sealed
        assert raised.value.offset == victim.offset
        seen = []
        with pytest.raises(CorruptLog) as raised:
            seen.extend(log.read())
        assert raised.value.path == sealed
        assert raised.value.offset == victim.offset
        assert seen == EXPECTED[: victim.seq - 1]
        after = record_offsets(segment_paths(log_dir)[1])[0].seq
        assert list(log.read(after)) == EXPECTED[after - 1 :]
    assert sealed.with_name(f"{sealed.name}.cut-{victim.offset}").exists() is False


def test_torn_end_of_a_sealed_segment_is_corruption_for_read(log_dir):
    sealed = segment_paths(log_dir)[0]
    final = record_offsets(sealed)[-1]
    truncate(sealed, final.offset + 5)
    with open_log(log_dir) as log:
        with pytest.raises(CorruptLog) as raised:
            log.verify()
        assert raised.value.path == sealed
        assert raised.value.offset == final.offset
    assert sealed.stat().st_size == final.offset + 5
