"""Read-only replicas that follow an archive: every read works, writes are refused."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from actors import Index, InvalidOperation, ReadOnlyStore, Store, ops
from tests.archive.test_ship_and_restore import wait_for
from tests.keyspace.conftest import TIMEOUT


def test_a_replica_follows_a_writer_under_load(tmp_path: Path, archive_url: str) -> None:
    options = {"archive": archive_url, "archive_interval": 0.05, "segment_bytes": 4096}
    with Store.open(tmp_path / "writer", **options) as writer:
        ks = writer.keyspace("k", indexes={"by_n": Index(field="n")})
        for i in range(50):
            ks.put(f"k{i}", {"n": i % 5})
        wait_for(lambda: writer.archive_status()["keyspaces/k"].pending == 0)
        with Store.open_replica(archive_url, tmp_path / "cache", poll_interval=0.05) as replica:
            mirror = replica.keyspace("k")
            assert dict(mirror.items()) == dict(ks.items())
            changes = mirror.subscribe()
            stop = threading.Event()

            def write() -> None:
                i = 50
                while not stop.is_set():
                    ks.operate(f"k{i % 70}", [ops.set("n", i % 5), ops.add("hits", 1)])
                    if i % 9 == 0:
                        ks.delete(f"k{(i * 7) % 70}")
                    i += 1

            writer_thread = threading.Thread(target=write)
            writer_thread.start()
            try:
                wait_for(lambda: mirror.last_seq > 150)
            finally:
                stop.set()
                writer_thread.join(TIMEOUT)
            final = ks.last_seq
            wait_for(lambda: writer.archive_status()["keyspaces/k"].pending == 0)
            wait_for(lambda: mirror.last_seq == final)
            assert dict(mirror.items()) == dict(ks.items())  # converged
            assert replica.lag() == {"keyspaces/k": 0}
            assert list(mirror.index("by_n").range()) == list(ks.index("by_n").range())
            assert dict(mirror.at(100).items()) == dict(ks.at(100).items())
            # Same changes at the same seqs (commit times are the replica's own).
            assert [(v.seq, v.op, v.value, v.version) for v in mirror.history("k3")] == [
                (v.seq, v.op, v.value, v.version) for v in ks.history("k3")
            ]
            first = changes.next(timeout=TIMEOUT)
            assert first is not None
            assert first.seq > 50  # live changes arrived through the replica's own publication
            changes.close()


def test_a_replica_refuses_writes(tmp_path: Path, archive_url: str) -> None:
    with Store.open(tmp_path / "writer", archive=archive_url) as writer:
        writer.keyspace("k").put("a", 1)
    with Store.open_replica(archive_url, tmp_path / "cache", follow=False) as replica:
        ks = replica.keyspace("k")
        assert ks["a"] == 1
        for write in (
            lambda: ks.put("b", 2),
            lambda: ks.delete("a"),
            lambda: ks.increment("n"),
            lambda: ks.operate("a", [ops.set("x", 1)]),
            lambda: ks.put_async("b", 2),
            lambda: replica.drop_keyspace("k"),
            lambda: replica.fork_keyspace("k", "f"),
        ):
            with pytest.raises(ReadOnlyStore, match="is a replica of"):
                write()
        with pytest.raises(ReadOnlyStore), ks.batch() as batch:
            batch.put("c", 3)
        with pytest.raises(InvalidOperation, match="has no key space 'other'"):
            replica.keyspace("other")
        assert ks["a"] == 1
        assert replica.refresh() == 0
    # A replica's cache is its own: it is restored afresh at the next open.
    with Store.open_replica(archive_url, tmp_path / "cache", follow=False) as replica:
        assert replica.keyspace("k")["a"] == 1
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "data").write_text("x")
    with pytest.raises(InvalidOperation, match="other than a replica"):
        Store.open_replica(archive_url, tmp_path / "mine")
