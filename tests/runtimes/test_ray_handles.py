"""What the Ray runtime's handles keep in their host between calls: views and subscriptions."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path

import pytest

from actors import InvalidInput, KeyspaceClosed, Store

pytestmark = pytest.mark.usefixtures("ray_cluster")


def test_a_view_holds_its_point_while_retention_drops_the_records_under_it(
    tmp_path: Path,
) -> None:
    with Store.open(tmp_path / "s", runtime="ray", retention=0, segment_bytes=4096) as store:
        ks = store.keyspace("k")
        for i in range(20):
            ks.put("a", i)
        view = ks.at(5)
        assert (view.seq, view.get("a")) == (5, 4)
        for i in range(200):
            ks.put(f"k{i}", "x" * 50)
        ks.snapshot()
        ks.compact()
        assert view.get("a") == 4  # its point is still readable
        assert list(view.prefix("a")) == [("a", 4)]
        view.close()
        with pytest.raises(KeyspaceClosed, match=r"view .* is gone"):
            view.get("a")


def test_a_subscription_reports_its_position_and_ends_when_closed(tmp_path: Path) -> None:
    with Store.open(tmp_path / "s", runtime="ray") as store:
        ks = store.keyspace("k")
        changes = ks.subscribe(from_seq=1, name="reader")
        assert (changes.name, changes.acked, changes.delivered) == ("reader", 0, 0)
        ks.put("a", 1)
        ks.put("b", 2)

        async def two() -> list[str]:
            seen = []
            async for change in changes:
                seen.append(change.key)
                if len(seen) == 2:
                    return seen
            return seen

        assert asyncio.run(two()) == ["a", "b"]
        assert changes.delivered == 2
        changes.ack(2)
        assert changes.acked == 2
        changes.close()
        assert changes.closed
        with pytest.raises(StopIteration):
            changes.next(0)
    with Store.open(tmp_path / "s", runtime="ray") as store:
        resumed = store.keyspace("k").subscribe(name="reader")
        assert resumed.acked == 2  # durable across reopens, as under the threads runtime
        resumed.close()


def test_a_reader_waiting_on_a_subscription_ends_when_its_store_closes(tmp_path: Path) -> None:
    store = Store.open(tmp_path / "s", runtime="ray")
    ks = store.keyspace("k")
    changes = ks.subscribe()
    ks.put("a", 1)
    assert changes.next(timeout=10).key == "a"
    done: list[list[object]] = []
    reader = threading.Thread(target=lambda: done.append(list(changes)))
    reader.start()
    time.sleep(0.2)  # it waits in its host for the next change
    store.close()
    reader.join(30)
    assert not reader.is_alive()
    assert done == [[]]
    with pytest.raises(KeyspaceClosed, match="closed with its store"):
        ks.put("b", 2)


def test_an_argument_that_cannot_reach_the_host_is_bad_input(tmp_path: Path) -> None:
    with Store.open(tmp_path / "s", runtime="ray") as store:
        ks = store.keyspace("k")
        lock = threading.Lock()
        with pytest.raises(InvalidInput, match="cannot be sent to its host"):
            ks.transact(lambda view, batch: lock)
        with pytest.raises(InvalidInput, match="cannot be sent to its host"):
            ks.put_async("a", lock)  # refused before it is sent, as a write of it would be
        assert ks.last_seq == 0
        assert ks.put_async("a", 1).get(timeout=10).seq == 1  # the next one goes on
