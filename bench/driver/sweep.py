"""Group-commit sweep: 1 to 64 concurrent durable writers, ops/s and fsyncs per op.

Every writer thread puts 16-byte keys with 100-byte values, one blocking put at a time, and
every put is durable before it returns (``fsync="always"``). actorkv writers share ONE key
space, so its actor can serve many waiting puts with one fsync (group commit); the
``fsyncs_per_op`` column shows how far that goes at each writer count.

sqlite3 runs the same sweep at matched durability (WAL, ``synchronous=FULL``, one
connection per thread, autocommit so each put is its own committed transaction). SQLite
serialises writers on its write lock and fsyncs the WAL once per commit; its busy handler
sleeps while waiting, so its op count is capped to keep the sweep bounded.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from statistics import median

from actors import Store

from .core import Latencies, Row, RunContext, measure

WORKLOAD = "group_commit_sweep"
WRITER_COUNTS = (1, 2, 4, 8, 16, 32, 64)
VALUE_BYTES = 100
MIN_PUTS_PER_WRITER = 20  # fewer and thread start-up noise dominates a writer's run
# sqlite3 at 16+ threads manages ~150-400 puts/s on a 2-core VM (its busy handler sleeps),
# so it gets fewer puts per writer, and one repeat under --quick (~4 s, not ~15 s).
SQLITE_MIN_PUTS_PER_WRITER = 2
ACTORKV_DURABILITY = "fsync per commit (group)"
SQLITE_DURABILITY = "fsync per commit (WAL, synchronous=FULL)"
SQLITE_BUSY_TIMEOUT_S = 120.0


def run_group_commit_sweep(ctx: RunContext) -> list[Row]:
    """Measure actorkv and sqlite3 at each writer count in :data:`WRITER_COUNTS`.

    Args:
        ctx: Sizes, seed, scratch space; ``ctx.ops`` puts per writer count (capped, and
            smaller under ``ctx.quick``), split evenly between the writers. sqlite3 gets
            fewer puts, and a single repeat under ``ctx.quick``.

    Returns:
        Two rows per writer count (actorkv, sqlite3). ``extra`` holds ``writers`` and
        ``fsyncs_per_op`` (actorkv: the median over repeats of fsyncs / puts, from the key
        space's counters; sqlite3: None, it does not report fsyncs).
    """
    total = min(ctx.ops, 1_000 if ctx.quick else 5_000)
    sqlite_total = min(total, 128 if ctx.quick else 1_000)
    sqlite_ctx = replace(ctx, repeats=1) if ctx.quick else ctx
    rows: list[Row] = []
    for writers in WRITER_COUNTS:
        rows.append(_actorkv_row(ctx, writers, max(total // writers, MIN_PUTS_PER_WRITER)))
        per_writer = max(sqlite_total // writers, SQLITE_MIN_PUTS_PER_WRITER)
        rows.append(_sqlite_row(sqlite_ctx, writers, per_writer))
    return rows


def _actorkv_row(ctx: RunContext, writers: int, per_writer: int) -> Row:
    fsync_ratios: list[float] = []
    value = ctx.rng(f"{WORKLOAD}:value").randbytes(VALUE_BYTES)

    @contextmanager
    def trial() -> Iterator[Callable[[Latencies], None]]:
        with ctx.fresh_dir("sweep-actorkv") as path, Store.open(path, fsync="always") as store:
            keyspace = store.keyspace("sweep")

            def write(writer: int, samples: list[int]) -> None:
                put, clock = keyspace.put, time.perf_counter_ns
                for i in range(per_writer):
                    key = f"w{writer:03d}-{i:011d}"
                    started = clock()
                    put(key, value)
                    samples.append(clock() - started)

            with _WriterThreads(writers, write) as run:
                before = keyspace.stats().fsyncs

                def timed(latencies: Latencies) -> None:
                    run(latencies)
                    fsyncs = keyspace.stats().fsyncs - before
                    fsync_ratios.append(fsyncs / (writers * per_writer))

                yield timed

    row = measure(
        ctx,
        engine="actorkv",
        workload=WORKLOAD,
        durability=ACTORKV_DURABILITY,
        ops=writers * per_writer,
        trial=trial,
        notes=f"{writers} writer threads, blocking put each, one key space",
    )
    row.extra = {"durable": True, "writers": writers, "fsyncs_per_op": median(fsync_ratios)}
    return row


def _sqlite_row(ctx: RunContext, writers: int, per_writer: int) -> Row:
    value = ctx.rng(f"{WORKLOAD}:value").randbytes(VALUE_BYTES)

    @contextmanager
    def trial() -> Iterator[Callable[[Latencies], None]]:
        with ctx.fresh_dir("sweep-sqlite") as path:
            database = path / "sweep.db"
            _create_table(database)
            connections = [_connect(database) for _ in range(writers)]

            def write(writer: int, samples: list[int]) -> None:
                execute, clock = connections[writer].execute, time.perf_counter_ns
                sql = "INSERT OR REPLACE INTO kv (k, v) VALUES (?, ?)"
                for i in range(per_writer):
                    key = f"w{writer:03d}-{i:011d}"
                    started = clock()
                    execute(sql, (key, value))  # autocommit: one transaction, one WAL fsync
                    samples.append(clock() - started)

            try:
                with _WriterThreads(writers, write) as run:
                    yield run
            finally:
                for connection in connections:
                    connection.close()

    row = measure(
        ctx,
        engine="sqlite3",
        workload=WORKLOAD,
        durability=SQLITE_DURABILITY,
        ops=writers * per_writer,
        trial=trial,
        notes=(
            f"{writers} threads, one connection each, commit per put; ops capped, "
            f"{ctx.repeats} run(s)"
        ),
    )
    row.extra = {"durable": True, "writers": writers, "fsyncs_per_op": None}
    return row


def _create_table(database: Path) -> None:
    connection = sqlite3.connect(database, isolation_level=None)
    try:
        connection.execute("PRAGMA journal_mode=WAL")
        connection.execute("CREATE TABLE kv (k TEXT PRIMARY KEY, v BLOB) WITHOUT ROWID")
    finally:
        connection.close()


def _connect(database: Path) -> sqlite3.Connection:
    connection = sqlite3.connect(
        database, isolation_level=None, timeout=SQLITE_BUSY_TIMEOUT_S, check_same_thread=False
    )
    connection.execute("PRAGMA synchronous=FULL")
    return connection


class _WriterThreads:
    """Writer threads started before the clock and released together by the timed call.

    ``with _WriterThreads(n, write) as run:`` starts ``n`` threads that wait at a gate;
    ``run(latencies)`` opens the gate, joins every thread, merges their latency samples
    and re-raises the first writer error. Leaving the block without running releases the
    threads with nothing to do.
    """

    def __init__(self, writers: int, write: Callable[[int, list[int]], None]) -> None:
        self._write = write
        self._gate = threading.Event()
        self._cancelled = False
        self._samples: list[list[int]] = [[] for _ in range(writers)]
        self._errors: list[BaseException] = []
        self._threads = [
            threading.Thread(target=self._body, args=(i,), name=f"bench-writer-{i}")
            for i in range(writers)
        ]

    def _body(self, writer: int) -> None:
        self._gate.wait()
        if self._cancelled:
            return
        try:
            self._write(writer, self._samples[writer])
        except BaseException as exc:
            self._errors.append(exc)

    def __enter__(self) -> Callable[[Latencies], None]:
        for thread in self._threads:
            thread.start()
        return self._run

    def _run(self, latencies: Latencies) -> None:
        self._gate.set()
        for thread in self._threads:
            thread.join()
        for samples in self._samples:
            latencies.extend(samples)
        if self._errors:
            raise self._errors[0]

    def __exit__(self, *_exc: object) -> None:
        if not self._gate.is_set():
            self._cancelled = True
            self._gate.set()
        for thread in self._threads:
            thread.join()
