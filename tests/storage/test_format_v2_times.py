"""Commit times: ``time_of`` and ``seq_at`` exact against a model of every record's time.

The model computes each group's time by the rule of ``docs/format.md`` ("Commit time"):
``max(clock(), previous time, 0.0)``; the log is driven with a clock that steps back, stands
still and jumps, across rolls, reopens and retention, and every answer must be the model's.
"""

from __future__ import annotations

import bisect
import random
import shutil
import tempfile
import threading
from pathlib import Path

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from storage import HistoryUnavailable, InvalidOption, LogReader, SegmentedLog, verify
from storage._segment import create_segment
from tests.storage.helpers import payload, segment_paths, write_v1_log

SEGMENT_BYTES = 4096
STEPS = [-50.0, -0.25, 0.0, 0.0, 1e-6, 0.5, 3.0, 100.0]


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class Model:
    """Every record's seq and commit time, and the first one the log still holds."""

    def __init__(self) -> None:
        self.times: list[float] = []  # times[seq - 1]
        self.floor = 1

    @property
    def last_seq(self) -> int:
        return len(self.times)

    def append(self, clock: float, count: int) -> None:
        previous = self.times[-1] if self.times else 0.0
        self.times += [max(clock, previous, 0.0)] * count

    def seq_at(self, time: float) -> int | None:
        """The expected answer, or None where ``HistoryUnavailable`` is."""
        last = bisect.bisect_right(self.times, time)  # times never decrease
        if last >= self.floor or last == self.last_seq:
            return last
        return 0 if self.floor <= 1 else None


def check_time_of(log: SegmentedLog | LogReader, model: Model, seq: int) -> None:
    if seq < model.floor and seq != model.last_seq:
        with pytest.raises(HistoryUnavailable) as raised:
            log.time_of(seq)
        assert (raised.value.floor, raised.value.requested) == (model.floor, seq)
    else:
        assert log.time_of(seq) == model.times[seq - 1]


def check_seq_at(log: SegmentedLog | LogReader, model: Model, time: float) -> None:
    expected = model.seq_at(time)
    if expected is None:
        with pytest.raises(HistoryUnavailable) as raised:
            log.seq_at(time)
        assert raised.value.floor == model.floor
    else:
        assert log.seq_at(time) == expected, (time, model.floor)


