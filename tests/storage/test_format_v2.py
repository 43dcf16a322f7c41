"""Format version 2 byte by byte: commit times, the hash chain, keys, and version-1 logs.

Layouts are parsed with ``helpers`` from ``docs/format.md``, and hashes recomputed there
with hashlib, so a bug in ``storage._framing`` cannot hide itself.
"""

from __future__ import annotations

import errno
import math
import struct
import zlib
from pathlib import Path

import pytest

from storage import (
    ChainKeyMismatch,
    CorruptLog,
    InvalidOption,
    LogOptions,
    LogReader,
    OpenFailed,
    SegmentedLog,
    repair,
    verify,
)
from tests.storage.faults import FaultInjector
from tests.storage.helpers import (
    CHAIN_KEYED,
    GROUP_CONTINUES,
    RECORD_HEADER_SIZE,
    SEGMENT_HEADER,
    SEGMENT_HEADER_SIZE,
    SEGMENT_HEADER_SIZE_V1,
    ZERO_HEAD,
    append_bytes,
    files_of,
    flip_bit,
    newest_segment,
    payload,
    record_hash,
    record_offsets,
    segment_head,
    segment_paths,
    segment_version,
    side_files,
    truncate,
    write_v1_log,
)

SMALL = 4096
KEY = b"the chain key of these tests"


class SteppingClock:
    """A clock that returns the given times in turn (the last one from then on), counting calls."""

    def __init__(self, *times: float) -> None:
        self.times = list(times)
        self.calls = 0

    def __call__(self) -> float:
        self.calls += 1
        return self.times.pop(0) if len(self.times) > 1 else self.times[0]


def open_log(path: Path, **options: object) -> SegmentedLog:
    options.setdefault("segment_bytes", SMALL)
    options.setdefault("fsync", "never")
    return SegmentedLog.open(path, **options)  # type: ignore[arg-type]


def chain_of(path: Path, key: bytes | None = None) -> list[tuple[int, bytes, bytes]]:
    """``(seq, stored hash, hash recomputed from docs/format.md)`` of every record, in order."""
    found = []
    prev: bytes | None = None
    for segment in segment_paths(path):
        data = segment.read_bytes()
        if prev is None:
            prev = segment_head(segment)
        for record in record_offsets(segment):
            hashed = data[record.offset + 4 : record.offset + 28]
            body = data[record.payload_offset : record.end]
            prev_stored = prev
            prev = record.digest
            found.append((record.seq, record.digest, record_hash(prev_stored, hashed, body, key)))
    return found


# -- the layout ------------------------------------------------------------------------------


def test_a_record_is_a_60_byte_header_with_its_time_and_hash_then_the_payload(tmp_path: Path):
    clock = SteppingClock(1_700_000_000.25)
    with open_log(tmp_path, clock=clock) as log:
        log.append_batch([b"first", b"second"])
    segment = newest_segment(tmp_path)
    data = segment.read_bytes()
    first, second = record_offsets(segment)
    assert (first.offset, second.offset) == (SEGMENT_HEADER_SIZE, SEGMENT_HEADER_SIZE + 65)
    crc, length, seq, flags, reserved, time, digest = struct.unpack_from(
        "<IIQHHd32s", data, first.offset
    )
    assert (length, seq, flags, reserved, time) == (5, 1, GROUP_CONTINUES, 0, 1_700_000_000.25)
    assert crc == zlib.crc32(data[first.offset + 4 : first.end])
    assert data[first.offset + RECORD_HEADER_SIZE : first.end] == b"first"
    assert digest == record_hash(ZERO_HEAD, data[first.offset + 4 : first.offset + 28], b"first")
    assert second.flags == 0
    assert second.digest == record_hash(
        digest, data[second.offset + 4 : second.offset + 28], b"second"
    )


def test_a_segment_header_is_72_bytes_with_the_chain_head_and_time_at_its_start(tmp_path: Path):
    with open_log(tmp_path, clock=SteppingClock(1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0)) as log:
        while len(segment_paths(tmp_path)) < 3:
            log.append(payload(log.next_seq, 300))
    first, second, third = segment_paths(tmp_path)
    for path, previous in ((first, None), (second, first), (third, second)):
        magic, version, flags, base, prev_base, head, time, crc = SEGMENT_HEADER.unpack_from(
            path.read_bytes()
        )
        assert (magic, version, flags) == (b"AKVLOG\r\n", 2, 0)
        assert crc == zlib.crc32(path.read_bytes()[:68])
        assert base == record_offsets(path)[0].seq
        if previous is None:
            assert (prev_base, head, time) == (0, ZERO_HEAD, 0.0)
        else:
            assert prev_base == record_offsets(previous)[0].seq
            assert head == record_offsets(previous)[-1].digest
            assert time == record_offsets(previous)[-1].time > 0.0


