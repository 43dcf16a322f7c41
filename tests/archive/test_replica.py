"""Read-only replicas that follow an archive: every read works, writes are refused."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from actors import Index, InvalidOperation, ReadOnlyStore, Store, ops
from storage.archive import FileArchive
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


class CountingArchive(FileArchive):
    """A directory archive that counts the objects read from it."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.reads: list[str] = []

    def get(self, name: str) -> bytes:
        self.reads.append(name)
        return super().get(name)


def test_a_poll_reads_only_the_upload_records_that_can_have_changed(tmp_path: Path) -> None:
    archive = CountingArchive(tmp_path / "archive")
    options = {"archive": archive, "segment_bytes": 4096}
    with Store.open(tmp_path / "writer", **options) as writer:
        ks = writer.keyspace("k")
        for i in range(300):
            ks.put(f"k{i}", "x" * 40)
    with Store.open_replica(archive, tmp_path / "cache", follow=False) as replica:
        mirror = replica.keyspace("k")
        records = [n for n in archive.reads if "/uploads/" in n]
        assert len(set(records)) > 5  # many segments shipped
        replica.refresh()
        archive.reads.clear()
        assert replica.refresh() == 0
        newest = max(n for n in records if "/uploads/segment-" in n)
        tail = sorted({r for r in records if r.endswith("/uploads/tail.json")})
        assert sorted(archive.reads) == sorted([newest, *tail])  # and no data object
        with Store.open(tmp_path / "writer", **options) as writer:
            writer.keyspace("k").put("late", 1)
        archive.reads.clear()
        assert replica.refresh() == 1
        assert mirror["late"] == 1
        assert len(archive.reads) <= 4  # new and changed records, and the one new object


def test_a_replica_follows_the_segment_a_reopened_writer_goes_on_appending_to(
    tmp_path: Path, archive_url: str
) -> None:
    # A clean close ships the active segment as it is; a reopen appends to that segment and
    # ships it again under the same record, longer: the replica must read that record again.
    # When the reopened writer goes on past that segment, the tail moves to the next one, so
    # only the replaced record says what the segment now holds.
    options = {"archive": archive_url, "segment_bytes": 4096}
    with Store.open(tmp_path / "writer", **options) as writer:
        writer.keyspace("k").put("a", 1)
    with Store.open_replica(archive_url, tmp_path / "cache", follow=False) as replica:
        mirror = replica.keyspace("k")
        for round_ in range(3):
            with Store.open(tmp_path / "writer", **options) as writer:
                ks = writer.keyspace("k")
                for i in range(20 * round_ + 1):
                    ks.put(f"r{round_}-{i}", "x" * 50)
                expected = dict(ks.items())
            replica.refresh()
            assert dict(mirror.items()) == expected


def test_concurrent_refreshes_apply_each_record_once(tmp_path: Path) -> None:
    archive = f"file://{tmp_path / 'archive'}"
    with Store.open(tmp_path / "writer", archive=archive) as writer:
        writer.keyspace("k").put("a", 0)
    with Store.open_replica(archive, tmp_path / "cache", follow=False) as replica:
        mirror = replica.keyspace("k")
        with Store.open(tmp_path / "writer", archive=archive) as writer:
            ks = writer.keyspace("k")
            for i in range(200):
                ks.put("a", i)
            final = ks.last_seq
        start = threading.Barrier(4)

        def poll() -> None:
            start.wait()
            replica.refresh()

        pollers = [threading.Thread(target=poll) for _ in range(4)]
        for poller in pollers:
            poller.start()
        for poller in pollers:
            poller.join(TIMEOUT)
        assert mirror.last_seq == final
        assert mirror.get_entry("a").version == 201  # type: ignore[union-attr]
        assert [v.seq for v in mirror.history("a")] == list(range(1, final + 1))
