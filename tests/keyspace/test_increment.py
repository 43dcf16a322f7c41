"""ks.increment and batch.increment: atomic counters run in the key space's actor."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from actors import InvalidValue, Store, VersionConflict
from tests.keyspace.conftest import FakeClock

pytestmark = pytest.mark.usefixtures("runtime")  # each test under threads and Ray


def test_sixteen_threads_incrementing_one_key_lose_no_update(tmp_path: Path) -> None:
    with Store.open(tmp_path, fsync="never") as store:
        ks = store.keyspace("k")
        results: list[int] = []
        lock = threading.Lock()

        def count() -> None:
            mine = [ks.increment("hits") for _ in range(300)]
            with lock:
                results.extend(mine)

        threads = [threading.Thread(target=count) for _ in range(16)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert ks.get("hits") == 16 * 300
        assert sorted(results) == list(range(1, 16 * 300 + 1))  # each total returned once
        assert ks.get_entry("hits").version == 16 * 300
    with Store.open(tmp_path) as store:
        assert store.keyspace("k").get("hits") == 16 * 300


def test_increment_counts_from_zero_by_any_int_and_returns_the_new_value(tmp_path: Path) -> None:
    with Store.open(tmp_path) as store:
        ks = store.keyspace("k")
        assert ks.increment("n") == 1
        assert ks.increment("n", 10) == 11
        assert ks.increment("n", -20) == -9
        assert ks.increment("big", 2**63 - 1) == 2**63 - 1
        assert ks.get("n") == -9


@pytest.mark.parametrize("held", ["text", 1.5, True, [1], {"a": 1}, None])
def test_increment_of_a_key_holding_something_else_is_refused_and_writes_nothing(
    tmp_path: Path, held: object
) -> None:
    with Store.open(tmp_path) as store:
        ks = store.keyspace("k")
        ks.put("x", held)
        last = ks.last_seq
        with pytest.raises(InvalidValue, match="not an int"):
            ks.increment("x")
        assert ks.last_seq == last
        assert ks.get("x") == held


@pytest.mark.parametrize("by", [1.0, "1", True, None])
def test_increment_by_a_non_int_is_refused_before_anything_is_sent(
    tmp_path: Path, by: object
) -> None:
    with Store.open(tmp_path) as store:
        ks = store.keyspace("k")
        with pytest.raises(InvalidValue, match="must be an int"):
            ks.increment("x", by)  # type: ignore[arg-type]
        assert ks.last_seq == 0


def test_a_sum_beyond_64_bits_is_refused_and_the_counter_keeps_its_value(tmp_path: Path) -> None:
    with Store.open(tmp_path) as store:
        ks = store.keyspace("k")
        ks.put("x", 2**64 - 1)
        with pytest.raises(InvalidValue, match="64-bit"):
            ks.increment("x")
        assert ks.get("x") == 2**64 - 1
        ks.increment("x", -1)
        assert ks.get("x") == 2**64 - 2


def test_a_value_type_without_ints_refuses_increments(tmp_path: Path) -> None:
    with Store.open(tmp_path) as store:
        ks = store.keyspace("k", value_type=str)
        with pytest.raises(InvalidValue):
            ks.increment("x")
        assert ks.last_seq == 0
        typed = store.keyspace("n", value_type=int)
        assert typed.increment("x", 3) == 3
        assert typed.get("x") == 3


def test_increment_keeps_the_ttl_and_restarts_over_an_expired_key(tmp_path: Path) -> None:
    clock = FakeClock(1_000.0)
    with Store.open(tmp_path, clock=clock, sweep_interval=3600) as store:
        ks = store.keyspace("k")
        ks.put("x", 5, ttl=10)
        assert ks.increment("x") == 6
        assert ks.get_entry("x").expires_at == 1_010.0
        clock.now = 1_011.0
        assert ks.get("x") is None
        assert ks.increment("x") == 1  # the expired count does not carry on
        entry = ks.get_entry("x")
        assert (entry.value, entry.version, entry.expires_at) == (1, 1, None)
    with Store.open(tmp_path, clock=clock) as store:
        entry = store.keyspace("k").get_entry("x")
        assert (entry.value, entry.version, entry.expires_at) == (1, 1, None)


def test_batch_increments_see_the_batch_s_own_earlier_writes(tmp_path: Path) -> None:
    with Store.open(tmp_path) as store:
        ks = store.keyspace("k")
        ks.put("a", 10)
        with ks.batch() as batch:
            batch.increment("a", 5)
            batch.increment("a")
            batch.put("b", 100)
            batch.increment("b", -1)
            batch.delete("a")
            batch.increment("a", 7)
            batch.increment("c")
        assert (ks.get("a"), ks.get("b"), ks.get("c")) == (7, 99, 1)
        assert batch.receipt is not None
        assert ks.last_seq == 2  # one record for the whole batch
    with Store.open(tmp_path) as store:
        ks = store.keyspace("k")
        assert (ks.get("a"), ks.get("b"), ks.get("c")) == (7, 99, 1)
        assert ks.get_entry("a").version == 1  # recreated after the delete


def test_a_batch_whose_increment_fails_writes_nothing(tmp_path: Path) -> None:
    with Store.open(tmp_path) as store:
        ks = store.keyspace("k")
        ks.put("s", "text")

        def bad_increment() -> None:
            with ks.batch() as batch:
                batch.put("a", 1)
                batch.increment("s")

        def bad_version() -> None:
            with ks.batch() as batch:
                batch.increment("n")
                batch.put("s", "other", expect_version=5)

        with pytest.raises(InvalidValue):
            bad_increment()
        assert ks.get("a") is None
        assert ks.last_seq == 1
        with pytest.raises(VersionConflict):
            bad_version()
        assert ks.get("n") is None
        assert ks.last_seq == 1
