"""A key space's options and the checks of its input that need no state."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

import msgspec

from storage.errors import InvalidInput, InvalidOption, InvalidValue

__all__ = [
    "KeySpaceOptions",
    "check_expect",
    "check_time",
    "check_ttl",
    "key_type_name",
    "prefix_end",
]


@dataclass(frozen=True, slots=True)
class KeySpaceOptions:
    """How a key space checks its input. Checked on construction.

    Attributes:
        key_type: ``str`` (default), ``bytes`` or ``tuple``; keys of any other type raise
            InvalidKey.
        value_type: If set, values are validated against it on put (``InvalidValue``) and
            decoded to it on get; any type msgspec understands (a Struct, ``int``, ...).
        max_key_bytes: Longest key, in bytes (UTF-8 for str): default 1,024.
        max_value_bytes: Largest encoded value: default 16 MiB.
    """

    key_type: type = str
    value_type: Any = None
    max_key_bytes: int = 1024
    max_value_bytes: int = 16 * 1024 * 1024

    def __post_init__(self) -> None:
        """Reject options outside their documented ranges."""
        if self.key_type not in (str, bytes, tuple):
            msg = f"key_type must be str, bytes or tuple, got {self.key_type!r}"
            raise InvalidOption(msg)
        for name in ("max_key_bytes", "max_value_bytes"):
            limit = getattr(self, name)
            if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
                msg = f"{name} must be a positive int, got {limit!r}"
                raise InvalidOption(msg)
        if self.value_type is not None:
            try:
                msgspec.msgpack.Decoder(self.value_type)
            except TypeError as exc:
                msg = f"value_type {self.value_type!r} is not a type msgspec can decode: {exc}"
                raise InvalidOption(msg) from exc


def check_ttl(ttl: object) -> float:
    """``ttl`` as float seconds, if it is a positive finite number; else InvalidValue."""
    seconds = math.nan
    if not isinstance(ttl, bool) and isinstance(ttl, int | float):
        try:
            seconds = float(ttl)
        except OverflowError:  # an int beyond any float
            seconds = math.inf
    if not 0 < seconds < math.inf:
        msg = f"ttl must be a positive, finite number of seconds, got {ttl!r:.60}"
        raise InvalidValue(msg)
    return seconds


def check_expect(expect_version: int | None) -> None:
    if expect_version is not None and (
        isinstance(expect_version, bool)
        or not isinstance(expect_version, int)
        or expect_version < 0
    ):
        msg = f"expect_version must be an int >= 0 or None, got {expect_version!r}"
        raise InvalidValue(msg)


def prefix_end(prefix: str | bytes) -> str | bytes | None:
    """The smallest key above every key that starts with ``prefix`` (None: no bound)."""
    if isinstance(prefix, bytes):
        head = prefix.rstrip(b"\xff")
        return head[:-1] + bytes((head[-1] + 1,)) if head else None
    text = prefix.rstrip("\U0010ffff")
    return text[:-1] + chr(ord(text[-1]) + 1) if text else None


def check_time(time: object) -> float:
    """``time`` as float seconds since the epoch, if it is a finite number; else InvalidInput."""
    if isinstance(time, bool) or not isinstance(time, int | float) or not math.isfinite(time):
        msg = f"time must be a finite number of seconds since the epoch, got {time!r:.60}"
        raise InvalidInput(msg)
    return float(time)


def key_type_name(key_type: type) -> Literal["str", "bytes", "tuple"]:
    """How the manifest names a key type."""
    if key_type is bytes:
        return "bytes"
    return "tuple" if key_type is tuple else "str"
