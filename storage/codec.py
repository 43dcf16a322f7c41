"""The key-value events and their MessagePack codec.

Events are frozen, tagged, array-like msgspec Structs: compact on disk (``["put", key,
value, expires_at]``) and fast to decode, dispatched with ``match`` on their type.

Schema evolution, the rule every change here follows:

* a new field goes at the end of its Struct and has a default, so old records decode;
* a tag is never changed or reused, and a field is never removed or reordered;
* a change that cannot follow these rules is a new event type with a new tag.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, Final, TypeVar

import msgspec

from storage.errors import InvalidValue

A = TypeVar("A")
R = TypeVar("R")

__all__ = [
    "DECODER",
    "ENCODER",
    "MAX_VALUE_DEPTH",
    "Batch",
    "Delete",
    "Expired",
    "KVEvent",
    "Put",
    "check_depth",
    "decode_event",
    "decode_value",
    "encode_event",
    "encode_value",
    "on_fresh_stack",
    "too_deep",
]


# gc=False: events hold keys, encoded values and numbers, never a cycle, so the garbage
# collector need not track them (replaying 1,000,000 puts made it walk them all, ~15%).
class Put(msgspec.Struct, tag="put", frozen=True, array_like=True, gc=False):
    """``key`` now holds ``value``, until ``expires_at`` (seconds since the epoch) if set.

    ``value`` is already MessagePack (see :func:`encode_value`): it is encoded once, in the
    caller's thread, embedded in the record as it is, and decoded only when read.
    ``version`` is the key's version after the put, so a reader of the log (a subscription)
    knows it without folding the state; 0 in records written before it was recorded. Replay
    still counts versions itself.
    """

    # msgspec refuses a `str | bytes` union; MessagePack keeps the two apart on the wire
    # anyway, so `Any` decodes each key back to the type it was written with.
    key: Any
    value: msgspec.Raw
    expires_at: float | None = None
    version: int = 0


class Delete(msgspec.Struct, tag="del", frozen=True, array_like=True, gc=False):
    """``key`` no longer exists."""

    key: Any


class Expired(msgspec.Struct, tag="exp", frozen=True, array_like=True):
    """``keys`` reached their ``expires_at`` and were removed at ``at``.

    Written by a sweep, and before a write over a key that has expired.
    """

    keys: tuple[Any, ...]
    at: float


class Batch(msgspec.Struct, tag="batch", frozen=True, array_like=True):
    """Several events applied atomically, written at ``timestamp`` (seconds since the epoch)."""

    events: tuple[Put | Delete | Expired, ...]
    timestamp: float


KVEvent = Put | Delete | Batch | Expired
"""Every key-value event type: the union the decoder dispatches on."""

ENCODER: Final = msgspec.msgpack.Encoder()
DECODER: Final = msgspec.msgpack.Decoder(KVEvent)

MAX_VALUE_DEPTH: Final = 100
"""Deepest nesting of arrays and maps a value may have (a scalar is depth 0).

msgspec encodes and decodes nested values recursively, so without a fixed limit the depth
that works would depend on how deep the caller's stack is, and a value written from a
shallow stack could fail to decode in a deeper one (or in replay). Within the limit, a
caller whose own stack is too deep for the recursion still succeeds: the work is retried
on a fresh thread's stack (see :func:`on_fresh_stack`)."""

# Bytes that can start a MessagePack array or map (fixmap, fixarray, 16/32-bit forms).
_CONTAINER_BYTES: Final = bytes([*range(0x80, 0xA0), 0xDC, 0xDD, 0xDE, 0xDF])
_OTHER_BYTES: Final = bytes(b for b in range(256) if b not in _CONTAINER_BYTES)


def encode_event(event: KVEvent) -> bytes:
    """Encode one event for the log.

    Raises:
        InvalidValue: Something in the event (usually the value) cannot be encoded as
            MessagePack; the message names the type.
    """
    try:
        try:
            return ENCODER.encode(event)
        except RecursionError:
            return on_fresh_stack(ENCODER.encode, event)
    except RecursionError as exc:
        raise InvalidValue(too_deep(f"a {type(event).__name__} event")) from exc
    except (TypeError, ValueError, OverflowError, msgspec.EncodeError) as exc:
        msg = f"cannot encode {type(event).__name__} event: {exc}; use MessagePack types"
        raise InvalidValue(msg) from exc


def decode_event(data: bytes) -> KVEvent:
    """Decode one event written by :func:`encode_event`.

    Raises:
        msgspec.DecodeError: ``data`` is not a key-value event; the caller knows where the
            bytes came from and reports it (for a log record, as ``CorruptLog``).
    """
    event: KVEvent = DECODER.decode(data)
    return event


