"""actorkv's actor layer: key spaces and event-sourced actors on top of ``storage``.

The errors of the whole library are re-exported here, so ``from actors import ...`` is all
an application needs.
"""

from storage.errors import (
    ActorKVError,
    ActorStopped,
    CorruptLog,
    InvalidInput,
    InvalidKey,
    InvalidName,
    InvalidOption,
    InvalidValue,
    KeyspaceClosed,
    StoreLocked,
    VersionConflict,
    WriteFailed,
)

__all__ = [
    "ActorKVError",
    "ActorStopped",
    "CorruptLog",
    "InvalidInput",
    "InvalidKey",
    "InvalidName",
    "InvalidOption",
    "InvalidValue",
    "KeyspaceClosed",
    "StoreLocked",
    "VersionConflict",
    "WriteFailed",
]
