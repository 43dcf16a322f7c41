"""Shipping a store to an archive and restoring it, against a directory and a real S3 server."""

from __future__ import annotations

import itertools
import random
import threading
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from actors import ArchiveError, ArchiveGap, InvalidInput, InvalidOperation, InvalidOption, Store
from storage import FileArchive, open_archive, restore
from storage.archive import Archive
from tests.keyspace.conftest import TIMEOUT

SMALL = 4096  # segment bytes: many sealed segments from a few hundred puts


def write_history(path: Path, archive: Any, **options: Any) -> dict[str, Any]:
    """Puts, deletes and a snapshot in two key spaces; returns each point's expected state."""
    expected: dict[str, Any] = {}
    with Store.open(path, archive=archive, segment_bytes=SMALL, **options) as store:
        users, orders = store.keyspace("users"), store.keyspace("orders")
        rng = random.Random(5)
        for i in range(300):
            users.put(f"u{rng.randrange(60)}", {"i": i})
            if i % 7 == 0:
                users.delete(f"u{rng.randrange(60)}")
            if i == 150:
                users.snapshot()
            orders.put(f"o{i % 20}", i)
        expected["users"] = {
            seq: dict(users.at(seq).items()) for seq in range(1, users.last_seq + 1, 17)
        }
        expected["users_last"] = dict(users.items())
        expected["orders_last"] = dict(orders.items())
        expected["times"] = [(users.time_of(seq), seq) for seq in (40, 200, users.last_seq)]
        expected["users_at_time"] = {
            t: dict(users.at(time=t).items()) for t, _ in expected["times"]
        }
    return expected


def test_restore_of_the_latest_point_equals_the_source(tmp_path: Path, archive_url: str) -> None:
    expected = write_history(tmp_path / "source", archive_url)
    report = restore(archive_url, tmp_path / "restored")
    assert set(report.seqs) == {"keyspaces/users", "keyspaces/orders"}
    assert report.downloaded > 2
    with Store.open(tmp_path / "restored") as store:
        assert dict(store.keyspace("users").items()) == expected["users_last"]
        assert dict(store.keyspace("orders").items()) == expected["orders_last"]


def test_restore_to_seqs_and_times_equals_the_source_then(tmp_path: Path, archive_url: str) -> None:
    write_history(tmp_path / "source", archive_url)
    targets = itertools.count()
    with Store.open(tmp_path / "source") as source:  # not shipping: only its at() is asked
        users = source.keyspace("users")
        last = users.last_seq
        times = [users.time_of(seq) for seq in range(1, last + 1)]

        @settings(max_examples=15, deadline=None)
        @given(seq=st.integers(1, last))
        def at_seq(seq: int) -> None:
            target = tmp_path / f"seq-{next(targets)}"
            report = restore(archive_url, target, seq=seq, names=["users"])
            assert report.seqs == {"keyspaces/users": seq}
            with Store.open(target) as store:
                restored = store.keyspace("users")
                assert restored.last_seq == seq
                assert dict(restored.items()) == dict(users.at(seq).items())

        # A commit time itself, or a moment between two (or after the last).
        @settings(max_examples=15, deadline=None)
        @given(index=st.integers(0, last - 1), between=st.booleans())
        def at_time(index: int, between: bool) -> None:
            when = times[index]
            if between:
                after = times[index + 1] if index + 1 < last else when + 1.0
                when += (after - when) / 2
            target = tmp_path / f"time-{next(targets)}"
            restore(archive_url, target, time=when, names=["keyspaces/users"])
            with Store.open(target) as store:
                restored = store.keyspace("users")
                assert dict(restored.items()) == dict(users.at(time=when).items())
                assert restored.last_seq == users.at(time=when).seq

        at_seq()
        at_time()


