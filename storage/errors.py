"""The actorkv exception hierarchy.

Every error actorkv raises on purpose derives from one root, so callers can catch
``ActorKVError`` and know the library meant it::

    ActorKVError
    ├── InvalidInput (also ValueError)      bad input, rejected before it reaches a log
    │   ├── InvalidKey
    │   ├── InvalidValue
    │   ├── InvalidName
    │   └── InvalidOption
    ├── VersionConflict                     compare-and-set saw another version
    ├── KeyspaceClosed                      the key space or store was closed
    │   └── ActorStopped                    an actor stopped before answering a command
    ├── StoreLocked                         another process or handle owns the directory
    ├── CorruptLog                          damaged bytes that recovery must not guess about
    └── WriteFailed                         a write or fsync failed; writes refused until reopen

Context travels as attributes (``CorruptLog.path``, ``StoreLocked.pid``, ...), and every
message says what to do next.
"""

from __future__ import annotations

from pathlib import Path

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


class ActorKVError(Exception):
    """Root of every error actorkv raises deliberately."""


class InvalidInput(ActorKVError, ValueError):
    """Input was rejected before anything was written."""


class InvalidKey(InvalidInput):
    """A key has the wrong type, is empty, or is longer than the limit."""


class InvalidValue(InvalidInput):
    """A value or payload cannot be encoded, fails validation, or is too large."""


class InvalidName(InvalidInput):
    """A key space or actor name is not a safe, bounded file-system name."""


class InvalidOption(InvalidInput):
    """An option (fsync policy, segment size, limit, ...) is out of its documented range."""


class VersionConflict(ActorKVError):
    """A compare-and-set expected one version of a key and found another.

    Attributes:
        key: The key whose version did not match.
        expected: The version the caller expected (0 means "must not exist").
        actual: The key's current version (0 if it does not exist).
    """

    def __init__(self, key: object, expected: int, actual: int) -> None:
        self.key = key
        self.expected = expected
        self.actual = actual
        super().__init__(
            f"version conflict on {key!r}: expected version {expected}, found {actual}; "
            "re-read the key and retry with its current version"
        )


class KeyspaceClosed(ActorKVError):
    """The key space, actor or store was closed; open it again to continue."""


class ActorStopped(KeyspaceClosed):
    """The actor stopped (or is stopping) before it could run a command.

    Nothing of that command was written. Spawn the actor again to continue.
    """


class StoreLocked(ActorKVError):
    """Another handle, in this or another process, holds the directory's lock.

    Attributes:
        path: The locked directory.
        pid: The holder's process id as written in its LOCK file, or None if unknown.
    """

    def __init__(self, path: str | Path, pid: int | None) -> None:
        self.path = Path(path)
        self.pid = pid
        holder = f"process {pid}" if pid is not None else "an unknown process"
        super().__init__(
            f"{self.path} is locked by {holder}; close the other store first "
            "(only one handle may own a data directory at a time)"
        )


class CorruptLog(ActorKVError):
    """The log holds damaged bytes that are not a torn tail.

    Recovery refuses to guess: it never skips a bad record in the middle of a log. Inspect
    the file, restore it from a backup, or call ``storage.repair(path)`` to cut the log at
    the first bad record (a backup copy is kept).

    Attributes:
        path: The damaged file (or directory, for a problem between segments).
        offset: The byte offset of the damage within ``path`` (0 for whole-file problems).
        reason: What is wrong, in words.
    """

    def __init__(self, path: str | Path, offset: int, reason: str) -> None:
        self.path = Path(path)
        self.offset = offset
        self.reason = reason
        super().__init__(
            f"corrupt log {self.path} at offset {offset}: {reason}; restore from a backup "
            "or run storage.repair() on the log directory to cut at the damage (keeps a copy)"
        )


class WriteFailed(ActorKVError):
    """A write or fsync failed, so nothing in that write was acknowledged.

    After this error the log refuses every further write until it is closed and reopened:
    retrying an fsync after an I/O error can report success for data the kernel already
    dropped, so the only safe path is to reopen and recover from what is on disk.
    """
