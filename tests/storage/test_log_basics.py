"""Example-based tests of the segmented log's public behaviour."""

from __future__ import annotations

import pytest

import storage._framing
from storage import InvalidOption, InvalidValue, KeyspaceClosed, SegmentedLog
from tests.storage.helpers import (
    GROUP_CONTINUES,
    RECORD_HEADER_SIZE,
    payload,
    record_offsets,
    segment_paths,
)

SMALL = 4096


def sizes(log_dir):
    return {p.name: p.stat().st_size for p in segment_paths(log_dir)}


def test_append_returns_gapless_seqs_from_one(tmp_path):
    with SegmentedLog.open(tmp_path) as log:
        assert [log.append(payload(i)) for i in range(1, 6)] == [1, 2, 3, 4, 5]
        assert log.append_batch([payload(6), payload(7), payload(8)]) == 8
        assert log.append(payload(9)) == 9
        assert list(log.read()) == [(i, payload(i)) for i in range(1, 10)]


def test_empty_log_has_first_seq_one_and_last_seq_zero(tmp_path):
    with SegmentedLog.open(tmp_path) as log:
        assert log.first_seq == 1
        assert log.last_seq == 0
        assert list(log.read()) == []
        assert log.verify() == 0


def test_first_and_last_seq_follow_appends(tmp_path):
    with SegmentedLog.open(tmp_path) as log:
        log.append_batch([payload(i) for i in range(1, 4)])
        assert log.first_seq == 1
        assert log.last_seq == 3


def test_read_from_any_seq_across_several_segments(tmp_path):
    with SegmentedLog.open(tmp_path, segment_bytes=SMALL) as log:
        for i in range(1, 301):
            log.append(payload(i, 100))
        assert len(segment_paths(tmp_path)) >= 5
        for start in (1, 2, 37, 38, 150, 299, 300):
            assert list(log.read(start)) == [(i, payload(i, 100)) for i in range(start, 301)]
        assert list(log.read(301)) == []
        assert list(log.read(10_000)) == []
        assert log.verify() == 300


def test_reopen_keeps_every_record_and_continues_the_numbering(tmp_path):
    with SegmentedLog.open(tmp_path, segment_bytes=SMALL) as log:
        for i in range(1, 101):
            log.append(payload(i, 80))
    with SegmentedLog.open(tmp_path, segment_bytes=SMALL) as log:
        assert log.recovery is None
        assert log.last_seq == 100
        assert list(log.read()) == [(i, payload(i, 80)) for i in range(1, 101)]
        assert log.append(payload(101, 80)) == 101
    with SegmentedLog.open(tmp_path) as log:
        assert log.last_seq == 101
        assert log.verify() == 101


def test_segments_roll_at_segment_bytes_and_are_named_by_their_first_seq(tmp_path):
    with SegmentedLog.open(tmp_path, segment_bytes=SMALL) as log:
        for i in range(1, 201):
            log.append(payload(i, 100))
    paths = segment_paths(tmp_path)
    assert len(paths) > 1
    for path in paths:
        records = record_offsets(path)
        assert path.name == f"{records[0].seq:020d}.seg"
        assert path.stat().st_size <= SMALL
    for path in paths[:-1]:
        # a sealed segment is full: the next 160-byte record did not fit
        assert path.stat().st_size + RECORD_HEADER_SIZE + 100 > SMALL


def test_a_batch_never_spans_segments(tmp_path):
    with SegmentedLog.open(tmp_path, segment_bytes=SMALL) as log:
        seq = 0
        for size in (3, 7, 1, 11, 5, 9, 2, 13, 4) * 4:
            seq = log.append_batch([payload(seq + k + 1, 90) for k in range(size)])
        assert log.last_seq == seq
        assert list(log.read()) == [(i, payload(i, 90)) for i in range(1, seq + 1)]
    paths = segment_paths(tmp_path)
    assert len(paths) > 2
    for path in paths:
        assert not record_offsets(path)[-1].flags & GROUP_CONTINUES


