"""Snapshots, retention and bounded recovery of a key space.

A reopen loads the newest snapshot and replays only the records after it; versions, seqs,
deletions and expiry continue across snapshots and compaction as if nothing was dropped.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from actors import CompactionReport, InvalidOption, SnapshotInfo, Store
from storage.manifest import read_manifest
from tests.keyspace.conftest import keyspace_dir

pytestmark = pytest.mark.usefixtures("runtime")


def fill(store: Store, name: str = "ks", rounds: int = 10, keys: int = 50) -> dict[str, int]:
    """Overwrite ``keys`` keys ``rounds`` times; returns each key's version."""
    ks = store.keyspace(name)
    versions = {}
    for r in range(rounds):
        for k in range(keys):
            versions[f"k{k:03d}"] = ks.put(f"k{k:03d}", r).version
    return versions


def test_a_reopen_replays_only_the_records_after_the_snapshot(tmp_path: Path):
    with Store.open(tmp_path / "store", recovery_budget=None) as store:
        versions = fill(store)
        ks = store.keyspace("ks")
        info = ks.snapshot()
        assert isinstance(info, SnapshotInfo)
        assert (info.seq, info.items) == (500, 50)
        assert info.path.exists()
        assert info.bytes == info.path.stat().st_size
        ks.put("after", 1)
        ks.delete("k000")
        assert ks.stats().snapshot_seq == 500
    with Store.open(tmp_path / "store", recovery_budget=None) as store:
        ks = store.keyspace("ks")
        stats = ks.stats()
        assert (stats.snapshot_seq, stats.records_replayed) == (500, 2)
        assert ks.get("k000") is None
        assert ks.get("k001") == 9
        for key, version in versions.items():
            if key != "k000":
                assert ks.get_entry(key).version == version
        assert ks.put("k000", "back").version == 1  # deleted before: its version restarts
        assert ks.put("k001", 10, expect_version=10).version == 11  # CAS sees the same
        assert ks.last_seq == 504  # seqs never go back


def test_retention_zero_drops_the_history_below_the_snapshot(tmp_path: Path):
    options = {"segment_bytes": 4096, "recovery_budget": None, "retention": 0}
    with Store.open(tmp_path / "store", **options) as store:
        fill(store)
        ks = store.keyspace("ks")
        before = ks.stats()
        assert before.history_floor == 1
        info = ks.snapshot()
        after = ks.stats()
        assert after.history_floor == info.seq + 1  # the snapshot rolled the segment first
        assert after.log_bytes < before.log_bytes
        report = ks.compact()
        assert report == CompactionReport(0, 0, info.seq + 1)  # nothing more to drop
        ks.put("k001", "new")
    with Store.open(tmp_path / "store", **options) as store:
        ks = store.keyspace("ks")
        assert ks.stats().records_replayed == 1
        assert ks.get("k001") == "new"
        assert ks.get_entry("k001").version == 11
        assert ks.get("k049") == 9


def test_without_retention_every_event_is_kept(tmp_path: Path):
    with Store.open(tmp_path / "store", segment_bytes=4096, recovery_budget=None) as store:
        fill(store)
        ks = store.keyspace("ks")
        ks.snapshot()
        assert ks.stats().history_floor == 1
        assert ks.compact().segments_removed == 0


def test_snapshots_are_taken_automatically_within_the_recovery_budget(tmp_path: Path):
    with Store.open(tmp_path / "store", recovery_budget=0.001) as store:
        ks = store.keyspace("ks")  # 0.001 s x ~300,000 records/s: every ~300 records
        futures = [ks.put_async(f"k{i % 100}", i) for i in range(3000)]
        [future.get() for future in futures]
        for i in range(200):
            ks.put(f"k{i % 100}", i)
        assert ks.stats().snapshot_seq > 2000
        listed = read_manifest(keyspace_dir(tmp_path / "store", "ks")).snapshots
        assert 1 <= len(listed) <= 2
        assert [entry.seq for entry in listed] == sorted((e.seq for e in listed), reverse=True)
    with Store.open(tmp_path / "store") as store:
        ks = store.keyspace("ks")
        assert ks.stats().records_replayed < 3200
        assert ks.get("k99") == 199
        assert len(ks) == 100


