"""Benchmarks of the actor framework: durable commands, group commit, replay.

Goals on a 2-core machine (issue 3): 16 client threads >= 60% of the no-I/O ceiling (one
plain thread answering futures) while durable; one thread pipelining 10,000 futures >= 40,000
durable commands/s; replay >= 500,000 events/s. Figures land in ``extra_info``; nothing here
asserts a time.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec
import pykka
import pytest

from actors import EventSourcedActor, Store
from actors.runtimes import PykkaRuntime
from storage import SegmentedLog


class Incremented(msgspec.Struct, tag=True, frozen=True, array_like=True):
    by: int


class Counter(EventSourcedActor[int]):
    def initial_state(self) -> int:
        return 0

    def apply(self, state: int, event: Incremented) -> int:
        return state + event.by

    def increment(self, by: int) -> int:
        self.emit(Incremented(by))
        return self.state


def run_threads(threads: int, per_thread: int, call: Callable[[], Any]) -> None:
    """Run ``call`` ``per_thread`` times in each of ``threads`` threads; wait for all."""
    start = threading.Barrier(threads)

    def worker() -> None:
        start.wait()
        for _ in range(per_thread):
            call()

    workers = [threading.Thread(target=worker) for _ in range(threads)]
    for thread in workers:
        thread.start()
    for thread in workers:
        thread.join()


FUTURES = {"pykka-future": pykka.ThreadingFuture, "reply-latch": PykkaRuntime.future_type}


@pytest.mark.parametrize("future_kind", list(FUTURES))
@pytest.mark.parametrize("threads", [1, 16], ids=lambda n: f"{n}-threads")
def test_ceiling_round_trip_through_a_plain_thread(
    benchmark, bench_size, record_rate, threads, future_kind
):
    """No I/O at all: futures answered by one thread. The ceiling for blocking callers.

    Measured with pykka's ThreadingFuture and with the framework's lighter PykkaFuture.
    """
    per_thread = bench_size(8000 // threads if threads > 1 else 4000, 20)
    make_future = FUTURES[future_kind]
    requests: queue.SimpleQueue[pykka.Future[int] | None] = queue.SimpleQueue()

    def serve() -> None:
        while (future := requests.get()) is not None:
            future.set(1)

    server = threading.Thread(target=serve)
    server.start()

    def call() -> None:
        future: pykka.Future[int] = make_future()
        requests.put(future)
        future.get(timeout=10)

    try:
        benchmark.pedantic(run_threads, args=(threads, per_thread, call), rounds=3)
    finally:
        requests.put(None)
        server.join()
    record_rate(threads * per_thread)


@pytest.mark.parametrize("threads", [1, 16, 64], ids=lambda n: f"{n}-threads")
def test_durable_commands_from_blocking_threads(
    benchmark, bench_size, record_rate, tmp_path: Path, threads
):
    """fsync="always": each caller waits for its command to be durable."""
    per_thread = bench_size({1: 1000, 16: 250, 64: 80}[threads], 5)
    with Store.open(tmp_path, fsync="always") as store:
        counter = store.spawn("counter", Counter)

        def call() -> None:
            counter.increment(1).get(timeout=30)

        benchmark.pedantic(run_threads, args=(threads, per_thread, call), rounds=3)
        stats = counter.stats()
        assert counter.increment(1).get(timeout=30) == stats.commands + 1
    record_rate(threads * per_thread)
    benchmark.extra_info["fsyncs_per_command"] = round(stats.fsyncs / stats.commands, 4)
    benchmark.extra_info["largest_group"] = stats.largest_group


def test_durable_commands_pipelined_from_one_thread(
    benchmark, bench_size, record_rate, tmp_path: Path
):
    """One thread sends 10,000 commands as futures, then waits for all of them."""
    count = bench_size(10_000, 50)
    with Store.open(tmp_path, fsync="always") as store:
        counter = store.spawn("counter", Counter)

        rounds = []

        def pipeline() -> None:
            futures = [counter.increment(1) for _ in range(count)]
            rounds.append(max(future.get(timeout=60) for future in futures))

        benchmark.pedantic(pipeline, rounds=3)
        stats = counter.stats()
    assert rounds[-1] == stats.records == len(rounds) * count
    record_rate(count)
    benchmark.extra_info["fsyncs_per_command"] = round(stats.fsyncs / stats.commands, 4)


@pytest.fixture(scope="module")
def counter_log(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, int]:
    """A store whose counter log holds N one-event records (written directly, fast)."""
    from bench.conftest import bench_size

    events = bench_size(1_000_000, 1000)
    path = tmp_path_factory.mktemp("replay")
    payload = msgspec.msgpack.encode([Incremented(1)])
    chunk = [payload] * 10_000
    with SegmentedLog.open(path / "actors" / "counter", fsync="never") as log:
        while log.last_seq < events:
            log.append_batch(chunk[: events - log.last_seq])
    return path, events


def test_replay_of_a_counter_log(benchmark, record_rate, counter_log):
    """Spawn = open the log + fold every event through apply (+ stop)."""
    path, events = counter_log

    def spawn_and_stop() -> int:
        with Store.open(path, fsync="never") as store:
            counter = store.spawn("counter", Counter)
            return counter.stats().events_replayed

    replayed = benchmark.pedantic(spawn_and_stop, rounds=3)
    assert replayed == events
    record_rate(events)