def test_a_batch_larger_than_a_segment_gets_a_segment_of_its_own(tmp_path):
    with SegmentedLog.open(tmp_path, segment_bytes=SMALL) as log:
        log.append(payload(1))
        log.append_batch([payload(i, 1000) for i in range(2, 12)])
        log.append(payload(12))
        assert log.verify() == 12
    paths = segment_paths(tmp_path)
    assert [record_offsets(p)[0].seq for p in paths] == [1, 2, 12]
    assert [len(record_offsets(p)) for p in paths] == [1, 10, 1]


def test_truncate_before_drops_only_whole_segments_below_seq(tmp_path):
    with SegmentedLog.open(tmp_path, segment_bytes=SMALL) as log:
        for i in range(1, 201):
            log.append(payload(i, 100))
        bases = [record_offsets(p)[0].seq for p in segment_paths(tmp_path)]
        assert log.truncate_before(bases[1] - 1) == 0
        assert log.first_seq == 1
        assert log.truncate_before(bases[2]) == 2
        assert log.first_seq == bases[2]
        assert [record_offsets(p)[0].seq for p in segment_paths(tmp_path)] == bases[2:]
        assert list(log.read()) == [(i, payload(i, 100)) for i in range(bases[2], 201)]
        assert next(iter(log.read(1)))[0] == bases[2]
    with SegmentedLog.open(tmp_path) as log:
        assert log.first_seq == bases[2]
        assert log.last_seq == 200
        assert log.verify() == 201 - bases[2]


def test_truncate_before_never_drops_the_active_segment(tmp_path):
    with SegmentedLog.open(tmp_path, segment_bytes=SMALL) as log:
        for i in range(1, 101):
            log.append(payload(i, 100))
        newest = segment_paths(tmp_path)[-1]
        log.truncate_before(10_000)
        assert segment_paths(tmp_path) == [newest]
        assert log.first_seq == record_offsets(newest)[0].seq
        assert log.append(payload(101, 100)) == 101
        assert list(log.read())[-1] == (101, payload(101, 100))


def test_empty_append_batch_returns_last_seq_and_writes_nothing(tmp_path):
    with SegmentedLog.open(tmp_path) as log:
        assert log.append_batch([]) == 0
        log.append(payload(1))
        before = sizes(tmp_path)
        assert log.append_batch([]) == 1
        assert sizes(tmp_path) == before


@pytest.mark.parametrize(
    "bad",
    [["text"], [1], [None], [b"ok", "text"], [b"ok", b"ok", 3]],
    ids=["str", "int", "none", "bytes-then-str", "int-last"],
)
def test_a_bad_payload_raises_invalid_value_and_leaves_the_log_unchanged(tmp_path, bad):
    with SegmentedLog.open(tmp_path) as log:
        log.append(payload(1))
        before = sizes(tmp_path)
        with pytest.raises(InvalidValue):
            log.append_batch(bad)
        if len(bad) == 1:
            with pytest.raises(InvalidValue):
                log.append(bad[0])
        assert log.last_seq == 1
        assert sizes(tmp_path) == before
        assert log.append(payload(2)) == 2
        assert list(log.read()) == [(1, payload(1)), (2, payload(2))]


def test_an_oversize_payload_raises_invalid_value_and_leaves_the_log_unchanged(
    tmp_path, monkeypatch
):
    with SegmentedLog.open(tmp_path) as log:
        log.append(payload(1))
        before = sizes(tmp_path)
        with monkeypatch.context() as patch:
            patch.setattr(storage._framing, "MAX_PAYLOAD_BYTES", 64)
            assert log.append(b"x" * 64) == 2
            with pytest.raises(InvalidValue):
                log.append(b"x" * 65)
            with pytest.raises(InvalidValue):
                log.append_batch([b"small", b"x" * 65])
        assert log.last_seq == 2
        assert sizes(tmp_path)[segment_paths(tmp_path)[0].name] == (
            before[segment_paths(tmp_path)[0].name] + RECORD_HEADER_SIZE + 64
        )
        assert log.verify() == 2


