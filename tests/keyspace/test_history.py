"""Reading a key space's past: views as of a record or a time, per-key history, forks.

Every test writes through a :class:`Recorder`, a dict model that keeps the state after every
record, each record's commit time (the store runs on a :class:`FakeClock`, so commit times
are known) and every key's changes; reads of the past must equal it exactly: values,
versions, seqs and expiry times. ``recent_versions`` of 0, 3 and 50 force the slow paths
(points rebuilt from a snapshot and the log, history read from the log) beside the default
(everything in memory); a reopen empties memory altogether, so each test reads its points
again after one.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from actors import (
    HistoryUnavailable,
    InvalidInput,
    InvalidOperation,
    InvalidOption,
    KeySpace,
    KeySpaceView,
    Receipt,
    Store,
    Version,
    VersionConflict,
)
from tests.keyspace.conftest import START, FakeClock, keyspace_dir

Stored = tuple[Any, int, int, float | None]
"""value, version, seq, expires_at: what ``get_entry`` returns, in its field order."""
State = dict[str, Stored]
BatchOp = tuple[str, str, Any, float | None, int | None]
"""kind ("put" or "delete"), key, value, ttl, expect_version."""

KEYS = ["a", "ab", "abc", "b", "c", "é"]
"""Every key the tests write, plus a prefix family ("a", "ab", "abc")."""
NEVER = "zz-never-written"
RECENT = [0, 3, 50, None]
"""``recent_versions`` under test: None is the store's default (nothing leaves memory)."""
RECENT_IDS = ["recent=0", "recent=3", "recent=50", "recent=default"]

pytestmark = pytest.mark.usefixtures("runtime")  # each test under threads and Ray


def alive(stored: Stored, when: float) -> bool:
    return stored[3] is None or stored[3] > when


