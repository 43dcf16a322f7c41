"""Snapshot files: a consistent state of one log's fold as of a sequence number.

See ``docs/format.md``, "Snapshot". A snapshot is written once, streamed in checksummed
chunks so that no second copy of the state is ever built in memory, and becomes visible only
complete: written to ``NAME.tmp``, fsynced, renamed to ``NAME``, directory fsynced. A reader
checks every chunk's CRC as it goes and the trailer's digest of the whole at the end, so a
damaged snapshot is refused before anything of it is trusted (a caller building state from
it builds into a fresh object and drops it on failure).

Layout::

    header   magic "AKVSNAP" + newline, version u16, kind u16, seq u64, schema u32,
             chain head (32 bytes), header CRC u32
    chunks   (length u32, CRC-32 u32, payload: one MessagePack array of items) ...
    trailer  length 0xFFFFFFFF, chunks u64, items u64, BLAKE2b-256 of every payload, CRC u32

The chain head is the log's hash chain head at ``seq`` (``SegmentedLog.anchor().head``
taken with the state), so a snapshot anchors the chain even after retention dropped record
``seq``; ``storage.verify`` checks it. Version-1 headers (without it) stay readable.

Items are whatever the writer encodes (a key space writes ``[key, Entry]`` pairs; a custom
actor one item, its encoded state); this module only frames and checks them.
"""

from __future__ import annotations

import builtins
import hashlib
import os
import struct
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Final

from storage import _fileio
from storage._format import HASH_SIZE, TMP_SUFFIX, ZERO_HEAD
from storage.errors import CorruptLog, InvalidInput

__all__ = [
    "SNAPSHOT_SUFFIX",
    "SnapshotHeader",
    "SnapshotInfo",
    "list_snapshots",
    "read_snapshot",
    "read_snapshot_header",
    "snapshot_name",
    "write_snapshot",
]

SNAPSHOT_MAGIC: Final = b"AKVSNAP\n"
SNAPSHOT_VERSION: Final = 2
SNAPSHOT_SUFFIX: Final = ".snap"
KIND_KEYSPACE: Final = 1
KIND_ACTOR: Final = 2

_HEADER_BODY: Final = struct.Struct("<8sHHQI32s")  # magic, version, kind, seq, schema, head
_HEADER_BODY_V1: Final = struct.Struct("<8sHHQI")  # magic, version, kind, seq, schema
_CRC: Final = struct.Struct("<I")
_CHUNK: Final = struct.Struct("<II")  # payload length, CRC-32 of the payload
_TRAILER_BODY: Final = struct.Struct("<IQQ32s")  # 0xFFFFFFFF, chunks, items, digest
_END: Final = 0xFFFFFFFF
HEADER_SIZE: Final = _HEADER_BODY.size + _CRC.size
HEADER_SIZE_V1: Final = _HEADER_BODY_V1.size + _CRC.size
TRAILER_SIZE: Final = _TRAILER_BODY.size + _CRC.size
assert HEADER_SIZE == 60, "snapshot header layout changed: update docs/format.md"
assert HEADER_SIZE_V1 == 28, "version-1 snapshot header layout changed"
assert TRAILER_SIZE == 56, "snapshot trailer layout changed: update docs/format.md"


@dataclass(frozen=True, slots=True)
class SnapshotHeader:
    """The checked header of a snapshot file.

    Attributes:
        version: Its format version (1 or 2).
        kind: ``KIND_KEYSPACE`` or ``KIND_ACTOR``.
        seq: The last record the snapshot includes.
        schema: The writer's schema id.
        chain_head: The log's chain head at ``seq``, or None (version 1: not recorded).
    """

    version: int
    kind: int
    seq: int
    schema: int
    chain_head: bytes | None

    @property
    def size(self) -> int:
        """The header's size: where the first chunk starts."""
        return HEADER_SIZE if self.version >= SNAPSHOT_VERSION else HEADER_SIZE_V1


