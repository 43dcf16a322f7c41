"""Replay through an upcaster: 1,000,000 records of an old event type against current ones.

Goal (issue 18; printed and put in ``extra_info``, never asserted): a replay of 1,000,000
records through one upcaster takes at most 1.5x the replay of the same records written with
the current type. Both logs are written directly (one small event per record, as a
counter's), then an actor is spawned on each and its open timed (no snapshot: the whole
log is replayed). Three alternating rounds; the median ratio and the range are reported.

Run with ``pytest bench/test_upcast_bench.py --benchmark-disable -s``.

Measured (2026-12-03, a 2-core VM shared with other work; three rounds each run): current
2.56 s, through the upcaster 4.90 s (ratio 1.90) before the one-event fast path; after it
and an untyped Decoder object, 2.94 s against 4.57 s: ratio median 1.56 (1.37-1.78), just
over the goal. Where the difference goes (a 300,000-record replay): decoding takes 0.19 s
for current records and 0.72 s for old ones (an untyped decode into dicts, then the
upcaster's call and its Struct); reading and checking the records (CRC, chain) is the same
for both and is most of the rest. With the old events' shapes learned from the first chunk
(a generated Struct per old tag, exact: a record of another shape falls back to the untyped
decode), one decoder call takes a whole chunk again: 3.98 s against 5.29 s, ratio median
1.40 (1.33-1.50), within the goal (measured while a CI run shared the machine).
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path
from typing import Any, ClassVar

import msgspec
import pytest

from actors import EventSourcedActor, Store
from bench.conftest import bench_size
from storage import SegmentedLog

RECORDS = bench_size(1_000_000, 2_000)
ROUNDS = bench_size(3, 1)


class OldAdded(msgspec.Struct, tag="added", frozen=True):
    amt: int


class Added(msgspec.Struct, tag="added.v2", frozen=True):
    amount: int


class Counter(EventSourcedActor[int]):
    def initial_state(self) -> int:
        return 0

    def apply(self, state: int, event: Added) -> int:
        return state + event.amount


class UpcastingCounter(Counter):
    upcasters: ClassVar[dict[str, Any]] = {"added": lambda fields: Added(fields["amt"])}


def write_log(path: Path, event: msgspec.Struct) -> None:
    with Store.open(path, recovery_budget=None):
        pass  # the store's layout; the log below is written as a running actor would
    record = b"\x91" + msgspec.msgpack.encode(event)
    with SegmentedLog.open(path / "actors" / "counter", fsync="never") as log:
        for start in range(0, RECORDS, 10_000):
            log.append_batch([record] * min(10_000, RECORDS - start))
        log.sync()


def replay_seconds(path: Path, actor_class: type[Counter]) -> float:
    with Store.open(path, recovery_budget=None) as store:
        started = time.perf_counter()
        counter = store.spawn("counter", actor_class)
        took = time.perf_counter() - started
        assert counter.durable_state == RECORDS  # every record, each counted once
    return took


@pytest.mark.benchmark(group="upcasting")
def test_replay_through_one_upcaster_against_current_events(benchmark: Any, tmp_path: Path) -> None:
    write_log(tmp_path / "current", Added(1))
    write_log(tmp_path / "old", OldAdded(1))
    current, upcast = [], []
    for _ in range(ROUNDS):
        current.append(replay_seconds(tmp_path / "current", Counter))
        upcast.append(replay_seconds(tmp_path / "old", UpcastingCounter))
    ratios = [u / c for u, c in zip(upcast, current, strict=True)]
    benchmark.extra_info.update(
        records=RECORDS,
        current_seconds=current,
        upcast_seconds=upcast,
        ratio_median=statistics.median(ratios),
        ratio_range=[min(ratios), max(ratios)],
        goal="<= 1.5",
    )
    print(
        f"\nreplay of {RECORDS:,} records: current {statistics.median(current):.2f} s "
        f"({min(current):.2f}-{max(current):.2f}), through one upcaster "
        f"{statistics.median(upcast):.2f} s ({min(upcast):.2f}-{max(upcast):.2f}); ratio "
        f"median {statistics.median(ratios):.2f} ({min(ratios):.2f}-{max(ratios):.2f}), goal <= 1.5"
    )
    benchmark.pedantic(lambda: None, rounds=1, iterations=1)
