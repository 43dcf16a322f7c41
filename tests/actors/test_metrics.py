"""store.metrics() counts what happened; the Prometheus endpoint serves it over 127.0.0.1."""

from __future__ import annotations

import urllib.request
from pathlib import Path

import pytest

from actors import InvalidOption, Store
from storage.histogram import BUCKETS, Histogram
from tests.typing.typed_usage import Counter


def test_a_histogram_counts_each_value_in_its_power_of_two_bucket() -> None:
    histogram = Histogram()
    for seconds in (0.5e-6, 3e-6, 3.5e-6, 1e-3, 1e9):
        histogram.record(seconds)
    assert histogram.count == 5
    assert histogram.total == pytest.approx(1e9 + 1e-3 + 7e-6)
    assert histogram.counts[0] == 1  # below a microsecond
    assert histogram.counts[2] == 2  # [2, 4) us
    assert histogram.counts[10] == 1  # [512, 1024) us
    assert histogram.counts[BUCKETS - 1] == 1  # past the last bound: the last bucket
    assert histogram.quantile(0.5) == 4e-6
    assert histogram.quantile(1.0) == float("inf")
    assert Histogram().quantile(0.99) == 0.0


def test_metrics_count_the_writes_groups_fsyncs_snapshots_and_lags(tmp_path: Path) -> None:
    with Store.open(tmp_path / "store", recovery_budget=None) as store:
        users = store.keyspace("users")
        for i in range(50):
            users.put(f"u{i}", i)
        with users.batch() as batch:
            batch.put("a", 1)
            batch.put("b", 2)
        subscription = users.subscribe(from_seq=1, name="mailer")
        subscription.next(5)
        subscription.ack(1)
        users.snapshot()
        counter = store.spawn("counter", Counter)
        for _ in range(5):
            counter.blocking.add(2)
        found = store.metrics()
    ks = found["keyspaces"]["users"]
    assert (ks["commands"], ks["records"], ks["last_seq"]) == (51, 51, 51)
    assert ks["write_latency"]["count"] == 51
    assert ks["group_size"]["count"] == ks["groups"] == 51  # one caller: one write a group
    assert ks["fsync_latency"]["count"] == ks["fsyncs"] >= 51
    assert 0 < ks["write_latency"]["p50"] <= ks["write_latency"]["p99"]
    assert ks["snapshot_seconds"]["count"] == 1
    assert ks["snapshot_seq"] == 51
    assert ks["subscriber_lag"] == {"mailer": 50}
    assert ks["archive_lag"] is None
    actor = found["actors"]["counter"]
    assert (actor["commands"], actor["write_latency"]["count"]) == (5, 5)


def test_metrics_of_a_reopened_store_say_what_its_open_replayed(tmp_path: Path) -> None:
    with Store.open(tmp_path / "store", recovery_budget=None) as store:
        users = store.keyspace("users")
        for i in range(100):
            users.put(f"u{i}", i)
    with Store.open(tmp_path / "store", recovery_budget=None) as store:
        store.keyspace("users")
        replayed = store.metrics()["keyspaces"]["users"]
    assert replayed["records_replayed"] == 100
    assert replayed["replay_seconds"] > 0
    assert replayed["write_latency"]["count"] == 0


def test_the_prometheus_endpoint_serves_the_metrics_over_loopback(tmp_path: Path) -> None:
    pytest.importorskip("prometheus_client")
    from actors.metrics import serve

    with Store.open(tmp_path / "store") as store:
        users = store.keyspace("users")
        for i in range(7):
            users.put(f"u{i}", i)
        users.subscribe(from_seq=1, name="mailer").close()
        server = serve(0, store)
        try:
            url = f"http://127.0.0.1:{server.port}/metrics"
            with urllib.request.urlopen(url, timeout=10) as response:
                text = response.read().decode()
            users.put("more", 1)
            with urllib.request.urlopen(url, timeout=10) as response:
                later = response.read().decode()
        finally:
            server.close()
    assert 'actorkv_commands_total{kind="keyspace",name="users"} 7.0' in text
    assert 'actorkv_last_seq{kind="keyspace",name="users"} 7.0' in text
    assert 'actorkv_write_latency_count{kind="keyspace",name="users"} 7.0' in text
    assert 'actorkv_write_latency_bucket{kind="keyspace",le="+Inf",name="users"} 7.0' in text
    assert 'actorkv_subscriber_lag{kind="keyspace",name="users",subscription="mailer"} 7.0' in text
    assert 'actorkv_commands_total{kind="keyspace",name="users"} 8.0' in later  # read per scrape


def test_serve_refuses_a_bad_port(tmp_path: Path) -> None:
    pytest.importorskip("prometheus_client")
    from actors.metrics import serve

    with Store.open(tmp_path / "store") as store:
        for port in (-1, 70_000, "9464"):
            with pytest.raises(InvalidOption, match="port"):
                serve(port, store)  # type: ignore[arg-type]


def test_sampled_reads_time_every_nth_get_and_unsampled_stores_time_none(tmp_path: Path) -> None:
    with Store.open(tmp_path / "plain") as store:
        users = store.keyspace("users")
        users.put("a", 1)
        for _ in range(100):
            users.get("a")
        assert store.metrics()["keyspaces"]["users"]["get_latency"]["count"] == 0
        assert "get" not in vars(users)  # the class's method: nothing in its way
    with Store.open(tmp_path / "sampled", sample_reads=10) as store:
        users = store.keyspace("users")
        users.put("a", 1)
        for _ in range(95):
            assert users.get("a") == 1
        for _ in range(5):
            assert users["a"] == 1  # item reads go through get too
        assert users.get("missing", "default") == "default"
        found = store.metrics()["keyspaces"]["users"]["get_latency"]
    assert found["count"] == 10  # gets 10, 20, ..., 100
    assert 0 < found["p50"] < 1.0
    for bad in (0, -1, 2.5, True):
        with pytest.raises(InvalidOption, match="sample_reads"):
            Store.open(tmp_path / "bad", sample_reads=bad)  # type: ignore[arg-type]
