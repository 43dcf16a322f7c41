"""Recent versions of a key space's state, kept in memory beside the current entries.

Every change committed after the *horizon* seq is kept: per key, the list of its states
(``Entry`` for a value, ``Tombstone`` for a removal), oldest first, whose first element is
the state the key had at the horizon (``ABSENT`` if it had none) and whose last is its
current state. A key no change after the horizon touched has no list: its current entry is
its state at every seq from the horizon on. So the state as of any seq S >= horizon is, per
key, one dict lookup and (for changed keys) one bisection; nothing is copied.

Memory is bounded by ``limit`` changes: once more are kept, the oldest are dropped and the
horizon moves up, except past a *pinned* seq, which an open scan or view is reading (so a
long scan stays one consistent snapshot however many writes go by; the bound is exceeded for
as long as it runs). Reads of points below the horizon come from a snapshot and the log
(``actors._history``), not from here.

All methods run under the key space's state lock, except where noted.
"""

from __future__ import annotations

from array import array
from bisect import bisect_right
from collections import deque
from typing import TYPE_CHECKING, Any, Final, Union

import msgspec
from sortedcontainers import SortedList

if TYPE_CHECKING:
    from storage.kvstate import Entry

__all__ = [
    "ABSENT",
    "DEFAULT_RECENT_VERSIONS",
    "KeyState",
    "RecentVersions",
    "ScanPin",
    "Tombstone",
    "seq_of",
    "state_before",
]

DEFAULT_RECENT_VERSIONS: Final = 100_000
"""Changes kept in memory per key space unless configured (``recent_versions=``)."""


class Tombstone(msgspec.Struct, frozen=True, gc=False, array_like=True):
    """A key's removal by record ``seq``: deleted, or ``expired`` by its TTL."""

    seq: int
    expired: bool = False


ABSENT: Final = Tombstone(0)
"""The state of a key that did not exist at the horizon."""

KeyState = Union["Entry", Tombstone]


class ScanPin:
    """One reader's claim on the changes after ``seq``.

    Released once, explicitly or when it is garbage (so a scan abandoned half way does not
    hold memory forever).

    ``pins`` is a plain list: ``append``, ``remove`` and ``min`` are single C calls under
    the GIL, so a pin can be released from a finalizer, in any thread, without the lock.
    """

    __slots__ = ("_pins", "held", "seq")

    def __init__(self, pins: list[int], seq: int) -> None:
        self._pins = pins
        self.seq = seq
        self.held = True
        pins.append(seq)

    def release(self) -> None:
        """Give the claim up (idempotent)."""
        if self.held:
            self.held = False
            self._pins.remove(self.seq)

    __del__ = release


def seq_of(state: KeyState) -> int:
    """The seq a state was made by (the bisection key of a key's states)."""
    return state.seq


def state_before(states: list[KeyState], seq: int) -> KeyState:
    """The last of a key's states made at or before ``seq`` (``states[0]`` if none is).

    A recent point is usually a step or two back from the end: walk back a few states
    before bisecting (a bisection with a key calls back into Python at every step).
    """
    index = len(states) - 2
    stop = max(0, index - 4)
    while index > stop and states[index].seq > seq:
        index -= 1
    if states[index].seq > seq:
        index = max(0, bisect_right(states, seq, hi=index, key=seq_of) - 1)
    return states[index]


