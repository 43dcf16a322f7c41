"""Benchmarks of shipping to S3 and restoring from it, against moto's S3 server on 127.0.0.1.

Goals and figures (issue 15; reported in ``extra_info`` and printed, never asserted):

1. shipping throughput (MB/s of log shipped) and the lag it holds under a write load: a
   writer puts 1 KiB values in batches of 100 (one record each) for 10 s, as fast as it can
   (saturating: what shipping sustains) and paced to 10 MB/s (steady: the lag it holds),
   while the store ships every 0.2 s; the lag (records written, not yet shipped) is
   sampled every 50 ms;
2. restore of a store of 1,000,000 keys (a snapshot, then 100,000 records after it): wall
   time, against copying the same objects with boto3 directly (8 threads, no checks);
3. replica lag at a 1 s poll: a put every 50 ms carrying its wall time, the writer shipping
   every 0.2 s, the time until the replica's subscription delivers it.

moto keeps objects in memory in this process, so both sides pay its cost alike; figures
against a real S3 endpoint differ (network), the ratio less so. Run with
``pytest bench/test_archive_bench.py --benchmark-only -s``.

Measured (2-core VM shared with other work; moto in the benchmark's own process, so it
competes for the interpreter with the writer): saturating, the writer put 48.7 MB/s and
shipping kept 44.8 MB/s, lagging 998 records (~2 s) at the median, 1,700 at p99, and caught
up 2.0 s after the writer stopped; at a steady 10 MB/s, shipping kept pace with a lag of 15
records (0.15 s) at the median and 32 (0.33 s) at p99, caught up 0.2 s after. A restore
of 1,000,000 keys plus 100,000 records after the snapshot (23.1 MB in 2 objects) took
0.52 s (0.50-0.66, 3 runs) against 0.23 s for copying the same objects with boto3: 2.2x,
the difference being the digests, the cut and the full verification of the restored log.
Replica lag at a 1 s poll (0.2 s shipping), two runs: p50 0.66-0.67 s, p99 1.19-1.96 s.
"""

from __future__ import annotations

import os
import statistics
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from actors import Store
from bench.conftest import bench_size
from storage import restore
from storage.shipping import read_uploads

boto3 = pytest.importorskip("boto3")
moto_server = pytest.importorskip("moto.server")


@pytest.fixture(scope="module")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Any:
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    saved = {name: os.environ.get(name) for name in ("AWS_ENDPOINT_URL_S3", "AWS_ACCESS_KEY_ID")}
    os.environ.update(
        AWS_ENDPOINT_URL_S3=endpoint,
        AWS_ACCESS_KEY_ID="bench",
        AWS_SECRET_ACCESS_KEY="bench",
        AWS_DEFAULT_REGION="us-east-1",
    )
    yield boto3.client("s3")
    for name, value in saved.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value
    server.stop()