class TimesMachine(RuleBasedStateMachine):
    """Appends under a wandering clock, rolls, reopens, drops; every query against the model."""

    def __init__(self) -> None:
        super().__init__()
        self.directory = Path(tempfile.mkdtemp(prefix="actorkv-times-"))
        self.clock = Clock(1_000.0)
        self.model = Model()
        self.log = self._open()

    def _open(self) -> SegmentedLog:
        return SegmentedLog.open(
            self.directory, segment_bytes=SEGMENT_BYTES, fsync="never", clock=self.clock
        )

    def teardown(self) -> None:
        self.log.close()
        shutil.rmtree(self.directory, ignore_errors=True)

    @rule(
        step=st.sampled_from(STEPS),
        sizes=st.lists(st.integers(0, 700), min_size=1, max_size=5),
    )
    def append(self, step: float, sizes: list[int]) -> None:
        self.clock.now += step
        first = self.model.last_seq + 1
        batch = [payload(first + i, size) for i, size in enumerate(sizes)]
        assert self.log.append_batch(batch) == first + len(batch) - 1
        self.model.append(self.clock.now, len(batch))

    @rule()
    def roll(self) -> None:
        self.log.roll()

    @rule()
    def reopen(self) -> None:
        self.log.close()
        self.log = self._open()

    @precondition(lambda self: self.model.last_seq > 0)
    @rule(data=st.data())
    def drop(self, data: st.DataObject) -> None:
        seq = data.draw(st.integers(1, self.model.last_seq + 1))
        bases = sorted(int(path.name[:20]) for path in segment_paths(self.directory))
        expected = max([self.model.floor, *(b for b in bases if b <= seq)])
        self.log.drop_segments(seq)
        assert self.log.first_seq == expected
        self.model.floor = expected

    @precondition(lambda self: self.model.last_seq > 0)
    @rule(data=st.data())
    def time_of(self, data: st.DataObject) -> None:
        for _ in range(5):
            check_time_of(self.log, self.model, data.draw(st.integers(1, self.model.last_seq)))

    @precondition(lambda self: self.model.last_seq > 0)
    @rule(data=st.data(), nudge=st.sampled_from([-1e-3, 0.0, 1e-9, 0.1]))
    def seq_at(self, data: st.DataObject, nudge: float) -> None:
        time = data.draw(st.sampled_from(self.model.times)) + nudge
        check_seq_at(self.log, self.model, time)
        check_seq_at(self.log, self.model, data.draw(st.floats(-10.0, self.clock.now + 10.0)))

    @precondition(lambda self: self.model.last_seq > 0)
    @rule()
    def reader_agrees(self) -> None:
        reader = LogReader.open(self.directory)
        for seq in range(max(1, self.model.last_seq - 30), self.model.last_seq + 1):
            check_time_of(reader, self.model, seq)
        for time in sorted(set(self.model.times))[-10:]:
            check_seq_at(reader, self.model, time)

    @invariant()
    def newest_record_and_chain(self) -> None:
        assert self.log.last_seq == self.model.last_seq
        assert self.log.last_time == (self.model.times[-1] if self.model.times else 0.0)
        check_seq_at(self.log, self.model, self.log.last_time)

    @precondition(lambda self: self.model.last_seq > 0)
    @rule()
    def verifies(self) -> None:
        report = verify(self.directory)
        assert report.ok, report.problems
        assert (report.first_seq, report.last_seq) == (self.model.floor, self.model.last_seq)
        assert report.head == self.log.head.hex()


TestTimes = TimesMachine.TestCase
TestTimes.settings = settings(max_examples=40, stateful_step_count=40, deadline=None)


# -- examples ----------------------------------------------------------------------------------


def test_time_of_and_seq_at_are_exact_for_every_record_of_a_long_log(tmp_path: Path):
    rng = random.Random(7)
    clock = Clock(50.0)
    model = Model()
    with SegmentedLog.open(tmp_path, segment_bytes=64 * 1024, fsync="never", clock=clock) as log:
        for _ in range(3_000):
            clock.now += rng.choice(STEPS)
            count = rng.randint(1, 4)
            log.append_batch(
                [payload(model.last_seq + 1 + i, rng.randint(0, 400)) for i in range(count)]
            )
            model.append(clock.now, count)
        assert len(segment_paths(tmp_path)) > 10
        for seq in range(1, model.last_seq + 1):
            check_time_of(log, model, seq)
        for time in sorted(set(model.times)):
            for nudge in (-1e-7, 0.0, 1e-7):
                check_seq_at(log, model, time + nudge)


def test_records_larger_than_an_index_span_or_a_read_chunk_have_exact_times(tmp_path: Path):
    clock = Clock(10.0)
    sizes = [10, 9_000, 20, 3 * 1024 * 1024, 5, 70_000, 1]
    with SegmentedLog.open(tmp_path, fsync="never", clock=clock) as log:
        for size in sizes:
            clock.now += 1.0
            log.append(b"x" * size)
        assert [log.time_of(seq) for seq in range(1, 8)] == [
            11.0,
            12.0,
            13.0,
            14.0,
            15.0,
            16.0,
            17.0,
        ]
        assert [log.seq_at(t) for t in (10.5, 11.0, 13.9, 14.0, 16.5, 99.0)] == [0, 1, 3, 4, 6, 7]


def test_a_version_1_prefix_reads_as_time_zero(tmp_path: Path):
    write_v1_log(tmp_path, [[payload(seq)] for seq in range(1, 41)])
    with SegmentedLog.open(tmp_path, fsync="never", clock=Clock(500.0)) as log:
        log.append_batch([b"a", b"b"])
        assert [log.time_of(seq) for seq in (1, 40, 41, 42)] == [0.0, 0.0, 500.0, 500.0]
        assert [log.seq_at(t) for t in (-1.0, 0.0, 499.9, 500.0)] == [0, 40, 40, 42]


