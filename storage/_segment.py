"""One segment file: its header, its creation, and scanning its records.

A segment is created complete (header written to a temporary name, fsynced, renamed into
place, directory fsynced), so a crash never leaves a half-written header behind. Sealed
segments are never written again. New segments are version 2; version-1 segments are read.
"""

from __future__ import annotations

import os
import re
import zlib
from collections.abc import Generator
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

from storage import _fileio
from storage._format import (
    FLAG_GROUP_CONTINUES,
    FORMAT_V1,
    FORMAT_VERSION,
    KNOWN_RECORD_FLAGS,
    KNOWN_SEGMENT_FLAGS,
    RECORD_HEADER,
    RECORD_HEADER_SIZE,
    RECORD_SEQ_OFFSET,
    SEGMENT_CHAIN_KEYED,
    SEGMENT_HEADER_BODY,
    SEGMENT_HEADER_BODY_V1,
    SEGMENT_HEADER_CRC,
    SEGMENT_HEADER_SIZE,
    SEGMENT_HEADER_SIZE_V1,
    SEGMENT_MAGIC,
    TMP_SUFFIX,
    ZERO_HEAD,
    record_header_size,
    segment_header_size,
    segment_name,
)
from storage._framing import (
    Record,
    TimedRecord,
    parse_records,
    record_is_valid_at,
    time_and_hash_at,
)
from storage.errors import CorruptLog

_KEEP_NONE = 2**64  # a min_seq no record reaches
assert KNOWN_RECORD_FLAGS == FLAG_GROUP_CONTINUES == 1, "update _plausible_headers' flag byte"
READ_CHUNK_BYTES = 1 << 20  # 1 MiB: large enough that per-chunk overhead vanishes in replay


@dataclass(frozen=True, slots=True)
class SegmentHeader:
    """The decoded header of a segment file.

    Attributes:
        base_seq: Sequence number of its first record.
        prev_base: ``base_seq`` of the segment before it (0 for the first).
        version: Its format version (1 or 2).
        flags: Its segment flags (``SEGMENT_CHAIN_KEYED``; always 0 in version 1).
        head: The chain head at its start (zeros in version 1, or where the chain starts).
        time: The commit time at its start: record ``base_seq - 1``'s (0.0 if none).
    """

    base_seq: int
    prev_base: int
    version: int = FORMAT_VERSION
    flags: int = 0
    head: bytes = ZERO_HEAD
    time: float = 0.0

    @property
    def keyed(self) -> bool:
        """Whether its records' hashes are keyed."""
        return bool(self.flags & SEGMENT_CHAIN_KEYED)

    @property
    def data_start(self) -> int:
        """Offset of its first record: the header's size."""
        return segment_header_size(self.version)


class ScanEnd(NamedTuple):
    """How a scan of one segment ended.

    Attributes:
        offset: File offset just past the last record consumed.
        size: File size seen by the scan.
        next_seq: Sequence number the next record would carry.
        group_start: ``(offset, seq)`` of a group left open at ``offset``, or None.
        problem: Why the record at ``offset`` is bad, or None (clean end, or ``max_seq``).
        last_time: Commit time of the last record a cut would keep (see :meth:`cut_point`),
            ``0.0`` if there is none or the segment is version 1.
        last_hash: That record's hash, or None (none, or version 1).
    """

    offset: int
    size: int
    next_seq: int
    group_start: tuple[int, int] | None
    problem: str | None
    last_time: float = 0.0
    last_hash: bytes | None = None

    @property
    def clean(self) -> bool:
        """Whether the segment ended on a complete group with no bad record."""
        return self.problem is None and self.group_start is None

    def cut_point(self) -> tuple[int, int]:
        """``(offset, last_seq)`` to cut at: before the bad record, or before an open group."""
        if self.group_start is not None:
            offset, first_of_group = self.group_start
            return offset, first_of_group - 1
        return self.offset, self.next_seq - 1


def encode_header(
    base_seq: int,
    prev_base: int,
    *,
    head: bytes = ZERO_HEAD,
    time: float = 0.0,
    keyed: bool = False,
) -> bytes:
    """The header bytes of a (version-2) segment starting at ``base_seq``."""
    flags = SEGMENT_CHAIN_KEYED if keyed else 0
    body = SEGMENT_HEADER_BODY.pack(
        SEGMENT_MAGIC, FORMAT_VERSION, flags, base_seq, prev_base, head, time
    )
    return body + SEGMENT_HEADER_CRC.pack(zlib.crc32(body))


def read_header(path: Path) -> SegmentHeader:
    """Read and check the header of the segment at ``path`` (version 1 or 2).

    Raises:
        CorruptLog: The header is short, has a bad magic, version, flags or CRC.
    """
    with path.open("rb") as file:
        raw = file.read(SEGMENT_HEADER_SIZE)
    return parse_header(path, raw)


