"""actorkv's storage engine: a segmented, checksummed, hash-chained, append-only log.

Bytes in, bytes out; no actors and no threads of its own (except the documented fsync
thread of ``fsync="interval"``). ``docs/format.md`` describes every byte on disk;
:func:`verify` checks a log's hash chain against an :class:`Anchor` saved earlier.
"""

from storage._format import DEFAULT_SEGMENT_BYTES, MAX_PAYLOAD_BYTES
from storage._lock import DirectoryLock
from storage._recovery import TailCut
from storage.archive import Archive, FileArchive, open_archive
from storage.chain import Anchor
from storage.errors import (
    ActorKVError,
    ActorStopped,
    ArchiveError,
    ArchiveGap,
    ArchiveLeased,
    ArchivePreconditionFailed,
    ChainKeyMismatch,
    CorruptLog,
    HistoryUnavailable,
    IndexNotReady,
    InvalidInput,
    InvalidKey,
    InvalidName,
    InvalidOperation,
    InvalidOption,
    InvalidValue,
    KeyspaceClosed,
    NotALog,
    OpenFailed,
    ReadOnlyStore,
    ReplayFailed,
    SnapshotSchemaMismatch,
    StopTimeout,
    StoreForked,
    StoreLocked,
    UniqueViolation,
    UnknownEventTag,
    ValueTypeMismatch,
    VersionConflict,
    WriteFailed,
)
from storage.log import FsyncPolicy, LogOptions, SegmentedLog
from storage.reader import LogReader, TornTail
from storage.repair import RepairReport, repair
from storage.restore import RestoreReport, restore
from storage.verify import VerifyReport, verify

__all__ = [
    "DEFAULT_SEGMENT_BYTES",
    "MAX_PAYLOAD_BYTES",
    "ActorKVError",
    "ActorStopped",
    "Anchor",
    "Archive",
    "ArchiveError",
    "ArchiveGap",
    "ArchiveLeased",
    "ArchivePreconditionFailed",
    "ChainKeyMismatch",
    "CorruptLog",
    "DirectoryLock",
    "FileArchive",
    "FsyncPolicy",
    "HistoryUnavailable",
    "IndexNotReady",
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
    "ReadOnlyStore",
    "RepairReport",
    "ReplayFailed",
    "RestoreReport",
    "SegmentedLog",
    "SnapshotSchemaMismatch",
    "StopTimeout",
    "StoreForked",
    "StoreLocked",
    "TailCut",
    "TornTail",
    "UniqueViolation",
    "UnknownEventTag",
    "ValueTypeMismatch",
    "VerifyReport",
    "VersionConflict",
    "WriteFailed",
    "open_archive",
    "repair",
    "restore",
    "verify",
]
