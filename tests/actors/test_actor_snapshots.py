"""Snapshots of custom actors: bounded replay, states that need help to encode, schemas."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import msgspec
import pytest

from actors import EventSourcedActor, InvalidOperation, Store
from tests.actors.conftest import TIMEOUT, Incremented, ProbeCounter

pytestmark = pytest.mark.usefixtures("runtime")


@pytest.mark.threads_only("200,000 commands, each a round trip under Ray (minutes)")
def test_a_counter_with_200k_events_reopens_replaying_only_what_followed_its_snapshot(
    tmp_path: Path,
):
    options = {"fsync": "never", "recovery_budget": None}
    with Store.open(tmp_path / "store", **options) as store:
        counter = store.spawn("counter", ProbeCounter)
        for _ in range(20):
            [f.get(timeout=TIMEOUT) for f in [counter.increment(1) for _ in range(10_000)]]
        info = counter.snapshot().get(timeout=TIMEOUT)
        assert (info.seq, info.items) == (200_000, 1)
        for _ in range(7):
            counter.blocking.increment(2)
    with Store.open(tmp_path / "store", **options) as store:
        counter = store.spawn("counter", ProbeCounter)
        stats = counter.stats()
        assert (stats.snapshot_seq, stats.events_replayed, stats.records_replayed) == (
            200_000,
            7,
            7,
        )
        assert counter.blocking.value() == 200_014
        assert counter.durable_state == 200_014


class Tags(msgspec.Struct, frozen=True):
    """A state msgspec encodes as it is (a Struct): snapshotted without help."""

    names: tuple[str, ...] = ()


class Tagged(msgspec.Struct, tag=True, frozen=True):
    name: str


class Tagger(EventSourcedActor[Tags]):
    def initial_state(self) -> Tags:
        return Tags()

    def apply(self, state: Tags, event: Tagged) -> Tags:
        return Tags((*state.names, event.name))

    def tag(self, name: str) -> int:
        self.emit(Tagged(name))
        return len(self.state.names)

    def names(self) -> tuple[str, ...]:
        return self.state.names


def test_a_struct_state_is_snapshotted_and_restored_as_its_type(tmp_path: Path):
    with Store.open(tmp_path / "store", recovery_budget=None) as store:
        tagger = store.spawn("tags", Tagger)
        for name in "abc":
            tagger.blocking.tag(name)
        tagger.snapshot().get(timeout=TIMEOUT)
        tagger.blocking.tag("d")
    with Store.open(tmp_path / "store") as store:
        tagger = store.spawn("tags", Tagger)
        assert tagger.stats().records_replayed == 1
        assert tagger.durable_state == Tags(("a", "b", "c", "d"))


class Opaque:
    """A state msgspec cannot encode."""

    def __init__(self, total: int) -> None:
        self.total = total


class OpaqueCounter(EventSourcedActor[Opaque]):
    def initial_state(self) -> Opaque:
        return Opaque(0)

    def apply(self, state: Opaque, event: Incremented) -> Opaque:
        return Opaque(state.total + event.by)

    def add(self, by: int) -> int:
        self.emit(Incremented(by))
        return self.state.total


class HelpedCounter(OpaqueCounter):
    """The same state, with the two hooks that make it snapshot."""

    def snapshot_state(self, state: Opaque) -> Any:
        return {"total": state.total}

    def restore_state(self, data: Any) -> Opaque:
        return Opaque(data["total"])


@pytest.mark.threads_only("captures the log messages of the actor's process")
def test_a_state_that_cannot_be_encoded_gets_a_clear_error_and_writes_go_on(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
):
    with Store.open(tmp_path / "store", recovery_budget=0.0001) as store:
        counter = store.spawn("opaque", OpaqueCounter)
        with caplog.at_level(logging.ERROR, logger="actorkv.actors"):
            for _ in range(300):  # far past the budget: an automatic snapshot is tried
                counter.blocking.add(1)
        said = [r for r in caplog.records if "no automatic snapshots" in r.getMessage()]
        assert len(said) == 1  # said once; no attempt after it
        assert "snapshot_state" in said[0].getMessage()
        with pytest.raises(InvalidOperation, match="snapshot_state"):
            counter.snapshot().get(timeout=TIMEOUT)  # asked for: the caller hears it
        assert counter.stats().snapshot_seq == 0
        assert counter.blocking.add(1) == 301
    with Store.open(tmp_path / "store") as store:
        assert store.spawn("opaque", OpaqueCounter).blocking.add(1) == 302


def test_snapshot_state_and_restore_state_let_any_state_snapshot(tmp_path: Path):
    with Store.open(tmp_path / "store", recovery_budget=None) as store:
        counter = store.spawn("helped", HelpedCounter)
        for _ in range(10):
            counter.blocking.add(3)
        assert counter.snapshot().get(timeout=TIMEOUT).seq == 10
        counter.blocking.add(1)
    with Store.open(tmp_path / "store") as store:
        counter = store.spawn("helped", HelpedCounter)
        assert counter.stats().records_replayed == 1
        assert counter.blocking.add(0 + 1) == 32


class CounterV2(ProbeCounter):
    schema_version = 2  # the state's shape changed: old snapshots are not trusted


def test_a_snapshot_of_another_schema_is_ignored_in_favour_of_the_log(tmp_path: Path):
    with Store.open(tmp_path / "store", recovery_budget=None) as store:
        counter = store.spawn("counter", ProbeCounter)
        for _ in range(5):
            counter.blocking.increment(1)
        counter.snapshot().get(timeout=TIMEOUT)
    with Store.open(tmp_path / "store") as store:
        counter = store.spawn("counter", CounterV2)
        stats = counter.stats()
        assert (stats.snapshot_seq, stats.records_replayed) == (0, 5)
        assert counter.blocking.value() == 5
