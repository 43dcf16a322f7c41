"""Secondary indexes: definitions, queries, unique indexes, builds, the manifest."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import msgspec
import pytest

from actors import (
    Index,
    IndexNotReady,
    InvalidInput,
    InvalidOperation,
    InvalidOption,
    InvalidValue,
    Store,
    UniqueViolation,
    VersionConflict,
    ops,
)
from tests.keyspace.conftest import TIMEOUT, FakeClock

PEOPLE = {
    "ann": {"age": 31, "city": {"name": "Oslo"}, "tags": ["a", "b"]},
    "bob": {"age": 25, "city": {"name": "Rome"}, "tags": ["b"]},
    "cy": {"age": 31, "city": {"name": "Oslo"}},
    "dee": {"name": "no age"},
}

pytestmark = pytest.mark.usefixtures("runtime")  # each test under threads and Ray


@pytest.fixture
def store(tmp_path: Path) -> Store:
    with Store.open(tmp_path / "store") as store:
        yield store


def fill(store: Store, **indexes: Index) -> Any:
    ks = store.keyspace("people", indexes=indexes)
    for key, value in PEOPLE.items():
        ks.put(key, value)
    return ks


def write_batch(ks: Any, puts: dict[str, Any]) -> None:
    with ks.batch() as batch:
        for key, value in puts.items():
            batch.put(key, value)


def test_field_index_queries_in_index_then_key_order(store: Store) -> None:
    ks = fill(store, by_age=Index(field="age"))
    by_age = ks.index("by_age")
    assert list(by_age.get(31)) == [(31, "ann", PEOPLE["ann"]), (31, "cy", PEOPLE["cy"])]
    assert list(by_age.get(99)) == []
    assert [key for _, key, _ in by_age.range()] == ["bob", "ann", "cy"]  # dee: no age
    assert [key for _, key, _ in by_age.range(26)] == ["ann", "cy"]
    assert [key for _, key, _ in by_age.range(None, 31)] == ["bob"]
    assert [key for _, key, _ in by_age.range(reverse=True)] == ["cy", "ann", "bob"]
    assert [key for _, key, _ in by_age.range(limit=2)] == ["bob", "ann"]
    assert by_age.count() == 3
    assert by_age.count(31, 32) == 2
    assert by_age.count(40) == 0


def test_dotted_multi_valued_and_key_function_indexes(store: Store) -> None:
    ks = fill(
        store,
        by_city=Index(field="city.name"),
        by_tag=Index(field="tags"),
        by_decade=Index(key=lambda v: None if "age" not in v else v["age"] // 10 * 10),
        by_pair=Index(key=lambda v: [(v.get("age", 0), tag) for tag in v.get("tags", [])]),
    )
    assert [key for _, key, _ in ks.index("by_city").get("Oslo")] == ["ann", "cy"]
    assert [(tag, key) for tag, key, _ in ks.index("by_tag").range()] == [
        ("a", "ann"),
        ("b", "ann"),
        ("b", "bob"),
    ]
    assert [(d, key) for d, key, _ in ks.index("by_decade").range()] == [
        (20, "bob"),
        (30, "ann"),
        (30, "cy"),
    ]
    assert [v for v, _, _ in ks.index("by_pair").range((30,), None)] == [(31, "a"), (31, "b")]


class Address(msgspec.Struct):
    city: str


class User(msgspec.Struct):
    name: str
    address: Address


def test_struct_values_are_indexed_by_field(tmp_path: Path) -> None:
    with Store.open(tmp_path / "s") as store:
        ks = store.keyspace(
            "users", value_type=User, indexes={"by_city": Index(field="address.city")}
        )
        ks.put("u1", User("ann", Address("Oslo")))
        ks.put("u2", User("bob", Address("Rome")))
        assert list(ks.index("by_city").get("Rome")) == [
            ("Rome", "u2", User("bob", Address("Rome")))
        ]


def test_writes_move_keys_between_index_values(store: Store) -> None:
    ks = fill(store, by_age=Index(field="age"), by_tag=Index(field="tags"))
    ks.put("ann", {"age": 26, "tags": ["c"]})
    del ks["bob"]
    ks.operate("cy", [ops.add("age", 1), ops.append("tags", "c")])
    with ks.batch() as batch:
        batch.put("eve", {"age": 26})
        batch.delete("dee")
    assert [(age, key) for age, key, _ in ks.index("by_age").range()] == [
        (26, "ann"),
        (26, "eve"),
        (32, "cy"),
    ]
    assert [(tag, key) for tag, key, _ in ks.index("by_tag").range()] == [("c", "ann"), ("c", "cy")]


def test_values_an_index_cannot_hold_are_refused_and_nothing_written(store: Store) -> None:
    ks = fill(store, by_age=Index(field="age"))
    seq = ks.last_seq
    with pytest.raises(InvalidValue, match="index 'by_age' cannot hold"):
        ks.put("x", {"age": {"years": 3}})
    with pytest.raises(InvalidValue, match="index 'by_age' cannot hold"):
        write_batch(ks, {"y": {"age": 1}, "z": {"age": [[1]]}})
    assert ks.last_seq == seq
    assert "y" not in ks
    assert ks.index("by_age").count() == 3


def test_unique_index_refuses_a_second_holder(store: Store) -> None:
    ks = store.keyspace("users", indexes={"email": Index(field="email", unique=True)})
    ks.put("u1", {"email": "a@x"})
    ks.put("u2", {"email": "b@x"})
    seq = ks.last_seq
    with pytest.raises(UniqueViolation) as caught:
        ks.put("u3", {"email": "a@x"})
    assert (caught.value.index, caught.value.value, caught.value.holder) == ("email", "a@x", "u1")
    assert isinstance(caught.value, VersionConflict)
    with pytest.raises(UniqueViolation):  # two new holders in one batch
        write_batch(ks, {"u3": {"email": "c@x"}, "u4": {"email": "c@x"}})
    with pytest.raises(UniqueViolation):
        ks.operate("u2", [ops.set("email", "a@x")])
    assert ks.last_seq == seq
    ks.put("u1", {"email": "a@x", "name": "same holder"})  # rewriting its own value is fine
    with ks.batch() as batch:  # a swap inside one batch: unique in the final state
        batch.put("u1", {"email": "b@x"})
        batch.put("u2", {"email": "a@x"})
    assert [(v, k) for v, k, _ in ks.index("email").range()] == [("a@x", "u2"), ("b@x", "u1")]
    del ks["u2"]
    ks.put("u5", {"email": "a@x"})  # freed by the delete


def test_unique_holders_in_one_open_group_are_checked(store: Store) -> None:
    ks = store.keyspace("users", indexes={"email": Index(field="email", unique=True)})
    futures = [ks.put_async(f"u{i}", {"email": "same"}) for i in range(20)]
    outcomes = []
    for future in futures:
        try:
            future.get(timeout=TIMEOUT)
            outcomes.append("ok")
        except UniqueViolation:
            outcomes.append("refused")
    assert outcomes.count("ok") == 1
    assert [k for _, k, _ in ks.index("email").get("same")] == [f"u{outcomes.index('ok')}"]


def test_expired_keys_leave_the_index_and_free_unique_values(tmp_path: Path) -> None:
    clock = FakeClock()
    with Store.open(tmp_path / "s", clock=clock, sweep_interval=3600) as store:
        ks = store.keyspace(
            "s", indexes={"by_n": Index(field="n"), "u": Index(field="n", unique=True)}
        )
        ks.put("a", {"n": 1}, ttl=5)
        ks.put("b", {"n": 2})
        clock.advance(6)
        assert [k for _, k, _ in ks.index("by_n").range()] == ["b"]
        assert ks.index("by_n").count() == 1
        ks.put("c", {"n": 1})  # a's value expired with it
        assert ks.sweep() == 1
        assert [k for _, k, _ in ks.index("u").range()] == ["c", "b"]


@pytest.mark.threads_only("its key function waits on events of the test's process")
def test_create_index_on_a_populated_keyspace_builds_while_writes_go_on(store: Store) -> None:
    ks = store.keyspace("big")
    with ks.batch() as batch:
        for i in range(2000):
            batch.put(f"k{i:05}", {"n": i % 7})
    started, release = threading.Event(), threading.Event()

    def slow(value: Any) -> Any:
        if threading.current_thread().name.startswith("actorkv-index"):  # the build only
            started.set()
            release.wait(TIMEOUT)
        return value["n"]

    ks.create_index("by_n", Index(key=slow))  # returns while the build waits in slow()
    assert started.wait(TIMEOUT)
    with pytest.raises(IndexNotReady, match="still being built"):
        ks.index("by_n", wait=False).count()
    with pytest.raises(IndexNotReady):
        list(ks.index("by_n").range(wait=False))
    ks.put("k00000", {"n": 100})  # writes go on meanwhile: backlogged, then applied
    del ks["k00001"]
    ks.put("new", {"n": 3})
    release.set()
    assert ks.index("by_n").count() == 2000  # waits for the build
    assert [k for _, k, _ in ks.index("by_n").get(100)] == ["k00000"]
    expected = {key for key, value in ks.items() if value["n"] == 3}
    assert {k for _, k, _ in ks.index("by_n").get(3)} == expected
    assert "new" in expected


def test_a_build_that_meets_an_unindexable_value_reports_it(store: Store) -> None:
    ks = store.keyspace("k")
    ks.put("a", {"n": 1})
    ks.put("b", {"n": {"bad": 1}})
    ks.create_index("by_n", Index(field="n"))
    with pytest.raises(InvalidOperation, match="could not be built"):
        ks.index("by_n").count()
    assert ks.drop_index("by_n")


def test_unique_index_over_duplicates_is_not_created(store: Store) -> None:
    ks = store.keyspace("k")
    ks.put("a", {"n": 1})
    ks.put("b", {"n": 1})
    with pytest.raises(UniqueViolation):
        ks.create_index("u", Index(field="n", unique=True))
    assert ks.indexes() == {}
    with pytest.raises(InvalidInput, match="no index 'u'"):
        ks.index("u")


def test_definitions_live_in_the_manifest(tmp_path: Path) -> None:
    def parity(value: Any) -> int:
        return int(value["n"] % 2)

    path = tmp_path / "s"
    with Store.open(path) as store:
        ks = store.keyspace("k", indexes={"by_n": Index(field="n")})
        ks.put("a", {"n": 1})
        ks.create_index("parity", Index(key=parity))
        ks.create_index("late", Index(field="n", unique=True))
    with Store.open(path) as store:
        with pytest.raises(InvalidOption, match=r"key function .*parity"):
            store.keyspace("k")
        with pytest.raises(InvalidOption, match="drop_index it first"):
            store.keyspace("k", indexes={"parity": Index(key=parity), "by_n": Index(field="m")})
        ks = store.keyspace("k", indexes={"parity": Index(key=parity)})
        assert sorted(ks.indexes()) == ["by_n", "late", "parity"]
        assert list(ks.index("late").get(1)) == [(1, "a", {"n": 1})]
        assert list(ks.index("parity").get(1)) == [(1, "a", {"n": 1})]
        assert ks.drop_index("parity")
        assert not ks.drop_index("parity")
        with pytest.raises(InvalidOperation, match="already has an index named 'by_n'"):
            ks.create_index("by_n", Index(field="x"))
        query = ks.index("late")
        ks.drop_index("late")
        with pytest.raises(InvalidOperation, match="was dropped"):
            query.count()
    with Store.open(path) as store:
        assert sorted(store.keyspace("k").indexes()) == ["by_n"]


def test_indexes_come_back_after_a_snapshot_and_replay(tmp_path: Path) -> None:
    path = tmp_path / "s"
    with Store.open(path) as store:
        ks = store.keyspace("k", indexes={"by_n": Index(field="n")})
        for i in range(10):
            ks.put(f"k{i}", {"n": i % 3})
        ks.snapshot()
        ks.put("k0", {"n": 9})
        del ks["k1"]
    with Store.open(path) as store:
        ks = store.keyspace("k")
        assert [(n, k) for n, k, _ in ks.index("by_n").range(1, None)] == [
            (1, "k4"),
            (1, "k7"),
            (2, "k2"),
            (2, "k5"),
            (2, "k8"),
            (9, "k0"),
        ]


def test_bad_definitions_and_queries(store: Store) -> None:
    with pytest.raises(InvalidOption, match="exactly one"):
        Index()
    with pytest.raises(InvalidOption, match="exactly one"):
        Index(field="a", key=len)
    with pytest.raises(InvalidOption, match="function"):
        Index(key="age")  # type: ignore[arg-type]
    with pytest.raises(InvalidOption, match="empty name"):
        Index(field="a..b")
    with pytest.raises(InvalidOption, match=r"actors\.Index"):
        store.keyspace("k", indexes={"x": "age"})  # type: ignore[dict-item]
    ks = store.keyspace("k", indexes={"by_n": Index(field="n")})
    with pytest.raises(InvalidOption, match="open with other indexes"):
        store.keyspace("k", indexes={"by_n": Index(field="m")})
    with pytest.raises(InvalidInput, match="index 'by_n'"):
        ks.index("by_n").get({"a": 1})
    with pytest.raises(InvalidOption, match="limit"):
        ks.index("by_n").range(limit=-1)
    with pytest.raises(InvalidInput, match="index name"):
        ks.create_index("", Index(field="n"))
    with pytest.raises(InvalidOption, match=r"actors\.Index"):
        ks.create_index("x", "n")  # type: ignore[arg-type]


def test_mixed_index_value_types_sort_in_tuple_order(store: Store) -> None:
    ks = store.keyspace("k", indexes={"v": Index(field="v")})
    for key, value in {"i": 2, "f": 1.5, "s": "a", "b": b"a", "t": True, "n": -1}.items():
        ks.put(key, {"v": value})
    assert [k for _, k, _ in ks.index("v").range()] == ["b", "s", "n", "i", "f", "t"]


def test_a_field_name_holding_a_dot_survives_a_reopen(tmp_path: Path) -> None:
    path = tmp_path / "s"
    with Store.open(path) as store:
        ks = store.keyspace("k", indexes={"dotted": Index(field=("a.b",))})
        ks.put("x", {"a.b": 1, "a": {"b": 2}})
        assert [v for v, _, _ in ks.index("dotted").range()] == [1]
    with Store.open(path) as store:  # the manifest brings the field index back as it was
        ks = store.keyspace("k")
        assert ks.indexes() == {"dotted": Index(field=("a.b",))}
        assert [v for v, _, _ in ks.index("dotted").range()] == [1]
