"""What opening a log does before the first append: find, check and repair the tail.

See ``docs/format.md``, "Recovery". The rule: a bad or incomplete record at the end of the
newest segment is a torn write and is cut (the bytes are kept in a side file); anything else
that is wrong raises :class:`CorruptLog`, because guessing there would lose data silently.
Recovery also leaves the log ready to append in version 2 with the chain state (head, last
commit time, keyedness) the next record needs, and checks the opener's chain key first.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

from storage import _fileio
from storage._format import (
    CUT_SUFFIX,
    FORMAT_VERSION,
    RECORD_HASH_OFFSET,
    RECORD_HASHED_END,
    RECORD_HEADER_SIZE,
    SEGMENT_HEADER_SIZE,
    TMP_SUFFIX,
    ZERO_HEAD,
    parse_segment_name,
    segment_header_size,
)
from storage._segment import (
    ScanEnd,
    SegmentHeader,
    create_segment,
    find_later_record,
    read_header,
    read_record,
    scan_to_end,
)
from storage.chain import record_hash, record_hasher
from storage.errors import ChainKeyMismatch, CorruptLog

logger = logging.getLogger("actorkv.storage")


@dataclass(frozen=True, slots=True)
class Segment:
    """A segment file, the sequence number of its first record, and its format version."""

    path: Path
    base_seq: int
    version: int = FORMAT_VERSION

    @property
    def data_start(self) -> int:
        """Offset of its first record."""
        return segment_header_size(self.version)


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
    """The state of a log directory after recovery.

    Attributes:
        segments: Every segment, oldest first; the last is the (version-2) active one.
        last_seq: The last record kept (``first_seq - 1`` if none).
        active_size: The active segment's size: where the next append goes.
        tail_cut: The torn tail cut, or None.
        head: The chain head after ``last_seq``.
        last_time: The commit time of ``last_seq`` (0.0 if none, or version 1).
        keyed: Whether the chain is keyed (the active segment's flag).
        upgraded: Whether a version-1 active segment was sealed or replaced.
    """

    segments: list[Segment]
    last_seq: int
    active_size: int
    tail_cut: TailCut | None
    head: bytes = ZERO_HEAD
    last_time: float = 0.0
    keyed: bool = False
    upgraded: bool = False


def list_segments(directory: Path) -> list[Segment]:
    """The directory's segments in log order, by file name (versions not read yet)."""
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


def check_chain(
    directory: Path, segments: list[Segment]
) -> tuple[list[Segment], list[SegmentHeader]]:
    """Check every segment header and the links between consecutive segments.

    Returns:
        The segments with their versions, and their headers.

    Raises:
        CorruptLog: A bad header, a name that disagrees with its header, a missing,
            duplicated or reordered segment, or a version-1 segment after a version-2 one.
    """
    checked: list[Segment] = []
    headers: list[SegmentHeader] = []
    previous: Segment | None = None
    for listed in segments:
        header = read_header(listed.path)
        segment = Segment(listed.path, listed.base_seq, header.version)
        if header.base_seq != segment.base_seq:
            reason = f"header says base seq {header.base_seq} but the file name says otherwise"
            raise CorruptLog(segment.path, 12, reason)
        if previous is not None and header.prev_base != previous.base_seq:
            reason = (
                f"segment follows base seq {header.prev_base}, but the previous segment on "
                f"disk starts at {previous.base_seq}: a segment is missing or out of order"
            )
            raise CorruptLog(segment.path, 20, reason)
        if previous is not None and segment.version < previous.version:
            reason = (
                f"a version-{segment.version} segment after a version-{previous.version} one: "
                "a segment of an older log was put in this one"
            )
            raise CorruptLog(segment.path, 8, reason)
        checked.append(segment)
        headers.append(header)
        previous = segment
    if checked and checked[0].base_seq < 1:
        raise CorruptLog(directory, 0, "a segment starts at sequence number 0")
    return checked, headers


def recover(directory: Path, chain_key: bytes | None = None) -> RecoveredLog:
    """Prepare ``directory`` for appending: create it if empty, else check and repair.

    The caller holds the directory lock. Everything that can refuse the open (damage, a
    chain key that does not match) is decided before anything is changed.

    Raises:
        CorruptLog: Damage that is not a torn tail of the newest segment.
        ChainKeyMismatch: ``chain_key`` is not the key the chain was written with.
    """
    keyed = chain_key is not None
    remove_unfinished_segments(directory)
    listed = list_segments(directory)
    if not listed:
        path = create_segment(directory, base_seq=1, prev_base=0, keyed=keyed)
        return RecoveredLog([Segment(path, 1)], 0, SEGMENT_HEADER_SIZE, None, keyed=keyed)
    segments, headers = check_chain(directory, listed)
    newest, header = segments[-1], headers[-1]
    end = scan_to_end(newest.path, newest.base_seq, newest.version)
    cut_offset, last_seq = end.cut_point()
    if end.problem is not None:
        # A torn write leaves nothing valid behind it; an intact later record means the
        # damage is in the middle of the log.
        later = find_later_record(newest.path, end.offset + 1, end.next_seq, newest.version)
        if later is not None:
            raise CorruptLog(
                newest.path, end.offset, f"{end.problem}, yet a later record is intact"
            )
    kept = last_seq >= newest.base_seq
    chained = newest.version >= FORMAT_VERSION and (kept or header.head != ZERO_HEAD)
    if chained:
        _check_key(directory, segments, headers, kept=kept, chain_key=chain_key)
    cut = None
    if not end.clean:
        reason = end.problem or "the final group of records is incomplete"
        cut = _cut_tail(newest.path, cut_offset, end.size, reason)
    if chained:
        head = end.last_hash if kept and end.last_hash is not None else header.head
        last_time = end.last_time if kept else header.time
        return RecoveredLog(segments, last_seq, cut_offset, cut, head, last_time, header.keyed)
    # Nothing of the chain yet: a version-1 log, or an empty chain start. The active
    # segment becomes a version-2 one of the opener's keyedness.
    if kept:  # a version-1 segment with records: seal it and start the chain after it
        _seal(newest.path)
        path = create_segment(directory, last_seq + 1, newest.base_seq, keyed=keyed)
        segments.append(Segment(path, last_seq + 1))
        logger.info("%s continues in format version 2 from seq %d", directory, last_seq + 1)
    # An empty version-2 segment that starts a chain may still carry the time of the
    # record before it (a fork's first segment): times must not go back from it.
    start_time = header.time if newest.version >= FORMAT_VERSION and not kept else 0.0
    if not kept and (newest.version < FORMAT_VERSION or header.keyed != keyed):
        create_segment(directory, newest.base_seq, header.prev_base, keyed=keyed, time=start_time)
        segments[-1] = Segment(newest.path, newest.base_seq)
    upgraded = newest.version < FORMAT_VERSION
    return RecoveredLog(
        segments, last_seq, SEGMENT_HEADER_SIZE, cut, ZERO_HEAD, start_time, keyed, upgraded
    )


def _check_key(
    directory: Path,
    segments: list[Segment],
    headers: list[SegmentHeader],
    *,
    kept: bool,
    chain_key: bytes | None,
) -> None:
    """Refuse a key that is not the chain's: by the flag, then by one record's hash.

    The record is the first of the newest segment that holds one; its previous hash is in
    that segment's header, so nothing but that record is read.
    """
    keyed = headers[-1].keyed
    if keyed != (chain_key is not None):
        raise ChainKeyMismatch(directory, keyed=keyed, given=chain_key is not None)
    if chain_key is None:
        return
    index = len(segments) - 1 if kept else len(segments) - 2
    if index < 0 or segments[index].version < FORMAT_VERSION:
        return
    segment, header = segments[index], headers[index]
    record = read_record(segment.path, segment.data_start, segment.base_seq)
    if record is None:  # damaged: reads will say so; the key cannot be checked here
        return
    raw, payload = record
    hashed = raw[4:RECORD_HASHED_END]
    stored = raw[RECORD_HASH_OFFSET:RECORD_HEADER_SIZE]
    if record_hash(record_hasher(chain_key), header.head, hashed, payload) != stored:
        raise ChainKeyMismatch(directory, keyed=True, given=True)


def _seal(path: Path) -> None:
    """Fsync a segment before the next one exists (its tail may be an earlier handle's)."""
    fd = _fileio.open_write(path)
    try:
        _fileio.fsync(fd)
    finally:
        os.close(fd)


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


__all__ = [
    "RecoveredLog",
    "ScanEnd",
    "Segment",
    "TailCut",
    "check_chain",
    "list_segments",
    "recover",
    "remove_unfinished_segments",
]
