"""The segmented, append-only log: bytes in, sequence numbers out, bytes back in order.

Write path: :meth:`SegmentedLog.append_batch` takes the group's commit time from the clock,
frames the payloads with their hash chain links (``_framing``), rolls to a new segment if
the active one is full (``_segment``), writes the group with one ``write`` call and, under
``fsync="always"``, one ``fsync``. Opening a log runs ``_recovery``.

Threads: a log has one writer. ``append``, ``append_batch``, ``sync``, ``truncate_before``
and ``close`` may be called from any thread but are serialized by an internal lock;
``read`` may run in other threads while the writer appends (it reads through its own file
descriptors up to the ``last_seq`` it saw when called). Under ``fsync="interval"`` the log
owns one daemon thread that fsyncs at most ``fsync_interval`` seconds apart.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import threading
import time
import weakref
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING

from storage import _fileio
from storage._format import DEFAULT_SEGMENT_BYTES, SEGMENT_HEADER_SIZE
from storage._framing import Record, TimedRecord, encode_records
from storage._lock import DirectoryLock
from storage._options import FsyncPolicy, LogOptions, commit_time
from storage._reading import LogCursor, read_chunks, read_records, read_timed_chunks
from storage._recovery import Segment, TailCut, recover
from storage._segment import create_segment
from storage._timeindex import TimeIndex, seq_at, time_of
from storage.chain import Anchor, record_hasher
from storage.errors import (
    InvalidOperation,
    InvalidOption,
    KeyspaceClosed,
    StoreForked,
    WriteFailed,
    opening,
)
from storage.histogram import Histogram

if TYPE_CHECKING:  # Python 3.10 has no typing.Self
    from typing_extensions import Self

__all__ = ["FsyncPolicy", "LogOptions", "SegmentedLog"]

logger = logging.getLogger("actorkv.storage")
_INF = math.inf


class SegmentedLog:
    """An append-only log of byte payloads numbered 1, 2, 3, ... without gaps.

    Open with :meth:`open`; use as a context manager or call :meth:`close`.
    """

    def __init__(self, directory: Path, options: LogOptions, lock: DirectoryLock) -> None:
        """Recover the log in ``directory``; use :meth:`open` instead."""
        self.directory = directory
        self.options = options
        self._lock = lock
        recovered = recover(directory, options.chain_key)
        self.recovery: TailCut | None = recovered.tail_cut
        """The torn tail cut when the log was opened, or None if the tail was clean."""
        self._segments: list[Segment] = recovered.segments
        self._last_seq = recovered.last_seq
        self._active_size = recovered.active_size
        self._head = recovered.head
        self._last_time = recovered.last_time
        self._keyed = recovered.keyed
        self._hasher = record_hasher(options.chain_key)
        self._clock = options.clock
        self._times = TimeIndex()
        self._fd = _fileio.open_append(self._segments[-1].path)
        self._owner_pid = os.getpid()
        self._forked = False  # set in a forked child (see _forsake_inherited_logs)
        self._mutex = threading.Lock()
        self._failure: BaseException | None = None
        self._closed = False
        # Appends counted, and how many of them an fsync is known to cover: the background
        # syncer fsyncs outside the mutex, so "dirty" cannot be a flag it clears up front.
        self._appended = 0
        self._synced = 0
        # (active segment size, last seq) known fsynced; None until the first fsync of this
        # handle (what an earlier handle left may not be).
        self._durable: tuple[int, int] | None = None
        self.fsyncs = 0
        self.fsync_seconds = Histogram()  # each fsync of an append or a sync (the writer's)
        """How many fsyncs of segment data succeeded since open (all threads)."""
        self._always = options.fsync == "always"
        # The background syncer fsyncs the active descriptor outside the mutex; a roll meanwhile
        # leaves that descriptor open for the syncer to close (no dup: a dup can fail with
        # EMFILE, and a syncer that cannot sync must never go quiet).
        self._syncing_fd: int | None = None
        self._retired_fd: int | None = None
        self._stop_syncer = threading.Event()
        self._syncer: threading.Thread | None = None
        if options.fsync == "interval":
            self._syncer = threading.Thread(
                target=self._sync_periodically, name=f"actorkv-fsync:{directory}", daemon=True
            )
            self._syncer.start()
        _OPEN_LOGS.add(self)

    @classmethod
    def open(
        cls,
        path: str | os.PathLike[str],
        *,
        segment_bytes: int = DEFAULT_SEGMENT_BYTES,
        fsync: FsyncPolicy = "always",
        fsync_interval: float = 0.1,
        clock: Callable[[], float] = time.time,
        chain_key: bytes | None = None,
    ) -> SegmentedLog:
        """Open (creating if needed) the log in directory ``path`` and recover its tail.

        A log of format version 1 continues in version 2 (see ``docs/format.md``).

        Args:
            path: The log's directory; created if missing. It is locked while open.
            segment_bytes: See :class:`LogOptions` (so are the next four).
            fsync: How appends are made durable.
            fsync_interval: Seconds between fsyncs under ``"interval"``.
            clock: The commit times' source.
            chain_key: The hash chain's key, or None.

        Returns:
            The open log. ``log.recovery`` reports a torn tail that was cut, if any.

        Raises:
            InvalidOption: An option is out of range.
            ChainKeyMismatch: ``chain_key`` is not the key the log's chain was written with
                (or the log is keyed and none was given, or unkeyed and one was); nothing
                was changed.
            StoreLocked: Another handle holds the directory.
            CorruptLog: Damage other than a torn tail of the newest segment.
            OpenFailed: The system refused a file or directory (no space, no descriptors,
                no permission); nothing was changed that recovery relies on.
        """
        options = LogOptions(segment_bytes, fsync, fsync_interval, clock, chain_key)
        directory = Path(path)
        with opening(directory, "creating the log directory"):
            _fileio.make_dirs(directory)
        lock = DirectoryLock.acquire(directory)
        try:
            with opening(directory, "opening the log in"):
                return cls(directory, options, lock)
        except BaseException:
            lock.release()
            raise

    # -- writing ---------------------------------------------------------------------------

    def append(self, payload: bytes) -> int:
        """Append one payload; returns its sequence number. See :meth:`append_batch`."""
        return self.append_batch((payload,))

    def append_batch(self, payloads: Sequence[bytes], *, expect_first: int | None = None) -> int:
        """Append payloads as one atomic group: one ``write`` and at most one ``fsync``.

        After a crash either every payload of the group is in the log or none is. Under
        ``fsync="always"`` the group is durable when this returns. Every record of the group
        gets one commit time, ``max(clock(), last_time)``, and its link in the hash chain.
        Thread-safe. O(total bytes).

        Args:
            payloads: The records' payloads, numbered from :attr:`next_seq` in order.
            expect_first: The number the caller expects the first to get (a writer that
                told its callers their numbers early); the log refuses any other.

        Returns:
            The sequence number of the last payload (``last_seq`` if ``payloads`` is empty).

        Raises:
            InvalidValue: A payload is not bytes or is too large; nothing was written.
            InvalidOperation: ``expect_first`` is not :attr:`next_seq`; nothing was written.
            InvalidOption: The clock returned NaN, an infinity or not a number; nothing
                was written.
            WriteFailed: The write or fsync failed, or an earlier one did; reopen the log.
            KeyspaceClosed: The log is closed.
        """
        with self._mutex:
            self._check_writable()
            if expect_first is not None and expect_first != self._last_seq + 1:
                msg = (
                    f"a group numbered from {expect_first} cannot be appended to the log in "
                    f"{self.directory}, whose next record is {self._last_seq + 1}: two writers?"
                )
                raise InvalidOperation(msg)
            if not payloads:
                return self._last_seq
            now = self._clock()
            try:
                if not self._last_time <= now < _INF:  # behind, NaN or infinite
                    now = commit_time(now, self._last_time, self.directory)
            except TypeError:  # not a number
                now = commit_time(now, self._last_time, self.directory)
            data, head = encode_records(self._last_seq + 1, payloads, self._head, now, self._hasher)
            if (
                self._active_size > SEGMENT_HEADER_SIZE
                and self._active_size + len(data) > self.options.segment_bytes
            ):
                self._roll()
            start = self._active_size
            try:
                _fileio.write_all(self._fd, data)
                if self._always:
                    started = time.perf_counter()
                    _fileio.fsync(self._fd)
                    self.fsync_seconds.record(time.perf_counter() - started)
                    self.fsyncs += 1
            except OSError as exc:
                self._fail(exc, truncate_to=start)
                msg = (
                    f"writing {len(payloads)} record(s) to {self._segments[-1].path} failed: {exc}"
                )
                raise WriteFailed(msg) from exc
            self._active_size = start + len(data)
            self._last_seq += len(payloads)
            self._head = head
            self._last_time = now
            self._appended += 1
            if self._always:
                self._synced = self._appended
                self._durable = (self._active_size, self._last_seq)
            return self._last_seq

    def sync(self) -> None:
        """Make every appended record durable now (a no-op when nothing is unsynced).

        Raises:
            WriteFailed: The fsync failed, or an earlier write did; reopen the log.
            KeyspaceClosed: The log is closed.
        """
        with self._mutex:
            self._check_writable()
            if self._synced != self._appended:
                self._fsync_active()

    def _fsync_active(self) -> None:
        """Fsync the active segment and note what is durable. Under the mutex."""
        try:
            started = time.perf_counter()
            _fileio.fsync(self._fd)
            self.fsync_seconds.record(time.perf_counter() - started)
        except OSError as exc:
            self._fail(exc, truncate_to=None)
            msg = f"fsync of {self._segments[-1].path} failed: {exc}"
            raise WriteFailed(msg) from exc
        self._synced = self._appended
        self._durable = (self._active_size, self._last_seq)
        self.fsyncs += 1

    def durable_tail(self) -> tuple[Path, int, int, int]:
        """``(path, base_seq, size, last_seq)``: how much of the active segment is durable.

        Its first ``size`` bytes hold whole records up to ``last_seq``, fsynced: what may be
        shipped before the segment is sealed. Appends not yet fsynced (``fsync="never"`` or
        ``"interval"``) are fsynced first, outside the mutex as the background syncer does,
        so what ships is never what a crash could take back.

        Raises:
            WriteFailed: That fsync failed. KeyspaceClosed: The log is closed.
        """
        with self._mutex:
            self._check_open()
            behind = self._durable is not None and self._synced != self._appended
        if behind:
            self._sync_in_background()
        with self._mutex:
            self._check_writable()  # WriteFailed if the fsync above (or anything) failed
            if self._durable is None:  # what an earlier handle wrote may not be durable
                self._fsync_active()
            active = self._segments[-1]
            assert self._durable is not None
            size, last_seq = self._durable
            return active.path, active.base_seq, size, last_seq

    def truncate_before(self, seq: int) -> int:
        """Delete whole segments whose records are all below ``seq``; returns how many.

        The active segment is never deleted. Oldest segments go first, so a crash midway
        leaves a valid, shorter log. O(segments).
        """
        return self.drop_segments(seq)[0]

    def drop_segments(self, seq: int, *, written_before: float | None = None) -> tuple[int, int]:
        """Delete the oldest whole segments below ``seq``; returns ``(segments, bytes)``.

        Args:
            seq: Only segments whose every record is below this go.
            written_before: If given, only segments last written before this time (seconds
                since the epoch, the file's mtime) go: history younger than that is kept.

        The active segment is never deleted. Oldest first, and the directory is fsynced
        after each deletion: deletions could otherwise reach the disk out of order and
        leave a gap in the chain of segments, which recovery would take for damage.
        O(segments).

        Raises:
            OpenFailed: A deletion failed (the segments before it are gone, durably).
        """
        with self._mutex, opening(self.directory, "deleting old segments in"):
            self._check_open()
            dropped = freed = 0
            segments = self._segments
            while len(segments) > 1 and segments[1].base_seq <= seq:
                path = segments[0].path
                stat = path.stat()
                if written_before is not None and stat.st_mtime >= written_before:
                    break
                _fileio.remove(path)
                del segments[0]
                _fileio.fsync_dir(self.directory)
                dropped += 1
                freed += stat.st_size
            return dropped, freed

    def roll(self) -> bool:
        """Seal the active segment (fsynced) and start a new one, if it holds any record.

        So that the records so far can be dropped whole later. Returns whether it rolled.

        Raises:
            WriteFailed: Sealing or creating failed (the log refuses writes from now on).
        """
        with self._mutex:
            self._check_writable()
            if self._active_size <= SEGMENT_HEADER_SIZE:
                return False
            self._roll()
            return True

    @property
    def bytes_on_disk(self) -> int:
        """The size of every segment file (not counting side files or backups).

        Takes no lock (an append holds it through its fsync): a stats call never waits.
        """
        segments = list(self._segments)  # one atomic copy under the GIL
        total = 0
        for segment in segments:
            with contextlib.suppress(FileNotFoundError):  # dropped meanwhile
                total += segment.path.stat().st_size
        return total

    # -- reading ---------------------------------------------------------------------------

    @property
    def first_seq(self) -> int:
        """Sequence number of the oldest record kept (``last_seq + 1`` when empty)."""
        return self._segments[0].base_seq

    @property
    def last_seq(self) -> int:
        """Sequence number of the newest record appended (0 for an empty log)."""
        return self._last_seq

    @property
    def next_seq(self) -> int:
        """Sequence number the next appended record will get."""
        return self._last_seq + 1

    @property
    def head(self) -> bytes:
        """The chain head: the hash of record :attr:`last_seq` (see ``docs/format.md``).

        When the active segment holds no record yet, its header's head; 32 zero bytes for
        a log with no chained record. Takes no lock.
        """
        return self._head

    @property
    def last_time(self) -> float:
        """The commit time of record :attr:`last_seq` (0.0 if none, or version 1). No lock."""
        return self._last_time

    @property
    def keyed(self) -> bool:
        """Whether the hash chain is keyed (``chain_key``)."""
        return self._keyed

    def anchor(self) -> Anchor:
        """``Anchor(last_seq, head)``: the current point of the chain, taken atomically.

        Save it elsewhere; ``storage.verify(path, anchor=...)`` later proves the log still
        extends it. O(1).

        Raises:
            KeyspaceClosed: The log is closed.
        """
        with self._mutex:
            self._check_open()
            return Anchor(self._last_seq, self._head)

    def read(self, from_seq: int = 1) -> Iterator[tuple[int, bytes]]:
        """Iterate ``(seq, payload)`` from ``from_seq`` up to the ``last_seq`` of this call.

        Records below ``first_seq`` were dropped by :meth:`truncate_before`, so reading
        starts at ``max(from_seq, first_seq)``. Every record's CRC and sequence number are
        checked. Safe to run in another thread while the log appends. O(records read).

        Raises:
            InvalidOption: ``from_seq`` is not an int of at least 1.
            CorruptLog: (while iterating) a damaged record, a gap or an overlap, with the
                file and offset.
        """
        return read_records(*self._read_range(from_seq))

    def read_chunks(self, from_seq: int = 1) -> Iterator[list[Record]]:
        """Like :meth:`read`, a list of records at a time.

        Replay's hot loop: no generator step per record.
        """
        return read_chunks(*self._read_range(from_seq))

    def read_timed_chunks(self, from_seq: int = 1) -> Iterator[list[TimedRecord]]:
        """Like :meth:`read_chunks`, as ``(seq, commit time, payload)`` (version 1: 0.0)."""
        return read_timed_chunks(*self._read_range(from_seq))

    def cursor(self, from_seq: int) -> LogCursor:
        """A reader that follows the log from ``from_seq``, each read going on from the last.

        Thread-safe against appends (its reads use their own descriptors); one reader per
        cursor.
        """
        self._read_range(from_seq)  # checks from_seq and that the log is open

        def segments() -> list[Segment]:
            with self._mutex:
                self._check_open()
                return list(self._segments)

        return LogCursor(segments, from_seq)

    def time_of(self, seq: int) -> float:
        """The commit time of record ``seq`` (``0.0`` for a record of format version 1).

        Thread-safe. Reads the time index (``storage/_timeindex.py``): about 26 us.

        Raises:
            InvalidOption: ``seq`` is not an int in ``1..last_seq``.
            HistoryUnavailable: Record ``seq`` is below :attr:`first_seq` (dropped).
            CorruptLog: A damaged record on the way.
        """
        segments, last_seq, last_time = self._view()
        return time_of(self._times, str(self.directory), segments, last_seq, last_time, seq)

    def seq_at(self, time: float) -> int:
        """The last record committed at or before ``time`` (seconds since the epoch).

        0 when no record is that old. Thread-safe; costs what :meth:`time_of` does.

        Raises:
            InvalidOption: ``time`` is not a number, or NaN.
            HistoryUnavailable: Every retained record is later than ``time`` and the log no
                longer starts at seq 1: what came before was dropped.
            CorruptLog: A damaged record on the way.
        """
        segments, last_seq, last_time = self._view()
        return seq_at(self._times, str(self.directory), segments, last_seq, last_time, time)

    def _view(self) -> tuple[list[Segment], int, float]:
        with self._mutex:
            self._check_open()
            return list(self._segments), self._last_seq, self._last_time

    def _read_range(self, from_seq: int) -> tuple[list[Segment], int, int]:
        """The segments, first and last seq a read from ``from_seq`` covers, as of now."""
        if isinstance(from_seq, bool) or not isinstance(from_seq, int) or from_seq < 1:
            msg = f"from_seq must be an int >= 1, got {from_seq!r}"
            raise InvalidOption(msg)
        with self._mutex:
            self._check_open()
            segments = list(self._segments)
            last_seq = self._last_seq
        return segments, max(from_seq, segments[0].base_seq), last_seq

    def verify(self) -> int:
        """Read and check every record as :meth:`read` does; returns how many there are.

        The hash chain is checked by ``storage.verify``.

        Raises:
            CorruptLog: The first damaged record, gap or overlap found.
        """
        return sum(1 for _ in self.read())

    # -- lifecycle -------------------------------------------------------------------------

    def close(self) -> None:
        """Stop the background syncer, sync (unless ``fsync="never"``), release the lock.

        Safe to call twice. A failed final fsync is logged, not raised: the log was already
        refusing writes, and nothing was acknowledged as durable that was not. In a forked
        child it only marks the log closed: the files and the lock are the parent's.
        """
        with self._mutex:
            if self._closed:
                return
            self._closed = True
        _OPEN_LOGS.discard(self)
        if self._forked:
            return
        self._stop_syncer.set()
        if self._syncer is not None:
            self._syncer.join()
        try:
            unsynced = self._synced != self._appended
            if unsynced and self._failure is None and self.options.fsync != "never":
                _fileio.fsync(self._fd)
        except OSError:
            logger.exception("final fsync of %s failed", self._segments[-1].path)
        finally:
            os.close(self._fd)
            self._lock.release()

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called."""
        return self._closed

    @property
    def failed(self) -> BaseException | None:
        """The I/O error that made this log refuse writes, or None."""
        return self._failure

    def __enter__(self) -> Self:
        """Return the log itself."""
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        """Close the log."""
        self.close()

    def __repr__(self) -> str:
        """Show directory, sequence range and policy."""
        return (
            f"<SegmentedLog {self.directory} seq {self.first_seq}..{self._last_seq} "
            f"fsync={self.options.fsync} segments={len(self._segments)}>"
        )

    # -- internals (called with self._mutex held) -----------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            msg = f"the log in {self.directory} is closed; open it again to use it"
            raise KeyspaceClosed(msg)
        if self._forked:
            raise StoreForked(_forked_message(self.directory, self._owner_pid))

    def _check_writable(self) -> None:
        self._check_open()
        if self._failure is not None:
            msg = (
                f"the log in {self.directory} refuses writes after an I/O error "
                f"({self._failure}); close and reopen it to recover from what is on disk"
            )
            raise WriteFailed(msg) from self._failure

    def _roll(self) -> None:
        """Seal the active segment and start a new one at ``last_seq + 1``."""
        active = self._segments[-1]
        try:
            # Always, even under fsync="never" and even if this handle wrote nothing: an
            # earlier handle's unsynced tail could otherwise vanish in a power loss while
            # the next segment survives, leaving a hole in the middle of the log.
            started = time.perf_counter()
            _fileio.fsync(self._fd)
            self.fsync_seconds.record(time.perf_counter() - started)
            self._synced = self._appended
            self.fsyncs += 1
            path = create_segment(
                self.directory,
                self._last_seq + 1,
                active.base_seq,
                head=self._head,
                time=self._last_time,
                keyed=self._keyed,
            )
            fd = _fileio.open_append(path)
        except OSError as exc:
            self._fail(exc, truncate_to=None)
            msg = f"starting a new segment after {active.path} failed: {exc}"
            raise WriteFailed(msg) from exc
        if self._fd == self._syncing_fd:
            self._retired_fd = self._fd  # the syncer closes it when its fsync returns
        else:
            os.close(self._fd)
        self._fd = fd
        self._segments.append(Segment(path, self._last_seq + 1))
        self._active_size = SEGMENT_HEADER_SIZE
        self._durable = (SEGMENT_HEADER_SIZE, self._last_seq)

    def _fail(self, exc: BaseException, truncate_to: int | None) -> None:
        """Refuse writes from now on; best-effort removal of a partial group."""
        self._failure = exc
        logger.error("log %s refuses writes after an I/O error: %s", self.directory, exc)
        if truncate_to is not None:
            try:
                _fileio.truncate(self._fd, truncate_to)
            except OSError:
                logger.exception("could not remove the failed write from %s", self.directory)

    def _sync_periodically(self) -> None:
        """Body of the ``fsync="interval"`` thread: fsync dirty data every interval.

        Never dies quietly: an fsync failure makes the log refuse writes (as a foreground
        one does), and so does any unexpected error, logged with its traceback.
        """
        interval = self.options.fsync_interval
        while not self._stop_syncer.wait(interval):
            try:
                self._sync_in_background()
            except Exception as exc:
                logger.exception("the background syncer of %s failed", self.directory)
                with self._mutex:
                    self._fail(exc, truncate_to=None)
                return

    def _sync_in_background(self) -> None:
        with self._mutex:
            covered = self._appended
            if covered == self._synced or self._failure is not None or self._closed:
                return
            size, last_seq, base = self._active_size, self._last_seq, self._segments[-1].base_seq
            # fsync outside the mutex, so appends go on meanwhile; a roll leaves this
            # descriptor open for us (see _retired_fd).
            fd = self._syncing_fd = self._fd
        started = time.perf_counter()
        try:
            _fileio.fsync(fd)
        except OSError as exc:
            with self._mutex:
                self._fail(exc, truncate_to=None)
        else:
            took = time.perf_counter() - started
            with self._mutex:  # where every fsync is recorded: one recorder at a time
                self.fsync_seconds.record(took)
                self._synced = max(self._synced, covered)
                if base == self._segments[-1].base_seq:  # no roll meanwhile: still active
                    self._durable = (size, last_seq)
                self.fsyncs += 1
        finally:
            with self._mutex:
                self._syncing_fd = None
                if self._retired_fd == fd:
                    self._retired_fd = None
                    os.close(fd)


_OPEN_LOGS: weakref.WeakSet[SegmentedLog] = weakref.WeakSet()


def _forsake_inherited_logs() -> None:
    """In a forked child: every inherited log is its parent's.

    A flag set once, rather than a getpid() per append (0.1 us, on the write path).
    """
    for log in list(_OPEN_LOGS):
        log._forked = True
    _OPEN_LOGS.clear()


os.register_at_fork(after_in_child=_forsake_inherited_logs)


def _forked_message(directory: Path, owner_pid: int) -> str:
    return (
        f"the log in {directory} belongs to process {owner_pid}, which forked this one; a "
        "child must not use its parent's logs (open the store in the child only after the "
        "parent closed it)"
    )