def test_retention_keeps_what_is_not_shipped(tmp_path: Path) -> None:
    class Unreachable(FileArchive):
        down = True

        def put(self, name: str, data: bytes, **kwargs: Any) -> str:
            if self.down:
                raise ArchiveError("the archive is unreachable")
            return super().put(name, data, **kwargs)

    archive = Unreachable(tmp_path / "archive")
    with Store.open(
        tmp_path / "s", archive=archive, segment_bytes=SMALL, retention=0, archive_interval=0.05
    ) as store:
        ks = store.keyspace("k")
        for i in range(200):
            ks.put(f"k{i}", i)  # writes go on while shipping fails
        ks.snapshot()
        assert ks.compact().segments_removed == 0  # nothing shipped: nothing may go
        status = store.archive_status()["keyspaces/k"]
        assert status.failures > 0
        assert "unreachable" in (status.last_error or "")
        assert status.shipped_seq == 0
        archive.down = False
        wait_for(lambda: store.archive_status()["keyspaces/k"].shipped_seq > 150)
        ks.snapshot()
        assert ks.compact().segments_removed > 0
        expected = dict(ks.items())
        wait_for(lambda: store.archive_status()["keyspaces/k"].failures == 0)  # a round ends
    restore(archive, tmp_path / "restored")  # after local compaction: the archive has it all
    with Store.open(tmp_path / "restored") as store:
        assert dict(store.keyspace("k").items()) == expected


def test_a_tampered_object_is_refused(tmp_path: Path, archive_url: str) -> None:
    write_history(tmp_path / "source", archive_url)
    archive = open_archive(archive_url)
    name = next(n for n in archive.list("keyspaces/orders/segments/"))
    data = bytearray(archive.get(name))
    data[-5] ^= 0xFF
    archive.put(name, bytes(data))
    with pytest.raises(ArchiveError, match="do not match the digest"):
        restore(archive_url, tmp_path / "restored", names=["orders"])


