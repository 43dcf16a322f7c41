"""Bad input is rejected before it reaches the log, and the key space keeps serving.

Every case checks the same three things: the right error, a log that is byte-identical
(and ``last_seq`` unchanged), and a put that still works afterwards.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from actors import (
    InvalidKey,
    InvalidName,
    InvalidOption,
    InvalidValue,
    KeySpace,
    Store,
)
from tests.keyspace.conftest import log_bytes


class Point(msgspec.Struct):
    x: int
    y: int


def assert_rejected(
    store_path: Path,
    ks: KeySpace,
    error: type[Exception],
    call: Callable[[], Any],
    fine: Any = 0,
) -> None:
    """``call`` raises ``error``, the log is unchanged, and then a put of ``fine`` works."""
    before, last_seq = log_bytes(store_path, ks.name), ks.last_seq
    with pytest.raises(error):
        call()
    assert ks.last_seq == last_seq
    assert log_bytes(store_path, ks.name) == before
    key = "ok" if ks.options.key_type is str else b"ok"
    assert ks.put(key, fine).seq == last_seq + 1


def write_calls(ks: KeySpace, key: Any, value: Any, **kw: Any) -> dict[str, Callable[[], Any]]:
    """Every way to write ``key``/``value``, each as a thunk."""

    def in_batch() -> None:
        with ks.batch() as b:
            b.put("fine", 1)
            b.put(key, value, **kw)

    calls = {
        "put": lambda: ks.put(key, value, **kw),
        "put_async": lambda: ks.put_async(key, value, **kw).get(timeout=10),
        "aput": lambda: asyncio.run(ks.aput(key, value, **kw)),
        "batch": in_batch,
    }
    if not kw:
        calls["setitem"] = lambda: ks.__setitem__(key, value)
    return calls


BAD_STR_KEYS = [1, None, b"k", True, 1.5, ("a",), "", "x" * 1025, "é" * 513, "\ud800", "a\udfff"]


@pytest.mark.parametrize("key", BAD_STR_KEYS, ids=repr)
@pytest.mark.parametrize("how", ["put", "put_async", "aput", "batch", "setitem", "delete"])
def test_bad_keys_are_rejected_by_every_write(store_path: Path, ks: KeySpace, key: Any, how: str):
    ks.put("existing", 1)
    calls = write_calls(ks, key, "value")

    def delete_in_batch() -> None:
        with ks.batch() as b:
            b.delete(key)

    calls["delete"] = (lambda: ks.delete(key)) if how == "delete" else delete_in_batch
    assert_rejected(store_path, ks, InvalidKey, calls[how])


@pytest.mark.parametrize("key", ["x", "", bytearray(b"k"), 1, True, b"x" * 1025])
def test_bad_keys_in_a_bytes_keyspace_are_rejected(store: Store, store_path: Path, key: Any):
    raw = store.keyspace("raw", key_type=bytes)
    assert_rejected(store_path, raw, InvalidKey, lambda: raw.put(key, 1))
    assert raw.put(b"x" * 1024, 1).version == 1


def test_reads_reject_keys_of_the_wrong_type(ks: KeySpace):
    for read in (ks.get, ks.get_entry, lambda k: ks.get_many([k]), ks.range, ks.prefix):
        with pytest.raises(InvalidKey):
            read(1)
    assert 1 not in ks


def test_the_key_limit_counts_utf8_bytes(store: Store, store_path: Path):
    small = store.keyspace("small", max_key_bytes=4)
    assert small.put("éé", 1).version == 1  # 4 bytes
    assert_rejected(store_path, small, InvalidKey, lambda: small.put("ééx", 1))


def unencodable() -> list[Any]:
    return [object(), lambda: 1, complex(1, 2), 2**64, -(2**63) - 1, {"a": [1, {"b": object()}]}]


@pytest.mark.parametrize("value", unencodable(), ids=lambda v: type(v).__name__)
@pytest.mark.parametrize("how", ["put", "put_async", "aput", "batch", "setitem"])
def test_unencodable_values_are_rejected(store_path: Path, ks: KeySpace, value: Any, how: str):
    assert_rejected(store_path, ks, InvalidValue, write_calls(ks, "k", value)[how])
    assert "k" not in ks


def test_values_over_the_limit_are_rejected(store: Store, store_path: Path):
    small = store.keyspace("small", max_value_bytes=10)
    assert small.put("k", b"x" * 8).version == 1  # 10 bytes encoded: bin8 header + 8
    assert_rejected(store_path, small, InvalidValue, lambda: small.put("k", b"x" * 9))
    assert small["k"] == b"x" * 8


@pytest.mark.parametrize("value", [{"x": 1}, {"x": 1, "y": "2"}, [1], 5, None, {"x": 2**64}])
def test_values_not_of_the_value_type_are_rejected(store: Store, store_path: Path, value: Any):
    points = store.keyspace("points", value_type=Point)
    assert_rejected(store_path, points, InvalidValue, lambda: points.put("p", value), Point(0, 0))
    assert points.put("p", Point(1, 2)).version == 1


@pytest.mark.parametrize("ttl", [0, -1, 0.0, float("nan"), float("inf"), -float("inf"), "1", True])
@pytest.mark.parametrize("how", ["put", "put_async", "aput", "batch"])
def test_bad_ttls_are_rejected(store_path: Path, ks: KeySpace, ttl: Any, how: str):
    assert_rejected(store_path, ks, InvalidValue, write_calls(ks, "k", 1, ttl=ttl)[how])


@pytest.mark.parametrize("expect", [-1, 1.5, "1", True, [1]])
@pytest.mark.parametrize("how", ["put", "aput", "batch", "delete", "adelete", "batch_delete"])
def test_bad_expect_versions_are_rejected(store_path: Path, ks: KeySpace, expect: Any, how: str):
    ks.put("k", 1)
    calls = write_calls(ks, "k", 2, expect_version=expect)

    def batch_delete() -> None:
        with ks.batch() as b:
            b.delete("k", expect_version=expect)

    calls["delete"] = lambda: ks.delete("k", expect_version=expect)
    calls["adelete"] = lambda: asyncio.run(ks.adelete("k", expect_version=expect))
    calls["batch_delete"] = batch_delete
    assert_rejected(store_path, ks, InvalidValue, calls[how])
    assert ks["k"] == 1


@pytest.mark.parametrize(
    "options",
    [
        {"key_type": int},
        {"key_type": bytearray},
        {"max_key_bytes": 0},
        {"max_key_bytes": True},
        {"max_value_bytes": -1},
        {"max_value_bytes": 1.5},
        {"value_type": object()},
    ],
    ids=repr,
)
def test_bad_options_are_rejected(store: Store, store_path: Path, ks: KeySpace, options: Any):
    assert_rejected(store_path, ks, InvalidOption, lambda: store.keyspace("other", **options))
    assert store.keyspaces() == ["ks"]


BAD_NAMES = ["../x", "/", "a/b", "", "x" * 200, "a\x00b", ".hidden", "..", "a..b", "é", 5, None]


@pytest.mark.parametrize("name", BAD_NAMES, ids=repr)
def test_bad_names_are_rejected(
    tmp_path: Path, store: Store, store_path: Path, ks: KeySpace, name: Any
):
    assert_rejected(store_path, ks, InvalidName, lambda: store.keyspace(name))
    assert_rejected(store_path, ks, InvalidName, lambda: store.drop_keyspace(name))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["store"]
    assert sorted(p.name for p in (store_path / "keyspaces").iterdir()) == ["ks"]
    assert store.keyspaces() == ["ks"]


# -- properties ------------------------------------------------------------------------------

FIXTURES_OK = settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
any_text = st.text(st.characters(exclude_categories=()), max_size=8)


def key_is_valid(key: str) -> bool:
    try:
        size = len(key.encode())
    except UnicodeEncodeError:
        return False
    return 0 < size <= 1024


@FIXTURES_OK
@given(key=any_text | st.text(st.sampled_from("a\ud800\udfffé"), max_size=4))
def test_any_text_key_is_stored_or_rejected_untouched(store_path: Path, ks: KeySpace, key: str):
    if key_is_valid(key):
        receipt = ks.put(key, key.encode())
        assert ks.get(key) == key.encode()
        assert ks.get_entry(key).seq == receipt.seq
    else:
        assert_rejected(store_path, ks, InvalidKey, lambda: ks.put(key, 1))


def value_is_valid(value: Any) -> bool:
    if isinstance(value, int) and not isinstance(value, bool):
        return -(2**63) <= value <= 2**64 - 1
    if isinstance(value, str):
        return key_is_valid(value) or value == ""
    if isinstance(value, list):
        return all(value_is_valid(item) for item in value)
    if isinstance(value, dict):
        return all(value_is_valid(k) and value_is_valid(v) for k, v in value.items())
    return True


leaves = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False)
    | any_text
    | st.binary(max_size=8)
    | st.builds(Point, st.integers(0, 3), st.integers(0, 3))  # a Struct is a fine value
)
nested = st.recursive(
    leaves, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(any_text, inner, max_size=3)
)


@FIXTURES_OK
@given(value=nested)
def test_any_nested_value_round_trips_or_is_rejected_untouched(
    store_path: Path, ks: KeySpace, value: Any
):
    if value_is_valid(value):
        ks.put("k", value)
        assert msgspec.msgpack.encode(ks.get("k")) == msgspec.msgpack.encode(value)
    else:
        assert_rejected(store_path, ks, InvalidValue, lambda: ks.put("k", value))