class Recorder:
    """Writes to a key space and predicts each write exactly (versions, seqs, expiry).

    ``states[s]`` is the dict after record ``s`` (expired entries included until their
    expiry is recorded), ``times[s]`` its commit time, ``changes[key]`` every change of
    ``key`` as :meth:`KeySpace.history` reports it. The model follows the key space's rules:
    a put over an expired, unswept key records its expiry first (the version restarts at 1)
    in the same record; a batch records the expiry of the expired keys it touches, first; a
    delete of a missing or expired key writes nothing.
    """

    def __init__(
        self, ks: KeySpace, clock: FakeClock, *, seq: int = 0, state: State | None = None
    ) -> None:
        self.ks = ks
        self.clock = clock
        self.seq = seq
        self.first = seq
        """The seq the model starts at (a fork starts at its point)."""
        self.states: dict[int, State] = {seq: dict(state or {})}
        self.times: dict[int, float] = {}
        self.changes: dict[str, list[Version]] = {}

    @property
    def state(self) -> State:
        return self.states[self.seq]

    def _live_version(self, state: State, key: str) -> int:
        stored = state.get(key)
        return 0 if stored is None or not alive(stored, self.clock.now) else stored[1]

    def _record(self, state: State, changes: list[Version], seq: int) -> None:
        assert seq == self.seq + 1, f"record {seq} written after {self.seq}"
        self.seq = seq
        self.states[seq] = state
        self.times[seq] = self.clock.now
        for key, change in changes:
            self.changes.setdefault(key, []).append(change)

    # -- writes ---------------------------------------------------------------------------------

    def put(
        self, key: str, value: Any, *, ttl: float | None = None, expect: int | None = None
    ) -> Receipt | None:
        now, state = self.clock.now, dict(self.state)
        live = self._live_version(state, key)
        if expect is not None and expect != live:
            with pytest.raises(VersionConflict):
                self.ks.put(key, value, ttl=ttl, expect_version=expect)
            return None
        seq = self.seq + 1
        changes: list[Version] = []
        stored = state.get(key)
        if stored is not None and not alive(stored, now):
            changes.append((key, Version(seq, now, "expire", None, 0)))
        expires_at = None if ttl is None else now + ttl
        state[key] = (value, live + 1, seq, expires_at)
        changes.append((key, Version(seq, now, "put", value, live + 1, expires_at)))
        receipt = self.ks.put(key, value, ttl=ttl, expect_version=expect)
        assert receipt == Receipt(seq, live + 1)
        self._record(state, changes, seq)
        return receipt

    def delete(self, key: str, *, expect: int | None = None) -> Receipt | None:
        state = dict(self.state)
        live = self._live_version(state, key)
        if expect is not None and expect != live:
            with pytest.raises(VersionConflict):
                self.ks.delete(key, expect_version=expect)
            return None
        receipt = self.ks.delete(key, expect_version=expect)
        if not live:
            assert receipt is None
            return None
        seq = self.seq + 1
        assert receipt == Receipt(seq, 0)
        del state[key]
        self._record(state, [(key, Version(seq, self.clock.now, "delete", None, 0))], seq)
        return receipt

    def _batch_events(self, ops: list[BatchOp]) -> tuple[list[tuple[str, str, Any, Any]], bool]:
        """What a batch records, ``(op, key, value, expires_at)`` each, and if it conflicts."""
        now, before = self.clock.now, self.state
        versions: dict[str, int] = {}
        events: list[tuple[str, str, Any, float | None]] = []
        stale: list[str] = []
        conflict = False
        for kind, key, value, ttl, expect in ops:
            if key in versions:
                actual = versions[key]
            else:
                actual = self._live_version(before, key)
                if key in before and not actual:
                    stale.append(key)
            conflict = conflict or (expect is not None and expect != actual)
            if kind == "put":
                events.append(("put", key, value, None if ttl is None else now + ttl))
                versions[key] = actual + 1
            else:
                if actual:
                    events.append(("delete", key, None, None))
                versions[key] = 0
        if events and stale:
            events[:0] = [("expire", key, None, None) for key in stale]
        return events, conflict

    def batch(self, ops: list[BatchOp]) -> Receipt | None:
        now, before = self.clock.now, self.state
        events, conflict = self._batch_events(ops)

        def write() -> Receipt | None:
            with self.ks.batch() as batch:
                for kind, key, value, ttl, expect in ops:
                    if kind == "put":
                        batch.put(key, value, ttl=ttl, expect_version=expect)
                    else:
                        batch.delete(key, expect_version=expect)
            return batch.receipt

        if conflict:
            with pytest.raises(VersionConflict):
                write()
            return None
        receipt = write()
        if not events:
            assert receipt is None
            return None
        seq = self.seq + 1
        assert receipt == Receipt(seq, 0)
        state = dict(before)
        changes = []
        for op, key, value, expires_at in events:
            if op == "put":
                previous = state.get(key)
                version = 1 if previous is None else previous[1] + 1
                state[key] = (value, version, seq, expires_at)
                changes.append((key, Version(seq, now, "put", value, version, expires_at)))
            else:
                del state[key]
                changes.append((key, Version(seq, now, op, None, 0)))
        self._record(state, changes, seq)
        return receipt

    def sweep(self) -> int:
        now, state = self.clock.now, dict(self.state)
        expired = [key for key, stored in state.items() if not alive(stored, now)]
        assert self.ks.sweep() == len(expired)
        if expired:
            for key in expired:
                del state[key]
            changes = [(key, Version(self.seq + 1, now, "expire", None, 0)) for key in expired]
            self._record(state, changes, self.seq + 1)
        return len(expired)

    # -- what the past must read as -------------------------------------------------------------

    def time_of(self, seq: int) -> float:
        return self.times.get(seq, 0.0)

    def seq_at(self, when: float) -> int:
        """The last record committed at or before ``when`` (``first`` if none)."""
        return max((seq for seq, time in self.times.items() if time <= when), default=self.first)

    def history(self, key: str, floor: int = 1) -> list[Version]:
        return [change for change in self.changes.get(key, []) if change.seq >= floor]

    def check_at(self, seq: int, keys: list[str] = KEYS) -> None:
        """``ks.at(seq)`` reads as the state after record ``seq``, judged at its time."""
        view = self.ks.at(seq)
        assert (view.seq, view.time) == (seq, self.time_of(seq))
        check_view(view, self.states[seq], self.time_of(seq), keys)

    def check_every_point(self, floor: int = 1, keys: list[str] = KEYS) -> None:
        for seq in range(max(floor, self.first), self.seq + 1):
            self.check_at(seq, keys)
        for key in [*keys, NEVER]:
            assert self.ks.history(key) == self.history(key, floor), key


