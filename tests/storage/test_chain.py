"""Tamper evidence: ``storage.verify`` against edits, deletions, reorderings and bit flips.

The attacker of these tests can write the files but (for a keyed chain) not the key: they
rewrite payloads and recompute every CRC and hash (``helpers.rechain``), splice records and
move segments. What must be caught is written in ``docs/format.md`` ("Verification"), and
so is what cannot be: a cut after the last anchor, a rewrite by whoever holds the key.
"""

from __future__ import annotations

import shutil
import struct
import threading
import zlib
from pathlib import Path

import pytest

from storage import (
    Anchor,
    ChainKeyMismatch,
    InvalidInput,
    InvalidOption,
    LogReader,
    NotALog,
    SegmentedLog,
    verify,
)
from storage.snapshot import KIND_ACTOR, write_snapshot
from tests.storage.helpers import (
    RECORD_HEADER_SIZE,
    ZERO_HEAD,
    append_bytes,
    copy_log,
    files_of,
    flip_bit,
    newest_segment,
    overwrite,
    payload,
    rechain,
    record_offsets,
    segment_paths,
    truncate,
    write_v1_log,
)

SMALL = 4096
SIZE = 60
LAST = 120
KEY = b"k" * 32
EXPECTED = [(seq, payload(seq, SIZE)) for seq in range(1, LAST + 1)]


def write_log(path: Path, *, key: bytes | None = None, seal: bool = True) -> Anchor:
    """LAST records over several segments; sealed (rolled) unless told; returns the anchor."""
    with SegmentedLog.open(path, segment_bytes=SMALL, fsync="never", chain_key=key) as log:
        for seq in range(1, LAST + 1, 3):
            log.append_batch([payload(s, SIZE) for s in range(seq, min(seq + 3, LAST + 1))])
        if seal:
            log.roll()
        return log.anchor()


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Anchor]:
    path = tmp_path_factory.mktemp("chain") / "log"
    anchor = write_log(path)
    assert len(segment_paths(path)) >= 4
    return path, anchor


@pytest.fixture(scope="module")
def pristine_keyed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Anchor]:
    path = tmp_path_factory.mktemp("keyed") / "log"
    return path, write_log(path, key=KEY)


@pytest.fixture
def log_dir(pristine: tuple[Path, Anchor], tmp_path: Path) -> Path:
    return copy_log(pristine[0], tmp_path / "log")


@pytest.fixture
def anchor(pristine: tuple[Path, Anchor]) -> Anchor:
    return pristine[1]


def change_one_value(seq: int, data: bytes) -> bytes:
    return data.replace(b"record", b"RECORD", 1) if seq == 40 else data


def assert_not_ok(report, *fragments: str) -> None:
    assert not report.ok
    text = "\n".join(report.problems)
    for fragment in fragments:
        assert fragment in text, text


# -- a pristine log --------------------------------------------------------------------------


def test_a_pristine_log_verifies_and_extends_its_own_anchor(log_dir: Path, anchor: Anchor):
    report = verify(log_dir, anchor=anchor)
    assert report.ok, report.problems
    assert (report.first_seq, report.last_seq, report.records) == (1, LAST, LAST)
    assert (report.head, report.anchored, report.keyed) == (anchor.head.hex(), True, False)
    assert (report.unchained_through, report.torn_tail, report.notes) == (0, None, [])
    assert report.anchor() == anchor


def test_every_point_of_the_chain_is_an_anchor_the_log_extends(tmp_path: Path):
    anchors = []
    with SegmentedLog.open(tmp_path, segment_bytes=SMALL, fsync="never") as log:
        anchors.append(log.anchor())
        for seq in range(1, 80):
            log.append(payload(seq, SIZE))
            anchors.append(log.anchor())
    for point in anchors:
        report = verify(tmp_path, anchor=point)
        assert (report.ok, report.anchored) == (True, True), (point.seq, report.problems)
    assert [point.seq for point in anchors] == list(range(80))


# -- rewrites --------------------------------------------------------------------------------


def test_a_log_rewritten_with_one_value_changed_verifies_alone_but_not_against_its_anchor(
    log_dir: Path, anchor: Anchor
):
    rechain(log_dir, change_one_value)
    changed = dict(LogReader.open(log_dir).read())[40]
    assert changed != payload(40, SIZE)
    assert len(changed) == SIZE  # same length, every CRC valid: only the chain can tell
    report = verify(log_dir)
    assert report.ok, report.problems
    assert report.head != anchor.head.hex()
    assert_not_ok(verify(log_dir, anchor=anchor), f"hash at seq {LAST} differs")
    assert not verify(log_dir, anchor=anchor).anchored