@pytest.mark.parametrize(
    "options",
    [
        {"fsync": "sometimes"},
        {"fsync": None},
        {"segment_bytes": 10},
        {"segment_bytes": 4095},
        {"segment_bytes": True},
        {"segment_bytes": 4096.0},
        {"fsync_interval": 0},
        {"fsync_interval": -1},
        {"fsync_interval": "x"},
        {"fsync_interval": True},
    ],
    ids=repr,
)
def test_invalid_options_raise_invalid_option(tmp_path, options):
    with pytest.raises(InvalidOption):
        SegmentedLog.open(tmp_path / "log", **options)
    assert not (tmp_path / "log").exists()


def test_invalid_option_is_also_a_value_error(tmp_path):
    with pytest.raises(ValueError, match="segment_bytes"):
        SegmentedLog.open(tmp_path, segment_bytes=10)


@pytest.mark.parametrize("start", [0, -1, True, 1.0, "1"], ids=repr)
def test_read_from_a_seq_below_one_or_not_an_int_raises_value_error(tmp_path, start):
    with SegmentedLog.open(tmp_path) as log:
        log.append(payload(1))
        with pytest.raises(ValueError, match="from_seq"):
            log.read(start)


def test_a_closed_log_refuses_appends_and_reads(tmp_path):
    log = SegmentedLog.open(tmp_path)
    log.append(payload(1))
    log.close()
    assert log.closed
    with pytest.raises(KeyspaceClosed):
        log.append(payload(2))
    with pytest.raises(KeyspaceClosed):
        log.append_batch([])
    with pytest.raises(KeyspaceClosed):
        log.read()
    with pytest.raises(KeyspaceClosed):
        log.truncate_before(1)


def test_close_twice_is_fine(tmp_path):
    log = SegmentedLog.open(tmp_path)
    log.append(payload(1))
    log.close()
    log.close()
    assert log.closed
    with SegmentedLog.open(tmp_path) as again:
        assert again.last_seq == 1


def test_context_manager_closes_the_log(tmp_path):
    with SegmentedLog.open(tmp_path) as log:
        assert not log.closed
        log.append(payload(1))
    assert log.closed
    with pytest.raises(KeyspaceClosed):
        log.append(payload(2))


def test_context_manager_closes_the_log_when_the_body_raises(tmp_path):
    def use_then_fail(log):
        with log:
            log.append(payload(1))
            raise RuntimeError

    log = SegmentedLog.open(tmp_path)
    with pytest.raises(RuntimeError):
        use_then_fail(log)
    assert log.closed
    with SegmentedLog.open(tmp_path) as again:
        assert again.last_seq == 1


@pytest.mark.parametrize("policy", ["interval", "never"])
def test_data_written_without_fsync_always_is_readable_and_survives_reopen(tmp_path, policy):
    with SegmentedLog.open(tmp_path, fsync=policy, fsync_interval=0.01, segment_bytes=SMALL) as log:
        assert log.options.fsync == policy
        for i in range(1, 81):
            log.append(payload(i, 100))
        log.append_batch([payload(i, 100) for i in range(81, 91)])
        assert list(log.read()) == [(i, payload(i, 100)) for i in range(1, 91)]
        log.sync()
    with SegmentedLog.open(tmp_path) as log:
        assert log.recovery is None
        assert log.last_seq == 90
        assert list(log.read()) == [(i, payload(i, 100)) for i in range(1, 91)]


def test_fsync_always_fsyncs_once_per_append_batch(tmp_path):
    with SegmentedLog.open(tmp_path) as log:
        before = log.fsyncs
        log.append_batch([payload(i) for i in range(1, 11)])
        log.append(payload(11))
        assert log.fsyncs == before + 2


def test_repr_names_the_directory_and_the_seq_range(tmp_path):
    with SegmentedLog.open(tmp_path) as log:
        log.append(payload(1))
        text = repr(log)
    assert str(tmp_path) in text
    assert "1..1" in text
