"""Prometheus export of ``store.metrics()`` (``pip install 'actorkv[metrics]'``).

``serve(port, store)`` starts an HTTP endpoint (``prometheus_client``'s) with the store's
metrics; or register :class:`StoreCollector` in a registry of your own. Each metric has the
labels ``kind`` (``keyspace`` or ``actor``) and ``name``; histograms are in seconds (group
size in commands), with the powers-of-two buckets ``store.metrics()`` keeps. Metrics are
read from the store at each scrape.

Example::

    from actors import Store
    from actors.metrics import serve

    store = Store.open("data")
    server = serve(9464, store)        # http://127.0.0.1:9464/metrics
    ...
    server.close()
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from actors._metrics import HISTOGRAMS
from storage.errors import InvalidOption, KeyspaceClosed, OpenFailed

if TYPE_CHECKING:
    from actors._store import Store

__all__ = ["MetricsServer", "StoreCollector", "serve"]

_NUMBERS = {
    "commands": ("counter", "Commands run (accepted or refused)."),
    "records": ("counter", "Log records written."),
    "events": ("counter", "Events written."),
    "groups": ("counter", "Group writes."),
    "fsyncs": ("counter", "fsyncs of the log."),
    "queued": ("gauge", "Commands waiting for the execution right."),
    "last_seq": ("gauge", "The newest record's seq."),
    "history_floor": ("gauge", "The first seq the log holds."),
    "log_bytes": ("gauge", "Bytes of the log's segments."),
    "snapshot_seq": ("gauge", "The newest snapshot's seq."),
    "replay_seconds": ("gauge", "Seconds the last open spent loading and replaying."),
    "records_replayed": ("gauge", "Records the last open replayed."),
    "archive_lag": ("gauge", "Records not shipped to the archive yet."),
}
_HISTOGRAM_HELP = {
    "write_latency": "Seconds from a write's submission to its answer.",
    "group_size": "Commands answered by one group write.",
    "fsync_latency": "Seconds of each fsync of the log.",
    "snapshot_seconds": "Seconds of each snapshot's encoding and write.",
    "get_latency": "Seconds of sampled gets (Store.open(sample_reads=N); none otherwise).",
}


def _prometheus() -> Any:
    try:
        import prometheus_client  # noqa: PLC0415  # only with the metrics extra
        import prometheus_client.core  # noqa: PLC0415
    except ImportError:
        msg = "actors.metrics needs prometheus_client: pip install 'actorkv[metrics]'"
        raise InvalidOption(msg) from None
    return prometheus_client


class StoreCollector:
    """A ``prometheus_client`` collector of one store's metrics, read at each scrape."""

    def __init__(self, store: Store, prefix: str = "actorkv") -> None:
        self._store = store
        self._prefix = prefix
        self._families = _prometheus().core

    def collect(self) -> Iterator[Any]:
        """The metric families, read from the store now (``prometheus_client`` calls it)."""
        core = self._families
        try:
            found = self._store.metrics()
        except KeyspaceClosed:
            return  # a closed store has nothing to say
        labels = ["kind", "name"]
        numbers = {
            key: (core.CounterMetricFamily if kind == "counter" else core.GaugeMetricFamily)(
                f"{self._prefix}_{key}", text, labels=labels
            )
            for key, (kind, text) in _NUMBERS.items()
        }
        lag = core.GaugeMetricFamily(
            f"{self._prefix}_subscriber_lag",
            "Records a named subscription has not acknowledged.",
            labels=[*labels, "subscription"],
        )
        histograms = {
            key: core.HistogramMetricFamily(
                f"{self._prefix}_{key}", _HISTOGRAM_HELP[key], labels=labels
            )
            for key in HISTOGRAMS
        }
        for plural, by_name in found.items():
            kind = plural.removesuffix("s")
            for name, metrics in by_name.items():
                for key, family in numbers.items():
                    if metrics.get(key) is not None:
                        family.add_metric([kind, name], float(metrics[key]))
                for subscription, behind in metrics["subscriber_lag"].items():
                    lag.add_metric([kind, name, subscription], float(behind))
                for key, family in histograms.items():
                    if key in metrics:  # get_latency: key spaces only
                        family.add_metric([kind, name], *_buckets(metrics[key]))
        yield from numbers.values()
        yield lag
        yield from histograms.values()


def _buckets(histogram: dict[str, Any]) -> tuple[list[tuple[str, float]], float]:
    """Cumulative ``(le, count)`` buckets and the sum, as Prometheus wants them."""
    cumulative, seen = [], 0
    for bound, count in histogram["buckets"]:
        seen += count
        if bound != float("inf"):
            cumulative.append((repr(float(bound)), float(seen)))
    cumulative.append(("+Inf", float(histogram["count"])))
    return cumulative, float(histogram["sum"])


class MetricsServer:
    """A running endpoint (:func:`serve`); ``close()`` stops it.

    Attributes:
        port: The port it listens on (the one given, or the one chosen for port 0).
    """

    def __init__(self, server: Any, thread: threading.Thread) -> None:
        self._server = server
        self._thread = thread
        self.port: int = server.server_address[1]

    def close(self) -> None:
        """Stop serving and free the port."""
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(10)


def serve(port: int, store: Store, addr: str = "127.0.0.1") -> MetricsServer:
    """Serve ``store``'s metrics at ``http://ADDR:PORT/metrics`` (port 0: any free one).

    Its own registry: nothing else of the process is exported with it.

    Raises:
        InvalidOption: prometheus_client is not installed, or the port is not 0..65535.
        OpenFailed: The port could not be bound.
    """
    if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
        msg = f"port must be an int in 0..65535, got {port!r}"
        raise InvalidOption(msg)
    prometheus = _prometheus()
    registry = prometheus.CollectorRegistry(auto_describe=False)
    registry.register(StoreCollector(store))
    try:
        server, thread = prometheus.start_http_server(port, addr=addr, registry=registry)
    except OSError as exc:
        where = f"{addr}:{port}"
        raise OpenFailed(where, exc, "serving metrics on") from exc
    return MetricsServer(server, thread)
