"""Recovery: how long opening a key space takes as its log grows.

For each log size, a key space is filled with that many puts (16-byte keys in shuffled
order, 100-byte values; one put per log record, as an application writing one key at a time
would leave it) under ``fsync="never"``, untimed. Then each repeat times what an application
waits for after a restart: ``Store.open`` + ``store.keyspace(name)`` (which replays the whole
log into the sorted state) + the first ``get``. There are no snapshots yet, so every record
is replayed. The log was just written, so it is read from a warm page cache.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from actors import KeySpace, Store
from bench.driver.core import Latencies, Row, RunContext, measure

WORKLOAD = "recovery"
NAME = "recovery"
SIZES = (10_000, 100_000, 1_000_000)
VALUE_BYTES = 100
IN_FLIGHT = 1_000  # puts in flight while building: one group write (no fsync) serves them


def recovery_sizes(ctx: RunContext) -> list[int]:
    """Log sizes (puts) for this run: up to 100k under ``ctx.quick``, else up to 1M.

    Sizes above ``100 * ctx.ops`` are dropped so a tiny smoke run stays tiny; if that drops
    them all, one log of ``100 * ctx.ops`` puts is used.
    """
    limit = min(100_000 if ctx.quick else 1_000_000, 100 * ctx.ops)
    return [size for size in SIZES if size <= limit] or [limit]


def run_recovery(ctx: RunContext) -> list[Row]:
    """Measure open + replay + first get against log size.

    Args:
        ctx: Sizes, seed and scratch space; see :func:`recovery_sizes`.

    Returns:
        One row per log size: ``ops_per_s`` is events replayed per second of open time;
        ``extra`` holds ``log_records``, ``log_bytes`` (all segment files) and
        ``open_seconds`` (the median open time).
    """
    rows = []
    for size in recovery_sizes(ctx):
        with ctx.fresh_dir("recovery") as path:
            ctx.progress(f"{WORKLOAD} / actorkv: building a log of {size:,} puts")
            first_key = _build(ctx, path, size)
            rows.append(_measure_open(ctx, path, size, first_key))
    return rows


def _build(ctx: RunContext, path: Path, size: int) -> str:
    """Fill the key space with ``size`` puts; returns a key that exists."""
    rng = ctx.rng(f"{WORKLOAD}:{size}")
    order = list(range(size))
    rng.shuffle(order)
    value = rng.randbytes(VALUE_BYTES)
    with Store.open(path, fsync="never") as store:
        put_async = store.keyspace(NAME).put_async
        window: list[Any] = []
        for number in order:
            window.append(put_async(f"{number:016d}", value))
            if len(window) >= IN_FLIGHT:
                for future in window:
                    future.get()
                window.clear()
        for future in window:
            future.get()
    return f"{order[0]:016d}"


def _measure_open(ctx: RunContext, path: Path, size: int, first_key: str) -> Row:
    replayed: list[int] = []

    @contextmanager
    def trial() -> Iterator[Callable[[Latencies], None]]:
        opened: list[Store] = []

        def timed(_latencies: Latencies) -> None:
            store = Store.open(path, fsync="never")
            opened.append(store)
            keyspace: KeySpace = store.keyspace(NAME)
            if keyspace.get(first_key) is None:
                msg = f"recovery: key {first_key} missing after replaying {path}"
                raise RuntimeError(msg)
            replayed.append(keyspace.stats().events_replayed)

        try:
            yield timed
        finally:
            for store in opened:
                store.close()

    row = measure(
        ctx,
        engine="actorkv",
        workload=WORKLOAD,
        durability="n/a (read path)",
        ops=size,
        trial=trial,
        notes=(
            f"Store.open + keyspace() + first get over a {size:,}-put log; "
            "no snapshot, warm page cache; ops/s = events replayed per second"
        ),
    )
    if any(count != size for count in replayed):
        ctx.notice(f"recovery: replayed {sorted(set(replayed))} events, expected {size}")
    segments = sorted((path / "keyspaces" / NAME).glob("*.seg"))
    row.extra = {
        "durable": None,
        "log_records": size,
        "log_bytes": sum(segment.stat().st_size for segment in segments),
        "segments": len(segments),
        "open_seconds": row.seconds,
    }
    return row
