"""actorkv's actor layer: key spaces and event-sourced actors on top of ``storage``.

The errors of the whole library are re-exported here, so ``from actors import ...`` is all
an application needs.
"""

from actors import ops
from actors._actor import EventSourcedActor
from actors._core import ActorStats, Published
from actors._future import Future
from actors._handle import ActorHandle
from actors._history import Version
from actors._index import Index, IndexQuery
from actors._keyspace import Entry, KeySpace, KeySpaceOptions, Receipt, WriteBatch
from actors._projection import Advanced, Projection
from actors._remote import RemoteActorHandle, RemoteKeySpace
from actors._shipping import ArchiveStatus
from actors._snapshots import CompactionReport
from actors._store import Store
from actors._subscription import ActorEvent, Change, Subscription
from actors._view import KeySpaceView
from actors.runtimes._ray import RayOptions
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
from storage.snapshot import SnapshotInfo

__all__ = [
    "ActorEvent",
    "ActorHandle",
    "ActorKVError",
    "ActorStats",
    "ActorStopped",
    "Advanced",
    "Anchor",
    "ArchiveError",
    "ArchiveGap",
    "ArchiveLeased",
    "ArchivePreconditionFailed",
    "ArchiveStatus",
    "ChainKeyMismatch",
    "Change",
    "CompactionReport",
    "CorruptLog",
    "Entry",
    "EventSourcedActor",
    "Future",
    "HistoryUnavailable",
    "Index",
    "IndexNotReady",
    "IndexQuery",
    "InvalidInput",
    "InvalidKey",
    "InvalidName",
    "InvalidOperation",
    "InvalidOption",
    "InvalidValue",
    "KeySpace",
    "KeySpaceOptions",
    "KeySpaceView",
    "KeyspaceClosed",
    "NotALog",
    "OpenFailed",
    "Projection",
    "Published",
    "RayOptions",
    "ReadOnlyStore",
    "Receipt",
    "RemoteActorHandle",
    "RemoteKeySpace",
    "ReplayFailed",
    "SnapshotInfo",
    "SnapshotSchemaMismatch",
    "StopTimeout",
    "Store",
    "StoreForked",
    "StoreLocked",
    "Subscription",
    "UniqueViolation",
    "UnknownEventTag",
    "ValueTypeMismatch",
    "Version",
    "VersionConflict",
    "WriteBatch",
    "WriteFailed",
    "ops",
]
