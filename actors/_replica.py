"""Read-only replicas: a store restored from an archive that follows it.

``Store.open_replica(archive, cache_dir)`` restores the archive's latest point into
``cache_dir`` (``storage.restore``), opens it as a store whose actors refuse every command
(``ReadOnlyStore``) but one, and, with ``follow=True``, polls the archive every
``poll_interval`` seconds: for each open key space or actor, the upload records newer than
its last seq are fetched (digests checked), their records read, and each is applied through
that one command (``_esa_replicate``), which emits the record's events as they were. So a
replica's records have the writer's seqs and events, go through the same fold, indexes and
publication as the writer's, and every read works: gets, scans, ``at()`` (by seq; commit
times are the replica's own), ``history()``, ``subscribe()``.

``lag()`` says how many records each log is behind the archive's newest, as of the last
poll. What a replica can see is what the writer shipped: the writer's ``archive_interval``
plus the replica's ``poll_interval`` plus the transfer.
"""

from __future__ import annotations

import logging
import os
import shutil
import threading
from pathlib import Path
from typing import Any

from actors._core import REPLICATE, Command
from actors._handle import ActorHandle
from actors._store import Store
from storage._segment import read_header, scan_segment
from storage.archive import Archive, get_with_retries, open_archive
from storage.errors import ActorKVError, InvalidOperation, InvalidOption, ReadOnlyStore
from storage.restore import restore, segments_of
from storage.shipping import Upload, digest, read_uploads

__all__ = ["ReplicaStore", "open_replica"]

logger = logging.getLogger("actorkv.replica")

MARKER = ".replica"  # a cache directory this replica code made (and may wipe)


def open_replica(
    archive: Archive | str,
    cache_dir: str | os.PathLike[str],
    *,
    follow: bool = True,
    poll_interval: float = 1.0,
    **options: Any,
) -> ReplicaStore:
    """See :meth:`Store.open_replica`."""
    source = open_archive(archive)
    if "archive" in options:
        msg = "a replica follows one archive and ships to none: drop archive= from its options"
        raise InvalidOption(msg)
    if (
        isinstance(poll_interval, bool)
        or not isinstance(poll_interval, int | float)
        or not 0 < poll_interval <= 3600
    ):
        msg = f"poll_interval must be seconds in (0, 3600], got {poll_interval!r}"
        raise InvalidOption(msg)
    cache = Path(cache_dir)
    if cache.exists() and any(cache.iterdir()):
        if not (cache / MARKER).exists():
            msg = f"{cache} holds something other than a replica's cache; give an empty directory"
            raise InvalidOperation(msg)
        shutil.rmtree(cache)  # a cache: restored afresh, never trusted across opens
    restore(source, cache)
    (cache / MARKER).touch()
    store = ReplicaStore.open(cache, recovery_budget=None, **options)
    store._start_following(source, follow=follow, poll_interval=float(poll_interval))
    return store


class ReplicaStore(Store):
    """A read-only :class:`Store` that follows an archive (use ``Store.open_replica``)."""

    _archive: Archive
    _poll_interval: float
    _follower: threading.Thread | None
    _stop_following: threading.Event
    _lag: dict[str, int]
    _followed: dict[str, ActorHandle[Any]]
    _uploads: dict[str, dict[str, Upload]]  # per log: the upload records read so far
    _polling: threading.Lock

    def _start_following(self, archive: Archive, *, follow: bool, poll_interval: float) -> None:
        self._archive = archive
        self._poll_interval = poll_interval
        self._stop_following = threading.Event()
        self._lag = {}
        self._followed = {}
        self._uploads = {}
        self._polling = threading.Lock()
        self._follower = None
        if follow:
            self._follower = threading.Thread(
                target=self._follow, name=f"actorkv-replica:{self.path}", daemon=True
            )
            self._follower.start()

    # -- what a replica refuses ------------------------------------------------------------------

    def _read_only(self, what: str) -> ReadOnlyStore:
        return ReadOnlyStore(
            f"{what}: {self.path} is a replica of {self._archive!r}; it only follows the "
            "archive. Write to the store that ships to it"
        )

    def _start(self, directory: Path, *args: Any) -> Any:
        if not directory.is_dir():
            kind = "key space" if directory.parent.name == "keyspaces" else "actor"
            msg = f"the replica has no {kind} {directory.name!r} (the archive holds none)"
            raise InvalidOperation(msg)
        handle, actor = super()._start(directory, *args)
        handle.core.read_only = str(self._read_only(f"a write to {directory.name!r}"))
        self._followed[directory.relative_to(self.path).as_posix()] = handle
        return handle, actor

    def _start_sweeper(self) -> None:
        """No sweeps: the writer's expiry records arrive with the rest."""

    def _check_writes(self, what: str) -> None:
        raise self._read_only(what)

    # -- following -------------------------------------------------------------------------------

    def lag(self) -> dict[str, int]:
        """Records each followed log was behind the archive's newest at the last poll."""
        return dict(self._lag)

    def refresh(self) -> int:
        """Poll the archive once now; returns how many records were applied."""
        applied = 0
        with self._polling:  # one poll at a time, or two would apply the same records
            for name, handle in list(self._followed.items()):
                applied += self._follow_one(name, handle)
        return applied

    def _follow(self) -> None:
        while not self._stop_following.wait(self._poll_interval):
            try:
                self.refresh()
            except ActorKVError as exc:  # the archive is away: try again next poll
                logger.warning("%s: following %r failed: %s", self.path, self._archive, exc)

    def _follow_one(self, name: str, handle: ActorHandle[Any]) -> int:
        core = handle.core
        last = core.log.last_seq
        known = self._uploads.setdefault(name, {})
        segments = segments_of(read_uploads(self._archive, name + "/", known))
        newest = max((upload.last_seq for upload in segments), default=last)
        self._lag[name] = max(0, newest - last)
        applied = 0
        scratch = self.path / ".follow"
        scratch.mkdir(exist_ok=True)
        for upload in segments:
            if upload.last_seq <= last or upload.first_seq > last + 1:
                continue  # already here, or past a gap the writer has not filled yet
            data = get_with_retries(self._archive, f"{name}/{upload.object}")
            if digest(data) != upload.blake2b:
                logger.warning("%s: %s changed under its record; next poll", name, upload.object)
                break
            path = scratch / "segment"
            path.write_bytes(data)
            header = read_header(path)
            scan = scan_segment(path, header.base_seq, version=header.version, min_seq=last + 1)
            futures = []
            try:
                while True:
                    records = next(scan)
                    events = core.codec.decode_many([record[-1] for record in records])
                    for record in events:
                        future = handle.new_future()
                        handle.enqueue(Command(REPLICATE, (tuple(record),), {}, future))
                        futures.append(future)
            except StopIteration:
                pass
            for future in futures:
                future.get(timeout=60)
            applied += len(futures)
            last = core.log.last_seq
        self._lag[name] = max(0, newest - last)
        return applied

    def close(self, timeout: float = 30.0) -> None:
        """Stop following, then close like any store."""
        stop = getattr(self, "_stop_following", None)
        if stop is not None:
            stop.set()
            if self._follower is not None:
                self._follower.join(timeout)
        super().close(timeout)
