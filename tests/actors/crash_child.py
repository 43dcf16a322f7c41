"""Child program of the kill -9 tests: hammers a counter and a bank until it is killed.

Run as ``python crash_child.py STORE_DIR`` with the repository root on ``PYTHONPATH``. The
parent sets up the bank's accounts first. Output, one flushed line each:

- ``sent`` just before an increment is sent (so the parent can bound what was issued);
- ``ack N`` once an increment is acknowledged (durable) with the new value ``N``.
"""

from __future__ import annotations

import contextlib
import random
import sys
import threading
from typing import Any

import msgspec

from actors import EventSourcedActor, Store
from examples.bank import Bank, InsufficientFunds

INCREMENTERS = 8
TRANSFERRERS = 2
ACCOUNTS = ("a", "b", "c")


class Bumped(msgspec.Struct, tag=True, frozen=True):
    by: int


class Tally(EventSourcedActor[int]):
    """A counter whose event types are declared, not read from ``apply``'s annotation."""

    event_types = (Bumped,)

    def initial_state(self) -> int:
        return 0

    def apply(self, state: int, event: Any) -> int:
        return state + event.by

    def bump(self) -> int:
        self.emit(Bumped(1))
        return self.state

    def value(self) -> int:
        return self.state


def main(argv: list[str]) -> int:
    store = Store.open(argv[1], fsync="always")
    tally = store.spawn("tally", Tally)
    bank = store.spawn("bank", Bank)
    printing = threading.Lock()

    def say(line: str) -> None:
        with printing:
            print(line, flush=True)

    def incrementer() -> None:
        while True:
            say("sent")
            say(f"ack {tally.bump().get(timeout=60)}")

    def transferrer(seed: int) -> None:
        rng = random.Random(seed)
        while True:
            source, target = rng.sample(ACCOUNTS, 2)
            with contextlib.suppress(InsufficientFunds):
                bank.transfer(source, target, rng.randint(1, 400)).get(timeout=60)

    threads = [threading.Thread(target=incrementer, daemon=True) for _ in range(INCREMENTERS)]
    threads += [
        threading.Thread(target=transferrer, args=(seed,), daemon=True)
        for seed in range(TRANSFERRERS)
    ]
    for thread in threads:
        thread.start()
    threading.Event().wait(120)  # the parent kills us long before this
    return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
