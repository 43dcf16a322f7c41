"""A store's archive shipping: one background thread shipping every log directory.

Every ``archive_interval`` seconds the thread ships each key space's and actor's sealed
segments, listed snapshots and manifest (``storage/shipping.py``), oldest first. A failure
(a server error, a timeout, a revoked credential; botocore has already retried) is logged,
counted in :meth:`StoreShipper.status`, and retried with exponential backoff up to a minute;
it never blocks or fails a write. Retention never deletes a segment that is not shipped: each
actor's core holds its history from the first unshipped seq (``ActorCore.holds``).

``close()`` ships everything, the last segment included, after the actors stopped (so every
log is closed and complete), within the store's close timeout, then lets the lease go.

One store writes an archive prefix at a time (``storage/lease.py``): the lease is taken at
open and renewed before shipping whenever a third of it has passed. A store whose lease was
taken over (it was paused past its expiry, say) is fenced: it ships nothing more, and its
status says so.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import msgspec

from storage.archive import Archive
from storage.errors import ActorKVError, ArchiveLeased
from storage.lease import Lease, LeaseView
from storage.shipping import DirectoryShipper

if TYPE_CHECKING:
    from actors._core import ActorCore

__all__ = ["ArchiveStatus", "StoreShipper"]

logger = logging.getLogger("actorkv.archive")

MAX_BACKOFF = 60.0  # seconds between retries of a failing directory, at most
TAIL_ROLL_BYTES = 4 * 1024 * 1024  # an active segment larger than this is sealed to ship


class ArchiveStatus(msgspec.Struct, frozen=True):
    """How far one key space's or actor's log is shipped.

    Attributes:
        name: Its directory in the store, e.g. ``"keyspaces/users"``.
        shipped_seq: Every record up to this is in the archive.
        last_seq: The newest record of its log (as of the last look).
        pending: Records not shipped yet (``last_seq - shipped_seq``): those written since
            the last round (the active segment's durable records ship every interval).
        failures: Failed shipping attempts in a row (0: the last one worked).
        last_error: What the last failure said, or None.
        last_shipped_at: When the last attempt that worked ended (seconds since the epoch).
    """

    name: str
    shipped_seq: int
    last_seq: int
    pending: int
    failures: int = 0
    last_error: str | None = None
    last_shipped_at: float | None = None


@dataclass
class _Shipped:
    shipper: DirectoryShipper
    core: ActorCore
    failures: int = 0
    last_error: str | None = None
    last_shipped_at: float | None = None
    retry_at: float = 0.0


class StoreShipper:
    """Ships a store's log directories to one archive, in a daemon thread of its own."""

    def __init__(
        self, archive: Archive, store_path: Path, interval: float, lease: Lease | LeaseView
    ) -> None:
        """Start nothing yet; :meth:`add` directories, then the thread starts."""
        self.archive = archive
        self.lease = lease
        self.fenced: ArchiveLeased | None = None
        self.store_path = store_path
        self.interval = interval
        self._entries: dict[str, _Shipped] = {}
        self._mutex = threading.Lock()
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    @classmethod
    def start(
        cls, archive: Archive, store_path: Path, interval: float, lease_seconds: float
    ) -> StoreShipper:
        """A shipper for the store at ``store_path`` that has taken the archive's lease.

        An archive that cannot be reached now does not stop the open: writes go on, and the
        lease is taken before the first shipment.

        Raises:
            ArchiveLeased: Another store holds the lease on the prefix.
        """
        lease = Lease(archive, lease_seconds)
        try:
            lease.acquire()
        except ArchiveLeased:
            raise
        except ActorKVError as exc:
            logger.warning("%s: the archive lease could not be taken yet: %s", store_path, exc)
        return cls(archive, store_path, interval, lease)

    def add(self, directory: Path, core: ActorCore) -> None:
        """Ship ``directory`` (a started actor's) from now on; hold its unshipped history."""
        name = directory.relative_to(self.store_path).as_posix()
        shipper = DirectoryShipper(self.archive, directory, name + "/")
        shipper.token = self.lease.token
        shipper.local_last_seq = core.log.last_seq
        shipper.before_upload = self.lease.ensure
        entry = _Shipped(shipper, core)
        core.holds["archive"] = lambda: shipper.shipped_seq + 1
        with self._mutex:
            self._entries[name] = entry
        self.start_thread()
        self._wake.set()

    def start_thread(self) -> None:
        """Start shipping (and renewing the lease) in the background, if not yet started.

        A store whose logs ship from other processes (the Ray runtime's hosts) calls it with
        no directory of its own: its thread then only keeps the lease.
        """
        with self._mutex:
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name=f"actorkv-ship:{self.store_path}", daemon=True
                )
                self._thread.start()

    def status(self) -> dict[str, ArchiveStatus]:
        """Each directory's :class:`ArchiveStatus`, by name."""
        with self._mutex:
            entries = dict(self._entries)
        found = {}
        for name, entry in entries.items():
            shipped = max(entry.shipper.shipped_seq, entry.shipper.tail_seq)
            last = entry.core.log.last_seq
            found[name] = ArchiveStatus(
                name,
                shipped,
                last,
                max(0, last - shipped),
                entry.failures,
                str(self.fenced) if self.fenced is not None else entry.last_error,
                entry.last_shipped_at,
            )
        return found

    def _run(self) -> None:
        while not self._stopping.is_set() and self.fenced is None:
            self._ship_due(include_active=False)
            self._wake.wait(self.interval)
            self._wake.clear()

    def _ship_due(self, *, include_active: bool, deadline: float | None = None) -> list[str]:
        """Ship every directory whose retry time has come; returns those that failed."""
        with self._mutex:
            entries = list(self._entries.items())
        failed = []
        self._keep_lease()
        for name, entry in entries:
            if self.fenced is not None:
                entry.last_error = str(self.fenced)
                failed.append(name)
                continue
            now = time.monotonic()
            if deadline is not None and now >= deadline:
                failed.append(name)
                continue
            if not include_active and now < entry.retry_at:
                continue
            try:
                entry.shipper.ship(include_active=include_active)
                if not include_active:
                    self._ship_tail(entry)
            except ArchiveLeased as exc:
                self._fence(exc)
                entry.last_error = str(exc)
                failed.append(name)
            except (ActorKVError, OSError) as exc:
                entry.failures += 1
                entry.last_error = str(exc)
                backoff = min(MAX_BACKOFF, self.interval * 2 ** min(entry.failures, 16))
                entry.retry_at = now + backoff
                logger.warning(
                    "%s: shipping to %r failed (%d in a row, next try in %.1f s): %s",
                    name,
                    self.archive,
                    entry.failures,
                    backoff,
                    exc,
                )
                failed.append(name)
            else:
                entry.failures, entry.last_error = 0, None
                entry.last_shipped_at = time.time()
                entry.retry_at = 0.0
        return failed

    def _ship_tail(self, entry: _Shipped) -> None:
        """Ship the active segment's durable part; seal it first once it is large.

        A tail is uploaded whole each time it grows, so past ``TAIL_ROLL_BYTES`` the
        segment is sealed (rolled) and ships once as a sealed segment instead: each round
        uploads at most about that much again, whatever ``segment_bytes`` is.
        """
        log = entry.core.log
        tail = log.durable_tail()
        if tail[2] > TAIL_ROLL_BYTES and log.roll():
            entry.shipper.ship()
            tail = log.durable_tail()
        entry.shipper.ship_tail(*tail)

    def _keep_lease(self) -> None:
        try:
            if self.fenced is None:
                self.lease.ensure()
        except ArchiveLeased as exc:
            self._fence(exc)
        except ActorKVError as exc:  # the archive is unreachable: the uploads will say so
            logger.warning("taking or renewing the archive lease failed: %s", exc)

    def _fence(self, exc: ArchiveLeased) -> None:
        if self.fenced is None:
            self.fenced = exc
            logger.error("this store lost the archive lease and ships nothing more: %s", exc)

    def stop(self, timeout: float) -> None:
        """Stop the thread (before the actors stop, so no round meets a closed log)."""
        self._stopping.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def close(self, timeout: float) -> list[str]:
        """Ship everything (the thread and the actors have stopped), then let the lease go.

        Returns the directories not fully shipped within ``timeout`` (also logged).
        """
        deadline = time.monotonic() + timeout
        self.stop(timeout)
        failed = self._ship_due(include_active=True, deadline=deadline)
        if self.fenced is None:
            try:
                self.lease.release()
            except ActorKVError as exc:
                logger.warning("releasing the archive lease failed (it will expire): %s", exc)
        for name in failed:
            entry = self._entries[name]
            logger.error(
                "%s: not everything was shipped before close (shipped up to seq %d): %s",
                name,
                entry.shipper.shipped_seq,
                entry.last_error or "the close timeout ran out",
            )
        return failed
