"""db_bench-style workloads: 16-byte keys, 100-byte values, one engine at a time.

As in LevelDB/RocksDB's ``db_bench``, writes do not sync except in ``fillsync``: the fill,
overwrite and read workloads run every engine at its non-durable setting, ``fillsync``
runs it at its durable setting, and ``fillbatch`` runs both. ``N`` is ``ctx.records``.

==========  ===========================================================================
fillseq     N puts in key order into an empty database
fillrandom  N puts at uniformly random keys (with repeats) into an empty database
overwrite   ``ctx.ops`` puts at random existing keys of an N-entry database
fillbatch   N puts in key order, 1,000 per transaction (one commit per batch)
readrandom  ``ctx.ops`` gets of random existing keys of an N-entry database
readseq     one scan of the whole N-entry database in key order (entries per second)
fillsync    N/100 puts at random keys, each acknowledged only once durable
fill100K    N/1000 puts of 100 KB values at random keys
==========  ===========================================================================

Values are random bytes (incompressible; db_bench's default data is half compressible).
Every measurement gets a fresh database, loaded untimed, and reports the median of
``ctx.repeats`` runs.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from .core import Latencies, Row, RunContext, measure
from .engines import Engine, EngineSpec, engine_specs, fresh_engine

KEY_BYTES = 16
VALUE_BYTES = 100
BIG_VALUE_BYTES = 100 * 1024
BATCH_ENTRIES = 1000
VALUE_POOL = 1024
"""Distinct values cycled through (building N random values would dominate set-up)."""

Items = list[tuple[bytes, bytes]]


def key(number: int) -> bytes:
    """The 16-byte key of ``number``: zero-padded decimal, so key order is number order."""
    return b"%016d" % number


def _values(ctx: RunContext, salt: str, size: int, count: int) -> list[bytes]:
    rng = ctx.rng(f"values:{salt}")
    pool = [rng.randbytes(size) for _ in range(min(count, VALUE_POOL))]
    return [pool[i % len(pool)] for i in range(count)]


def _sequential(ctx: RunContext, count: int, size: int = VALUE_BYTES) -> Items:
    return list(zip(map(key, range(count)), _values(ctx, "seq", size, count), strict=True))


def _random(ctx: RunContext, salt: str, count: int, keyspace: int, size: int) -> Items:
    rng = ctx.rng(f"keys:{salt}")
    keys = [key(rng.randrange(keyspace)) for _ in range(count)]
    return list(zip(keys, _values(ctx, salt, size, count), strict=True))


def _timed_puts(engine: Engine, items: Items) -> Callable[[Latencies], None]:
    def timed(latencies: Latencies) -> None:
        put, clock, record = engine.put, time.perf_counter_ns, latencies.samples.append
        for k, v in items:
            began = clock()
            put(k, v)
            record(clock() - began)

    return timed


def _run(
    ctx: RunContext,
    spec: EngineSpec,
    workload: str,
    ops: int,
    timed: Callable[[Engine], Callable[[Latencies], None]],
    load: Sequence[tuple[bytes, Any]] = (),
    notes: str = "",
) -> Row:
    """Measure ``timed(engine)`` on a fresh database (loaded with ``load``) per repeat."""

    @contextmanager
    def trial() -> Iterator[Callable[[Latencies], None]]:
        with fresh_engine(ctx, spec, load) as engine:
            yield timed(engine)

    row = measure(
        ctx,
        engine=spec.name,
        workload=workload,
        durability=spec.durability,
        ops=ops,
        trial=trial,
        notes=notes,
    )
    row.extra["durable"] = spec.durable
    return row


def fillseq(ctx: RunContext, spec: EngineSpec) -> Row | None:
    """N puts in key order into an empty database."""
    items = _sequential(ctx, ctx.records)
    return _run(ctx, spec, "fillseq", len(items), lambda e: _timed_puts(e, items))


def fillrandom(ctx: RunContext, spec: EngineSpec) -> Row | None:
    """N puts at uniformly random keys into an empty database."""
    items = _random(ctx, "fillrandom", ctx.records, ctx.records, VALUE_BYTES)
    return _run(ctx, spec, "fillrandom", len(items), lambda e: _timed_puts(e, items))


def overwrite(ctx: RunContext, spec: EngineSpec) -> Row | None:
    """``ctx.ops`` puts at random existing keys of an N-entry database."""
    items = _random(ctx, "overwrite", ctx.ops, ctx.records, VALUE_BYTES)
    load = _sequential(ctx, ctx.records)
    return _run(ctx, spec, "overwrite", len(items), lambda e: _timed_puts(e, items), load)


def fillbatch(ctx: RunContext, spec: EngineSpec) -> Row | None:
    """N puts in key order, ``BATCH_ENTRIES`` per transaction (no per-put latency)."""
    items = _sequential(ctx, ctx.records)
    batches = [items[i : i + BATCH_ENTRIES] for i in range(0, len(items), BATCH_ENTRIES)]

    def timed(engine: Engine) -> Callable[[Latencies], None]:
        def run(_latencies: Latencies) -> None:
            for batch in batches:
                engine.put_many(batch)

        return run

    note = f"{BATCH_ENTRIES} puts per transaction; latency per put not measured"
    return _run(ctx, spec, "fillbatch", len(items), timed, notes=note)


def readrandom(ctx: RunContext, spec: EngineSpec) -> Row | None:
    """``ctx.ops`` gets of random existing keys of an N-entry database."""
    rng = ctx.rng("readrandom")
    keys = [key(rng.randrange(ctx.records)) for _ in range(ctx.ops)]

    def timed(engine: Engine) -> Callable[[Latencies], None]:
        def run(latencies: Latencies) -> None:
            get, clock, record = engine.get, time.perf_counter_ns, latencies.samples.append
            for k in keys:
                began = clock()
                if get(k) is None:
                    raise AssertionError(f"{spec.name}: key {k!r} missing after load")
                record(clock() - began)

        return run

    return _run(ctx, spec, "readrandom", len(keys), timed, _sequential(ctx, ctx.records))


def readseq(ctx: RunContext, spec: EngineSpec) -> Row | None:
    """One scan of the whole N-entry database in key order (entries per second)."""
    if not spec.make().supports_scan:
        ctx.notice(f"{spec.name}: no ordered range read; skipped in readseq and YCSB E")
        return None
    count = ctx.records

    def timed(engine: Engine) -> Callable[[Latencies], None]:
        def run(_latencies: Latencies) -> None:
            seen = engine.scan(key(0), count)
            if seen != count:
                raise AssertionError(f"{spec.name}: scanned {seen} of {count} entries")

        return run

    note = "one scan of every entry; ops are entries read"
    return _run(ctx, spec, "readseq", count, timed, _sequential(ctx, count), note)


def fillsync(ctx: RunContext, spec: EngineSpec) -> Row | None:
    """N/100 puts at random keys, each durable before the next (one writer)."""
    count = max(ctx.records // 100, 100)
    items = _random(ctx, "fillsync", count, ctx.records, VALUE_BYTES)
    return _run(ctx, spec, "fillsync", count, lambda e: _timed_puts(e, items))


def fill100k(ctx: RunContext, spec: EngineSpec) -> Row | None:
    """N/1000 puts of 100 KB values at random keys."""
    count = max(ctx.records // 1000, 20)
    items = _random(ctx, "fill100K", count, ctx.records, BIG_VALUE_BYTES)
    return _run(ctx, spec, "fill100K", count, lambda e: _timed_puts(e, items))


WORKLOADS: tuple[tuple[Callable[[RunContext, EngineSpec], Row | None], bool | None], ...] = (
    (fillseq, False),
    (fillrandom, False),
    (overwrite, False),
    (fillbatch, None),
    (readrandom, False),
    (readseq, False),
    (fillsync, True),
    (fill100k, False),
)
"""Each workload with the engine settings it runs at (True durable, False not, None both)."""


def run_dbbench(ctx: RunContext) -> list[Row]:
    """Run every db_bench-style workload on every selected engine; one row each."""
    rows = []
    for workload, durable in WORKLOADS:
        for spec in engine_specs(ctx, durable=durable):
            row = workload(ctx, spec)
            if row is not None:
                rows.append(row)
    return rows
