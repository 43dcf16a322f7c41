"""Small byte-level helpers for corrupting log directories in tests.

They parse the on-disk format independently of ``storage._framing`` (only the header layout
is shared with ``docs/format.md``), so a bug in the parser cannot hide itself in a test.
:func:`write_v1_log` writes a log of format version 1 the same way, for the tests of
reading and upgrading old logs.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import struct
import zlib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import NamedTuple

SEGMENT_HEADER_SIZE = 72
RECORD_HEADER = struct.Struct("<IIQHHd32s")  # crc, length, seq, flags, reserved, time, hash
RECORD_HEADER_SIZE = RECORD_HEADER.size
SEGMENT_HEADER = struct.Struct("<8sHHQQ32sdI")  # magic, version, flags, base, prev, head, time, crc
SEGMENT_HEADER_SIZE_V1 = 32
RECORD_HEADER_V1 = struct.Struct("<IIQHH")
RECORD_HEADER_SIZE_V1 = RECORD_HEADER_V1.size
GROUP_CONTINUES = 0x0001
CHAIN_KEYED = 0x0001
ZERO_HEAD = bytes(32)
MAGIC = b"AKVLOG\r\n"


class RecordInfo(NamedTuple):
    """Where a record sits in its segment file, and its header fields."""

    offset: int
    length: int
    seq: int
    flags: int
    header_size: int = RECORD_HEADER_SIZE
    time: float = 0.0
    digest: bytes = b""

    @property
    def end(self) -> int:
        return self.offset + self.header_size + self.length

    @property
    def payload_offset(self) -> int:
        return self.offset + self.header_size


def segment_paths(log_dir: Path) -> list[Path]:
    """The directory's segment files in log order."""
    return sorted(p for p in log_dir.iterdir() if p.name.endswith(".seg"))


def newest_segment(log_dir: Path) -> Path:
    return segment_paths(log_dir)[-1]


def segment_version(path: Path) -> int:
    """The format version in a segment's header (bytes 8..9)."""
    return int.from_bytes(path.read_bytes()[8:10], "little")


def record_offsets(path: Path) -> list[RecordInfo]:
    """Every complete record of a segment, by walking the record headers of its version."""
    data = path.read_bytes()
    if data[8:10] == b"\x01\x00":
        pos, layout = SEGMENT_HEADER_SIZE_V1, RECORD_HEADER_V1
    else:
        pos, layout = SEGMENT_HEADER_SIZE, RECORD_HEADER
    found = []
    while pos + layout.size <= len(data):
        fields = layout.unpack_from(data, pos)
        length, seq, flags = fields[1], fields[2], fields[3]
        if pos + layout.size + length > len(data):
            break
        time, digest = (fields[5], fields[6]) if layout is RECORD_HEADER else (0.0, b"")
        found.append(RecordInfo(pos, length, seq, flags, layout.size, time, digest))
        pos += layout.size + length
    return found


def segment_head(path: Path) -> bytes:
    """The chain head in a version-2 segment header."""
    return SEGMENT_HEADER.unpack_from(path.read_bytes())[5]


def record_hash(prev: bytes, hashed: bytes, payload: bytes, key: bytes | None = None) -> bytes:
    """A record's chain hash, computed from ``docs/format.md`` (not through storage)."""
    digest = hashlib.blake2b(digest_size=32, person=b"actorkv.record", key=key or b"")
    digest.update(prev + hashed + payload)
    return digest.digest()


