"""Time travel against a model: a state machine that records the dict after every record.

The machine writes through :class:`tests.keyspace.test_history.Recorder` (puts with TTLs and
compare-and-set, deletes, batches, sweeps, on a fake clock) and reads the past at random:
``at(seq)`` and ``at(time=...)`` views (every read of a view: get, get_entry, get_many,
range, prefix, keys, items, len, ``in``), ``history(key, limit=...)``, ``seq_at``,
``time_of``, and forks at a random past point. Between those it snapshots, compacts, reopens
(nothing is left in memory: old points are rebuilt from a snapshot and the log, history is
read from the log) and cuts the power (``fsync="always"``, so nothing acknowledged may be
lost, times included). Each run draws ``recent_versions`` from 0, 3, 50 and the default, so
the same steps cross the in-memory and the rebuilt paths; views taken earlier are read
again after later writes.

``HistoryUnavailable`` must be raised exactly below ``stats().history_floor`` (the current
point excepted), which the model predicts: 1 while every event is kept; with
``retention=0`` (``FloorMachine``), one past the newest snapshot after each snapshot or
compaction.
"""

from __future__ import annotations

import itertools
import os
from pathlib import Path
from typing import Any, ClassVar

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    rule,
    run_state_machine_as_test,
)

from actors import HistoryUnavailable, KeySpace, KeySpaceView, Store
from tests.keyspace.conftest import FakeClock
from tests.keyspace.test_history import KEYS, NEVER, Recorder, check_now, check_view
from tests.storage.faults import DurabilityTracker

keys = st.sampled_from(KEYS)
values = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False)
    | st.text(max_size=5)
    | st.binary(max_size=5)
    | st.lists(st.integers(min_value=-(2**63), max_value=2**63), max_size=3)
)
ttls = st.none() | st.sampled_from([0.5, 1.0, 2.5])
expects = st.sampled_from([None, None, "right", 0, 1, 3])
ops = st.tuples(st.sampled_from(["put", "delete"]), keys, values, ttls, expects)
points = st.integers(min_value=0, max_value=2**32)
"""Drawn freely, then mapped onto the points that exist (``_point``)."""
RECENT = [0, 3, 50, None]
EXAMPLES = 500 if os.environ.get("ACTORKV_LONG") == "1" else 25
MAX_VIEWS = 3
LIMITS = [None, 0, 1, 2, 5]