@dataclass(frozen=True, slots=True)
class SnapshotInfo:
    """A snapshot that was written (or found).

    Attributes:
        seq: The last record the snapshot includes: replay resumes at ``seq + 1``.
        bytes: Its size on disk.
        path: Its file.
        items: How many items it holds (keys, for a key space).
        chain_head: The log's chain head at ``seq`` it records.
    """

    seq: int
    bytes: int
    path: Path
    items: int
    chain_head: builtins.bytes = ZERO_HEAD


def snapshot_name(seq: int) -> str:
    """File name of the snapshot that includes every record up to ``seq``."""
    return f"{seq:020d}{SNAPSHOT_SUFFIX}"


def list_snapshots(directory: Path) -> list[tuple[int, Path]]:
    """``(seq, path)`` of every complete snapshot file in ``directory``, newest first."""
    found = []
    for entry in os.scandir(directory):
        name = entry.name
        stem = name[: -len(SNAPSHOT_SUFFIX)]
        if name.endswith(SNAPSHOT_SUFFIX) and len(stem) == 20 and stem.isdigit():
            found.append((int(stem), Path(entry.path)))
    found.sort(reverse=True)
    return found


def write_snapshot(
    directory: Path,
    seq: int,
    kind: int,
    schema: int,
    chunks: Iterable[tuple[bytes, int]],
    *,
    chain_head: bytes = ZERO_HEAD,
) -> SnapshotInfo:
    """Write the snapshot of ``seq`` from encoded chunks, durably; returns what was written.

    Args:
        directory: The log directory.
        seq: The last record the state includes.
        kind: ``KIND_KEYSPACE`` or ``KIND_ACTOR``.
        schema: The writer's schema id (checked by the reader's caller).
        chunks: ``(payload, items)``: each payload encoded by the caller, and how many items
            it holds; consumed once.
        chain_head: The log's chain head at ``seq`` (``log.anchor().head``, taken with the
            state); zeros when record ``seq`` is unchained.

    Raises:
        InvalidInput: ``chain_head`` is not 32 bytes; nothing was written.
        OSError: Writing failed; the temporary file is removed. (If only the final
            directory fsync failed, the complete file stays under its name, unlisted: the
            next open removes it.)
    """
    unchecked: object = chain_head
    if not isinstance(unchecked, bytes) or len(chain_head) != HASH_SIZE:
        msg = f"chain_head must be {HASH_SIZE} bytes, got {unchecked!r:.80}"
        raise InvalidInput(msg)
    path = directory / snapshot_name(seq)
    tmp = path.with_name(path.name + TMP_SUFFIX)
    header = _HEADER_BODY.pack(SNAPSHOT_MAGIC, SNAPSHOT_VERSION, kind, seq, schema, chain_head)
    digest = hashlib.blake2b(digest_size=32)
    count = items = 0
    size = 0
    fd = _fileio.create(tmp)
    try:
        try:
            _fileio.write_all(fd, header + _CRC.pack(zlib.crc32(header)))
            size += HEADER_SIZE
            for payload, held in chunks:
                frame = _CHUNK.pack(len(payload), zlib.crc32(payload))
                _fileio.write_all(fd, frame + payload)
                digest.update(payload)
                count += 1
                items += held
                size += _CHUNK.size + len(payload)
            trailer = _TRAILER_BODY.pack(_END, count, items, digest.digest())
            _fileio.write_all(fd, trailer + _CRC.pack(zlib.crc32(trailer)))
            size += TRAILER_SIZE
            _fileio.fsync(fd)
        finally:
            os.close(fd)
        _fileio.rename(tmp, path)
        _fileio.fsync_dir(directory)
    except BaseException:
        if tmp.exists():
            _fileio.remove(tmp)
        raise
    return SnapshotInfo(seq, size, path, items, chain_head)