def encode_value(value: Any) -> msgspec.Raw:
    """Encode a value once, for a :class:`Put`.

    Raises:
        InvalidValue: The value (or something inside it) is not MessagePack-encodable, or
            it nests deeper than :data:`MAX_VALUE_DEPTH`.
    """
    try:
        try:
            encoded = ENCODER.encode(value)
        except RecursionError:
            encoded = on_fresh_stack(ENCODER.encode, value)
    except RecursionError as exc:
        raise InvalidValue(too_deep("the value")) from exc
    except (TypeError, ValueError, OverflowError, msgspec.EncodeError) as exc:
        msg = f"cannot encode value of type {type(value).__name__}: {exc}; use MessagePack types"
        raise InvalidValue(msg) from exc
    if len(encoded) > MAX_VALUE_DEPTH and encoded[0] in _CONTAINER_BYTES:  # check_depth's test
        check_depth(encoded, "the value")
    return msgspec.Raw(encoded)


def on_fresh_stack(function: Callable[[A], R], argument: A) -> R:
    """``function(argument)`` on a new thread's stack; for a caller whose own is too deep.

    msgspec recurses once per level of nesting; a caller already deep in its own stack can
    hit the recursion limit on a value well within :data:`MAX_VALUE_DEPTH`. Retrying on a
    fresh stack (only after a ``RecursionError``: a thread costs ~100 us) makes the limit
    the same for every caller.

    Raises:
        RecursionError: Too deep even on a fresh stack (far beyond the limit).
    """
    outcome: list[R] = []
    failure: list[BaseException] = []

    def run() -> None:
        try:
            outcome.append(function(argument))
        except BaseException as exc:
            failure.append(exc)

    worker = threading.Thread(target=run, name="actorkv-fresh-stack")
    worker.start()
    worker.join()
    if failure:
        raise failure[0]
    return outcome[0]


def check_depth(encoded: bytes, what: str, limit: int = MAX_VALUE_DEPTH) -> None:
    """Raise InvalidValue if MessagePack ``encoded`` nests deeper than ``limit``.

    Cheap for almost every value: a scalar is recognised by its first byte; a container can
    only be that deep if it holds more bytes that could start an array or a map than the
    limit (counted in C with ``translate``, ~0.5 ns per byte); only then is its structure
    walked in Python.
    """
    if (
        len(encoded) > limit
        and encoded[0] in _CONTAINER_BYTES
        and len(encoded.translate(None, _OTHER_BYTES)) > limit
        and _depth_exceeds(encoded, limit)
    ):
        raise InvalidValue(too_deep(what))


def too_deep(what: str) -> str:
    """The message for ``what`` (a value, an event) nesting deeper than the limit."""
    return (
        f"{what} nests arrays or maps deeper than {MAX_VALUE_DEPTH} levels (MAX_VALUE_DEPTH); "
        "flatten it, or store the deep part encoded as bytes"
    )


# MessagePack items by first byte: fixed sizes, and (size of length field) for str/bin/ext.
_FIXED = {0xC0: 1, 0xC2: 1, 0xC3: 1, 0xCA: 5, 0xCB: 9, 0xCC: 2, 0xCD: 3, 0xCE: 5, 0xCF: 9}
_FIXED |= {0xD0: 2, 0xD1: 3, 0xD2: 5, 0xD3: 9, 0xD4: 3, 0xD5: 4, 0xD6: 6, 0xD7: 10, 0xD8: 18}
_SIZED = {0xC4: (1, 0), 0xC5: (2, 0), 0xC6: (4, 0), 0xD9: (1, 0), 0xDA: (2, 0), 0xDB: (4, 0)}
_SIZED |= {0xC7: (1, 1), 0xC8: (2, 1), 0xC9: (4, 1)}  # ext: length, then a type byte
_CONTAINERS = {0xDC: (2, 1), 0xDD: (4, 1), 0xDE: (2, 2), 0xDF: (4, 2)}  # (length size, x)


def _depth_exceeds(data: bytes, limit: int) -> bool:
    """Walk the MessagePack structure of ``data``; True once it nests deeper than ``limit``."""
    pos = 0
    pending = [1]  # items still to read at each open level
    while pending:
        if pending[-1] == 0:
            pending.pop()
            continue
        pending[-1] -= 1
        byte = data[pos]
        if byte <= 0x7F or byte >= 0xE0:
            pos += 1
        elif byte <= 0x9F:  # fixmap 0x80-0x8f, fixarray 0x90-0x9f
            count = byte & 0x0F
            pending.append(count * 2 if byte <= 0x8F else count)
            pos += 1
        elif byte <= 0xBF:  # fixstr
            pos += 1 + (byte & 0x1F)
        elif byte in _FIXED:
            pos += _FIXED[byte]
        elif byte in _SIZED:
            width, extra = _SIZED[byte]
            pos += 1 + width + extra + int.from_bytes(data[pos + 1 : pos + 1 + width], "big")
        else:
            width, per_item = _CONTAINERS[byte]
            count = int.from_bytes(data[pos + 1 : pos + 1 + width], "big")
            pending.append(count * per_item)
            pos += 1 + width
        if len(pending) - 1 > limit:
            return True
    return False


def decode_value(data: bytes | msgspec.Raw) -> Any:
    """Decode a value written by :func:`encode_value` (untyped), on any caller's stack."""
    try:
        return msgspec.msgpack.decode(data)
    except RecursionError:
        return on_fresh_stack(msgspec.msgpack.decode, data)
