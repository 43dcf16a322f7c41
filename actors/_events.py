"""Finding a custom actor's event types and building its record codec.

One log record holds the events of one command, encoded as a MessagePack array of tagged
msgspec Structs. The event types come from ``event_types`` on the actor class, or else from
the annotation of ``apply``'s ``event`` parameter (a Struct or a union of Structs).

A command sent with an operation id (a caller that may retry it, ``actors/_operations.py``)
has one more element at the end of its record's array: a MessagePack extension (code
:data:`OPERATION_EXT`) holding the id and the command's encoded result. It is an extension,
not a Struct, so it fits every actor's union of events whatever their tags and layout;
:meth:`EventCodec.decode_many` and :meth:`EventCodec.decode` take it off, so nothing that
reads events (replay, history, subscriptions, projections) ever sees it.
"""

from __future__ import annotations

import inspect
import typing
from collections.abc import Callable, Sequence
from typing import Any, Final, NamedTuple

import msgspec

from actors._upcasting import Upcasting, check_upcasters
from storage import MAX_PAYLOAD_BYTES
from storage.codec import MAX_VALUE_DEPTH, check_depth, on_fresh_stack, too_deep
from storage.errors import InvalidValue

_ENCODER: Final = msgspec.msgpack.Encoder()
_Ext: Final = msgspec.msgpack.Ext

OPERATION_EXT: Final = 0x4F
"""MessagePack extension code of an operation id element (the letter O)."""
OPERATION_MAGIC: Final = b"\x00akvop"
"""How an operation id element's data begins: with the code before it, a byte string a
chunk of records is searched for (at memory speed) before any record is looked at."""
_MARK: Final = bytes((OPERATION_EXT,)) + OPERATION_MAGIC
MAX_KEPT_RESULT_BYTES: Final = 4096
"""A result encoded larger than this (or not encodable) is not kept with its operation id."""


class Operation(NamedTuple):
    """An operation id found in a record: its seq and the command's encoded result.

    ``result`` is the MessagePack of what the command returned, or empty if it was not kept
    (larger than :data:`MAX_KEPT_RESULT_BYTES`, or not encodable).
    """

    seq: int
    result: bytes


def encode_operation(op_id: bytes, result: Any) -> bytes:
    """The record element that says ``op_id`` was applied here, returning ``result``."""
    try:
        kept = _ENCODER.encode(result)
    except (TypeError, ValueError, OverflowError, msgspec.EncodeError, RecursionError):
        kept = b""
    if len(kept) > MAX_KEPT_RESULT_BYTES:
        kept = b""
    data = OPERATION_MAGIC + bytes((len(op_id),)) + op_id + kept
    return _ENCODER.encode(_Ext(OPERATION_EXT, data))


def _take_operations(
    decoded: list[Any], seqs: Sequence[int] | None, found: dict[bytes, Operation] | None
) -> None:
    """Take operation elements off each record's events (in place); note them in ``found``."""
    for index, events in enumerate(decoded):
        if events and type(events[-1]) is _Ext:
            marker = events[-1]
            data = bytes(marker.data)
            head = len(OPERATION_MAGIC)
            if (
                marker.code != OPERATION_EXT
                or not data.startswith(OPERATION_MAGIC)
                or len(data) < head + 1 + data[head]
            ):
                msg = f"a record ends with an unknown MessagePack extension {marker.code}"
                raise msgspec.DecodeError(msg)
            decoded[index] = events[:-1]
            if found is not None and seqs is not None:
                end = head + 1 + data[head]
                found[data[head + 1 : end]] = Operation(seqs[index], data[end:])


MAX_RECORD_BYTES: Final = MAX_PAYLOAD_BYTES - 16
"""Largest record payload a command may emit: its events plus a 5-byte array header."""


