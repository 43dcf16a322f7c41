"""The actorkv exception hierarchy.

Every error actorkv raises on purpose derives from one root, so callers can catch
``ActorKVError`` and know the library meant it::

    ActorKVError
    ├── InvalidInput (also ValueError)      bad input, rejected before it reaches a log
    │   ├── InvalidKey
    │   ├── InvalidValue
    │   ├── InvalidName
    │   ├── InvalidOption
    │   │   └── ChainKeyMismatch            a log opened with the wrong chain_key (or none)
    │   └── NotALog                         a path that holds no log (repair, read)
    ├── InvalidOperation                    a call not allowed here (used batch, close in a command)
    ├── VersionConflict                     compare-and-set saw another version
    ├── KeyspaceClosed                      the key space or store was closed
    │   ├── ActorStopped                    an actor stopped before answering a command
    │   └── StoreForked                     a handle inherited by a forked child process
    ├── StopTimeout                         actors that did not stop in time (still locked)
    ├── StoreLocked                         another process or handle owns the directory
    ├── OpenFailed                          the system refused a file or directory (ENOSPC, EMFILE)
    ├── CorruptLog                          damaged bytes that recovery must not guess about
    ├── ReplayFailed                        an actor's apply raised while replaying its log
    ├── ValueTypeMismatch                   a stored value does not decode as the value_type
    └── WriteFailed                         a write or fsync failed; writes refused until reopen

Context travels as attributes (``CorruptLog.path``, ``StoreLocked.pid``, ...), and every
message says what to do next.
"""

from __future__ import annotations

import contextlib
import errno
from collections.abc import Iterator
from pathlib import Path
from typing import Any

__all__ = [
    "ActorKVError",
    "ActorStopped",
    "ArchiveError",
    "ArchiveGap",
    "ArchiveLeased",
    "ArchivePreconditionFailed",
    "ChainKeyMismatch",
    "CorruptLog",
    "HistoryUnavailable",
    "IndexNotReady",
    "InvalidInput",
    "InvalidKey",
    "InvalidName",
    "InvalidOperation",
    "InvalidOption",
    "InvalidValue",
    "KeyspaceClosed",
    "NotALog",
    "OpenFailed",
    "ReadOnlyStore",
    "ReplayFailed",
    "SnapshotSchemaMismatch",
    "StopTimeout",
    "StoreForked",
    "StoreLocked",
    "UniqueViolation",
    "UnknownEventTag",
    "ValueTypeMismatch",
    "VersionConflict",
    "WriteFailed",
    "opening",
]


class ActorKVError(Exception):
    """Root of every error actorkv raises deliberately.

    Every one pickles whole (message and attributes), whatever its constructor takes, so an
    error raised in another process (a Ray-hosted key space's) reaches its caller as itself.
    """

    def __reduce__(self) -> tuple[Any, ...]:
        return _rebuild, (type(self), self.args, dict(self.__dict__))


def _rebuild(kind: type[ActorKVError], args: tuple[Any, ...], state: dict[str, Any]) -> Any:
    error = kind.__new__(kind)
    Exception.__init__(error, *args)
    error.__dict__.update(state)
    return error


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


class ChainKeyMismatch(InvalidOption):
    """A log's hash chain was written with another ``chain_key`` than the one given (or none).

    Nothing was changed. The key itself is never shown or stored.

    Attributes:
        path: The log directory.
        keyed: Whether the log's chain is keyed.
    """

    def __init__(self, path: str | Path, *, keyed: bool, given: bool) -> None:
        self.path = Path(path)
        self.keyed = keyed
        if keyed and not given:
            advice = "its chain is keyed: open it with the chain_key it was written with"
        elif not keyed:
            advice = (
                "its chain is not keyed: open it without chain_key (a key cannot be added "
                "to a chain that already has records)"
            )
        else:
            advice = (
                "its chain was written with another chain_key (a record's hash does not "
                "verify with the one given): open it with the key it was written with"
            )
        super().__init__(f"the log in {self.path}: {advice}")


class NotALog(InvalidInput):
    """A path given as a log directory holds no log (missing, empty, or a store's root).

    Attributes:
        path: The path that was given.
    """

    def __init__(self, path: str | Path, reason: str) -> None:
        self.path = Path(path)
        super().__init__(f"{self.path} is not a log directory: {reason}")


class InvalidOperation(ActorKVError):
    """The call is not allowed in this state or from this thread.

    For example a ``WriteBatch`` used outside its one ``with`` block, or ``Store.close()``
    called from inside one of the store's own commands (which would wait for itself).
    """