class TimeTravelMachine(RuleBasedStateMachine):
    base: Path
    runs = itertools.count()
    OPTIONS: ClassVar[dict[str, Any]] = {"segment_bytes": 4096, "recovery_budget": None}
    """Store options besides the clock, the sweep interval and ``recent_versions``."""

    def __init__(self) -> None:
        super().__init__()
        self.path = self.base / f"run{next(self.runs)}"
        self.clock = FakeClock()
        self.tracker = DurabilityTracker().install()
        self.recent: int | None = None
        self.retention: float | None = self.OPTIONS.get("retention")
        self.store: Store | None = None
        self.rec: Recorder
        self.floor = 1  # the model's history floor
        self.snapshot_seq = 0
        self.views: list[tuple[KeySpaceView, int]] = []
        self.forks = itertools.count()
        self.turn = 0

    def _open(self) -> KeySpace:
        options = {**self.OPTIONS, "retention": self.retention}
        if self.recent is not None:
            options["recent_versions"] = self.recent
        # sweep_interval: no background sweep, so every record is one of the machine's.
        self.store = Store.open(self.path, clock=self.clock, sweep_interval=3600, **options)
        return self.store.keyspace("ks")

    @initialize(recent=st.sampled_from(RECENT))
    def start(self, recent: int | None) -> None:
        self.recent = recent
        self.rec = Recorder(self._open(), self.clock)

    def teardown(self) -> None:
        try:
            if self.store is not None:
                self.store.close()
        finally:
            self.tracker.uninstall()

    # -- the model's points -------------------------------------------------------------------

    def _readable(self) -> list[int]:
        """Every point ``at(seq)`` must answer: from the floor up, and the current one."""
        return sorted({*range(self.floor, self.rec.seq + 1), self.rec.seq})

    def _point(self, drawn: int) -> int:
        readable = self._readable()
        return readable[drawn % len(readable)]

    def _drop_history(self) -> None:
        """``retention=0``: a snapshot or a compaction drops every segment below the newest
        snapshot (which always rolled the log, so a segment starts right after it)."""
        if self.retention == 0 and self.snapshot_seq:
            self.floor = max(self.floor, self.snapshot_seq + 1)
            # A view whose point retention dropped is another test's subject
            # (test_history.py): here, only views the history still holds are read.
            self.views = [(view, seq) for view, seq in self.views if seq >= self.floor]

    # -- writes -------------------------------------------------------------------------------

    @rule(key=keys, value=values, ttl=ttls, expect=expects)
    def put(self, key: str, value: Any, ttl: float | None, expect: Any) -> None:
        if expect == "right":
            expect = self.rec._live_version(self.rec.state, key)
        self.rec.put(key, value, ttl=ttl, expect=expect)

    @rule(key=keys, expect=expects)
    def delete(self, key: str, expect: Any) -> None:
        if expect == "right":
            expect = self.rec._live_version(self.rec.state, key)
        self.rec.delete(key, expect=expect)

    @rule(batch=st.lists(ops, max_size=5))
    def batch(self, batch: list[Any]) -> None:
        live = self.rec._live_version
        resolved = [
            (kind, key, value, ttl, live(self.rec.state, key) if expect == "right" else expect)
            for kind, key, value, ttl, expect in batch
        ]
        self.rec.batch(resolved)

    @rule(seconds=st.sampled_from([0.25, 0.5, 1.0, 3.0]))
    def advance_clock(self, seconds: float) -> None:
        self.clock.advance(seconds)

    @rule()
    def sweep(self) -> None:
        self.rec.sweep()

    # -- history-changing steps ---------------------------------------------------------------

    @rule()
    def snapshot(self) -> None:
        info = self.rec.ks.snapshot()
        assert info.seq == self.rec.seq
        self.snapshot_seq = self.rec.seq
        self._drop_history()

    @rule()
    def compact(self) -> None:
        report = self.rec.ks.compact()
        self._drop_history()
        assert report.floor == self.floor

    @rule(recent=st.sampled_from(RECENT))
    def reopen(self, recent: int | None) -> None:
        """Nothing of the past is left in memory after a reopen."""
        assert self.store is not None
        self.store.close()
        self.views.clear()  # a view reads through the key space it came from
        self.recent = recent
        self.rec.ks = self._open()

    @rule()
    def crash(self) -> None:
        assert self.store is not None
        self.tracker.cut_power()  # right after the last acknowledgment
        self.store.close()
        self.tracker.crash()
        self.tracker.uninstall()
        self.tracker = DurabilityTracker().install()
        self.views.clear()
        self.rec.ks = self._open()

    # -- reads of the past --------------------------------------------------------------------

    @rule(drawn=points)
    def read_at(self, drawn: int) -> None:
        self.rec.check_at(self._point(drawn))

    @rule(drawn=points, between=st.booleans())
    def read_at_time(self, drawn: int, between: bool) -> None:
        """``at(time=T)`` for T a record's commit time, or between it and the next one's."""
        rec = self.rec
        seq = self._point(drawn)
        if seq == 0:
            return
        when = rec.time_of(seq)
        later = [time for time in rec.times.values() if time > when]
        if between and later:
            when = (when + min(later)) / 2
        expected = rec.seq_at(when)
        assert rec.ks.seq_at(when) == expected
        if seq >= self.floor:  # time_of answers for records the log holds
            assert rec.ks.time_of(seq) == rec.time_of(seq)
        view = rec.ks.at(time=when)
        assert (view.seq, view.time) == (expected, when)
        check_view(view, rec.states[expected], when)

    @rule(key=st.sampled_from([*KEYS, NEVER]), limit=st.sampled_from(LIMITS))
    def read_history(self, key: str, limit: int | None) -> None:
        expected = self.rec.history(key, self.floor)
        if limit is not None:
            expected = expected[max(0, len(expected) - limit) :]
        assert self.rec.ks.history(key, limit=limit) == expected

    @rule(drawn=points)
    def hold_a_view(self, drawn: int) -> None:
        """Keep a view; later steps' writes must not change what it reads."""
        seq = self._point(drawn)
        self.views.append((self.rec.ks.at(seq), seq))
        del self.views[:-MAX_VIEWS]

    @rule()
    def check_every_point(self) -> None:
        self.rec.check_every_point(self.floor)

    @rule(drawn=points)
    def fork(self, drawn: int) -> None:
        """A fork at a past point holds the model at that point; writing it leaves the source."""
        assert self.store is not None
        rec, seq = self.rec, self._point(drawn)
        name = f"fork{next(self.forks)}"
        fork = self.store.fork_keyspace("ks", name, seq=seq)
        model = Recorder(fork, self.clock, seq=seq, state=rec.states[seq])
        check_now(model)
        model.put("a", "written to the fork")
        model.delete("b")
        check_now(model)
        check_now(rec)
        self.store.drop_keyspace(name)

    # -- invariants ---------------------------------------------------------------------------

    @invariant()
    def now_and_the_floor_are_exact(self) -> None:
        if self.store is None:
            return
        rec = self.rec
        stats = rec.ks.stats()
        assert stats.history_floor == self.floor
        assert rec.ks.last_seq == rec.seq
        check_view(rec.ks.at(), rec.state, self.clock.now)
        below = self.floor - 1
        if below != rec.seq:
            with pytest.raises(HistoryUnavailable) as raised:
                rec.ks.at(below)
            assert (raised.value.requested, raised.value.floor) == (below, self.floor)

    @invariant()
    def a_past_point_and_a_history_read_as_the_model(self) -> None:
        """Each step, the next point in turn and the next key's history (with a limit)."""
        if self.store is None:
            return
        turn = self.turn = self.turn + 1
        readable = self._readable()
        self.rec.check_at(readable[turn % len(readable)])
        self.read_history(KEYS[turn % len(KEYS)], LIMITS[turn % len(LIMITS)])

    @invariant()
    def held_views_still_read_as_their_points(self) -> None:
        for view, seq in self.views:
            check_view(view, self.rec.states[seq], self.rec.time_of(seq))


class FloorMachine(TimeTravelMachine):
    """The same steps with ``retention=0``: every snapshot and compaction moves the floor."""

    OPTIONS: ClassVar[dict[str, Any]] = {
        "segment_bytes": 4096,
        "recovery_budget": None,
        "retention": 0,
    }

    @rule(key=keys, size=st.sampled_from([1500, 3000]))
    def put_large(self, key: str, size: int) -> None:
        """A value that fills much of a segment, so segments roll by size too."""
        self.rec.put(key, key * size)


def test_views_and_history_match_a_model_of_every_record(tmp_path: Path) -> None:
    TimeTravelMachine.base = tmp_path
    run_state_machine_as_test(
        TimeTravelMachine,
        settings=settings(max_examples=EXAMPLES, stateful_step_count=30, deadline=None),
    )


def test_views_and_history_match_the_model_above_a_moving_floor(tmp_path: Path) -> None:
    FloorMachine.base = tmp_path
    run_state_machine_as_test(
        FloorMachine,
        settings=settings(max_examples=EXAMPLES, stateful_step_count=30, deadline=None),
    )
