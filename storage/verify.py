"""``storage.verify``: check a log's hash chain, read-only. See ``docs/format.md``, "Verification".

What a passing report proves: every record of the log read back with its CRC, in sequence,
each hash recomputed from the previous one (keyed, when the chain is), every segment header
linked to the segment before it by base, ``prev_base`` and chain head, every snapshot's chain
head equal to the log's at its seq, and, with ``anchor=``, that the log extends that anchor:
nothing at or before ``anchor.seq`` was edited, removed, inserted or reordered.

What it cannot prove:

- a cut after the last anchor you saved: dropping the newest records leaves a shorter log
  that verifies (only an anchor at or after them shows they existed);
- a rewrite by whoever holds the key (or, for an unkeyed chain, by anyone, when no anchor is
  given): they can recompute every hash;
- a rollback to an older copy that extends every anchor the verifier knows: if the verifier
  does not know the newer anchor, the old copy verifies against the old one.

Deleting the oldest segments is what retention does: it is not a problem by itself, only
when an anchor (or a snapshot) below the new floor can no longer be proven.
"""

from __future__ import annotations

import hashlib
import os
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from storage._format import (
    FLAG_GROUP_CONTINUES,
    FORMAT_VERSION,
    MAX_PAYLOAD_BYTES,
    RECORD_HASH_OFFSET,
    RECORD_HEADER,
    RECORD_HEADER_SIZE,
    ZERO_HEAD,
)
from storage._recovery import Segment, list_segments
from storage._segment import (
    READ_CHUNK_BYTES,
    SegmentHeader,
    find_later_record,
    read_header,
    scan_to_end,
)
from storage.chain import Anchor, check_chain_key, record_hasher
from storage.errors import CorruptLog, InvalidInput, NotALog
from storage.snapshot import list_snapshots, read_snapshot_header

__all__ = ["VerifyReport", "verify"]

_NEVER: Final = 2**64
_ATTEMPTS: Final = 3  # retention may delete a segment while it is read: start again


@dataclass(frozen=True, slots=True)
class VerifyReport:
    """What :func:`verify` found.

    Attributes:
        ok: Whether nothing is wrong (``problems`` is empty).
        first_seq: The oldest record the log holds (``last_seq + 1`` when none).
        last_seq: The last complete record read (an incomplete end is ``torn_tail``).
        head: The chain head after ``last_seq``, in hex (64 digits).
        problems: What is wrong, one readable sentence each, naming file and offset.
        records: How many records were read and checked.
        unchained_through: The last record of format version 1 (no hash, CRC checked
            only), or 0 if none.
        keyed: Whether the chain is keyed.
        anchored: Whether ``anchor`` was given and the log was proven to extend it.
        snapshots: How many snapshots' chain heads were checked against the log.
        torn_tail: An incomplete end of the newest segment (a write in progress, or a torn
            write the next open cuts), or None. Not a problem by itself.
        notes: What could not be checked but is not wrong (old snapshots, below the floor).
    """

    ok: bool
    first_seq: int
    last_seq: int
    head: str
    problems: list[str] = field(default_factory=list)
    records: int = 0
    unchained_through: int = 0
    keyed: bool = False
    anchored: bool = False
    snapshots: int = 0
    torn_tail: str | None = None
    notes: list[str] = field(default_factory=list)

    def anchor(self) -> Anchor:
        """``Anchor(last_seq, head)``: the point of the chain this report read up to."""
        return Anchor(self.last_seq, bytes.fromhex(self.head))


