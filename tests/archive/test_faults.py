"""Shipping and restore through a fault-injecting proxy between boto3 and the S3 server."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from actors import ArchiveError, Store
from storage import restore
from storage.s3archive import S3Archive
from tests.archive.fault_proxy import FaultProxy
from tests.archive.test_ship_and_restore import wait_for

boto3 = pytest.importorskip("boto3")
from botocore.config import Config  # noqa: E402


@pytest.fixture
def proxy(s3_env: str) -> Iterator[FaultProxy]:
    proxy = FaultProxy(s3_env)
    yield proxy
    proxy.close()


def archive_through(proxy: FaultProxy, bucket: str, *, read_timeout: float = 5.0) -> S3Archive:
    config = Config(
        retries={"mode": "standard", "max_attempts": 3},
        connect_timeout=1,
        read_timeout=read_timeout,
    )
    return S3Archive(bucket, "p", endpoint_url=proxy.url, config=config)


def new_bucket(name: str) -> str:
    boto3.client("s3").create_bucket(Bucket=name)
    return name


def fill(store: Store, count: int, start: int = 0) -> None:
    ks = store.keyspace("k")
    for i in range(start, start + count):
        ks.put(f"k{i % 40}", {"i": i})


@pytest.mark.parametrize("fault", ["error", "timeout", "truncate", "slow"])
def test_shipping_catches_up_once_faults_stop(
    tmp_path: Path, proxy: FaultProxy, fault: str
) -> None:
    archive = archive_through(proxy, new_bucket(f"faults-{fault}"), read_timeout=0.2)
    proxy.delay = 0.5 if fault == "timeout" else 0.05
    options = {"archive": archive, "segment_bytes": 4096, "archive_interval": 0.05}
    with Store.open(tmp_path / "s", **options) as store:
        fill(store, 50)
        proxy.set(fault, rate=1.0 if fault in ("timeout", "error") else 0.5)
        fill(store, 150, 50)  # writes go on whatever the archive does
        wait_for(lambda: proxy.faulted > 0)
        if fault in ("error", "timeout"):
            wait_for(lambda: store.archive_status()["keyspaces/k"].failures > 0)
            assert store.archive_status()["keyspaces/k"].pending > 0
        proxy.set(None)
        wait_for(lambda: store.archive_status()["keyspaces/k"].pending == 0)
        assert store.archive_status()["keyspaces/k"].failures == 0
        expected = dict(store.keyspace("k").items())
    assert proxy.faulted > 0
    restore(archive, tmp_path / "restored")
    with Store.open(tmp_path / "restored") as restored:
        assert dict(restored.keyspace("k").items()) == expected


def test_restore_retries_cut_and_failed_reads(tmp_path: Path, proxy: FaultProxy) -> None:
    archive = archive_through(proxy, new_bucket("faults-restore"))
    with Store.open(tmp_path / "s", archive=archive, segment_bytes=4096) as store:
        fill(store, 300)
        expected = dict(store.keyspace("k").items())
    for fault in ("truncate", "error"):
        proxy.set(fault, rate=0.3)
        target = tmp_path / f"restored-{fault}"
        restore(archive, target, workers=2)
        proxy.set(None)
        with Store.open(target) as restored:
            assert dict(restored.keyspace("k").items()) == expected
    assert proxy.faulted > 0


def test_tampered_responses_are_refused(tmp_path: Path, proxy: FaultProxy) -> None:
    # In transit: botocore's response checksum catches it first, else the upload record's
    # digest does (an object replaced at rest: test_ship_and_restore).
    archive = archive_through(proxy, new_bucket("faults-tamper"))
    with Store.open(tmp_path / "s", archive=archive, segment_bytes=4096) as store:
        fill(store, 100)
    proxy.set("tamper")
    with pytest.raises(
        ArchiveError, match=r"do not match the digest|did not match calculated checksum"
    ):
        restore(archive, tmp_path / "restored")
