"""Typed use of actorkv, as a user writes it: ``mypy --strict`` must accept all of it.

CI checks it from outside the repository against a regular install; ``test_typing.py``
checks it here, with ``typed_mistakes.py`` (what mypy must refuse).
"""

from __future__ import annotations

import msgspec

from actors import EventSourcedActor, Future, KeySpace, Receipt, Store


class Added(msgspec.Struct, tag="added", frozen=True):
    amount: int


class Counter(EventSourcedActor[int]):
    def initial_state(self) -> int:
        return 0

    def apply(self, state: int, event: Added) -> int:
        return state + event.amount

    def add(self, amount: int) -> int:
        self.emit(Added(amount))
        return self.state

    def reset_to(self, value: int, *, reason: str = "") -> str:
        self.emit(Added(value - self.state))
        return reason


class User(msgspec.Struct):
    name: str
    age: int


def use(path: str) -> tuple[int, int, str]:
    with Store.open(path) as store:
        counts: KeySpace[str, int] = store.keyspace("counts", value_type=int)
        receipt: Receipt = counts.put("a", 1)
        got: int | None = counts.get("a")
        fallback: int = counts.get("missing", 0)
        pairs: list[tuple[str, int]] = list(counts.range("a", "b"))
        users = store.keyspace("users", value_type=User)
        user: User | None = users.get("alice")
        keyed = store.keyspace("by_id", key_type=bytes, value_type=str)
        keyed.put(b"\x01", "one")
        places = store.keyspace("places", key_type=tuple)
        places.put(("fr", "paris"), {"population": 2_100_000})
        counter = store.spawn("counter", Counter)
        total: int = counter.blocking.ask(Counter.add, 2)
        later: Future[int] = counter.ask(Counter.add, 3)
        why: str = counter.blocking.ask(Counter.reset_to, 0, reason="new year")
        del got, fallback, pairs, user
        return receipt.seq + total, later.get(timeout=5), why
