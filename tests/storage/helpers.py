"""Small byte-level helpers for corrupting log directories in tests.

They parse the on-disk format independently of ``storage._framing`` (only the header layout
is shared with ``docs/format.md``), so a bug in the parser cannot hide itself in a test.
"""

from __future__ import annotations

import os
import shutil
import struct
from pathlib import Path
from typing import NamedTuple

SEGMENT_HEADER_SIZE = 32
RECORD_HEADER = struct.Struct("<IIQHH")
RECORD_HEADER_SIZE = RECORD_HEADER.size
GROUP_CONTINUES = 0x0001


class RecordInfo(NamedTuple):
    """Where a record sits in its segment file."""

    offset: int
    length: int
    seq: int
    flags: int

    @property
    def end(self) -> int:
        return self.offset + RECORD_HEADER_SIZE + self.length


def segment_paths(log_dir: Path) -> list[Path]:
    """The directory's segment files in log order."""
    return sorted(p for p in log_dir.iterdir() if p.name.endswith(".seg"))


def newest_segment(log_dir: Path) -> Path:
    return segment_paths(log_dir)[-1]


def record_offsets(path: Path) -> list[RecordInfo]:
    """Every complete record of a segment, by walking the 20-byte record headers."""
    data = path.read_bytes()
    pos = SEGMENT_HEADER_SIZE
    found = []
    while pos + RECORD_HEADER_SIZE <= len(data):
        _crc, length, seq, flags, _reserved = RECORD_HEADER.unpack_from(data, pos)
        if pos + RECORD_HEADER_SIZE + length > len(data):
            break
        found.append(RecordInfo(pos, length, seq, flags))
        pos += RECORD_HEADER_SIZE + length
    return found


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
