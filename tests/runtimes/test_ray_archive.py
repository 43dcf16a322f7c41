"""The Ray runtime with an archive: hosts ship their own logs under the driver's lease, and
a host whose log is gone from its node comes back from the archive."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from actors import ArchiveLeased, Store
from actors.runtimes._ray import NAMESPACE, host_name
from storage import restore
from tests.actors.conftest import Counter

pytestmark = pytest.mark.usefixtures("ray_cluster")


def wait_for(condition: Callable[[], bool], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def shipped(store: Store) -> bool:
    return all(status.pending == 0 for status in store.archive_status().values())


def test_hosts_ship_their_logs_and_the_archive_restores_them(tmp_path: Path) -> None:
    archive = f"file://{tmp_path / 'archive'}"
    with Store.open(tmp_path / "s", runtime="ray", archive=archive, archive_interval=0.1) as store:
        ks = store.keyspace("k")
        for i in range(50):
            ks.put(f"k{i}", i)
        counter = store.spawn("c", Counter)
        counter.blocking.increment(7)
        wait_for(lambda: shipped(store))
        assert set(store.archive_status()) == {"keyspaces/k", "actors/c"}
        with pytest.raises(ArchiveLeased):  # the driver holds the prefix's lease
            Store.open(tmp_path / "other", archive=archive)
        expected = dict(ks.items())
        # Reads that may trail a little can come from a replica in the reader's process.
        with Store.open_replica(archive, tmp_path / "replica", follow=False) as replica:
            assert dict(replica.keyspace("k").items()) == expected
    restore(archive, tmp_path / "restored")
    with Store.open(tmp_path / "restored") as restored:
        assert dict(restored.keyspace("k").items()) == expected
        assert restored.spawn("c", Counter).blocking.increment(1) == 8
    with Store.open(tmp_path / "next", archive=archive):
        pass  # the lease was let go at close


def test_a_host_whose_log_is_gone_comes_back_from_the_archive(
    tmp_path: Path, ray_cluster: Any
) -> None:
    archive = f"file://{tmp_path / 'archive'}"
    path = tmp_path / "s"
    with Store.open(path, runtime="ray", archive=archive, archive_interval=0.1) as store:
        ks = store.keyspace("k")
        for i in range(100):
            ks.put(f"k{i}", i)
        wait_for(lambda: shipped(store))
        expected = dict(ks.items())
        # The node is lost: its disk goes, then its process.
        (path / "keyspaces" / "k").rename(tmp_path / "lost-disk")
        actor = ray_cluster.get_actor(
            host_name(str(path.resolve()), "keyspaces/k"), namespace=NAMESPACE
        )
        ray_cluster.kill(actor, no_restart=False)
        assert dict(ks.items()) == expected  # the restarted host restored what was shipped
        ks.put("after", 1)
        assert ks.last_seq == 101
    with Store.open(path) as reopened:
        assert dict(reopened.keyspace("k").items()) == {**expected, "after": 1}
