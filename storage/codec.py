"""The key-value events and their MessagePack codec.

Events are frozen, tagged, array-like msgspec Structs: compact on disk (``["put", key,
value, expires_at]``) and fast to decode, dispatched with ``match`` on their type.

Schema evolution, the rule every change here follows:

* a new field goes at the end of its Struct and has a default, so old records decode;
* a tag is never changed or reused, and a field is never removed or reordered;
* a change that cannot follow these rules is a new event type with a new tag.
"""

from __future__ import annotations

from typing import Any, Final

import msgspec

from storage.errors import InvalidValue

__all__ = [
    "DECODER",
    "ENCODER",
    "Batch",
    "Delete",
    "Expired",
    "KVEvent",
    "Put",
    "decode_event",
    "decode_value",
    "encode_event",
    "encode_value",
]


class Put(msgspec.Struct, tag="put", frozen=True, array_like=True):
    """``key`` now holds ``value``, until ``expires_at`` (seconds since the epoch) if set.

    ``value`` is already MessagePack (see :func:`encode_value`): it is encoded once, in the
    caller's thread, embedded in the record as it is, and decoded only when read.
    """

    # msgspec refuses a `str | bytes` union; MessagePack keeps the two apart on the wire
    # anyway, so `Any` decodes each key back to the type it was written with.
    key: Any
    value: msgspec.Raw
    expires_at: float | None = None


class Delete(msgspec.Struct, tag="del", frozen=True, array_like=True):
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


def encode_event(event: KVEvent) -> bytes:
    """Encode one event for the log.

    Raises:
        InvalidValue: Something in the event (usually the value) cannot be encoded as
            MessagePack; the message names the type.
    """
    try:
        return ENCODER.encode(event)
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
        InvalidValue: The value (or something inside it) is not MessagePack-encodable.
    """
    try:
        return msgspec.Raw(ENCODER.encode(value))
    except (TypeError, ValueError, OverflowError, msgspec.EncodeError) as exc:
        msg = f"cannot encode value of type {type(value).__name__}: {exc}; use MessagePack types"
        raise InvalidValue(msg) from exc


def decode_value(data: bytes | msgspec.Raw) -> Any:
    """Decode a value written by :func:`encode_value` (untyped)."""
    return msgspec.msgpack.decode(data)
