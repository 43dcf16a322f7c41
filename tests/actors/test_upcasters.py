"""Logs written by older event types open under the new code, through ``upcasters``.

Each test writes a log with the old classes (as the code of an earlier release would
have), then spawns the actor's current class on the same log, and checks its state against
what the current code builds from the same history written with current events.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any, ClassVar

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from actors import (
    Change,
    CorruptLog,
    EventSourcedActor,
    InvalidInput,
    InvalidOperation,
    OpenFailed,
    Projection,
    ReplayFailed,
    SnapshotSchemaMismatch,
    Store,
    UnknownEventTag,
)
from storage import LogReader

OPEN = {"recovery_budget": None}  # no snapshots: every test replays the records themselves


# -- the code of the earlier release --------------------------------------------------------


class OldDeposited(msgspec.Struct, tag="deposited", frozen=True):
    amt: int  # renamed to ``amount`` since


class OldTransferred(msgspec.Struct, tag="transferred", frozen=True):
    to: str
    amount: int  # split into Withdrawn + Sent since


class OldNoted(msgspec.Struct, tag="noted", frozen=True):
    text: str  # retired since


class OldFeeCharged(msgspec.Struct, tag="fee", frozen=True):
    cents: str  # a decimal string then; an int now


class OldAccount(EventSourcedActor[int]):
    event_types = (OldDeposited, OldTransferred, OldNoted, OldFeeCharged)

    def initial_state(self) -> int:
        return 0

    def apply(self, state: int, event: Any) -> int:
        return state  # the old code's state does not matter: only its log

    def write(self, event: Any) -> None:
        self.emit(event)


# -- the current code -----------------------------------------------------------------------


class Deposited(msgspec.Struct, tag="deposited.v2", frozen=True):
    amount: int


class Withdrawn(msgspec.Struct, tag="withdrawn", frozen=True):
    amount: int


class Sent(msgspec.Struct, tag="sent", frozen=True):
    to: str
    amount: int


class FeeCharged(msgspec.Struct, tag="fee.v2", frozen=True):
    cents: int


class Account(EventSourcedActor[dict[str, Any]]):
    """Balance, what was sent where, fees: built from current events only."""

    upcasters: ClassVar[dict[str, Any]] = {
        "deposited": lambda fields: Deposited(amount=fields["amt"]),
        "transferred": lambda fields: [
            Withdrawn(fields["amount"]),
            Sent(fields["to"], fields["amount"]),
        ],
        "noted": lambda fields: [],
        "fee": lambda fields: FeeCharged(int(fields["cents"])),
    }

    def initial_state(self) -> dict[str, Any]:
        return {"balance": 0, "sent": {}, "fees": 0, "events": 0}

    def apply(
        self, state: dict[str, Any], event: Deposited | Withdrawn | Sent | FeeCharged
    ) -> dict[str, Any]:
        state = {**state, "events": state["events"] + 1}
        match event:
            case Deposited(amount=amount):
                state["balance"] += amount
            case Withdrawn(amount=amount):
                state["balance"] -= amount
            case Sent(to=to, amount=amount):
                state["sent"] = {**state["sent"], to: state["sent"].get(to, 0) + amount}
            case FeeCharged(cents=cents):
                state["fees"] += cents
                state["balance"] -= cents
        return state

    def write(self, *events: Any) -> None:
        for event in events:
            self.emit(event)


OLD_HISTORY = [
    OldDeposited(100),
    OldNoted("opened at the branch"),
    OldTransferred("bob", 30),
    OldFeeCharged("2"),
    OldDeposited(5),
]
SAME_HISTORY = [  # what the current code writes for the same story
    [Deposited(100)],
    [],
    [Withdrawn(30), Sent("bob", 30)],
    [FeeCharged(2)],
    [Deposited(5)],
]


def write_old(path: Path, events: list[Any], name: str = "acct") -> None:
    with Store.open(path, **OPEN) as store:
        old = store.spawn(name, OldAccount)
        for event in events:
            old.blocking.write(event)


def state_written_by_current_code(path: Path) -> dict[str, Any]:
    with Store.open(path, **OPEN) as store:
        current = store.spawn("acct", Account)
        for events in SAME_HISTORY:
            if events:
                current.blocking.write(*events)
        state: dict[str, Any] = current.durable_state
    return state


def test_renamed_split_retired_and_retyped_events_replay_as_the_current_code_writes_them(
    tmp_path: Path,
) -> None:
    write_old(tmp_path / "old", OLD_HISTORY)
    expected = state_written_by_current_code(tmp_path / "new")
    assert expected == {"balance": 73, "sent": {"bob": 30}, "fees": 2, "events": 5}
    with Store.open(tmp_path / "old", **OPEN) as store:
        account = store.spawn("acct", Account)
        assert account.durable_state == expected
        assert account.stats().records_replayed == 5
        account.blocking.write(Deposited(1))  # new records: current types, after the old
    with Store.open(tmp_path / "old", **OPEN) as store:
        account = store.spawn("acct", Account)
        assert account.durable_state == {**expected, "balance": 74, "events": 6}
        changes = account.subscribe(from_seq=1)  # subscriptions read through them too
        seen = [changes.next(timeout=5) for _ in range(6)]
        changes.close()
    assert [type(change.event).__name__ for change in seen] == [
        "Deposited",
        "Withdrawn",
        "Sent",
        "FeeCharged",
        "Deposited",
        "Deposited",
    ]
    assert [change.seq for change in seen] == [1, 3, 3, 4, 5, 6]  # seq 2, the note: retired


def test_old_records_are_never_rewritten(tmp_path: Path) -> None:
    write_old(tmp_path / "store", OLD_HISTORY)
    log = tmp_path / "store" / "actors" / "acct"
    before = {path.name: path.read_bytes() for path in log.glob("*.seg")}
    with Store.open(tmp_path / "store", **OPEN) as store:
        store.spawn("acct", Account).durable_state  # noqa: B018 - replays through upcasters
    after = {path.name: path.read_bytes() for path in log.glob("*.seg")}
    assert after == before


class V1(msgspec.Struct, tag="v1", frozen=True):
    n: int


class V1Writer(EventSourcedActor[int]):
    event_types = (V1,)

    def initial_state(self) -> int:
        return 0

    def apply(self, state: int, event: V1) -> int:
        return state

    def write(self, n: int) -> None:
        self.emit(V1(n))


class V3(msgspec.Struct, tag="v3", frozen=True):
    total: int
    doubled: bool


class Chained(EventSourcedActor[list[tuple[int, bool]]]):
    """v1 {n} -> v2 {value} -> v3 {total, doubled}: each old tag mapped once."""

    upcasters: ClassVar[dict[str, Any]] = {
        "v1": lambda fields: {"type": "v2", "value": fields["n"] * 2},
        "v2": lambda fields: V3(total=fields["value"], doubled=True),
    }

    def initial_state(self) -> list[tuple[int, bool]]:
        return []

    def apply(self, state: list[tuple[int, bool]], event: V3) -> list[tuple[int, bool]]:
        return [*state, (event.total, event.doubled)]

    def write(self, total: int) -> None:
        self.emit(V3(total, doubled=False))


def test_a_chain_of_upcasters_reads_the_oldest_records(tmp_path: Path) -> None:
    with Store.open(tmp_path, **OPEN) as store:
        writer = store.spawn("chain", V1Writer)
        for n in (1, 2, 3):
            writer.blocking.write(n)
    with Store.open(tmp_path, **OPEN) as store:
        chained = store.spawn("chain", Chained)
        assert chained.durable_state == [(2, True), (4, True), (6, True)]
        chained.blocking.write(7)
        assert chained.durable_state[-1] == (7, False)


def test_a_tag_neither_current_nor_upcast_names_the_tag_the_record_and_the_fix(
    tmp_path: Path,
) -> None:
    write_old(tmp_path, [OldDeposited(1), OldNoted("x")])

    class NoUpcasterForNotes(Account):
        upcasters: ClassVar[dict[str, Any]] = {"deposited": lambda fields: Deposited(fields["amt"])}

    class NoUpcasters(Account):
        upcasters: ClassVar[dict[str, Any]] = {}

    for actor_class, seq, tag in ((NoUpcasterForNotes, 2, "noted"), (NoUpcasters, 1, "deposited")):
        with Store.open(tmp_path, **OPEN) as store, pytest.raises(UnknownEventTag) as raised:
            store.spawn("acct", actor_class)
        error = raised.value
        assert isinstance(error, CorruptLog)  # the contract's error, with its own advice
        assert (error.seq, error.tag, error.actor) == (seq, tag, actor_class.__name__)
        assert f"add an upcaster for {tag!r}" in str(error)
        assert "do not repair" in str(error)


def test_upcasters_that_cannot_work_are_refused(tmp_path: Path) -> None:
    class MapsACurrentTag(Account):
        upcasters: ClassVar[dict[str, Any]] = {"sent": lambda fields: []}

    class NotCallable(Account):
        upcasters: ClassVar[dict[str, Any]] = {"old": 3}

    with Store.open(tmp_path, **OPEN) as store:
        with pytest.raises(TypeError, match="current event type Sent"):
            store.spawn("a", MapsACurrentTag)
        with pytest.raises(TypeError, match="must be a function"):
            store.spawn("b", NotCallable)


def test_an_upcaster_that_fails_or_returns_an_old_object_says_which(tmp_path: Path) -> None:
    write_old(tmp_path, [OldDeposited(1)])

    class Raises(Account):
        upcasters: ClassVar[dict[str, Any]] = {"deposited": lambda fields: fields["gone"]}

    class ReturnsOld(Account):
        upcasters: ClassVar[dict[str, Any]] = {"deposited": lambda fields: OldDeposited(1)}

    for actor_class, said in ((Raises, "KeyError"), (ReturnsOld, "not a current event")):
        refused = pytest.raises(ReplayFailed, match="the upcaster of 'deposited'")
        with Store.open(tmp_path, **OPEN) as store, refused as raised:
            store.spawn("acct", actor_class)
        assert said in str(raised.value)
        assert raised.value.seq == 1


class Count(msgspec.Struct, tag="count", frozen=True):
    x: int


class Counted(EventSourcedActor[list[int]]):
    upcasters: ClassVar[dict[Any, Any]] = {}

    def initial_state(self) -> list[int]:
        return []

    def apply(self, state: list[int], event: Count) -> list[int]:
        return [*state, event.x]


def test_a_splitting_upcaster_runs_once_per_old_event(tmp_path: Path) -> None:
    calls = []

    def split(fields: dict[str, Any]) -> list[Count]:
        calls.append(fields["x"])
        return [Count(fields["x"]), Count(-fields["x"])]

    class Splits(Counted):
        upcasters: ClassVar[dict[Any, Any]] = {"pair": split}

    write_raw(tmp_path, [[{"type": "pair", "x": 1}], [{"type": "pair", "x": 2}]])
    with Store.open(tmp_path, **OPEN) as store:
        assert store.spawn("counted", Splits).durable_state == [1, -1, 2, -2]
    assert calls == [1, 2]


def write_raw(path: Path, records: list[list[dict[str, Any]]]) -> None:
    """Records of events as an older release encoded them: maps with their tag."""
    from storage import SegmentedLog

    with Store.open(path, **OPEN):
        pass
    encode = msgspec.msgpack.encode
    with SegmentedLog.open(path / "actors" / "counted", fsync="never") as log:
        log.append_batch([encode(events) for events in records])


@given(
    steps=st.lists(st.tuples(st.integers(-3, 3), st.integers(-5, 5)), min_size=1, max_size=4),
    records=st.lists(
        st.lists(st.tuples(st.integers(0, 4), st.integers(-100, 100)), max_size=3),
        max_size=25,
    ),
)
@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
def test_random_upcaster_chains_equal_their_composed_functions(
    tmp_path_factory: pytest.TempPathFactory,
    steps: list[tuple[int, int]],
    records: list[list[tuple[int, int]]],
) -> None:
    """Old tags t0 -> t1 -> ... -> Count, each step x -> a*x + b; events of any of them."""
    length = len(steps)
    tags = [f"t{k}" for k in range(length)]

    def step(k: int) -> Any:
        a, b = steps[k]
        if k == length - 1:
            return lambda fields: Count(a * fields["x"] + b)
        return lambda fields: {"type": tags[k + 1], "x": a * fields["x"] + b}

    class Chain(Counted):
        upcasters: ClassVar[dict[Any, Any]] = {tags[k]: step(k) for k in range(length)}

    def composed(k: int, x: int) -> int:
        for a, b in steps[k:]:
            x = a * x + b
        return x

    written, expected = [], []
    for record in records:
        events = []
        for which, x in record:
            if which >= length:  # a current event among the old ones
                events.append({"type": "count", "x": x})
                expected.append(x)
            else:
                events.append({"type": tags[which], "x": x})
                expected.append(composed(which, x))
        written.append(events)
    path = tmp_path_factory.mktemp("chain")
    write_raw(path, written)
    with Store.open(path, **OPEN) as store:
        assert store.spawn("counted", Chain).durable_state == expected


# -- snapshots of another schema ---------------------------------------------------------------


class Tally(EventSourcedActor[dict[str, int]]):
    """Schema 1: the state is {"total": n}."""

    schema_version: ClassVar[int | None] = 1

    def initial_state(self) -> dict[str, int]:
        return {"total": 0}

    def apply(self, state: dict[str, int], event: Count) -> dict[str, int]:
        return {"total": state["total"] + event.x}

    def add(self, x: int) -> int:
        self.emit(Count(x))
        return self.state["total"]


class TallyV2(Tally):
    """Schema 2: the state is {"sum": n, "count": k}; replay rebuilds it from the events."""

    schema_version: ClassVar[int | None] = 2

    def initial_state(self) -> dict[str, int]:  # type: ignore[override]
        return {"sum": 0, "count": 0}

    def apply(self, state: dict[str, int], event: Count) -> dict[str, int]:
        return {"sum": state["sum"] + event.x, "count": state["count"] + 1}


class TallyV2Converting(TallyV2):
    def restore_state(self, data: Any, schema_version: int | None = None) -> dict[str, int]:  # type: ignore[override]
        if schema_version == 1:  # schema 1 did not count: say so rather than guess
            return {"sum": data["total"], "count": -1}
        return dict(data)


def tally_store(path: Path, **options: Any) -> None:
    with Store.open(path, recovery_budget=None, segment_bytes=4096, **options) as store:
        tally = store.spawn("counted", Tally)
        for _ in range(300):
            tally.blocking.add(1)
        tally.snapshot().get(timeout=30)
        tally.blocking.add(5)


def test_a_snapshot_of_another_schema_is_converted_by_restore_state_when_defined(
    tmp_path: Path,
) -> None:
    tally_store(tmp_path)
    with Store.open(tmp_path, recovery_budget=None) as store:
        tally = store.spawn("counted", TallyV2Converting)
        assert tally.durable_state == {"sum": 305, "count": 0}  # converted (-1), then +1
        assert tally.stats().records_replayed == 1


def test_a_snapshot_of_another_schema_is_replayed_past_when_the_log_holds_the_records(
    tmp_path: Path,
) -> None:
    tally_store(tmp_path)
    with Store.open(tmp_path, recovery_budget=None) as store:
        tally = store.spawn("counted", TallyV2)
        assert tally.durable_state == {"sum": 305, "count": 301}  # never a wrong state
        assert tally.stats().records_replayed == 301
    with Store.open(tmp_path, recovery_budget=None) as store:  # the old code's still usable
        assert store.spawn("counted", Tally).stats().records_replayed == 1


def test_a_snapshot_of_another_schema_with_no_records_before_it_says_what_to_define(
    tmp_path: Path,
) -> None:
    tally_store(tmp_path, retention=0)
    refused = pytest.raises(SnapshotSchemaMismatch)
    with Store.open(tmp_path, recovery_budget=None) as store, refused as raised:
        store.spawn("counted", TallyV2)
    error = raised.value
    assert (error.actor, error.written, error.current) == ("TallyV2", 1, 2)
    assert "00000000000000000300.snap" in error.snapshot
    assert "restore_state(self, data, schema_version)" in str(error)


# -- migrate: old records rewritten, offline --------------------------------------------------


class AccountNow(Account):
    """The current code once every old record is gone: no upcasters at all."""

    upcasters: ClassVar[dict[str, Any]] = {}


def test_migrate_rewrites_the_log_with_the_same_seqs_and_times_and_keeps_a_backup(
    tmp_path: Path,
) -> None:
    write_old(tmp_path, OLD_HISTORY)
    log = tmp_path / "actors" / "acct"
    old_bytes = {path.name: path.read_bytes() for path in log.glob("*.seg")}
    old_times = [
        (seq, when) for chunk in LogReader.open(log).read_timed_chunks() for seq, when, _ in chunk
    ]
    with Store.open(tmp_path, **OPEN) as store:
        report = store.migrate("acct", Account)
        assert (report.records, report.upcast, report.emptied) == (5, 5, 1)
        assert {p.name: p.read_bytes() for p in report.backup.glob("*.seg")} == old_bytes
        migrated = store.spawn("acct", AccountNow)  # current types only, no upcaster needed
        assert migrated.durable_state == {
            "balance": 73,
            "sent": {"bob": 30},
            "fees": 2,
            "events": 5,
        }
    new_times = [
        (seq, when) for chunk in LogReader.open(log).read_timed_chunks() for seq, when, _ in chunk
    ]
    assert new_times == old_times


def test_migrate_refuses_what_it_cannot_do(tmp_path: Path) -> None:
    write_old(tmp_path, OLD_HISTORY)
    with Store.open(tmp_path, **OPEN) as store:
        store.keyspace("users").put("a", 1)
        with pytest.raises(InvalidOperation, match="value_upcaster"):
            store.migrate("users")
        with pytest.raises(InvalidInput, match="no actor"):
            store.migrate("nobody", Account)
        with pytest.raises(InvalidOperation, match="no upcasters"):
            store.migrate("acct", AccountNow)
        store.spawn("acct", Account)
        with pytest.raises(InvalidOperation, match="running"):
            store.migrate("acct", Account)


def test_a_migration_a_crash_interrupted_is_finished_by_the_next_open(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import actors._migrate as migrating

    write_old(tmp_path, OLD_HISTORY)
    renamed = migrating._fileio.rename

    def crash_at_the_last_rename(src: Path, dst: Path) -> None:
        if dst.name == "acct":
            raise OSError(5, "simulated crash")
        renamed(src, dst)

    monkeypatch.setattr(migrating._fileio, "rename", crash_at_the_last_rename)
    with Store.open(tmp_path, **OPEN) as store, pytest.raises(OpenFailed):
        store.migrate("acct", Account)
    monkeypatch.undo()
    assert not (tmp_path / "actors" / "acct").exists()  # the old log is the backup now
    with Store.open(tmp_path, **OPEN) as store:  # the complete new log is put in place
        assert store.spawn("acct", AccountNow).durable_state["balance"] == 73


def test_actorkv_migrate_rewrites_through_the_recorded_class(tmp_path: Path) -> None:
    from tests.cli.conftest import run_json

    write_old(tmp_path, OLD_HISTORY)
    with Store.open(tmp_path, **OPEN) as store:  # the manifest records the current class
        store.spawn("acct", Account)
    report = run_json("migrate", tmp_path, "acct")
    assert (report["records"], report["upcast"], report["emptied"]) == (5, 5, 1)
    assert Path(report["backup"]).is_dir()
    with Store.open(tmp_path, **OPEN) as store:
        assert store.spawn("acct", AccountNow).durable_state["balance"] == 73


def test_the_kept_log_of_the_earlier_release_opens_under_the_current_code(
    tmp_path: Path,
) -> None:
    """tests/actors/fixtures/release1: bytes an earlier release wrote (make_upcast_fixture)."""
    kept = Path(__file__).parent / "fixtures" / "release1"
    shutil.copytree(kept, tmp_path / "store")
    with Store.open(tmp_path / "store", **OPEN) as store:
        account = store.spawn("acct", Account)
        assert account.durable_state == {"balance": 73, "sent": {"bob": 30}, "fees": 2, "events": 5}
        assert account.stats().records_replayed == 5


def test_many_records_replay_the_same_through_the_learned_shapes(tmp_path: Path) -> None:
    """Enough records for several chunks: the first teaches the shapes, the rest use them,
    and a record of another shape of the same tag (a field omitted) falls back, exactly."""

    class Shapes(Counted):
        upcasters: ClassVar[dict[Any, Any]] = {
            "old": lambda fields: Count(fields["x"] + fields.get("y", 1000))
        }

    records = [[{"type": "old", "x": i}] for i in range(60_000)]
    records[45_000] = [{"type": "old", "x": -1, "y": 0}]  # another shape, deep in the log
    records[50_000] = [{"type": "count", "x": 7}, {"type": "old", "x": 1}]
    records[55_000] = []
    write_raw(tmp_path, records)
    expected = [
        event["x"] + event.get("y", 1000) if event["type"] == "old" else event["x"]
        for record in records
        for event in record
    ]
    with Store.open(tmp_path, **OPEN) as store:
        assert store.spawn("counted", Shapes).durable_state == expected


@given(
    records=st.lists(
        st.lists(
            st.one_of(
                st.tuples(
                    st.just("old"), st.integers(-9, 9), st.one_of(st.none(), st.integers(0, 9))
                ),
                st.tuples(st.just("count"), st.integers(-9, 9), st.none()),
            ),
            max_size=3,
        ),
        max_size=30,
    ),
    priming=st.lists(st.integers(-9, 9), max_size=5),
)
@settings(max_examples=80, deadline=None)
def test_decoding_with_learned_shapes_equals_decoding_untyped(
    records: list[list[tuple[str, int, int | None]]], priming: list[int]
) -> None:
    from actors._events import _array_header
    from actors._upcasting import Upcasting

    def old(fields: dict[str, Any]) -> Any:
        return Count(fields["x"] * 10 + fields.get("y", 5))

    def encoded(rows: list[list[dict[str, Any]]]) -> bytes:
        return _array_header(len(rows)) + b"".join(msgspec.msgpack.encode(row) for row in rows)

    def event(tag: str, x: int, y: int | None) -> dict[str, Any]:
        return {"type": tag, "x": x} if y is None else {"type": tag, "x": x, "y": y}

    rows = [[event(*item) for item in record] for record in records]
    fresh = Upcasting("Counted", (Count,), {"old": old}).decode_records(encoded(rows), None)
    primed = Upcasting("Counted", (Count,), {"old": old})
    primed.decode_records(encoded([[{"type": "old", "x": x}] for x in priming]), None)
    assert primed.decode_records(encoded(rows), None) == fresh
    assert fresh == [
        tuple(
            Count(x * 10 + (5 if y is None else y)) if tag == "old" else Count(x)
            for tag, x, y in record
        )
        for record in records
    ]


class Inferred(EventSourcedActor[int]):
    """Event types from apply's annotation, not declared."""

    def initial_state(self) -> int:
        return 0

    def apply(self, state: int, event: Count) -> int:
        return state + event.x

    def add(self, x: int) -> int:
        self.emit(Count(x))
        return self.state