class HistoryUnavailable(ActorKVError):
    """A read as of a point the log no longer holds (below its history floor).

    Attributes:
        floor: The first seq whose state can still be read.
        requested: The seq that was asked for.
    """

    def __init__(self, name: str, requested: int, floor: int) -> None:
        self.floor = floor
        self.requested = requested
        super().__init__(
            f"{name}: seq {requested} is below the history floor {floor} (the log keeps no "
            f"history before it: retention dropped it, or the key space began there as a "
            f"fork); read at seq {floor} or later, or keep more history with retention="
        )


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


class UniqueViolation(VersionConflict):
    """A write would give a second live key the same value in a unique index; nothing written.

    A kind of conflict (so ``except VersionConflict`` catches it too), with another key's
    value rather than a version: ``expected`` is 0 and ``actual`` the holder's version.

    Attributes:
        index: The unique index's name.
        value: The index value both keys would hold.
        key: The key being written.
        holder: The key that already holds the value.
    """

    def __init__(
        self, index: str, value: object, key: object, holder: object, holder_version: int
    ) -> None:
        self.index = index
        self.value = value
        self.key = key
        self.holder = holder
        self.expected = 0
        self.actual = holder_version
        ActorKVError.__init__(
            self,
            f"unique index {index!r}: {value!r:.60} is already held by key {holder!r:.60}, so "
            f"key {key!r:.60} cannot take it; nothing was written (change or delete "
            f"{holder!r:.60} first, in the same batch if need be)",
        )


class IndexNotReady(ActorKVError):
    """An index is still being built and the query asked not to wait (``wait=False``)."""


class ArchiveError(ActorKVError):
    """The archive could not be read or written.

    A network or server failure, a permission, a missing object, or an object whose bytes
    do not match its upload record.
    """


class ArchivePreconditionFailed(ArchiveError):
    """A conditional put found the object other than it required (created or changed)."""


class ArchiveGap(ArchiveError):
    """The archive lacks records a restore needs; the message names the missing range.

    Retention deleted them before they shipped, or they never shipped.
    """


class ArchiveLeased(ArchiveError):
    """Another store holds the archive prefix's writer lease (or took it from this one).

    Attributes:
        holder: Who holds it (``host:pid:id``).
        expires_at: When its lease runs out unless renewed (seconds since the epoch).
    """

    def __init__(self, message: str, holder: str, expires_at: float) -> None:
        super().__init__(message)
        self.holder = holder
        self.expires_at = expires_at


class ReadOnlyStore(InvalidOperation):
    """A write to a replica (``Store.open_replica``): it only follows its archive."""


class KeyspaceClosed(ActorKVError):
    """The key space, actor or store was closed; open it again to continue."""


class ActorStopped(KeyspaceClosed):
    """The actor stopped (or is stopping) before it could run a command.

    Nothing of that command was written. Spawn the actor again to continue.
    """


class StoreForked(KeyspaceClosed):
    """A store or handle was inherited by a forked child process; it belongs to the parent.

    The child must not write, flush, close or unlock what its parent owns (the directory
    lock is shared across ``fork``), so every use of an inherited store raises this. Open
    the store in the child only after the parent has closed it, or use the store only in
    the parent and pass data to the child another way.
    """


class StopTimeout(ActorKVError):
    """Some actors did not stop within the timeout; the directory stays locked until they do.

    Attributes:
        names: The actors (and key spaces) still running.
    """

    def __init__(self, names: list[str], timeout: float) -> None:
        self.names = list(names)
        self.timeout = timeout
        super().__init__(
            f"{len(self.names)} actor(s) did not stop within {timeout} s "
            f"({', '.join(self.names)}): a command is still running; the store stays "
            "locked until they finish (every other actor was stopped and synced). Find the "
            "long-running command, or wait and check again"
        )


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


class OpenFailed(ActorKVError):
    """The operating system refused to create or open a file or directory of a log.

    Nothing was written. The cause is chained (``__cause__``) and its errno kept.

    Attributes:
        path: The file or directory that could not be created or opened.
        errno: The operating system's error number (``errno.ENOSPC``, ``errno.EMFILE``, ...).
    """

    def __init__(self, path: str | Path, error: OSError, doing: str) -> None:
        self.path = Path(path)
        self.errno = error.errno
        super().__init__(f"{doing} {self.path} failed: {error}; {_advice(error)}")


@contextlib.contextmanager
def opening(path: str | Path, doing: str) -> Iterator[None]:
    """Turn an ``OSError`` raised inside the block into :class:`OpenFailed`.

    Args:
        path: What is being opened (the error's own file name is preferred when it has one).
        doing: What was being done, as the start of a sentence ("opening the log in").
    """
    try:
        yield
    except OSError as exc:
        raise OpenFailed(exc.filename or path, exc, doing) from exc