def test_with_a_chain_key_a_rewritten_log_fails_even_without_an_anchor(
    pristine_keyed: tuple[Path, Anchor], tmp_path: Path
):
    path = copy_log(pristine_keyed[0], tmp_path / "log")
    assert verify(path, key=KEY).ok
    rechain(path, change_one_value)  # every hash recomputed, without the key
    assert_not_ok(verify(path, key=KEY), "hash does not follow from the chain")
    with pytest.raises(ChainKeyMismatch):  # the open checks a record's hash with the key
        SegmentedLog.open(path, chain_key=KEY)


def test_a_keyed_log_rewritten_as_an_unkeyed_one_fails_with_the_key(
    pristine_keyed: tuple[Path, Anchor], tmp_path: Path
):
    path = copy_log(pristine_keyed[0], tmp_path / "log")
    rechain(path, change_one_value, keyed_flag=False)
    assert verify(path).ok  # to someone who does not know it was keyed, it looks sound
    assert_not_ok(verify(path, key=KEY), "the chain is not keyed, yet key= was given")


def test_a_keyed_log_verified_without_its_key_is_not_ok_and_says_to_pass_it(
    pristine_keyed: tuple[Path, Anchor],
):
    path, anchor = pristine_keyed
    report = verify(path)
    assert_not_ok(report, "keyed chain: pass key=")
    assert report.keyed
    assert len(report.problems) == 1  # everything else was checked and is sound
    keyed = verify(path, key=KEY, anchor=anchor)
    assert (keyed.ok, keyed.anchored, keyed.keyed) == (True, True, True)


def test_a_wrong_key_fails_every_link(pristine_keyed: tuple[Path, Anchor]):
    assert_not_ok(verify(pristine_keyed[0], key=b"wrong"), "record 1's hash does not follow")


# -- whole segments --------------------------------------------------------------------------


def test_deleting_a_middle_segment_is_detected(log_dir: Path):
    segments = segment_paths(log_dir)
    segments[1].unlink()
    assert_not_ok(verify(log_dir), "a segment is missing", "records missing or duplicated")


def test_deleting_the_newest_segments_is_a_cut_only_an_anchor_shows(log_dir: Path, anchor: Anchor):
    for segment in segment_paths(log_dir)[-2:]:
        segment.unlink()
    assert verify(log_dir).ok
    assert_not_ok(verify(log_dir, anchor=anchor), "before the anchor: records were cut")


def test_deleting_the_oldest_segment_is_retention_unless_an_anchor_needs_it(log_dir: Path):
    first = segment_paths(log_dir)[0]
    early = Anchor(5, record_offsets(first)[4].digest)
    assert verify(log_dir, anchor=early).ok
    first.unlink()
    assert verify(log_dir).ok
    assert_not_ok(verify(log_dir, anchor=early), "below the log's floor")


def test_duplicating_a_segment_after_the_newest_is_detected(log_dir: Path):
    segments = segment_paths(log_dir)
    shutil.copyfile(segments[1], log_dir / f"{LAST + 1:020d}.seg")
    assert_not_ok(verify(log_dir), "the file name")


def test_swapping_the_contents_of_two_segments_is_detected(log_dir: Path):
    first, second = segment_paths(log_dir)[1:3]
    one, two = first.read_bytes(), second.read_bytes()
    first.write_bytes(two)
    second.write_bytes(one)
    assert_not_ok(verify(log_dir), "header says base seq")


def test_a_segment_renamed_to_another_place_is_detected(log_dir: Path):
    segments = segment_paths(log_dir)
    segments[1].rename(log_dir / f"{LAST + 5:020d}.seg")
    assert not verify(log_dir).ok


# -- records ---------------------------------------------------------------------------------


def splice(path: Path, start: int, end: int, insert: bytes = b"") -> None:
    data = path.read_bytes()
    path.write_bytes(data[:start] + insert + data[end:])


def test_deleting_a_record_is_detected(log_dir: Path):
    segment = segment_paths(log_dir)[1]
    victim = record_offsets(segment)[3]
    splice(segment, victim.offset, victim.end)
    assert_not_ok(verify(log_dir), f"sequence number {victim.seq + 1} where {victim.seq}")


