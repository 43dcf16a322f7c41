"""Recovery: how long a reopen takes as history grows, with and without snapshots.

History: ``size`` puts over ``LIVE_KEYS`` keys (so most are overwrites; 16-byte keys,
100-byte values, shuffled, one put per record, ``fsync="never"``, untimed), then a clean
close. Each repeat times what an application waits for after a restart: ``Store.open`` +
``store.keyspace(name)`` (snapshot load + replay) + the first ``get``. Variants:

- ``no snapshots`` (``recovery_budget=None``): every record is replayed;
- ``defaults`` (``recovery_budget=1.0``, history kept): snapshots bound the replay;
- ``retention=0``: snapshots, and the history below them dropped;

beside a store holding only the live keys (``live keys only``). Rows carry the open time,
the records replayed and the data directory's size.

The ``snapshot`` workload writes and loads a snapshot of a large key space: keys/s both
ways, a concurrent writer's put latency while it is written (the capture pause shows in its
p99), and the memory the write allocates beside the state (traced with tracemalloc).
"""

from __future__ import annotations

import threading
import time
import tracemalloc
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from actors import KeySpace, Store

from .core import Latencies, Row, RunContext, measure

WORKLOAD = "recovery"
SNAPSHOT_WORKLOAD = "snapshot"
NAME = "recovery"
SIZES = (1_000_000, 2_000_000, 4_000_000)
QUICK_SIZES = (100_000, 200_000)
LIVE_KEYS = 10_000
VALUE_BYTES = 100
IN_FLIGHT = 10_000  # puts in flight while building
VARIANTS: tuple[tuple[str, dict[str, Any]], ...] = (
    ("no snapshots", {"recovery_budget": None}),
    ("defaults", {}),
    ("retention=0", {"retention": 0}),
)
SNAPSHOT_KEYS = 1_000_000
QUICK_SNAPSHOT_KEYS = 100_000


def recovery_sizes(ctx: RunContext) -> list[int]:
    """History sizes (puts) for this run.

    Sizes above ``400 * ctx.ops`` are dropped so a tiny smoke run stays tiny; if that drops
    them all, one history of ``400 * ctx.ops`` puts is used.
    """
    limit = 400 * ctx.ops
    sizes = QUICK_SIZES if ctx.quick else SIZES
    return [size for size in sizes if size <= limit] or [limit]


def run_recovery(ctx: RunContext) -> list[Row]:
    """Open time against history size, per variant, and the snapshot workload.

    Returns:
        Rows of workload ``recovery`` (``ops_per_s``: records of history per second of
        open time; ``extra``: ``variant``, ``log_records``, ``open_seconds``,
        ``records_replayed``, ``dir_bytes``) and of workload ``snapshot``.
    """
    rows = []
    live = min(LIVE_KEYS, recovery_sizes(ctx)[0])
    with ctx.fresh_dir("recovery") as path:
        _build(ctx, path, live, live, {"recovery_budget": None})
        rows.append(_measure_open(ctx, path, live, "live keys only", {"recovery_budget": None}))
    for size in recovery_sizes(ctx):
        for variant, options in VARIANTS:
            with ctx.fresh_dir("recovery") as path:
                ctx.progress(f"{WORKLOAD} / actorkv: {size:,} puts, {variant}")
                _build(ctx, path, size, live, options)
                rows.append(_measure_open(ctx, path, size, variant, options))
    rows.append(_measure_snapshot(ctx))
    return rows


def _build(ctx: RunContext, path: Path, size: int, keys: int, options: dict[str, Any]) -> None:
    rng = ctx.rng(f"{WORKLOAD}:{size}")
    value = rng.randbytes(VALUE_BYTES)
    order = [rng.randrange(keys) for _ in range(size - keys)]
    order = [*rng.sample(range(keys), keys), *order]  # every key once, then overwrites
    with Store.open(path, fsync="never", **options) as store:
        put_async = store.keyspace(NAME).put_async
        for start in range(0, size, IN_FLIGHT):
            window = [put_async(f"{n:016d}", value) for n in order[start : start + IN_FLIGHT]]
            for future in window:
                future.get()


