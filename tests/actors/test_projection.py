"""Projections apply every change of their sources exactly once, across reopens and errors."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import msgspec
import pytest

from actors import Change, InvalidInput, Projection, Store

pytestmark = pytest.mark.usefixtures("runtime")

TIMEOUT = 30


class Counted(msgspec.Struct, tag="counted", frozen=True):
    source: str
    key: str
    amount: int


class Totals(Projection[dict[str, int]]):
    """Per source and key prefix: the sum of the values put (deletes subtract nothing)."""

    def initial_state(self) -> dict[str, int]:
        return {}

    def apply(self, state: dict[str, int], event: Counted) -> dict[str, int]:
        name = f"{event.source}:{event.key[:1]}"
        return {**state, name: state.get(name, 0) + event.amount}

    def project(self, source: str, change: Change) -> None:
        if change.op == "put":
            self.emit(Counted(source, change.key, change.value))


def wait_for(handle: Any, expected: dict[str, int]) -> dict[str, int]:
    deadline = time.monotonic() + TIMEOUT
    while time.monotonic() < deadline:
        state: dict[str, int] = handle.durable_state
        if state == expected:
            return state
        time.sleep(0.02)
    return handle.durable_state  # type: ignore[no-any-return]


def write(ks: Any, start: int, count: int) -> None:
    for i in range(start, start + count):
        ks.put(f"{'ab'[i % 2]}{i}", 1)
    with ks.batch() as batch:  # one record of 15 changes (indexes 0..14)
        for i in range(start, start + 5):
            batch.put(f"c{i}", 2)
            batch.delete(f"c{i}")
            batch.put(f"c{i}", 3)


def test_a_projection_counts_every_change_once_across_reopens(tmp_path: Path) -> None:
    with Store.open(tmp_path, fsync="never") as store:
        write(store.keyspace("orders"), 0, 200)
        totals = store.projection("totals", Totals, sources=["orders"])
        expected = {"orders:a": 100, "orders:b": 100, "orders:c": 25}
        assert wait_for(totals, expected) == expected
    for round_number in range(1, 4):
        with Store.open(tmp_path, fsync="never") as store:
            orders = store.keyspace("orders")
            totals = store.projection("totals", Totals, sources=["orders"])
            write(orders, round_number * 1_000, 100)
            expected = {
                "orders:a": 100 + 50 * round_number,
                "orders:b": 100 + 50 * round_number,
                "orders:c": 25 * (round_number + 1),
            }
            assert wait_for(totals, expected) == expected
            assert totals.blocking.positions() == {"orders": (orders.last_seq, 14)}


def test_a_projection_resumes_from_its_snapshot_with_its_positions(tmp_path: Path) -> None:
    with Store.open(tmp_path, fsync="never") as store:
        write(store.keyspace("orders"), 0, 100)
        totals = store.projection("totals", Totals, sources=["orders"])
        expected = {"orders:a": 50, "orders:b": 50, "orders:c": 25}
        assert wait_for(totals, expected) == expected
        totals.snapshot().get(timeout=TIMEOUT)
    with Store.open(tmp_path, fsync="never") as store:
        orders = store.keyspace("orders")
        totals = store.projection("totals", Totals, sources=["orders"])
        assert totals.stats().records_replayed == 0  # state and positions from the snapshot
        write(orders, 1_000, 10)
        expected = {"orders:a": 55, "orders:b": 55, "orders:c": 50}
        assert wait_for(totals, expected) == expected


class FailingTotals(Totals):
    """Totals that cannot project ``b101`` while the file ``flag`` exists."""

    def __init__(self, flag: str) -> None:
        super().__init__()
        self.flag = Path(flag)

    def project(self, source: str, change: Change) -> None:
        if change.key == "b101" and self.flag.exists():
            message = f"cannot project {change.key}"
            raise RuntimeError(message)
        super().project(source, change)


def test_a_failed_projection_writes_nothing_of_its_batch_and_resumes_exactly(
    tmp_path: Path,
) -> None:
    flag = tmp_path / "fail"
    flag.touch()
    data = tmp_path / "store"
    with Store.open(data, fsync="never") as store:
        orders = store.keyspace("orders")
        write(orders, 0, 200)
        totals = store.projection("totals", FailingTotals, str(flag), sources=["orders"])
        feeder = store._feeders["totals"]
        deadline = time.monotonic() + TIMEOUT
        while feeder.failure is None and time.monotonic() < deadline:
            time.sleep(0.02)
        assert isinstance(feeder.failure, RuntimeError)
        partial = totals.durable_state
        assert sum(partial.values()) < 225  # stopped before the end
    flag.unlink()
    with Store.open(data, fsync="never") as store:
        totals = store.projection("totals", FailingTotals, str(flag), sources=["orders"])
        expected = {"orders:a": 100, "orders:b": 100, "orders:c": 25}
        assert wait_for(totals, expected) == expected


def test_a_projection_of_two_sources_keeps_a_position_for_each(tmp_path: Path) -> None:
    with Store.open(tmp_path, fsync="never") as store:
        orders, refunds = store.keyspace("orders"), store.keyspace("refunds")
        write(orders, 0, 40)
        write(refunds, 0, 10)
        totals = store.projection("totals", Totals, sources=["orders", "refunds"])
        expected = {
            "orders:a": 20,
            "orders:b": 20,
            "orders:c": 25,
            "refunds:a": 5,
            "refunds:b": 5,
            "refunds:c": 25,
        }
        assert wait_for(totals, expected) == expected
        assert totals.blocking.positions() == {
            "orders": (orders.last_seq, 14),
            "refunds": (refunds.last_seq, 14),
        }


def test_bad_projections_are_refused(tmp_path: Path) -> None:
    class NoProject(Projection[int]):
        def initial_state(self) -> int:
            return 0

        def apply(self, state: int, event: Counted) -> int:
            return state

    with Store.open(tmp_path) as store:
        with pytest.raises(TypeError, match="project"):
            store.projection("p", NoProject, sources=["orders"])
        with pytest.raises(TypeError, match="Projection subclass"):
            store.projection("p", int, sources=["orders"])  # type: ignore[type-var]
        for sources in ([], ["a", "a"]):
            with pytest.raises(InvalidInput):
                store.projection("p", Totals, sources=sources)
        totals = store.projection("totals", Totals, sources=["orders"])
        with pytest.raises(AttributeError):
            totals.project  # noqa: B018 - a hook the framework calls, not a command


class Summed(msgspec.Struct, tag="summed", frozen=True, array_like=True):
    amount: int


class Sum(Projection[int]):
    """Events encoded as arrays: its positions are encoded alike."""

    def initial_state(self) -> int:
        return 0

    def apply(self, state: int, event: Summed) -> int:
        return state + event.amount

    def project(self, source: str, change: Change) -> None:
        if change.op == "put":
            self.emit(Summed(change.value))


def wait_for_sum(handle: Any, expected: int) -> int:
    deadline = time.monotonic() + TIMEOUT
    while time.monotonic() < deadline and handle.durable_state != expected:
        time.sleep(0.02)
    return handle.durable_state  # type: ignore[no-any-return]


def test_retention_keeps_what_a_stopped_projection_has_not_applied(tmp_path: Path) -> None:
    options: dict[str, Any] = {"retention": 0, "segment_bytes": 4096}
    with Store.open(tmp_path, **options) as store:
        orders = store.keyspace("orders")
        total = store.projection("sum", Sum, sources=["orders"])
        orders.put("k", 1)
        assert wait_for_sum(total, 1) == 1
    with Store.open(tmp_path, **options) as store:  # the projection is not running
        orders = store.keyspace("orders")
        for _ in range(500):
            orders.put("k", 1)
        orders.snapshot()  # and retention=0 drops what it may
        assert orders.stats().history_floor <= 2  # not what the projection still needs
    with Store.open(tmp_path, **options) as store:
        total = store.projection("sum", Sum, sources=["orders"])
        assert wait_for_sum(total, 501) == 501
        store.keyspace("orders").compact()