def test_deleting_a_record_and_renumbering_the_rest_fails_against_the_anchor(
    log_dir: Path, anchor: Anchor
):
    newest_with_records = segment_paths(log_dir)[-2]
    records = record_offsets(newest_with_records)
    victim = records[2]
    data = newest_with_records.read_bytes()
    out = bytearray(data[: victim.offset])
    for record in records[3:]:
        raw = bytearray(data[record.offset : record.end])
        raw[8:16] = (record.seq - 1).to_bytes(8, "little")
        out += raw
    newest_with_records.write_bytes(bytes(out))
    shutil.move(segment_paths(log_dir)[-1], log_dir / "moved-away")
    rechain(log_dir)
    assert verify(log_dir).ok  # consistent again
    assert_not_ok(verify(log_dir, anchor=anchor), "before the anchor")


def test_duplicating_a_record_is_detected(log_dir: Path):
    segment = segment_paths(log_dir)[1]
    victim = record_offsets(segment)[2]
    copy = segment.read_bytes()[victim.offset : victim.end]
    splice(segment, victim.end, victim.end, copy)
    assert_not_ok(verify(log_dir), f"sequence number {victim.seq} where {victim.seq + 1}")


def test_swapping_two_payloads_with_fresh_crcs_is_detected(log_dir: Path):
    segment = segment_paths(log_dir)[1]
    first, second = record_offsets(segment)[1:3]
    data = bytearray(segment.read_bytes())
    one = bytes(data[first.payload_offset : first.end])
    two = bytes(data[second.payload_offset : second.end])
    data[first.payload_offset : first.end], data[second.payload_offset : second.end] = two, one
    for record in (first, second):
        data[record.offset : record.offset + 4] = struct.pack(
            "<I", zlib.crc32(bytes(data[record.offset + 4 : record.end]))
        )
    segment.write_bytes(bytes(data))
    assert_not_ok(verify(log_dir), f"record {first.seq}'s hash does not follow")


def test_swapping_two_payloads_and_recomputing_the_chain_fails_against_the_anchor(
    log_dir: Path, anchor: Anchor
):
    rechain(log_dir, lambda seq, data: payload(seq ^ 1, SIZE) if 20 <= seq <= 21 else data)
    assert verify(log_dir).ok
    assert_not_ok(verify(log_dir, anchor=anchor), "differs")


# -- bit flips -------------------------------------------------------------------------------


def test_every_byte_of_a_small_sealed_log_flipped_in_turn_is_detected(tmp_path: Path):
    path = tmp_path / "log"
    with SegmentedLog.open(path, segment_bytes=SMALL, fsync="never") as log:
        for seq in range(1, 61):
            log.append(payload(seq, 40))
        log.roll()
    files = segment_paths(path)
    assert len(files) == 3
    assert record_offsets(files[-1]) == []  # every record is in a sealed segment
    missed = []
    for file in files:
        original = file.read_bytes()
        for offset in range(len(original)):
            flip_bit(file, offset, offset % 8)
            if verify(path).ok:
                missed.append((file.name, offset))
            file.write_bytes(original)
    assert missed == []
    assert verify(path).ok


def test_every_byte_of_the_final_record_flipped_shortens_the_log_or_fails(tmp_path: Path):
    anchor = write_log(tmp_path, seal=False)
    newest = newest_segment(tmp_path)
    final = record_offsets(newest)[-1]
    original = newest.read_bytes()
    for offset in range(final.offset, final.end):
        flip_bit(newest, offset, offset % 8)
        report = verify(tmp_path)
        assert not report.ok or report.last_seq < LAST, offset
        assert report.torn_tail is not None, offset
        assert not verify(tmp_path, anchor=anchor).ok, offset
        newest.write_bytes(original)


def test_a_flip_in_a_sealed_segment_is_reported_at_its_file_and_offset(log_dir: Path):
    segment = segment_paths(log_dir)[1]
    victim = record_offsets(segment)[4]
    flip_bit(segment, victim.payload_offset + 3)
    report = verify(log_dir)
    assert report.problems == [f"{segment}: offset {victim.offset}: checksum mismatch"]


# -- the end of the newest segment -----------------------------------------------------------


def test_an_incomplete_final_record_is_a_torn_tail_not_a_problem(tmp_path: Path):
    write_log(tmp_path, seal=False)
    newest = newest_segment(tmp_path)
    final = record_offsets(newest)[-1]
    truncate(newest, final.offset + RECORD_HEADER_SIZE + 5)
    report = verify(tmp_path)
    assert report.ok, report.problems
    assert report.last_seq == final.seq - 3  # its whole group goes: three per group
    assert report.torn_tail is not None
    assert str(newest) in report.torn_tail


def test_a_complete_final_record_with_a_bad_checksum_is_a_problem(tmp_path: Path):
    write_log(tmp_path, seal=False)
    newest = newest_segment(tmp_path)
    append_bytes(newest, bytes(RECORD_HEADER_SIZE + 10))  # a zero-filled tail after a crash
    report = verify(tmp_path)
    assert_not_ok(report, "checksum mismatch in the final record", "next open cuts it")
    assert (report.last_seq, report.torn_tail is not None) == (LAST, True)