def test_half_uploads_are_never_used_and_gaps_are_named(tmp_path: Path) -> None:
    archive = FileArchive(tmp_path / "archive")
    write_history(tmp_path / "source", archive)
    # A crash between an object and its upload record: an object no record names.
    archive.put("keyspaces/orders/segments/99999999999999999999.seg", b"half an upload")
    report = restore(archive, tmp_path / "ok", names=["orders"])
    last = report.seqs["keyspaces/orders"]
    records = archive.list("keyspaces/orders/uploads/segment-")
    assert len(records) > 3
    middle = records[len(records) // 2]
    archive.delete(middle)
    with pytest.raises(ArchiveGap, match=r"records \d+\.\.\d+ are not in the archive"):
        restore(archive, tmp_path / "gap", names=["orders"], seq=last)


def test_an_interrupted_restore_resumes(tmp_path: Path) -> None:
    archive = FileArchive(tmp_path / "archive")
    expected = write_history(tmp_path / "source", archive)

    class Flaky(FileArchive):
        reads = 0

        def get(self, name: str) -> bytes:
            if name.endswith(".seg"):
                Flaky.reads += 1
                if Flaky.reads >= 4:  # the network goes away for good midway
                    raise ArchiveError("connection reset")
            return super().get(name)

    with pytest.raises(ArchiveError, match="connection reset"):
        restore(Flaky(tmp_path / "archive"), tmp_path / "restored", workers=1)
    report = restore(archive, tmp_path / "restored")
    assert report.reused >= 3
    with Store.open(tmp_path / "restored") as store:
        assert dict(store.keyspace("users").items()) == expected["users_last"]


def test_bad_targets_and_archives(tmp_path: Path) -> None:
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("mine")
    with pytest.raises(InvalidOperation, match="not empty"):
        restore(f"file://{tmp_path / 'a'}", tmp_path / "full")
    for bad in ["ftp://x/y", "s3:///nobucket", 42, "file://host/dir"]:
        with pytest.raises(InvalidOption):
            Store.open(tmp_path / "s", archive=bad)
    with pytest.raises(InvalidOption, match="archive_interval"):
        Store.open(tmp_path / "s", archive=f"file://{tmp_path}/a", archive_interval=0)
    with Store.open(tmp_path / "s") as store, pytest.raises(InvalidOperation, match="no archive"):
        store.archive_status()
    assert isinstance(open_archive(f"file://{tmp_path}/a"), Archive)


def test_conditional_puts(tmp_path: Path, archive_url: str) -> None:
    from storage import ArchivePreconditionFailed

    archive = open_archive(archive_url)
    etag = archive.put("lease", b"one", if_none_match=True)
    with pytest.raises(ArchivePreconditionFailed):
        archive.put("lease", b"two", if_none_match=True)
    with pytest.raises(ArchivePreconditionFailed):
        archive.put("lease", b"two", if_match="0" * 32)
    newer = archive.put("lease", b"two", if_match=etag)
    assert archive.head("lease") == newer
    assert archive.get("lease") == b"two"
    assert archive.head("missing") is None
    archive.delete("lease")
    assert archive.list("") == []


def wait_for(condition: Any) -> None:
    done = threading.Event()
    for _ in range(int(TIMEOUT / 0.02)):
        if condition():
            return
        done.wait(0.02)
    raise AssertionError("timed out waiting")


def test_the_active_segments_durable_records_ship_every_interval(
    tmp_path: Path, archive_url: str
) -> None:
    # One big segment: nothing is sealed, so only tail shipping can get records out.
    with Store.open(tmp_path / "s", archive=archive_url, archive_interval=0.05) as store:
        ks = store.keyspace("k")
        for i in range(50):
            ks.put(f"k{i}", i)
        wait_for(lambda: store.archive_status()["keyspaces/k"].pending == 0)
        assert store.archive_status()["keyspaces/k"].shipped_seq == 50
        # The machine is lost now: restore while the writer still runs.
        report = restore(archive_url, tmp_path / "restored")
        assert report.seqs == {"keyspaces/k": 50}
        with Store.open(tmp_path / "restored") as restored:
            assert dict(restored.keyspace("k").items()) == dict(ks.items())
        for i in range(50, 80):
            ks.put(f"k{i}", i)
        wait_for(lambda: store.archive_status()["keyspaces/k"].shipped_seq == 80)
    report = restore(archive_url, tmp_path / "again")
    assert report.seqs == {"keyspaces/k": 80}


def test_another_history_is_never_shipped_over_the_archive(
    tmp_path: Path, archive_url: str
) -> None:
    expected = write_history(tmp_path / "first", archive_url)
    # A different store on the same prefix (the first closed, its lease released): its own
    # log would overwrite the archived one record for record.
    with Store.open(tmp_path / "other", archive=archive_url, archive_interval=0.05) as other:
        users = other.keyspace("users")
        for i in range(30):
            users.put(f"x{i}", i)  # writes go on
        wait_for(lambda: other.archive_status()["keyspaces/users"].failures > 0)
        assert "another history" in (other.archive_status()["keyspaces/users"].last_error or "")
    restore(archive_url, tmp_path / "restored", names=["users"])
    with Store.open(tmp_path / "restored") as store:
        assert dict(store.keyspace("users").items()) == expected["users_last"]


def test_a_segment_shipped_while_active_and_sealed_later_is_the_same_history(
    tmp_path: Path, archive_url: str
) -> None:
    # A clean close ships the active segment as it is. Written on past it (here while not
    # shipping, so the segment is sealed before the next shipper looks), the local segment
    # is longer than the archived copy, which is its prefix: an extension, not another log.
    with Store.open(tmp_path / "s", archive=archive_url, segment_bytes=SMALL) as store:
        store.keyspace("k").put("a", 1)
    with Store.open(tmp_path / "s", segment_bytes=SMALL) as store:
        ks = store.keyspace("k")
        for i in range(100):
            ks.put(f"k{i}", "x" * 50)
        expected = dict(ks.items())
    with Store.open(tmp_path / "s", archive=archive_url, segment_bytes=SMALL) as store:
        store.keyspace("k")  # its close ships everything
    report = restore(archive_url, tmp_path / "restored")
    assert report.seqs == {"keyspaces/k": 101}
    with Store.open(tmp_path / "restored") as restored:
        assert dict(restored.keyspace("k").items()) == expected


def test_restore_to_a_time_before_a_key_space_existed_leaves_it_out(
    tmp_path: Path, archive_url: str
) -> None:
    with Store.open(tmp_path / "s", archive=archive_url) as store:
        store.keyspace("early").put("a", 1)
        between = store.keyspace("early").time_of(1)
        store.keyspace("late").put("b", 2)
    report = restore(archive_url, tmp_path / "r", time=between)
    assert report.seqs == {"keyspaces/early": 1}
    with Store.open(tmp_path / "r") as restored:
        assert restored.keyspaces() == ["early"]
        assert dict(restored.keyspace("early").items()) == {"a": 1}
    with pytest.raises(InvalidInput, match=r"nothing in .* was written at or before"):
        restore(archive_url, tmp_path / "none", time=between - 60)
    with pytest.raises(InvalidInput, match="at or before seq=0"):
        restore(archive_url, tmp_path / "zero", seq=0)
