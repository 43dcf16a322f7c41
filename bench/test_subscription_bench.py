"""Benchmarks of subscriptions: delivery beside a writer, catching up from the log, latency.

Figures (reported in ``extra_info`` and printed with ``-s``, never asserted):

1. delivery throughput: one thread pipelines ``put_async`` (``fsync="never"``, 1,000
   futures in flight) of 100,000 changes while 0, 1 or 10 subscribers (a thread each,
   subscribed before the first put) read every one of them. Per subscriber: changes / the
   time from the first put to the last subscriber's last change; in total: that times the
   subscribers. 0 subscribers is the writer alone, for comparison.
2. catch-up: ``subscribe(from_seq=1)`` on a log of 200,000 records (one put each) read to
   its end, nothing written meanwhile (the subscription reads the log through its
   cursor); beside it, 20,000 records of 10-put batches (the same 200,000 changes).
3. latency: one durable put at a time (``fsync="always"`` and ``"never"``); the writer
   waits for the subscriber to receive each change before the next put. Reported: the time
   from the put returning to the subscriber's ``next()`` returning it (negative when the
   subscriber got it first: the writer publishes a group before it answers its callers),
   and from the put being called, p50 and p99 over every put of every round.

Every subscriber is checked to receive exactly the changes written, in order. Keys are
``key0000000000042`` (1,000 of them, overwritten), values the writer's counter ``i``.
Run with ``pytest bench/test_subscription_bench.py --benchmark-only -s``.

Measured (three runs, median and range; a 2-core VM, loaded by other work at the time):
the writer alone 100k puts/s (99-112k); with 1 subscriber 93k changes/s delivered
(86-101k); with 10 subscribers 42k/s each (42-44k), 424k/s in total (416-435k): the
subscribers' threads share the GIL with the writer, which slows to their pace. Catching up
from the log: 0.48M changes/s with one put per record (0.47-0.52M), 1.05M changes/s
(1.05-1.11M, 105k records/s) with 10-put batches. Latency, put returned -> received:
fsync="always" p50 12 us (11-13), p99 175 us (167-225); fsync="never" p50 9 us (8-9), p99
36 us (19-83); put called -> received: "always" p50 302 us (296-326), p99 4.0 ms (1.2-4.0),
"never" p50 39 us (36-42), p99 135 us (113-251). No change reached the subscriber before
its put returned.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from actors import KeySpace, Store, Subscription
from bench.conftest import bench_size

TIMEOUT = 600.0  # seconds any wait may take before the run is called hung
WINDOW = 1_000  # put_async futures in flight
KEYS = 1_000


def key_of(i: int) -> str:
    return f"key{i % KEYS:013d}"


class Stores:
    """Every store a benchmark opened; the previous round's is closed by the next setup
    (teardown is skipped when timing is disabled, so closing cannot be left to it)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.open: list[Store] = []

    def fresh(self, **options: Any) -> KeySpace:
        self.close_all()
        store = Store.open(self.root / f"store-{len(list(self.root.iterdir()))}", **options)
        self.open.append(store)
        return store.keyspace("bench")

    def close_all(self) -> None:
        while self.open:
            self.open.pop().close()


@pytest.fixture
def stores(tmp_path: Path) -> Iterator[Stores]:
    opened = Stores(tmp_path)
    yield opened
    opened.close_all()


def write_pipelined(ks: KeySpace, count: int) -> None:
    """``put_async(key_of(i), i)`` for ``i < count``, ``WINDOW`` futures in flight."""
    put_async = ks.put_async
    futures: list[Any] = []
    for i in range(count):
        futures.append(put_async(key_of(i), i))
        if len(futures) >= WINDOW:
            for future in futures:
                future.get(timeout=TIMEOUT)
            futures.clear()
    for future in futures:
        future.get(timeout=TIMEOUT)


def read_values(sub: Subscription[Any], count: int) -> list[Any]:
    """The values of the next ``count`` changes (fewer only if one does not come in time)."""
    values: list[Any] = []
    append, next_change = values.append, sub.next
    for _ in range(count):
        change = next_change(TIMEOUT)
        if change is None:
            break
        append(change.value)
    return values


# -- 1. delivery beside a writer ------------------------------------------------------------------


@pytest.mark.parametrize("subscribers", [0, 1, 10], ids=lambda n: f"{n} subscribers")
def test_delivery_beside_a_pipelined_writer(benchmark, stores, subscribers: int) -> None:
    count = bench_size(100_000, 500)
    received: list[list[list[Any]]] = []

    def setup() -> tuple[tuple[Any, ...], dict[str, Any]]:
        ks = stores.fresh(fsync="never")
        return (ks, [ks.subscribe() for _ in range(subscribers)]), {}

    def deliver(ks: KeySpace, subs: list[Subscription[Any]]) -> None:
        results: list[list[Any]] = [[] for _ in subs]

        def consume(index: int) -> None:
            results[index] = read_values(subs[index], count)

        threads = [threading.Thread(target=consume, args=(i,)) for i in range(len(subs))]
        for thread in threads:
            thread.start()
        write_pipelined(ks, count)
        for thread in threads:
            thread.join(TIMEOUT)
        received.append(results)

    benchmark.pedantic(deliver, setup=setup, rounds=bench_size(3, 1), warmup_rounds=0)
    expected = list(range(count))
    assert received
    for results in received:
        assert len(results) == subscribers
        for values in results:
            assert values == expected  # every change, once, in order
    stats = benchmark.stats
    if stats is None:
        return
    rate, best = count / stats.stats.median, count / stats.stats.min
    benchmark.extra_info["puts_per_s"] = round(rate)  # every change written and delivered
    if not subscribers:
        print(f"\nthe writer alone: {rate / 1e3:.0f}k puts/s (best round {best / 1e3:.0f}k/s)")
        return
    benchmark.extra_info["changes_per_s_per_subscriber"] = round(rate)
    benchmark.extra_info["changes_per_s_total"] = round(rate * subscribers)
    print(
        f"\n{subscribers} subscribers: {rate / 1e3:.0f}k changes/s each, "
        f"{rate * subscribers / 1e3:.0f}k/s in total (best round {best / 1e3:.0f}k/s each)"
    )


