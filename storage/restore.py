"""Restore a store directory from its archive, as of the latest record, a seq or a time.

For each shipped log directory (``keyspaces/users``, ``actors/counter``, ...):

1. read its upload records (``storage/shipping.py``) and pick the point: the end of the run
   of segments that continues without a gap (latest), ``seq``, or the last record committed
   at or before ``time``;
2. pick the newest snapshot at or before the point, and the segments from the one holding
   the record after the snapshot (or seq 1) to the one holding the point; a missing seq
   range in between raises :class:`ArchiveGap` naming it;
3. download them in parallel, each checked against its record's BLAKE2b digest (a mismatch
   is read again, twice, then refused as tampered), written to a temporary name, fsynced and
   renamed into place; a file already there with the right digest is kept, so a restore
   interrupted midway resumes where it stopped;
4. cut the last segment after the point (at a whole group), write the manifest listing only
   the snapshot used, fsync the directory, and verify the result (CRCs, links, the chain,
   the snapshot's chain head) with ``storage.verify``.

The target is a store directory that ``Store.open`` opens like any other.
"""

from __future__ import annotations

import os
import shutil
import time as clock
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import msgspec

from storage import _fileio
from storage._framing import TimedRecord
from storage._recovery import list_segments
from storage._segment import read_header, scan_segment
from storage.archive import Archive, get_with_retries, open_archive
from storage.errors import ArchiveError, ArchiveGap, InvalidInput, InvalidOperation
from storage.manifest import ListedSnapshot, read_manifest, write_manifest
from storage.shipping import Upload, digest, read_uploads
from storage.verify import verify

__all__ = ["RestoreReport", "restore", "segments_of"]

MARKER = ".restoring"  # in the target while a restore runs; lets a rerun resume
ATTEMPTS = 3  # reads of an object whose digest does not match before it is refused
RETRY_PAUSE = 0.1  # seconds before reading a mismatched object again; doubled each time


@dataclass(frozen=True)
class RestoreReport:
    """What a restore did.

    Attributes:
        target: The restored store directory.
        seqs: Each restored log directory and the last record it holds.
        snapshots: Each log directory's snapshot used, by seq (None: replayed from seq 1).
        downloaded: Objects fetched.
        reused: Objects already in the target with the right digest (a resumed restore).
        bytes: Bytes fetched.
        seconds: Wall time.
    """

    target: Path
    seqs: dict[str, int] = field(default_factory=dict)
    snapshots: dict[str, int | None] = field(default_factory=dict)
    downloaded: int = 0
    reused: int = 0
    bytes: int = 0
    seconds: float = 0.0


def restore(
    archive: Archive | str,
    target_dir: str | os.PathLike[str],
    *,
    seq: int | None = None,
    time: float | None = None,
    names: list[str] | None = None,
    workers: int = 8,
) -> RestoreReport:
    """Rebuild a store directory from ``archive`` as of ``seq`` or ``time`` (latest if neither).

    Args:
        archive: ``"s3://bucket/prefix"``, ``"file:///dir"`` or an ``Archive``.
        target_dir: A new or empty directory, or one a restore was interrupted in.
        seq: The last record to restore of each log (a point of one key space, mostly
            used with ``names``).
        time: Restore each log to its last record committed at or before this. A log
            with nothing by then (a key space made later) is left out, as the store had
            none; :attr:`RestoreReport.seqs` names what was restored.
        names: Only these key spaces or actors (``"users"`` or ``"keyspaces/users"``).
        workers: Parallel downloads.

    Raises:
        InvalidInput: Both ``seq`` and ``time``, or a bad one, or a point before any
            record of the chosen logs. InvalidOperation: The target
            holds something else. ArchiveGap: Records the point needs are missing.
        ArchiveError: The archive could not be read, or an object was tampered with.
    """
    started = clock.perf_counter()
    if seq is not None and time is not None:
        msg = "restore() takes seq= or time=, not both"
        raise InvalidInput(msg)
    if seq is not None and (isinstance(seq, bool) or not isinstance(seq, int) or seq < 0):
        msg = f"seq must be a non-negative int, got {seq!r}"
        raise InvalidInput(msg)
    store = open_archive(archive)
    target = Path(target_dir)
    _claim_target(target)
    report = RestoreReport(target)
    directories = _directories(store, names)
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        counts: dict[str, int] = {"downloaded": 0, "reused": 0, "bytes": 0}
        for directory in directories:
            last, snapshot = _restore_directory(
                store, directory, target / directory, seq, time, pool, counts
            )
            if last == 0:
                continue  # it held nothing yet at that point: the store then had no such log
            report.seqs[directory] = last
            report.snapshots[directory] = snapshot
    if directories and not report.seqs:
        point = f"seq={seq}" if seq is not None else f"time={time}"
        msg = (
            f"nothing in {store!r} was written at or before {point}: there is no store to "
            f"restore as of then ({target} is left empty); choose a later point"
        )
        raise InvalidInput(msg)
    _fileio.fsync_dir(target)
    (target / MARKER).unlink(missing_ok=True)
    _fileio.fsync_dir(target)
    return RestoreReport(
        target,
        report.seqs,
        report.snapshots,
        counts["downloaded"],
        counts["reused"],
        counts["bytes"],
        clock.perf_counter() - started,
    )