def test_every_stored_hash_is_the_hash_of_the_previous_one_header_and_payload(tmp_path: Path):
    with open_log(tmp_path) as log:
        for seq in range(1, 120):
            log.append_batch([payload(seq, 7 * (seq % 5))] * (seq % 3 + 1))
    links = chain_of(tmp_path)
    assert len(links) == sum(seq % 3 + 1 for seq in range(1, 120))
    assert all(stored == recomputed for _, stored, recomputed in links)


def test_a_keyed_chain_flags_every_segment_and_hashes_with_the_key(tmp_path: Path):
    with open_log(tmp_path, chain_key=KEY) as log:
        while len(segment_paths(tmp_path)) < 2:
            log.append(payload(log.next_seq, 300))
        assert log.keyed
    for path in segment_paths(tmp_path):
        assert SEGMENT_HEADER.unpack_from(path.read_bytes())[2] == CHAIN_KEYED
    assert all(stored == recomputed for _, stored, recomputed in chain_of(tmp_path, KEY))
    assert not any(stored == recomputed for _, stored, recomputed in chain_of(tmp_path))


def test_the_key_is_never_written_to_disk_nor_shown_in_the_options(tmp_path: Path):
    with open_log(tmp_path, chain_key=KEY) as log:
        log.append(b"x")
        assert KEY.decode() not in repr(log.options)
        assert KEY.decode() not in repr(log)
    assert all(KEY not in data for data in files_of(tmp_path).values())


# -- commit times ----------------------------------------------------------------------------


def test_every_record_of_a_group_carries_the_one_time_read_from_the_clock(tmp_path: Path):
    clock = SteppingClock(100.5, 200.25)
    with open_log(tmp_path, clock=clock) as log:
        log.append_batch([b"a", b"b", b"c"])
        log.append(b"d")
        log.append_batch([])
        assert clock.calls == 2
        assert [r for chunk in log.read_timed_chunks() for r in chunk] == [
            (1, 100.5, b"a"),
            (2, 100.5, b"b"),
            (3, 100.5, b"c"),
            (4, 200.25, b"d"),
        ]
        assert log.last_time == 200.25


def test_commit_times_never_go_back_when_the_clock_does(tmp_path: Path):
    clock = SteppingClock(50.0, 40.0, 60.0, 59.999, -5.0, 61.0)
    with open_log(tmp_path, clock=clock) as log:
        for seq in range(1, 7):
            log.append(payload(seq))
        times = [time for chunk in log.read_timed_chunks() for _, time, _ in chunk]
    assert times == [50.0, 50.0, 60.0, 60.0, 60.0, 61.0]


def test_a_first_record_before_the_epoch_gets_time_zero(tmp_path: Path):
    with open_log(tmp_path, clock=SteppingClock(-3.0)) as log:
        log.append(b"early")
        assert log.time_of(1) == 0.0 == log.last_time


def test_times_and_the_head_survive_a_reopen(tmp_path: Path):
    clock = SteppingClock(10.0, 11.0, 12.0)
    with open_log(tmp_path, clock=clock) as log:
        log.append(b"a")
        log.append_batch([b"b", b"c"])
        head = log.head
    with open_log(tmp_path, clock=SteppingClock(5.0)) as log:
        assert (log.last_seq, log.last_time, log.head) == (3, 11.0, head)
        log.append(b"d")  # the clock is behind: the time of record 3 is kept
        assert [t for chunk in log.read_timed_chunks() for _, t, _ in chunk] == [10, 11, 11, 11]