def write_v1_log(
    directory: Path, groups: Sequence[Sequence[bytes]], *, segment_bytes: int = 4096
) -> list[Path]:
    """Write a log of format version 1 holding ``groups`` (lists of payloads), numbered from 1.

    Like the version-1 writer did: a 32-byte segment header, 20-byte record headers, a roll
    before a group that would overflow ``segment_bytes``, and an empty newest segment only
    if ``groups`` is empty. Returns the segment files written.
    """
    directory.mkdir(parents=True, exist_ok=True)
    segments: list[tuple[int, bytearray]] = []
    seq = 1

    def start(base: int) -> None:
        prev = segments[-1][0] if segments else 0
        body = struct.pack("<8sHHQQ", MAGIC, 1, 0, base, prev)
        segments.append((base, bytearray(body + struct.pack("<I", zlib.crc32(body)))))

    start(1)
    for group in groups:
        data = bytearray()
        for index, payload in enumerate(group):
            flags = GROUP_CONTINUES if index < len(group) - 1 else 0
            body = struct.pack("<IQHH", len(payload), seq, flags, 0) + payload
            data += struct.pack("<I", zlib.crc32(body)) + body
            seq += 1
        active = segments[-1][1]
        if len(active) > SEGMENT_HEADER_SIZE_V1 and len(active) + len(data) > segment_bytes:
            start(seq - len(group))
            active = segments[-1][1]
        active += data
    paths = []
    for base, data in segments:
        path = directory / f"{base:020d}.seg"
        path.write_bytes(bytes(data))
        paths.append(path)
    return paths


def flip_bit(path: Path, offset: int, bit: int = 0) -> None:
    """Invert one bit of the byte at ``offset``."""
    with path.open("r+b") as file:
        file.seek(offset)
        (byte,) = file.read(1)
        file.seek(offset)
        file.write(bytes([byte ^ (1 << bit)]))


def truncate(path: Path, size: int) -> None:
    os.truncate(path, size)


def overwrite(path: Path, offset: int, data: bytes) -> None:
    with path.open("r+b") as file:
        file.seek(offset)
        file.write(data)


def append_bytes(path: Path, data: bytes) -> None:
    with path.open("ab") as file:
        file.write(data)


def copy_log(source: Path, destination: Path) -> Path:
    """A fresh copy of a closed log directory (without its LOCK file)."""
    shutil.copytree(source, destination, ignore=shutil.ignore_patterns("LOCK"))
    return destination


def side_files(log_dir: Path, suffix: str) -> list[Path]:
    """Files whose name contains ``suffix`` (``.cut-``, ``.broken``), sorted."""
    return sorted(p for p in log_dir.iterdir() if suffix in p.name)


def payload(seq: int, size: int = 50) -> bytes:
    """A recognisable payload for record ``seq``."""
    stem = f"record-{seq:06d}-".encode()
    return (stem * (size // len(stem) + 1))[:size]


def rechain(
    log_dir: Path,
    edit: Callable[[int, bytes], bytes] | None = None,
    *,
    key: bytes | None = None,
    keyed_flag: bool | None = None,
) -> None:
    """Rewrite every version-2 segment as someone who can write the files would.

    Each payload becomes ``edit(seq, payload)``; then every hash (with ``key``, or unkeyed),
    every CRC, every segment header's head and CRC is recomputed, so the log is consistent
    again: only an anchor (or the real key) can tell. ``keyed_flag`` sets or clears the
    segments' CHAIN_KEYED flag (kept as it is by default).
    """
    prev: bytes | None = None
    for path in segment_paths(log_dir):
        data = path.read_bytes()
        magic, version, flags, base, prev_base, head, time, _ = SEGMENT_HEADER.unpack_from(data)
        if keyed_flag is not None:
            flags = CHAIN_KEYED if keyed_flag else 0
        head = head if prev is None else prev
        body = SEGMENT_HEADER.pack(magic, version, flags, base, prev_base, head, time, 0)[:-4]
        out = bytearray(body + struct.pack("<I", zlib.crc32(body)))
        prev = head
        for record in record_offsets(path):
            payload = data[record.payload_offset : record.end]
            if edit is not None:
                payload = edit(record.seq, payload)
            hashed = struct.pack("<IQHHd", len(payload), record.seq, record.flags, 0, record.time)
            prev = record_hash(prev, hashed, payload, key)
            tail = hashed + prev + payload
            out += struct.pack("<I", zlib.crc32(tail)) + tail
        path.write_bytes(bytes(out))


def files_of(directory: Path) -> dict[str, bytes]:
    """Every file of a directory tree and its bytes, but ``LOCK`` (which holds a pid)."""
    return {
        str(path.relative_to(directory)): path.read_bytes()
        for path in sorted(directory.rglob("*"))
        if path.is_file() and path.name != "LOCK"
    }
