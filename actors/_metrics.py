"""``store.metrics()``: counters and latency histograms of every open key space and actor.

What is measured, and where (each costs well under a microsecond a write):

- ``write_latency``: a write command from its submission to its answer (durable, under
  ``fsync="always"``), recorded by the writer that answers it;
- ``group_size``: commands answered by one group write;
- ``fsync_latency``: every fsync of the log (an append's, a sync's, the background one's);
- ``snapshot_seconds``: each snapshot's encoding and write; ``replay_seconds``: the open's
  snapshot load and replay;
- ``history_floor``, ``last_seq``, ``log_bytes``; ``subscriber_lag``: records each named
  subscription (and projection) has not acknowledged; ``archive_lag``: records not shipped
  yet, when the store has an archive.

Histograms have powers-of-two buckets (``storage/histogram.py``): quantiles are upper bounds
within a factor of two. Reads are timed only when asked: ``Store.open(sample_reads=N)``
times every N-th ``get`` into ``get_latency``. Off by default, when it costs nothing: a get
is ~0.21 us here, and the wrapper that counts gets to pick the N-th doubles that.
"""

from __future__ import annotations

import itertools
import threading
import time
from typing import TYPE_CHECKING, Any

from storage.errors import InvalidOption
from storage.histogram import Histogram

if TYPE_CHECKING:
    from actors._handle import ActorHandle
    from actors._keyspace import KeySpace
    from actors._store import Store

__all__ = ["HISTOGRAMS", "check_sample_reads", "collect", "sample_gets"]

HISTOGRAMS = ("write_latency", "group_size", "fsync_latency", "snapshot_seconds", "get_latency")
"""The histogram metrics of each key space and actor (the rest are numbers)."""


def collect(store: Store) -> dict[str, dict[str, dict[str, Any]]]:
    """``{"keyspaces": {name: metrics}, "actors": {name: metrics}}`` of the open ones."""
    with store._mutex:
        keyspaces = dict(store._keyspaces)
        actors = dict(store._handles)
    shipping = store._shipper.status() if store._shipper is not None else {}
    return {
        "keyspaces": {
            name: {
                **_of(keyspace._actor, shipping.get(f"keyspaces/{name}")),
                "get_latency": _get_latency(keyspace).snapshot(),
            }
            for name, keyspace in sorted(keyspaces.items())
        },
        "actors": {
            name: _of(handle, shipping.get(f"actors/{name}"))
            for name, handle in sorted(actors.items())
        },
    }


def _of(handle: ActorHandle[Any], shipped: Any) -> dict[str, Any]:
    core = handle._core
    counters, log = core.counters, core.log
    last = log.last_seq
    positions = core.positions
    named = positions.all() if positions is not None else {}
    snapshots = core.snapshots
    found: dict[str, Any] = {
        "commands": counters.commands,
        "records": counters.records,
        "events": counters.events,
        "groups": counters.groups,
        "fsyncs": log.fsyncs,
        "queued": core.queued,
        "failed": counters.failed or log.failed is not None,
        "last_seq": last,
        "history_floor": log.first_seq,
        "log_bytes": log.bytes_on_disk,
        "snapshot_seq": snapshots.newest.seq if snapshots and snapshots.newest else 0,
        "replay_seconds": counters.replay_seconds,
        "records_replayed": counters.records_replayed,
        "subscriber_lag": {name: max(0, last - acked) for name, acked in sorted(named.items())},
        "archive_lag": None if shipped is None else shipped.pending,
        "write_latency": counters.write_latency,
        "group_size": counters.group_commands,
        "fsync_latency": log.fsync_seconds,
        "snapshot_seconds": snapshots.write_seconds if snapshots is not None else Histogram(),
    }
    return {
        key: value.snapshot() if isinstance(value, Histogram) else value
        for key, value in found.items()
    }


def check_sample_reads(every: object) -> None:
    """Refuse a ``sample_reads`` that is not None or an int >= 1."""
    if every is not None and (isinstance(every, bool) or not isinstance(every, int) or every < 1):
        msg = f"sample_reads={every!r} must be None (time no reads) or an int >= 1"
        raise InvalidOption(msg)


def sample_gets(keyspace: KeySpace, every: int) -> None:
    """Time every ``every``-th ``keyspace.get`` (and ``ks[key]``) into its ``get_latency``."""
    histogram = keyspace.__dict__["_get_latency"] = Histogram()
    plain = keyspace.get
    numbers = itertools.count(1)
    recording = threading.Lock()  # gets run in any thread; a sampled one records under it

    def get(key: Any, default: Any = None) -> Any:
        if next(numbers) % every:
            return plain(key, default)
        started = time.perf_counter()
        try:
            return plain(key, default)
        finally:
            took = time.perf_counter() - started
            with recording:
                histogram.record(took)

    keyspace.__dict__["get"] = get  # shadows the method: unsampled stores pay nothing


def _get_latency(keyspace: KeySpace) -> Histogram:
    found: Histogram = keyspace.__dict__.get("_get_latency") or Histogram()
    return found
