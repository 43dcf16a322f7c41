"""An order-preserving encoding of tuples: FoundationDB's tuple layer, for keys and indexes.

``pack(t1) < pack(t2)`` (as bytes) exactly when ``t1`` sorts before ``t2`` under the rules
below, and ``unpack(pack(t)) == t`` with every element's type kept (``-0.0`` stays ``-0.0``,
``True`` stays a bool). The byte layout is the one FoundationDB's tuple layer documents
(``design/tuple.md`` in its repository), so keys sort as they would there.

Elements and their order:

* Types sort before one another in this order, whatever the values: ``None`` < ``bytes`` <
  ``str`` < ``tuple`` < ``int`` < ``float`` < ``bool``. So ``2 < 1.5`` in key order (every
  int sorts before every float) and ``"b" < 1`` — unlike Python, which compares ints and
  floats by value and refuses to compare str with int.
* Within a type: ``bytes`` bytewise, ``str`` by code point (their UTF-8 bytes), ``int`` by
  value (any size; up to 255 bytes of magnitude), ``False < True``, tuples element by element
  with a shorter prefix first (as Python does), and ``float`` by the IEEE 754 total order:
  ``-inf < ... < -0.0 < 0.0 < ... < inf < nan`` (a positive NaN; a negative one sorts first).
* A str must be valid Unicode text (no lone surrogates).

Encoding, in short: a type code byte, then the value; ``bytes`` and ``str`` end with
``0x00`` and escape their own ``0x00`` as ``0x00 0xFF``; ints are big-endian in as few
bytes as they need, the type code telling the length and sign (negatives in ones'
complement); floats are big-endian with the sign bit flipped (all bits for negatives);
nested tuples are framed by ``0x05 ... 0x00`` with a ``None`` inside them written
``0x00 0xFF``. Every element's encoding is prefix-free, so no key is mistaken for another
key's prefix (``("a",)`` does not start ``("a/b",)``) and a tuple's encoding starts every
longer tuple that extends it (what ``prefix`` queries rely on).
"""

from __future__ import annotations

import struct
from typing import Any

from storage.errors import InvalidKey

__all__ = ["TUPLE_END", "pack", "pack_element", "unpack", "unpack_element"]

NONE = 0x00
BYTES = 0x01
STRING = 0x02
NESTED = 0x05
INT_ZERO = 0x14  # 0x0C..0x13: negative ints of 8..1 bytes; 0x15..0x1C: positive of 1..8
NEG_BIG = 0x0B  # a negative int of more than 8 bytes: a length byte (ones' complement) follows
POS_BIG = 0x1D  # a positive int of more than 8 bytes: a length byte follows
DOUBLE = 0x21
FALSE = 0x26
TRUE = 0x27
TUPLE_END = b"\xff"  # sorts after every element: pack(t) + TUPLE_END ends a prefix range

_DOUBLE = struct.Struct(">d")
_MAX_INT_BYTES = 255


def pack(items: tuple[Any, ...]) -> bytes:
    """The encoding of a tuple (its elements, concatenated; no frame at the top level).

    Raises:
        InvalidKey: An element is of an unsupported type, a str is not valid Unicode, or
            an int needs more than 255 bytes.
    """
    if type(items) is not tuple:
        msg = f"expected a tuple, got {type(items).__name__}: {items!r:.60}"
        raise InvalidKey(msg)
    out = bytearray()
    for item in items:
        _encode(out, item, nested=False)
    return bytes(out)


def pack_element(item: Any) -> bytes:
    """The encoding of one element (as it appears inside a packed tuple)."""
    kind = type(item)
    # The common index values, without a buffer: small ints and ASCII text without NULs.
    if kind is int and 0 <= item < 2**64:
        number: int = item
        size = (number.bit_length() + 7) // 8
        return bytes((INT_ZERO + size,)) + number.to_bytes(size, "big")
    if kind is str and item.isascii() and "\x00" not in item:
        text: str = item
        return b"\x02" + text.encode() + b"\x00"
    out = bytearray()
    _encode(out, item, nested=False)
    return bytes(out)


def unpack(data: bytes) -> tuple[Any, ...]:
    """The tuple ``data`` encodes.

    Raises:
        InvalidKey: ``data`` is not a packed tuple.
    """
    items = []
    position = 0
    try:
        while position < len(data):
            item, position = _decode(data, position, nested=False)
            items.append(item)
    except (IndexError, ValueError, struct.error) as exc:
        msg = f"bytes {data[:40]!r} are not a packed tuple: {exc}"
        raise InvalidKey(msg) from exc
    return tuple(items)


def unpack_element(data: bytes, position: int = 0) -> tuple[Any, int]:
    """The element encoded at ``position`` in ``data`` and the position after it."""
    try:
        return _decode(data, position, nested=False)
    except (IndexError, ValueError, struct.error) as exc:
        msg = f"bytes {data[:40]!r} do not hold a packed element at {position}: {exc}"
        raise InvalidKey(msg) from exc


