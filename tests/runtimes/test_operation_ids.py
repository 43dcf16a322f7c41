"""Operation ids: a write retried with the same id is applied once, across restarts too.

These drive a host (``actors._host``) in this process, as a remote runtime's host runs; the
Ray tests kill real hosts under load.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from actors import Receipt, Store
from actors._host import Host
from actors._operations import WINDOW_RECORDS
from tests.actors.conftest import Counter


def run(coroutine: Any) -> Any:
    return asyncio.run(coroutine)


def keyspace_host(path: Path) -> Host:
    return Host(str(path), "keyspace", "k", {}, {})


def test_a_retried_put_is_applied_once_and_answered_with_the_first_receipt(
    tmp_path: Path,
) -> None:
    host = keyspace_host(tmp_path)
    first = run(host.call("put", ("a", 1), {}, b"op-1"))
    again = run(host.call("put", ("a", 1), {}, b"op-1"))
    assert again == first == Receipt(1, 1)
    run(host.call("put", ("a", 2), {}, b"op-2"))
    assert run(host.call("get_entry", ("a",), {}, None)).version == 2
    host.close()
    # A restart: the window comes back from the log, with the first receipt.
    host = keyspace_host(tmp_path)
    assert run(host.call("put", ("a", 1), {}, b"op-1")) == Receipt(1, 1)
    assert run(host.call("put", ("a", 2), {}, b"op-2")) == Receipt(2, 2)
    assert run(host.call("last_seq", (), {}, None)) == 2
    host.close()


def test_ids_survive_a_snapshot_taken_after_them(tmp_path: Path) -> None:
    host = keyspace_host(tmp_path)
    for i in range(50):
        run(host.call("put", (f"k{i}", i), {}, f"op-{i}".encode()))
    run(host.call("snapshot", (), {}, None))
    host.close()
    host = keyspace_host(tmp_path)  # recovers from the snapshot: nothing replayed
    assert host.keyspace is not None
    assert host.keyspace.stats().records_replayed == 0
    assert run(host.call("put", ("k7", 7), {}, b"op-7")) == Receipt(8, 1)
    assert run(host.call("last_seq", (), {}, None)) == 50
    host.close()


def test_every_write_method_carries_its_id(tmp_path: Path) -> None:
    host = keyspace_host(tmp_path)
    writes: list[tuple[str, tuple[Any, ...]]] = [
        ("put", ("a", 1)),
        ("increment", ("n", 5)),
        ("delete", ("a",)),
        ("put_async", ("b", 2)),
        ("delete_async", ("b",)),
    ]
    answers = [run(host.call(m, args, {}, f"w{i}".encode())) for i, (m, args) in enumerate(writes)]
    receipt = run(host.batch([("put", ("c", 3), {})], b"batch-1"))
    assert run(host.call("last_seq", (), {}, None)) == 6
    for i, (method, args) in enumerate(writes):
        assert run(host.call(method, args, {}, f"w{i}".encode())) == answers[i]
    assert run(host.batch([("put", ("c", 3), {})], b"batch-1")) == receipt
    assert run(host.call("last_seq", (), {}, None)) == 6
    assert run(host.call("get", ("n",), {}, None)) == 5  # incremented once
    host.close()


def test_readers_of_the_log_never_see_the_ids(tmp_path: Path) -> None:
    host = keyspace_host(tmp_path)
    run(host.call("put", ("a", 1), {}, b"x"))
    run(host.call("put", ("a", 2), {}, b"y"))
    host.close()
    with Store.open(tmp_path) as store:  # the ordinary runtime reads the same log
        ks = store.keyspace("k")
        assert [v.value for v in ks.history("a")] == [1, 2]
        assert dict(ks.at(1).items()) == {"a": 1}
        with ks.subscribe(from_seq=1) as changes:
            seen = [changes.next(timeout=5) for _ in range(2)]
        assert [(c.key, c.value) for c in seen if c is not None] == [("a", 1), ("a", 2)]
        ks.put("a", 3)  # and goes on writing it, without ids
    host = keyspace_host(tmp_path)
    assert run(host.call("put", ("a", 2), {}, b"y")) == Receipt(2, 2)  # still known
    assert run(host.call("get", ("a",), {}, None)) == 3
    host.close()


def test_a_retried_actor_command_runs_once(tmp_path: Path) -> None:
    def counter() -> Host:
        return Host(str(tmp_path), "actor", "c", {}, (Counter, (), {}))

    host = counter()
    assert run(host.call("increment", (2,), {}, b"i1")) == 2
    assert run(host.call("increment", (2,), {}, b"i1")) == 2
    assert run(host.command_async("increment", (3,), {}, b"i2")) == 5
    assert run(host.command_async("increment", (3,), {}, b"i2")) == 5
    host.close()
    host = counter()
    assert run(host.call("increment", (2,), {}, b"i1")) == 2  # the first answer, as an int
    assert run(host.handle_call("durable_state", ())) == 5
    host.close()


def test_the_window_is_bounded(tmp_path: Path) -> None:
    host = keyspace_host(tmp_path)
    core = host.handle.core
    assert core.operations is not None
    for i in range(WINDOW_RECORDS + 10):
        core.operations.staged(f"op{i}".encode(), i + 1, None)
        core.operations.committed()
    assert len(core.operations) == WINDOW_RECORDS
    assert not core.operations.ran(core.operations.answer(b"op0", "put"))
    assert core.operations.ran(core.operations.answer(f"op{WINDOW_RECORDS + 9}".encode(), "put"))
    host.close()
