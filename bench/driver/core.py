"""What every workload shares: the run context, result rows, latency recording, timing."""

from __future__ import annotations

import random
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class Row:
    """One measured result: an engine running a workload at a durability.

    ``ratio_to_actorkv`` is filled in by the report (peer ops/s over actorkv ops/s for the
    same workload and durability class) so every row carries it.
    """

    engine: str
    workload: str
    durability: str
    ops_per_s: float
    p50_us: float | None = None
    p99_us: float | None = None
    p999_us: float | None = None
    ops: int = 0
    seconds: float = 0.0
    notes: str = ""
    extra: dict[str, Any] = field(default_factory=dict)
    ratio_to_actorkv: float | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class RunContext:
    """Sizes, seed and scratch space for one driver run.

    Attributes:
        records: Records loaded before read workloads (db_bench ``num``, YCSB recordcount).
        ops: Operations per measured workload phase.
        seed: Seeds every random generator, so runs are reproducible.
        quick: Smaller sizes and fewer repeats (the README's main job).
        repeats: Each measurement runs this many times; the median is reported.
        scratch: Where fresh databases are created (one new directory per measurement).
        progress: Called with a short label as each measurement starts.
        notices: One-line notices (skipped peers, ...), shown at the end and in the report.
        engines: Engine names to run (``--engines``); None runs every engine.
    """

    records: int
    ops: int
    seed: int = 42
    quick: bool = False
    repeats: int = 3
    scratch: Path = field(default_factory=lambda: Path(tempfile.gettempdir()))
    progress: Callable[[str], None] = lambda _label: None
    notices: list[str] = field(default_factory=list)
    engines: tuple[str, ...] | None = None

    def rng(self, salt: str = "") -> random.Random:
        """A generator seeded by the run seed and ``salt`` (stable across runs)."""
        return random.Random(f"{self.seed}:{salt}")

    @contextmanager
    def fresh_dir(self, label: str) -> Iterator[Path]:
        """A new empty directory for one database, removed afterwards."""
        path = Path(tempfile.mkdtemp(prefix=f"{label}-", dir=self.scratch))
        try:
            yield path
        finally:
            shutil.rmtree(path, ignore_errors=True)

    def notice(self, text: str) -> None:
        """Record a one-line notice (printed at the end, kept in results.json)."""
        if text not in self.notices:
            self.notices.append(text)


class Latencies:
    """Per-operation latencies in nanoseconds, summarised as percentiles in microseconds."""

    def __init__(self) -> None:
        self.samples: list[int] = []

    def add(self, nanoseconds: int) -> None:
        self.samples.append(nanoseconds)

    def extend(self, nanoseconds: list[int]) -> None:
        self.samples.extend(nanoseconds)

    def percentile_us(self, fraction: float) -> float | None:
        """The ``fraction`` percentile (0.5, 0.99, 0.999) in microseconds, or None if empty."""
        if not self.samples:
            return None
        ordered = sorted(self.samples)
        index = min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))
        return ordered[index] / 1000.0


Trial = Callable[[], AbstractContextManager[Callable[[Latencies], None]]]
"""Builds fresh state (untimed) on enter and yields the timed part; cleans up on exit."""


def measure(
    ctx: RunContext,
    *,
    engine: str,
    workload: str,
    durability: str,
    ops: int,
    trial: Trial,
    notes: str = "",
) -> Row:
    """Run ``trial`` ``ctx.repeats`` times and report the median throughput.

    Only the function the trial yields is timed; it performs ``ops`` operations and records
    each one's latency in the given :class:`Latencies` (or none, for bulk workloads where a
    per-operation latency means nothing). Percentiles come from the median run.
    """
    ctx.progress(f"{workload} / {engine} ({durability})")
    runs: list[tuple[float, Latencies]] = []
    for _ in range(ctx.repeats):
        latencies = Latencies()
        with trial() as timed:
            started = time.perf_counter()
            timed(latencies)
            runs.append((time.perf_counter() - started, latencies))
    runs.sort(key=lambda run: run[0])
    seconds, latencies = runs[len(runs) // 2]
    return Row(
        engine=engine,
        workload=workload,
        durability=durability,
        ops_per_s=ops / seconds if seconds > 0 else float("inf"),
        p50_us=latencies.percentile_us(0.5),
        p99_us=latencies.percentile_us(0.99),
        p999_us=latencies.percentile_us(0.999),
        ops=ops,
        seconds=seconds,
        notes=notes,
    )
