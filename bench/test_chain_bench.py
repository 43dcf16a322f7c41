"""Benchmarks of format version 2: appends with the hash chain, verify, and time queries.

Goals (issue 12; reported, never asserted):

- appending 1,000 x 100-byte records, ``fsync="never"``: the chain <= 15% slower;
- ``storage.verify`` >= 1,000,000 records/s on a log of ~1M records;
- ``time_of`` / ``seq_at``: measured (no goal), cold (the first query of a segment builds
  its index) and warm.

"Without the chain" is not a switch in the engine (nothing was added to it for a benchmark):
``test_the_hash_step_alone`` times exactly the calls the encoder makes to hash the same
1,000 records, so the engine without the chain costs the append minus that. The version-1
engine itself (the commit before format 2) is compared by running ``test_bench_log.py`` on
both checkouts; see the report of the change for both figures.

Each benchmark stores ``records_per_s`` (median round) and ``records_per_s_best`` in
``extra_info`` (``queries_per_s`` for the time queries).

Measured (four runs, median of the medians; a 2-core VM shared with other work): 1,000
appends of one record 3.15 ms, as one batch 1.20 ms, the hash step alone 0.46 ms: without
it 2.69 and 0.74 ms, so the chain costs 17% one by one and 61% in one batch (the version-1
engine: 2.11 and 0.56 ms). verify 0.72M records/s at 100 bytes, 0.97M at 30 bytes;
``time_of`` 26 us warm, ``seq_at`` 61 us warm, 0.7 us per record to build an index cold.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from storage import LogReader, SegmentedLog, verify
from storage._framing import encode_records
from storage.chain import record_hasher

PAYLOAD_BYTES = 100
RECORDS = 1_000
QUERIES = 1_000


def payloads_of(count: int, size: int = PAYLOAD_BYTES) -> list[bytes]:
    """``count`` distinct payloads of ``size`` bytes."""
    return [(i.to_bytes(8, "little") * (size // 8 + 1))[:size] for i in range(count)]


class Clock:
    """A clock that ticks a microsecond per call: distinct, increasing commit times."""

    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        self.now += 1e-6
        return self.now


# -- 1. appends with the chain, and the hash step alone ---------------------------------------


@pytest.mark.parametrize("shape", ["append-1000x1", "append_batch-1000"])
def test_append_with_the_chain(
    benchmark,
    tmp_path_factory: pytest.TempPathFactory,
    bench_size: Callable[[int, int], int],
    record_rate: Callable[[int], None],
    shape: str,
) -> None:
    batch = payloads_of(bench_size(RECORDS, 10))
    opened: list[SegmentedLog] = []

    def fresh_log() -> tuple[tuple[SegmentedLog], dict[str, object]]:
        log = SegmentedLog.open(tmp_path_factory.mktemp("chain-append"), fsync="never")
        opened.append(log)
        return (log,), {}

    def one_by_one(log: SegmentedLog) -> int:
        append = log.append
        for payload in batch:
            last = append(payload)
        return last

    def one_batch(log: SegmentedLog) -> int:
        return log.append_batch(batch)

    try:
        last_seq = benchmark.pedantic(
            one_by_one if shape == "append-1000x1" else one_batch,
            setup=fresh_log,
            teardown=SegmentedLog.close,
            rounds=bench_size(200, 1),
            warmup_rounds=bench_size(5, 0),
        )
    finally:
        for log in opened:  # teardown does not run under --benchmark-disable
            log.close()
    assert last_seq == len(batch)
    record_rate(len(batch))


def test_the_hash_step_alone(
    benchmark, bench_size: Callable[[int, int], int], record_rate: Callable[[int], None]
) -> None:
    """The encoder's hash calls for 1,000 records (what the chain adds), nothing else."""
    batch = payloads_of(bench_size(RECORDS, 10))
    framed, expected_head = encode_records(1, batch, bytes(32), 1.0, record_hasher(None))
    headers = [framed[offset + 4 : offset + 28] for offset in _offsets(framed)]
    copy = record_hasher(None).copy

    def hash_all() -> bytes:
        head = bytes(32)
        for hashed, payload in zip(headers, batch, strict=True):
            digest = copy()
            digest.update(head + hashed)
            digest.update(payload)
            head = digest.digest()
        return head

    head = benchmark.pedantic(hash_all, rounds=bench_size(200, 1), warmup_rounds=bench_size(5, 0))
    assert head == expected_head
    record_rate(len(batch))


