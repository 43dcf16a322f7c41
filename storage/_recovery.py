"""What opening a log does before the first append: find, check and repair the tail.

See ``docs/format.md``, "Recovery". The rule: a bad or incomplete record at the end of the
newest segment is a torn write and is cut (the bytes are kept in a side file); anything else
that is wrong raises :class:`CorruptLog`, because guessing there would lose data silently.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

from storage import _fileio
from storage._format import CUT_SUFFIX, TMP_SUFFIX, parse_segment_name
from storage._segment import create_segment, find_later_record, read_header, scan_to_end
from storage.errors import CorruptLog

logger = logging.getLogger("actorkv.storage")


@dataclass(frozen=True, slots=True)
class Segment:
    """A segment file and the sequence number of its first record."""

    path: Path
    base_seq: int


@dataclass(frozen=True, slots=True)
class TailCut:
    """A torn tail that recovery cut from the newest segment.

    Attributes:
        segment: The segment that was truncated.
        offset: Where it was cut; the segment is now this long.
        bytes_cut: How many bytes were removed.
        side_file: Where the removed bytes were kept.
        reason: What was wrong with the first record cut.
    """

    segment: Path
    offset: int
    bytes_cut: int
    side_file: Path
    reason: str


@dataclass(frozen=True, slots=True)
class RecoveredLog:
    """The state of a log directory after recovery."""

    segments: list[Segment]
    last_seq: int
    active_size: int
    tail_cut: TailCut | None


def list_segments(directory: Path) -> list[Segment]:
    """The directory's segments in log order, by file name."""
    found = []
    for entry in os.scandir(directory):
        base = parse_segment_name(entry.name)
        if base is not None:
            found.append(Segment(Path(entry.path), base))
    found.sort(key=lambda segment: segment.base_seq)
    return found


def remove_unfinished_segments(directory: Path) -> None:
    """Delete ``*.seg.tmp`` files: rolls that crashed before their rename (header only)."""
    for entry in os.scandir(directory):
        name = entry.name
        if name.endswith(TMP_SUFFIX) and parse_segment_name(name[: -len(TMP_SUFFIX)]) is not None:
            _fileio.remove(Path(entry.path))


def check_chain(directory: Path, segments: list[Segment]) -> None:
    """Check every segment header and the links between consecutive segments.

    Raises:
        CorruptLog: A bad header, a name that disagrees with its header, or a missing,
            duplicated or reordered segment.
    """
    previous: Segment | None = None
    for segment in segments:
        header = read_header(segment.path)
        if header.base_seq != segment.base_seq:
            reason = f"header says base seq {header.base_seq} but the file name says otherwise"
            raise CorruptLog(segment.path, 12, reason)
        if previous is not None and header.prev_base != previous.base_seq:
            reason = (
                f"segment follows base seq {header.prev_base}, but the previous segment on "
                f"disk starts at {previous.base_seq}: a segment is missing or out of order"
            )
            raise CorruptLog(segment.path, 20, reason)
        previous = segment
    if not segments:
        return
    if segments[0].base_seq < 1:
        raise CorruptLog(directory, 0, "a segment starts at sequence number 0")


def recover(directory: Path) -> RecoveredLog:
    """Prepare ``directory`` for appending: create it if empty, else check and repair.

    The caller holds the directory lock.

    Raises:
        CorruptLog: Damage that is not a torn tail of the newest segment.
    """
    remove_unfinished_segments(directory)
    segments = list_segments(directory)
    if not segments:
        path = create_segment(directory, base_seq=1, prev_base=0)
        return RecoveredLog([Segment(path, 1)], 0, path.stat().st_size, None)
    check_chain(directory, segments)
    newest = segments[-1]
    end = scan_to_end(newest.path, newest.base_seq)
    if end.clean:
        return RecoveredLog(segments, end.next_seq - 1, end.offset, None)
    cut_offset, last_seq = end.cut_point()
    reason = end.problem or "the final group of records is incomplete"
    if end.problem is not None:
        # A torn write leaves nothing valid behind it; an intact later record means the
        # damage is in the middle of the log.
        later = find_later_record(newest.path, end.offset + 1, end.next_seq)
        if later is not None:
            raise CorruptLog(
                newest.path, end.offset, f"{end.problem}, yet a later record is intact"
            )
    cut = _cut_tail(newest.path, cut_offset, end.size, reason)
    return RecoveredLog(segments, last_seq, cut_offset, cut)


def _cut_tail(path: Path, offset: int, size: int, reason: str) -> TailCut:
    """Keep ``path[offset:]`` in a side file, then truncate ``path`` at ``offset``.

    The side file is made durable (its data, then its directory entry) before the segment
    is truncated: the copy may be the only one left of those bytes. If it cannot be written
    (a full disk), it is removed again and nothing is truncated.
    """
    side_file = _fileio.unused_name(path.with_name(f"{path.name}{CUT_SUFFIX}{offset}"))
    with path.open("rb") as source:
        source.seek(offset)
        torn = source.read()
    _fileio.write_file(side_file, torn)
    _fileio.fsync_dir(path.parent)
    fd = _fileio.open_write(path)
    try:
        _fileio.truncate(fd, offset)
        _fileio.fsync(fd)
    finally:
        os.close(fd)
    logger.warning(
        "cut a torn tail of %d bytes from %s at offset %d (%s); the bytes are kept in %s",
        size - offset,
        path,
        offset,
        reason,
        side_file,
    )
    return TailCut(path, offset, size - offset, side_file, reason)
