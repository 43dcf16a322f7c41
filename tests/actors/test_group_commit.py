"""Group commit: concurrent commands share fsyncs, and nobody hears back before durability.

Fault injection patches ``storage._fileio.fsync``, the one seam every fsync goes through.
"""

from __future__ import annotations

import errno
import threading

import pykka
import pytest

import storage._fileio
from actors import ActorStopped, KeyspaceClosed, Store, WriteFailed
from tests.actors.conftest import TIMEOUT, ProbeCounter, reopened_value
from tests.storage.faults import FsyncGate

THREADS = 32
PER_THREAD = 200


def run_threads(target, count: int) -> None:
    threads = [threading.Thread(target=target, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not any(thread.is_alive() for thread in threads), "a sender hung"


def test_concurrent_writers_share_fsyncs_and_lose_nothing(store_path):
    with Store.open(store_path, fsync="always") as store:
        counter = store.spawn("counter", ProbeCounter)
        results: list[list[int]] = [[] for _ in range(THREADS)]

        def writer(i: int) -> None:
            for _ in range(PER_THREAD):
                results[i].append(counter.increment(1).get(timeout=TIMEOUT))

        run_threads(writer, THREADS)
        commands = THREADS * PER_THREAD
        stats = counter.stats()
        # Structural, not timing: the inbox fills while an fsync runs, so groups batch.
        assert stats.fsyncs < commands / 2
        assert stats.groups < commands / 2
        assert stats.largest_group > 1
        assert stats.records == commands
        assert counter.value().get(timeout=TIMEOUT) == commands
        every = sorted(v for per_thread in results for v in per_thread)
        assert every == list(range(1, commands + 1))  # each result seen exactly once
        assert all(r == sorted(r) for r in results)
    assert reopened_value(store_path) == commands


def test_pipelined_commands_from_one_thread_all_resolve_in_order(store_path):
    with Store.open(store_path) as store:
        counter = store.spawn("counter", ProbeCounter)
        futures = [counter.increment(1) for _ in range(2000)]
        results = pykka.get_all(futures, timeout=TIMEOUT)
        assert results == list(range(1, 2001))
        stats = counter.stats()
        # Commands queued while a group is written share its fsync: far fewer than 2,000.
        assert stats.records == 2000
        assert stats.fsyncs < 2000 / 10
        assert stats.groups == stats.fsyncs
    assert reopened_value(store_path) == 2000


def test_fsync_never_writes_groups_without_fsyncs(store_path):
    with Store.open(store_path, fsync="never") as store:
        counter = store.spawn("counter", ProbeCounter)
        for _ in range(5):
            counter.increment(1).get(timeout=TIMEOUT)
        assert counter.stats().groups == 5
        assert counter.stats().fsyncs == 0
    assert reopened_value(store_path) == 5


def test_replies_in_a_group_wait_until_its_record_is_durable(store, monkeypatch):
    counter = store.spawn("counter", ProbeCounter)
    counter.increment(1).get(timeout=TIMEOUT)
    blocking = FsyncGate(TIMEOUT)
    monkeypatch.setattr(storage._fileio, "fsync", blocking)
    gate = threading.Event()
    held = counter.hold(gate)  # the actor thread waits; the next commands queue up
    emitting = counter.increment(10)
    query = counter.value()
    refused = counter.increment(0)
    gate.set()
    assert held.get(timeout=TIMEOUT) is None  # it saw only durable state: answered at once
    assert blocking.entered.wait(TIMEOUT)
    for future in (emitting, query, refused):
        with pytest.raises(pykka.Timeout):
            future.get(timeout=0.2)  # not before the group's fsync returns
    blocking.release.set()
    assert emitting.get(timeout=TIMEOUT) == 11
    assert query.get(timeout=TIMEOUT) == 11  # it observed the not-yet-durable state
    with pytest.raises(ValueError, match="positive"):
        refused.get(timeout=TIMEOUT)
    stats = counter.stats()
    assert stats.groups == 2  # the first increment, then one group for all three
    assert stats.largest_group == 3


def test_closing_the_store_with_commands_in_flight_answers_every_future(store_path):
    store = Store.open(store_path)
    counter = store.spawn("counter", ProbeCounter)
    started = threading.Barrier(9)
    succeeded = [0] * 8
    stopped = [0] * 8
    hung: list[int] = []

    def sender(i: int) -> None:
        started.wait(TIMEOUT)
        while True:
            futures = []
            try:
                for _ in range(20):
                    futures.append(counter.increment(1))  # noqa: PERF401  keep those sent
            except ActorStopped:
                stopped[i] += 1
            for future in futures:
                try:
                    future.get(timeout=TIMEOUT)
                    succeeded[i] += 1
                except (ActorStopped, KeyspaceClosed):
                    stopped[i] += 1
                except pykka.Timeout:
                    hung.append(i)
                    return
            if stopped[i] or hung:
                return

    threads = [threading.Thread(target=sender, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    started.wait(TIMEOUT)
    pause = threading.Event()
    for _ in range(10_000):  # wait until commands flow, but never forever
        if sum(succeeded) >= 200 or hung:
            break
        pause.wait(0.001)
    store.close()
    for thread in threads:
        thread.join(60)
    assert not any(thread.is_alive() for thread in threads)
    assert hung == []
    assert all(stopped)  # every sender eventually heard ActorStopped
    assert reopened_value(store_path) == sum(succeeded)


class FailingFsync:
    """Stands in for ``storage._fileio.fsync``: the first call raises EIO, later ones work."""

    def __init__(self) -> None:
        self.real = storage._fileio.fsync
        self.calls = 0

    def __call__(self, fd: int) -> None:
        self.calls += 1
        if self.calls == 1:
            raise OSError(errno.EIO, "injected I/O error")
        self.real(fd)


def test_a_failed_fsync_fails_its_whole_group_and_every_later_command(store_path, monkeypatch):
    with Store.open(store_path) as store:
        counter = store.spawn("counter", ProbeCounter)
        for _ in range(5):
            counter.increment(1).get(timeout=TIMEOUT)
        monkeypatch.setattr(storage._fileio, "fsync", FailingFsync())
        gate = threading.Event()
        held = counter.hold(gate)
        group = [counter.increment(1) for _ in range(3)] + [counter.value()]
        gate.set()
        held.get(timeout=TIMEOUT)
        for future in group:
            with pytest.raises(WriteFailed, match="reopening the store"):
                future.get(timeout=TIMEOUT)
        for later in (counter.increment(1), counter.value()):
            with pytest.raises(WriteFailed):
                later.get(timeout=TIMEOUT)
        stats = counter.stats()
        assert stats.failed
        assert stats.records == 5
    monkeypatch.undo()
    with Store.open(store_path) as store:
        counter = store.spawn("counter", ProbeCounter)
        assert counter.value().get(timeout=TIMEOUT) == 5  # the failed group is absent
        assert not counter.stats().failed
        assert counter.increment(1).get(timeout=TIMEOUT) == 6
    assert reopened_value(store_path) == 6


def test_a_write_failure_under_concurrent_writers_keeps_only_acknowledged_commands(
    store_path, monkeypatch
):
    with Store.open(store_path) as store:
        counter = store.spawn("counter", ProbeCounter)
        acknowledged = [0] * 8
        refused = [0] * 8
        failing = FailingFsync()
        armed = threading.Event()

        def writer(i: int) -> None:
            for n in range(100):
                if i == 0 and n == 30:
                    monkeypatch.setattr(storage._fileio, "fsync", failing)
                    armed.set()
                try:
                    counter.increment(1).get(timeout=TIMEOUT)
                    acknowledged[i] += 1
                except WriteFailed:
                    refused[i] += 1

        run_threads(writer, 8)
        assert armed.is_set()
        assert failing.calls >= 1
        assert sum(refused) >= 1
        assert counter.stats().failed
    monkeypatch.undo()
    assert reopened_value(store_path) == sum(acknowledged)


class HookRecorder(ProbeCounter):
    """Appends ``(hook, state)`` to a list the test holds, from the actor thread."""

    def __init__(self, calls: list[tuple[str, int]]) -> None:
        self.calls = calls

    def on_persisted(self) -> None:
        self.calls.append(("persisted", self.state))

    def on_write_failed(self) -> None:
        self.calls.append(("write_failed", self.state))


def test_hooks_see_durable_state_after_replay_each_group_and_a_failed_write(
    store_path, monkeypatch
):
    calls: list[tuple[str, int]] = []
    with Store.open(store_path) as store:
        recorder = store.spawn("counter", HookRecorder, calls)
        recorder.increment(2).get(timeout=TIMEOUT)
        recorder.value().get(timeout=TIMEOUT)  # no write, no hook
        recorder.increment(3).get(timeout=TIMEOUT)
    assert calls == [("persisted", 0), ("persisted", 2), ("persisted", 5)]
    calls.clear()
    with Store.open(store_path) as store:
        recorder = store.spawn("counter", HookRecorder, calls)
        assert calls == [("persisted", 5)]  # once, after replay
        monkeypatch.setattr(storage._fileio, "fsync", FailingFsync())
        with pytest.raises(WriteFailed):
            recorder.add_each(1, 1).get(timeout=TIMEOUT)
        assert calls == [("persisted", 5), ("write_failed", 5)]  # durable state restored


class RaisingHooks(ProbeCounter):
    """An actor whose durability hooks have a bug once ``arm`` ran."""

    armed = False

    def arm(self) -> None:
        self.armed = True

    def on_persisted(self) -> None:
        if self.armed:
            raise RuntimeError("bug in on_persisted")

    def on_write_failed(self) -> None:
        raise RuntimeError("bug in on_write_failed")


def test_a_raising_on_persisted_hook_answers_the_group_and_refuses_later_commands(store):
    fragile = store.spawn("counter", RaisingHooks)
    fragile.arm().get(timeout=TIMEOUT)
    future = fragile.increment(1)
    # Durable but not published: the caller hears "outcome unknown", never silence.
    with pytest.raises(WriteFailed):
        future.get(timeout=2)
    with pytest.raises(WriteFailed):
        fragile.increment(1).get(timeout=2)
    assert fragile.stats().failed


def test_a_raising_on_write_failed_hook_still_answers_the_group(store, monkeypatch):
    fragile = store.spawn("counter", RaisingHooks)
    fragile.increment(1).get(timeout=TIMEOUT)
    monkeypatch.setattr(storage._fileio, "fsync", FailingFsync())
    future = fragile.increment(1)
    with pytest.raises(WriteFailed):
        future.get(timeout=2)
    with pytest.raises(WriteFailed):  # still alive, still refusing
        fragile.increment(1).get(timeout=2)
