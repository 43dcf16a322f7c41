"""Shipping one log directory to an archive, and the upload records a restore trusts.

What goes where, under the directory's archive prefix (``keyspaces/users/`` say)::

    segments/00000000000000000001.seg    a sealed segment, byte for byte
    tail/00000000000000000065.seg        the durable start of the active segment
    uploads/tail.json                    its record, replaced each time it grows
    snapshots/<snapshot file name>       a listed snapshot, byte for byte
    uploads/segment-00000000000000000001.json   one Upload per shipped object
    uploads/snapshot-00000000000000000500.json
    MANIFEST                             the directory's manifest (key type, indexes, ...)

A data object is written first and its upload record second: the record (seq range, size,
BLAKE2b digest, chain head after it, commit time) is the commit point. A crash between the
two leaves an object no record names, which a restore never reads and the next shipment
overwrites; a record whose object does not match its digest is refused by the restore.
Sealed segments and snapshots are immutable and named by their first seq, so once recorded
they are not shipped again. The one exception: ``include_active`` ships the newest segment
of a closed log as it is, and if a later open goes on appending to it, the next shipment
replaces it (and its record) with the longer one. A restore that reads a record and then
finds the object replaced sees a digest mismatch and reads both again.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import msgspec

from storage._format import segment_name
from storage._recovery import list_segments
from storage._segment import read_header, scan_to_end
from storage.archive import Archive, get_with_retries
from storage.errors import ArchiveError
from storage.manifest import read_manifest

__all__ = ["DirectoryShipper", "Upload", "digest", "read_uploads"]

UPLOADS = "uploads/"


class Upload(msgspec.Struct, frozen=True, kw_only=True):
    """A committed upload: one immutable object and what it holds.

    Attributes:
        kind: ``"segment"``, ``"snapshot"``, or ``"tail"`` (the durable start of the active
            segment, replaced as it grows; superseded once the segment ships sealed).
        object: The data object's name, relative to the directory's prefix.
        first_seq: The first record it holds (a snapshot: its seq).
        last_seq: The last record it holds (a snapshot: its seq).
        bytes: Its size.
        blake2b: The hex BLAKE2b-256 digest of its bytes.
        head: The chain head (hex) after ``last_seq``.
        time: The commit time of ``last_seq`` (0.0 if unknown).
        token: The writer lease's fencing token it was shipped under (``storage/lease.py``).
    """

    kind: Literal["segment", "snapshot", "tail"]
    object: str
    first_seq: int
    last_seq: int
    bytes: int
    blake2b: str
    head: str
    time: float = 0.0
    token: int = 0


def digest(data: bytes) -> str:
    """The digest an upload records."""
    return hashlib.blake2b(data, digest_size=32).hexdigest()


def read_uploads(
    archive: Archive, prefix: str, known: dict[str, Upload] | None = None
) -> list[Upload]:
    """Every upload record under ``prefix``, segments and snapshots, by first seq.

    With ``known`` (record name -> record, kept by the caller between calls), only what may
    have changed since is fetched: records under new names, the tail's, and the segment
    record that was the newest in ``known``. No other record can have been replaced: the
    only segment shipped twice is the one a closed log was still appending to, and records
    are committed in seq order, so a segment record is replaced only while no later one
    exists. ``known`` is updated in place.

    Raises:
        ArchiveError: The archive could not be listed or a record read or decoded.
    """
    names = [name for name in archive.list(prefix + UPLOADS) if name.endswith(".json")]
    cache = {} if known is None else known
    segments = sorted(name for name in cache if name.startswith(f"{prefix}{UPLOADS}segment-"))
    changing = {f"{prefix}{UPLOADS}tail.json", *segments[-1:]}
    for gone in set(cache) - set(names):
        del cache[gone]
    for name in names:
        if name in cache and name not in changing:
            continue
        data = get_with_retries(archive, name)
        try:
            cache[name] = msgspec.json.decode(data, type=Upload)
        except msgspec.DecodeError as exc:
            msg = f"upload record {name} does not decode: {exc}"
            raise ArchiveError(msg) from exc
    uploads = list(cache.values())
    uploads.sort(key=lambda upload: (upload.first_seq, upload.kind))
    return uploads


@dataclass
class DirectoryShipper:
    """Ships one log directory's segments and snapshots under ``prefix``. One thread at a time.

    Attributes:
        shipped_seq: Every record up to this is in shipped segments (0: none yet).
        shipped: The data objects already recorded, and the last seq each holds.
    """

    archive: Archive
    directory: Path
    prefix: str
    shipped_seq: int = 0
    shipped: dict[str, int] = field(default_factory=dict)
    sealed: set[str] = field(default_factory=set)  # recorded whole and sealed: done
    tail_seq: int = 0  # the last record the shipped tail holds
    token: int = 0  # the lease's fencing token, recorded in every upload
    local_last_seq: int | None = None  # the local log's last record when shipping began
    before_upload: Callable[[], None] | None = None  # the lease check (may raise)
    loaded: bool = False
    manifest_etag: str | None = None

    def load(self) -> None:
        """Learn what an earlier run shipped (its upload records).

        Raises:
            ArchiveError: The archive holds another history of this log (records beyond
                the local log's end, or a sealed segment whose bytes differ from the local
                one): shipping would overwrite it, so nothing ships.
        """
        uploads = read_uploads(self.archive, self.prefix)
        self._check_same_history(uploads)
        self.shipped = {upload.object: upload.last_seq for upload in uploads}
        self.tail_seq = max((u.last_seq for u in uploads if u.kind == "tail"), default=0)
        self.shipped_seq = _contiguous_end(
            [upload for upload in uploads if upload.kind == "segment"], self.shipped_seq
        )
        self.loaded = True

    def _check_same_history(self, uploads: list[Upload]) -> None:
        logs = [u for u in uploads if u.kind in ("segment", "tail")]
        if not logs or self.local_last_seq is None:
            return
        archived = max(u.last_seq for u in logs)
        problem = None
        segments = list_segments(self.directory)
        local = {s.base_seq: s for s in segments[:-1]}  # the sealed ones
        covered = range(segments[0].base_seq, segments[-1].base_seq) if segments else range(0)
        if archived > self.local_last_seq:
            problem = f"records up to {archived}, beyond the local log's {self.local_last_seq}"
        elif any(u.first_seq in covered and u.first_seq not in local for u in logs):
            problem = "segments that start where no local segment does"
        else:
            shared = [u for u in logs if u.kind == "segment" and u.first_seq in local]
            if shared:
                # The newest may have been shipped while it was active, shorter than it is
                # sealed now: the log appends only, so its copy is then a prefix of ours.
                newest = shared[-1]
                data = local[newest.first_seq].path.read_bytes()
                if len(data) < newest.bytes or digest(data[: newest.bytes]) != newest.blake2b:
                    problem = f"a segment {newest.object} whose bytes differ from this log's"
        if problem is not None:
            msg = (
                f"{self.prefix}: the archive holds another history of this log ({problem}); "
                "shipping would overwrite it, so nothing ships. Restore from the archive "
                "first, or ship to another prefix"
            )
            raise ArchiveError(msg)

    def ship(self, *, include_active: bool = False) -> int:
        """Ship what is sealed and not yet shipped, oldest first; returns the shipped seq.

        Raises:
            ArchiveError: An upload failed (what shipped before it stays recorded).
            CorruptLog: A local segment does not read (it is left unshipped).
        """
        if not self.loaded:
            self.load()
        segments = list_segments(self.directory)
        closing = len(segments) if include_active else len(segments) - 1
        for index in range(closing):
            segment = segments[index]
            name = "segments/" + segment_name(segment.base_seq)
            sealed = index + 1 < len(segments)
            if name in self.sealed:
                continue  # sealed and recorded whole: immutable
            if sealed:
                following = read_header(segments[index + 1].path)
                last_seq, head, time = following.base_seq - 1, following.head, following.time
            else:
                end = scan_to_end(segment.path, segment.base_seq, read_header(segment.path).version)
                last_seq, head, time = end.next_seq - 1, end.last_hash or b"", end.last_time
            if last_seq < segment.base_seq or self.shipped.get(name, 0) >= last_seq:
                if sealed:
                    self.sealed.add(name)
                continue  # empty, or shipped whole already
            data = segment.path.read_bytes()
            self._commit(
                Upload(
                    kind="segment",
                    object=name,
                    first_seq=segment.base_seq,
                    last_seq=last_seq,
                    bytes=len(data),
                    blake2b=digest(data),
                    head=head.hex(),
                    time=time,
                ),
                data,
                f"segment-{segment.base_seq:020d}",
            )
            self.shipped_seq = max(self.shipped_seq, last_seq)
            if sealed:
                self.sealed.add(name)
        self._ship_snapshots()
        self._ship_manifest()
        return self.shipped_seq

    def ship_tail(self, path: Path, base_seq: int, size: int, last_seq: int) -> int:
        """Ship the durable start of the active segment if it grew; returns the shipped seq.

        ``(path, base_seq, size, last_seq)`` is ``SegmentedLog.durable_tail()``: whole,
        fsynced records only, so nothing a crash could still take back is shipped.
        """
        if not self.loaded:
            self.load()
        name = "segments/" + segment_name(base_seq)
        if (
            last_seq < base_seq
            or last_seq <= self.tail_seq
            or self.shipped.get(name, 0) >= last_seq
        ):
            return max(self.shipped_seq, self.tail_seq)
        earlier = [s for s in list_segments(self.directory) if s.base_seq < base_seq]
        if any("segments/" + segment_name(s.base_seq) not in self.sealed for s in earlier):
            # Sealed after this round listed them: they ship first, next round, so the
            # archive never holds a tail beyond a gap.
            return max(self.shipped_seq, self.tail_seq)
        with path.open("rb") as file:
            data = file.read(size)
        if len(data) == size:
            upload = Upload(
                kind="tail",
                object="tail/" + segment_name(base_seq),
                first_seq=base_seq,
                last_seq=last_seq,
                bytes=size,
                blake2b=digest(data),
                head="",
            )
            self._commit(upload, data, "tail")
            self.tail_seq = last_seq
        return max(self.shipped_seq, self.tail_seq)

    def _ship_snapshots(self) -> None:
        manifest = read_manifest(self.directory)
        for listed in manifest.snapshots if manifest is not None else ():
            name = "snapshots/" + listed.file
            path = self.directory / listed.file
            if name in self.shipped or not path.exists():
                continue
            data = path.read_bytes()
            upload = Upload(
                kind="snapshot",
                object=name,
                first_seq=listed.seq,
                last_seq=listed.seq,
                bytes=len(data),
                blake2b=digest(data),
                head="",
            )
            self._commit(upload, data, f"snapshot-{listed.seq:020d}")

    def _ship_manifest(self) -> None:
        path = self.directory / "MANIFEST"
        if not path.exists():
            return
        data = path.read_bytes()
        etag = hashlib.md5(data, usedforsecurity=False).hexdigest()
        if etag != self.manifest_etag:
            self.archive.put(self.prefix + "MANIFEST", data)
            self.manifest_etag = etag

    def _commit(self, upload: Upload, data: bytes, record: str) -> None:
        if self.before_upload is not None:
            self.before_upload()
        upload = msgspec.structs.replace(upload, token=self.token)
        self.archive.put(self.prefix + upload.object, data)
        self.archive.put(f"{self.prefix}{UPLOADS}{record}.json", msgspec.json.encode(upload))
        self.shipped[upload.object] = upload.last_seq


def _contiguous_end(segments: list[Upload], start: int) -> int:
    """The last seq of the run of segments that continues from seq 1 (or the first one)."""
    end = start
    for upload in sorted(segments, key=lambda upload: upload.first_seq):
        if end and upload.first_seq > end + 1:
            break
        end = max(end, upload.last_seq)
    return end
