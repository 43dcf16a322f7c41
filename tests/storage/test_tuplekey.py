"""The tuple encoding: byte order equals the documented tuple order, and it round-trips."""

from __future__ import annotations

import functools
import math
import struct
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from storage.errors import InvalidKey
from storage.tuplekey import pack, pack_element, unpack

_TYPE_RANK = {type(None): 0, bytes: 1, str: 2, tuple: 3, int: 4, float: 5, bool: 6}


def _float_order(value: float) -> int:
    """IEEE 754 total order as an int (what the encoding promises for floats)."""
    bits = struct.unpack(">q", struct.pack(">d", value))[0]
    return bits if bits >= 0 else -(bits & 0x7FFFFFFFFFFFFFFF) - 1


def reference_compare(a: Any, b: Any) -> int:
    """The order the module docstring writes down, computed without any encoding."""
    rank_a, rank_b = _TYPE_RANK[type(a)], _TYPE_RANK[type(b)]
    if rank_a != rank_b:
        return -1 if rank_a < rank_b else 1
    if type(a) is tuple:
        return compare_tuples(a, b)
    if type(a) is float:
        a, b = _float_order(a), _float_order(b)
    if a is None:
        return 0
    return (a > b) - (a < b)


def compare_tuples(a: tuple[Any, ...], b: tuple[Any, ...]) -> int:
    for left, right in zip(a, b, strict=False):
        result = reference_compare(left, right)
        if result:
            return result
    return (len(a) > len(b)) - (len(a) < len(b))


text = st.text(st.characters(exclude_categories=("Cs",)), max_size=6)
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**80), max_value=2**80),
    st.integers(min_value=-300, max_value=300),
    st.floats(allow_nan=True),
    text,
    st.binary(max_size=6),
    st.sampled_from([b"\x00", b"\x00\xff", b"a\x00", "a\x00", "\x00"]),
)
elements = st.recursive(
    scalars, lambda inner: st.tuples(inner) | st.tuples(inner, inner), max_leaves=6
)
tuples = st.lists(elements, max_size=4).map(tuple)


def same(a: Any, b: Any) -> bool:
    """Equal with the same types and float bits (so -0.0 != 0.0 and nan == nan)."""
    if type(a) is not type(b):
        return False
    if type(a) is tuple:
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if type(a) is float:
        return struct.pack(">d", a) == struct.pack(">d", b)
    return bool(a == b)


@settings(max_examples=800)
@given(tuples, tuples)
def test_byte_order_is_the_documented_order(a: tuple[Any, ...], b: tuple[Any, ...]) -> None:
    expected = compare_tuples(a, b)
    packed_a, packed_b = pack(a), pack(b)
    assert ((packed_a > packed_b) - (packed_a < packed_b)) == expected


@settings(max_examples=400)
@given(st.data())
def test_byte_order_is_pythons_order_within_one_type(data: st.DataObject) -> None:
    strategy = data.draw(
        st.sampled_from(
            [
                st.integers(min_value=-(2**2000), max_value=2**2000),
                text,
                st.binary(max_size=8),
                st.floats(allow_nan=False).filter(lambda x: x != 0.0),
            ]
        )
    )
    shape = st.lists(strategy, max_size=3).map(tuple)
    a, b = data.draw(shape), data.draw(shape)
    assert (pack(a) < pack(b)) == (a < b)
    assert (pack(a) == pack(b)) == (a == b)


@settings(max_examples=500)
@given(tuples)
def test_round_trips_exactly(value: tuple[Any, ...]) -> None:
    assert same(unpack(pack(value)), value)
    for element in value:  # pack_element's shortcuts encode as pack does
        assert pack_element(element) == pack((element,))


@given(tuples, tuples)
def test_a_tuple_prefixes_exactly_its_extensions(a: tuple[Any, ...], b: tuple[Any, ...]) -> None:
    assert pack(a + b).startswith(pack(a))
    if pack(b).startswith(pack(a)):
        assert same(b[: len(a)], a)


def test_written_down_rules() -> None:
    assert pack((2,)) < pack((1.5,))  # every int before every float
    assert pack(("b",)) < pack((1,))  # str before int
    assert pack((-0.0,)) < pack((0.0,))
    assert pack((math.inf,)) < pack((math.nan,))
    assert pack((None,)) < pack((b"",)) < pack(("",)) < pack(((),)) < pack((0,))
    assert pack((False,)) < pack((True,))
    assert pack(("a",)) < pack(("a", None)) < pack(("a\x00",))  # no "a/b" prefix confusion
    key = ("user", 42, ("nested", None), b"\x00", -(2**100), 2**100, 1.25, True)
    assert unpack(pack(key)) == key


def test_known_foundationdb_layout() -> None:
    # Byte strings from FoundationDB's tuple layer specification (design/tuple.md).
    assert pack((b"foo\x00bar",)) == b"\x01foo\x00\xffbar\x00"
    assert pack(("F\u00d4O\x00bar",)) == b"\x02F\xc3\x94O\x00\xffbar\x00"
    assert pack(((b"foo\x00bar", None, ()),)) == b"\x05\x01foo\x00\xffbar\x00\x00\xff\x05\x00\x00"
    assert pack((-5551212,)) == b"\x11\xabK\x93"
    assert pack((-42.0,)) == b"\x21\x3f\xba\xff\xff\xff\xff\xff\xff"
    assert pack_element(0) == b"\x14"


@pytest.mark.parametrize(
    "bad",
    [({"a": 1},), ([1],), ("\ud800",), (2 ** (8 * 256),), (object(),)],
)
def test_unsupported_elements_raise_invalid_key(bad: tuple[Any, ...]) -> None:
    with pytest.raises(InvalidKey):
        pack(bad)


def test_not_a_tuple_raises_invalid_key() -> None:
    with pytest.raises(InvalidKey, match="expected a tuple"):
        pack(["a"])  # type: ignore[arg-type]
    with pytest.raises(InvalidKey, match="not a packed tuple"):
        unpack(b"\x02abc")


def test_reference_order_is_a_total_order_on_samples() -> None:
    samples = [(1,), (1.0,), ("a",), (b"a",), (None,), (True,), ((1,),), ()]
    ordered = sorted(samples, key=functools.cmp_to_key(compare_tuples))
    assert [pack(x) for x in ordered] == sorted(pack(x) for x in samples)
