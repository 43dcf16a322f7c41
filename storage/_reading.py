"""Reading records across segments, checked: the one loop ``read`` and replay share.

Every record's CRC and sequence number are checked; a gap, an overlap or a damaged record
raises :class:`CorruptLog` with the file and offset. Reads use their own descriptors, so
they are safe while the log appends. Version-1 segments read like version-2 ones, their
records with commit time ``0.0``.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import cast

from storage._framing import Record, TimedRecord
from storage._recovery import Segment
from storage._segment import ScanEnd, scan_segment
from storage.errors import CorruptLog, HistoryUnavailable

__all__ = ["LogCursor", "read_chunks", "read_records", "read_timed_chunks"]


def read_records(segments: list[Segment], start: int, last_seq: int) -> Iterator[Record]:
    """Yield ``(seq, payload)`` from ``start`` to ``last_seq`` across ``segments``, checked.

    Raises:
        CorruptLog: (while iterating) a damaged record, a gap or an overlap.
    """
    for records in read_chunks(segments, start, last_seq):
        yield from records


def read_chunks(segments: list[Segment], start: int, last_seq: int) -> Iterator[list[Record]]:
    """Like :func:`read_records`, a list of records (about 1 MiB of them) at a time."""
    return cast("Iterator[list[Record]]", _chunks(segments, start, last_seq, timed=False))


def read_timed_chunks(
    segments: list[Segment], start: int, last_seq: int
) -> Iterator[list[TimedRecord]]:
    """Like :func:`read_chunks`, each record as ``(seq, time, payload)``."""
    return cast("Iterator[list[TimedRecord]]", _chunks(segments, start, last_seq, timed=True))


def _chunks(
    segments: list[Segment], start: int, last_seq: int, *, timed: bool
) -> Iterator[list[Record] | list[TimedRecord]]:
    if start > last_seq:
        return
    first = bisect.bisect_right([s.base_seq for s in segments], start) - 1
    for index in range(first, len(segments)):
        segment = segments[index]
        following = segments[index + 1] if index + 1 < len(segments) else None
        ceiling = last_seq if following is None else min(last_seq, following.base_seq - 1)
        scan = scan_segment(
            segment.path,
            segment.base_seq,
            version=segment.version,
            min_seq=start,
            max_seq=ceiling,
            timed=timed,
        )
        while True:
            try:
                records = next(scan)
            except StopIteration as stopped:
                end = stopped.value
                break
            yield records
        if end.next_seq <= ceiling:
            reason = end.problem or f"segment ends at seq {end.next_seq - 1}"
            raise CorruptLog(segment.path, end.offset, f"{reason}; expected up to {ceiling}")
        if following is not None and end.offset != end.size:
            reason = f"segment holds records past {ceiling}, overlapping the next segment"
            raise CorruptLog(segment.path, end.offset, reason)
        if ceiling == last_seq:
            return


class LogCursor:
    """Reads a log forward from a seq, each read going on where the last one ended.

    A follower (a subscription catching up) reads a little at a time as the writer goes
    on; starting each read at the start of its segment would make that quadratic. The
    cursor keeps the file offset of its next record, so a read costs only what it returns.
    Records are checked like every read's.
    """

    def __init__(self, segments_of: Callable[[], list[Segment]], from_seq: int) -> None:
        """Start at ``from_seq``; ``segments_of()`` gives the log's segments now."""
        self._segments_of = segments_of
        self.next_seq = from_seq
        """The seq the next read starts at."""
        self._at: tuple[Path, int] | None = None  # (segment, offset of next_seq in it)

    def read(self, last_seq: int, limit: int) -> list[TimedRecord]:
        """``(seq, time, payload)`` from :attr:`next_seq` to ``last_seq``, at most ``limit``.

        Raises:
            HistoryUnavailable: Retention dropped :attr:`next_seq`.
            CorruptLog: A damaged record, a gap or an overlap.
        """
        found: list[TimedRecord] = []
        while self.next_seq <= last_seq and len(found) < limit:
            segments = self._segments_of()
            if self.next_seq < segments[0].base_seq:  # a log always has a segment
                where = str(segments[0].path.parent)
                raise HistoryUnavailable(where, self.next_seq, segments[0].base_seq)
            index = bisect.bisect_right([s.base_seq for s in segments], self.next_seq) - 1
            segment = segments[index]
            following = segments[index + 1].base_seq if index + 1 < len(segments) else None
            ceiling = min(last_seq, self.next_seq + limit - len(found) - 1)
            if following is not None:
                ceiling = min(ceiling, following - 1)
            at = self._at
            start = (at[1], self.next_seq) if at is not None and at[0] == segment.path else None
            scan = scan_segment(
                segment.path,
                segment.base_seq,
                version=segment.version,
                min_seq=self.next_seq,
                max_seq=ceiling,
                timed=True,
                start=start,
            )
            while True:
                try:
                    found.extend(cast("list[TimedRecord]", next(scan)))
                except StopIteration as stopped:
                    end: ScanEnd = stopped.value
                    break
            if end.next_seq <= ceiling:
                reason = end.problem or f"segment ends at seq {end.next_seq - 1}"
                raise CorruptLog(segment.path, end.offset, f"{reason}; expected up to {ceiling}")
            self.next_seq = end.next_seq
            self._at = None if end.next_seq == following else (segment.path, end.offset)
        return found
