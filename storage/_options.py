"""The options of a log: one frozen object, checked on construction."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from storage._format import DEFAULT_SEGMENT_BYTES, MIN_SEGMENT_BYTES
from storage.chain import check_chain_key
from storage.errors import InvalidOption

__all__ = ["FsyncPolicy", "LogOptions", "commit_time"]

FsyncPolicy = Literal["always", "interval", "never"]
_FSYNC_POLICIES = ("always", "interval", "never")


@dataclass(frozen=True, slots=True)
class LogOptions:
    """How a log writes. Checked on construction.

    Attributes:
        segment_bytes: Roll to a new segment once the active one would exceed this
            (default 64 MiB, at least 4 KiB). A single batch never spans segments.
        fsync: ``"always"`` (default): an append returns only after its fsync.
            ``"interval"``: a background thread fsyncs ``fsync_interval`` seconds after its
            previous fsync ended; each covers every append that returned before it began,
            so a crash can lose the appends of the last ``fsync_interval`` seconds plus
            two fsync times (one under way, one covering). A failed background fsync
            makes the log refuse writes, as a failed foreground one does. ``"never"``:
            the operating system decides when data reaches the disk; a crash can lose
            anything unsynced.
        fsync_interval: Seconds between background fsyncs under ``"interval"``.
        clock: Seconds since the epoch, read once per ``append_batch`` for the group's
            commit time (default ``time.time``; inject one to get the same bytes from the
            same writes). Times never go back: each is at least the previous record's.
        chain_key: Key the hash chain with this secret (1 to 64 bytes), so that nobody
            without it can rewrite the log into one that verifies; None (default): an
            unkeyed chain. A log is keyed or not for good (``ChainKeyMismatch``). Never
            shown in ``repr`` and never written to disk.
    """

    segment_bytes: int = DEFAULT_SEGMENT_BYTES
    fsync: FsyncPolicy = "always"
    fsync_interval: float = 0.1
    clock: Callable[[], float] = time.time
    chain_key: bytes | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        """Reject options outside their documented ranges."""
        if self.fsync not in _FSYNC_POLICIES:
            msg = f"fsync={self.fsync!r} is not one of {', '.join(map(repr, _FSYNC_POLICIES))}"
            raise InvalidOption(msg)
        if isinstance(self.segment_bytes, bool) or not isinstance(self.segment_bytes, int):
            msg = f"segment_bytes must be an int, got {type(self.segment_bytes).__name__}"
            raise InvalidOption(msg)
        if self.segment_bytes < MIN_SEGMENT_BYTES:
            msg = f"segment_bytes={self.segment_bytes} is below the minimum {MIN_SEGMENT_BYTES}"
            raise InvalidOption(msg)
        interval = self.fsync_interval
        if (
            isinstance(interval, bool)
            or not isinstance(interval, int | float)
            or not (0 < interval <= 3600)
        ):
            msg = f"fsync_interval={interval!r} must be a number of seconds in (0, 3600]"
            raise InvalidOption(msg)
        clock: object = self.clock
        if not callable(clock):
            msg = f"clock must be a callable returning seconds since the epoch: {clock!r:.60}"
            raise InvalidOption(msg)
        check_chain_key(self.chain_key)


def commit_time(now: object, last: float, directory: Path) -> float:
    """A group's commit time when ``clock()`` returned ``now`` and is not ahead of ``last``.

    The rule of ``docs/format.md`` ("Commit time"): times never go back, so a clock behind
    the previous record gives that record's time. Called off the hot path only.

    Raises:
        InvalidOption: ``now`` is not a number, or is NaN or infinite.
    """
    if isinstance(now, bool) or not isinstance(now, int | float) or not math.isfinite(now):
        msg = (
            f"the clock of the log in {directory} returned {now!r:.60}; it must return a "
            "finite number of seconds since the epoch (nothing was written)"
        )
        raise InvalidOption(msg)
    return max(float(now), last)
