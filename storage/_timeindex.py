"""Commit times by seq and seqs by time: a sparse, lazily built index per segment.

See ``docs/format.md``, "Commit time". Times never go back within a log, so both questions
are binary searches: across segments by the time of their first record (one small read
each, cached), within a segment over an index of ``(seq, time, offset)`` with one entry
per ``TIME_INDEX_SPAN`` bytes, then a checked parse of the one span that holds the answer.

A segment's index is built the first time the segment is asked about, by one checked scan
(about 0.7 us per record: 0.3 s for a full 64 MiB segment of 100-byte records), and kept:
sealed segments never change, and the active one is extended from where its index ended up
to the caller's ``last_seq``, so appends never touch it. Memory: 24 bytes per entry, about
200 KiB per full 64 MiB segment. A query then costs one read of at most a span plus one
record (8 KiB) and a checked parse of the records in it: ``time_of`` about 26 us,
``seq_at`` about 60 us (it parses the whole span), measured on ~1M records of 100 bytes
(``bench/test_chain_bench.py``, 2-core machine).

Thread-safe: queries take the index's own lock (never the log's).
"""

from __future__ import annotations

import bisect
import math
import os
import threading
from array import array
from pathlib import Path

from storage import _fileio
from storage._format import FORMAT_VERSION, TIME_INDEX_SPAN
from storage._framing import TimedRecord, index_records, parse_records, time_and_hash_at
from storage._recovery import Segment
from storage._segment import READ_CHUNK_BYTES, read_record
from storage.errors import CorruptLog, HistoryUnavailable, InvalidOption

__all__ = ["TimeIndex", "seq_at", "time_of"]


class _SegmentTimes:
    """The index of one segment: entries, and how far it covers."""

    __slots__ = ("next_mark", "next_seq", "offset", "offsets", "seqs", "times")

    def __init__(self, segment: Segment) -> None:
        self.seqs: array[int] = array("q")
        self.times: array[float] = array("d")
        self.offsets: array[int] = array("q")
        self.next_seq = segment.base_seq
        """The first record not indexed yet."""
        self.offset = segment.data_start
        """Where that record starts."""
        self.next_mark = segment.data_start


class TimeIndex:
    """The time index of one log's segments (see the module notes).

    Every query gets the caller's view of the log: its segments, oldest first, and its
    ``last_seq``; the segment of a seq is the last one whose ``base_seq`` is at most it.
    """

    def __init__(self) -> None:
        """An empty index; segments are indexed when first asked about."""
        self._lock = threading.Lock()
        self._segments: dict[Path, _SegmentTimes] = {}
        self._first_times: dict[Path, float] = {}

    def time_of(self, segments: list[Segment], seq: int) -> float:
        """The commit time of record ``seq``, which the segments hold.

        Raises:
            CorruptLog: A damaged record on the way.
            FileNotFoundError: Retention removed the segment meanwhile.
        """
        index = bisect.bisect_right([s.base_seq for s in segments], seq) - 1
        segment = segments[index]
        if segment.version < FORMAT_VERSION:
            return 0.0
        with self._lock:
            self._forget_dropped(segments)
            times = self._extended(segment, seq)
            entry = bisect.bisect_right(times.seqs, seq) - 1
            found = self._span(segment, times, entry, seq, seq)
        return found[0][1]

    def seq_at(self, segments: list[Segment], last_seq: int, time: float) -> int | None:
        """The last record committed at or before ``time``; None if even the first is later.

        Raises:
            CorruptLog: A damaged record on the way.
            FileNotFoundError: Retention removed a segment meanwhile.
        """
        ranges = [
            (segment, segments[i + 1].base_seq - 1 if i + 1 < len(segments) else last_seq)
            for i, segment in enumerate(segments)
        ]
        ranges = [(segment, last) for segment, last in ranges if last >= segment.base_seq]
        with self._lock:
            self._forget_dropped(segments)
            low, high = 0, len(ranges)  # find the last segment whose first time <= time
            while low < high:
                middle = (low + high) // 2
                if self._first_time(ranges[middle][0]) <= time:
                    low = middle + 1
                else:
                    high = middle
            if low == 0:
                return None
            segment, last = ranges[low - 1]
            if segment.version < FORMAT_VERSION:
                return last  # every version-1 record has time 0.0 <= time
            times = self._extended(segment, last)
            entry = max(0, bisect.bisect_right(times.times, time) - 1)
            records = self._span(segment, times, entry, 0, last)
        return max(seq for seq, at, _ in records if at <= time)

    # -- internals (with self._lock held) --------------------------------------------------

    def _forget_dropped(self, segments: list[Segment]) -> None:
        if len(self._segments) > len(segments) or len(self._first_times) > len(segments):
            present = {segment.path for segment in segments}
            self._segments = {p: t for p, t in self._segments.items() if p in present}
            self._first_times = {p: t for p, t in self._first_times.items() if p in present}

    def _first_time(self, segment: Segment) -> float:
        if segment.version < FORMAT_VERSION:
            return 0.0
        known = self._first_times.get(segment.path)
        if known is None:
            record = read_record(segment.path, segment.data_start, segment.base_seq)
            if record is None:
                reason = f"record {segment.base_seq} (the segment's first) is damaged"
                raise CorruptLog(segment.path, segment.data_start, reason)
            known = time_and_hash_at(record[0], 0)[0]
            self._first_times[segment.path] = known
        return known

    def _extended(self, segment: Segment, seq: int) -> _SegmentTimes:
        """The segment's index, extended to cover record ``seq``."""
        times = self._segments.get(segment.path)
        if times is None:
            times = self._segments[segment.path] = _SegmentTimes(segment)
        if times.next_seq > seq:
            return times
        entries = (times.seqs, times.times, times.offsets)
        with segment.path.open("rb", buffering=0) as file:
            file.seek(times.offset)
            buf = b""
            pos = 0
            buf_offset = times.offset
            while times.next_seq <= seq:
                chunk = file.read(READ_CHUNK_BYTES)
                if not chunk:
                    reason = f"segment ends at seq {times.next_seq - 1}, expected up to {seq}"
                    raise CorruptLog(segment.path, buf_offset + pos, reason)
                buf = buf[pos:] + chunk
                buf_offset += pos
                stop = index_records(
                    buf,
                    0,
                    times.next_seq,
                    seq,
                    buf_offset,
                    times.next_mark,
                    TIME_INDEX_SPAN,
                    entries,
                )
                pos = stop.pos
                times.next_seq, times.next_mark = stop.next_seq, stop.next_mark
                times.offset = buf_offset + pos
                if stop.problem is not None:
                    raise CorruptLog(segment.path, times.offset, stop.problem)
        return times

    def _span(
        self, segment: Segment, times: _SegmentTimes, entry: int, min_seq: int, max_seq: int
    ) -> list[TimedRecord]:
        """The checked records of index span ``entry`` in ``[min_seq, max_seq]``."""
        start = times.offsets[entry]
        end = times.offsets[entry + 1] if entry + 1 < len(times.offsets) else times.offset
        fd = _fileio.open_read(segment.path)  # os-level: a third of a query's time otherwise
        try:
            buf = os.pread(fd, end - start, start)
        finally:
            os.close(fd)
        records: list[TimedRecord] = []
        stop = parse_records(
            buf, 0, times.seqs[entry], records, min_seq=min_seq, max_seq=max_seq, timed=True
        )
        if stop.problem is not None or not records:
            reason = stop.problem or "the record is missing where the time index put it"
            raise CorruptLog(segment.path, start + stop.pos, reason)
        return records