def read_snapshot(path: Path) -> tuple[int, int, int, Iterator[bytes]]:
    """Open a snapshot: ``(kind, seq, schema, chunks)``; the chunks are checked as read.

    The iterator yields each chunk's payload after its CRC matched, and raises at the end
    (after the last chunk) if the trailer or the digest of the whole does not match: only a
    caller that consumed it to the end may trust what it built. The chain head is
    :func:`read_snapshot_header`'s.

    Raises:
        CorruptLog: (here or while iterating) a bad header, chunk, trailer or digest, with
            the file and the offset.
    """
    file = path.open("rb")
    try:
        header = _read_header(path, file)
    except BaseException:
        file.close()
        raise
    return header.kind, header.seq, header.schema, _chunks(path, file, header.size)


def read_snapshot_header(path: Path) -> SnapshotHeader:
    """The checked header of the snapshot at ``path`` (its chunks are not read).

    Raises:
        CorruptLog: A bad header (short, magic, CRC, version, or a seq the name disagrees
            with).
    """
    with path.open("rb") as file:
        return _read_header(path, file)


def _read_header(path: Path, file: BinaryIO) -> SnapshotHeader:
    raw = file.read(HEADER_SIZE_V1)
    if len(raw) == HEADER_SIZE_V1 and raw[8:10] != b"\x01\x00":
        raw += file.read(HEADER_SIZE - HEADER_SIZE_V1)
        layout, expected = _HEADER_BODY, HEADER_SIZE
    else:
        layout, expected = _HEADER_BODY_V1, HEADER_SIZE_V1
    if len(raw) < expected:
        raise CorruptLog(path, 0, f"snapshot header is {len(raw)} bytes, expected {expected}")
    body = raw[: layout.size]
    (crc,) = _CRC.unpack_from(raw, layout.size)
    magic, version, kind, seq, schema, *head = layout.unpack(body)
    if magic != SNAPSHOT_MAGIC:
        raise CorruptLog(path, 0, f"bad snapshot magic {magic!r}")
    if zlib.crc32(body) != crc:
        raise CorruptLog(path, 0, "snapshot header checksum mismatch")
    if version not in (1, SNAPSHOT_VERSION):
        raise CorruptLog(path, 8, f"snapshot format version {version} is not supported")
    if path.name != snapshot_name(seq):
        raise CorruptLog(path, 12, f"header says seq {seq}; the file name disagrees")
    return SnapshotHeader(version, kind, seq, schema, head[0] if head else None)


def _chunks(path: Path, file: BinaryIO, header_size: int) -> Iterator[bytes]:
    digest = hashlib.blake2b(digest_size=32)
    offset = header_size
    count = 0
    with file:
        while True:
            frame = file.read(_CHUNK.size)
            if len(frame) < _CHUNK.size:
                raise CorruptLog(path, offset, "snapshot ends before its trailer (truncated)")
            length, crc = _CHUNK.unpack(frame)
            if length == _END:
                rest = file.read(TRAILER_SIZE - _CHUNK.size)
                _check_trailer(path, offset, frame + rest, count, digest.digest())
                if file.read(1):
                    raise CorruptLog(path, offset + TRAILER_SIZE, "bytes after the trailer")
                return
            payload = file.read(length)
            if len(payload) < length or zlib.crc32(payload) != crc:
                raise CorruptLog(path, offset, "snapshot chunk checksum mismatch (damaged)")
            digest.update(payload)
            count += 1
            offset += _CHUNK.size + length
            yield payload


def _check_trailer(path: Path, offset: int, raw: bytes, count: int, digest: bytes) -> None:
    if len(raw) < TRAILER_SIZE:
        raise CorruptLog(path, offset, "snapshot trailer is truncated")
    body = raw[: _TRAILER_BODY.size]
    (crc,) = _CRC.unpack_from(raw, _TRAILER_BODY.size)
    if zlib.crc32(body) != crc:
        raise CorruptLog(path, offset, "snapshot trailer checksum mismatch")
    _, chunks, _items, expected = _TRAILER_BODY.unpack(body)
    if (chunks, expected) != (count, digest):
        raise CorruptLog(path, offset, "snapshot digest or chunk count does not match its chunks")