def check_view(view: KeySpaceView, state: State, when: float, keys: list[str] = KEYS) -> None:
    """Every read of ``view`` agrees with ``state`` (entries alive at ``when`` only)."""
    visible = {key: stored for key, stored in sorted(state.items()) if alive(stored, when)}
    values = {key: stored[0] for key, stored in visible.items()}
    keys = sorted({*keys, *state})
    assert dict(view.items()) == values
    assert list(view.items()) == list(values.items())  # in key order
    assert list(view) == list(view.keys()) == list(values)
    assert list(view.values()) == list(values.values())
    assert len(view) == len(values)
    assert list(view.range(reverse=True)) == list(reversed(values.items()))
    assert list(view.range("ab", "c")) == [(k, v) for k, v in values.items() if "ab" <= k < "c"]
    assert list(view.range("ab", limit=2)) == [(k, v) for k, v in values.items() if k >= "ab"][:2]
    assert (
        list(view.range(stop="b", reverse=True, limit=2))
        == [(k, v) for k, v in reversed(values.items()) if k < "b"][:2]
    )
    assert list(view.prefix("ab")) == [(k, v) for k, v in values.items() if k.startswith("ab")]
    assert view.get_many([*keys, NEVER]) == values
    for key in [*keys, NEVER]:
        entry = view.get_entry(key)
        if key in visible:
            assert entry is not None, key
            assert (entry.value, entry.version, entry.seq, entry.expires_at) == visible[key]
            assert key in view
            assert view[key] == view.get(key) == values[key]
        else:
            assert entry is None, key
            assert key not in view
            assert view.get(key, "default") == "default"
            with pytest.raises(KeyError):
                view[key]


# -- fixtures ---------------------------------------------------------------------------------


class Opened:
    """A store on a fake clock that a test can close and reopen (nothing left in memory)."""

    def __init__(self, path: Path, clock: FakeClock, **options: Any) -> None:
        self.path, self.clock, self.options = path, clock, options
        self.store = self._open()

    def _open(self) -> Store:
        # No background sweep: every record is the test's own, so seqs stay predictable.
        return Store.open(self.path, clock=self.clock, sweep_interval=3600, **self.options)

    def keyspace(self, name: str = "ks") -> KeySpace:
        return self.store.keyspace(name)

    def reopen(self, **options: Any) -> Store:
        self.store.close()
        self.options.update(options)
        self.store = self._open()
        return self.store


@pytest.fixture
def opener(store_path: Path, clock: FakeClock) -> Iterator[Callable[..., Opened]]:
    made: list[Opened] = []

    def open_store(**options: Any) -> Opened:
        opened = Opened(store_path, clock, **options)
        made.append(opened)
        return opened

    yield open_store
    for opened in made:
        opened.store.close()


def recent_options(recent: int | None) -> dict[str, Any]:
    return {} if recent is None else {"recent_versions": recent}


def write_a_story(rec: Recorder) -> None:
    """Puts, overwrites, deletes, batches, TTLs expiring three ways, CAS, no-op writes."""
    clock = rec.clock
    rec.put("a", 1)
    rec.put("b", "two")
    rec.put("a", [1, 2])  # a list stays encoded: a fresh copy per read
    rec.put("ab", b"\x00bytes", ttl=2.0)
    clock.advance(1.0)
    rec.put("c", None, ttl=0.5)
    rec.batch([("put", "abc", 3.5, None, None), ("delete", "b", None, None, None)])
    rec.delete("b")  # gone already: no record
    clock.advance(1.0)  # "ab" (at START + 2) and "c" (at START + 1.5) have expired
    rec.put("é", {"nested": [True]})
    rec.put("ab", "again")  # over the expired, unswept "ab": its expiry, then version 1
    rec.sweep()  # "c"
    rec.put("b", 2, expect=0)
    rec.put("b", 3, expect=1)
    rec.put("b", 4, expect=5)  # a conflict: no record
    clock.advance(0.25)
    rec.put("c", "short", ttl=0.25)
    rec.put("a", -1, ttl=10.0)
    clock.advance(0.5)  # "c" expired again
    rec.batch(  # touches the expired "c": its expiry first, then the batch
        [
            ("put", "a", "in batch", None, None),
            ("delete", "c", None, None, None),
            ("put", "é", 1, None, None),
            ("put", "é", 2, None, 2),
            ("delete", "abc", None, None, 1),
        ]
    )
    rec.batch([("delete", NEVER, None, None, None)])  # deletes nothing: no record
    clock.advance(1.0)
    rec.delete("a")
    rec.put("a", "last")