def _encode(out: bytearray, item: Any, *, nested: bool) -> None:
    kind = type(item)
    if kind is str:
        try:
            text = item.encode()
        except UnicodeEncodeError as exc:
            msg = f"str {item!r:.60} is not valid Unicode text (lone surrogate?)"
            raise InvalidKey(msg) from exc
        _encode_escaped(out, STRING, text)
    elif kind is int:
        _encode_int(out, item)
    elif kind is bytes:
        _encode_escaped(out, BYTES, item)
    elif kind is tuple:
        out.append(NESTED)
        for inner in item:
            _encode(out, inner, nested=True)
        out.append(0x00)
    elif item is None:
        out += b"\x00\xff" if nested else b"\x00"
    elif kind is bool:
        out.append(TRUE if item else FALSE)
    elif kind is float:
        _encode_float(out, item)
    else:
        msg = (
            f"{kind.__name__} {item!r:.60} cannot be part of a tuple key or index value; "
            "use None, bool, int, float, str, bytes or tuples of them"
        )
        raise InvalidKey(msg)


def _encode_escaped(out: bytearray, code: int, data: bytes) -> None:
    out.append(code)
    out += data.replace(b"\x00", b"\x00\xff")
    out.append(0x00)


def _encode_float(out: bytearray, value: float) -> None:
    raw = bytearray(_DOUBLE.pack(value))
    if raw[0] & 0x80:  # negative: invert every bit, so larger magnitudes sort first
        raw = bytearray(byte ^ 0xFF for byte in raw)
    else:
        raw[0] ^= 0x80
    out.append(DOUBLE)
    out += raw


def _encode_int(out: bytearray, value: int) -> None:
    if value == 0:
        out.append(INT_ZERO)
        return
    size = (abs(value).bit_length() + 7) // 8
    if size > _MAX_INT_BYTES:
        msg = f"int of {size} bytes is beyond the {_MAX_INT_BYTES}-byte limit of tuple keys"
        raise InvalidKey(msg)
    if value > 0:
        body = value.to_bytes(size, "big")
        if size <= 8:
            out.append(INT_ZERO + size)
        else:
            out.append(POS_BIG)
            out.append(size)
        out += body
    else:
        body = (value + (1 << (8 * size)) - 1).to_bytes(size, "big")  # ones' complement
        if size <= 8:
            out.append(INT_ZERO - size)
        else:
            out.append(NEG_BIG)
            out.append(size ^ 0xFF)
        out += body


def _decode(data: bytes, position: int, *, nested: bool) -> tuple[Any, int]:  # noqa: PLR0911
    code = data[position]
    position += 1
    if code in (STRING, BYTES):
        end, chunk = _unescape(data, position)
        return (chunk.decode() if code == STRING else chunk), end
    if NEG_BIG <= code <= POS_BIG:
        return _decode_int(data, position, code)
    if code == NONE:
        if not nested:
            return None, position
        if data[position] != 0xFF:
            msg = "None inside a tuple must be 0x00 0xFF"
            raise ValueError(msg)
        return None, position + 1
    if code == NESTED:
        return _decode_nested(data, position)
    if code == DOUBLE:
        return _decode_float(data, position)
    if code in (FALSE, TRUE):
        return code == TRUE, position
    msg = f"unknown type code 0x{code:02x}"
    raise ValueError(msg)


def _decode_int(data: bytes, position: int, code: int) -> tuple[int, int]:
    if code in (POS_BIG, NEG_BIG):
        size = data[position] if code == POS_BIG else data[position] ^ 0xFF
        position += 1
    else:
        size = abs(code - INT_ZERO)
    body = data[position : position + size]
    if len(body) != size:
        msg = "truncated int"
        raise ValueError(msg)
    value = int.from_bytes(body, "big")
    if code < INT_ZERO:
        value -= (1 << (8 * size)) - 1
    return value, position + size


def _decode_nested(data: bytes, position: int) -> tuple[tuple[Any, ...], int]:
    items: list[Any] = []
    while True:
        if data[position] == 0x00 and (position + 1 >= len(data) or data[position + 1] != 0xFF):
            return tuple(items), position + 1
        item, position = _decode(data, position, nested=True)
        items.append(item)


def _decode_float(data: bytes, position: int) -> tuple[float, int]:
    raw = bytearray(data[position : position + 8])
    if len(raw) != 8:
        msg = "truncated float"
        raise ValueError(msg)
    if raw[0] & 0x80:
        raw[0] ^= 0x80
    else:
        raw = bytearray(byte ^ 0xFF for byte in raw)
    value: float = _DOUBLE.unpack(raw)[0]
    return value, position + 8


def _unescape(data: bytes, position: int) -> tuple[int, bytes]:
    """The escaped bytes from ``position`` to their terminator, and the position after it."""
    out = bytearray()
    while True:
        end = data.index(0x00, position)
        out += data[position:end]
        if end + 1 < len(data) and data[end + 1] == 0xFF:
            out.append(0x00)
            position = end + 2
        else:
            return end + 1, bytes(out)
