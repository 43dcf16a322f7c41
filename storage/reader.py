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

from storage._recovery import Segment, check_chain, list_segments
from storage._segment import find_later_record, scan_to_end
from storage.errors import CorruptLog, NotALog
from storage.log import read_records
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
        torn_tail: The newest segment's unreadable end, if any.
        damage: The first damage found (at open, or later while reading), or None.
    """

    def __init__(self, directory: Path) -> None:
        """Read the directory's structure; use :meth:`open` instead."""
        self.directory = directory
        self.damage: CorruptLog | None = None
        self.torn_tail: TornTail | None = None
        try:
            self.manifest: Manifest | None = read_manifest(directory)
        except CorruptLog as damage:
            self.manifest = None
            self.damage = damage
        self.segments: list[Segment] = self._chained_prefix(list_segments(directory))
        self.last_seq = self._newest_end(self.segments[-1]) if self.segments else 0

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

    def verify(self) -> int:
        """Read and check every readable record; returns how many (see :attr:`damage`)."""
        return sum(1 for _ in self.read())

    def _chained_prefix(self, segments: list[Segment]) -> list[Segment]:
        """The segments before the first one whose header or link is bad."""
        try:
            check_chain(self.directory, segments)
        except CorruptLog as damage:
            self.damage = self.damage or damage
            bad = [index for index, segment in enumerate(segments) if segment.path == damage.path]
            return segments[: bad[0]] if bad else []
        return segments

    def _newest_end(self, newest: Segment) -> int:
        end = scan_to_end(newest.path, newest.base_seq)
        if end.clean:
            return end.next_seq - 1
        offset, last_seq = end.cut_point()
        reason = end.problem or "the final group of records is incomplete"
        if end.problem is not None:
            later = find_later_record(newest.path, end.offset + 1, end.next_seq)
            if later is not None:
                self.damage = self.damage or CorruptLog(
                    newest.path, end.offset, f"{end.problem}, yet a later record is intact"
                )
                return last_seq
        self.torn_tail = TornTail(newest.path, offset, end.size - offset, reason)
        return last_seq
