"""Who runs a command: the calling thread when the actor is idle, one command at a time.

The core hands an actor's execution right from caller to caller (and to the actor's home
thread for commands nobody waits for). These tests hold it to its contract: never two
commands at once, each caller's commands in its order, every caller answered (on stop and
on a failed fsync too), receipts carrying the log's numbers, and no deadlock when a command
calls another actor.
"""

from __future__ import annotations

import contextlib
import errno
import random
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest

from actors import EventSourcedActor, InvalidOperation, Published, Store, WriteFailed
from actors._core import GROUP_BYTES
from storage import _fileio
from tests.actors.conftest import TIMEOUT, Incremented, ProbeCounter, reopened_value
from tests.storage.faults import FaultInjector, FsyncGate


class Noted(msgspec.Struct, tag=True, frozen=True):
    caller: int
    n: int


class Recorder(EventSourcedActor[tuple[tuple[int, int], ...]]):
    """Records who sent what, and checks that no two of its commands ever overlap."""

    def __init__(self) -> None:
        self.running = 0
        self.overlaps = 0

    def initial_state(self) -> tuple[tuple[int, int], ...]:
        return ()

    def apply(
        self, state: tuple[tuple[int, int], ...], event: Noted
    ) -> tuple[tuple[int, int], ...]:
        return (*state, (event.caller, event.n))

    def note(self, caller: int, n: int) -> int:
        self.running += 1
        try:
            if self.running != 1:
                self.overlaps += 1
            for _ in range(random.randrange(50)):  # a chance for another thread to barge in
                pass
            self.emit(Noted(caller, n))
            return self.record_seq
        finally:
            self.running -= 1

    def where(self) -> int:
        return threading.get_ident()

    def notes(self) -> tuple[tuple[int, int], ...]:
        return self.state

    def overlapped(self) -> int:
        return self.overlaps


def test_a_blocking_caller_runs_its_command_in_its_own_thread_when_the_actor_is_idle(store):
    """The point of the core: a caller that waits pays no hop to another thread."""
    recorder = store.spawn("recorder", Recorder)
    assert recorder.blocking.where() == threading.get_ident()
    elsewhere = recorder.where().get(timeout=TIMEOUT)  # sent without waiting: the home thread
    assert elsewhere != threading.get_ident()


def test_blocking_callers_async_senders_sweeps_and_a_stop_never_overlap_or_reorder(tmp_path):
    path = tmp_path / "store"
    store = Store.open(path, sweep_interval=0.01)
    recorder = store.spawn("recorder", Recorder)
    ks = store.keyspace("ks")  # its sweeper ticks throughout
    ks.put("short", 1, ttl=0.001)
    acknowledged: dict[int, list[int]] = {}
    failures: list[BaseException] = []
    stopping = threading.Event()

    def blocking_caller(caller: int) -> None:
        mine = acknowledged.setdefault(caller, [])
        for n in range(400):
            try:
                recorder.blocking.note(caller, n)
            except Exception as exc:
                if not stopping.is_set():
                    failures.append(exc)
                return
            mine.append(n)

    def async_sender(caller: int) -> None:
        mine = acknowledged.setdefault(caller, [])
        futures = []
        for n in range(400):
            try:
                futures.append((n, recorder.note(caller, n)))
            except Exception as exc:
                if not stopping.is_set():
                    failures.append(exc)
                break
        for n, future in futures:
            try:
                future.get(timeout=TIMEOUT)
            except Exception as exc:
                if not stopping.is_set():
                    failures.append(exc)
                continue
            mine.append(n)

    threads = [threading.Thread(target=blocking_caller, args=(c,)) for c in range(6)]
    threads += [threading.Thread(target=async_sender, args=(c,)) for c in range(6, 9)]
    for thread in threads:
        thread.start()
    for _ in range(int(TIMEOUT * 100)):  # let them run a while, then stop under load
        if sum(map(len, acknowledged.values())) >= 1500:
            break
        stopping.wait(0.01)
    assert recorder.blocking.overlapped() == 0
    stopping.set()
    store.close()
    for thread in threads:
        thread.join(TIMEOUT)
    assert not [thread.name for thread in threads if thread.is_alive()], "a caller hung"
    assert failures == []
    with Store.open(path) as reopened:
        notes = reopened.spawn("recorder", Recorder).blocking.notes()
    for caller, mine in acknowledged.items():
        logged = [n for who, n in notes if who == caller]
        assert logged[: len(mine)] == mine  # every acknowledged command, in the caller's order
        assert logged == sorted(logged)
        assert len(logged) - len(mine) <= 400 - len(mine)  # only what it sent
    assert sum(map(len, acknowledged.values())) >= 1000