@pytest.mark.parametrize("dropped", [False, True], ids=["kept", "dropped-by-retention"])
def test_an_empty_newest_segment_knows_the_head_and_time_of_the_record_before_it(
    tmp_path: Path, dropped: bool
):
    clock = SteppingClock(1.0, 2.0, 3.0)
    with open_log(tmp_path, clock=clock) as log:
        log.append(b"x" * 10)
        log.append(b"y" * 100)
        head = log.head
        assert log.roll()
        if dropped:
            size = segment_paths(tmp_path)[0].stat().st_size
            assert log.drop_segments(3) == (1, size)
    assert len(record_offsets(newest_segment(tmp_path))) == 0
    assert SEGMENT_HEADER.unpack_from(newest_segment(tmp_path).read_bytes())[5:7] == (head, 2.0)
    with open_log(tmp_path, clock=SteppingClock(0.5)) as log:
        assert (log.last_seq, log.last_time, log.head) == (2, 2.0, head)
        assert log.time_of(2) == 2.0
        assert log.append(b"z") == 3
        assert log.time_of(3) == 2.0
    assert verify(tmp_path).ok


def test_the_same_writes_under_the_same_clock_give_the_same_bytes(tmp_path: Path):
    for name in ("one", "two"):
        with open_log(tmp_path / name, clock=SteppingClock(7.0, 8.5, 9.0)) as log:
            for seq in range(1, 60):
                log.append_batch([payload(seq, 80)] * (seq % 4 + 1))
    assert files_of(tmp_path / "one") == files_of(tmp_path / "two")
    assert len(segment_paths(tmp_path / "one")) > 2


@pytest.mark.parametrize(
    "bad", [math.nan, math.inf, -math.inf, "noon", None], ids=["nan", "inf", "-inf", "str", "none"]
)
def test_a_clock_that_returns_no_time_is_refused_and_nothing_is_written(tmp_path: Path, bad):
    with open_log(tmp_path, clock=SteppingClock(1.0, bad, 2.0)) as log:  # type: ignore[arg-type]
        log.append(b"before")
        before = files_of(tmp_path)
        with pytest.raises(InvalidOption, match="clock"):
            log.append(b"refused")
        assert files_of(tmp_path) == before
        assert log.append(b"after") == 2
        assert [p for _, p in log.read()] == [b"before", b"after"]


@pytest.mark.parametrize(
    "options",
    [
        {"clock": 12.0},
        {"chain_key": b""},
        {"chain_key": b"k" * 65},
        {"chain_key": "text key"},
        {"chain_key": bytearray(b"key")},
    ],
    ids=["clock-not-callable", "empty-key", "65-byte-key", "str-key", "bytearray-key"],
)
def test_bad_clock_or_chain_key_options_are_invalid_options(tmp_path: Path, options):
    with pytest.raises(InvalidOption) as raised:
        SegmentedLog.open(tmp_path / "log", **options)
    assert not (tmp_path / "log").exists()
    assert "text key" not in str(raised.value)
    with pytest.raises(InvalidOption):
        LogOptions(**options)


def test_a_64_byte_key_is_the_longest_accepted(tmp_path: Path):
    with open_log(tmp_path, chain_key=b"k" * 64) as log:
        log.append(b"x")
    assert verify(tmp_path, key=b"k" * 64).ok


# -- chain keys at open ------------------------------------------------------------------------


def keyed_log(path: Path, records: int = 30) -> dict[str, bytes]:
    with open_log(path, chain_key=KEY) as log:
        for seq in range(1, records + 1):
            log.append(payload(seq, 200))
    return files_of(path)


def test_a_keyed_log_opened_without_its_key_is_refused_and_unchanged(tmp_path: Path):
    before = keyed_log(tmp_path)
    append_bytes(newest_segment(tmp_path), b"torn")  # not cut either: nothing changes
    torn = files_of(tmp_path)
    with pytest.raises(ChainKeyMismatch, match="open it with the chain_key") as raised:
        open_log(tmp_path)
    assert raised.value.keyed
    assert files_of(tmp_path) == torn != before
    with open_log(tmp_path, chain_key=KEY) as log:  # the lock was released
        assert log.last_seq == 30


def test_an_unkeyed_log_opened_with_a_key_is_refused(tmp_path: Path):
    with open_log(tmp_path) as log:
        log.append(b"x")
    with pytest.raises(ChainKeyMismatch, match="open it without chain_key") as raised:
        open_log(tmp_path, chain_key=KEY)
    assert not raised.value.keyed
    assert KEY.decode() not in str(raised.value)


