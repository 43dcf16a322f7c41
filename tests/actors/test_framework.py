"""Example-based tests of the custom-actor framework: commands, events, names, stats."""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from typing import Any

import msgspec
import pykka
import pytest

from actors import (
    ActorStopped,
    EventSourcedActor,
    InvalidName,
    InvalidValue,
    KeyspaceClosed,
    Store,
    StoreLocked,
)
from tests.actors.conftest import (
    TIMEOUT,
    Counter,
    Incremented,
    ProbeCounter,
    log_dir,
    read_records,
    reopened_value,
)

pytestmark = pytest.mark.usefixtures("runtime")  # each test under threads and Ray


def test_the_design_counter_example_works_as_written(tmp_path, runtime):
    data = tmp_path / "data"
    with Store.open(data) as store:
        counter = store.spawn("counter", Counter)
        future = counter.increment(2)
        if runtime == "threads":  # its futures are pykka's too
            assert isinstance(future, pykka.Future)
        assert future.get(timeout=TIMEOUT) == 2
        with pytest.raises(ValueError, match="by must be positive"):
            counter.increment(0).get(timeout=TIMEOUT)
    with Store.open(data) as store:
        counter = store.spawn("counter", Counter)  # recovers from its own log
        assert counter.increment(3).get(timeout=TIMEOUT) == 5


def test_a_command_sees_every_earlier_accepted_command(store):
    counter = store.spawn("counter", ProbeCounter)
    amounts = [1, 5, 2, 9, 3] * 10
    futures = [counter.increment(by) for by in amounts]
    expected = [sum(amounts[: i + 1]) for i in range(len(amounts))]
    assert [f.get(timeout=TIMEOUT) for f in futures] == expected
    assert counter.value().get(timeout=TIMEOUT) == sum(amounts)


def test_all_events_of_one_command_land_in_one_record(store_path):
    with Store.open(store_path) as store:
        counter = store.spawn("counter", ProbeCounter)
        counter.increment(1).get(timeout=TIMEOUT)
        before = counter.stats()
        assert counter.add_each(2, 3, 4).get(timeout=TIMEOUT) == 10
        after = counter.stats()
        assert after.records - before.records == 1
        assert after.events - before.events == 3
    assert read_records(store_path, "counter") == [
        [{"type": "Incremented", "by": 1}],
        [{"type": "Incremented", "by": b} for b in (2, 3, 4)],
    ]


def test_a_command_that_emits_then_raises_writes_nothing_and_the_actor_keeps_serving(
    store_path,
):
    with Store.open(store_path) as store:
        counter = store.spawn("counter", ProbeCounter)
        counter.increment(1).get(timeout=TIMEOUT)
        records = counter.stats().records
        with pytest.raises(RuntimeError, match="failed after emitting 50"):
            counter.add_then_fail(50).get(timeout=TIMEOUT)
        assert counter.stats().records == records
        assert counter.value().get(timeout=TIMEOUT) == 1  # rolled back
        assert counter.increment(2).get(timeout=TIMEOUT) == 3
    assert read_records(store_path, "counter") == [
        [{"type": "Incremented", "by": 1}],
        [{"type": "Incremented", "by": 2}],
    ]


def test_a_refused_command_writes_nothing_and_the_actor_keeps_serving(store_path):
    with Store.open(store_path) as store:
        counter = store.spawn("counter", ProbeCounter)
        with pytest.raises(ValueError, match="positive"):
            counter.increment(-1).get(timeout=TIMEOUT)
        assert counter.stats().records == 0
        assert counter.increment(4).get(timeout=TIMEOUT) == 4
    assert read_records(store_path, "counter") == [[{"type": "Incremented", "by": 4}]]


class Noted(msgspec.Struct, tag=True, frozen=True):
    data: Any


class Titled(msgspec.Struct, tag=True, frozen=True):
    title: str