def parse_header(path: Path, raw: bytes) -> SegmentHeader:
    """Check the header bytes ``raw`` read from the start of ``path``.

    Raises:
        CorruptLog: The header is short, has a bad magic, version, flags or CRC.
    """
    if len(raw) >= 10 and raw[:8] == SEGMENT_MAGIC and raw[8:10] == b"\x01\x00":
        return _parse_header_v1(path, raw)
    if len(raw) < SEGMENT_HEADER_SIZE:
        reason = f"segment header is {len(raw)} bytes, expected {SEGMENT_HEADER_SIZE}"
        raise CorruptLog(path, 0, reason)
    body = raw[: SEGMENT_HEADER_BODY.size]
    (crc,) = SEGMENT_HEADER_CRC.unpack_from(raw, SEGMENT_HEADER_BODY.size)
    magic, version, flags, base_seq, prev_base, head, time = SEGMENT_HEADER_BODY.unpack(body)
    if magic != SEGMENT_MAGIC:
        raise CorruptLog(path, 0, f"bad segment magic {magic!r}: not an actorkv segment")
    if zlib.crc32(body) != crc:
        raise CorruptLog(path, 0, "segment header checksum mismatch")
    if version != FORMAT_VERSION:
        raise CorruptLog(path, 8, f"segment format version {version} is not supported")
    if flags & ~KNOWN_SEGMENT_FLAGS:
        raise CorruptLog(path, 10, f"unknown segment flags {flags:#06x} (newer format?)")
    return SegmentHeader(base_seq, prev_base, version, flags, head, time)


def _parse_header_v1(path: Path, raw: bytes) -> SegmentHeader:
    if len(raw) < SEGMENT_HEADER_SIZE_V1:
        reason = f"segment header is {len(raw)} bytes, expected {SEGMENT_HEADER_SIZE_V1}"
        raise CorruptLog(path, 0, reason)
    body = raw[: SEGMENT_HEADER_BODY_V1.size]
    (crc,) = SEGMENT_HEADER_CRC.unpack_from(raw, SEGMENT_HEADER_BODY_V1.size)
    _magic, _version, flags, base_seq, prev_base = SEGMENT_HEADER_BODY_V1.unpack(body)
    if zlib.crc32(body) != crc:
        raise CorruptLog(path, 0, "segment header checksum mismatch")
    if flags:
        raise CorruptLog(path, 10, f"unknown segment flags {flags:#06x} (newer format?)")
    return SegmentHeader(base_seq, prev_base, FORMAT_V1)


def create_segment(
    directory: Path,
    base_seq: int,
    prev_base: int,
    *,
    head: bytes = ZERO_HEAD,
    time: float = 0.0,
    keyed: bool = False,
) -> Path:
    """Create an empty (version-2) segment durably and return its path.

    ``head`` and ``time`` are the chain head and commit time of record ``base_seq - 1``.

    The header is written under a temporary name and fsynced, then renamed into place and
    the directory fsynced: a crash leaves either no segment or a complete empty one. An
    existing file of the same name (an empty segment being replaced) is replaced atomically.
    """
    path = directory / segment_name(base_seq)
    tmp = path.with_name(path.name + TMP_SUFFIX)
    fd = _fileio.create(tmp)
    try:
        header = encode_header(base_seq, prev_base, head=head, time=time, keyed=keyed)
        _fileio.write_all(fd, header)
        _fileio.fsync(fd)
    finally:
        os.close(fd)
    _fileio.rename(tmp, path)
    _fileio.fsync_dir(directory)
    return path


def scan_segment(
    path: Path,
    base_seq: int,
    *,
    version: int = FORMAT_VERSION,
    min_seq: int = 0,
    max_seq: int = 2**63,
    timed: bool = False,
    start: tuple[int, int] | None = None,
) -> Generator[list[Record] | list[TimedRecord], None, ScanEnd]:
    """Yield the segment's records in chunks and return how the scan ended.

    Records are checked (CRC, sequence, flags) but problems are returned, not raised, so
    the caller decides between a torn tail and corruption. Reads use their own descriptor,
    so scanning is safe while the log appends to the same file.

    Args:
        path: The segment file.
        base_seq: Its first record's sequence number.
        version: Its format version.
        min_seq: Records below this are checked but not yielded.
        max_seq: Stop after this record.
        timed: Yield ``(seq, time, payload)`` instead of ``(seq, payload)``.
        start: ``(offset, seq)`` of a record to start at instead of the first (an offset
            a previous scan or an index found).
    """
    offset, next_seq = start if start is not None else (segment_header_size(version), base_seq)
    last_time = 0.0
    last_hash: bytes | None = None
    with path.open("rb", buffering=0) as file:
        file.seek(offset)
        buf = b""
        buf_offset = offset
        pos = 0
        group_start: tuple[int, int] | None = None
        while True:
            chunk = file.read(READ_CHUNK_BYTES)
            if chunk:
                buf = buf[pos:] + chunk if pos < len(buf) else chunk
                buf_offset += pos
                pos = 0
            records: list[Record] | list[TimedRecord] = []
            stop = parse_records(
                buf,
                pos,
                next_seq,
                records,
                version=version,
                buf_offset=buf_offset,
                group_start=group_start,
                min_seq=min_seq,
                max_seq=max_seq,
                timed=timed,
            )
            if stop.closed >= 0:
                last_time, last_hash = time_and_hash_at(buf, stop.closed)
            if records:
                yield records
            pos, next_seq, group_start = stop.pos, stop.next_seq, stop.group_start
            if stop.problem is not None or next_seq > max_seq or not chunk:
                size = os.fstat(file.fileno()).st_size  # the scan may stop before the end
                problem = stop.problem
                if problem is None and not chunk and pos < len(buf):
                    problem = f"incomplete record ({len(buf) - pos} bytes at end of file)"
                end = buf_offset + pos
                return ScanEnd(end, size, next_seq, group_start, problem, last_time, last_hash)


