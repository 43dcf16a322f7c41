"""The key-value event codec: round trips, wire form, errors and schema evolution."""

from __future__ import annotations

import math

import msgspec
import pytest

from storage import InvalidValue
from storage.codec import (
    Batch,
    Delete,
    Expired,
    Put,
    decode_event,
    decode_value,
    encode_event,
    encode_value,
)


def put(key, value, expires_at=None):
    """A Put of ``value``, encoded as the key space encodes it (once, up front)."""
    return Put(key, encode_value(value), expires_at)


VALUES = [
    None,
    True,
    False,
    0,
    -1,
    2**63 - 1,
    -(2**63),
    2**64 - 1,
    1.5,
    -0.0,
    math.inf,
    "",
    "text with ünïcode",
    b"",
    b"\x00\xffbytes",
    [],
    [1, "two", b"three", None, [4.0]],
    {},
    {"nested": {"list": [1, 2], "bytes": b"x"}},
    {1: "int keys"},
    "x" * 100_000,
]


@pytest.mark.parametrize("value", VALUES, ids=lambda v: repr(v)[:30])
def test_put_round_trips_every_msgpack_value(value):
    event = put("key", value)
    decoded = decode_event(encode_event(event))
    assert decoded == event
    assert type(decode_value(decoded.value)) is type(value)
    assert decode_value(decoded.value) == value or value != value  # noqa: PLR0124 - NaN


@pytest.mark.parametrize("key", ["k", "", "ünï", b"k", b"", b"\x00\xff"], ids=repr)
def test_str_and_bytes_keys_keep_their_type(key):
    for event in (put(key, 1), Delete(key)):
        decoded = decode_event(encode_event(event))
        assert decoded == event
        assert type(decoded.key) is type(key)


def test_str_and_bytes_keys_with_the_same_text_stay_distinct():
    as_str = decode_event(encode_event(put("k", 1)))
    as_bytes = decode_event(encode_event(put(b"k", 1)))
    assert as_str.key == "k"
    assert as_bytes.key == b"k"
    assert as_str != as_bytes


@pytest.mark.parametrize("expires_at", [None, 0.0, 1_700_000_000.25])
def test_put_expires_at_round_trips(expires_at):
    decoded = decode_event(encode_event(put("k", "v", expires_at)))
    assert isinstance(decoded, Put)
    assert decoded.expires_at == expires_at


def test_batch_round_trips_with_its_events_in_order():
    event = Batch((put("a", 1), Delete(b"b"), put(b"c", [1, 2], 5.5), Delete("a")), 123.5)
    decoded = decode_event(encode_event(event))
    assert decoded == event
    assert isinstance(decoded, Batch)
    assert [type(e) for e in decoded.events] == [Put, Delete, Put, Delete]


def test_empty_batch_round_trips():
    assert decode_event(encode_event(Batch((), 0.0))) == Batch((), 0.0)


def test_wire_form_is_an_array_starting_with_the_tag():
    assert msgspec.msgpack.decode(encode_event(put("k", 1))) == ["put", "k", 1, None, 0]
    assert msgspec.msgpack.decode(encode_event(put(b"k", "v", 2.5))) == ["put", b"k", "v", 2.5, 0]
    assert msgspec.msgpack.decode(encode_event(Delete("k"))) == ["del", "k"]
    assert msgspec.msgpack.decode(encode_event(Batch((put("a", 1), Delete("b")), 1.5))) == [
        "batch",
        [["put", "a", 1, None, 0], ["del", "b"]],
        1.5,
    ]


@pytest.mark.parametrize(
    "value",
    [object(), lambda: 1, 1j, 2**64, -(2**63) - 1, {"nested": object()}, [1, print]],
    ids=["object", "lambda", "complex", "too-big-int", "too-small-int", "nested", "function"],
)
def test_unencodable_values_raise_invalid_value(value):
    with pytest.raises(InvalidValue, match="cannot encode value"):
        encode_value(value)
    with pytest.raises(InvalidValue, match="cannot encode Put"):
        encode_event(Put("k", object()))  # type: ignore[arg-type]


def test_invalid_value_is_a_value_error():
    with pytest.raises(ValueError, match="MessagePack"):
        encode_value(object())


def test_sets_are_encoded_as_arrays_and_decode_as_lists():
    decoded = decode_event(encode_event(put("k", {3})))
    assert decode_value(decoded.value) == [3]


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\xc1",
        b"\x93\xa3put",
        msgspec.msgpack.encode("put"),
        msgspec.msgpack.encode(["nope", "k"]),
        msgspec.msgpack.encode(["put"]),
        msgspec.msgpack.encode(["put", "k"]),
        msgspec.msgpack.encode(["del"]),
        msgspec.msgpack.encode(["batch", [["put", "k", 1]]]),
        msgspec.msgpack.encode(["batch", [["batch", [], 1.0]], 1.0]),
        msgspec.msgpack.encode(["put", "k", 1, "tomorrow"]),
        msgspec.msgpack.encode({"put": "k"}),
    ],
    ids=repr,
)
def test_decoding_garbage_raises_decode_error(data):
    with pytest.raises(msgspec.DecodeError):
        decode_event(data)


def test_a_put_written_before_expires_at_existed_decodes_with_none():
    old = msgspec.msgpack.encode(["put", "k", 1])
    decoded = decode_event(old)
    assert decoded == put("k", 1)
    assert decoded.expires_at is None


def test_an_old_put_inside_a_batch_decodes_with_none():
    old = msgspec.msgpack.encode(["batch", [["put", b"k", "v"], ["del", "x"]], 2.0])
    assert decode_event(old) == Batch((put(b"k", "v", None), Delete("x")), 2.0)


def test_events_are_frozen():
    event = put("k", 1)
    with pytest.raises(AttributeError):
        event.key = "other"


def test_expired_round_trips_alone_and_inside_a_batch():
    expired = Expired(("a", "b"), 12.5)
    assert decode_event(encode_event(expired)) == expired
    batch = Batch((expired, put("a", 1)), 13.0)
    assert decode_event(encode_event(batch)) == batch
    assert msgspec.msgpack.decode(encode_event(expired)) == ["exp", ["a", "b"], 12.5]


def test_a_put_written_before_versions_were_recorded_decodes_with_version_0():
    old = msgspec.msgpack.encode(["put", "k", 1, None])
    assert decode_event(old).version == 0
    assert decode_event(msgspec.msgpack.encode(["put", "k", 1, None, 7])).version == 7
