"""ks.transact(fn): serializable read-modify-write inside the key space's actor."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest

from actors import InvalidInput, InvalidOperation, InvalidValue, Store, VersionConflict

pytestmark = pytest.mark.usefixtures("runtime")  # each test under threads and Ray


def test_concurrent_transfers_keep_the_total_and_lose_no_update(tmp_path: Path) -> None:
    with Store.open(tmp_path, fsync="never") as store:
        ks = store.keyspace("bank")
        accounts = [f"acct{n}" for n in range(4)]
        for name in accounts:
            ks.put(name, 1_000)

        def transfer(view: Any, batch: Any, source: str, target: str) -> bool:
            balance = view.get(source)
            if balance < 7:
                return False
            batch.put(source, balance - 7)
            batch.put(target, view.get(target) + 7)
            return True

        moved: list[bool] = []

        def client(n: int) -> None:
            for i in range(150):
                source, target = accounts[(n + i) % 4], accounts[(n + i + 1) % 4]
                ok = ks.transact(lambda v, b, s=source, t=target: transfer(v, b, s, t))
                moved.append(ok)

        threads = [threading.Thread(target=client, args=(n,)) for n in range(16)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        balances = {name: ks.get(name) for name in accounts}
        assert sum(balances.values()) == 4_000
        assert len(moved) == 16 * 150
    with Store.open(tmp_path) as store:
        ks = store.keyspace("bank")
        assert {name: ks.get(name) for name in accounts} == balances


def test_a_transaction_sees_its_own_writes_and_returns_its_result(tmp_path: Path) -> None:
    with Store.open(tmp_path) as store:
        ks = store.keyspace("k")
        ks.put("a", 1)
        ks.put("b", 2)

        def body(view: Any, batch: Any) -> Any:
            seen = [view.get("a"), "c" in view]
            batch.put("c", 3)
            batch.delete("a")
            seen += [view.get("a"), view.get("c"), "c" in view, "a" in view]
            seen.append(batch.increment("n", 5))
            seen.append(batch.increment("n"))
            seen.append(list(view.range()))
            seen.append(view.get_many(["b", "c", "zz"]))
            return seen

        result = ks.transact(body)
        assert result == [
            1,
            False,
            None,
            3,
            True,
            False,
            5,
            6,
            [("b", 2), ("c", 3), ("n", 6)],
            {"b": 2, "c": 3},
        ]
        assert ks.last_seq == 3  # the two puts, then one record for the transaction
        assert dict(ks.items()) == {"b": 2, "c": 3, "n": 6}


def test_a_transaction_that_raises_writes_nothing(tmp_path: Path) -> None:
    with Store.open(tmp_path) as store:
        ks = store.keyspace("k")
        ks.put("a", 1)

        def body(_view: Any, batch: Any) -> None:
            batch.put("a", 2)
            batch.put("b", 3)
            message = "changed my mind"
            raise RuntimeError(message)

        with pytest.raises(RuntimeError, match="changed my mind"):
            ks.transact(body)
        assert dict(ks.items()) == {"a": 1}
        assert ks.last_seq == 1
        assert ks.transact(lambda _v, _b: "read only") == "read only"
        assert ks.last_seq == 1  # nothing written, no record


def test_bad_writes_inside_a_transaction_raise_there_and_write_nothing(tmp_path: Path) -> None:
    with Store.open(tmp_path) as store:
        ks = store.keyspace("k")
        ks.put("s", "text")
        with pytest.raises(InvalidValue):
            ks.transact(lambda _v, b: b.put("x", object()))
        with pytest.raises(InvalidValue):
            ks.transact(lambda _v, b: (b.put("x", 1), b.increment("s")))
        with pytest.raises(VersionConflict):
            ks.transact(lambda _v, b: (b.put("x", 1), b.put("s", "y", expect_version=9)))
        assert dict(ks.items()) == {"s": "text"}
        assert ks.last_seq == 1


@pytest.mark.threads_only(
    "its function calls the key space's own handle, which cannot be sent to a host"
)
def test_a_transaction_cannot_call_its_own_key_space_or_be_something_else(
    tmp_path: Path,
) -> None:
    with Store.open(tmp_path) as store:
        ks = store.keyspace("k")
        with pytest.raises(InvalidOperation):
            ks.transact(lambda _v, _b: ks.put("a", 1))
        with pytest.raises(InvalidInput):
            ks.transact("not a function")  # type: ignore[arg-type]
        assert ks.last_seq == 0
        ks.put("a", 1)  # the key space still works
        assert ks.get("a") == 1