class InferredOther(Inferred):
    def apply(self, state: int, event: Count | Deposited) -> int:  # type: ignore[override]
        return state + (event.x if isinstance(event, Count) else event.amount)


def test_the_schema_id_counts_inferred_event_types_and_accepts_earlier_snapshots(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import actors._snapshots as snapshots

    assert snapshots.schema_id(Inferred) != snapshots.schema_id(InferredOther)
    assert snapshots.schema_id(Inferred, legacy=True) == snapshots.schema_id(
        InferredOther, legacy=True
    )
    derive = snapshots.schema_id
    monkeypatch.setattr(snapshots, "schema_id", lambda cls, legacy=False: derive(cls, legacy=True))
    with Store.open(tmp_path, **OPEN) as store:  # a snapshot as the earlier release wrote it
        counter = store.spawn("c", Inferred)
        for _ in range(10):
            counter.blocking.add(1)
        counter.snapshot().get(timeout=30)
    monkeypatch.undo()
    with Store.open(tmp_path, **OPEN) as store:
        counter = store.spawn("c", Inferred)
        assert counter.stats().records_replayed == 0  # the earlier snapshot: still trusted
        counter.blocking.add(1)
        counter.snapshot().get(timeout=30)  # a snapshot of the id as derived now
    with Store.open(tmp_path, **OPEN) as store:  # its event types changed:
        other = store.spawn("c", InferredOther)
        assert other.durable_state == 11
        # not the snapshot at 11 (another schema now): the earlier one, then a replay
        assert (other.stats().snapshot_seq, other.stats().records_replayed) == (10, 1)


class OldSummed(msgspec.Struct, tag="summed", frozen=True):
    value: int


class OldSum(Projection[int]):
    def initial_state(self) -> int:
        return 0

    def apply(self, state: int, event: OldSummed) -> int:
        return state + event.value

    def project(self, source: str, change: Change) -> None:
        if change.op == "put":
            self.emit(OldSummed(change.value))


class Summed(msgspec.Struct, tag="summed.v2", frozen=True):
    amount: int
    source: str


class Sum(Projection[int]):
    upcasters: ClassVar[dict[str, Any]] = {
        "summed": lambda fields: Summed(fields["value"], "orders")
    }

    def initial_state(self) -> int:
        return 0

    def apply(self, state: int, event: Summed) -> int:
        return state + event.amount

    def project(self, source: str, change: Change) -> None:
        if change.op == "put":
            self.emit(Summed(change.value, source))


def wait_until_equal(read: Any, expected: Any) -> Any:
    deadline = time.monotonic() + 30
    while read() != expected and time.monotonic() < deadline:
        time.sleep(0.02)
    return read()


def test_a_projection_reads_its_old_events_through_upcasters_and_resumes_exactly(
    tmp_path: Path,
) -> None:
    with Store.open(tmp_path, **OPEN) as store:
        orders = store.keyspace("orders")
        for i in range(1, 11):
            orders.put(f"o{i}", i)
        old = store.projection("sum", OldSum, sources=["orders"])
        assert wait_until_equal(lambda: old.durable_state, 55) == 55
    with Store.open(tmp_path, **OPEN) as store:
        orders = store.keyspace("orders")
        total = store.projection("sum", Sum, sources=["orders"])
        assert total.durable_state == 55  # the old events, upcast; nothing applied twice
        orders.put("o11", 11)
        assert wait_until_equal(lambda: total.durable_state, 66) == 66


@pytest.mark.usefixtures("runtime")
def test_upcasters_read_old_records_under_each_runtime(tmp_path: Path) -> None:
    write_old(tmp_path, OLD_HISTORY)
    with Store.open(tmp_path, **OPEN) as store:
        account = store.spawn("acct", Account)
        assert account.durable_state == {"balance": 73, "sent": {"bob": 30}, "fees": 2, "events": 5}
        account.blocking.write(Deposited(1))
        assert account.durable_state["balance"] == 74