class Notebook(EventSourcedActor[tuple[Any, ...]]):
    def initial_state(self) -> tuple[Any, ...]:
        return ()

    def apply(self, state: tuple[Any, ...], event: Noted | Titled) -> tuple[Any, ...]:
        return (*state, event.data if isinstance(event, Noted) else event.title)

    def note(self, data: Any) -> int:
        self.emit(Noted(data))
        return len(self.state)

    def title(self, title: Any) -> int:
        self.emit(Titled(title))
        return len(self.state)

    def emit_raw(self, *events: Any) -> int:
        self.emit(*events)
        return len(self.state)

    def sneak(self) -> int:
        """Emit a good event with a bad one, swallow the refusal, and carry on."""
        with contextlib.suppress(InvalidValue):
            self.emit(Noted("kept?"), "not an event")
        return len(self.state)

    def entries(self) -> tuple[Any, ...]:
        return self.state


def test_emitting_a_non_event_raises_invalid_value_to_that_caller_only(store):
    notebook = store.spawn("notebook", Notebook)
    first = notebook.note("a")
    bad = notebook.emit_raw(Noted("b"), {"type": "Noted", "data": "c"})
    wrong_struct = notebook.emit_raw(Incremented(1))
    last = notebook.note("d")
    with pytest.raises(InvalidValue, match="cannot emit dict"):
        bad.get(timeout=TIMEOUT)
    with pytest.raises(InvalidValue, match="cannot emit Incremented"):
        wrong_struct.get(timeout=TIMEOUT)
    assert first.get(timeout=TIMEOUT) == 1
    assert last.get(timeout=TIMEOUT) == 2
    assert notebook.entries().get(timeout=TIMEOUT) == ("a", "d")
    assert notebook.stats().records == 2


@pytest.mark.parametrize("value", [object(), 2**70, 1j], ids=["object", "huge-int", "complex"])
def test_an_unencodable_event_field_gives_invalid_value_and_writes_nothing(store_path, value):
    with Store.open(store_path) as store:
        notebook = store.spawn("notebook", Notebook)
        notebook.note("ok").get(timeout=TIMEOUT)
        with pytest.raises(InvalidValue, match="cannot encode Noted"):
            notebook.note(value).get(timeout=TIMEOUT)
        assert notebook.stats().records == 1
        assert notebook.entries().get(timeout=TIMEOUT) == ("ok",)
    assert read_records(store_path, "notebook") == [[{"type": "Noted", "data": "ok"}]]


def test_a_refused_event_in_one_emit_call_changes_nothing_even_if_the_command_goes_on(
    store_path,
):
    with Store.open(store_path) as store:
        notebook = store.spawn("notebook", Notebook)
        assert notebook.sneak().get(timeout=TIMEOUT) == 0
        assert notebook.stats().records == 0
    assert read_records(store_path, "notebook") == []


def test_an_event_with_a_wrongly_typed_field_never_reaches_the_log(store_path):
    with Store.open(store_path) as store:
        notebook = store.spawn("notebook", Notebook)
        notebook.title("fine").get(timeout=TIMEOUT)
        with pytest.raises(InvalidValue, match="wrong type"):
            notebook.title(5).get(timeout=TIMEOUT)
        assert notebook.stats().records == 1
    with Store.open(store_path) as store:  # replay would refuse it with CorruptLog
        assert store.spawn("notebook", Notebook).entries().get(timeout=TIMEOUT) == ("fine",)


@dataclass(frozen=True)
class PlainEvent:
    by: int


class Untagged(msgspec.Struct, frozen=True):
    by: int


class AlsoUntagged(msgspec.Struct, frozen=True):
    by: int


class NotAStructActor(Counter):
    def apply(self, state: int, event: PlainEvent) -> int:
        return state + event.by


class UntaggedUnionActor(Counter):
    def apply(self, state: int, event: Untagged | AlsoUntagged) -> int:
        return state + event.by


class UnannotatedActor(Counter):
    def apply(self, state, event):  # type: ignore[no-untyped-def]
        return state + event.by


