"""Read-only access to a log directory: for inspection, verification and replicas.

A :class:`LogReader` never locks the directory, never cuts a tail, never creates or
removes a file: it reads what is there, while a writer may be appending to it, up to the
first damage, and says what it found. ``SegmentedLog`` is the writer's side and repairs a
torn tail on open; a reader only reports one (it may be a write still in progress).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from storage._format import ZERO_HEAD
from storage._framing import Record, TimedRecord
from storage._reading import read_chunks, read_records, read_timed_chunks
from storage._recovery import Segment, check_chain, list_segments
from storage._segment import SegmentHeader, find_later_record, scan_to_end
from storage._timeindex import TimeIndex, seq_at, time_of
from storage.errors import CorruptLog, NotALog
from storage.manifest import Manifest, read_manifest

__all__ = ["LogReader", "TornTail"]


@dataclass(frozen=True, slots=True)
class TornTail:
    """An incomplete or bad end of the newest segment with nothing intact after it.

    The writer's recovery would cut it; a reader leaves it. While a writer is appending,
    this may simply be a write in progress.

    Attributes:
        segment: The newest segment.
        offset: Where its readable records end.
        bytes_after: How many bytes follow that are not (yet) a complete record.
        reason: What is wrong with them.
    """

    segment: Path
    offset: int
    bytes_after: int
    reason: str


class LogReader:
    """What a log directory holds, read without changing anything. Not thread-safe.

    Attributes:
        directory: The log directory.
        manifest: Its manifest, or None (a bare log, or one written before manifests).
        segments: The segments that can be read, oldest first.
        last_seq: The last record that can be read (``first_seq - 1`` if none).
        head: The chain head after ``last_seq`` (zeros where no chained record is).
        last_time: The commit time of ``last_seq`` (0.0 if none, or format version 1).
        torn_tail: The newest segment's unreadable end, if any.
        damage: The first damage found (at open, or later while reading), or None.
    """

    def __init__(self, directory: Path) -> None:
        """Read the directory's structure; use :meth:`open` instead."""
        self.directory = directory
        self.damage: CorruptLog | None = None
        self.torn_tail: TornTail | None = None
        self.head = ZERO_HEAD
        self.last_time = 0.0
        try:
            self.manifest: Manifest | None = read_manifest(directory)
        except CorruptLog as damage:
            self.manifest = None
            self.damage = damage
        self._headers: list[SegmentHeader] = []
        self.segments: list[Segment] = self._chained_prefix(list_segments(directory))
        self.last_seq = self._newest_end() if self.segments else 0
        self._times = TimeIndex()

    @classmethod
    def open(cls, path: str | os.PathLike[str]) -> LogReader:
        """Look at the log in directory ``path``; never writes, never waits for a lock.

        Raises:
            NotALog: ``path`` is not a directory holding segment files.
        """
        directory = Path(path)
        if not directory.is_dir():
            raise NotALog(directory, "no such directory")
        reader = cls(directory)
        if not reader.segments and reader.damage is None:
            raise NotALog(directory, "it holds no segment files (*.seg)")
        return reader

    @property
    def first_seq(self) -> int:
        """The oldest record kept (``last_seq + 1`` when there is none)."""
        return self.segments[0].base_seq if self.segments else self.last_seq + 1

    def read(self, from_seq: int = 1) -> Iterator[tuple[int, bytes]]:
        """Yield ``(seq, payload)`` from ``from_seq`` to :attr:`last_seq`, each checked.

        Stops at the first damage instead of raising: check :attr:`damage` afterwards.
        """
        if not self.segments:
            return
        start = max(from_seq, self.first_seq)
        try:
            yield from read_records(self.segments, start, self.last_seq)
        except CorruptLog as damage:
            if self.damage is None:
                self.damage = damage

    def read_chunks(self, from_seq: int = 1) -> Iterator[list[Record]]:
        """Like :meth:`read`, a list of records at a time (stops at damage the same way)."""
        if not self.segments:
            return
        try:
            yield from read_chunks(self.segments, max(from_seq, self.first_seq), self.last_seq)
        except CorruptLog as damage:
            self.damage = self.damage or damage

    def read_timed_chunks(self, from_seq: int = 1) -> Iterator[list[TimedRecord]]:
        """Like :meth:`read_chunks`, each record as ``(seq, time, payload)``."""
        if not self.segments:
            return
        start = max(from_seq, self.first_seq)
        try:
            yield from read_timed_chunks(self.segments, start, self.last_seq)
        except CorruptLog as damage:
            self.damage = self.damage or damage

    def time_of(self, seq: int) -> float:
        """The commit time of record ``seq``; see ``SegmentedLog.time_of`` (raises the same)."""
        return time_of(
            self._times, str(self.directory), self._view(), self.last_seq, self.last_time, seq
        )

    def seq_at(self, time: float) -> int:
        """The last record committed at or before ``time``; see ``SegmentedLog.seq_at``."""
        return seq_at(
            self._times, str(self.directory), self._view(), self.last_seq, self.last_time, time
        )

    def verify(self) -> int:
        """Read and check every readable record; returns how many (see :attr:`damage`)."""
        return sum(1 for _ in self.read())

    def _view(self) -> list[Segment]:
        if not self.segments:
            raise NotALog(self.directory, "none of its segments can be read")
        return self.segments

    def _chained_prefix(self, segments: list[Segment]) -> list[Segment]:
        """The segments before the first one whose header or link is bad."""
        try:
            checked, self._headers = check_chain(self.directory, segments)
        except CorruptLog as damage:
            self.damage = self.damage or damage
            bad = [index for index, segment in enumerate(segments) if segment.path == damage.path]
            prefix = segments[: bad[0]] if bad else []
            if not prefix:
                return []
            checked, self._headers = check_chain(self.directory, prefix)
        return checked

    def _newest_end(self) -> int:
        newest, header = self.segments[-1], self._headers[-1]
        end = scan_to_end(newest.path, newest.base_seq, newest.version)
        offset, last_seq = end.cut_point()
        if not end.clean:
            reason = end.problem or "the final group of records is incomplete"
            later = None
            if end.problem is not None:
                later = find_later_record(newest.path, end.offset + 1, end.next_seq, newest.version)
            if later is not None:
                self.damage = self.damage or CorruptLog(
                    newest.path, end.offset, f"{end.problem}, yet a later record is intact"
                )
            else:
                self.torn_tail = TornTail(newest.path, offset, end.size - offset, reason)
        if last_seq >= newest.base_seq:
            self.head = end.last_hash or ZERO_HEAD
            self.last_time = end.last_time
        else:
            self.head, self.last_time = header.head, header.time
        return last_seq
