"""Every constant of the on-disk format, in one place. ``docs/format.md`` is the spec."""

from __future__ import annotations

import struct
from typing import Final

FORMAT_VERSION: Final = 1

SEGMENT_MAGIC: Final = b"AKVLOG\r\n"
SEGMENT_SUFFIX: Final = ".seg"
TMP_SUFFIX: Final = ".tmp"
CUT_SUFFIX: Final = ".cut-"
BROKEN_SUFFIX: Final = ".broken"
LOCK_FILE: Final = "LOCK"
MANIFEST_FILE: Final = "MANIFEST"
SEGMENT_NAME_DIGITS: Final = 20

# magic, version, flags, base_seq, prev_base; then header_crc over those 28 bytes.
SEGMENT_HEADER_BODY: Final = struct.Struct("<8sHHQQ")
SEGMENT_HEADER_CRC: Final = struct.Struct("<I")
SEGMENT_HEADER_SIZE: Final = SEGMENT_HEADER_BODY.size + SEGMENT_HEADER_CRC.size

# crc, length, seq, flags, reserved; the crc covers bytes 4.. of the header and the payload.
RECORD_HEADER: Final = struct.Struct("<IIQHH")
RECORD_HEADER_SIZE: Final = RECORD_HEADER.size
RECORD_CRC_SIZE: Final = 4
RECORD_SEQ_OFFSET: Final = 8

FLAG_GROUP_CONTINUES: Final = 0x0001
KNOWN_RECORD_FLAGS: Final = FLAG_GROUP_CONTINUES

MAX_PAYLOAD_BYTES: Final = 256 * 1024 * 1024
DEFAULT_SEGMENT_BYTES: Final = 64 * 1024 * 1024
MIN_SEGMENT_BYTES: Final = 4096

assert SEGMENT_HEADER_SIZE == 32, "segment header layout changed: update docs/format.md"
assert RECORD_HEADER_SIZE == 20, "record header layout changed: update docs/format.md"


def segment_name(base_seq: int) -> str:
    """File name of the segment whose first record is ``base_seq``."""
    return f"{base_seq:0{SEGMENT_NAME_DIGITS}d}{SEGMENT_SUFFIX}"


def parse_segment_name(name: str) -> int | None:
    """The base sequence number in a segment file name, or None if it is not one."""
    stem, suffix = name[: -len(SEGMENT_SUFFIX)], name[-len(SEGMENT_SUFFIX) :]
    if suffix != SEGMENT_SUFFIX or len(stem) != SEGMENT_NAME_DIGITS or not stem.isdigit():
        return None
    return int(stem)
