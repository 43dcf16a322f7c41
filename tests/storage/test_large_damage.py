"""Large damage in the newest segment: corruption when anything intact follows, however far.

Recovery may cut a tail only when no intact record with a higher sequence number exists
anywhere after the damage in the newest segment (``docs/architecture.md``, "Durability").
Each test damages a copy of a pristine single-segment log with a hole of zeros or of garbage,
from 1 KiB to 1 MiB, and reopens it: with intact records after the hole, open must raise
``CorruptLog`` at the first damaged record and change nothing; a hole that reaches the end of
the file is a torn tail and is cut into a side file as before.

Records are 70 bytes on disk, so even a 16 KiB hole swallows more than 200 of them: more than
a scan that looks a fixed number of sequence numbers ahead would see.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import NamedTuple

import pytest

from storage import CorruptLog, SegmentedLog
from tests.storage.helpers import (
    GROUP_CONTINUES,
    RECORD_HEADER_SIZE,
    SEGMENT_HEADER_SIZE,
    RecordInfo,
    newest_segment,
    overwrite,
    record_offsets,
    segment_paths,
    side_files,
)

KIB = 1024
HOLES = [KIB, 16 * KIB, 256 * KIB, 1024 * KIB]
LAST = 80_000  # records in the pristine logs: 5.3 MiB, one segment
GROUP = 8  # records per append_batch in the group-written log
BIG_SEGMENT = 64 * 1024 * KIB
POSITIONS = ["near-start", "middle", "well-before-end", "just-before-the-last-record"]
FILLS = ["zeros", "garbage"]


def value(seq: int) -> bytes:
    """A 10-byte payload naming its record: 70 bytes on disk."""
    return f"{seq:010d}".encode()


EXPECTED = [(seq, value(seq)) for seq in range(1, LAST + 1)]


class Pristine(NamedTuple):
    """A closed log and where its records lie (walked once: a Python loop over 80,000)."""

    segment: Path
    records: list[RecordInfo]


@pytest.fixture(scope="module", params=["append", "append_batch"])
def pristine(request, tmp_path_factory):
    """A closed log of LAST records in one segment, written one by one or in groups."""
    log_dir = tmp_path_factory.mktemp(request.param)
    with SegmentedLog.open(log_dir, segment_bytes=BIG_SEGMENT, fsync="never") as log:
        if request.param == "append":
            for seq in range(1, LAST + 1):
                log.append(value(seq))
        else:
            for first in range(1, LAST + 1, GROUP):
                log.append_batch([value(seq) for seq in range(first, first + GROUP)])
    assert len(segment_paths(log_dir)) == 1
    segment = newest_segment(log_dir)
    records = record_offsets(segment)
    assert [r.seq for r in records] == list(range(1, LAST + 1))
    return Pristine(segment, records)


def log_for(pristine: Pristine, hole: int, tmp_path: Path) -> tuple[Path, list[RecordInfo]]:
    """A copy of the pristine log cut after its first records, about ``2 * hole + 160 KiB``.

    Cut at the end of a group, so the copy is a sound log on its own; a shorter log per
    hole size keeps the scans of the small cases quick.
    """
    wanted = 2 * hole + 160 * KIB
    count = next(i + 1 for i, r in enumerate(pristine.records) if r.end >= wanted)
    count += -count % GROUP
    records = pristine.records[:count]
    assert records[-1].end >= wanted
    log_dir = tmp_path / "log"
    log_dir.mkdir()
    segment = log_dir / pristine.segment.name
    segment.write_bytes(pristine.segment.read_bytes()[: records[-1].end])
    return segment, records


def open_log(path):
    return SegmentedLog.open(path, segment_bytes=BIG_SEGMENT)


def hole_start(position: str, hole: int, records: list[RecordInfo]) -> int:
    """Where a hole of ``hole`` bytes begins in a segment holding ``records``."""
    size = records[-1].end
    if position == "near-start":
        return SEGMENT_HEADER_SIZE + 3 * (RECORD_HEADER_SIZE + 10) + 7
    if position == "middle":
        return (size - hole) // 2
    if position == "well-before-end":
        return size - hole - 64 * KIB - 11
    return records[-1].offset - hole  # the hole ends where the final record begins


def punch_hole(path, start: int, length: int, fill: str) -> bytes:
    """Overwrite ``length`` bytes at ``start`` with zeros or garbage; returns the file after.

    Garbage differs from the original in every byte, so the damage starts exactly at
    ``start`` whatever the random bytes are.
    """
    if fill == "zeros":
        damage = bytes(length)
    else:
        original = path.read_bytes()[start : start + length]
        mask = random.Random(start * 31 + length).randbytes(length).replace(b"\x00", b"\x5a")
        damage = (int.from_bytes(original, "big") ^ int.from_bytes(mask, "big")).to_bytes(
            length, "big"
        )
    overwrite(path, start, damage)
    return path.read_bytes()


def record_at(records: list[RecordInfo], offset: int) -> int:
    """Index of the record whose bytes include ``offset``."""
    return next(i for i, record in enumerate(records) if record.offset <= offset < record.end)


def group_start(records: list[RecordInfo], index: int) -> int:
    """Index of the first record of the group that holds ``records[index]``."""
    while index > 0 and records[index - 1].flags & GROUP_CONTINUES:
        index -= 1
    return index


@pytest.mark.parametrize("fill", FILLS)
@pytest.mark.parametrize("position", POSITIONS)
@pytest.mark.parametrize("hole", HOLES, ids=lambda n: f"{n // KIB}KiB")
def test_a_hole_followed_by_an_intact_record_is_corruption_however_large(
    pristine, tmp_path, hole, position, fill
):
    segment, records = log_for(pristine, hole, tmp_path)
    log_dir = segment.parent
    start = hole_start(position, hole, records)
    first_damaged = records[record_at(records, start)]
    assert any(r.offset >= start + hole for r in records)  # intact records follow the hole
    damaged = punch_hole(segment, start, hole, fill)
    before = sorted(p.name for p in log_dir.iterdir() if p.name != "LOCK")

    with pytest.raises(CorruptLog) as raised:
        open_log(log_dir)

    assert raised.value.path == segment
    assert raised.value.offset == first_damaged.offset
    assert "a later record is intact" in raised.value.reason
    assert segment.read_bytes() == damaged
    assert side_files(log_dir, ".cut-") == []
    assert sorted(p.name for p in log_dir.iterdir() if p.name != "LOCK") == before


@pytest.mark.parametrize("fill", FILLS)
@pytest.mark.parametrize("hole", HOLES, ids=lambda n: f"{n // KIB}KiB")
def test_a_hole_reaching_the_end_of_the_newest_segment_is_cut_as_a_torn_tail(
    pristine, tmp_path, hole, fill
):
    segment, records = log_for(pristine, hole, tmp_path)
    log_dir = segment.parent
    size = segment.stat().st_size
    start = size - hole
    kept = group_start(records, record_at(records, start))
    cut_at = records[kept].offset
    last_seq = records[kept].seq - 1
    damaged = punch_hole(segment, start, hole, fill)

    with open_log(log_dir) as log:
        cut = log.recovery
        assert cut is not None
        assert cut.segment == segment
        assert cut.offset == cut_at
        assert cut.bytes_cut == size - cut_at
        assert cut.side_file == segment.with_name(f"{segment.name}.cut-{cut_at}")
        assert cut.side_file.read_bytes() == damaged[cut_at:]
        assert segment.read_bytes() == damaged[:cut_at]
        assert log.last_seq == last_seq
        assert list(log.read()) == EXPECTED[:last_seq]
        assert log.append(b"after the cut") == last_seq + 1
    with open_log(log_dir) as log:
        assert log.recovery is None
        assert list(log.read(last_seq)) == [
            (last_seq, value(last_seq)),
            (last_seq + 1, b"after the cut"),
        ]