class DeclaredNonStructActor(Counter):
    event_types = (int,)


@pytest.mark.parametrize(
    ("actor_class", "advice"),
    [
        (NotAStructActor, "is not a msgspec.Struct; declare events"),
        (UntaggedUnionActor, "add `tag=True`"),
        (UnannotatedActor, "annotate apply"),
        (DeclaredNonStructActor, "is not a msgspec.Struct; declare events"),
    ],
    ids=["dataclass-event", "untagged-union", "no-annotation", "declared-int"],
)
def test_an_actor_whose_events_cannot_be_logged_fails_spawn_with_advice(
    store_path, actor_class, advice
):
    with Store.open(store_path) as store:
        with pytest.raises(TypeError, match=advice):
            store.spawn("bad", actor_class)
        assert store.spawn("good", Counter).increment(1).get(timeout=TIMEOUT) == 1


def test_an_unresolvable_event_annotation_fails_spawn_with_advice(store):
    def apply(self, state: int, event: NoSuchEvent) -> int:  # type: ignore[name-defined]  # noqa: F821
        return state

    local = type("LocalActor", (Counter,), {"apply": apply})
    with pytest.raises(TypeError, match="set `event_types"):
        store.spawn("local", local)


@pytest.mark.parametrize("not_actor", [object, dict, Counter()], ids=["object", "dict", "inst"])
def test_spawn_refuses_what_is_not_an_event_sourced_actor_class(store, not_actor):
    with pytest.raises(TypeError, match="EventSourcedActor subclass"):
        store.spawn("x", not_actor)


@pytest.mark.parametrize(
    "name",
    ["apply", "_private", "nonexistent", "initial_state", "emit", "state", "_esa_state"],
)
def test_calling_a_non_command_raises_attribute_error(store, name):
    counter = store.spawn("counter", ProbeCounter)
    with pytest.raises(AttributeError, match="has no command"):
        getattr(counter, name)
    assert counter.increment(1).get(timeout=TIMEOUT) == 1


@pytest.mark.parametrize("name", ["stop", "stats", "alive", "last_seq", "name", "enqueue"])
def test_a_command_named_like_a_handle_member_is_refused_at_spawn(store_path, name):
    clashing = type("Clashing", (Counter,), {name: lambda self: "a command"})
    with Store.open(store_path) as store:
        with pytest.raises(TypeError, match=rf"\({name}\); rename them"):
            store.spawn("clash", clashing)
        assert store.spawn("counter", Counter).increment(1).get(timeout=TIMEOUT) == 1
    assert not (store_path / "actors" / "clash").exists()


def test_emit_outside_a_command_raises_runtime_error():
    with pytest.raises(RuntimeError, match="only be called from a command"):
        Counter().emit(Incremented(1))


@pytest.mark.parametrize(
    "name",
    ["../x", "/", "a/b", "", "x" * 200, "a\x00b", ".hidden", "..", "a..b", "-x", "é", 7, None],
    ids=repr,
)
def test_unsafe_names_raise_invalid_name_and_create_nothing(store_path, name):
    with Store.open(store_path) as store, pytest.raises(InvalidName):
        store.spawn(name, Counter)
    actors = store_path / "actors"
    assert not actors.exists() or list(actors.iterdir()) == []
    assert sorted(p.name for p in store_path.parent.iterdir()) == ["store"]


@pytest.mark.parametrize("name", ["a", "9", "counter-1", "A.b_c", "x" * 128])
def test_safe_names_work_and_become_the_log_directory(store_path, name):
    with Store.open(store_path) as store:
        assert store.spawn(name, Counter).increment(3).get(timeout=TIMEOUT) == 3
    assert log_dir(store_path, name).is_dir()
    assert reopened_value(store_path, name) == 3


def test_spawning_a_running_name_again_returns_the_same_handle(store):
    first = store.spawn("counter", ProbeCounter)
    first.increment(2).get(timeout=TIMEOUT)
    again = store.spawn("counter", ProbeCounter)
    assert again is first
    assert again.value().get(timeout=TIMEOUT) == 2