class EventCodec:
    """Encodes events one by one (to check them early) and joins a command's into a record."""

    __slots__ = ("actor_name", "checkers", "decoder", "decoder_of_many", "types", "upcasting")

    def __init__(
        self,
        actor_name: str,
        types: tuple[type[msgspec.Struct], ...],
        decoder: Any,
        *,
        check_fields: bool = True,
        upcasting: Upcasting | None = None,
    ) -> None:
        self.actor_name = actor_name
        self.types = types
        self.upcasting = upcasting  # old tags read through the actor's upcasters
        self.decoder: msgspec.msgpack.Decoder[list[Any]] = decoder
        # Each record's events as a tuple: the garbage collector stops tracking a tuple of
        # untracked objects, not a list (replay allocates one per record).
        element = typing.get_args(decoder.type)[0]
        self.decoder_of_many: msgspec.msgpack.Decoder[list[tuple[Any, ...]]] = (
            msgspec.msgpack.Decoder(list[tuple[element, ...]])  # type: ignore[valid-type]
        )
        # msgspec checks field types when decoding, not when a Struct is built or encoded:
        # decoding each event once as it is emitted keeps a mistyped field out of the log
        # (where replay would reject it). About 0.3 us per small event.
        self.checkers: dict[type, Callable[[bytes], Any]] = (
            {t: msgspec.msgpack.Decoder(t).decode for t in types} if check_fields else {}
        )

    def encode_one(self, event: Any) -> bytes:
        """Encode one event, checking that it is one of this actor's event types.

        Raises:
            InvalidValue: Not an event type of this actor, a field cannot be encoded, or a
                field does not match its annotation (so replay could not decode it).
        """
        if not isinstance(event, self.types):
            names = ", ".join(t.__name__ for t in self.types)
            msg = f"{self.actor_name} cannot emit {type(event).__name__}: not one of {names}"
            raise InvalidValue(msg)
        what = f"{self.actor_name}'s {type(event).__name__} event"
        try:
            try:
                encoded = _ENCODER.encode(event)
            except RecursionError:
                encoded = on_fresh_stack(_ENCODER.encode, event)
        except RecursionError as exc:
            raise InvalidValue(too_deep(what)) from exc
        except (TypeError, ValueError, OverflowError, msgspec.EncodeError) as exc:
            msg = f"{self.actor_name}: cannot encode {type(event).__name__}: {exc}"
            raise InvalidValue(msg) from exc
        if self.checkers:
            # The event's own level comes on top of its fields' values. (Actors that check
            # their input themselves, like the key space, turn field checks off.)
            check_depth(encoded, what, MAX_VALUE_DEPTH + 1)
        if len(encoded) > MAX_RECORD_BYTES:
            msg = (
                f"{self.actor_name}: {type(event).__name__} encodes to {len(encoded)} bytes, "
                f"over the {MAX_RECORD_BYTES}-byte limit of one log record; split it"
            )
            raise InvalidValue(msg)
        checker = self.checkers.get(type(event))
        try:
            if checker is not None:
                checker(encoded)
        except msgspec.ValidationError as exc:
            msg = f"{self.actor_name}: {type(event).__name__} has a field of the wrong type: {exc}"
            raise InvalidValue(msg) from exc
        return encoded

    @staticmethod
    def check_record_size(encoded: list[bytes], more: list[bytes]) -> None:
        """Raise InvalidValue if ``encoded`` and ``more`` together exceed one record."""
        size = sum(map(len, encoded)) + sum(map(len, more))
        if size > MAX_RECORD_BYTES:
            msg = (
                f"the events of one command encode to {size} bytes, over the "
                f"{MAX_RECORD_BYTES}-byte record limit; emit less per command"
            )
            raise InvalidValue(msg)

    @staticmethod
    def join(encoded: list[bytes]) -> bytes:
        """One record payload: a MessagePack array of the already encoded events."""
        return _array_header(len(encoded)) + b"".join(encoded)

    def decode_many(
        self,
        payloads: Sequence[bytes],
        seqs: Sequence[int] | None = None,
        operations: dict[bytes, Operation] | None = None,
    ) -> list[tuple[Any, ...]]:
        """Decode many record payloads with one decoder call (one array around them all).

        Operation ids are taken off (see the module's docstring); with ``seqs`` (the
        payloads' seqs) and ``operations``, each is noted there by id.

        Raises:
            msgspec.DecodeError: One of them does not decode; :meth:`decode` each to find it.
            UnknownTag: An event's tag is neither current nor upcast (with upcasters).
            ReplayFailed: An upcaster raised or returned what is not a current event.
        """
        buffer = _array_header(len(payloads)) + b"".join(payloads)
        try:
            decoded = self.decoder_of_many.decode(buffer)
        except msgspec.DecodeError:
            if self.upcasting is None:
                raise
            decoded = self.upcasting.decode_records(buffer, seqs)  # some are old: upcast
        if _MARK in buffer:  # else no record holds an id: no record need be looked at
            _take_operations(decoded, seqs, operations)
        return decoded

    def decode(self, payload: bytes) -> list[Any]:
        """Decode one record payload into its events (on a fresh stack if need be)."""
        try:
            events: list[Any] = self.decoder.decode(payload)
        except RecursionError:
            events = on_fresh_stack(self.decoder.decode, payload)
        except msgspec.DecodeError:
            if self.upcasting is None:
                raise
            events = list(self.upcasting.decode_records(_array_header(1) + payload, None)[0])
        if events and type(events[-1]) is _Ext:
            records = [events]
            _take_operations(records, None, None)
            events = list(records[0])
        return events


