"""What mypy must refuse: each line marked ``# error: CODE`` is one error of that code."""

from __future__ import annotations

from actors import Store
from tests.typing.typed_usage import Counter


def misuse(path: str) -> None:
    with Store.open(path) as store:
        counts = store.keyspace("counts", value_type=int)
        wrong: str = counts.get("a", 0)  # error: assignment
        counts.put("a", "not an int")  # error: arg-type
        counts.put(1, 2)  # error: arg-type
        counter = store.spawn("counter", Counter)
        counter.ask(Counter.add, "two")  # error: arg-type
        text: str = counter.blocking.ask(Counter.add, 1)  # error: assignment
        counter.blocking.ask(Counter.reset_to, 0, why="x")  # error: call-arg
        del wrong, text