def test_damage_followed_by_an_intact_record_in_the_newest_segment_is_a_problem(tmp_path: Path):
    write_log(tmp_path, seal=False)
    newest = newest_segment(tmp_path)
    victim = record_offsets(newest)[1]
    flip_bit(newest, victim.payload_offset)
    report = verify(tmp_path)
    assert_not_ok(report, "a later record is intact")
    assert report.torn_tail is None


# -- read-only -------------------------------------------------------------------------------


def stats_of(directory: Path) -> dict[str, tuple[int, int]]:
    return {
        path.name: (path.stat().st_size, path.stat().st_mtime_ns) for path in directory.iterdir()
    }


def test_verify_changes_no_file_and_takes_no_lock(tmp_path: Path):
    write_log(tmp_path, seal=False)
    newest = newest_segment(tmp_path)
    append_bytes(newest, b"torn write")  # the writer's open would cut this: verify must not
    (tmp_path / "LOCK").unlink()
    before, stats = files_of(tmp_path), stats_of(tmp_path)
    verify(tmp_path)
    verify(tmp_path, key=KEY)
    assert files_of(tmp_path) == before
    assert stats_of(tmp_path) == stats
    assert not (tmp_path / "LOCK").exists()


def test_verify_reads_a_log_its_writer_holds_open_and_is_appending_to(tmp_path: Path):
    stop = threading.Event()
    with SegmentedLog.open(tmp_path, segment_bytes=SMALL, fsync="never") as log:

        def write() -> None:
            while not stop.is_set():
                log.append_batch([payload(log.next_seq + i, 100) for i in range(5)])

        writer = threading.Thread(target=write)
        writer.start()
        try:
            seen = 0
            for _ in range(40):
                report = verify(tmp_path)
                assert report.ok, report.problems
                assert report.last_seq >= seen
                assert report.last_seq % 5 == 0  # whole groups only
                seen = report.last_seq
        finally:
            stop.set()
            writer.join(30)
        final = verify(tmp_path)
        assert (final.ok, final.last_seq, final.head) == (True, log.last_seq, log.head.hex())
        assert final.anchor() == log.anchor()


# -- snapshots -------------------------------------------------------------------------------


def snapshot_at(directory: Path, seq: int, head: bytes) -> Path:
    return write_snapshot(directory, seq, KIND_ACTOR, 0, [], chain_head=head).path


def test_snapshot_chain_heads_are_checked_against_the_log(tmp_path: Path):
    heads = {}
    with SegmentedLog.open(tmp_path, segment_bytes=SMALL, fsync="never") as log:
        for seq in range(1, 100):
            log.append(payload(seq, SIZE))
            heads[seq] = log.head
        snapshot_at(tmp_path, 0, ZERO_HEAD)
        snapshot_at(tmp_path, 30, heads[30])
        snapshot_at(tmp_path, 99, log.anchor().head)
    report = verify(tmp_path)
    assert (report.ok, report.snapshots) == (True, 3)
    wrong = snapshot_at(tmp_path, 50, heads[49])
    assert verify(tmp_path).problems == [
        f"{wrong}: offset 24: its chain head is not the log's at seq 50"
    ]


def test_a_snapshot_ahead_of_the_log_is_a_problem(tmp_path: Path):
    with SegmentedLog.open(tmp_path, fsync="never") as log:
        log.append(b"one")
    snapshot_at(tmp_path, 5, ZERO_HEAD)
    assert_not_ok(verify(tmp_path), "ahead of the log's end 1")


def test_after_retention_a_snapshot_at_the_floor_is_checked_by_the_segment_head(tmp_path: Path):
    with SegmentedLog.open(tmp_path, segment_bytes=SMALL, fsync="never") as log:
        for seq in range(1, 100):
            log.append(payload(seq, SIZE))
        log.roll()
        at_roll = log.anchor()
        old = snapshot_at(tmp_path, 10, ZERO_HEAD)  # will be below the floor: not checkable
        snapshot_at(tmp_path, at_roll.seq, at_roll.head)
        for seq in range(100, 120):
            log.append(payload(seq, SIZE))
        log.drop_segments(at_roll.seq + 1)
        assert log.first_seq == at_roll.seq + 1
    report = verify(tmp_path, anchor=at_roll)
    assert (report.ok, report.anchored, report.snapshots) == (True, True, 1), report.problems
    assert report.notes == [f"{old}: seq 10 is below the log's floor: not checked"]
    deeper = Anchor(at_roll.seq - 1, at_roll.head)
    assert_not_ok(verify(tmp_path, anchor=deeper), "below the log's floor")