def test_a_clean_close_snapshots_when_the_replay_has_grown(tmp_path: Path):
    with Store.open(tmp_path / "store", recovery_budget=0.1) as store:
        ks = store.keyspace("ks")  # a tenth of ~30,000 records: 3,000 and more
        futures = [ks.put_async(f"k{i % 10}", i) for i in range(5000)]
        [future.get() for future in futures]
    with Store.open(tmp_path / "store", recovery_budget=0.1) as store:
        ks = store.keyspace("ks")
        assert ks.stats().records_replayed == 0
        assert ks.stats().snapshot_seq == 5000
        assert ks.get("k9") == 4999


def test_ttl_entries_expire_the_same_after_a_snapshot(tmp_path: Path):
    now = [1000.0]
    options = {"recovery_budget": None, "clock": lambda: now[0]}
    with Store.open(tmp_path / "store", **options) as store:
        ks = store.keyspace("ks")
        ks.put("short", 1, ttl=10)
        ks.put("long", 2, ttl=1000)
        ks.put("forever", 3)
        ks.snapshot()
    now[0] = 1100.0
    with Store.open(tmp_path / "store", **options) as store:
        ks = store.keyspace("ks")
        assert ks.stats().records_replayed == 0
        assert ks.get("short") is None
        assert ks.get("long") == 2
        assert ks.get("forever") == 3
        assert ks.sweep() == 1  # the expiry index came back with the entries
        assert ks.put("short", "again").version == 1


def test_a_snapshot_with_nothing_new_is_the_newest_one(tmp_path: Path):
    with Store.open(tmp_path / "store", recovery_budget=None) as store:
        ks = store.keyspace("ks")
        ks.put("a", 1)
        first = ks.snapshot()
        assert ks.snapshot() == first


def test_a_snapshot_of_another_value_type_policy_reads_back_the_same(tmp_path: Path):
    with Store.open(tmp_path / "store", recovery_budget=None) as store:
        ks = store.keyspace("ks")
        ks.put("n", 7)
        ks.put("s", "text")
        ks.put("d", {"a": [1, 2]})
        ks.snapshot()
    with Store.open(tmp_path / "store") as store:
        ks = store.keyspace("ks", value_type=int | str | dict)
        assert (ks.get("n"), ks.get("s"), ks.get("d")) == (7, "text", {"a": [1, 2]})


@pytest.mark.parametrize(
    ("option", "value"),
    [("recovery_budget", 0), ("recovery_budget", -1), ("retention", -1), ("retention", "1")],
)
def test_a_bad_history_option_is_invalid_option(tmp_path: Path, option: str, value: object):
    with pytest.raises(InvalidOption, match=option):
        Store.open(tmp_path / "store", **{option: value})
    with Store.open(tmp_path / "other") as store, pytest.raises(InvalidOption, match=option):
        store.keyspace("ks", **{option: value})


def test_a_damaged_snapshot_is_unlisted_so_the_good_one_stays_the_fallback(tmp_path: Path):
    with Store.open(tmp_path / "store", recovery_budget=None) as store:
        ks = store.keyspace("ks")
        ks.put("a", 1)
        good = ks.snapshot()
        ks.put("b", 2)
        bad = ks.snapshot()
    damaged = bad.path.read_bytes()
    bad.path.write_bytes(damaged[: len(damaged) // 2])
    with Store.open(tmp_path / "store", recovery_budget=None) as store:
        ks = store.keyspace("ks")
        assert (ks.stats().snapshot_seq, ks.stats().records_replayed) == (good.seq, 1)
        assert not bad.path.exists()
        assert (
            bad.path.with_name(bad.path.name + ".broken").read_bytes()
            == damaged[: len(damaged) // 2]
        )
        ks.put("c", 3)
        newest = ks.snapshot()
        listed = read_manifest(keyspace_dir(tmp_path / "store", "ks")).snapshots
        assert [entry.seq for entry in listed] == [newest.seq, good.seq]
        assert good.path.exists()
    with Store.open(tmp_path / "store", recovery_budget=None) as store:
        ks = store.keyspace("ks")
        assert ks.snapshot().items == 3  # the listed item count survives a reopen
        assert dict(ks.items()) == {"a": 1, "b": 2, "c": 3}