# -- at(seq), against the model ---------------------------------------------------------------


@pytest.mark.parametrize("recent", RECENT, ids=RECENT_IDS)
def test_a_view_as_of_each_record_reads_as_the_dict_after_it(opener, clock, recent) -> None:
    opened = opener(**recent_options(recent))
    rec = Recorder(opened.keyspace(), clock)
    write_a_story(rec)
    assert rec.seq == 16
    rec.check_every_point()
    opened.reopen()
    rec.ks = opened.keyspace()
    rec.check_every_point()  # rebuilt from the log alone, history read from it


def test_every_point_reads_the_same_from_memory_from_the_log_and_after_a_snapshot(
    opener, clock
) -> None:
    opened = opener(recovery_budget=None)
    rec = Recorder(opened.keyspace(), clock)
    write_a_story(rec)
    rec.ks.snapshot()  # a base in the middle: points above it rebuild from it
    rec.put("b", "after the snapshot")
    rec.delete("é")
    rec.check_every_point()
    opened.reopen(recent_versions=0)
    rec.ks = opened.keyspace()
    assert rec.ks.stats().snapshot_seq == 16
    rec.check_every_point()


def test_at_with_no_point_is_now_and_stays_at_its_point(opener, clock) -> None:
    rec = Recorder(opener().keyspace(), clock)
    write_a_story(rec)
    view = rec.ks.at()
    assert (view.seq, view.time) == (rec.seq, clock.now)
    check_view(view, rec.state, clock.now)
    assert dict(view.items()) == dict(rec.ks.range())
    point, state = rec.seq, rec.state
    rec.put("a", "later")
    rec.delete("b")
    check_view(view, state, clock.now)  # a view is of its point, not of "now"
    assert rec.ks.at(point).seq == point
    check_view(rec.ks.at(), rec.state, clock.now)


def test_a_fresh_key_space_has_an_empty_view_of_now_and_no_past(opener, clock) -> None:
    ks = opener().keyspace()
    view = ks.at()
    assert (view.seq, len(view), list(view), view.get("a")) == (0, 0, [], None)
    assert ks.history("a") == []
    assert ks.seq_at(clock.now) == 0
    with pytest.raises(InvalidInput):
        ks.at(1)


# -- at(time=...), seq_at and time_of ---------------------------------------------------------


@pytest.mark.parametrize("recent", RECENT, ids=RECENT_IDS)
def test_at_a_time_is_the_last_record_committed_at_or_before_it(opener, clock, recent) -> None:
    opened = opener(**recent_options(recent))
    rec = Recorder(opened.keyspace(), clock)
    rec.put("a", 1)  # seq 1 at START
    rec.put("b", 1)  # seq 2 at START: the same time
    t3 = clock.advance(10.0)
    rec.put("a", 2)  # seq 3
    t4 = clock.advance(0.001)
    rec.delete("b")  # seq 4
    clock.advance(5.0)

    def check() -> None:
        ks = rec.ks
        assert [ks.time_of(seq) for seq in (1, 2, 3, 4)] == [START, START, t3, t4]
        cases = {
            START: 2,  # the last of the records committed then
            (START + t3) / 2: 2,
            t3: 3,
            (t3 + t4) / 2: 3,
            t4: 4,
            clock.now: 4,
            clock.now + 3600: 4,
        }
        for when, seq in cases.items():
            assert ks.seq_at(when) == seq, when
            view = ks.at(time=when)
            assert (view.seq, view.time) == (seq, when)
            check_view(view, rec.states[seq], when)
        assert ks.seq_at(START - 1) == 0  # before the first record: the empty state
        with pytest.raises(HistoryUnavailable):  # ... which is below the floor, seq 1
            ks.at(time=START - 1)

    check()
    opened.reopen()
    rec.ks = opened.keyspace()
    check()  # times read back from the log