def test_a_keyed_log_opened_with_another_key_is_refused(tmp_path: Path):
    before = keyed_log(tmp_path)
    with pytest.raises(ChainKeyMismatch, match="another chain_key") as raised:
        open_log(tmp_path, chain_key=b"not the key")
    assert "not the key" not in str(raised.value)
    assert files_of(tmp_path) == before


def test_the_wrong_key_is_found_when_the_newest_segment_holds_no_record_yet(tmp_path: Path):
    keyed_log(tmp_path)
    with open_log(tmp_path, chain_key=KEY) as log:
        assert log.roll()
    assert record_offsets(newest_segment(tmp_path)) == []
    with pytest.raises(ChainKeyMismatch, match="another chain_key"):
        open_log(tmp_path, chain_key=b"not the key")
    with open_log(tmp_path, chain_key=KEY) as log:
        assert log.append(b"next") == 31


def test_an_empty_log_takes_the_keyedness_of_the_open_that_writes_its_first_record(
    tmp_path: Path,
):
    with open_log(tmp_path):
        pass
    with open_log(tmp_path, chain_key=KEY) as log:
        assert log.keyed
        log.append(b"first")
    assert SEGMENT_HEADER.unpack_from(newest_segment(tmp_path).read_bytes())[2] == CHAIN_KEYED
    with pytest.raises(ChainKeyMismatch):
        open_log(tmp_path)
    assert verify(tmp_path, key=KEY).ok


# -- the head after recovery -----------------------------------------------------------------


def test_a_torn_group_is_cut_and_the_head_is_the_hash_before_the_group(tmp_path: Path):
    with open_log(tmp_path, fsync="always") as log:
        log.append(b"kept")
        head = log.head
        log.append_batch([b"torn-1", b"torn-2", b"torn-3"])
    segment = newest_segment(tmp_path)
    truncate(segment, record_offsets(segment)[-1].offset + 5)
    with open_log(tmp_path) as log:
        assert log.recovery is not None
        assert (log.last_seq, log.head) == (1, head)
        log.append(b"after")
    assert verify(tmp_path).ok


def test_the_anchor_is_the_last_seq_and_the_head_taken_together(tmp_path: Path):
    with open_log(tmp_path) as log:
        assert (log.anchor().seq, log.anchor().head) == (0, ZERO_HEAD)
        log.append(b"one")
        anchor = log.anchor()
        assert (anchor.seq, anchor.head) == (1, log.head)
        assert anchor.head == record_offsets(newest_segment(tmp_path))[0].digest


# -- version 1 -------------------------------------------------------------------------------


V1_GROUPS = [[payload(1, 90)], [payload(2, 90), payload(3, 90)]] + [
    [payload(seq, 90)] for seq in range(4, 80)
]
V1_RECORDS = [(seq, payload(seq, 90)) for seq in range(1, 80)]


def test_a_version_1_log_opens_and_continues_in_version_2(tmp_path: Path):
    v1 = write_v1_log(tmp_path, V1_GROUPS)
    assert len(v1) > 2
    with open_log(tmp_path, clock=SteppingClock(123.0)) as log:
        assert (log.first_seq, log.last_seq, log.head, log.last_time) == (1, 79, ZERO_HEAD, 0.0)
        assert log.append(b"chained") == 80
        assert list(log.read()) == [*V1_RECORDS, (80, b"chained")]
        timed = [record for chunk in log.read_timed_chunks() for record in chunk]
        assert timed[:79] == [(seq, 0.0, data) for seq, data in V1_RECORDS]
        assert timed[79] == (80, 123.0, b"chained")
    segments = segment_paths(tmp_path)
    assert segments[:-1] == v1
    assert [segment_version(path) for path in segments] == [1] * len(v1) + [2]
    header = SEGMENT_HEADER.unpack_from(segments[-1].read_bytes())
    assert header[3:7] == (80, record_offsets(v1[-1])[0].seq, ZERO_HEAD, 0.0)
    report = verify(tmp_path)
    assert report.ok, report.problems
    assert (report.unchained_through, report.records, report.last_seq) == (79, 80, 80)