class RecentVersions:
    """The changes after ``horizon``, by key and in commit order, and their records' times."""

    __slots__ = ("_times", "_times_at", "by_key", "changes", "ghosts", "horizon", "limit", "pins")

    def __init__(self, horizon: int, limit: int = DEFAULT_RECENT_VERSIONS) -> None:
        """Keep nothing yet: the current entries are the state as of ``horizon``."""
        self.horizon = horizon
        self.limit = limit
        self.by_key: dict[Any, list[KeyState]] = {}
        self.changes: deque[tuple[int, Any]] = deque()  # (seq, key) of each kept change
        self.ghosts = SortedList()  # keys with a kept history whose current state is removed
        self.pins: list[int] = []  # seqs readers still read at (see ScanPin)
        self._times = array("d")  # commit time of record _times_at + i
        self._times_at = horizon + 1

    # -- writer side (under the state lock, during a commit) ----------------------------------

    def record(self, entries: dict[Any, Entry], changes: list[tuple[int, Any, KeyState]]) -> None:
        """Keep ``(seq, key, new state)`` changes; ``entries`` still holds the states before.

        Call before the group's changes reach ``entries``.
        """
        by_key, kept, ghosts = self.by_key, self.changes, self.ghosts
        for seq, key, state in changes:
            states = by_key.get(key)
            if states is None:
                before = entries.get(key)
                states = by_key[key] = [ABSENT if before is None else before]
            states.append(state)
            kept.append((seq, key))
        for key in {key for _, key, _ in changes}:
            removed = type(by_key[key][-1]) is Tombstone
            if removed != (key in ghosts):
                if removed:
                    ghosts.add(key)
                else:
                    ghosts.remove(key)

    def record_times(self, first: int, last: int, time: float) -> None:
        """Note that records ``first..last`` were committed at ``time``."""
        times = self._times
        expected = self._times_at + len(times)
        if first > expected:  # a gap: the times before it are the log's to tell
            del times[:]
            self._times_at = expected = first
        start = max(first, expected)
        if last >= start:
            times.extend([time] * (last - start + 1))

    def evict(self, entries: dict[Any, Entry]) -> None:
        """Drop the oldest changes beyond ``limit``, never past the lowest pinned seq."""
        kept = self.changes
        if len(kept) <= self.limit:
            return
        pins = self.pins
        lowest_pin = min(pins, default=None)
        by_key, ghosts = self.by_key, self.ghosts
        while len(kept) > self.limit:
            seq = kept[0][0]
            if lowest_pin is not None and seq > lowest_pin:
                break  # a reader needs the state just before this change
            touched = set()
            while kept and kept[0][0] == seq:
                touched.add(kept.popleft()[1])
            self.horizon = seq
            for key in touched:
                states = by_key[key]
                del states[: bisect_right(states, seq, key=seq_of) - 1]
                if len(states) == 1:  # unchanged since the horizon: the plain entry
                    del by_key[key]
                    if type(states[0]) is Tombstone:
                        ghosts.discard(key)
                    else:
                        assert entries.get(key) is states[0], "kept history lost its current state"
        self._drop_times_through(self.horizon)

    def reset(self, horizon: int) -> None:
        """Forget every kept change (the state was replaced wholesale); pins stay."""
        self.horizon = horizon
        self.by_key.clear()
        self.changes.clear()
        self.ghosts.clear()
        del self._times[:]
        self._times_at = horizon + 1

    # -- reader side (under the state lock) ---------------------------------------------------

    def state_at(self, entries: dict[Any, Entry], key: Any, seq: int) -> Entry | None:
        """``key``'s entry as of ``seq`` (>= horizon), or None if it did not exist then."""
        states = self.by_key.get(key)
        if states is None:
            return entries.get(key)
        state = states[-1]  # usually the current state is the point's too
        if state.seq > seq:
            state = state_before(states, seq)
        return None if type(state) is Tombstone else state  # type: ignore[return-value]

    def states_at(
        self, entries: dict[Any, Entry], keys: list[Any], seq: int
    ) -> list[tuple[Any, Entry | None]]:
        """``(key, state_at(key))`` for each of ``keys`` (a scan's chunk: inlined)."""
        by_key_get = self.by_key.get
        found: list[tuple[Any, Entry | None]] = []
        append = found.append
        for key in keys:
            states = by_key_get(key)
            if states is None:  # a key of the entries (a removed one always has states)
                append((key, entries[key]))
                continue
            state = states[-1]
            if state.seq > seq:
                state = state_before(states, seq)
            append((key, None if type(state) is Tombstone else state))  # type: ignore[arg-type]
        return found

    def changes_of(self, key: Any) -> list[KeyState]:
        """``key``'s kept states after the horizon, oldest first (a copy)."""
        states = self.by_key.get(key)
        return [] if states is None else states[1:]

    def time_of(self, seq: int) -> float | None:
        """The commit time of record ``seq``, if it is kept here (else None)."""
        index = seq - self._times_at
        return self._times[index] if 0 <= index < len(self._times) else None

    def seq_at(self, time: float) -> int | None:
        """The last kept record committed at or before ``time``; None if that is not here."""
        times = self._times
        if not times or times[0] > time:
            return None  # before the first kept record: the log knows
        return self._times_at + bisect_right(times, time) - 1

    def __len__(self) -> int:
        """Changes kept."""
        return len(self.changes)

    def _drop_times_through(self, seq: int) -> None:
        dead = seq + 1 - self._times_at
        if dead > 0 and dead * 2 > len(self._times):  # amortized: compact when half is dead
            del self._times[:dead]
            self._times_at += dead
