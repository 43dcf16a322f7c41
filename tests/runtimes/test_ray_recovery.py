"""The Ray runtime under failure: hosts killed under load, a second driver attaching.

On a local Ray cluster (``ray.init(num_cpus=2, include_dashboard=False)``, started by the
``ray_cluster`` fixture).
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from actors import InvalidOperation, Store
from actors.runtimes._ray import NAMESPACE, host_name
from tests.actors.conftest import Counter

pytestmark = pytest.mark.usefixtures("ray_cluster")


def kill_host(ray: Any, store: Path, directory: str) -> None:
    """Kill the host as a crash would (Ray restarts it)."""
    actor = ray.get_actor(host_name(str(store.resolve()), directory), namespace=NAMESPACE)
    ray.kill(actor, no_restart=False)


def test_a_killed_key_space_host_restarts_with_every_acknowledged_write(
    tmp_path: Path, ray_cluster: Any
) -> None:
    path = tmp_path / "s"
    acknowledged: dict[str, int] = {}
    failures: list[BaseException] = []
    with Store.open(path, runtime="ray") as store:
        ks = store.keyspace("k")
        stop = threading.Event()

        def write(worker: int) -> None:
            i = 0
            while not stop.is_set():
                key = f"w{worker}-{i}"
                try:
                    ks.put(key, i)
                except BaseException as exc:  # the test reports it
                    failures.append(exc)
                    return
                acknowledged[key] = i
                i += 1

        writers = [threading.Thread(target=write, args=(n,)) for n in range(4)]
        for writer in writers:
            writer.start()
        for _ in range(3):
            time.sleep(0.5)
            kill_host(ray_cluster, path, "keyspaces/k")
        time.sleep(0.5)
        stop.set()
        for writer in writers:
            writer.join(120)
        assert not failures
        assert len(acknowledged) > 50
        assert dict(ks.items()) == acknowledged  # every acknowledged write, once
        versions = {
            key: entry.version for key, entry in ((k, ks.get_entry(k)) for k in acknowledged)
        }
        assert set(versions.values()) == {1}  # a retried put was not applied twice
        assert ks.last_seq == len(acknowledged)
    with Store.open(path) as reopened:  # the same log, under the threads runtime
        assert dict(reopened.keyspace("k").items()) == acknowledged


def test_a_killed_actor_host_applies_retried_commands_once(
    tmp_path: Path, ray_cluster: Any
) -> None:
    path = tmp_path / "s"
    with Store.open(path, runtime="ray") as store:
        counter = store.spawn("c", Counter)
        total = 0
        futures = []
        for _round in range(3):
            for _ in range(100):
                futures.append(counter.increment(1))
                total += 1
            kill_host(ray_cluster, path, "actors/c")
        results = [future.get(timeout=120) for future in futures]
        assert sorted(results) == list(range(1, total + 1))  # each ran once, in order
        assert results == sorted(results)
        assert counter.blocking.increment(1) == total + 1
    with Store.open(path) as reopened:
        assert reopened.spawn("c", Counter).blocking.increment(0 + 1) == total + 2


class DiesAfterWriting(Counter):
    """A counter whose process dies once right after a write is durable, before answering."""

    def __init__(self, trigger: str) -> None:
        self._trigger = Path(trigger)

    def on_persisted(self) -> None:
        if self._trigger.exists():
            self._trigger.unlink()
            os._exit(1)  # the record is durable; the caller never hears of it


def test_a_write_durable_before_its_host_died_is_answered_not_applied_again(
    tmp_path: Path,
) -> None:
    path, trigger = tmp_path / "s", tmp_path / "die-now"
    with Store.open(path, runtime="ray") as store:
        counter = store.spawn("c", DiesAfterWriting, str(trigger))
        assert counter.blocking.increment(1) == 1
        trigger.touch()
        assert counter.blocking.increment(10) == 11  # sent again after the restart
        assert not trigger.exists()  # the host did die, after the write
        trigger.touch()
        assert counter.increment(100).get(timeout=120) == 111  # a pipelined one too
        assert counter.blocking.increment(1000) == 1111
    with Store.open(path) as reopened:
        assert reopened.spawn("c", DiesAfterWriting, str(trigger)).blocking.increment(0 + 1) == 1112


SECOND_DRIVER = """
import sys
import ray
from actors import Store
ray.init(address="auto", namespace="actorkv", log_to_driver=False)
store = Store.connect(sys.argv[1], runtime="ray")
ks = store.keyspace("k")
print(store.keyspaces(), ks.get("written-by-first"), len(ks))
ks.put("written-by-second", 2)
store.close()
"""


def test_a_second_driver_attaches_and_reads_what_the_first_wrote(
    tmp_path: Path, ray_cluster: Any
) -> None:
    path = tmp_path / "s"
    with Store.open(path, runtime="ray") as store:
        ks = store.keyspace("k")
        ks.put("written-by-first", 1)
        done = subprocess.run(
            [sys.executable, "-c", SECOND_DRIVER, str(path)],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert done.returncode == 0, done.stderr[-3000:]
        assert done.stdout.strip().splitlines()[-1] == "['k'] 1 1"
        assert ks.get("written-by-second") == 2  # its write went to the same host
        with pytest.raises(InvalidOperation, match="not running"):
            Store.connect(path).keyspace("other")
    with pytest.raises(InvalidOperation, match="no store named"):
        Store.connect(path)


def test_a_store_reopened_at_once_gets_new_hosts_not_the_closing_ones(tmp_path: Path) -> None:
    path = tmp_path / "s"
    for round_number in range(10):  # a closed host's name is released a moment later
        with Store.open(path, runtime="ray") as store:
            assert store.spawn("c", Counter).blocking.increment(1) == round_number + 1
            store.keyspace("k").put("n", round_number)
    with Store.open(path) as reopened:
        assert reopened.keyspace("k")["n"] == 9