def test_sends_to_a_stopped_actor_raise_and_everything_queued_before_is_answered(store_path):
    store = Store.open(store_path)
    counter = store.spawn("counter", ProbeCounter)
    gate = threading.Event()
    held = counter.hold(gate)
    queued = [counter.increment(1) for _ in range(50)]
    stopped = counter.stop_async()
    gate.set()
    held.get(timeout=TIMEOUT)
    assert [future.get(timeout=TIMEOUT) for future in queued] == list(range(1, 51))
    stopped.get(timeout=TIMEOUT)
    store.close()
    assert reopened_value(store_path) == 50


def test_a_failed_fsync_answers_every_blocking_and_async_caller_of_its_group(store):
    counter = store.spawn("counter", ProbeCounter)
    counter.blocking.increment(1)
    with FaultInjector("fsync", nth=1, error=errno.EIO), held_fsync() as gate:
        first = counter.increment(1)  # its fsync holds the right: everyone else queues
        assert gate.entered.wait(TIMEOUT)
        outcomes: list[BaseException | int] = []

        def blocking() -> None:
            try:
                outcomes.append(counter.blocking.increment(1))
            except WriteFailed as exc:
                outcomes.append(exc)

        callers = [threading.Thread(target=blocking) for _ in range(5)]
        for caller in callers:
            caller.start()
        futures = [counter.increment(1) for _ in range(5)]
        for _ in range(int(TIMEOUT * 1000)):
            if counter.stats().queued == 10:
                break
            gate.entered.wait(0.001)
        assert counter.stats().queued == 10
        gate.release.set()
        with pytest.raises(WriteFailed):
            first.get(timeout=TIMEOUT)
        for future in futures:
            with pytest.raises(WriteFailed):
                future.get(timeout=TIMEOUT)
        for caller in callers:
            caller.join(TIMEOUT)
        assert len(outcomes) == 5
        assert all(isinstance(outcome, WriteFailed) for outcome in outcomes)
    assert counter.stats().failed


@contextlib.contextmanager
def held_fsync() -> Iterator[FsyncGate]:
    """An FsyncGate over whatever fsync is installed now (a fault injector, say), removed
    again on exit, before the injector below it is."""
    gate = FsyncGate(TIMEOUT)
    saved = _fileio.fsync
    _fileio.fsync = gate  # type: ignore[assignment]
    try:
        yield gate
    finally:
        _fileio.fsync = saved  # type: ignore[assignment]


class Relay(EventSourcedActor[int]):
    """A command that calls another actor and waits for it."""

    def __init__(self, target: Any) -> None:
        self.target = target

    def initial_state(self) -> int:
        return 0

    def apply(self, state: int, event: Incremented) -> int:
        return state + event.by

    def forward(self, by: int) -> int:
        downstream = self.target.blocking.increment(by)  # runs here if the target is idle
        also = self.target.increment(by).get(timeout=TIMEOUT)  # or by its home thread
        self.emit(Incremented(by))
        return downstream + also + self.state

    def call_itself(self, handle: Any) -> int:
        return int(handle.blocking.forward(1))


