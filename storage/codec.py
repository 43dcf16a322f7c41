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
    "KVEvent",
    "Put",
    "decode_event",
    "encode_event",
]


class Put(msgspec.Struct, tag="put", frozen=True, array_like=True):
    """``key`` now holds ``value``, until ``expires_at`` (seconds since the epoch) if set."""

    # msgspec refuses a `str | bytes` union; MessagePack keeps the two apart on the wire
    # anyway, so `Any` decodes each key back to the type it was written with.
    key: Any
    value: Any
    expires_at: float | None = None


class Delete(msgspec.Struct, tag="del", frozen=True, array_like=True):
    """``key`` no longer exists."""

    key: Any


class Batch(msgspec.Struct, tag="batch", frozen=True, array_like=True):
    """Several events applied atomically, written at ``timestamp`` (seconds since the epoch)."""

    events: tuple[Put | Delete, ...]
    timestamp: float


KVEvent = Put | Delete | Batch
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
