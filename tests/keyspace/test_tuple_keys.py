"""Key spaces with tuple keys: tuple order, prefixes, every read and write path, reopen."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from actors import Index, InvalidKey, InvalidOption, Store, ops
from storage.tuplekey import pack
from tests.keyspace.conftest import TIMEOUT
from tests.storage.test_tuplekey import compare_tuples

KEYS = [
    ("user", 4),
    ("user", 42),
    ("user", 42, "a"),
    ("user", 42, "a", None),
    ("user", 420),
    ("user", -1),
    ("user", 1.5),
    ("user/b",),
    ("user", b"raw"),
    ("user", ("nested", 1)),
    (None,),
    (True,),
    (2**80,),
]
ORDERED = sorted(KEYS, key=functools.cmp_to_key(compare_tuples))

pytestmark = pytest.mark.usefixtures("runtime")  # each test under threads and Ray


@pytest.fixture
def store(tmp_path: Path) -> Store:
    with Store.open(tmp_path / "store") as store:
        yield store


def fill(store: Store) -> Any:
    ks = store.keyspace("t", key_type=tuple)
    for number, key in enumerate(KEYS):
        ks.put(key, number)
    return ks


def test_keys_come_back_in_tuple_order(store: Store) -> None:
    ks = fill(store)
    assert list(ks) == ORDERED
    assert [key for key, _ in ks.items()] == ORDERED
    assert list(ks.values()) == [KEYS.index(key) for key in ORDERED]
    assert len(ks) == len(KEYS)
    assert [key for key, _ in ks.range(reverse=True)] == ORDERED[::-1]


def test_prefix_is_exactly_the_tuples_that_extend_it(store: Store) -> None:
    ks = fill(store)
    assert [key for key, _ in ks.prefix(("user", 42))] == [
        ("user", 42),
        ("user", 42, "a"),
        ("user", 42, "a", None),
    ]
    # ("user/b",) and ("user", 420) share bytes of a string prefix, never a tuple prefix.
    assert ("user/b",) not in [key for key, _ in ks.prefix(("user",))]
    assert len(list(ks.prefix(("user",)))) == 9
    assert [key for key, _ in ks.prefix(("user", 42), reverse=True, limit=1)] == [
        ("user", 42, "a", None)
    ]
    assert list(ks.prefix(())) == list(ks.items())


def test_range_bounds_are_tuples(store: Store) -> None:
    ks = fill(store)
    start, stop = ("user", 0), ("user", 100)
    expected = [
        key for key in ORDERED if compare_tuples(start, key) <= 0 and compare_tuples(key, stop) < 0
    ]
    assert [key for key, _ in ks.range(start, stop)] == expected
    assert [key for key, _ in ks.range(None, ("user",))] == [(None,)]


def test_point_reads_and_writes(store: Store) -> None:
    ks = fill(store)
    key = ("user", 42, "a")
    assert ks[key] == KEYS.index(key)
    assert ks.get(("nope",), "d") == "d"
    assert key in ks
    assert ["user", 42] not in ks  # a list is not a tuple
    assert ("bad", {}) not in ks
    assert ks.get_many([key, ("nope",)]) == {key: KEYS.index(key)}
    assert ks.get_entry(key).version == 1
    assert ks.put(key, "x", expect_version=1).version == 2
    assert ks.increment(("count", 1), 5) == 5
    assert ks.operate(("doc",), [ops.set("a", 1), ops.read("a")]) == [None, 1]
    assert ks.delete(key).version == 0
    assert ks.delete(key) is None
    assert ks.put_async(("async",), 1).get(timeout=TIMEOUT).version == 1
    assert ks.delete_async(("async",)).get(timeout=TIMEOUT) is not None
    del ks[("doc",)]
    assert [v.op for v in ks.history(key)] == ["put", "put", "delete"]


def test_batches_transactions_views_and_subscriptions_speak_tuples(store: Store) -> None:
    ks = store.keyspace("t", key_type=tuple)
    with ks.batch() as batch:
        batch.put(("a", 1), 1)
        batch.put(("a", 2), 2)
        batch.increment(("n",), 3)
    seq = ks.last_seq

    def move(view: Any, batch: Any) -> list[Any]:
        found = list(view.prefix(("a",)))
        batch.put(("b", 1), view.get(("a", 1)) + view[("a", 2)])
        batch.delete(("a", 1))
        assert batch.increment(("n",)) == 4
        assert ("a", 2) in view
        return found

    assert ks.transact(move) == [(("a", 1), 1), (("a", 2), 2)]
    assert list(ks) == [("a", 2), ("b", 1), ("n",)]
    with ks.at(seq) as view:
        assert list(view.keys()) == [("a", 1), ("a", 2), ("n",)]
        assert view.get_entry(("a", 1)).value == 1
        assert view.get_many([("a", 2)]) == {("a", 2): 2}
        assert len(view) == 3
    with ks.subscribe(1, prefix=("a",)) as subscription:
        changes = [subscription.next(TIMEOUT) for _ in range(3)]
    assert [(change.key, change.op) for change in changes] == [
        (("a", 1), "put"),
        (("a", 2), "put"),
        (("a", 1), "delete"),
    ]
    ks.clear()
    assert list(ks) == []


def test_tuple_keys_survive_reopen_snapshot_and_fork(tmp_path: Path) -> None:
    path = tmp_path / "s"
    with Store.open(path) as store:
        ks = fill(store)
        ks.snapshot()
        ks.put(("after", 1), "x")
    with Store.open(path) as store:
        ks = store.keyspace("t", key_type=tuple)
        assert list(ks) == sorted([*KEYS, ("after", 1)], key=functools.cmp_to_key(compare_tuples))
        fork = store.fork_keyspace("t", "f")
        expected = list(ks)
        assert list(fork) == expected
    with Store.open(path) as store:
        assert list(store.keyspace("f", key_type=tuple)) == expected
        with pytest.raises(InvalidOption, match="holds tuple keys"):
            store.keyspace("t")


def test_tuple_keys_with_an_index(store: Store) -> None:
    ks = store.keyspace("t", key_type=tuple, indexes={"by_n": Index(field="n")})
    ks.put(("u", 2), {"n": 1})
    ks.put(("u", 1), {"n": 1})
    assert list(ks.index("by_n").get(1)) == [(1, ("u", 1), {"n": 1}), (1, ("u", 2), {"n": 1})]


def test_bad_tuple_keys(store: Store) -> None:
    ks = store.keyspace("t", key_type=tuple, max_key_bytes=16)
    for bad, message in [
        ("text", "takes tuple keys"),
        (["a"], "takes tuple keys"),
        ((), "cannot be empty"),
        (({"a": 1},), "cannot be part of a tuple key"),
        (("\ud800",), "not valid Unicode"),
        (("x" * 20,), "max_key_bytes"),
    ]:
        with pytest.raises(InvalidKey, match=message):
            ks.put(bad, 1)
    with pytest.raises(InvalidKey, match="takes tuple keys"):
        list(ks.range("a", None))
    with pytest.raises(InvalidKey, match="takes tuple keys"):
        list(ks.prefix("a"))
    assert ks.last_seq == 0


key_elements = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False),
    st.text(max_size=4),
    st.binary(max_size=4),
)
tuple_keys = st.lists(key_elements, min_size=1, max_size=3).map(tuple)


@settings(max_examples=30, deadline=None)
@given(st.lists(tuple_keys, min_size=1, max_size=25), st.data())
def test_scans_equal_a_model_sorted_by_tuple_order(
    tmp_path_factory: pytest.TempPathFactory, written: list[tuple[Any, ...]], data: st.DataObject
) -> None:
    with Store.open(tmp_path_factory.mktemp("s"), fsync="never") as store:
        ks = store.keyspace("t", key_type=tuple)
        with ks.batch() as batch:
            for number, key in enumerate(written):
                batch.put(key, number)
        # Keys are told apart as the store does, by their encoding: 1 == True and
        # 0.0 == -0.0 in Python, but they are different keys.
        model = {pack(key): key for key in written}
        ordered = sorted(model.values(), key=functools.cmp_to_key(compare_tuples))
        assert [key for key, _ in ks.items()] == ordered
        start, stop = data.draw(tuple_keys), data.draw(tuple_keys)
        within = [
            key
            for key in ordered
            if compare_tuples(start, key) <= 0 and compare_tuples(key, stop) < 0
        ]
        assert [key for key, _ in ks.range(start, stop)] == within
        prefix = data.draw(st.sampled_from(ordered))[:1]
        assert [key for key, _ in ks.prefix(prefix)] == [
            key for key in ordered if compare_tuples(key[:1], prefix) == 0
        ]
