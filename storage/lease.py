"""The single writer of an archive prefix: a lease object taken and renewed with conditional puts.

``LEASE`` at the archive's root holds who writes, until when, and a fencing token that
grows by one at every takeover. It is taken with a create-only put (``If-None-Match: *``)
when there is none, or with a put conditional on the expired lease's etag (``If-Match``)
to take over; renewed the same way, on the etag of the last renewal. Two writers racing for
it cannot both win: the loser's conditional put fails. A writer that was paused past its
lease finds, at its next renewal, that the etag moved on: it is fenced and ships nothing
more (``ArchiveLeased``). Every upload record also carries the token it was written under,
so a record from a fenced writer can be told from its successor's.

Clocks: expiry is judged by the reader's wall clock against the holder's; keep the lease
(default 15 s) well above the clock skew between machines.
"""

from __future__ import annotations

import contextlib
import os
import socket
import time
import uuid
from collections.abc import Callable

import msgspec

from storage.archive import Archive
from storage.errors import ArchiveError, ArchiveLeased, ArchivePreconditionFailed

__all__ = ["LEASE_OBJECT", "Lease", "LeaseRecord", "LeaseView"]

LEASE_OBJECT = "LEASE"


class LeaseRecord(msgspec.Struct, frozen=True):
    """What ``LEASE`` holds."""

    holder: str
    token: int
    expires_at: float


class Lease:
    """A store's hold on an archive prefix. Not thread-safe: one shipping thread uses it."""

    def __init__(
        self, archive: Archive, seconds: float, clock: Callable[[], float] = time.time
    ) -> None:
        """Nothing is taken yet (see :meth:`acquire`)."""
        self.archive = archive
        self.seconds = seconds
        self.clock = clock
        self.holder = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:12]}"
        self.token = 0
        self._etag: str | None = None
        self._renewed = 0.0  # time.monotonic() of the last successful take or renewal
        self.lost = False  # taken over by another writer: never taken again by this one

    @property
    def held(self) -> bool:
        """Whether this store believes it holds the lease (until a renewal says otherwise)."""
        return self._etag is not None

    def acquire(self) -> int:
        """Take the lease (new, or expired); returns the fencing token.

        Raises:
            ArchiveLeased: Someone else holds it and it has not expired.
            ArchiveError: The archive could not be reached.
        """
        for _attempt in range(3):
            etag = self.archive.head(LEASE_OBJECT)
            if etag is None:
                record = LeaseRecord(self.holder, 1, self.clock() + self.seconds)
                try:
                    self._etag = self.archive.put(
                        LEASE_OBJECT, msgspec.json.encode(record), if_none_match=True
                    )
                except ArchivePreconditionFailed:
                    continue  # taken meanwhile: look again
                self.token, self._renewed = record.token, time.monotonic()
                return self.token
            current = self._read()
            if current.holder != self.holder and current.expires_at > self.clock():
                raise self._leased(current)
            record = LeaseRecord(self.holder, current.token + 1, self.clock() + self.seconds)
            try:
                self._etag = self.archive.put(
                    LEASE_OBJECT, msgspec.json.encode(record), if_match=etag
                )
            except ArchivePreconditionFailed:
                continue
            self.token, self._renewed = record.token, time.monotonic()
            return self.token
        raise self._leased(self._read())

    def renew(self) -> None:
        """Extend the lease; ``ArchiveLeased`` if it was taken over (this store is fenced)."""
        if self._etag is None:
            self.lost = True
            raise self._leased(self._read())
        record = LeaseRecord(self.holder, self.token, self.clock() + self.seconds)
        try:
            self._etag = self.archive.put(
                LEASE_OBJECT, msgspec.json.encode(record), if_match=self._etag
            )
        except ArchivePreconditionFailed as exc:
            self._etag, self.lost = None, True
            raise self._leased(self._read()) from exc
        self._renewed = time.monotonic()

    def ensure(self) -> None:
        """Before an upload: renew if a third of the lease has passed since the last renewal.

        So a writer paused past its lease (a stopped process, a long GC) renews, and finds
        itself fenced, before it writes anything more.
        """
        if self._etag is None and not self.lost:  # not taken yet: the archive was unreachable
            self.acquire()
        elif time.monotonic() - self._renewed > self.seconds / 3:
            self.renew()

    def release(self) -> None:
        """Let the lease expire now, if held: after a clean close the next writer need not wait."""
        if self._etag is None:
            return
        record = LeaseRecord(self.holder, self.token, 0.0)
        with contextlib.suppress(ArchivePreconditionFailed):  # taken over already
            self.archive.put(LEASE_OBJECT, msgspec.json.encode(record), if_match=self._etag)
        self._etag = None

    def _read(self) -> LeaseRecord:
        try:
            return msgspec.json.decode(self.archive.get(LEASE_OBJECT), type=LeaseRecord)
        except msgspec.DecodeError as exc:
            msg = f"the archive's {LEASE_OBJECT} object does not decode: {exc}"
            raise ArchiveError(msg) from exc

    def _leased(self, current: LeaseRecord) -> ArchiveLeased:
        left = current.expires_at - self.clock()
        msg = (
            f"the archive {self.archive!r} is leased to writer {current.holder} (token "
            f"{current.token}, {'expired' if left <= 0 else f'{left:.1f} s left'}); one "
            "store writes an archive prefix at a time: close that store, wait for its lease "
            "to expire, or use another prefix"
        )
        return ArchiveLeased(msg, current.holder, current.expires_at)