def test_spawning_a_running_name_as_another_class_raises_invalid_name(store):
    store.spawn("counter", ProbeCounter).increment(2).get(timeout=TIMEOUT)
    with pytest.raises(InvalidName, match="running as ProbeCounter"):
        store.spawn("counter", Counter)
    assert store.spawn("counter", ProbeCounter).value().get(timeout=TIMEOUT) == 2


def test_opening_an_open_store_again_raises_store_locked(store_path):
    with Store.open(store_path):
        with pytest.raises(StoreLocked) as locked:
            Store.open(store_path)
        assert locked.value.pid == os.getpid()
    with Store.open(store_path) as store:  # the lock goes with the first handle
        assert store.spawn("counter", Counter).increment(1).get(timeout=TIMEOUT) == 1


def test_stats_count_commands_events_records_groups_and_fsyncs(store_path):
    with Store.open(store_path) as store:
        counter = store.spawn("counter", ProbeCounter)
        fresh = counter.stats()
        assert (fresh.commands, fresh.events, fresh.records, fresh.groups) == (0, 0, 0, 0)
        assert (fresh.fsyncs, fresh.largest_group, fresh.failed) == (0, 0, False)
        for by in (1, 2, 3):
            counter.increment(by).get(timeout=TIMEOUT)
        counter.add_each(1, 1).get(timeout=TIMEOUT)
        with pytest.raises(ValueError, match="positive"):
            counter.increment(0).get(timeout=TIMEOUT)
        assert counter.value().get(timeout=TIMEOUT) == 8
        stats = counter.stats()
        assert stats.commands == 6
        assert (stats.events, stats.records, stats.groups) == (5, 4, 4)
        assert stats.fsyncs == stats.groups  # fsync="always": one fsync per group write
        assert stats.largest_group == 1
        assert (stats.events_replayed, stats.records_replayed) == (0, 0)
        assert counter.last_seq == 4
    with Store.open(store_path) as store:
        counter = store.spawn("counter", ProbeCounter)
        stats = counter.stats()
        assert (stats.events_replayed, stats.records_replayed) == (5, 4)
        assert (stats.commands, stats.records) == (0, 0)
        assert counter.last_seq == 4


@pytest.mark.threads_only("stats after close are read from the in-process core")
def test_after_the_store_closes_commands_raise_actor_stopped(store_path):
    store = Store.open(store_path)
    counter = store.spawn("counter", ProbeCounter)
    counter.increment(1).get(timeout=TIMEOUT)
    store.close()
    store.close()  # safe twice
    assert not counter.alive
    with pytest.raises(ActorStopped) as stopped:
        counter.increment(1)
    assert isinstance(stopped.value, KeyspaceClosed)
    with pytest.raises(KeyspaceClosed):
        store.spawn("other", Counter)
    assert counter.stats().records == 1  # stats stay readable


def test_query_commands_return_values_and_write_nothing(store):
    counter = store.spawn("counter", ProbeCounter)
    counter.increment(7).get(timeout=TIMEOUT)
    assert [counter.value().get(timeout=TIMEOUT) for _ in range(3)] == [7, 7, 7]
    assert counter.stats().records == 1
    assert counter.last_seq == 1


class Labelled(ProbeCounter):
    def __init__(self, label: str, *, step: int = 1) -> None:
        self.label = label
        self.step = step

    def describe(self) -> tuple[str, int]:
        return self.label, self.step

    def bump(self) -> int:
        return self.add_each(self.step)


def test_constructor_arguments_pass_through_spawn(store):
    labelled = store.spawn("labelled", Labelled, "ledger", step=5)
    assert labelled.describe().get(timeout=TIMEOUT) == ("ledger", 5)
    assert labelled.bump().get(timeout=TIMEOUT) == 5
    assert labelled.bump().get(timeout=TIMEOUT) == 10
