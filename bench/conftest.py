"""Shared helpers for the storage benchmarks.

The benchmarks live outside the default test run (``testpaths = ["tests"]``). Run them with::

    pytest bench/ --benchmark-only --benchmark-json=bench-results/log.json

CI smoke-runs them in seconds with tiny sizes, timing nothing::

    BENCH_SMOKE=1 pytest bench/ --benchmark-disable -q
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import pytest

SMOKE = os.environ.get("BENCH_SMOKE") == "1"
"""Whether ``BENCH_SMOKE=1`` asks for tiny sizes (a correctness smoke run, not a measurement)."""


def bench_size(full: int, smoke: int) -> int:
    """``smoke`` under ``BENCH_SMOKE=1``, else ``full``."""
    return smoke if SMOKE else full


@pytest.fixture(scope="session", name="bench_size")
def bench_size_fixture() -> Callable[[int, int], int]:
    """The :func:`bench_size` helper, for tests and fixtures that prefer injection."""
    return bench_size


def set_record_rate(benchmark: Any, records_per_round: int) -> None:
    """Put records/s into ``benchmark.extra_info`` so the JSON output carries it.

    Computed from the median round (robust on a shared, noisy machine) and from the best
    round. Only ``records_per_round`` is recorded when timing is disabled.
    """
    benchmark.extra_info["records_per_round"] = records_per_round
    metadata = benchmark.stats
    if metadata is None:
        return
    stats = metadata.stats
    if stats.median > 0:
        benchmark.extra_info["records_per_s"] = round(records_per_round / stats.median)
    if stats.min > 0:
        benchmark.extra_info["records_per_s_best"] = round(records_per_round / stats.min)


@pytest.fixture(name="record_rate")
def record_rate_fixture(benchmark: Any) -> Callable[[int], None]:
    """Call after the benchmark with the records one round handles; see :func:`set_record_rate`."""

    def record(records_per_round: int) -> None:
        set_record_rate(benchmark, records_per_round)

    return record
