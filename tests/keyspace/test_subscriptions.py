"""Subscriptions deliver every durable change in seq order, from any retained seq, live after.

The reference is the log itself: a subscription from seq S must yield exactly what a replay
of the records from S yields, whether it read them from the log, from the writer's groups,
or switched between the two because it fell behind.
"""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path
from typing import Any

import msgspec
import pytest

from actors import (
    ActorEvent,
    Change,
    EventSourcedActor,
    HistoryUnavailable,
    InvalidInput,
    Store,
    Subscription,
)
from actors import _subscription as subscription_module
from storage.kvstate import KVState
from tests.keyspace.conftest import FakeClock
from tests.storage.faults import DurabilityTracker

TIMEOUT = 30

pytestmark = pytest.mark.usefixtures("runtime")  # each test under threads and Ray


def expected_changes(ks: Any, from_seq: int) -> list[tuple[int, str, str, Any, int]]:
    """What the log says from ``from_seq``: every key's history, merged in seq order."""
    keys = {key for key, _ in ks.range()} | set(DELETED)
    found = [
        (version.seq, key, version.op, version.value, version.version)
        for key in keys
        for version in ks.history(key)
        if version.seq >= from_seq
    ]
    return sorted(found, key=lambda change: change[0])


DELETED = ["gone", "short", "k0"]


def write_history(ks: Any, clock: FakeClock) -> None:
    for i in range(30):
        ks.put(f"k{i % 7}", i)
    ks.put("gone", 1)
    ks.delete("gone")
    ks.put("short", "x", ttl=5)
    with ks.batch() as batch:
        batch.put("b1", 1)
        batch.put("b2", 2)
        batch.delete("k0")
    clock.now += 10
    ks.sweep()  # records the expiry of "short"


def as_tuples(changes: list[Change]) -> list[tuple[int, str, str, Any, int]]:
    return [(c.seq, c.key, c.op, c.value, c.version) for c in changes]


def take(sub: Subscription[Any], count: int) -> list[Any]:
    items = []
    for _ in range(count):
        item = sub.next(timeout=TIMEOUT)
        assert item is not None, f"only {len(items)} of {count} arrived"
        items.append(item)
    return items


def test_from_any_seq_a_subscription_yields_what_the_log_holds_from_there(
    tmp_path: Path,
) -> None:
    clock = FakeClock(1_000.0)
    with Store.open(tmp_path, clock=clock, sweep_interval=3600) as store:
        ks = store.keyspace("k")
        write_history(ks, clock)
        last = ks.last_seq
        for from_seq in range(1, last + 2):
            expected = expected_changes(ks, from_seq)
            # history() orders a seq's changes by key; a batch delivers them in batch order
            with ks.subscribe(from_seq) as sub:
                got = as_tuples(take(sub, len(expected)))
                assert sub.next(timeout=0.05) is None  # nothing more, nothing repeated
            assert sorted(got) == sorted(expected)
            assert [change[0] for change in got] == sorted(change[0] for change in got)


def test_a_batch_s_changes_share_its_seq_in_the_batch_s_order(tmp_path: Path) -> None:
    with Store.open(tmp_path) as store:
        ks = store.keyspace("k")
        ks.put("z", 0)
        with ks.subscribe() as sub:
            with ks.batch() as batch:
                batch.put("z", 1)
                batch.put("a", 2)
                batch.delete("z")
                batch.put("m", 3)
            got = as_tuples(take(sub, 4))
        seq = batch.receipt.seq
        assert got == [
            (seq, "z", "put", 1, 2),
            (seq, "a", "put", 2, 1),
            (seq, "z", "delete", None, 0),
            (seq, "m", "put", 3, 1),
        ]


@pytest.mark.threads_only("it reads the subscription's internal queue")
def test_a_slow_subscriber_of_200k_changes_loses_and_repeats_nothing_in_bounded_memory(
    tmp_path: Path,
) -> None:
    total = 200_000
    with Store.open(tmp_path, fsync="never") as store:
        ks = store.keyspace("k")
        sub = ks.subscribe()
        most_queued = [0]

        def write() -> None:
            futures = []
            for i in range(total):
                futures.append(ks.put_async(f"k{i % 1000}", i))
                if len(futures) >= 5_000:
                    for future in futures:
                        future.get(timeout=TIMEOUT)
                    futures.clear()
                    most_queued[0] = max(most_queued[0], sub._queued)
            for future in futures:
                future.get(timeout=TIMEOUT)

        writer = threading.Thread(target=write)
        writer.start()
        values = []
        while len(values) < total:
            change = sub.next(timeout=TIMEOUT)
            assert change is not None, f"stalled after {len(values)} changes"
            values.append(change.value)
            most_queued[0] = max(most_queued[0], sub._queued)
            if len(values) % 20_000 == 0:
                time.sleep(0.2)  # fall far behind: the subscription reads the log
            # One group (admitted within the bound) or one chunk of the log, decoded:
            assert len(sub._buffer) <= subscription_module.LIVE_LIMIT
        writer.join(TIMEOUT)
        assert values == list(range(total))  # every change once, in order
        assert most_queued[0] <= subscription_module.LIVE_LIMIT
        assert sub.next(timeout=0.05) is None
        sub.close()