def scan_to_end(path: Path, base_seq: int, version: int = FORMAT_VERSION) -> ScanEnd:
    """Check every record of a segment without keeping them; returns how the scan ended."""
    # Check CRCs, copy no payloads.
    scan = scan_segment(path, base_seq, version=version, min_seq=_KEEP_NONE)
    while True:
        try:
            next(scan)
        except StopIteration as stopped:
            end: ScanEnd = stopped.value
            return end


def read_record(path: Path, offset: int, seq: int) -> tuple[bytes, bytes] | None:
    """``(header, payload)`` of the intact version-2 record ``seq`` at ``offset``, or None."""
    with path.open("rb", buffering=0) as file:
        file.seek(offset)
        header = file.read(RECORD_HEADER_SIZE)
        if len(header) < RECORD_HEADER_SIZE:
            return None
        length = int.from_bytes(header[4:8], "little")
        payload = file.read(length)
    if not record_is_valid_at(header + payload, 0, seq):
        return None
    return header, payload


def find_later_record(
    path: Path, from_offset: int, after_seq: int, version: int = FORMAT_VERSION
) -> int | None:
    """Offset of an intact record numbered above ``after_seq`` at or after ``from_offset``.

    Used after a bad record E at the end of the newest segment: if any record after it is
    intact, however far away, the damage is in the middle of the log, not a torn tail.
    Every byte offset to the end of the file is a candidate. A regular expression finds, at
    C speed, the offsets whose header fields are plausible for the segment's version (a
    length within the limit, a sequence number in the range the rest of the file could
    hold, flags and reserved bits of that version, a time with its sign bit clear); only
    those have their CRC checked. About 1 s per 64 MiB of garbage on a 2-core machine; it
    runs only when recovery found damage.
    """
    with path.open("rb") as file:
        file.seek(from_offset)
        tail = file.read()
    first = after_seq + 1
    highest = after_seq + len(tail) // record_header_size(version)  # the smallest record
    for candidate in _plausible_headers(first, highest, version).finditer(tail):
        start = candidate.start()
        seq = int.from_bytes(
            tail[start + RECORD_SEQ_OFFSET : start + RECORD_SEQ_OFFSET + 8], "little"
        )
        if first <= seq <= highest and record_is_valid_at(tail, start, seq, version):
            return from_offset + start
    return None


def _plausible_headers(first: int, highest: int, version: int) -> re.Pattern[bytes]:
    """A zero-width pattern matching wherever a record header numbered in range could start.

    Header bytes (``docs/format.md``): crc 0..3 (anything), length 4..7 (little-endian, at
    most 2^28, so byte 7 <= 0x10), seq 8..15, flags 16..17 (0 or GROUP_CONTINUES), reserved
    18..19 (0); in version 2 then time 20..27 (a non-negative double: byte 27 <= 0x7f) and
    the hash 28..59 (anything). The seq's upper five bytes take one value per 2^24 seqs, so
    the range needs only a few alternatives; when they are zero, the lower three cannot all
    be (seq >= 1), which keeps a zero-filled tail from matching at every offset.
    """
    alternatives = []
    for high in range(first >> 24, (highest >> 24) + 1):
        if high == 0:
            alternatives.append(rb"(?!\x00\x00\x00)...\x00\x00\x00\x00\x00")
        else:
            alternatives.append(b"..." + re.escape(high.to_bytes(5, "little")))
    seq = b"(?:" + b"|".join(alternatives) + b")"
    # Byte 16, the low byte of flags: 0 or GROUP_CONTINUES, the only flag of either version.
    fields = rb".{7}[\x00-\x10]" + seq + rb"[\x00\x01]\x00\x00\x00"
    if version >= FORMAT_VERSION:
        fields += rb".{7}[\x00-\x7f]"
    assert RECORD_HEADER.size == 60, "update the version-2 pattern"
    return re.compile(b"(?=" + fields + b")", re.DOTALL)
