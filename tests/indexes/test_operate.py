"""ks.operate: several record operations in one atomic command, results per operation."""

from __future__ import annotations

import threading
from pathlib import Path

import msgspec
import pytest

from actors import InvalidInput, InvalidValue, Store, VersionConflict, ops
from tests.keyspace.conftest import FakeClock

pytestmark = pytest.mark.usefixtures("runtime")  # each test under threads and Ray


@pytest.fixture
def store(tmp_path: Path) -> Store:
    with Store.open(tmp_path / "store") as store:
        yield store


def test_operations_run_in_order_and_return_one_result_each(store: Store) -> None:
    ks = store.keyspace("users")
    results = ks.operate(
        "u1",
        [
            ops.add("visits", 1),
            ops.set("last.page", "/home"),
            ops.append("tags", "new"),
            ops.read("visits"),
            ops.add("visits", 2.5),
            ops.remove("last.page"),
            ops.read("last"),
        ],
    )
    assert results == [1, None, 1, 1, 3.5, "/home", {}]
    assert ks["u1"] == {"visits": 3.5, "last": {}, "tags": ["new"]}
    assert ks.get_entry("u1").version == 1
    assert ks.operate("u1", [ops.append("tags", "again"), ops.read(("tags",))]) == [
        2,
        ["new", "again"],
    ]
    assert ks.get_entry("u1").version == 2


def test_a_failing_operation_writes_nothing(store: Store) -> None:
    ks = store.keyspace("users")
    ks.put("u1", {"n": 1, "name": "ann", "tags": "not a list"})
    before = (ks.get_entry("u1"), ks.last_seq)
    cases = [
        ([ops.set("x", 1), ops.remove("missing")], "no field 'missing'"),
        ([ops.add("n", 1), ops.read("a.b")], "no field 'a.b'"),
        ([ops.add("name", 1)], "not a number"),
        ([ops.append("tags", 1)], "not a list"),
        ([ops.set("name.first", "a")], "'name' holds a str, not a map"),
    ]
    for operations, message in cases:
        with pytest.raises(InvalidValue, match=message):
            ks.operate("u1", operations)
        assert (ks.get_entry("u1"), ks.last_seq) == before


def test_only_reads_write_nothing_and_a_missing_key_starts_empty(store: Store) -> None:
    ks = store.keyspace("users")
    with pytest.raises(InvalidValue, match="no field 'x'"):
        ks.operate("nobody", [ops.read("x")])
    assert "nobody" not in ks
    ks.put("u1", {"x": [1]})
    seq = ks.last_seq
    assert ks.operate("u1", [ops.read("x")]) == [[1]]
    assert ks.last_seq == seq


class User(msgspec.Struct):
    """At module level: a value type must be importable where the key space runs."""

    name: str
    visits: int = 0


def test_non_map_values_types_and_sizes_are_refused(tmp_path: Path) -> None:
    with Store.open(tmp_path / "s") as store:
        ks = store.keyspace("plain")
        ks.put("n", 5)
        with pytest.raises(InvalidValue, match="holds a int"):
            ks.operate("n", [ops.add("x", 1)])
        typed = store.keyspace("typed", value_type=User)
        typed.put("u", User("ann"))
        assert typed.operate("u", [ops.add("visits", 2)]) == [2]
        assert typed["u"] == User("ann", 2)
        with pytest.raises(InvalidValue, match="value_type"):
            typed.operate("u", [ops.set("visits", "many")])
        with pytest.raises(InvalidValue, match="value_type"):
            typed.operate("u", [ops.remove("name")])
        assert typed["u"] == User("ann", 2)
        small = store.keyspace("small", max_value_bytes=16)
        with pytest.raises(InvalidValue, match="max_value_bytes"):
            small.operate("k", [ops.set("x", "y" * 20)])
        with pytest.raises(InvalidValue, match=r"64-bit|encode"):
            ks.operate("big", [ops.add("n", 2**64), ops.add("n", 2**64)])
        assert "big" not in ks


def test_bad_operations_are_refused_before_sending(store: Store) -> None:
    ks = store.keyspace("users")
    with pytest.raises(InvalidInput, match=r"made by actors\.ops"):
        ks.operate("u", ["set x"])  # type: ignore[list-item]
    with pytest.raises(InvalidInput, match="at least one"):
        ks.operate("u", [])
    with pytest.raises(InvalidInput, match="empty name"):
        ops.set("a..b", 1)
    with pytest.raises(InvalidInput, match="dotted str"):
        ops.read(3)  # type: ignore[arg-type]
    with pytest.raises(InvalidValue, match="int or a float"):
        ops.add("n", "1")  # type: ignore[arg-type]
    assert ks.last_seq == 0


def test_expect_version_and_expiry(tmp_path: Path) -> None:
    clock = FakeClock()
    with Store.open(tmp_path / "s", clock=clock, sweep_interval=3600) as store:
        ks = store.keyspace("users")
        ks.put("u", {"n": 1}, ttl=10)
        with pytest.raises(VersionConflict):
            ks.operate("u", [ops.add("n", 1)], expect_version=5)
        assert ks.operate("u", [ops.add("n", 1)], expect_version=1) == [2]
        assert ks.get_entry("u").expires_at == clock.now + 10  # the expiry is kept
        clock.advance(11)
        assert ks.operate("u", [ops.add("n", 1)]) == [1]  # expired: starts again from {}
        entry = ks.get_entry("u")
        assert (entry.value, entry.version, entry.expires_at) == ({"n": 1}, 1, None)


def test_operations_from_many_threads_lose_no_update(store: Store) -> None:
    ks = store.keyspace("counters")
    rounds, threads = 50, 4

    def work(name: str) -> None:
        for _ in range(rounds):
            ks.operate("c", [ops.add("total", 1), ops.append("by", name)])

    workers = [threading.Thread(target=work, args=(f"t{i}",)) for i in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    value = ks["c"]
    assert value["total"] == rounds * threads
    assert sorted(value["by"]) == sorted(f"t{i}" for i in range(threads) for _ in range(rounds))


def test_operate_survives_a_reopen(tmp_path: Path) -> None:
    with Store.open(tmp_path / "s") as store:
        store.keyspace("k").operate("a", [ops.set("x.y", [1, 2])])
    with Store.open(tmp_path / "s") as store:
        assert store.keyspace("k")["a"] == {"x": {"y": [1, 2]}}