def time_of(
    index: TimeIndex,
    name: str,
    segments: list[Segment],
    last_seq: int,
    last_time: float,
    seq: int,
) -> float:
    """``SegmentedLog.time_of``: checks, the floor, then the index.

    Raises:
        InvalidOption: ``seq`` is not an int in ``1..last_seq``.
        HistoryUnavailable: ``seq`` is below the first retained record.
        CorruptLog: A damaged record on the way.
    """
    if isinstance(seq, bool) or not isinstance(seq, int) or not 1 <= seq <= last_seq:
        msg = f"seq must be an int in 1..{last_seq} (the log's records), got {seq!r:.40}"
        raise InvalidOption(msg)
    if seq == last_seq:
        return last_time
    floor = segments[0].base_seq
    if seq < floor:
        raise HistoryUnavailable(name, seq, floor)
    try:
        return index.time_of(segments, seq)
    except FileNotFoundError:  # retention dropped it meanwhile: the floor is above it now
        later = [segment.base_seq for segment in segments if segment.base_seq > seq]
        raise HistoryUnavailable(name, seq, later[0] if later else last_seq) from None


def seq_at(
    index: TimeIndex,
    name: str,
    segments: list[Segment],
    last_seq: int,
    last_time: float,
    time: float,
) -> int:
    """``SegmentedLog.seq_at``: checks, the newest record, the floor, then the index.

    Raises:
        InvalidOption: ``time`` is not a number, or NaN.
        HistoryUnavailable: Every retained record is later than ``time``, and the log no
            longer starts at seq 1.
        CorruptLog: A damaged record on the way.
    """
    unchecked: object = time
    if isinstance(unchecked, bool) or not isinstance(unchecked, int | float) or math.isnan(time):
        msg = f"time must be a number of seconds since the epoch, got {unchecked!r:.40}"
        raise InvalidOption(msg)
    if time >= last_time:
        return last_seq
    floor = segments[0].base_seq
    try:
        found = index.seq_at(segments, last_seq, time)
    except FileNotFoundError:  # retention dropped a segment meanwhile
        above = segments[1].base_seq if len(segments) > 1 else last_seq
        raise HistoryUnavailable(name, floor, above) from None
    if found is not None:
        return found
    if floor <= 1:
        return 0
    raise HistoryUnavailable(name, floor - 1, floor)
