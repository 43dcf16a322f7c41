"""actorkv's storage engine: a segmented, checksummed, append-only log and its codec.

Bytes in, bytes out; no actors and no threads of its own (except the documented fsync
thread of ``fsync="interval"``). ``docs/format.md`` describes every byte on disk.
"""

from storage._format import DEFAULT_SEGMENT_BYTES, MAX_PAYLOAD_BYTES
from storage._lock import DirectoryLock
from storage._recovery import TailCut
from storage.errors import (
    ActorKVError,
    ActorStopped,
    CorruptLog,
    HistoryUnavailable,
    InvalidInput,
    InvalidKey,
    InvalidName,
    InvalidOperation,
    InvalidOption,
    InvalidValue,
    KeyspaceClosed,
    NotALog,
    OpenFailed,
    ReplayFailed,
    StopTimeout,
    StoreForked,
    StoreLocked,
    ValueTypeMismatch,
    VersionConflict,
    WriteFailed,
)
from storage.log import FsyncPolicy, LogOptions, SegmentedLog
from storage.reader import LogReader, TornTail
from storage.repair import RepairReport, repair

__all__ = [
    "DEFAULT_SEGMENT_BYTES",
    "MAX_PAYLOAD_BYTES",
    "ActorKVError",
    "ActorStopped",
    "CorruptLog",
    "DirectoryLock",
    "FsyncPolicy",
    "HistoryUnavailable",
    "InvalidInput",
    "InvalidKey",
    "InvalidName",
    "InvalidOperation",
    "InvalidOption",
    "InvalidValue",
    "KeyspaceClosed",
    "LogOptions",
    "LogReader",
    "NotALog",
    "OpenFailed",
    "RepairReport",
    "ReplayFailed",
    "SegmentedLog",
    "StopTimeout",
    "StoreForked",
    "StoreLocked",
    "TailCut",
    "TornTail",
    "ValueTypeMismatch",
    "VersionConflict",
    "WriteFailed",
    "repair",
]