def verify(
    path: str | os.PathLike[str], *, anchor: Anchor | None = None, key: bytes | None = None
) -> VerifyReport:
    """Check the log in directory ``path``, its hash chain, and that it extends ``anchor``.

    Checks CRCs, sequence numbers, segment links, every chain link, snapshot chain heads,
    and with ``anchor`` that the log extends it. Read-only: takes no lock, cuts, writes or
    removes nothing; safe beside a writer (it reads up to the last complete record and
    reports the rest as ``torn_tail``). O(bytes of the log): about 1.4 us per record of
    100 bytes (0.72M records/s), 1.0 us per record of 30 bytes (``bench/test_chain_bench.py``).

    See the module notes (and ``docs/format.md``, "Verification") for what a passing report
    proves and what no verification can.

    Args:
        path: A log directory (``STORE/keyspaces/NAME``, ``STORE/actors/NAME``, ...).
        anchor: An ``Anchor`` saved earlier (``SegmentedLog.anchor()``): prove the log
            extends it.
        key: The chain key, for a keyed chain. Without it a keyed chain's links cannot be
            checked, which is a problem; with it, an unkeyed chain is a problem.

    Returns:
        The report; ``report.ok`` says whether anything is wrong.

    Raises:
        NotALog: ``path`` is not a directory holding segment files.
        InvalidOption: ``key`` is not 1 to 64 bytes.
        InvalidInput: ``anchor`` is not an :class:`Anchor`.
    """
    directory = Path(path)
    check_chain_key(key)
    given: object = anchor
    if given is not None and not isinstance(given, Anchor):
        msg = f"anchor must be a storage.Anchor (Anchor.parse(text) reads one), got {given!r:.60}"
        raise InvalidInput(msg)
    if not directory.is_dir():
        raise NotALog(directory, "no such directory")
    for attempt in range(_ATTEMPTS):
        segments = list_segments(directory)
        if not segments:
            raise NotALog(directory, "it holds no segment files (*.seg)")
        try:
            return _Walk(directory, segments, anchor, key).run()
        except FileNotFoundError:
            if attempt == _ATTEMPTS - 1:
                raise
    raise AssertionError  # pragma: no cover (the loop returns or raises)


@dataclass
class _Tip:
    """The chain as far as the walk got: the next record expected and what it links to."""

    seq: int | None
    head: bytes | None
    time: float = 0.0
    version: int = FORMAT_VERSION
    base: int | None = None


