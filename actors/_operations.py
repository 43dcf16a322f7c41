"""Operation ids: a command a caller may retry is applied once, however often it arrives.

A caller that cannot tell whether its command ran (a remote runtime whose actor died after
running it, before answering: Ray's ``RayActorError``) sends it with an operation id and
retries with the same id. The core writes the id, with the command's encoded result, into
the command's own record (``actors/_events.py``), so it is durable exactly when the command
is. An id seen again within the window is answered with the first run's result and not run.

The window is the ids of the last :data:`WINDOW_RECORDS` records written with one. It lives
in memory and is rebuilt at recovery from the records replayed and the ``WINDOW_RECORDS``
records before the snapshot the replay started from (those retention kept). A retry of an
operation whose record has left the window (more than that many records later) runs again:
retry within the window, that is within seconds.

After a restart the first result comes back decoded from its MessagePack, converted to the
command's return annotation where it has one (``Receipt``, ``int``...); a result that was
not kept (over 4 KiB, or not encodable) comes back as None.
"""

from __future__ import annotations

import logging
import typing
from collections import OrderedDict
from typing import Any, Final

import msgspec

from actors._events import Operation

__all__ = ["WINDOW_RECORDS", "OperationWindow"]

logger = logging.getLogger("actorkv.actors")

WINDOW_RECORDS: Final = 10_000
"""How many id-carrying records' operation ids are remembered."""

_MISSING: Final = object()


class OperationWindow:
    """The ids of the newest id-carrying records, and what their commands returned.

    Used by the thread holding the actor's execution right only (and by the replay before
    it), so it takes no lock.
    """

    def __init__(self, actor_class: type, limit: int = WINDOW_RECORDS) -> None:
        self._actor_class = actor_class
        self._limit = limit
        # id -> (seq, result, whether result is still the MessagePack of a recovered one)
        self._known: OrderedDict[bytes, tuple[int, Any, bool]] = OrderedDict()
        self._pending: dict[bytes, tuple[int, Any]] = {}  # the open group's, not durable yet

    def __len__(self) -> int:
        return len(self._known)

    def recovered(self, found: dict[bytes, Operation]) -> None:
        """Note ids read back from the log (in seq order)."""
        for op_id, operation in sorted(found.items(), key=lambda item: item[1].seq):
            self._remember(op_id, operation.seq, operation.result, raw=True)

    def answer(self, op_id: bytes, command: str) -> Any:
        """The first run's result if ``op_id`` ran, durably or in the open group.

        If it did not, a sentinel that :meth:`ran` tells apart.
        """
        pending = self._pending.get(op_id)
        if pending is not None:
            return pending[1]
        known = self._known.get(op_id)
        if known is None:
            return _MISSING
        seq, result, raw = known
        if raw:
            result = self._decode(command, result)
            self._known[op_id] = (seq, result, False)
        return result

    @staticmethod
    def ran(answer: Any) -> bool:
        """Whether :meth:`answer` found the operation."""
        return answer is not _MISSING

    def staged(self, op_id: bytes, seq: int, result: Any) -> None:
        """``op_id``'s command is record ``seq`` of the open group, returning ``result``."""
        self._pending[op_id] = (seq, result)

    def committed(self) -> None:
        """The open group is durable: its ids join the window."""
        for op_id, (seq, result) in self._pending.items():
            self._remember(op_id, seq, result, raw=False)
        self._pending.clear()

    def discarded(self) -> None:
        """The open group failed: its commands did not run."""
        self._pending.clear()

    def _remember(self, op_id: bytes, seq: int, result: Any, *, raw: bool) -> None:
        self._known[op_id] = (seq, result, raw)
        self._known.move_to_end(op_id)
        while len(self._known) > self._limit:
            self._known.popitem(last=False)

    def _decode(self, command: str, data: bytes) -> Any:
        if not data:
            return None
        value = msgspec.msgpack.decode(data)
        method = getattr(self._actor_class, command, None)
        try:
            hint = typing.get_type_hints(method).get("return") if method is not None else None
        except (NameError, TypeError):
            hint = None
        if hint is None:
            return value
        try:
            return msgspec.convert(value, hint)
        except (msgspec.ValidationError, TypeError):
            logger.debug("%s: a kept result does not convert to %r", command, hint)
            return value