def _claim_target(target: Path) -> None:
    if target.exists() and any(target.iterdir()) and not (target / MARKER).exists():
        msg = (
            f"{target} is not empty and holds no interrupted restore; restore into a new "
            "directory (a restore never overwrites a store)"
        )
        raise InvalidOperation(msg)
    _fileio.make_dirs(target)
    (target / MARKER).touch()
    _fileio.fsync_dir(target)


def _directories(archive: Archive, names: list[str] | None) -> list[str]:
    found = sorted(
        name[: -len("/MANIFEST")] for name in archive.list("") if name.endswith("/MANIFEST")
    )
    if names is None:
        return found
    chosen = [d for d in found if d in names or d.rsplit("/", 1)[-1] in names]
    missing = [n for n in names if not any(n in (d, d.rsplit("/", 1)[-1]) for d in found)]
    if missing:
        msg = f"the archive holds no key space or actor named {missing}; it holds {found}"
        raise InvalidInput(msg)
    return chosen


def _restore_directory(
    archive: Archive,
    name: str,
    target: Path,
    seq: int | None,
    time: float | None,
    pool: ThreadPoolExecutor,
    counts: dict[str, int],
) -> tuple[int, int | None]:
    prefix = name + "/"
    uploads = read_uploads(archive, prefix)
    segments = segments_of(uploads)
    snapshots = [upload for upload in uploads if upload.kind == "snapshot"]
    if not segments:
        msg = f"{name}: the archive holds no segment of it"
        raise ArchiveGap(msg)
    point = _point(name, segments, seq)
    if time is not None:  # exact before the snapshot is chosen: it must not be past it
        point = _last_seq_at(archive, prefix, segments, point, time, target)
    if point == 0:
        shutil.rmtree(target, ignore_errors=True)
        return 0, None
    base = max((s for s in snapshots if s.last_seq <= point), default=None, key=_seq_of)
    # From the record after the snapshot; a snapshot of the point itself still needs the
    # segment holding it, which the log continues from.
    start = 1 if base is None else min(base.last_seq + 1, point)
    needed = _covering(name, segments, max(start, 1), point)
    _fileio.make_dirs(target)
    wanted = [*needed, *([] if base is None else [base])]
    jobs = [pool.submit(_fetch, archive, prefix, upload, target) for upload in wanted]
    for job in jobs:
        reused, size = job.result()
        counts["reused" if reused else "downloaded"] += 1
        counts["bytes"] += size
    for segment in list_segments(target):  # leftovers of an interrupted, different restore
        if segment.path.name not in {Path(upload.object).name for upload in needed}:
            _fileio.remove(segment.path)
    last = _cut_after(target, point)
    _write_manifest(archive, prefix, target, base)
    _fileio.fsync_dir(target)
    checked = verify(target)
    if not checked.ok:
        msg = f"{name}: the restored log does not verify: {'; '.join(checked.problems)}"
        raise ArchiveError(msg)
    return last, None if base is None else base.last_seq


def segments_of(uploads: list[Upload]) -> list[Upload]:
    """The segment uploads, the active segment's tail in place of a shorter copy of it."""
    segments = {u.first_seq: u for u in uploads if u.kind == "segment"}
    for tail in (u for u in uploads if u.kind == "tail"):
        shipped = segments.get(tail.first_seq)
        if shipped is None or shipped.last_seq < tail.last_seq:
            segments[tail.first_seq] = tail
    return [segments[first] for first in sorted(segments)]


def _seq_of(upload: Upload) -> int:
    return upload.last_seq


def _point(name: str, segments: list[Upload], seq: int | None) -> int:
    """The last seq to restore: the gap-free end, or ``seq`` (ArchiveGap past the end)."""
    end, gap_to = 0, None
    for upload in segments:  # by first seq
        if end and upload.first_seq > end + 1:
            gap_to = upload.first_seq - 1
            break
        end = max(end, upload.last_seq)
    if seq is not None:
        if seq > end:
            missing = f"{end + 1}..{gap_to}" if gap_to is not None else f"after {end}"
            msg = (
                f"{name}: records {missing} are not in the archive (never shipped, or "
                f"deleted), so seq {seq} cannot be restored; the newest point is {end}"
            )
            raise ArchiveGap(msg)
        return seq
    return end