class LeaseView:
    """Another process's view of a lease a store holds: uploads only while it is held.

    A store whose actors run in other processes (the Ray runtime's hosts) takes and renews
    the lease in its driver; each host ships its own log under the driver's fencing token
    and, before an upload, checks (reading ``LEASE`` at most every sixth of the lease) that
    the driver still holds it with more than a third of it left. So a host never uploads
    once the driver could have lost the lease: a takeover needs it expired.
    """

    def __init__(
        self,
        archive: Archive,
        seconds: float,
        holder: str,
        token: int,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """A view of the lease ``holder`` took with ``token``."""
        self.archive = archive
        self.seconds = seconds
        self.holder = holder
        self.token = token
        self.clock = clock
        self._good_until = 0.0  # time.monotonic() until which the last reading vouches

    @property
    def held(self) -> bool:
        """Whether the last reading showed the lease held by ``holder``."""
        return self._good_until > time.monotonic()

    def ensure(self) -> None:
        """Raise unless the holder still holds the lease (``ArchiveLeased`` if it lost it).

        Raises:
            ArchiveLeased: Another writer holds it now: this process is fenced.
            ArchiveError: It is expiring (the holder is late renewing) or unreadable; the
                upload waits for a later round.
        """
        now = time.monotonic()
        if now < self._good_until:
            return
        try:
            current = msgspec.json.decode(self.archive.get(LEASE_OBJECT), type=LeaseRecord)
        except msgspec.DecodeError as exc:
            msg = f"the archive's {LEASE_OBJECT} object does not decode: {exc}"
            raise ArchiveError(msg) from exc
        if current.holder != self.holder or current.token != self.token:
            msg = (
                f"the archive {self.archive!r} is leased to writer {current.holder} (token "
                f"{current.token}), not to this store's {self.holder} (token {self.token})"
            )
            raise ArchiveLeased(msg, current.holder, current.expires_at)
        left = current.expires_at - self.clock()
        if left <= self.seconds / 3:
            msg = f"the archive lease of {self.holder} has {left:.1f} s left: not uploading"
            raise ArchiveError(msg)
        self._good_until = now + min(self.seconds / 6, left - self.seconds / 3)

    def acquire(self) -> int:
        """Check the lease (a view takes nothing); returns the token."""
        self.ensure()
        return self.token

    def release(self) -> None:
        """Nothing: the holder lets the lease go."""