@pytest.mark.parametrize("seq", [0, -1, True, 1.0, "1", 4], ids=repr)
def test_time_of_a_seq_that_is_no_record_of_the_log_is_invalid_option(tmp_path: Path, seq):
    with SegmentedLog.open(tmp_path, fsync="never") as log:
        log.append_batch([b"1", b"2", b"3"])
        with pytest.raises(InvalidOption, match="seq"):
            log.time_of(seq)


@pytest.mark.parametrize("time", ["noon", None, float("nan"), True], ids=repr)
def test_seq_at_a_time_that_is_no_number_is_invalid_option(tmp_path: Path, time):
    with SegmentedLog.open(tmp_path, fsync="never") as log:
        log.append(b"1")
        with pytest.raises(InvalidOption, match="time"):
            log.seq_at(time)


def test_points_below_the_history_floor_raise_history_unavailable_naming_it(tmp_path: Path):
    clock = Clock(100.0)
    with SegmentedLog.open(
        tmp_path, segment_bytes=SEGMENT_BYTES, fsync="never", clock=clock
    ) as log:
        while len(segment_paths(tmp_path)) < 4:
            clock.now += 1.0
            log.append(payload(log.next_seq, 500))
        floor = int(segment_paths(tmp_path)[2].name[:20])
        log.drop_segments(floor)
        assert log.first_seq == floor
        with pytest.raises(HistoryUnavailable) as raised:
            log.time_of(floor - 1)
        assert (raised.value.floor, raised.value.requested) == (floor, floor - 1)
        assert str(floor) in str(raised.value)
        with pytest.raises(HistoryUnavailable) as raised:
            log.seq_at(100.5)
        assert raised.value.floor == floor
        assert log.time_of(floor) == 100.0 + floor
        assert log.seq_at(100.0 + floor) == floor
        assert log.seq_at(float("inf")) == log.last_seq
        with pytest.raises(HistoryUnavailable):  # not "none": the dropped records may be older
            log.seq_at(float("-inf"))


def test_queries_are_exact_while_another_thread_appends(tmp_path: Path):
    clock = Clock(1.0)
    acknowledged: list[float] = []
    stop = threading.Event()
    with SegmentedLog.open(
        tmp_path, segment_bytes=SEGMENT_BYTES, fsync="never", clock=clock
    ) as log:

        def write() -> None:
            while not stop.is_set() and len(acknowledged) < 20_000:
                clock.now += 0.5
                log.append(payload(log.next_seq, 40))
                acknowledged.append(log.last_time)

        writer = threading.Thread(target=write)
        writer.start()
        rng = random.Random(3)
        try:
            for _ in range(2_000):
                known = len(acknowledged)
                if known < 2:
                    continue
                seq = rng.randint(1, known)
                assert log.time_of(seq) == acknowledged[seq - 1]
                assert log.seq_at(acknowledged[seq - 1]) >= seq
        finally:
            stop.set()
            writer.join(30)
        assert not writer.is_alive()


def test_an_empty_first_segment_keeps_the_time_of_the_record_before_it(tmp_path):
    # A fork's log starts with an empty segment after its point: the point's time is the
    # log's last time, and the fork's own records never go back from it.
    create_segment(tmp_path, 14, 0, time=5_000.0)
    with SegmentedLog.open(tmp_path, clock=lambda: 1.0) as log:
        assert (log.first_seq, log.last_seq, log.last_time) == (14, 13, 5_000.0)
        assert log.time_of(13) == 5_000.0
        log.append(b"x")
        assert log.time_of(14) == 5_000.0  # the clock is behind: the time does not go back
    with SegmentedLog.open(tmp_path, clock=lambda: 6_000.0, chain_key=None) as log:
        assert log.time_of(14) == 5_000.0