def _array_header(length: int) -> bytes:
    if length < 16:  # MessagePack fixarray
        return bytes((0x90 | length,))
    if length < 1 << 16:
        return b"\xdc" + length.to_bytes(2, "big")
    return b"\xdd" + length.to_bytes(4, "big")


def event_codec_for(actor_class: type) -> EventCodec:
    """Build the codec for ``actor_class``'s events.

    Raises:
        TypeError: The event types cannot be found, are not msgspec Structs, or are not
            tagged (``tag=True``), so a union of them could not be decoded.
    """
    types = _event_types(actor_class)
    name = actor_class.__name__
    for event_type in types:
        if not (isinstance(event_type, type) and issubclass(event_type, msgspec.Struct)):
            msg = (
                f"{name}: event type {event_type!r} is not a msgspec.Struct; declare events "
                "as `class Done(msgspec.Struct, tag=True, frozen=True): ...`"
            )
            raise TypeError(msg)
        if len(types) > 1 and event_type.__struct_config__.tag is None:
            msg = (
                f"{name}: event type {event_type.__name__} has no tag, so a log holding "
                "several event types could not tell them apart; add `tag=True`"
            )
            raise TypeError(msg)
    # The extension is the operation id element a retried command's record may end with.
    members = (*types, msgspec.msgpack.Ext)
    union: Any = typing.Union[members]  # noqa: UP007
    try:
        decoder = msgspec.msgpack.Decoder(list[union])
    except TypeError as exc:
        msg = f"{name}: its event types cannot be decoded as one union: {exc}"
        raise TypeError(msg) from exc
    check = getattr(actor_class, "check_event_fields", True)
    check_upcasters(actor_class, types)
    upcasters = getattr(actor_class, "upcasters", None)
    upcasting = Upcasting(name, types, upcasters) if upcasters else None
    return EventCodec(name, types, decoder, check_fields=check, upcasting=upcasting)


def event_types_of(actor_class: type) -> tuple[Any, ...]:
    """The event types of ``actor_class``: ``event_types``, or ``apply``'s annotation.

    Raises:
        TypeError: Neither says (or the annotation does not resolve).
    """
    return _event_types(actor_class)


def _event_types(actor_class: type) -> tuple[Any, ...]:
    declared = getattr(actor_class, "event_types", None)
    if declared:
        return tuple(declared)
    apply = actor_class.apply  # type: ignore[attr-defined]
    parameters = list(inspect.signature(apply).parameters)
    hint = None
    if len(parameters) == 3:  # self, state, event
        try:
            hint = typing.get_type_hints(apply).get(parameters[2])
        except (NameError, TypeError) as exc:
            msg = (
                f"{actor_class.__name__}.apply: cannot resolve the event annotation ({exc}); "
                "define the event types at module level or set `event_types = (...)`"
            )
            raise TypeError(msg) from exc
    if hint is None:
        msg = (
            f"{actor_class.__name__}: annotate apply(self, state, event: MyEvent | Other) "
            "or set `event_types = (MyEvent, Other)` on the class"
        )
        raise TypeError(msg)
    args = typing.get_args(hint)
    return args if args and typing.get_origin(hint) in (typing.Union, _UNION_TYPE) else (hint,)


_UNION_TYPE: Any = type(int | str)