class _Walk:
    """One pass over the segments, oldest first."""

    def __init__(
        self, directory: Path, segments: list[Segment], anchor: Anchor | None, key: bytes | None
    ) -> None:
        self.directory = directory
        self.segments = segments
        self.anchor = anchor
        self.key = key
        self.problems: list[str] = []
        self.notes: list[str] = []
        self.records = 0
        self.unchained_through = 0
        self.keyed: bool | None = None
        self.torn_tail: str | None = None
        self.first_seq = segments[0].base_seq
        self.heads: dict[int, bytes] = {}
        """Hashes of the records snapshots and the anchor name, and segment heads."""
        self.snapshots = sorted(list_snapshots(directory))
        wanted = {seq for seq, _ in self.snapshots}
        if anchor is not None:
            wanted.add(anchor.seq)
        self.wanted = sorted(wanted)
        self.end: tuple[int, bytes] = (self.first_seq - 1, ZERO_HEAD)
        """The last committed record found and the chain head after it."""

    def problem(self, path: Path, offset: int, reason: str) -> None:
        self.problems.append(f"{path}: offset {offset}: {reason}")

    def run(self) -> VerifyReport:
        tip = _Tip(seq=None, head=None)
        for index, segment in enumerate(self.segments):
            tip = self._segment(segment, tip, newest=index == len(self.segments) - 1)
        last_seq, head = self.end
        if self.keyed and self.key is None:
            self.problems.append(
                f"{self.directory}: keyed chain: pass key= to check its links (the CRCs, "
                "sequence numbers and segment links were checked)"
            )
        elif self.keyed is False and self.key is not None:
            self.problems.append(
                f"{self.directory}: the chain is not keyed, yet key= was given: anyone who "
                "can write the files could have rewritten it"
            )
        self.heads.setdefault(last_seq, head)
        checked = self._check_snapshots(last_seq)
        anchored = self._check_anchor(last_seq)
        return VerifyReport(
            ok=not self.problems,
            first_seq=self.first_seq,
            last_seq=last_seq,
            head=head.hex(),
            problems=self.problems,
            records=self.records,
            unchained_through=self.unchained_through,
            keyed=bool(self.keyed),
            anchored=anchored,
            snapshots=checked,
            torn_tail=self.torn_tail,
            notes=self.notes,
        )

    # -- segments ----------------------------------------------------------------------------

    def _segment(self, segment: Segment, tip: _Tip, *, newest: bool) -> _Tip:
        path = segment.path
        try:
            header = read_header(path)
        except CorruptLog as damage:
            self.problem(path, damage.offset, damage.reason)
            return _Tip(seq=None, head=None)
        self._check_links(segment, header, tip)
        self.end = (header.base_seq - 1, header.head)
        if header.version < FORMAT_VERSION:
            return self._unchained(segment, header, newest=newest)
        if self.keyed is None:
            self.keyed = header.keyed
        elif header.keyed != self.keyed:
            self.problem(path, 10, "the CHAIN_KEYED flag differs from the other segments'")
        self.heads.setdefault(header.base_seq - 1, header.head)
        return self._chained(segment, header, newest=newest)

    def _check_links(self, segment: Segment, header: SegmentHeader, tip: _Tip) -> None:
        path = segment.path
        if header.base_seq != segment.base_seq:
            reason = f"header says base seq {header.base_seq}, the file name {segment.base_seq}"
            self.problem(path, 12, reason)
        if segment is self.segments[0]:
            self.first_seq = header.base_seq
            if header.base_seq == 1 and header.head != ZERO_HEAD:
                self.problem(path, 28, "the first segment's head is not zeros")
            return
        if tip.base is not None and header.prev_base != tip.base:
            reason = (
                f"segment follows base seq {header.prev_base}, but the previous segment on disk "
                f"starts at {tip.base}: a segment is missing, duplicated or out of order"
            )
            self.problem(path, 20, reason)
        if header.version < tip.version:
            self.problem(path, 8, "a version-1 segment after a version-2 one")
        if tip.seq is not None and header.base_seq != tip.seq:
            reason = f"segment starts at seq {header.base_seq}, expected {tip.seq}"
            self.problem(path, 12, reason + " (records missing or duplicated)")
        if header.version >= FORMAT_VERSION and tip.head is not None:
            chained = tip.version >= FORMAT_VERSION
            if header.head != (tip.head if chained else ZERO_HEAD):
                reason = "its head is not the hash of the previous segment's last record"
                self.problem(path, 28, reason)
            if header.time != (tip.time if chained else 0.0):
                reason = "its time is not the commit time of the previous segment's last record"
                self.problem(path, 60, reason)

    def _unchained(self, segment: Segment, header: SegmentHeader, *, newest: bool) -> _Tip:
        end = scan_to_end(segment.path, header.base_seq, header.version)
        self.records += end.next_seq - header.base_seq
        offset, last = end.cut_point()
        incomplete = end.problem is None or end.problem.startswith("incomplete record")
        if not end.clean:
            reason = end.problem or "the segment ends inside a group"
            if newest and incomplete:
                self.torn_tail = f"{segment.path}: offset {offset}: {reason}"
            else:
                self.problem(segment.path, end.offset, reason)
        self.unchained_through = max(self.unchained_through, last)
        for seq in self.wanted:
            if header.base_seq <= seq <= last:
                self.heads[seq] = ZERO_HEAD
        self.end = (last, ZERO_HEAD)
        if not end.clean and not newest:
            return _Tip(None, None)
        return _Tip(last + 1, ZERO_HEAD, 0.0, header.version, header.base_seq)

    def _chained(self, segment: Segment, header: SegmentHeader, *, newest: bool) -> _Tip:
        copy = None
        if self.key is not None or not header.keyed:
            copy = record_hasher(self.key if header.keyed else None).copy
        check = _RecordCheck(header.head, header.base_seq, header.time, copy)
        check.run(segment.path, header.data_start, self.wanted, self.heads)
        self.records += check.next_seq - header.base_seq
        if check.problem is None and check.group is None:
            self.end = (check.next_seq - 1, check.prev)
            return _Tip(check.next_seq, check.prev, check.time, header.version, header.base_seq)
        offset, first_of_group, head_before = check.group or (check.pos, check.next_seq, check.prev)
        kept_time = check.group_time if check.group else check.time
        self.end = (first_of_group - 1, head_before)
        for seq in [seq for seq in self.heads if seq >= first_of_group]:
            del self.heads[seq]  # records of an uncommitted group are not the log's
        reason = check.problem or "the segment ends inside a group"
        if check.problem is not None and not check.incomplete:
            later = None
            if newest:
                later = find_later_record(segment.path, check.pos + 1, check.next_seq)
            if newest and later is None:
                self.torn_tail = f"{segment.path}: offset {offset}: {reason}"
                reason += (
                    " in the final record (a torn write after a crash looks the same: the "
                    "next open cuts it into a side file)"
                )
            elif newest:
                reason += ", yet a later record is intact"
            self.problem(segment.path, check.pos, reason)
            return _Tip(None, None)
        if not newest:
            self.problem(segment.path, offset, reason)
            return _Tip(None, None)
        self.torn_tail = f"{segment.path}: offset {offset}: {reason}"
        return _Tip(first_of_group, head_before, kept_time, header.version, header.base_seq)

    # -- snapshots and the anchor ------------------------------------------------------------

    def _known_head(self, seq: int, last_seq: int) -> bytes | None:
        """The chain head after ``seq`` as the log proves it, or None if it does not hold it."""
        if seq == 0:
            return ZERO_HEAD
        if self.first_seq - 1 <= seq <= last_seq:
            return self.heads.get(seq)
        return None

    def _check_snapshots(self, last_seq: int) -> int:
        checked = 0
        for seq, path in self.snapshots:
            try:
                header = read_snapshot_header(path)
            except CorruptLog as damage:
                self.problem(path, damage.offset, damage.reason)
                continue
            if seq > last_seq:
                self.problem(
                    path, 12, f"snapshot of seq {seq} is ahead of the log's end {last_seq}"
                )
                continue
            if header.chain_head is None:
                self.notes.append(f"{path}: a format-1 snapshot: no chain head to check")
                continue
            known = self._known_head(seq, last_seq)
            if known is None:
                self.notes.append(f"{path}: seq {seq} is below the log's floor: not checked")
                continue
            checked += 1
            if header.chain_head != known:
                self.problem(path, 24, f"its chain head is not the log's at seq {seq}")
        return checked

    def _check_anchor(self, last_seq: int) -> bool:
        anchor = self.anchor
        if anchor is None:
            return False
        where = f"{self.directory}: anchor {anchor.seq}:{anchor.head.hex()[:16]}..."
        if anchor.seq > last_seq:
            self.problems.append(
                f"{where}: the log ends at seq {last_seq}, before the anchor: records were cut "
                "(or the anchor is another log's)"
            )
            return False
        if 0 < anchor.seq <= self.unchained_through and anchor.seq >= self.first_seq:
            self.problems.append(f"{where}: seq {anchor.seq} is unchained (format 1): unprovable")
            return False
        known = self._known_head(anchor.seq, last_seq)
        if known is None:
            self.problems.append(
                f"{where}: seq {anchor.seq} is below the log's floor {self.first_seq} "
                "(retention dropped it): the anchor cannot be proven"
            )
            return False
        if known != anchor.head:
            self.problems.append(f"{where}: the log's hash at seq {anchor.seq} differs")
            return False
        return not self.problems


