"""How ``actors.eventsourcing`` lays the eventsourcing library's records out in a key space.

One key space per recorder family (names in ``actors/eventsourcing.py``), str keys:

=================================  =============================================  ==========
key                                value                                          written
=================================  =============================================  ==========
``a/<len>:<originator>/<version>``  ``[notification_id, topic, state, is_uuid]``  once
``n/<notification_id>``            the ``a/`` key of that event                   once
``c/notification_id``              the last notification id given (int)           each insert
``t/<application_name>``           the highest tracked notification id (int)      each track
=================================  =============================================  ==========

- ``<len>`` is the originator id's length in characters and ``<originator>`` its ``str``:
  the length makes a prefix scan of one originator exact even when ids contain ``/``.
  ``is_uuid`` says whether the id was a ``UUID`` (then ``str`` is its hyphenated form).
- ``<version>`` and ``<notification_id>`` are decimal, zero-padded to ``NUMBER_DIGITS``;
  a version is stored plus ``VERSION_OFFSET`` so that negative versions sort too. Both
  therefore range over signed (versions) and unsigned (ids) 64-bit values.
- An aggregate recorder (snapshots) writes ``a/`` keys only, with notification id 0.
- Nothing is ever overwritten or deleted except the two counters, so a key read once stays
  valid: a scan may fetch what its keys point to in later reads.

Every insert is one ``ks.transact``: the uniqueness check, the new notification ids (taken
from ``c/notification_id`` inside the key space's actor: gapless, no retries), the events
and the tracking position become one log record, durable when ``insert_events`` returns.
"""

from __future__ import annotations

from typing import Any
from uuid import UUID

__all__ = [
    "COUNTER_KEY",
    "EVENT_PREFIX",
    "MAX_NOTIFICATION_ID",
    "NOTIFICATIONS_END",
    "NOTIFICATION_PREFIX",
    "NUMBER_DIGITS",
    "VERSION_OFFSET",
    "event_key",
    "event_value",
    "notification_key",
    "originator_of",
    "originator_prefix",
    "tracking_key",
    "version_bound",
    "version_of",
]

NUMBER_DIGITS = 20  # 2**64 - 1 has 20 decimal digits
VERSION_OFFSET = 2**63  # versions -2**63 .. 2**63 - 1 map to 0 .. 2**64 - 1
MAX_NOTIFICATION_ID = 2**63 - 1  # what the key space's 64-bit counter holds
COUNTER_KEY = "c/notification_id"
NOTIFICATION_PREFIX = "n/"
NOTIFICATIONS_END = "n0"  # the first key after every n/ key ("0" follows "/")
EVENT_PREFIX = "a/"
_NUMBER = f"0{NUMBER_DIGITS}d"


def originator_prefix(originator_id: UUID | str) -> str:
    """The prefix every ``a/`` key of ``originator_id`` starts with (and no other's)."""
    text = str(originator_id)
    return f"{EVENT_PREFIX}{len(text)}:{text}/"


def version_bound(version: int) -> str:
    """The key suffix of ``version``.

    Raises:
        ValueError: ``version`` is not an int within signed 64 bits.
    """
    if isinstance(version, bool) or not isinstance(version, int):
        msg = f"originator_version must be an int, got {version!r:.40}"
        raise ValueError(msg)  # noqa: TRY004 - eventsourcing's DataError derives from it
    shifted = version + VERSION_OFFSET
    if not 0 <= shifted < 2 * VERSION_OFFSET:
        msg = f"originator_version {version} does not fit in signed 64 bits"
        raise ValueError(msg)
    return format(shifted, _NUMBER)


def event_key(prefix: str, version: int) -> str:
    """The ``a/`` key of one event, from its originator's prefix."""
    return prefix + version_bound(version)


def version_of(key: str) -> int:
    """The originator version an ``a/`` key holds."""
    return int(key[-NUMBER_DIGITS:]) - VERSION_OFFSET


def originator_of(key: str, is_uuid: bool) -> UUID | str:
    """The originator id an ``a/`` key holds, as the type it was written with."""
    length, _, rest = key[len(EVENT_PREFIX) :].partition(":")
    text = rest[: int(length)]
    return UUID(text) if is_uuid else text


def notification_key(notification_id: int) -> str:
    """The ``n/`` key of a notification id (>= 0)."""
    return NOTIFICATION_PREFIX + format(notification_id, _NUMBER)


def tracking_key(application_name: str) -> str:
    """The ``t/`` key of an upstream application's position."""
    return "t/" + application_name


def event_value(notification_id: int, topic: str, state: bytes, is_uuid: bool) -> list[Any]:
    """The value of an ``a/`` key (a msgpack array: ~12 bytes beside topic and state)."""
    return [notification_id, topic, state, is_uuid]
