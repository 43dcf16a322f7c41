"""TTLs on a fake clock: exact expiry for every read, and expiry recorded in the log."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from actors import KeySpace, Receipt, Store, VersionConflict
from tests.keyspace.conftest import START, FakeClock, wait_until

pytestmark = pytest.mark.usefixtures("runtime")  # each test under threads and Ray


def visible_everywhere(ks: KeySpace, key: str) -> list[bool]:
    """Whether ``key`` is visible to each kind of read, in one list."""
    return [
        ks.get(key) is not None,
        key in ks,
        key in list(ks),
        key in dict(ks.range()),
        key in dict(ks.range(reverse=True)),
        key in dict(ks.prefix(key[:1])),
        key in ks.get_many([key]),
        ks.get_entry(key) is not None,
        key in dict(ks.items()),
    ]


def test_a_key_expires_exactly_at_its_expiry_instant(ks: KeySpace, clock: FakeClock):
    ks.put("stay", 0)
    ks.put("k", "v", ttl=10.0)
    expires_at = START + 10.0
    assert ks.get_entry("k").expires_at == expires_at
    clock.set(math.nextafter(expires_at, -math.inf))
    assert visible_everywhere(ks, "k") == [True] * 9
    assert len(ks) == 2
    clock.set(expires_at)
    assert visible_everywhere(ks, "k") == [False] * 9
    assert len(ks) == 1
    assert ks.get("k", "default") == "default"
    with pytest.raises(KeyError):
        ks["k"]
    assert visible_everywhere(ks, "stay") == [True] * 9


def test_sweep_records_the_expiry_in_the_log(store_path: Path, clock: FakeClock):
    with Store.open(store_path, clock=clock) as store:
        ks = store.keyspace("ks")
        ks.put("a", 1, ttl=5.0)
        ks.put("b", 2, ttl=5.0)
        ks.put("c", 3, ttl=50.0)
        ks.put("a", 4, ttl=5.0)
        before = ks.last_seq
        assert ks.sweep() == 0
        assert ks.last_seq == before
        clock.advance(5.0)
        assert ks.sweep() == 2
        assert ks.last_seq == before + 1
        assert ks.sweep() == 0
        assert ks.last_seq == before + 1
    clock.set(START)  # before the expiry: only the log can say a and b are gone
    with Store.open(store_path, clock=clock) as store:
        ks = store.keyspace("ks")
        assert dict(ks.items()) == {"c": 3}
        assert ks.put("a", 5) == Receipt(before + 2, 1)
        assert ks.put("c", 6).version == 2


def test_a_put_over_an_expired_unswept_key_starts_at_version_one(
    store_path: Path, clock: FakeClock
):
    with Store.open(store_path, clock=clock) as store:
        ks = store.keyspace("ks")
        ks.put("k", "old", ttl=1.0)
        ks.put("k", "old2", ttl=1.0)
        clock.advance(1.0)
        before = ks.last_seq
        assert ks.put("k", "new") == Receipt(before + 1, 1)  # one record: expiry + put
        assert ks.get_entry("k").version == 1
    clock.set(START)
    with Store.open(store_path, clock=clock) as store:
        assert store.keyspace("ks").get_entry("k").version == 1
        assert store.keyspace("ks")["k"] == "new"


def test_compare_and_set_and_delete_treat_an_expired_key_as_missing(ks: KeySpace, clock: FakeClock):
    ks.put("k", 1, ttl=1.0)
    ks.put("k", 2, ttl=1.0)
    clock.advance(2.0)
    before = ks.last_seq
    assert ks.delete("k") is None
    assert ks.last_seq == before
    with pytest.raises(VersionConflict) as conflict:
        ks.put("k", 3, expect_version=2)
    assert conflict.value.actual == 0
    assert ks.put("k", 3, expect_version=0).version == 1


def test_a_batch_over_an_expired_key_starts_it_at_version_one(ks: KeySpace, clock: FakeClock):
    ks.put("k", 1, ttl=1.0)
    ks.put("k", 2, ttl=1.0)
    clock.advance(1.0)
    with ks.batch() as b:
        b.put("k", 3, expect_version=0)
        b.put("other", 1)
    assert ks.get_entry("k").version == 1
    clock.advance(100.0)
    assert ks.sweep() == 0  # the batch recorded the expiry itself


def test_a_put_without_ttl_makes_a_key_permanent(ks: KeySpace, clock: FakeClock):
    ks.put("k", 1, ttl=1.0)
    ks.put("k", 2)
    clock.advance(10.0)
    assert ks["k"] == 2
    assert len(ks) == 1
    assert ks.sweep() == 0
    assert ks.get_entry("k").expires_at is None


@pytest.mark.threads_only("it reads the key space's in-process state")
def test_the_background_sweeper_records_expiry(store_path: Path, clock: FakeClock):
    with Store.open(store_path, clock=clock, sweep_interval=0.05) as store:
        ks = store.keyspace("ks")
        ks.put("k", 1, ttl=1.0)
        ks.put("keep", 1)
        before = ks.last_seq
        clock.advance(1.0)
        assert wait_until(lambda: ks.last_seq > before), "the sweeper never ran"
        assert wait_until(lambda: not ks._state.entries.get("k"))
        assert ks.last_seq == before + 1
    clock.set(START)
    with Store.open(store_path, clock=clock) as store:
        ks = store.keyspace("ks")
        assert dict(ks.items()) == {"keep": 1}
        assert ks.put("k", 2).version == 1


@pytest.mark.threads_only("it reads the key space's in-process state")
def test_replay_gives_the_same_versions_whatever_the_clock(store_path: Path, clock: FakeClock):
    with Store.open(store_path, clock=clock, sweep_interval=3600) as store:
        ks = store.keyspace("ks")
        for round_ in range(4):
            for i in range(6):
                ks.put(f"k{i}", round_, ttl=None if i % 3 == 0 else 1.0 + i)
            ks.delete("k5")
            clock.advance(2.5)
            if round_ == 1:
                ks.sweep()
        now = clock.now
        stored = dict(ks._state.entries.items())
        visible = {key: ks.get_entry(key) for key in ks}
        last_seq = ks.last_seq
    for reopen_clock in (START + 10**9, START - 10**6, now):
        clock.set(reopen_clock)
        with Store.open(store_path, clock=clock, sweep_interval=3600) as store:
            ks = store.keyspace("ks")
            assert dict(ks._state.entries.items()) == stored
            assert ks.last_seq == last_seq
            clock.set(now)
            assert {key: ks.get_entry(key) for key in ks} == visible


@pytest.mark.threads_only("it reads the key space's in-process state")
def test_one_sweep_records_at_most_ten_thousand_keys(ks: KeySpace, clock: FakeClock):
    with ks.batch() as b:
        for i in range(10_050):
            b.put(f"k{i:05}", i, ttl=1.0)
    clock.advance(1.0)
    assert len(ks) == 0
    before = ks.last_seq
    assert ks.sweep() == 10_000
    assert ks.sweep() == 50
    assert ks.sweep() == 0
    assert ks.last_seq == before + 2
    assert len(ks._state.entries) == 0