def _last_seq_at(
    archive: Archive, prefix: str, segments: list[Upload], end: int, time: float, target: Path
) -> int:
    """The last record up to ``end`` committed at or before ``time`` (0: none).

    A sealed segment's record gives its last record's time, so whole segments before
    ``time`` are passed over unread; the one ``time`` falls in (and a tail, whose record
    gives no time) is fetched into ``target``, where the restore reuses it, and read.
    """
    point = 0
    _fileio.make_dirs(target)
    for upload in segments:
        if upload.first_seq > end:
            break
        if upload.kind == "segment" and 0 < upload.time <= time:
            point = min(upload.last_seq, end)
            continue
        _fetch(archive, prefix, upload, target)
        path = target / Path(upload.object).name
        scan = scan_segment(
            path, upload.first_seq, version=read_header(path).version, max_seq=end, timed=True
        )
        for records in cast("Iterator[list[TimedRecord]]", scan):
            for seq, at, _ in records:
                if at > time:
                    return point
                point = seq
    return point


def _covering(name: str, segments: list[Upload], start: int, point: int) -> list[Upload]:
    """The segments holding ``start..point``, in order; ArchiveGap names a missing range."""
    chosen = [s for s in segments if s.last_seq >= start and s.first_seq <= point]
    expected = start
    for upload in chosen:
        if upload.first_seq > expected:
            msg = (
                f"{name}: records {expected}..{upload.first_seq - 1} are not in the archive "
                "(they were never shipped, or were deleted); restore to an earlier point"
            )
            raise ArchiveGap(msg)
        expected = upload.last_seq + 1
    if expected <= point:
        msg = f"{name}: records {expected}..{point} are not in the archive"
        raise ArchiveGap(msg)
    return chosen


def _fetch(archive: Archive, prefix: str, upload: Upload, target: Path) -> tuple[bool, int]:
    """Download one object, verified; returns ``(reused, bytes)``."""
    path = target / Path(upload.object).name
    if (
        path.exists()
        and path.stat().st_size == upload.bytes
        and digest(path.read_bytes()) == upload.blake2b
    ):
        return True, 0
    for attempt in range(ATTEMPTS):
        data = get_with_retries(archive, prefix + upload.object)
        if len(data) == upload.bytes and digest(data) == upload.blake2b:
            break
        clock.sleep(RETRY_PAUSE * 2**attempt)
        # The object may have been replaced since its record was read (a segment shipped
        # again after it grew): read the record again before calling it tampered.
        upload = _reread(archive, prefix, upload)
    else:
        msg = (
            f"{prefix}{upload.object}: its bytes do not match the digest its upload record "
            f"gives ({upload.blake2b[:16]}...): damaged or tampered with; refused"
        )
        raise ArchiveError(msg)
    _replace_file(path, data)
    return False, len(data)


def _reread(archive: Archive, prefix: str, upload: Upload) -> Upload:
    kind, first = upload.kind, upload.first_seq
    record = f"{prefix}uploads/" + ("tail.json" if kind == "tail" else f"{kind}-{first:020d}.json")
    try:
        return msgspec.json.decode(get_with_retries(archive, record), type=Upload)
    except (ArchiveError, msgspec.DecodeError):
        return upload


def _replace_file(path: Path, data: bytes) -> None:
    """``path`` holds ``data``, fsynced, replaced atomically (the caller fsyncs the directory)."""
    temporary = path.with_name(path.name + ".download")
    temporary.unlink(missing_ok=True)  # left by an interrupted restore
    _fileio.write_file(temporary, data)
    _fileio.rename(temporary, path)


def _cut_after(target: Path, point: int) -> int:
    """Drop records after ``point`` (at a whole group); returns the last seq kept."""
    segments = list_segments(target)
    last = 0
    for index, segment in enumerate(segments):
        header = read_header(segment.path)
        if header.base_seq > point:
            for later in segments[index:]:
                _fileio.remove(later.path)
            break
        scan = scan_segment(segment.path, header.base_seq, version=header.version, max_seq=point)
        end = _drain(scan)
        offset, last = end.cut_point()
        if offset < end.size:
            fd = _fileio.open_write(segment.path)
            try:
                _fileio.truncate(fd, offset)
                _fileio.fsync(fd)
            finally:
                os.close(fd)
    return last


def _drain(scan: Any) -> Any:
    while True:
        try:
            next(scan)
        except StopIteration as stopped:
            return stopped.value


def _write_manifest(archive: Archive, prefix: str, target: Path, base: Upload | None) -> None:
    # The archived manifest as it was shipped (its own checksum inside), then rewritten to
    # list only the snapshot this restore used.
    _replace_file(target / "MANIFEST", get_with_retries(archive, prefix + "MANIFEST"))
    manifest = read_manifest(target)
    if manifest is None:
        msg = f"{prefix}MANIFEST does not read as a manifest"
        raise ArchiveError(msg)
    listed: tuple[ListedSnapshot, ...] = ()
    if base is not None:
        file = Path(base.object).name
        items = next((s.items for s in manifest.snapshots if s.file == file), 0)
        listed = (ListedSnapshot(base.last_seq, file, base.bytes, items),)
    write_manifest(target, msgspec.structs.replace(manifest, snapshots=listed))
