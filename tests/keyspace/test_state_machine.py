"""A key space against a dict model, with TTLs on a fake clock, reopen and power-loss steps.

The model maps each stored key to ``(value, version, expires_at, seq)``, expired entries included
(until a sweep or a write records their expiry), so it predicts versions, sweep counts and
sequence numbers exactly. The store runs with ``fsync="always"``: every acknowledged write
must survive a simulated power loss (``DurabilityTracker``), so the model never shrinks.

Snapshot and compact steps change no value, version or seq; the machine predicts what they
do to the log (which segments exist, ``history_floor``, ``log_bytes``, the report) from the
segment files' names, and that a reopen or a crash recovers from the newest snapshot and
replays exactly the records after it. ``HistoryMachine`` runs the same steps on small
segments with ``retention=0``, so snapshots and compaction delete history all the time (half
its runs start with ``retention=None``, and a reopen step switches between the two, so that
``compact()`` finds history a snapshot kept). Snapshots are taken only by the snapshot step
(``recovery_budget=None``), which returns once the snapshot is durable and its retention
applied: nothing runs in the background when the power is cut.
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

from actors import CompactionReport, KeySpace, Store, VersionConflict, WriteBatch
from storage._format import parse_segment_name
from storage.snapshot import snapshot_name
from tests.keyspace.conftest import FakeClock, keyspace_dir
from tests.storage.faults import DurabilityTracker
from tests.storage.helpers import SEGMENT_HEADER_SIZE

KEYS = ["a", "ab", "b", "c", "é", "\U0010ffff"]
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
expects = st.none() | st.integers(min_value=0, max_value=3)
ops = st.tuples(st.sampled_from(["put", "delete"]), keys, values, ttls, expects)
EXAMPLES = 1000 if os.environ.get("ACTORKV_LONG") == "1" else 30

Stored = tuple[Any, int, float | None, int]  # value, version, expires_at, seq
Op = tuple[str, str, Any, float | None, int | None]  # kind, key, value, ttl, expect_version


class Abandon(Exception):
    """Raised inside a batch block to abandon it."""


class KeySpaceMachine(RuleBasedStateMachine):
    base: Path
    runs = itertools.count()
    OPTIONS: ClassVar[dict[str, Any]] = {}
    """Store options besides the clock and the sweep interval."""

    def __init__(self) -> None:
        super().__init__()
        self.path = self.base / f"run{next(self.runs)}"
        self.clock = FakeClock()
        self.tracker = DurabilityTracker().install()
        self.model: dict[str, Stored] = {}
        self.retention: float | None = self.OPTIONS.get("retention")
        self.snapshot_seq: int | None = None  # the newest snapshot's, once one was taken
        self.store, self.ks = self._open()

    def _open(self) -> tuple[Store, KeySpace]:
        # sweep_interval: no background sweep, so sequence numbers stay predictable.
        options = {**self.OPTIONS, "retention": self.retention}
        store = Store.open(self.path, clock=self.clock, sweep_interval=3600, **options)
        return store, store.keyspace("ks")

    def teardown(self) -> None:
        try:
            self.store.close()
        finally:
            self.tracker.uninstall()

    # -- model ---------------------------------------------------------------------------------

    def _live(self, key: str) -> int:
        stored = self.model.get(key)
        if stored is None or (stored[2] is not None and stored[2] <= self.clock.now):
            return 0
        return stored[1]

    def _visible(self) -> dict[str, Stored]:
        return {key: stored for key, stored in self.model.items() if self._live(key)}

    def _expires(self, ttl: float | None) -> float | None:
        return None if ttl is None else self.clock.now + ttl

    # -- the log's segments --------------------------------------------------------------------

    def _segments(self) -> dict[int, int]:
        """First seq -> size of every segment file, oldest first."""
        found = {}
        for path in keyspace_dir(self.path, "ks").iterdir():
            base = parse_segment_name(path.name)
            if base is not None:
                found[base] = path.stat().st_size
        return dict(sorted(found.items()))

    def _droppable(self, segments: dict[int, int]) -> list[int]:
        """The oldest segments retention deletes now: every record at or below the snapshot."""
        if self.retention != 0 or self.snapshot_seq is None:
            return []
        bases = list(segments)
        dropped = []
        for base, following in itertools.pairwise(bases):  # never the active (last) one
            if following > self.snapshot_seq + 1:
                break
            dropped.append(base)
        return dropped

    def _check_history(self, segments: dict[int, int]) -> None:
        """The segments on disk are ``segments``; the stats agree with them."""
        assert self._segments() == segments
        stats = self.ks.stats()
        assert stats.history_floor == next(iter(segments))
        assert stats.log_bytes == sum(segments.values())
        assert stats.snapshot_seq == (self.snapshot_seq or 0)

    def _check_recovered(self, last_seq: int) -> None:
        """Reopened: from the newest snapshot, replaying exactly the records after it."""
        assert self.ks.last_seq == last_seq
        stats = self.ks.stats()
        assert stats.snapshot_seq == (self.snapshot_seq or 0)
        assert stats.records_replayed == last_seq - (self.snapshot_seq or 0)
        self._check_history(self._segments())

    # -- rules ---------------------------------------------------------------------------------

    @rule(key=keys, value=values, ttl=ttls, right=st.booleans(), expect=expects)
    def put(self, key: str, value: Any, ttl: float | None, right: bool, expect: int | None):
        actual = self._live(key)
        if right and expect is not None:
            expect = actual
        before = self.ks.last_seq
        if expect is not None and expect != actual:
            with pytest.raises(VersionConflict) as conflict:
                self.ks.put(key, value, ttl=ttl, expect_version=expect)
            assert (conflict.value.expected, conflict.value.actual) == (expect, actual)
            assert self.ks.last_seq == before
            return
        receipt = self.ks.put(key, value, ttl=ttl, expect_version=expect)
        assert (receipt.seq, receipt.version) == (before + 1, actual + 1)
        self.model[key] = (value, actual + 1, self._expires(ttl), receipt.seq)

    @rule(key=keys, expect=expects)
    def delete(self, key: str, expect: int | None) -> None:
        actual = self._live(key)
        before = self.ks.last_seq
        if expect is not None and expect != actual:
            with pytest.raises(VersionConflict):
                self.ks.delete(key, expect_version=expect)
        elif not actual:
            assert self.ks.delete(key, expect_version=expect) is None
        else:
            assert self.ks.delete(key, expect_version=expect).seq == before + 1
            del self.model[key]
            return
        assert self.ks.last_seq == before

    def _predict_batch(self, batch: list[Op]) -> tuple[dict[str, Stored], bool, int]:
        """The model after ``batch`` (seq still unknown), whether it conflicts, its events."""
        new = dict(self.model)
        versions: dict[str, int] = {}
        stale: list[str] = []
        conflict = False
        events = 0
        for kind, key, value, ttl, expect in batch:
            if key in versions:
                actual = versions[key]
            else:
                actual = self._live(key)
                if not actual and key in self.model:
                    stale.append(key)
            conflict = conflict or (expect is not None and expect != actual)
            if kind == "put":
                new[key] = (value, actual + 1, self._expires(ttl), -1)
                events += 1
            elif actual:
                del new[key]
                events += 1
            versions[key] = actual + 1 if kind == "put" else 0
        for key in stale:
            if events and new.get(key) is self.model[key]:
                del new[key]  # a batch that writes records the expiry of what it touched
        return new, conflict, events

    @rule(batch=st.lists(ops, max_size=6), abandon=st.booleans())
    def batch(self, batch: list[Op], abandon: bool) -> None:
        new, conflict, events = self._predict_batch(batch)
        before = self.ks.last_seq

        def write() -> WriteBatch:
            with self.ks.batch() as b:
                for kind, key, value, ttl, expect in batch:
                    if kind == "put":
                        b.put(key, value, ttl=ttl, expect_version=expect)
                    else:
                        b.delete(key, expect_version=expect)
                if abandon:
                    raise Abandon
            return b

        if abandon or conflict:
            with pytest.raises(Abandon if abandon else VersionConflict):
                write()
            assert self.ks.last_seq == before
            return
        receipt = write().receipt
        if not events:
            assert receipt is None
            assert self.ks.last_seq == before
            return
        assert receipt is not None
        assert receipt.seq == before + 1 == self.ks.last_seq
        self.model = {
            key: stored if stored[3] != -1 else (*stored[:3], receipt.seq)
            for key, stored in new.items()
        }

    @rule(seconds=st.sampled_from([0.25, 0.5, 1.0, 3.0]))
    def advance_clock(self, seconds: float) -> None:
        self.clock.advance(seconds)

    @rule()
    def sweep(self) -> None:
        now = self.clock.now
        expired = [k for k, (_, _, at, _) in self.model.items() if at is not None and at <= now]
        before = self.ks.last_seq
        assert self.ks.sweep() == len(expired)
        assert self.ks.last_seq == before + (1 if expired else 0)
        for key in expired:
            del self.model[key]

    @rule()
    def snapshot(self) -> None:
        last_seq = self.ks.last_seq
        segments = self._segments()
        if self.snapshot_seq != last_seq:  # else nothing new: the newest one is returned
            if next(reversed(segments)) <= last_seq:  # the active segment holds records
                # Rolled, so the history below can go whole: a new segment, its header only.
                segments[last_seq + 1] = SEGMENT_HEADER_SIZE
            self.snapshot_seq = last_seq
            for base in self._droppable(segments):
                del segments[base]
        info = self.ks.snapshot()  # returns once durable, its retention applied
        path = keyspace_dir(self.path, "ks") / snapshot_name(last_seq)
        assert (info.seq, info.path, info.items) == (last_seq, path, len(self.model))
        assert info.bytes == path.stat().st_size
        self._check_history(segments)

    @rule()
    def compact(self) -> None:
        segments = self._segments()
        dropped = self._droppable(segments)
        freed = sum(segments.pop(base) for base in dropped)
        report = self.ks.compact()
        assert report == CompactionReport(len(dropped), freed, next(iter(segments)))
        self._check_history(segments)

    @rule()
    def reopen(self) -> None:
        last_seq = self.ks.last_seq
        self.store.close()
        self.store, self.ks = self._open()
        self._check_recovered(last_seq)

    @rule()
    def crash(self) -> None:
        last_seq = self.ks.last_seq
        self.tracker.cut_power()  # right after the last acknowledgment
        self.store.close()
        self.tracker.crash()
        self.tracker.uninstall()
        self.tracker = DurabilityTracker().install()
        self.store, self.ks = self._open()
        self._check_recovered(last_seq)

    # -- invariants ----------------------------------------------------------------------------

    @invariant()
    def reads_match_the_model(self) -> None:
        visible = self._visible()
        assert dict(self.ks.items()) == {key: stored[0] for key, stored in visible.items()}
        assert len(self.ks) == len(visible)
        assert list(self.ks) == sorted(visible)
        assert [k for k, _ in self.ks.range(reverse=True)] == sorted(visible, reverse=True)
        assert self.ks.get_many(KEYS) == {key: stored[0] for key, stored in visible.items()}
        for key in KEYS:
            entry = self.ks.get_entry(key)
            if key in visible:
                assert entry is not None
                assert (entry.value, entry.version, entry.expires_at, entry.seq) == visible[key]
            else:
                assert entry is None
                assert key not in self.ks


class HistoryMachine(KeySpaceMachine):
    """The same steps on small segments, history deleted below every snapshot."""

    OPTIONS: ClassVar[dict[str, Any]] = {
        "segment_bytes": 4096,
        "recovery_budget": None,
        "retention": 0,
    }

    @initialize(retention=st.sampled_from([0, None]))
    def start_with(self, retention: float | None) -> None:
        """Half the runs start keeping every event: their later compaction has work to do."""
        if retention != self.retention:
            self.reopen_with_retention(retention)

    @rule(key=keys, size=st.sampled_from([1500, 3000]), ttl=ttls)
    def put_large(self, key: str, size: int, ttl: float | None) -> None:
        """A value that fills much of a segment, so segments roll by size too."""
        actual = self._live(key)
        value = key * size
        before = self.ks.last_seq
        receipt = self.ks.put(key, value, ttl=ttl)
        assert (receipt.seq, receipt.version) == (before + 1, actual + 1)
        self.model[key] = (value, actual + 1, self._expires(ttl), receipt.seq)

    @rule(retention=st.sampled_from([None, 0]))
    def reopen_with_retention(self, retention: float | None) -> None:
        """Keep every event for a while (snapshots then drop nothing), or drop again."""
        self.retention = retention
        self.reopen()


def test_a_keyspace_behaves_like_its_dict_model(tmp_path: Path) -> None:
    KeySpaceMachine.base = tmp_path
    run_state_machine_as_test(
        KeySpaceMachine,
        settings=settings(max_examples=EXAMPLES, stateful_step_count=30, deadline=None),
    )


def test_a_keyspace_that_snapshots_and_drops_its_history_behaves_like_its_dict_model(
    tmp_path: Path,
) -> None:
    HistoryMachine.base = tmp_path
    run_state_machine_as_test(
        HistoryMachine,
        settings=settings(max_examples=EXAMPLES, stateful_step_count=30, deadline=None),
    )