# -- 2. catching up from the log ------------------------------------------------------------------


LOGS = {"one put per record": 1, "10-put batches": 10}


@pytest.fixture(scope="module")
def written(tmp_path_factory) -> Iterator[dict[str, tuple[KeySpace, int]]]:
    """Each of :data:`LOGS`: a key space of 200,000 changes, and that count."""
    count = bench_size(200_000, 1_000)
    with Store.open(tmp_path_factory.mktemp("catch-up"), fsync="never") as store:
        logs = {}
        for name, per_record in LOGS.items():
            ks = store.keyspace(name.replace(" ", "-"))
            if per_record == 1:
                write_pipelined(ks, count)
            else:
                for start in range(0, count, per_record):
                    with ks.batch() as batch:
                        for i in range(start, start + per_record):
                            batch.put(key_of(i), i)
            assert ks.last_seq == count // per_record
            logs[name] = (ks, count)
        yield logs


@pytest.mark.parametrize("log", list(LOGS))
def test_catch_up_from_the_log(benchmark, written, log: str) -> None:
    ks, count = written[log]

    def catch_up() -> list[Any]:
        with ks.subscribe(from_seq=1) as sub:
            return read_values(sub, count)

    values = benchmark.pedantic(catch_up, rounds=bench_size(5, 1), warmup_rounds=bench_size(1, 0))
    assert values == list(range(count))
    stats = benchmark.stats
    if stats is None:
        return
    rate = count / stats.stats.median
    benchmark.extra_info["changes_per_s"] = round(rate)
    benchmark.extra_info["records_per_s"] = round(rate / LOGS[log])
    print(
        f"\ncatch-up, {log}: {rate / 1e6:.2f}M changes/s ({rate / LOGS[log] / 1e3:.0f}k records/s)"
    )


# -- 3. latency from put to delivery --------------------------------------------------------------


def ping_pong(ks: KeySpace, sub: Subscription[Any], count: int) -> tuple[list[float], list[float]]:
    """One put at a time, each received before the next; seconds from return and from call."""
    called, returned, received = [0.0] * count, [0.0] * count, [0.0] * count
    values: list[Any] = []
    arrived = threading.Semaphore(0)

    def subscriber() -> None:
        clock = time.perf_counter
        for i in range(count):
            change = sub.next(TIMEOUT)
            received[i] = clock()
            values.append(None if change is None else change.value)
            arrived.release()
            if change is None:
                return

    thread = threading.Thread(target=subscriber)
    thread.start()
    clock, put = time.perf_counter, ks.put
    for i in range(count):
        called[i] = clock()
        put(key_of(i), i)
        returned[i] = clock()
        assert arrived.acquire(timeout=TIMEOUT), f"change {i} never arrived"
    thread.join(TIMEOUT)
    assert values == list(range(count))
    after_return = [got - back for got, back in zip(received, returned, strict=True)]
    after_call = [got - sent for got, sent in zip(received, called, strict=True)]
    return after_return, after_call


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * fraction))]


@pytest.mark.parametrize("fsync", ["always", "never"], ids=lambda f: f"fsync={f}")
def test_latency_from_put_to_delivery(benchmark, stores, fsync: str) -> None:
    count = bench_size(2_000, 20)
    runs: list[tuple[list[float], list[float]]] = []

    def setup() -> tuple[tuple[Any, ...], dict[str, Any]]:
        ks = stores.fresh(fsync=fsync)
        return (ks, ks.subscribe(), count), {}

    def measure(ks: KeySpace, sub: Subscription[Any], count: int) -> None:
        runs.append(ping_pong(ks, sub, count))

    benchmark.pedantic(measure, setup=setup, rounds=bench_size(3, 1), warmup_rounds=0)
    after_return = [latency for run, _ in runs for latency in run]
    after_call = [latency for _, run in runs for latency in run]
    assert len(after_return) == count * len(runs)
    figures = {
        "after_return_p50_us": percentile(after_return, 0.50) * 1e6,
        "after_return_p99_us": percentile(after_return, 0.99) * 1e6,
        "after_call_p50_us": percentile(after_call, 0.50) * 1e6,
        "after_call_p99_us": percentile(after_call, 0.99) * 1e6,
        "delivered_before_return": sum(x < 0 for x in after_return) / len(after_return),
    }
    benchmark.extra_info.update({name: round(value, 3) for name, value in figures.items()})
    print(
        f"\nfsync={fsync}: put returned -> received p50 {figures['after_return_p50_us']:.0f} us, "
        f"p99 {figures['after_return_p99_us']:.0f} us "
        f"({figures['delivered_before_return']:.0%} received before the put returned); "
        f"put called -> received p50 {figures['after_call_p50_us']:.0f} us, "
        f"p99 {figures['after_call_p99_us']:.0f} us"
    )
