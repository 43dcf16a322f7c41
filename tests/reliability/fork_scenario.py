"""Child program of the fork tests: holds a store, a lock or a log, forks, reports on the child.

Run as ``python fork_scenario.py KIND DIRECTORY [LEAVE]`` with the repository root on
``PYTHONPATH``; KIND is ``store``, ``lock`` or ``log``. It sets KIND up in DIRECTORY, prints
``ready PID``, then runs one command per line of stdin, answering each with one line:

- ``fork``: fork a child that tries every use of what the parent holds, prints
  ``child JSON`` (each use mapped to ``[exception class name, message]``, ``["returned",
  repr]`` or ``["no answer", ...]``) and then returns from ``main`` and exits normally, as a
  user's child would (atexit handlers included). With LEAVE ``close`` the child also closes
  the inherited store first. The parent answers ``exited CODE``, or ``exited hung`` if the
  child was still alive after ``EXIT_GUARD`` seconds (it is then killed).
- any other word: the parent calls the scenario's method of that name and answers the word
  followed by what it returned (``put``, ``append``, ``release``, ``close``).

Standalone on purpose: a forked pytest process that exits normally would run pytest's own
exit machinery; here a child that falls off the end of ``main`` is exactly the case tested.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from actors import Store
from storage import DirectoryLock, SegmentedLog
from tests.actors.conftest import Counter

OP_GUARD = 5.0
"""Seconds a use in the child may take before it is reported as never answering."""

EXIT_GUARD = 20.0
"""Seconds the child's exit may take before it counts as hung (the old exit took 30 s)."""


def say(*words: object) -> None:
    print(*words, flush=True)  # flushed: a fork must not copy unwritten output


def attempt(call: Callable[[], Any]) -> list[str]:
    """What ``call()`` did, as ``[exception class name, message]`` or ``["returned", repr]``.

    Runs in a daemon thread so that a use that never answers is reported, not waited for.
    """
    outcome = ["no answer", f"nothing within {OP_GUARD} s"]

    def run() -> None:
        try:
            result = call()
        except Exception as exc:  # the class is the report
            outcome[:] = [type(exc).__name__, str(exc)]
        else:
            outcome[:] = ["returned", repr(result)[:200]]

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(OP_GUARD)
    return list(outcome)


def wait_for_exit(pid: int) -> int | str:
    """The child's exit code, or ``"hung"`` (and a SIGKILL) if it outlives EXIT_GUARD."""
    deadline = time.monotonic() + EXIT_GUARD
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        time.sleep(0.01)
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    return "hung"


class StoreScenario:
    """A store with a key space ("data": a=one, b=two) and a Counter ("counter" at 2)."""

    def __init__(self, directory: Path, leave: str) -> None:
        self.leave = leave
        self.store = Store.open(directory)
        self.data = self.store.keyspace("data")
        self.data.put("a", "one")
        self.data.put("b", "two")
        self.counter = self.store.spawn("counter", Counter)
        self.counter.increment(2).get(timeout=OP_GUARD)

    def in_child(self) -> dict[str, list[str]]:
        store, data, counter = self.store, self.data, self.counter
        uses = {
            "put": lambda: data.put("c", "from the child"),
            "get": lambda: data.get("a"),
            "keyspace": lambda: store.keyspace("data"),
            "spawn": lambda: store.spawn("counter", Counter),
            "increment": lambda: counter.increment(1).get(timeout=OP_GUARD),
        }
        if self.leave == "close":
            uses["close"] = store.close
        return {use: attempt(call) for use, call in uses.items()}

    def put(self) -> list[object]:
        receipt = self.data.put("after", "the fork")
        return [receipt.seq, self.counter.increment(1).get(timeout=OP_GUARD)]

    def close(self) -> list[object]:
        self.store.close()
        return []


class LockScenario:
    """A DirectoryLock on the directory; the child releases its inherited copy."""

    def __init__(self, directory: Path, leave: str) -> None:
        self.lock = DirectoryLock.acquire(directory)

    def in_child(self) -> dict[str, list[str]]:
        return {"release": attempt(self.lock.release)}

    def release(self) -> list[object]:
        self.lock.release()
        return []


class LogScenario:
    """A SegmentedLog with records b"one" and b"two"; the child tries every use of it."""

    def __init__(self, directory: Path, leave: str) -> None:
        self.log = SegmentedLog.open(directory)
        self.log.append(b"one")
        self.log.append(b"two")

    def in_child(self) -> dict[str, list[str]]:
        log = self.log
        uses = {
            "append": lambda: log.append(b"from the child"),
            "read": lambda: list(log.read()),
            "sync": log.sync,
            "close": log.close,
            "closed": lambda: log.closed,
        }
        return {use: attempt(call) for use, call in uses.items()}

    def append(self) -> list[object]:
        return [self.log.append(b"three")]

    def close(self) -> list[object]:
        self.log.close()
        return []


SCENARIOS = {"store": StoreScenario, "lock": LockScenario, "log": LogScenario}


def main(argv: list[str]) -> int:
    leave = argv[3] if len(argv) > 3 else "exit"
    scenario = SCENARIOS[argv[1]](Path(argv[2]), leave)
    say("ready", os.getpid())
    while command := sys.stdin.readline().strip():
        if command != "fork":
            say(command, *getattr(scenario, command)())
            continue
        pid = os.fork()
        if pid == 0:
            say("child", json.dumps(scenario.in_child()))
            return 0  # the child leaves main like any program: a normal exit, atexit and all
        say("exited", wait_for_exit(pid))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
