"""A latency histogram cheap enough to record on every write: powers-of-two buckets.

Bucket ``i`` counts values in ``[2**(i-1), 2**i)`` units (bucket 0: below one unit), so a
recording is an ``int()``, a ``bit_length()`` and two additions (~0.15 us). Quantiles are
read from the buckets: within a factor of two, which is what a latency dashboard needs.
Not locked: record from one thread at a time (a log's writer, the actor holding the
execution right); a reader sees counts that may trail by the recording under way.
"""

from __future__ import annotations

from typing import Final

__all__ = ["BUCKETS", "Histogram"]

BUCKETS: Final = 40
"""Buckets per histogram: one unit to 2**38 units (microseconds: up to 76 hours)."""


class Histogram:
    """Counts of values (seconds, recorded in ``unit`` steps) in powers-of-two buckets.

    Attributes:
        counts: Values per bucket.
        count: Values recorded.
        total: Their sum (seconds, or whatever ``record`` was given).
        unit: The bucket unit: 1e-6 for latencies in seconds (microsecond buckets), 1 for
            sizes.
    """

    __slots__ = ("count", "counts", "total", "unit")

    def __init__(self, unit: float = 1e-6) -> None:
        self.unit = unit
        self.counts = [0] * BUCKETS
        self.count = 0
        self.total = 0.0

    def record(self, value: float) -> None:
        """Count ``value`` (in seconds when ``unit`` is 1e-6)."""
        index = int(value / self.unit).bit_length()
        self.counts[index if index < BUCKETS else BUCKETS - 1] += 1
        self.count += 1
        self.total += value

    def upper_bounds(self) -> list[float]:
        """The upper bound of each bucket, in recorded units (the last is infinite)."""
        return [(1 << index) * self.unit for index in range(BUCKETS - 1)] + [float("inf")]

    def quantile(self, q: float) -> float:
        """An upper bound of the ``q`` quantile (0 < q <= 1): its bucket's top; 0.0 if empty."""
        if self.count == 0:
            return 0.0
        wanted = q * self.count
        seen = 0
        bounds = self.upper_bounds()
        for index, count in enumerate(self.counts):
            seen += count
            if seen >= wanted:
                return bounds[index]
        return bounds[-1]  # pragma: no cover - the counts sum to count

    def snapshot(self) -> dict[str, object]:
        """A copy to report: count, sum, p50, p99, p999 and the non-empty buckets."""
        bounds = self.upper_bounds()
        return {
            "count": self.count,
            "sum": self.total,
            "p50": self.quantile(0.5),
            "p99": self.quantile(0.99),
            "p999": self.quantile(0.999),
            "buckets": [(bounds[i], n) for i, n in enumerate(self.counts) if n],
        }