def test_time_of_takes_only_committed_records(opener, clock) -> None:
    rec = Recorder(opener().keyspace(), clock)
    rec.put("a", 1)
    for bad in (0, -1, 2, True, 1.0, "1", None):
        with pytest.raises(InvalidInput):
            rec.ks.time_of(bad)
    for bad in (float("nan"), float("inf"), "now", True, None):
        with pytest.raises(InvalidInput):
            rec.ks.seq_at(bad)


def test_a_point_past_the_last_record_or_not_a_seq_is_invalid_input(opener, clock) -> None:
    rec = Recorder(opener().keyspace(), clock)
    rec.put("a", 1)
    rec.put("a", 2)
    for bad in (3, 10**9, True, 1.0, "1"):
        with pytest.raises(InvalidInput):
            rec.ks.at(bad)
    with pytest.raises(InvalidInput):
        rec.ks.at(1, time=clock.now)
    for bad in (float("nan"), float("-inf"), "yesterday", True):
        with pytest.raises(InvalidInput):
            rec.ks.at(time=bad)


# -- expiry in views --------------------------------------------------------------------------


def test_expiry_in_a_view_is_judged_at_its_point(opener, clock) -> None:
    rec = Recorder(opener().keyspace(), clock)
    rec.put("k", "short-lived", ttl=2.0)  # seq 1 at START, expires at START + 2
    clock.advance(1.0)
    rec.put("a", 1)  # seq 2 at START + 1
    clock.advance(2.0)
    rec.put("b", 1)  # seq 3 at START + 3: "k" has expired, unswept
    ks = rec.ks
    assert ks.at(1).get("k") == ks.at(2).get("k") == "short-lived"
    assert ks.at(3).get("k") is None  # stored still, but dead at record 3's time
    assert ks.at(time=START + 1.999).get("k") == "short-lived"  # seq 2, judged then
    assert ks.at(time=START + 2.0).get("k") is None  # seq 2 too, judged at the expiry
    assert ks.at(time=START + 2.0).seq == 2
    assert "k" not in ks.at()
    clock.set(START + 1.5)  # now moves back: at() judges now, at(seq) the record's time
    assert ks.at().get("k") == "short-lived"
    assert ks.at(3).get("k") is None
    clock.set(START + 3)
    for seq in (1, 2, 3):
        rec.check_at(seq)


# -- the history floor ------------------------------------------------------------------------


@pytest.mark.parametrize("recent", RECENT, ids=RECENT_IDS)
def test_a_point_below_the_history_floor_is_unavailable_and_the_current_one_never_is(
    opener, clock, recent
) -> None:
    opened = opener(segment_bytes=4096, recovery_budget=None, retention=0, **recent_options(recent))
    rec = Recorder(opened.keyspace(), clock)
    for round_number in range(4):
        for i in range(30):
            rec.put(KEYS[i % len(KEYS)], f"{round_number}:{i}" * 20)
            clock.advance(0.1)
        rec.delete(KEYS[round_number])
        rec.ks.snapshot()  # retention=0: the history below it goes
        floor = rec.ks.stats().history_floor
        assert floor == rec.seq + 1  # the snapshot rolled the log: nothing below is kept
        # The current point is always readable, though below the floor.
        assert rec.ks.at().seq == rec.seq
        rec.check_at(rec.seq)
        with pytest.raises(HistoryUnavailable) as below:
            rec.ks.at(rec.seq - 1)
        assert (below.value.requested, below.value.floor) == (rec.seq - 1, floor)
        with pytest.raises(HistoryUnavailable):
            rec.ks.at(time=rec.time_of(rec.seq - 1))
        with pytest.raises(HistoryUnavailable):
            rec.ks.at(0)
        for key in [*KEYS, NEVER]:
            assert rec.ks.history(key) == []  # every change is below the floor
        rec.put("a", "above")
        rec.put("b", "above")
        rec.check_every_point(floor)  # at and above the floor: exact
        assert rec.ks.history("a")[0].seq == floor
    opened.reopen()
    rec.ks = opened.keyspace()
    floor = rec.ks.stats().history_floor
    assert floor > 1
    rec.check_every_point(floor)
    with pytest.raises(HistoryUnavailable) as below:
        rec.ks.at(floor - 1)
    assert below.value.floor == floor


