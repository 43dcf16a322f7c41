"""A small per-key linearizability checker for a versioned register (Wing & Gong search).

The model is one key of a key space: its state is ``(value, version)``, ``(None, 0)`` while the
key does not exist. Three operations, each recorded with invocation and response times
(``time.monotonic_ns``) and its result:

- ``put(value)`` -> the new version (``Receipt.version``);
- ``get()`` -> ``(value, version)``, or None if the key does not exist (``get_entry``);
- ``cas(expect_version, value)`` -> ``("ok", new_version)`` or ``("conflict", actual)``;
- ``delete()`` -> ``"deleted"``, or ``"absent"`` if the key did not exist (no write).

A history is linearizable if the operations can be put in one order that respects real time
(an operation that returned before another was invoked comes first) and in which every result
is what the model gives. The search (Wing & Gong, with Lowe's memoization of
``(linearized set, state)``) tries, depth first, every operation that may go next: one whose
invocation is not after the earliest response among the operations left. Fine for a few
hundred operations per key from a handful of threads; exponential in the worst case.

An operation without a response (``ret=None``: the caller timed out or crashed) may take
effect at any time after its invocation, or never.
"""

from __future__ import annotations

import threading
import time
from collections import defaultdict
from collections.abc import Callable, Hashable, Iterable
from dataclasses import dataclass, field
from typing import Any

State = tuple[Hashable, int]
INITIAL: State = (None, 0)
NEVER = 1 << 62  # the response time of an operation that never answered


@dataclass(frozen=True, slots=True)
class Op:
    """One operation on one key, as seen by its caller.

    Attributes:
        process: Which thread issued it (operations of one process never overlap).
        kind: ``"put"``, ``"get"``, ``"cas"`` or ``"delete"``.
        arg: put: the value; cas: ``(expect_version, value)``; get: None.
        result: What the caller got (see the module docstring); None if ``ret`` is None.
        call: Invocation time, ns.
        ret: Response time, ns, or None if the caller never got an answer.
    """

    process: int
    kind: str
    arg: Any
    result: Any
    call: int
    ret: int | None

    @property
    def end(self) -> int:
        """The response time, or :data:`NEVER`."""
        return NEVER if self.ret is None else self.ret


def step(state: State, op: Op) -> list[State]:
    """The states ``op`` may lead to from ``state`` (empty: impossible here)."""
    value, version = state
    answered = op.ret is not None
    if op.kind == "put":
        after = (op.arg, version + 1)
        return [after] if not answered or op.result == version + 1 else []
    if op.kind == "get":
        if not answered:
            return [state]
        seen = None if version == 0 else (value, version)
        return [state] if op.result == seen else []
    if op.kind == "cas":
        expect, new_value = op.arg
        if version == expect:
            after = (new_value, version + 1)
            return [after] if not answered or op.result == ("ok", version + 1) else []
        return [state] if not answered or op.result == ("conflict", version) else []
    if op.kind == "delete":
        outcome = "absent" if version == 0 else "deleted"
        return [INITIAL] if not answered or op.result == outcome else []
    msg = f"unknown operation kind {op.kind!r}"
    raise ValueError(msg)


@dataclass
class Verdict:
    """The outcome of :func:`check`.

    Attributes:
        ok: Whether the history is linearizable.
        explored: ``(linearized set, state)`` pairs visited (a measure of the search's work).
        longest: The longest linearizable prefix found, as indexes into ``ops`` (the culprit
            is usually an operation that could not be added to it).
        ops: The operations, sorted by invocation.
    """

    ok: bool
    explored: int
    longest: list[int] = field(default_factory=list)
    ops: list[Op] = field(default_factory=list)

    def explain(self, around: int = 6) -> str:
        """The operations next to where the longest linearization got stuck, for a failure."""
        done = set(self.longest)
        stuck = [i for i in range(len(self.ops)) if i not in done][:around]
        lines = [f"linearized {len(done)} of {len(self.ops)}; first operations left:"]
        lines += [f"  #{i}: {self.ops[i]}" for i in stuck]
        return "\n".join(lines)


def check(history: Iterable[Op], initial: State = INITIAL, max_states: int = 2_000_000) -> Verdict:
    """Whether ``history`` (operations on ONE key) is linearizable from ``initial``.

    Raises:
        ValueError: An operation responds before it is invoked, or of an unknown kind.
        RuntimeError: The search visited more than ``max_states`` states.
    """
    ops = sorted(history, key=lambda op: (op.call, op.end))
    for op in ops:
        if op.end < op.call:
            msg = f"operation responds before it is invoked: {op}"
            raise ValueError(msg)
    n = len(ops)
    full = (1 << n) - 1
    seen: set[tuple[int, State]] = {(0, initial)}
    stack: list[tuple[int, State, tuple[int, ...]]] = [(0, initial, ())]
    longest: tuple[int, ...] = ()
    while stack:
        mask, state, order = stack.pop()
        if len(order) > len(longest):
            longest = order
        if mask == full or all(ops[i].ret is None for i in range(n) if not mask >> i & 1):
            return Verdict(ok=True, explored=len(seen), longest=list(order), ops=ops)
        left = [i for i in range(n) if not mask >> i & 1]
        deadline = min(ops[i].end for i in left)
        for i in left:
            op = ops[i]
            if op.call > deadline:
                break  # sorted by invocation: every later one is after some response
            for after in step(state, op):
                key = (mask | 1 << i, after)
                if key not in seen:
                    seen.add(key)
                    stack.append((key[0], after, (*order, i)))
        if len(seen) > max_states:
            msg = f"search gave up after {len(seen)} states; shorten the history"
            raise RuntimeError(msg)
    return Verdict(ok=False, explored=len(seen), longest=list(longest), ops=ops)


class Recorder:
    """Collects ``(key, Op)`` from many threads; :meth:`call` times one operation."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.ops: list[tuple[Hashable, Op]] = []

    def call(
        self,
        process: int,
        key: Hashable,
        kind: str,
        arg: Any,
        run: Callable[[], Any],
    ) -> Any:
        """Run ``run()`` (which returns the model-shaped result), timing it; returns it.

        An exception other than what ``run`` turns into a result escapes, and the operation
        is recorded without a response (it may or may not have taken effect).
        """
        call = time.monotonic_ns()
        try:
            result = run()
        except BaseException:
            self.add(key, Op(process, kind, arg, None, call, None))
            raise
        ret = time.monotonic_ns()
        self.add(key, Op(process, kind, arg, result, call, ret))
        return result

    def add(self, key: Hashable, op: Op) -> None:
        """Record ``op`` on ``key`` (for callers that time the operation themselves)."""
        with self._lock:
            self.ops.append((key, op))

    def by_key(self) -> dict[Hashable, list[Op]]:
        """The recorded operations, grouped by key."""
        grouped: dict[Hashable, list[Op]] = defaultdict(list)
        with self._lock:
            for key, op in self.ops:
                grouped[key].append(op)
        return dict(grouped)