def _advice(error: OSError) -> str:
    advice = {
        errno.ENOSPC: "free disk space, then open it again",
        errno.EDQUOT: "free disk space (quota exceeded), then open it again",
        errno.EMFILE: "too many open files in this process: close stores or raise the "
        "limit (ulimit -n), then open it again",
        errno.ENFILE: "too many open files on the system: close files, then open it again",
        errno.EACCES: "check the permissions of the directory",
        errno.EPERM: "check the permissions of the directory",
        errno.EROFS: "the file system is read-only: remount it read-write",
        errno.ENOTDIR: "a file stands where a directory should be: move it away",
    }
    return advice.get(error.errno or 0, "fix the cause, then open it again")


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


class SnapshotSchemaMismatch(ActorKVError):
    """The only snapshots an actor could start from were written by another schema of it.

    The log no longer holds the records before them (retention dropped them), so a replay
    cannot stand in. Nothing is damaged, and no state is guessed.

    Attributes:
        actor: The actor's class name. snapshot: The newest such snapshot's file.
        written: The schema it was written with. current: The actor's schema now.
    """

    def __init__(
        self, actor: str, snapshot: str, written: int, current: int, first_seq: int
    ) -> None:
        self.actor = actor
        self.snapshot = snapshot
        self.written = written
        self.current = current
        super().__init__(
            f"{actor}: snapshot {snapshot} was written by schema {written} of the actor, and "
            f"its schema is {current} now; the log starts at seq {first_seq}, so the records "
            "before the snapshot cannot be replayed instead. Define "
            f"{actor}.restore_state(self, data, schema_version) to convert what that schema "
            f"stored, or set schema_version = {written} if the state's shape did not change"
        )


class UnknownEventTag(CorruptLog):
    """A record holds an event whose tag is neither a current event type's nor upcast.

    Nothing is damaged: the record was written by code whose event types have since been
    renamed or removed. Map the tag in the actor's ``upcasters`` (``docs/actors.md``,
    "Changing events"); never repair the log for this.

    Attributes:
        actor: The actor's class name. seq: The record. tag: The event's tag.
    """

    def __init__(self, path: str | Path, actor: str, seq: int, tag: object) -> None:
        self.actor = actor
        self.seq = seq
        self.tag = tag
        reason = (
            f"record {seq} holds an event tagged {tag!r}, which is neither one of {actor}'s "
            f"event types nor in {actor}.upcasters"
        )
        ActorKVError.__init__(
            self,
            f"{path}: {reason}: add an upcaster for {tag!r} ({actor}.upcasters = {{{tag!r}: "
            "function of its fields -> current events}); the log is not damaged, do not "
            "repair it",
        )
        self.path = Path(path)
        self.offset = 0
        self.reason = reason


class ReplayFailed(ActorKVError):
    """An actor's ``apply`` raised while replaying a record of its log.

    The log is intact (every record passed its checksum); the actor's code cannot fold it.
    Fix ``apply`` (it must be total for every event it ever emitted), then spawn again.

    Attributes:
        name: The actor.
        seq: The sequence number of the record being replayed.
        event: The event that ``apply`` raised on.
    """

    def __init__(
        self, name: str, seq: int, event: object, error: BaseException, what: str = "apply"
    ) -> None:
        self.name = name
        self.seq = seq
        self.event = event
        super().__init__(
            f"actor {name!r}: {what} raised {type(error).__name__}: {error} while replaying "
            f"record {seq} ({event!r:.200}); {what} must accept every event in the log: fix "
            "it and spawn the actor again"
        )


class ValueTypeMismatch(ActorKVError):
    """A stored value does not decode as the key space's ``value_type``.

    The value was written under another ``value_type`` (or none). Nothing is lost: open the
    key space with the type the value was written with, or without ``value_type`` to read
    the raw value, and migrate it.

    Attributes:
        key: The key whose value did not decode.
        value_type: The type it was read as.
    """

    def __init__(self, key: object, value_type: object, error: BaseException) -> None:
        self.key = key
        self.value_type = value_type
        super().__init__(
            f"the stored value of {key!r:.100} does not match value_type {value_type!r}: "
            f"{error}; open the key space with the value_type it was written with (or none "
            "to read raw values) and rewrite the value"
        )


class WriteFailed(ActorKVError):
    """A write or fsync failed, so nothing in that write was acknowledged.

    After this error the log refuses every further write until it is closed and reopened:
    retrying an fsync after an I/O error can report success for data the kernel already
    dropped, so the only safe path is to reopen and recover from what is on disk.
    """