def test_retention_keeping_history_moves_no_floor(opener, clock) -> None:
    opened = opener(segment_bytes=4096, recovery_budget=None)
    rec = Recorder(opened.keyspace(), clock)
    for i in range(200):
        rec.put(KEYS[i % 4], "x" * (i % 97))
        if i % 50 == 49:
            rec.ks.snapshot()
            rec.ks.compact()
    assert rec.ks.stats().history_floor == 1
    rec.check_every_point()


# -- history(key) -----------------------------------------------------------------------------


@pytest.mark.parametrize("recent", RECENT, ids=RECENT_IDS)
def test_history_lists_every_change_of_a_key_oldest_first(opener, clock, recent) -> None:
    opened = opener(**recent_options(recent))
    rec = Recorder(opened.keyspace(), clock)
    write_a_story(rec)
    expected = {
        "ab": [
            Version(4, START, "put", b"\x00bytes", 1, START + 2.0),
            Version(8, START + 2, "expire", None, 0),  # the put over it recorded it
            Version(8, START + 2, "put", "again", 1),
        ],
        "c": [
            Version(5, START + 1, "put", None, 1, START + 1.5),
            Version(9, START + 2, "expire", None, 0),  # the sweep
            Version(12, START + 2.25, "put", "short", 1, START + 2.5),
            Version(14, START + 2.75, "expire", None, 0),  # the batch that touched it
        ],
        "a": [
            Version(1, START, "put", 1, 1),
            Version(3, START, "put", [1, 2], 2),
            Version(13, START + 2.25, "put", -1, 3, START + 12.25),
            Version(14, START + 2.75, "put", "in batch", 4),
            Version(15, START + 3.75, "delete", None, 0),
            Version(16, START + 3.75, "put", "last", 1),
        ],
        "é": [
            Version(7, START + 2, "put", {"nested": [True]}, 1),
            Version(14, START + 2.75, "put", 1, 2),
            Version(14, START + 2.75, "put", 2, 3),
        ],
    }
    for key, versions in expected.items():
        assert rec.history(key) == versions, key  # the model agrees with the story
    for ks_fresh in (False, True):
        if ks_fresh:
            opened.reopen()
            rec.ks = opened.keyspace()
        for key in [*KEYS, NEVER]:
            assert rec.ks.history(key) == rec.history(key), key
        assert rec.ks.history(NEVER) == []


@pytest.mark.parametrize("recent", RECENT, ids=RECENT_IDS)
def test_history_after_retention_dropped_records_kept_in_memory_lists_what_is_above_the_floor(
    opener, clock, recent
) -> None:
    opened = opener(recovery_budget=None, retention=0, **recent_options(recent))
    rec = Recorder(opened.keyspace(), clock)
    write_a_story(rec)
    opened.reopen()  # the replay keeps the last recent_versions changes in memory
    rec.ks = opened.keyspace()
    rec.ks.snapshot()  # retention=0: every record those changes came from leaves the log
    floor = rec.ks.stats().history_floor
    assert floor == rec.seq + 1
    for key in [*KEYS, NEVER]:
        assert rec.ks.history(key) == [], key
    rec.put("a", "above the floor")
    rec.check_every_point(floor)


def test_history_limit_keeps_the_newest(opener, clock) -> None:
    rec = Recorder(opener(recent_versions=2).keyspace(), clock)
    for i in range(6):
        rec.put("a", i)
        rec.put("b", i)
    full = rec.history("a")
    assert len(full) == 6
    ks = rec.ks
    assert ks.history("a") == full
    for limit in (0, 1, 2, 5, 6, 7, 100):
        assert ks.history("a", limit=limit) == full[len(full) - min(limit, 6) :], limit
    assert ks.history("a", limit=0) == []
    for bad in (-1, True, 1.5, "2"):
        with pytest.raises(InvalidOption):
            ks.history("a", limit=bad)


def test_history_of_a_key_with_a_thousand_versions_reads_the_same_from_log_and_memory(
    opener, clock
) -> None:
    opened = opener(fsync="never")
    ks = opened.keyspace()
    for i in range(1000):
        with ks.batch() as batch:
            batch.put("hot", i)
            batch.put(f"other{i % 7}", i)
    in_memory = ks.history("hot")
    assert [(v.seq, v.value, v.version, v.op) for v in in_memory] == [
        (i + 1, i, i + 1, "put") for i in range(1000)
    ]
    opened.reopen(recent_versions=10)
    ks = opened.keyspace()
    assert ks.history("hot") == in_memory
    assert ks.history("hot", limit=3) == in_memory[-3:]


