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
within a factor of two. Reads are not timed: a read is ~0.2-0.3 us, and timing it would
cost a sixth of that.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from storage.histogram import Histogram

if TYPE_CHECKING:
    from actors._handle import ActorHandle
    from actors._store import Store

__all__ = ["HISTOGRAMS", "collect"]

HISTOGRAMS = ("write_latency", "group_size", "fsync_latency", "snapshot_seconds")
"""The histogram metrics of each key space and actor (the rest are numbers)."""


def collect(store: Store) -> dict[str, dict[str, dict[str, Any]]]:
    """``{"keyspaces": {name: metrics}, "actors": {name: metrics}}`` of the open ones."""
    with store._mutex:
        keyspaces = {name: ks._actor for name, ks in store._keyspaces.items()}
        actors = dict(store._handles)
    shipping = store._shipper.status() if store._shipper is not None else {}
    return {
        "keyspaces": {
            name: _of(handle, shipping.get(f"keyspaces/{name}"))
            for name, handle in sorted(keyspaces.items())
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