def test_a_command_that_waits_for_another_actor_does_not_deadlock(store):
    counter = store.spawn("counter", ProbeCounter)
    relay = store.spawn("relay", Relay, counter)
    results = []
    threads = [
        threading.Thread(target=lambda: results.append(relay.blocking.forward(1))) for _ in range(4)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(TIMEOUT)
    assert len(results) == 4
    assert counter.blocking.value() == 8
    assert relay.durable_state == 4


def test_a_command_waiting_for_its_own_actor_raises_invalid_operation(store):
    counter = store.spawn("counter", ProbeCounter)
    relay = store.spawn("relay", Relay, counter)
    with pytest.raises(InvalidOperation, match="wait for itself"):
        relay.blocking.call_itself(relay)
    assert relay.blocking.forward(1) > 0  # and it goes on serving


def test_receipts_carry_the_sequence_numbers_the_log_gave_their_records(store):
    ks = store.keyspace("ks")
    receipts = [ks.put(f"k{i}", i) for i in range(20)]
    receipts += [
        future.get(timeout=TIMEOUT) for future in [ks.put_async("a", 1) for _ in range(20)]
    ]
    assert [receipt.seq for receipt in receipts] == list(range(1, 41))
    assert ks.last_seq == 40
    assert ks.get_entry("a").seq == 40


class PublishProbe(ProbeCounter):
    """Records what each publish step told it."""

    def __init__(self) -> None:
        self.groups: list[Published] = []

    def on_published(self, group: Published) -> None:
        self.groups.append(group)
        super().on_published(group)

    def published(self) -> list[tuple[int, int, list[tuple[int, tuple[Any, ...]]]]]:
        return [(g.first_seq, g.last_seq, g.records) for g in self.groups]


def test_each_durable_group_is_published_once_with_its_range_and_events(store, monkeypatch):
    counter = store.spawn("counter", PublishProbe)
    counter.blocking.increment(1)
    gate = threading.Event()
    held = counter.hold(gate)
    grouped = [counter.increment(2), counter.add_each(3, 4), counter.value()]
    gate.set()
    held.get(timeout=TIMEOUT)
    [future.get(timeout=TIMEOUT) for future in grouped]
    assert counter.blocking.published() == [
        (1, 1, [(1, (Incremented(1),))]),
        (2, 3, [(2, (Incremented(2),)), (3, (Incremented(3), Incremented(4)))]),
    ]


def test_a_group_is_bounded_so_a_small_write_never_waits_for_huge_ones(store, monkeypatch):
    ks = store.keyspace("ks")
    ks.put("first", 1)
    gate = FsyncGate(TIMEOUT)
    monkeypatch.setattr(_fileio, "fsync", gate)
    held = ks.put_async("held", 1)  # its fsync holds the right while the rest queue up
    assert gate.entered.wait(TIMEOUT)
    receipts: list[Any] = []
    small = threading.Thread(target=lambda: receipts.append(ks.put("small", 1)))
    small.start()  # a caller that waits for its small write
    for _ in range(int(TIMEOUT * 1000)):
        if ks.stats().queued == 1:
            break
        gate.entered.wait(0.001)
    big = b"x" * (GROUP_BYTES * 3 // 10)
    bigs = [ks.put_async(f"big{i}", big) for i in range(4)]
    gate.release.set()
    held.get(timeout=TIMEOUT)
    small.join(TIMEOUT)
    assert receipts[0].seq == 3
    assert [future.get(timeout=TIMEOUT).seq for future in bigs] == [4, 5, 6, 7]
    # "first", "held", then the small put alone (a big one would overflow its group), then
    # three big ones (~0.9 of the bound) and the fourth on its own.
    assert ks.stats().groups == 5


def test_sends_nobody_waits_for_fill_a_whole_group(store, monkeypatch):
    ks = store.keyspace("ks")
    gate = FsyncGate(TIMEOUT)
    monkeypatch.setattr(_fileio, "fsync", gate)
    held = ks.put_async("held", 1)
    assert gate.entered.wait(TIMEOUT)
    futures = [ks.put_async(f"k{i:05d}", b"v" * 100) for i in range(3000)]  # ~400 KiB
    gate.release.set()
    held.get(timeout=TIMEOUT)
    [future.get(timeout=TIMEOUT) for future in futures]
    assert ks.stats().groups == 2
    assert ks.stats().largest_group == 3000


def test_durable_state_is_the_state_of_the_last_durable_group(store, monkeypatch):
    counter = store.spawn("counter", ProbeCounter)
    counter.blocking.increment(5)
    assert counter.durable_state == 5
    gate = FsyncGate(TIMEOUT)
    monkeypatch.setattr(_fileio, "fsync", gate)
    pending = counter.increment(1)
    assert gate.entered.wait(TIMEOUT)
    assert counter.durable_state == 5  # the increment is applied, not yet durable
    gate.release.set()
    assert pending.get(timeout=TIMEOUT) == 6
    assert counter.durable_state == 6


def test_put_async_answers_through_an_awaitable_future(tmp_path: Path):
    import asyncio

    async def main() -> list[int]:
        with Store.open(tmp_path / "store") as store:
            ks = store.keyspace("ks")
            receipts = await asyncio.gather(*(ks.aput(f"k{i}", i) for i in range(50)))
            future = ks.put_async("x", 1)
            receipt = await future
            return [r.seq for r in receipts] + [receipt.seq]

    seqs = asyncio.run(main())
    assert sorted(seqs) == list(range(1, 52))