def _offsets(framed: bytes) -> Iterator[int]:
    offset = 0
    while offset < len(framed):
        yield offset
        offset += 60 + int.from_bytes(framed[offset + 4 : offset + 8], "little")


# -- 2. verify ---------------------------------------------------------------------------------


@pytest.fixture(scope="module", params=[100, 30], ids=lambda size: f"{size}B")
def big_log(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    bench_size: Callable[[int, int], int],
) -> Path:
    """A closed log of ~1,000,000 records (three segments at 100 bytes), written once."""
    total = bench_size(1_000_000, 1_000)
    batch = payloads_of(min(total, 10_000), request.param)
    path = tmp_path_factory.mktemp(f"verify-{request.param}")
    with SegmentedLog.open(path, fsync="never", clock=Clock()) as log:
        while log.last_seq < total:
            log.append_batch(batch[: total - log.last_seq])
    return path


def test_verify(
    benchmark, big_log: Path, bench_size: Callable[[int, int], int], record_rate
) -> None:
    report = benchmark.pedantic(
        verify, args=(big_log,), rounds=bench_size(5, 1), warmup_rounds=bench_size(1, 0)
    )
    assert report.ok, report.problems
    assert report.records == report.last_seq == bench_size(1_000_000, 1_000)
    record_rate(report.records)


# -- 3. time_of and seq_at ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def timed_log(
    tmp_path_factory: pytest.TempPathFactory, bench_size: Callable[[int, int], int]
) -> tuple[Path, list[float]]:
    """~1,000,000 records of 100 bytes in groups of 10, a distinct time per group."""
    total = bench_size(1_000_000, 1_000)
    batch = payloads_of(10)
    clock = Clock()
    times: list[float] = []
    path = tmp_path_factory.mktemp("times")
    with SegmentedLog.open(path, fsync="never", clock=clock) as log:
        while log.last_seq < total:
            log.append_batch(batch)
            times += [log.last_time] * len(batch)
    return path, times


@pytest.mark.parametrize("query", ["time_of", "seq_at"])
@pytest.mark.parametrize("index", ["cold", "warm"])
def test_time_queries(
    benchmark,
    timed_log: tuple[Path, list[float]],
    bench_size: Callable[[int, int], int],
    query: str,
    index: str,
) -> None:
    path, times = timed_log
    rng = random.Random(12)
    seqs = [rng.randint(1, len(times) - 1) for _ in range(bench_size(QUERIES, 10))]
    warm = LogReader.open(path)
    if index == "warm":
        for seq in seqs:
            warm.time_of(seq)  # the indexes these queries need are built

    def fresh_reader() -> tuple[tuple[LogReader], dict[str, object]]:
        return (LogReader.open(path) if index == "cold" else warm,), {}

    def ask(reader: LogReader) -> list[int | float]:
        if query == "time_of":
            return [reader.time_of(seq) for seq in seqs]
        return [reader.seq_at(times[seq - 1]) for seq in seqs]

    answers = benchmark.pedantic(
        ask, setup=fresh_reader, rounds=bench_size(5, 1), warmup_rounds=bench_size(1, 0)
    )
    if query == "time_of":
        assert answers == [times[seq - 1] for seq in seqs]
    else:  # the last record of the group that holds seq: groups of 10, from seq 1
        assert answers == [(seq + 9) // 10 * 10 for seq in seqs]
    stats = benchmark.stats
    benchmark.extra_info["queries_per_round"] = len(seqs)
    if stats is not None and stats.stats.median > 0:
        benchmark.extra_info["queries_per_s"] = round(len(seqs) / stats.stats.median)
        benchmark.extra_info["us_per_query"] = round(stats.stats.median / len(seqs) * 1e6, 1)