def test_an_empty_version_1_log_is_replaced_by_an_empty_version_2_segment(tmp_path: Path):
    (only,) = write_v1_log(tmp_path, [])
    assert only.stat().st_size == SEGMENT_HEADER_SIZE_V1
    with open_log(tmp_path) as log:
        assert (log.first_seq, log.last_seq) == (1, 0)
        assert log.append(b"first") == 1
    assert segment_paths(tmp_path) == [only]
    assert segment_version(only) == 2
    assert verify(tmp_path).unchained_through == 0


def test_a_crash_while_a_version_1_log_moves_on_leaves_it_openable(tmp_path: Path):
    write_v1_log(tmp_path, V1_GROUPS)
    before = files_of(tmp_path)
    with FaultInjector("rename", error=errno.EIO), pytest.raises(OpenFailed):
        open_log(tmp_path)
    after = files_of(tmp_path)
    assert {name: after[name] for name in before} == before
    assert set(after) - set(before) <= {f"{80:020d}.seg.tmp"}  # removed by the next open
    with open_log(tmp_path) as log:
        assert list(log.read()) == V1_RECORDS
        assert log.append(b"next") == 80


def test_a_torn_tail_of_a_version_1_log_is_cut_in_its_framing_before_it_moves_on(
    tmp_path: Path,
):
    v1 = write_v1_log(tmp_path, V1_GROUPS)
    final = record_offsets(v1[-1])[-1]
    truncate(v1[-1], final.offset + 11)
    with open_log(tmp_path) as log:
        assert log.recovery is not None
        assert (log.recovery.segment, log.recovery.offset) == (v1[-1], final.offset)
        assert log.last_seq == 78
        assert log.append(b"next") == 79
    assert segment_version(newest_segment(tmp_path)) == 2
    assert [p.name for p in side_files(tmp_path, ".cut-")] == [f"{v1[-1].name}.cut-{final.offset}"]


def test_damage_in_the_middle_of_a_version_1_newest_segment_is_corrupt_log(tmp_path: Path):
    v1 = write_v1_log(tmp_path, V1_GROUPS)
    victim = record_offsets(v1[-1])[1]
    flip_bit(v1[-1], victim.offset + 22)
    before = files_of(tmp_path)
    with pytest.raises(CorruptLog) as raised:
        open_log(tmp_path)
    assert (raised.value.path, raised.value.offset) == (v1[-1], victim.offset)
    assert "a later record is intact" in raised.value.reason
    assert files_of(tmp_path) == before


def test_a_version_1_segment_after_a_version_2_one_is_corrupt_log(tmp_path: Path):
    with open_log(tmp_path) as log:
        log.append(b"v2")
    stale = write_v1_log(tmp_path / "old", [[b"a"], [b"b"]])[0]
    body = struct.pack("<8sHHQQ", b"AKVLOG\r\n", 1, 0, 2, 1)
    (tmp_path / f"{2:020d}.seg").write_bytes(
        body + struct.pack("<I", zlib.crc32(body)) + stale.read_bytes()[32:]
    )
    with pytest.raises(CorruptLog, match="version-1 segment after a version-2") as raised:
        open_log(tmp_path)
    assert raised.value.path == tmp_path / f"{2:020d}.seg"


def test_a_version_1_log_is_read_by_a_reader_without_changing_it(tmp_path: Path):
    write_v1_log(tmp_path, V1_GROUPS)
    before = files_of(tmp_path)
    reader = LogReader.open(tmp_path)
    assert list(reader.read()) == V1_RECORDS
    assert [r for chunk in reader.read_timed_chunks(78) for r in chunk] == [
        (seq, 0.0, data) for seq, data in V1_RECORDS[77:]
    ]
    assert (reader.time_of(40), reader.seq_at(0.0), reader.head) == (0.0, 79, ZERO_HEAD)
    assert files_of(tmp_path) == before


def test_repair_cuts_a_version_1_log_at_a_bit_flip_and_it_opens_in_version_2(tmp_path: Path):
    v1 = write_v1_log(tmp_path, V1_GROUPS)
    victim = record_offsets(v1[1])[2]
    flip_bit(v1[1], victim.offset + 25)
    report = repair(tmp_path)
    assert (report.damaged, report.offset, report.last_seq) == (
        v1[1],
        victim.offset,
        victim.seq - 1,
    )
    with open_log(tmp_path) as log:
        assert list(log.read()) == V1_RECORDS[: victim.seq - 1]
        assert log.append(b"next") == victim.seq
    assert verify(tmp_path).ok