@pytest.mark.parametrize("load", ["saturating", "steady 10 MB/s"])
def test_shipping_throughput_and_lag(benchmark, s3: Any, tmp_path: Path, load: str) -> None:
    bucket = "ship-" + load.split(maxsplit=1)[0]
    s3.create_bucket(Bucket=bucket)
    pace = 0.0 if load == "saturating" else 100 * 1024 / 10e6  # seconds per batch
    seconds = bench_size(10, 1)
    value = "v" * 1024
    lags: list[int] = []
    with Store.open(
        tmp_path / "s", archive=f"s3://{bucket}/p", archive_interval=0.2, fsync="never"
    ) as store:
        ks = store.keyspace("k")
        stop = threading.Event()

        def sample() -> None:
            while not stop.wait(0.05):
                lags.append(store.archive_status()["keyspaces/k"].pending)

        sampler = threading.Thread(target=sample)
        sampler.start()
        began = time.perf_counter()
        written = 0
        while (now := time.perf_counter()) - began < seconds:
            with ks.batch() as batch:
                for i in range(100):
                    batch.put(f"k{(written + i) % 50_000}", value)
            written += 100
            if pace:
                time.sleep(max(0.0, began + written / 100 * pace - now))
        wrote_for = time.perf_counter() - began
        deadline = time.monotonic() + 120
        while store.archive_status()["keyspaces/k"].pending and time.monotonic() < deadline:
            time.sleep(0.05)
        caught_up = time.perf_counter() - began
        stop.set()
        sampler.join()
        rate = ks.last_seq / wrote_for
    shipped = sum(u.bytes for u in read_uploads(_archive(bucket), "keyspaces/k/"))
    benchmark.pedantic(lambda: None, rounds=1)
    lags.sort()
    figures = {
        "puts written": written,
        "MB/s written": round(written * 1024 / 1e6 / wrote_for, 1),
        "records/s written (100 puts each)": round(rate),
        "MB shipped": round(shipped / 1e6, 1),
        "MB/s shipped": round(shipped / 1e6 / caught_up, 1),
        "lag p50 records": lags[len(lags) // 2] if lags else 0,
        "lag p99 records": lags[int(len(lags) * 0.99)] if lags else 0,
        "lag p99 seconds": round((lags[int(len(lags) * 0.99)] if lags else 0) / max(rate, 1), 3),
        "caught up after s": round(caught_up - wrote_for, 2),
    }
    benchmark.extra_info.update(figures)
    print(f"\nshipping, {load}: {figures}")


def _archive(bucket: str) -> Any:
    from storage.s3archive import S3Archive

    return S3Archive(bucket, "p")


def test_restore_of_a_million_keys_vs_a_plain_copy(benchmark, s3: Any, tmp_path: Path) -> None:
    s3.create_bucket(Bucket="restore")
    keys, after = bench_size(1_000_000, 2_000), bench_size(100_000, 200)
    with Store.open(tmp_path / "s", archive="s3://restore/p", fsync="never") as store:
        ks = store.keyspace("k")
        for start in range(0, keys, 10_000):
            with ks.batch() as batch:
                for i in range(start, min(start + 10_000, keys)):
                    batch.put(f"key{i:09d}", i)
        ks.snapshot()
        for i in range(after):  # one record each
            ks.put(f"key{i * 7 % keys:09d}", -i)
    times, copies = [], []
    for round_number in range(bench_size(3, 1)):
        began = time.perf_counter()
        report = restore("s3://restore/p", tmp_path / f"restored-{round_number}")
        times.append(time.perf_counter() - began)
        began = time.perf_counter()
        copied = _plain_copy(s3, "restore", tmp_path / f"copy-{round_number}")
        copies.append(time.perf_counter() - began)
    with Store.open(tmp_path / "restored-0") as restored:
        assert len(restored.keyspace("k")) == keys
    benchmark.pedantic(lambda: None, rounds=1)
    figures = {
        "restore s": round(statistics.median(times), 2),
        "restore s range": [round(min(times), 2), round(max(times), 2)],
        "boto3 copy s": round(statistics.median(copies), 2),
        "ratio to the copy": round(statistics.median(times) / statistics.median(copies), 2),
        "MB": round(copied / 1e6, 1),
        "objects": report.downloaded,
    }
    benchmark.extra_info.update(figures)
    print(f"\nrestore: {figures}")


def _plain_copy(s3: Any, bucket: str, target: Path) -> int:
    """What the restore fetched, copied with boto3 alone: its objects, 8 at a time."""
    uploads = read_uploads(_archive(bucket), "keyspaces/k/")
    snapshot = max((u for u in uploads if u.kind == "snapshot"), key=lambda u: u.last_seq)
    objects = [snapshot.object] + [
        u.object for u in uploads if u.kind != "snapshot" and u.last_seq > snapshot.last_seq
    ]
    target.mkdir(parents=True)

    def copy(name: str) -> int:
        data = s3.get_object(Bucket=bucket, Key=f"p/keyspaces/k/{name}")["Body"].read()
        (target / Path(name).name).write_bytes(data)
        return len(data)

    with ThreadPoolExecutor(max_workers=8) as pool:
        return sum(pool.map(copy, objects))


def test_replica_lag_at_a_one_second_poll(benchmark, s3: Any, tmp_path: Path) -> None:
    """Write-to-replica latency: a put every 50 ms, its wall time carried in the value."""
    s3.create_bucket(Bucket="replica")
    seconds = bench_size(20, 2)
    lags: list[float] = []
    with Store.open(tmp_path / "w", archive="s3://replica/p", archive_interval=0.2) as writer:
        ks = writer.keyspace("k")
        ks.put("start", 0.0)
        while writer.archive_status()["keyspaces/k"].pending:
            time.sleep(0.02)
        with Store.open_replica("s3://replica/p", tmp_path / "r", poll_interval=1.0) as replica:
            changes = replica.keyspace("k").subscribe()
            stop = threading.Event()

            def collect() -> None:
                while not stop.is_set():
                    change = changes.next(timeout=0.2)
                    if change is not None and change.key.startswith("t"):
                        lags.append(time.time() - change.value)

            collector = threading.Thread(target=collect)
            collector.start()
            began = time.monotonic()
            i = 0
            while time.monotonic() - began < seconds:
                ks.put(f"t{i % 100}", time.time())
                i += 1
                time.sleep(0.05)
            deadline = time.monotonic() + 10
            while len(lags) < i and time.monotonic() < deadline:
                time.sleep(0.05)
            stop.set()
            collector.join()
            changes.close()
    benchmark.pedantic(lambda: None, rounds=1)
    lags.sort()
    figures = {
        "writes": i,
        "seen on the replica": len(lags),
        "lag p50 s": round(lags[len(lags) // 2], 3) if lags else None,
        "lag p99 s": round(lags[int(len(lags) * 0.99)], 3) if lags else None,
        "lag max s": round(lags[-1], 3) if lags else None,
    }
    benchmark.extra_info.update(figures)
    print(f"\nreplica: {figures}")
