"""The public KeySpace API (README, docs/architecture.md), call by call, against a dict."""

from __future__ import annotations

import itertools
from pathlib import Path

import msgspec
import pytest

from actors import (
    Entry,
    InvalidKey,
    InvalidOption,
    InvalidValue,
    KeySpace,
    KeyspaceClosed,
    Receipt,
    Store,
    VersionConflict,
)
from tests.keyspace.conftest import TIMEOUT, FakeClock

pytestmark = pytest.mark.usefixtures("runtime")  # each test under threads and Ray


class User(msgspec.Struct, frozen=True):
    name: str
    age: int


def test_the_design_snippet_runs_verbatim(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.chdir(tmp_path)
    with Store.open("data/") as store:  # one process owns a directory (lock file)
        users = store.keyspace("users")  # create-or-open; starts/recover its actor
        r = users.put("alice", {"age": 31})  # -> Receipt(seq=..., version=...)
        assert users.get("alice") == {"age": 31}
        users.put("bob", b"raw", ttl=30.0)  # expires 30 s later
        users.put("alice", {"age": 32}, expect_version=r.version)  # compare-and-set
        users.delete("bob")
        with users.batch() as b:  # atomic: all or nothing, one log record
            b.put("x", 1)
            b.delete("y")
        assert users.get_many(["alice", "x"]) == {"alice": {"age": 32}, "x": 1}
        assert list(users.range("a", "m")) == [("alice", {"age": 32})]
        assert list(users.range(reverse=True, limit=10)) == [("x", 1), ("alice", {"age": 32})]
        assert list(users.prefix("user:")) == []
        users["k"] = 1
        assert users["k"] == 1
        del users["k"]
        assert "k" not in users
        assert len(users) == 2
        fut = users.put_async("k", 2)  # future; many in flight share one fsync
        assert fut.get(timeout=TIMEOUT).version == 1
    with Store.open("data/") as store:
        assert dict(store.keyspace("users").items()) == {"alice": {"age": 32}, "k": 2, "x": 1}


def test_put_returns_gapless_seqs_and_versions_that_count_writes(ks: KeySpace):
    receipts = [ks.put(key, i) for i, key in enumerate(["a", "b", "a", "a", "b", "c"])]
    first = receipts[0].seq
    assert [r.seq for r in receipts] == list(range(first, first + 6))
    assert [r.version for r in receipts] == [1, 1, 2, 3, 2, 1]
    assert all(isinstance(r, Receipt) for r in receipts)
    assert ks.last_seq == receipts[-1].seq


def test_get_returns_the_default_for_a_missing_key(ks: KeySpace):
    ks.put("here", 0)
    assert ks.get("missing") is None
    assert ks.get("missing", "fallback") == "fallback"
    assert ks.get("here", "fallback") == 0
    with pytest.raises(KeyError):
        ks["missing"]


def test_get_entry_reports_value_version_seq_and_expiry(ks: KeySpace, clock: FakeClock):
    ks.put("k", "one")
    receipt = ks.put("k", ["two"], ttl=5.0)
    assert ks.get_entry("k") == Entry(["two"], 2, receipt.seq, clock.now + 5.0)
    ks.put("forever", 1)
    assert ks.get_entry("forever").expires_at is None
    assert ks.get_entry("missing") is None


def test_delete_returns_a_receipt_or_none_for_a_missing_key(ks: KeySpace):
    ks.put("k", 1)
    receipt = ks.delete("k")
    assert receipt == Receipt(ks.last_seq, 0)
    before = ks.last_seq
    assert ks.delete("k") is None
    assert ks.delete("never") is None
    assert ks.last_seq == before
    with pytest.raises(KeyError):
        del ks["k"]
    assert ks.put("k", 2).version == 1  # the version restarts after a delete


def test_compare_and_set_writes_only_on_the_expected_version(ks: KeySpace):
    first = ks.put("k", "v1", expect_version=0)  # 0: must not exist
    assert first.version == 1
    assert ks.put("k", "v2", expect_version=1).version == 2
    before = ks.last_seq
    with pytest.raises(VersionConflict) as conflict:
        ks.put("k", "lost", expect_version=1)
    assert (conflict.value.key, conflict.value.expected, conflict.value.actual) == ("k", 1, 2)
    with pytest.raises(VersionConflict) as exists:
        ks.put("k", "lost", expect_version=0)
    assert (exists.value.expected, exists.value.actual) == (0, 2)
    with pytest.raises(VersionConflict) as missing:
        ks.put("other", "lost", expect_version=3)
    assert missing.value.actual == 0
    with pytest.raises(VersionConflict):
        ks.delete("k", expect_version=1)
    assert ks.last_seq == before
    assert ks.get_entry("k").value == "v2"
    assert "other" not in ks
    assert ks.delete("k", expect_version=2) is not None
    assert "k" not in ks


def test_a_batch_is_one_record_with_its_own_receipt(ks: KeySpace):
    ks.put("y", 0)
    before = ks.last_seq
    with ks.batch() as b:
        b.put("x", 1)
        b.put("x", 2)
        b.delete("y")
        b.put("z", 3, expect_version=0)
        assert len(b) == 4
    assert ks.last_seq == before + 1
    assert b.receipt == Receipt(before + 1, 0)
    assert dict(ks.items()) == {"x": 2, "z": 3}
    assert ks.get_entry("x").version == 2
    assert ks.get_entry("x").seq == before + 1


def test_a_batch_whose_block_raises_writes_nothing(ks: KeySpace):
    ks.put("a", 0)
    before = ks.last_seq
    batch = ks.batch()

    def abandon() -> None:
        with batch as b:
            b.put("a", 1)
            b.put("b", 2)
            raise RuntimeError("abandon")

    with pytest.raises(RuntimeError, match="abandon"):
        abandon()
    assert len(batch) == 2
    assert batch.receipt is None
    assert ks.last_seq == before
    assert dict(ks.items()) == {"a": 0}


def test_a_version_conflict_inside_a_batch_writes_none_of_it(ks: KeySpace):
    ks.put("a", 0)
    before = ks.last_seq

    def conflicting() -> None:
        with ks.batch() as b:
            b.put("new", 1)
            b.delete("a")
            b.put("a", 2, expect_version=1)  # "a" was deleted earlier in this batch

    with pytest.raises(VersionConflict) as conflict:
        conflicting()
    assert (conflict.value.expected, conflict.value.actual) == (1, 0)
    assert ks.last_seq == before
    assert dict(ks.items()) == {"a": 0}
    assert ks.get_entry("a").version == 1


def test_a_batch_that_changes_nothing_writes_nothing(ks: KeySpace):
    before = ks.last_seq
    with ks.batch() as b:
        b.delete("missing")
    assert b.receipt is None
    assert ks.last_seq == before


def test_get_many_returns_only_existing_keys(ks: KeySpace):
    for key in "abc":
        ks.put(key, key.upper())
    assert ks.get_many(["a", "c", "zz", "a"]) == {"a": "A", "c": "C"}
    assert ks.get_many([]) == {}


RANGE_KEYS = ["", "a", "ab", "abc", "b", "ba", "c", "m", "z", "zz", "\U0010ffff"]


def test_range_matches_a_sorted_dict_for_many_bounds(ks: KeySpace):
    model = {key: i for i, key in enumerate(RANGE_KEYS) if key}
    with ks.batch() as b:
        for key, value in model.items():
            b.put(key, value)
    bounds = [None, *RANGE_KEYS[1:], "aa", "b\x00", "y", "\U0010ffff\U0010ffff"]
    for start, stop, reverse, limit in itertools.product(
        bounds, bounds, [False, True], [None, 0, 1, 3, 100]
    ):
        expected = [
            (k, model[k])
            for k in sorted(model)
            if (start is None or k >= start) and (stop is None or k < stop)
        ]
        if reverse:
            expected.reverse()
        if limit is not None:
            expected = expected[:limit]
        got = list(ks.range(start, stop, reverse=reverse, limit=limit))
        assert got == expected, (start, stop, reverse, limit)


def test_prefix_matches_startswith_including_the_highest_code_point(ks: KeySpace):
    top = "\U0010ffff"
    keys = ["a", "a" + top, "a" + top + "b", "a" + top * 2, "ab", "b", top, top + "x", top * 3]
    with ks.batch() as b:
        for key in keys:
            b.put(key, key)
    prefixes = ["", "a", "a" + top, "a" + top * 2, top, top * 2, "ab", "c", "b" + top]
    for prefix, reverse in itertools.product(prefixes, [False, True]):
        expected = sorted((k for k in keys if k.startswith(prefix)), reverse=reverse)
        assert [k for k, _ in ks.prefix(prefix, reverse=reverse)] == expected, prefix
    assert [k for k, _ in ks.prefix("a", limit=2)] == ["a", "ab"]
    assert [k for k, _ in ks.prefix("a", reverse=True, limit=1)] == ["a" + top * 2]


def test_bytes_key_spaces_take_bytes_keys_and_prefixes_ending_in_ff(store: Store):
    raw = store.keyspace("raw", key_type=bytes)
    keys = [b"\x00", b"a", b"a\xff", b"a\xff\x00", b"a\xff\xff", b"b", b"\xff", b"\xff\xff\x01"]
    for key in keys:
        raw.put(key, key.hex())
    assert raw.get(b"a\xff") == "61ff"
    assert [k for k, _ in raw.range()] == sorted(keys)
    for prefix in [b"", b"a", b"a\xff", b"\xff", b"\xff\xff", b"c"]:
        expected = [k for k in sorted(keys) if k.startswith(prefix)]
        assert [k for k, _ in raw.prefix(prefix)] == expected, prefix
    with pytest.raises(InvalidKey):
        raw.put("a", 1)
    assert "a" not in raw


def test_value_type_validates_on_put_and_decodes_on_get(store: Store):
    users = store.keyspace("typed", value_type=User)
    users.put("alice", User("alice", 31))
    users.put("bob", {"name": "bob", "age": 40})  # a map of the right shape is a User
    assert users.get("alice") == User("alice", 31)
    assert users["bob"] == User("bob", 40)
    assert dict(users.range()) == {"alice": User("alice", 31), "bob": User("bob", 40)}
    before = users.last_seq
    with pytest.raises(InvalidValue):
        users.put("carol", {"name": "carol", "age": "old"})
    with pytest.raises(InvalidValue):
        users.put("carol", 5)
    assert users.last_seq == before
    assert "carol" not in users


def test_many_put_async_in_flight_share_fsyncs(store_path: Path):
    with Store.open(store_path, fsync="always") as store:
        ks = store.keyspace("ks")
        futures = [ks.put_async(f"k{i:03}", i) for i in range(300)]
        receipts = [f.get(timeout=TIMEOUT) for f in futures]
        first = receipts[0].seq
        assert sorted(r.seq for r in receipts) == list(range(first, first + 300))
        assert ks.stats().fsyncs < 300
        assert ks.stats().records == 300
        assert len(ks) == 300


def test_stats_count_commands_records_and_events(ks: KeySpace):
    ks.put("a", 1)
    ks.put("b", 2)
    with pytest.raises(VersionConflict):
        ks.put("a", 3, expect_version=7)
    stats = ks.stats()
    assert stats.records == 2
    assert stats.events == 2
    assert stats.commands == 3
    assert stats.failed is False
    assert stats.fsyncs >= 1


def test_keyspaces_lists_and_drop_keyspace_removes_for_good(store_path: Path):
    with Store.open(store_path) as store:
        store.keyspace("b").put("k", 1)
        dropped = store.keyspace("a")
        dropped.put("k", 1)
        assert store.keyspaces() == ["a", "b"]
        assert store.drop_keyspace("a") is True
        assert store.drop_keyspace("a") is False
        assert store.drop_keyspace("never") is False
        assert store.keyspaces() == ["b"]
        with pytest.raises(KeyspaceClosed):
            dropped.put("k", 2)
    with Store.open(store_path) as store:
        assert store.keyspaces() == ["b"]
        assert len(store.keyspace("a")) == 0
        assert store.keyspace("b")["k"] == 1


def test_a_drop_cut_short_leaves_no_key_space_behind(
    store_path: Path, monkeypatch: pytest.MonkeyPatch
):
    def power_lost(path: object) -> None:
        raise OSError("power lost during rmtree")

    with Store.open(store_path) as store:
        store.keyspace("a").put("k", 1)
        store.keyspace("b").put("k", 1)
        monkeypatch.setattr("actors._drop.shutil.rmtree", power_lost)
        with pytest.raises(OSError, match="power lost"):
            store.drop_keyspace("a")
    monkeypatch.undo()
    with Store.open(store_path) as store:
        assert "a" not in store.keyspaces()
        assert store.keyspaces() == ["b"]


def test_opening_an_open_key_space_returns_the_same_handle(store: Store):
    ks = store.keyspace("same", max_key_bytes=10)
    assert store.keyspace("same", max_key_bytes=10) is ks
    with pytest.raises(InvalidOption):
        store.keyspace("same")
    with pytest.raises(InvalidOption):
        store.keyspace("same", max_key_bytes=10, key_type=bytes)


def test_values_versions_seqs_and_ttls_survive_reopen(store_path: Path, clock: FakeClock):
    values = {"none": None, "int": -(2**63), "float": 1.5, "bytes": b"\x00", "nest": {"a": [1]}}
    with Store.open(store_path, clock=clock) as store:
        ks = store.keyspace("ks")
        for key, value in values.items():
            ks.put(key, value)
        ks.put("int", 7)
        ks.put("ttl", "t", ttl=100.0)
        entries = {key: ks.get_entry(key) for key in ks}
        last_seq = ks.last_seq
    with Store.open(store_path, clock=clock) as store:
        ks = store.keyspace("ks")
        assert {key: ks.get_entry(key) for key in ks} == entries
        assert ks.last_seq == last_seq
        assert ks.put("int", 8) == Receipt(last_seq + 1, 3)
    assert entries["ttl"].expires_at == clock.now + 100.0


def test_a_dropped_key_space_can_be_created_again_empty(store: Store):
    store.keyspace("gone").put("k", 1)
    assert store.drop_keyspace("gone")
    again = store.keyspace("gone")
    assert len(again) == 0
    assert again.put("k", 2) == Receipt(1, 1)


def test_a_closed_store_refuses_writes_and_new_key_spaces(store_path: Path):
    store = Store.open(store_path)
    ks = store.keyspace("ks")
    ks.put("k", 1)
    store.close()
    store.close()  # safe twice
    with pytest.raises(KeyspaceClosed):
        ks.put("k", 2)
    with pytest.raises(KeyspaceClosed):
        store.keyspace("other")
    with Store.open(store_path) as reopened:
        assert reopened.keyspace("ks")["k"] == 1