# -- views while writes go on -----------------------------------------------------------------


@pytest.mark.parametrize("recent", RECENT, ids=RECENT_IDS)
def test_a_view_of_an_old_point_stays_valid_while_writes_go_on(opener, clock, recent) -> None:
    rec = Recorder(opener(**recent_options(recent)).keyspace(), clock)
    write_a_story(rec)
    views = {seq: rec.ks.at(seq) for seq in (1, 9, 15, rec.seq)}
    half_read = rec.ks.at(15).items()
    first = next(half_read)
    for i in range(200):  # far past every recent_versions under test
        rec.put(KEYS[i % len(KEYS)], i)
        if i % 3 == 0:
            rec.delete(KEYS[(i + 1) % len(KEYS)])
        clock.advance(0.01)
    for seq, view in views.items():
        check_view(view, rec.states[seq], rec.time_of(seq))
    visible = {k: s[0] for k, s in sorted(rec.states[15].items()) if alive(s, rec.time_of(15))}
    assert [first, *half_read] == list(visible.items())


@pytest.mark.parametrize("recent", RECENT, ids=RECENT_IDS)
def test_a_view_taken_before_retention_drops_its_point_still_reads_as_it(
    opener, clock, recent
) -> None:
    opened = opener(recovery_budget=None, retention=0, **recent_options(recent))
    rec = Recorder(opened.keyspace(), clock)
    write_a_story(rec)
    views = {seq: rec.ks.at(seq) for seq in (3, 9, 15)}  # taken, not read yet
    rec.ks.snapshot()  # retention=0: records 1..16 leave the log
    assert rec.ks.stats().history_floor == 17
    for i in range(60):
        rec.put(KEYS[i % len(KEYS)], i)
    for seq, view in views.items():
        check_view(view, rec.states[seq], rec.time_of(seq))


# -- forks ------------------------------------------------------------------------------------


def fork_model(rec: Recorder, ks: KeySpace, seq: int) -> Recorder:
    """A recorder of the fork ``ks`` of ``rec``'s key space at ``seq``."""
    return Recorder(ks, rec.clock, seq=seq, state=rec.states[seq])


def check_now(rec: Recorder) -> None:
    """Current reads of ``rec.ks`` (not a view) equal the model now."""
    now = rec.clock.now
    visible = {key: stored for key, stored in sorted(rec.state.items()) if alive(stored, now)}
    assert dict(rec.ks.range()) == {key: stored[0] for key, stored in visible.items()}
    for key in [*KEYS, NEVER]:
        entry = rec.ks.get_entry(key)
        found = None if entry is None else (entry.value, entry.version, entry.seq, entry.expires_at)
        assert found == visible.get(key), key
    assert rec.ks.last_seq == rec.seq


@pytest.mark.parametrize("recent", RECENT, ids=RECENT_IDS)
def test_a_fork_at_a_past_point_holds_the_source_state_then_values_and_versions(
    opener, clock, recent
) -> None:
    opened = opener(**recent_options(recent))
    rec = Recorder(opened.keyspace("src"), clock)
    write_a_story(rec)
    points = random.Random(recent).sample(range(1, rec.seq + 1), 5)
    for n, seq in enumerate(points):
        fork = opened.store.fork_keyspace("src", f"fork{n}", seq=seq)
        model = fork_model(rec, fork, seq)
        assert fork.last_seq == seq  # its own history starts after the point
        assert fork.stats().snapshot_seq == seq
        # The fork keeps the stored entries (expired ones too, as the source stored them):
        # judged now, and judged at the point through a view of its one readable point.
        check_now(model)
        check_view(fork.at(), rec.states[seq], clock.now)
        assert fork.at(seq).time == rec.time_of(seq)  # its point is the source's
        check_view(fork.at(seq), rec.states[seq], rec.time_of(seq))
    opened.reopen()
    for n, seq in enumerate(points):
        model = fork_model(rec, opened.keyspace(f"fork{n}"), seq)
        check_now(model)
        assert model.ks.stats().history_floor == seq + 1
        for key in KEYS:
            assert model.ks.history(key) == []


