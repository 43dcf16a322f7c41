"""Explicit repair of a damaged log: never run automatically.

``repair(path)`` cuts the log at the first bad thing it finds (bad header, broken segment
chain, bad record, gap between segments). Every file it changes is first copied to
``NAME.broken``; every segment after the cut is renamed to ``NAME.broken``. It reports what
it cut, so an operator can decide what to do with the copies.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

from storage import _fileio
from storage._format import BROKEN_SUFFIX, parse_segment_name
from storage._lock import DirectoryLock
from storage._recovery import Segment, list_segments, remove_unfinished_segments
from storage._segment import SegmentHeader, create_segment, read_header, scan_to_end
from storage.errors import CorruptLog, NotALog, opening

__all__ = ["RepairReport", "repair"]

logger = logging.getLogger("actorkv.storage")


@dataclass(frozen=True, slots=True)
class RepairReport:
    """What :func:`repair` did.

    Attributes:
        last_seq: Sequence number of the last record kept (0 if none).
        damaged: The file where the first problem was found, or None if the log was sound.
        offset: Byte offset of the problem in ``damaged``.
        reason: The problem, in words ("" if none).
        bytes_cut: Bytes removed from the damaged segment, plus the size of every segment
            removed after it.
        backups: The ``.broken`` copies kept.
    """

    last_seq: int
    damaged: Path | None = None
    offset: int = 0
    reason: str = ""
    bytes_cut: int = 0
    backups: list[Path] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        """Whether anything was cut."""
        return self.damaged is not None


def repair(path: str | os.PathLike[str]) -> RepairReport:
    """Check every record of the log in ``path`` and cut it at the first problem.

    The log must not be open (the directory lock is taken). Reads the whole log.

    Returns:
        What was cut and where the copies are; ``report.changed`` is False for a sound log.

    Raises:
        NotALog: ``path`` is missing, holds no segments, or is a store's root directory
            (repair each of its logs: ``STORE/keyspaces/NAME``, ``STORE/actors/NAME``).
        StoreLocked: The log is open elsewhere.
        OpenFailed: The system refused a read, write or fsync (a full disk, an I/O error);
            whatever was cut before it already has its durable backup.
    """
    directory = Path(path)
    _check_is_log(directory)
    lock = DirectoryLock.acquire(directory)
    try:
        with opening(directory, "repairing the log in"):
            remove_unfinished_segments(directory)
            segments = list_segments(directory)
            report = _repair_segments(directory, segments)
            _fileio.fsync_dir(directory)
    finally:
        lock.release()
    if report.changed:
        logger.warning(
            "repaired %s: cut %d bytes at %s offset %d (%s); copies kept: %s",
            directory,
            report.bytes_cut,
            report.damaged,
            report.offset,
            report.reason,
            ", ".join(map(str, report.backups)),
        )
    return report


def _check_is_log(directory: Path) -> None:
    if not directory.exists():
        raise NotALog(directory, "no such directory; pass the directory of one log")
    if not directory.is_dir():
        raise NotALog(directory, "it is a file; pass the directory of one log")
    if any(parse_segment_name(entry.name) is not None for entry in os.scandir(directory)):
        return
    logs = sorted(
        str(log.parent)
        for pattern in ("keyspaces/*/*.seg", "actors/*/*.seg", "*/*.seg")
        for log in directory.glob(pattern)
    )
    if logs:
        shown = ", ".join(dict.fromkeys(logs))
        raise NotALog(directory, f"it holds logs in subdirectories; repair each of them: {shown}")
    raise NotALog(directory, "it holds no segment files (*.seg)")


def _repair_segments(directory: Path, segments: list[Segment]) -> RepairReport:
    next_seq = segments[0].base_seq if segments else 1
    previous: SegmentHeader | None = None
    for index, segment in enumerate(segments):
        try:
            header = _check_segment_start(segment, previous, next_seq)
        except CorruptLog as damage:
            return _cut(directory, segments, index, None, next_seq - 1, damage)
        end = scan_to_end(segment.path, segment.base_seq, header.version)
        if not end.clean:
            cut_offset, last_seq = end.cut_point()
            reason = end.problem or "incomplete final group"
            bad_record = CorruptLog(segment.path, cut_offset, reason)
            return _cut(directory, segments, index, cut_offset, last_seq, bad_record)
        next_seq = end.next_seq
        previous = header
    return RepairReport(last_seq=next_seq - 1)


def _check_segment_start(
    segment: Segment, previous: SegmentHeader | None, next_seq: int
) -> SegmentHeader:
    header = read_header(segment.path)
    if header.base_seq != segment.base_seq:
        raise CorruptLog(segment.path, 12, "header and file name disagree")
    if previous is not None and header.prev_base != previous.base_seq:
        raise CorruptLog(segment.path, 20, "segment chain broken")
    if previous is not None and header.version < previous.version:
        raise CorruptLog(segment.path, 8, "a version-1 segment after a version-2 one")
    if segment.base_seq != next_seq:
        reason = f"segment starts at seq {segment.base_seq}, expected {next_seq}"
        raise CorruptLog(segment.path, 12, reason)
    return header


def _cut(
    directory: Path,
    segments: list[Segment],
    index: int,
    offset: int | None,
    last_seq: int,
    damage: CorruptLog,
) -> RepairReport:
    """Truncate ``segments[index]`` at ``offset`` (or remove it if None) and drop the rest."""
    backups: list[Path] = []
    bytes_cut = 0
    doomed = segments[index:] if offset is None else segments[index + 1 :]
    if offset is not None:
        damaged = segments[index].path
        backup = _fileio.unused_name(damaged.with_name(damaged.name + BROKEN_SUFFIX))
        _fileio.write_file(backup, damaged.read_bytes())
        _fileio.fsync_dir(directory)  # the copy is durable before the original is cut
        backups.append(backup)
        bytes_cut += damaged.stat().st_size - offset
        fd = _fileio.open_write(damaged)
        try:
            _fileio.truncate(fd, offset)
            _fileio.fsync(fd)
        finally:
            os.close(fd)
    for segment in doomed:
        backup = _fileio.unused_name(segment.path.with_name(segment.path.name + BROKEN_SUFFIX))
        bytes_cut += segment.path.stat().st_size
        _fileio.rename(segment.path, backup)
        backups.append(backup)
    if offset is None and index == 0:
        # Nothing sound is left: start an empty log where the damaged one began.
        create_segment(directory, segments[0].base_seq, 0)
    return RepairReport(last_seq, damage.path, damage.offset, damage.reason, bytes_cut, backups)