def test_a_subscriber_switches_between_the_log_and_live_delivery_without_a_gap(
    tmp_path: Path,
) -> None:
    with Store.open(tmp_path, fsync="never") as store:
        ks = store.keyspace("k")
        sub = ks.subscribe(from_seq=1)
        seen = []
        for round_number in range(6):
            for i in range(round_number * 3_000, (round_number + 1) * 3_000):
                ks.put("k", i)  # groups published while the subscriber is not reading
            seen += [change.value for change in take(sub, 3_000)]
        assert seen == list(range(18_000))
        sub.close()


def test_a_named_subscription_resumes_after_its_last_ack_across_reopens(
    tmp_path: Path,
) -> None:
    with Store.open(tmp_path) as store:
        ks = store.keyspace("k")
        for i in range(20):
            ks.put("k", i)
        sub = ks.subscribe(from_seq=1, name="mailer")
        first = take(sub, 8)
        sub.ack(first[5].seq)
        sub.close()
    with Store.open(tmp_path) as store:
        ks = store.keyspace("k")
        with ks.subscribe(name="mailer") as sub:  # after the ack, not after what was read
            assert [c.value for c in take(sub, 3)] == [6, 7, 8]
            sub.ack(sub.delivered)
        ks.put("k", 20)
        with ks.subscribe(name="mailer") as sub:
            assert [c.value for c in take(sub, 12)] == [*range(9, 20), 20]
        with ks.subscribe(name="other") as sub:  # a new name starts with the next change
            ks.put("k", 21)
            assert [c.value for c in take(sub, 1)] == [21]


@pytest.mark.threads_only("it reads the log's floor from the handle's internals")
def test_retention_keeps_what_a_named_subscription_has_not_acknowledged(
    tmp_path: Path,
) -> None:
    options: dict[str, Any] = {"retention": 0, "segment_bytes": 4096, "recovery_budget": None}
    with Store.open(tmp_path, **options) as store:
        ks = store.keyspace("k")
        sub = ks.subscribe(from_seq=1, name="slow")
        sub.close()  # not running: its durable position still holds the history
        for i in range(500):
            ks.put(f"k{i % 10}", i)
        ks.snapshot()
        assert ks.stats().snapshot_seq == 500
        assert store.keyspace("k")._core.log.first_seq == 1  # nothing dropped
    with Store.open(tmp_path, **options) as store:
        ks = store.keyspace("k")
        with ks.subscribe(name="slow") as sub:
            got = take(sub, 300)
            assert [c.value for c in got] == list(range(300))
            sub.ack(300)
        ks.compact()
        first = ks._core.log.first_seq
        assert 1 < first <= 301  # dropped only what was acknowledged
        with ks.subscribe(name="slow") as sub:
            assert [c.value for c in take(sub, 200)] == list(range(300, 500))


@pytest.mark.threads_only("it reads the log's floor from the handle's internals")
def test_an_open_subscription_holds_retention_back_too(tmp_path: Path) -> None:
    options: dict[str, Any] = {"retention": 0, "segment_bytes": 4096, "recovery_budget": None}
    with Store.open(tmp_path, **options) as store:
        ks = store.keyspace("k")
        sub = ks.subscribe(from_seq=1)
        for i in range(400):
            ks.put(f"k{i % 10}", i)
        ks.snapshot()
        assert ks._core.log.first_seq == 1
        assert [c.value for c in take(sub, 400)] == list(range(400))
        sub.close()
        ks.compact()
        assert ks._core.log.first_seq == 401


def test_prefix_deletes_and_expiry(tmp_path: Path) -> None:
    clock = FakeClock(1_000.0)
    with Store.open(tmp_path, clock=clock, sweep_interval=3600) as store:
        ks = store.keyspace("k")
        with ks.subscribe(prefix="user/") as sub:
            ks.put("user/1", "a", ttl=5)
            ks.put("other", "b")
            ks.delete("user/1")
            ks.put("user/2", "c", ttl=5)
            clock.now += 10
            ks.sweep()
            got = as_tuples(take(sub, 4))
            assert sub.next(timeout=0.05) is None
        assert [(op, key) for _, key, op, _, _ in got] == [
            ("put", "user/1"),
            ("delete", "user/1"),
            ("put", "user/2"),
            ("expire", "user/2"),
        ]


@pytest.mark.threads_only("it reads the log's floor from the handle's internals")
def test_bad_positions_and_acks_are_refused(tmp_path: Path) -> None:
    options: dict[str, Any] = {"retention": 0, "segment_bytes": 4096, "recovery_budget": None}
    with Store.open(tmp_path, **options) as store:
        ks = store.keyspace("k")
        for i in range(300):
            ks.put("k", i)
        ks.snapshot()
        floor = ks._core.log.first_seq
        assert floor > 1
        with pytest.raises(HistoryUnavailable):
            ks.subscribe(from_seq=1)
        for bad in (0, -1, "1", 1.0, ks.last_seq + 2):
            with pytest.raises(InvalidInput):
                ks.subscribe(from_seq=bad)  # type: ignore[arg-type]
        with ks.subscribe(from_seq=ks.last_seq + 1) as sub:
            ks.put("k", "new")
            change = take(sub, 1)[0]
            with pytest.raises(InvalidInput):
                sub.ack(change.seq + 1)  # not delivered yet
            sub.ack(change.seq)
            with pytest.raises(InvalidInput):
                sub.ack(change.seq - 1)  # going back


