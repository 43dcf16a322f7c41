"""Every constant of the on-disk format, in one place. ``docs/format.md`` is the spec."""

from __future__ import annotations

import struct
from typing import Final

FORMAT_VERSION: Final = 2
"""The version new segments are written in (and the newest a manifest may name)."""
FORMAT_V1: Final = 1
"""The first version: no commit time, no hash chain; still read."""

SEGMENT_MAGIC: Final = b"AKVLOG\r\n"
SEGMENT_SUFFIX: Final = ".seg"
TMP_SUFFIX: Final = ".tmp"
CUT_SUFFIX: Final = ".cut-"
BROKEN_SUFFIX: Final = ".broken"
LOCK_FILE: Final = "LOCK"
MANIFEST_FILE: Final = "MANIFEST"
SEGMENT_NAME_DIGITS: Final = 20

# Version 2. Segment header: magic, version, flags, base_seq, prev_base, head, time; then
# header_crc over those 68 bytes.
SEGMENT_HEADER_BODY: Final = struct.Struct("<8sHHQQ32sd")
SEGMENT_HEADER_CRC: Final = struct.Struct("<I")
SEGMENT_HEADER_SIZE: Final = SEGMENT_HEADER_BODY.size + SEGMENT_HEADER_CRC.size
SEGMENT_CHAIN_KEYED: Final = 0x0001
KNOWN_SEGMENT_FLAGS: Final = SEGMENT_CHAIN_KEYED

# Record header: crc, length, seq, flags, reserved, time, hash; the crc covers bytes 4.. of
# the header and the payload; the hash covers the previous hash, bytes 4..27 and the payload.
RECORD_HEADER: Final = struct.Struct("<IIQHHd32s")
RECORD_HEADER_SIZE: Final = RECORD_HEADER.size
RECORD_CRC_SIZE: Final = 4
RECORD_SEQ_OFFSET: Final = 8
RECORD_TIME_OFFSET: Final = 20
RECORD_HASH_OFFSET: Final = 28
RECORD_HASHED_END: Final = RECORD_HASH_OFFSET  # header bytes 4..27 are hashed
HASH_SIZE: Final = 32
ZERO_HEAD: Final = bytes(HASH_SIZE)
"""The chain head before the first chained record."""
RECORD_HASH_PERSON: Final = b"actorkv.record"
"""BLAKE2b personalization of record hashes; any other hash gets its own."""
MAX_CHAIN_KEY_BYTES: Final = 64  # BLAKE2b's key limit

# Version 1. Segment header: magic, version, flags, base_seq, prev_base; then header_crc
# over those 28 bytes. Record header: crc, length, seq, flags, reserved.
SEGMENT_HEADER_BODY_V1: Final = struct.Struct("<8sHHQQ")
SEGMENT_HEADER_SIZE_V1: Final = SEGMENT_HEADER_BODY_V1.size + SEGMENT_HEADER_CRC.size
RECORD_HEADER_V1: Final = struct.Struct("<IIQHH")
RECORD_HEADER_SIZE_V1: Final = RECORD_HEADER_V1.size

FLAG_GROUP_CONTINUES: Final = 0x0001
KNOWN_RECORD_FLAGS: Final = FLAG_GROUP_CONTINUES

MAX_PAYLOAD_BYTES: Final = 256 * 1024 * 1024
DEFAULT_SEGMENT_BYTES: Final = 64 * 1024 * 1024
MIN_SEGMENT_BYTES: Final = 4096
TIME_INDEX_SPAN: Final = 8 * 1024
"""Bytes of segment per entry of the in-memory time index (see "Commit time")."""

assert SEGMENT_HEADER_SIZE == 72, "segment header layout changed: update docs/format.md"
assert RECORD_HEADER_SIZE == 60, "record header layout changed: update docs/format.md"
assert struct.calcsize("<IIQHH") + 8 == RECORD_HASH_OFFSET, "time must end where hash starts"
assert SEGMENT_HEADER_SIZE_V1 == 32, "version-1 segment header layout changed"
assert RECORD_HEADER_SIZE_V1 == 20, "version-1 record header layout changed"
assert len(RECORD_HASH_PERSON) <= 16, "BLAKE2b personalization is at most 16 bytes"


def segment_header_size(version: int) -> int:
    """Size of a segment header, where the first record starts, in ``version``."""
    return SEGMENT_HEADER_SIZE if version >= FORMAT_VERSION else SEGMENT_HEADER_SIZE_V1


def record_header_size(version: int) -> int:
    """Size of a record header in ``version``."""
    return RECORD_HEADER_SIZE if version >= FORMAT_VERSION else RECORD_HEADER_SIZE_V1


def segment_name(base_seq: int) -> str:
    """File name of the segment whose first record is ``base_seq``."""
    return f"{base_seq:0{SEGMENT_NAME_DIGITS}d}{SEGMENT_SUFFIX}"


def parse_segment_name(name: str) -> int | None:
    """The base sequence number in a segment file name, or None if it is not one."""
    stem, suffix = name[: -len(SEGMENT_SUFFIX)], name[-len(SEGMENT_SUFFIX) :]
    if suffix != SEGMENT_SUFFIX or len(stem) != SEGMENT_NAME_DIGITS or not stem.isdigit():
        return None
    return int(stem)
