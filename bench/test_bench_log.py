"""Benchmarks of the segmented log: batched appends, full replay, and fsync cost.

Goals on an ordinary machine (reported, never asserted):

- ``append_batch`` of 1,000 x 100-byte payloads, ``fsync="never"``: >= 1,000,000 records/s;
- ``read()`` of 1,000,000 records of 100 bytes: >= 1,000,000 records/s;
- ``fsync="always"``: at 512 records per batch the log reaches >= 80% of the records/s of a
  raw ``os.write`` + ``os.fsync`` of the same bytes to a plain ``O_APPEND`` file.

Each benchmark stores ``records_per_s`` (median round) and ``records_per_s_best`` in
``extra_info``, so ``--benchmark-json`` carries them. Correctness is asserted cheaply (the
returned ``last_seq``, the number of records read); times never are.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from storage import SegmentedLog
from storage._format import RECORD_HEADER_SIZE

PAYLOAD_BYTES = 100


def payloads_of(count: int) -> list[bytes]:
    """``count`` distinct 100-byte payloads (distinct, so nothing is accidentally shared)."""
    return [
        i.to_bytes(8, "little") * (PAYLOAD_BYTES // 8) + bytes(PAYLOAD_BYTES % 8)
        for i in range(count)
    ]


# -- 1. append_batch, fsync="never" -----------------------------------------------------------


def test_append_batch_of_1000_without_fsync(
    benchmark,
    tmp_path_factory: pytest.TempPathFactory,
    bench_size: Callable[[int, int], int],
    record_rate: Callable[[int], None],
) -> None:
    batch = payloads_of(bench_size(1_000, 10))
    opened: list[SegmentedLog] = []

    def fresh_log() -> tuple[tuple[SegmentedLog], dict[str, object]]:
        log = SegmentedLog.open(tmp_path_factory.mktemp("append-never"), fsync="never")
        opened.append(log)
        return (log,), {}

    def append(log: SegmentedLog) -> int:
        return log.append_batch(batch)

    try:
        last_seq = benchmark.pedantic(
            append,
            setup=fresh_log,
            teardown=SegmentedLog.close,
            rounds=bench_size(300, 1),
            warmup_rounds=bench_size(5, 0),
        )
    finally:
        for log in opened:  # teardown does not run under --benchmark-disable
            log.close()
    assert last_seq == len(batch)
    record_rate(len(batch))


# -- 2. read() of a large log -------------------------------------------------------------------


@pytest.fixture(scope="module")
def full_log(
    tmp_path_factory: pytest.TempPathFactory, bench_size: Callable[[int, int], int]
) -> Iterator[SegmentedLog]:
    """A log of 1,000,000 records of 100 bytes (two segments), written once per module."""
    total = bench_size(1_000_000, 1_000)
    batch = payloads_of(min(total, 10_000))
    with SegmentedLog.open(tmp_path_factory.mktemp("read"), fsync="never") as log:
        while log.last_seq < total:
            log.append_batch(batch[: total - log.last_seq])
        yield log


def test_read_all_records(
    benchmark, full_log: SegmentedLog, bench_size: Callable[[int, int], int], record_rate
) -> None:
    def read_all() -> int:
        return sum(1 for _ in full_log.read())

    count = benchmark.pedantic(read_all, rounds=bench_size(5, 1), warmup_rounds=bench_size(1, 0))
    assert count == full_log.last_seq
    record_rate(count)


# -- 3. fsync="always" against a raw write + fsync ---------------------------------------------

BATCH_SIZES = (1, 8, 64, 512)


class RawAppender:
    """The baseline: one ``os.write`` and one ``os.fsync`` per batch, on an O_APPEND file."""

    def __init__(self, path: Path) -> None:
        path.touch()
        self.fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC)

    def append(self, data: bytes) -> None:
        written = os.write(self.fd, data)
        assert written == len(data)
        os.fsync(self.fd)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


FSYNC_CASES = [
    pytest.param((kind, records), id=f"{kind}-{records}")
    for records in BATCH_SIZES
    for kind in ("log", "raw")
]


@pytest.mark.parametrize("case", FSYNC_CASES)
def test_fsync_always_batch(
    benchmark,
    tmp_path_factory: pytest.TempPathFactory,
    bench_size: Callable[[int, int], int],
    record_rate: Callable[[int], None],
    case: tuple[str, int],
) -> None:
    kind, records = case
    appends = bench_size(50, 2)  # per round: enough fsyncs that a round is not a single blip
    batch = payloads_of(records)
    # Same byte count as the log writes: a 20-byte header in front of every payload.
    raw_bytes = b"".join(bytes(RECORD_HEADER_SIZE) + payload for payload in batch)
    opened: list[SegmentedLog | RawAppender] = []

    def fresh_log() -> tuple[tuple[SegmentedLog], dict[str, object]]:
        log = SegmentedLog.open(tmp_path_factory.mktemp(f"log-{records}"), fsync="always")
        opened.append(log)
        return (log,), {}

    def fresh_file() -> tuple[tuple[RawAppender], dict[str, object]]:
        raw = RawAppender(tmp_path_factory.mktemp(f"raw-{records}") / "raw.bin")
        opened.append(raw)
        return (raw,), {}

    def log_appends(log: SegmentedLog) -> int:
        append_batch = log.append_batch
        for _ in range(appends):
            last_seq = append_batch(batch)
        return last_seq

    def raw_appends(raw: RawAppender) -> int:
        append = raw.append
        for _ in range(appends):
            append(raw_bytes)
        return os.fstat(raw.fd).st_size

    target, setup = (log_appends, fresh_log) if kind == "log" else (raw_appends, fresh_file)
    try:
        result = benchmark.pedantic(
            target,
            setup=setup,
            teardown=lambda handle: handle.close(),
            rounds=bench_size(40, 1),
            warmup_rounds=bench_size(2, 0),
        )
    finally:
        for handle in opened:
            handle.close()
    expected = appends * records if kind == "log" else appends * len(raw_bytes)
    assert result == expected
    benchmark.extra_info["records_per_batch"] = records
    benchmark.extra_info["batches_per_round"] = appends
    record_rate(appends * records)