def test_a_format_1_snapshot_is_noted_not_checked(tmp_path: Path):
    with SegmentedLog.open(tmp_path, fsync="never") as log:
        log.append(b"one")
    body = struct.pack("<8sHHQI", b"AKVSNAP\n", 1, KIND_ACTOR, 1, 0)
    trailer = struct.pack("<IQQ32s", 0xFFFFFFFF, 0, 0, bytes(32))
    (tmp_path / f"{1:020d}.snap").write_bytes(
        body
        + struct.pack("<I", zlib.crc32(body))
        + trailer
        + struct.pack("<I", zlib.crc32(trailer))
    )
    report = verify(tmp_path)
    assert (report.ok, report.snapshots) == (True, 0)
    assert report.notes == [
        f"{tmp_path / f'{1:020d}.snap'}: a format-1 snapshot: no chain head to check"
    ]


# -- version 1 -------------------------------------------------------------------------------


def test_the_unchained_range_of_a_version_1_log_is_reported(tmp_path: Path):
    write_v1_log(tmp_path, [[payload(seq)] for seq in range(1, 51)])
    old = verify(tmp_path)
    assert (old.ok, old.unchained_through, old.last_seq, old.head) == (True, 50, 50, "0" * 64)
    with SegmentedLog.open(tmp_path, fsync="never") as log:
        log.append_batch([b"chained", b"too"])
        anchor = log.anchor()
    report = verify(tmp_path, anchor=anchor)
    assert (report.ok, report.unchained_through, report.last_seq) == (True, 50, 52)
    assert_not_ok(verify(tmp_path, anchor=Anchor(20, anchor.head)), "unchained (format 1)")


# -- anchors and arguments -------------------------------------------------------------------


def test_an_anchor_prints_as_seq_and_hex_head_and_parses_back():
    anchor = Anchor(42, bytes(range(32)))
    text = str(anchor)
    assert text == "42:" + bytes(range(32)).hex()
    assert Anchor.parse(text) == anchor
    assert Anchor.parse(f"  {text.upper()}\n") == anchor
    assert Anchor.parse("0:" + "0" * 64) == Anchor(0, ZERO_HEAD)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "42",
        "42:",
        ":" + "0" * 64,
        "-1:" + "0" * 64,
        "4 2:" + "0" * 64,
        "1:" + "0" * 63,
        "1:" + "g" * 64,
        "1:" + "0" * 66,
        "0:" + "1" * 64,
    ],
    ids=repr,
)
def test_text_that_is_no_anchor_is_invalid_input(text: str):
    with pytest.raises(InvalidInput):
        Anchor.parse(text)


@pytest.mark.parametrize(
    ("seq", "head"), [(-1, ZERO_HEAD), (True, ZERO_HEAD), (1, b"short"), (1, "0" * 32)], ids=repr
)
def test_an_anchor_of_a_bad_seq_or_head_is_invalid_input(seq: object, head: object):
    with pytest.raises(InvalidInput):
        Anchor(seq, head)  # type: ignore[arg-type]


def test_verify_refuses_what_is_no_log_no_key_and_no_anchor(tmp_path: Path, log_dir: Path):
    with pytest.raises(NotALog):
        verify(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(NotALog):
        verify(tmp_path / "empty")
    with pytest.raises(InvalidOption):
        verify(log_dir, key=b"")
    with pytest.raises(InvalidInput):
        verify(log_dir, anchor="1:" + "0" * 64)  # type: ignore[arg-type]


def test_a_store_directory_is_no_log(tmp_path: Path):
    write_log(tmp_path / "keyspaces" / "users")
    with pytest.raises(NotALog):
        verify(tmp_path)
    assert (tmp_path / "keyspaces" / "users").is_dir()


def test_a_wrong_head_for_a_held_seq_fails_the_anchor(log_dir: Path, anchor: Anchor):
    other = Anchor(anchor.seq, bytes(31) + b"\x01")
    assert_not_ok(verify(log_dir, anchor=other), f"the log's hash at seq {LAST} differs")


def test_overwriting_a_segment_head_is_detected(log_dir: Path):
    segment = segment_paths(log_dir)[2]
    data = bytearray(segment.read_bytes())
    data[28:60] = bytes(32)
    data[68:72] = struct.pack("<I", zlib.crc32(bytes(data[:68])))
    overwrite(segment, 0, bytes(data[:72]))
    assert_not_ok(verify(log_dir), "its head is not the hash of the previous segment's last")