def test_a_fork_at_a_time_is_the_source_at_that_time(opener, clock) -> None:
    opened = opener()
    rec = Recorder(opened.keyspace("src"), clock)
    write_a_story(rec)
    when = START + 2.5
    seq = rec.seq_at(when)
    assert seq == 13
    fork = opened.store.fork_keyspace("src", "then", time=when)
    check_now(fork_model(rec, fork, seq))


def test_writes_to_a_fork_and_to_its_source_are_independent(opener, clock) -> None:
    opened = opener()
    rec = Recorder(opened.keyspace("src"), clock)
    write_a_story(rec)
    seq = 9
    fork = fork_model(rec, opened.store.fork_keyspace("src", "fork", seq=seq), seq)
    for i in range(20):
        key = KEYS[i % len(KEYS)]
        fork.put(key, f"fork{i}", ttl=None if i % 4 else 1.0)
        if i % 5 == 0:
            fork.delete(KEYS[(i + 2) % len(KEYS)])
        if i % 3 == 0:
            rec.put(key, -i)
        clock.advance(0.3)
    fork.sweep()
    fork.batch([("put", "ab", "batched", None, None), ("delete", "a", None, None, None)])
    check_now(fork)
    check_now(rec)
    fork.check_every_point(floor=seq + 1)
    rec.check_every_point()
    opened.reopen()
    fork.ks, rec.ks = opened.keyspace("fork"), opened.keyspace("src")
    check_now(fork)
    check_now(rec)
    fork.check_every_point(floor=seq + 1)
    rec.check_every_point()


def test_a_fork_of_now_written_like_its_source_stays_identical_to_it(opener, clock) -> None:
    opened = opener()
    rec = Recorder(opened.keyspace("src"), clock)
    write_a_story(rec)
    rec.put("c", "expires", ttl=0.5)
    clock.advance(1.0)  # an expired, unswept key: both must record its expiry alike
    fork = fork_model(rec, opened.store.fork_keyspace("src", "twin"), rec.seq)
    for model in (rec, fork):
        model.put("c", "over the expired one")
        model.put("a", "cas", expect=1)
        model.batch([("put", "b", 0, None, 2), ("delete", "é", None, None, None)])
        model.put("ab", 1, ttl=1.0)
    clock.advance(2.0)
    assert rec.sweep() == fork.sweep() == 1
    assert rec.seq == fork.seq
    assert rec.state == fork.state
    for key in [*KEYS, NEVER]:  # values, versions and seqs alike
        assert rec.ks.get_entry(key) == fork.ks.get_entry(key), key
    check_now(fork)


def test_a_fork_below_the_history_floor_is_unavailable_and_leaves_nothing(
    opener, clock, store_path
) -> None:
    opened = opener(recovery_budget=None, retention=0)
    rec = Recorder(opened.keyspace("src"), clock)
    write_a_story(rec)
    rec.ks.snapshot()
    rec.put("a", "after")
    floor = rec.ks.stats().history_floor
    assert floor == 17
    for seq in (1, floor - 1):
        with pytest.raises(HistoryUnavailable):
            opened.store.fork_keyspace("src", "old", seq=seq)
        assert not keyspace_dir(store_path, "old").exists()
        assert opened.store.keyspaces() == ["src"]
    check_now(fork_model(rec, opened.store.fork_keyspace("src", "floor", seq=floor), floor))


def test_a_fork_onto_an_existing_key_space_is_refused_and_changes_nothing(opener, clock) -> None:
    opened = opener()
    rec = Recorder(opened.keyspace("src"), clock)
    write_a_story(rec)
    other = Recorder(opened.keyspace("other"), clock)
    other.put("x", 1)
    for target in ("other", "src"):
        with pytest.raises(InvalidOperation):
            opened.store.fork_keyspace("src", target, seq=3)
    check_now(rec)
    check_now(other)
    with pytest.raises(InvalidInput):
        opened.store.fork_keyspace("src", "new", seq=rec.seq + 1)
    assert opened.store.keyspaces() == ["other", "src"]


def test_a_fork_of_a_key_space_that_is_not_open_reads_it_from_disk(opener, clock) -> None:
    opened = opener()
    rec = Recorder(opened.keyspace("src"), clock)
    write_a_story(rec)
    opened.reopen(recent_versions=0)
    fork = opened.store.fork_keyspace("src", "fork", seq=6)
    check_now(fork_model(rec, fork, 6))