def _measure_open(
    ctx: RunContext, path: Path, size: int, variant: str, options: dict[str, Any]
) -> Row:
    replayed: list[int] = []

    @contextmanager
    def trial() -> Iterator[Callable[[Latencies], None]]:
        opened: list[Store] = []

        def timed(_latencies: Latencies) -> None:
            store = Store.open(path, fsync="never", **options)
            opened.append(store)
            keyspace: KeySpace = store.keyspace(NAME)
            if keyspace.get(f"{0:016d}") is None:
                msg = f"recovery: a key is missing after reopening {path}"
                raise RuntimeError(msg)
            replayed.append(keyspace.stats().records_replayed)

        try:
            yield timed
        finally:
            for store in opened:
                store.close()

    row = measure(
        ctx,
        engine="actorkv",
        workload=WORKLOAD,
        durability=f"n/a (read path; {variant})",
        ops=size,
        trial=trial,
        notes=(
            f"Store.open + keyspace() + first get after {size:,} puts over "
            f"{min(size, LIVE_KEYS):,} keys ({variant}); warm page cache"
        ),
    )
    row.extra = {
        "durable": None,
        "variant": variant,
        "log_records": size,
        "open_seconds": row.seconds,
        "records_replayed": sorted(replayed)[len(replayed) // 2],
        "dir_bytes": sum(f.stat().st_size for f in path.rglob("*") if f.is_file()),
    }
    return row


def _measure_snapshot(ctx: RunContext) -> Row:
    """Snapshots of one state: one traced for memory, one timed alone, one beside a writer.

    The state is built with tracemalloc on, so the traced total after building is the
    state's own size (its sorted entries); the first snapshot's traced peak above that is
    what writing it allocates. Tracing is off for the timed snapshot and the reload.
    """
    keys = QUICK_SNAPSHOT_KEYS if ctx.quick else SNAPSHOT_KEYS
    keys = min(keys, 100 * ctx.ops)
    value = ctx.rng(SNAPSHOT_WORKLOAD).randbytes(VALUE_BYTES)
    ctx.progress(f"{SNAPSHOT_WORKLOAD} / actorkv: {keys:,} keys")
    with ctx.fresh_dir("snapshot") as path:
        with Store.open(path, fsync="never", recovery_budget=None) as store:
            ks = store.keyspace(NAME)
            tracemalloc.start()
            try:
                for start in range(0, keys, 10_000):
                    with ks.batch() as batch:
                        for n in range(start, min(keys, start + 10_000)):
                            batch.put(f"{n:016d}", value)
                state_bytes, _ = tracemalloc.get_traced_memory()
                tracemalloc.reset_peak()
                ks.snapshot()
                _, peak = tracemalloc.get_traced_memory()
            finally:
                tracemalloc.stop()
            ks.put("tick", 1)  # something new, so the next snapshot is written
            started = time.perf_counter()
            info = ks.snapshot()
            write_seconds = time.perf_counter() - started
            latencies = _latencies_meanwhile(ks)
        started = time.perf_counter()
        with Store.open(path, fsync="never", recovery_budget=None) as store:
            store.keyspace(NAME)
            load_seconds = time.perf_counter() - started
    return Row(
        engine="actorkv",
        workload=SNAPSHOT_WORKLOAD,
        durability="n/a (snapshot)",
        ops_per_s=keys / write_seconds,
        p50_us=latencies.percentile_us(0.5),
        p99_us=latencies.percentile_us(0.99),
        p999_us=latencies.percentile_us(0.999),
        ops=keys,
        seconds=write_seconds,
        notes=(
            f"ks.snapshot() of {keys:,} keys (16 B keys, 100 B values) until durable; "
            "latencies: a concurrent writer's puts during another snapshot (fsync='never')"
        ),
        extra={
            "durable": None,
            "keys": keys,
            "write_keys_per_s": keys / write_seconds,
            "load_keys_per_s": keys / load_seconds,
            "snapshot_bytes": info.bytes,
            "memory_peak_ratio": peak / state_bytes if state_bytes else None,
        },
    )


def _latencies_meanwhile(ks: KeySpace) -> Latencies:
    latencies = Latencies()
    stop = threading.Event()
    ks.put("tick", 2)
    writer = threading.Thread(target=_write_meanwhile, args=(ks, stop, latencies))
    writer.start()
    ks.snapshot()
    stop.set()
    writer.join()
    return latencies


def _write_meanwhile(ks: KeySpace, stop: threading.Event, latencies: Latencies) -> None:
    n = 0
    while not stop.is_set():
        started = time.perf_counter_ns()
        ks.put(f"meanwhile{n:07d}", b"x")
        latencies.add(time.perf_counter_ns() - started)
        n += 1