class _RecordCheck:
    """The record loop of one version-2 segment: CRC, seq, flags, time, chain link.

    Verification's hot loop (about 1.4 us per 100-byte record): one unpack, one CRC over
    the header tail and payload, one hash of three pieces sliced from the same buffer,
    and every check that passes for a good record folded into one comparison. Most of it
    is the C work: BLAKE2b of two blocks (0.40 us; a payload of up to 72 bytes fits one,
    0.24 us) and zlib's CRC-32 of a short buffer (0.20 us).
    """

    def __init__(
        self,
        head: bytes,
        base_seq: int,
        time: float,
        copy: Callable[[], hashlib.blake2b] | None,
    ) -> None:
        self.prev = head
        self.next_seq = base_seq
        self.copy = copy
        self.time = time
        self.pos = 0
        self.problem: str | None = None
        self.incomplete = False
        self.group: tuple[int, int, bytes] | None = None
        self.group_time = 0.0

    def run(self, path: Path, start: int, wanted: list[int], heads: dict[int, bytes]) -> None:
        pending = [seq for seq in wanted if seq >= self.next_seq]
        with path.open("rb", buffering=0) as file:
            file.seek(start)
            buf = b""
            buf_offset = start
            pos = 0
            while True:
                chunk = file.read(READ_CHUNK_BYTES)
                buf = buf[pos:] + chunk
                buf_offset += pos
                pos = 0
                while True:
                    stop_at = pending[0] if pending else _NEVER
                    pos = self._records(buf, pos, buf_offset, stop_at)
                    if self.problem is not None or not pending or self.next_seq <= stop_at:
                        break
                    heads[pending.pop(0)] = self.prev
                if self.problem is not None:
                    self.pos = buf_offset + pos
                    return
                if not chunk:
                    self.pos = buf_offset + pos
                    if pos < len(buf):
                        self.problem = f"incomplete record ({len(buf) - pos} bytes at end of file)"
                        self.incomplete = True
                    return

    def _records(self, buf: bytes, pos: int, buf_offset: int, stop_at: int) -> int:
        unpack = RECORD_HEADER.unpack_from
        crc32 = zlib.crc32
        copy = self.copy
        prev, next_seq, last_time, group = self.prev, self.next_seq, self.time, self.group
        end_of_buf = len(buf)
        last_header = end_of_buf - RECORD_HEADER_SIZE
        try:
            while pos <= last_header and next_seq <= stop_at:
                crc, length, seq, flags, reserved, time, digest = unpack(buf, pos)
                end = pos + RECORD_HEADER_SIZE + length
                if end > end_of_buf:
                    if length > MAX_PAYLOAD_BYTES:
                        self.problem = f"record length field {length} is over the limit"
                    break
                if (
                    crc32(buf[pos + 4 : end]) != crc
                    or seq != next_seq
                    or flags > FLAG_GROUP_CONTINUES
                    or reserved
                    or not time >= last_time
                ):
                    self.problem = _record_problem(
                        buf[pos + 4 : end], crc, seq, next_seq, flags, reserved, time, last_time
                    )
                    break
                if copy is not None:  # slices of bytes: cheaper than memoryviews here
                    hashed = copy()
                    hashed.update(prev)
                    hashed.update(buf[pos + 4 : pos + RECORD_HASH_OFFSET])
                    hashed.update(buf[pos + RECORD_HEADER_SIZE : end])
                    if hashed.digest() != digest:
                        self.problem = (
                            f"record {seq}'s hash does not follow from the chain before it"
                        )
                        break
                if flags:
                    if group is None:
                        group = (buf_offset + pos, seq, prev)
                        self.group_time = last_time
                else:
                    group = None
                prev = digest
                last_time = time
                next_seq += 1
                pos = end
        finally:
            self.prev, self.next_seq, self.time, self.group = prev, next_seq, last_time, group
        return pos


def _record_problem(
    body: bytes,
    crc: int,
    seq: int,
    next_seq: int,
    flags: int,
    reserved: int,
    time: float,
    last_time: float,
) -> str:
    if zlib.crc32(body) != crc:
        return "checksum mismatch"
    if seq != next_seq:
        return f"sequence number {seq} where {next_seq} was expected"
    if flags > FLAG_GROUP_CONTINUES or reserved:
        return f"unknown record flags {flags:#06x}/{reserved:#06x} (newer format?)"
    return f"commit time {time!r} goes back (the record before has {last_time!r})"