def test_closing_ends_iteration_and_a_closed_store_ends_its_subscriptions(
    tmp_path: Path,
) -> None:
    store = Store.open(tmp_path)
    ks = store.keyspace("k")
    sub = ks.subscribe()
    ks.put("a", 1)
    assert take(sub, 1)[0].value == 1
    done = []
    reader = threading.Thread(target=lambda: done.append(list(sub)))
    reader.start()
    store.close()
    reader.join(TIMEOUT)
    assert not reader.is_alive()
    assert done == [[]]


def test_async_iteration_does_not_block_the_event_loop(tmp_path: Path) -> None:
    async def main(ks: Any) -> tuple[list[int], int]:
        ticks = 0
        got: list[int] = []

        async def ticker() -> None:
            nonlocal ticks
            while True:
                ticks += 1
                await asyncio.sleep(0.01)

        async def consume() -> None:
            async for change in ks.subscribe(from_seq=1):
                got.append(change.value)
                if len(got) == 3:
                    return

        tick = asyncio.create_task(ticker())
        consumer = asyncio.create_task(consume())
        await asyncio.sleep(0.3)  # the consumer waits for changes meanwhile
        for i in range(3):
            await ks.aput("k", i)
        await asyncio.wait_for(consumer, TIMEOUT)
        tick.cancel()
        return got, ticks

    with Store.open(tmp_path) as store:
        got, ticks = asyncio.run(main(store.keyspace("k")))
    assert got == [0, 1, 2]
    assert ticks >= 10  # the loop ran while the subscription waited


class Added(msgspec.Struct, tag="added"):
    amount: int


class Counter(EventSourcedActor[int]):
    event_types = (Added,)

    def initial_state(self) -> int:
        return 0

    def apply(self, state: int, event: Added) -> int:
        return state + event.amount

    def add(self, amount: int) -> int:
        self.emit(Added(amount))
        return self.state


def test_a_custom_actor_s_events_come_with_their_seq_and_time(tmp_path: Path) -> None:
    clock = FakeClock(1_000.0)
    with Store.open(tmp_path, clock=clock) as store:
        counter = store.spawn("counter", Counter)
        counter.blocking.add(1)
        clock.now += 1
        with counter.subscribe(from_seq=1) as sub:
            counter.blocking.add(2)
            got = take(sub, 2)
    assert got == [ActorEvent(1, 1_000.0, Added(1)), ActorEvent(2, 1_001.0, Added(2))]


@pytest.mark.threads_only("it patches the state's commit in the test's process")
def test_a_subscription_taken_while_a_group_is_published_still_delivers_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Subscribing from "now" while a group is being made visible must not start after that
    # group: a caller that then reads the state could see neither it nor its change.
    taken: list[Subscription[Change]] = []
    with Store.open(tmp_path) as store:
        ks = store.keyspace("k")
        publish = KVState.commit

        def commit(state: KVState, first: int = 0, last: int = 0, time: float = 0.0) -> None:
            if first and not taken:
                taken.append(ks.subscribe())  # the group is durable, not yet visible
            publish(state, first, last, time)

        monkeypatch.setattr(KVState, "commit", commit)
        ks.put("a", 1)
        change = taken[0].next(timeout=TIMEOUT)
        assert change is not None
        assert (change.key, change.value) == ("a", 1)
        taken[0].close()


def test_an_acknowledged_position_never_outlives_the_records_after_a_power_cut(
    tmp_path: Path,
) -> None:
    path = tmp_path / "store"
    with Store.open(path) as store:
        ks = store.keyspace("k")
        ks.put("a", 0)
        ks.subscribe(name="mailer").close()
    with DurabilityTracker(root=tmp_path) as tracker:
        store = Store.open(path, fsync="interval", fsync_interval=30)
        ks = store.keyspace("k")
        for i in range(1, 4):
            ks.put("a", i)  # seqs 2..4: not fsynced by the log's own schedule
        with ks.subscribe(name="mailer") as sub:
            last = take(sub, 3)[-1]
            sub.ack(last.seq)  # syncs the log through seq 4 before the position
        tracker.cut_power()
        store.close()
        tracker.crash()
    with Store.open(path) as store:
        ks = store.keyspace("k")
        assert ks.last_seq == 4  # the acknowledged records survived the cut
        for i in range(4):
            ks.put("b", i)
        with ks.subscribe(name="mailer") as sub:
            assert sub.acked == 4
            assert [c.value for c in take(sub, 4)] == [0, 1, 2, 3]  # nothing skipped
