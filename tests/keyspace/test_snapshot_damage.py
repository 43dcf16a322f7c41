"""Byte damage in a key space's snapshots, seen through the key space.

Recovery takes the listed snapshots newest first (``docs/format.md``, "Snapshot"): a damaged
newest one falls back to the previous one, with a longer replay, when the log still holds
the records after it; when retention dropped them, the open raises ``CorruptLog`` and
leaves every file as it was. Never an empty or partial state, never a wrong value or
version.

Each test copies a pristine store (two snapshots, history after the newest; built once per
module), damages the copy and reopens it. ``ACTORKV_LONG=1`` damages every byte of the
newest snapshot instead of a chosen few.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from actors import CorruptLog, KeySpace, Store
from storage.manifest import read_manifest
from storage.snapshot import snapshot_name
from tests.keyspace.conftest import START, FakeClock, keyspace_dir, log_bytes
from tests.storage.helpers import flip_bit, truncate

LONG_MODE = os.environ.get("ACTORKV_LONG") == "1"
HEADER, TRAILER = 28, 56
KEYS = [f"k{i:02d}" for i in range(24)]
TTL = 100.0  # the "ttl" key expires this long after START
AFTER = 2  # records assert_reopens_from writes once recovered: a put and a sweep

Expected = dict[str, tuple[Any, int, int, float | None]]  # value, version, seq, expires_at


@dataclass
class Pristine:
    """A closed store: two listed snapshots and records after the newest."""

    path: Path
    options: dict[str, Any]
    expected: Expected
    older: int
    newest: int
    last_seq: int

    def copy(self, destination: Path) -> Path:
        shutil.copytree(self.path, destination, ignore=shutil.ignore_patterns("LOCK"))
        return destination

    def snapshot_file(self, store: Path, seq: int) -> Path:
        return keyspace_dir(store, "ks") / snapshot_name(seq)


class Writer:
    """Writes through a key space and keeps what every receipt says, as the model."""

    def __init__(self, ks: KeySpace, clock: FakeClock) -> None:
        self.ks = ks
        self.clock = clock
        self.expected: Expected = {}

    def put(self, key: str, value: Any, ttl: float | None = None) -> None:
        version = self.expected[key][1] + 1 if key in self.expected else 1
        receipt = self.ks.put(key, value, ttl=ttl)
        assert receipt.version == version
        expires_at = None if ttl is None else self.clock.now + ttl
        self.expected[key] = (value, version, receipt.seq, expires_at)

    def delete(self, key: str) -> None:
        assert self.ks.delete(key) is not None
        del self.expected[key]

    def batch(self, puts: dict[str, Any]) -> None:
        with self.ks.batch() as batch:
            for key, value in puts.items():
                batch.put(key, value)
        seq = batch.receipt.seq
        for key, value in puts.items():
            version = self.expected[key][1] + 1 if key in self.expected else 1
            self.expected[key] = (value, version, seq, None)

    def phase(self, number: int) -> None:
        """Overwrite every key (scalars and containers), delete a few, write a batch."""
        for i, key in enumerate(KEYS):
            self.put(key, [number, i, "x" * 20] if i % 2 else f"{number}:{i}")
        for key in KEYS[number::7]:
            self.delete(key)
        self.batch({f"b{number}-{i}": {"phase": number, "i": i} for i in range(5)})


def build(path: Path, **options: Any) -> Pristine:
    clock = FakeClock()
    options = {"recovery_budget": None, "segment_bytes": 4096, "sweep_interval": 3600, **options}
    with Store.open(path, clock=clock, **options) as store:
        writer = Writer(store.keyspace("ks"), clock)
        writer.put("ttl", "expires", ttl=TTL)
        writer.put("kept", {"forever": True})
        writer.phase(1)
        older = writer.ks.snapshot().seq
        writer.phase(2)
        writer.phase(3)
        newest = writer.ks.snapshot().seq
        writer.phase(4)
        last_seq = writer.ks.last_seq
        assert older < newest < last_seq
        assert_matches(writer.ks, writer.expected)
    listed = read_manifest(keyspace_dir(path, "ks")).snapshots
    assert [entry.seq for entry in listed] == [newest, older]
    return Pristine(path, options, writer.expected, older, newest, last_seq)


@pytest.fixture(scope="module")
def kept(tmp_path_factory: pytest.TempPathFactory) -> Pristine:
    """The whole history kept (``retention=None``): a fallback can replay further back."""
    return build(tmp_path_factory.mktemp("kept") / "store")


@pytest.fixture(scope="module")
def dropped(tmp_path_factory: pytest.TempPathFactory) -> Pristine:
    """``retention=0``: only the records after the newest snapshot are left."""
    return build(tmp_path_factory.mktemp("dropped") / "store", retention=0)


def assert_matches(ks: KeySpace, expected: Expected) -> None:
    """Every key's value, version, seq and expiry as expected; nothing else."""
    assert sorted(ks) == sorted(expected)
    assert dict(ks.items()) == {key: stored[0] for key, stored in expected.items()}
    for key, (value, version, seq, expires_at) in expected.items():
        entry = ks.get_entry(key)
        assert entry is not None, key
        assert (entry.value, entry.version, entry.seq, entry.expires_at) == (
            value,
            version,
            seq,
            expires_at,
        ), key
    for key in KEYS:
        if key not in expected:
            assert ks.get_entry(key) is None


def assert_reopens_from(pristine: Pristine, path: Path, seq: int) -> None:
    """The store at ``path`` recovers from snapshot ``seq``, replays the rest, goes on."""
    clock = FakeClock()
    with Store.open(path, clock=clock, **pristine.options) as store:
        ks = store.keyspace("ks")
        stats = ks.stats()
        assert (stats.snapshot_seq, stats.records_replayed) == (seq, pristine.last_seq - seq)
        assert ks.last_seq == pristine.last_seq
        assert_matches(ks, pristine.expected)
        # Versions, seqs and expiry go on from the recovered state.
        key = next(key for key in KEYS if key in pristine.expected)
        version = pristine.expected[key][1]
        assert ks.put(key, "after", expect_version=version).version == version + 1
        assert ks.last_seq == pristine.last_seq + 1
        clock.set(START + TTL)
        assert ks.get("ttl") is None
        assert ks.sweep() == 1


# -- damage: (name, what it does to the file) ------------------------------------------------


def flip(offset: Callable[[int], int], bit: int = 0) -> Callable[[Path], None]:
    return lambda path: flip_bit(path, offset(path.stat().st_size), bit)


def cut(size: Callable[[int], int]) -> Callable[[Path], None]:
    return lambda path: truncate(path, size(path.stat().st_size))


def zero(path: Path) -> None:
    path.write_bytes(bytes(path.stat().st_size))


DAMAGE: dict[str, Callable[[Path], None]] = {
    "cut-to-nothing": cut(lambda size: 0),
    "cut-in-header": cut(lambda size: HEADER - 1),
    "cut-after-header": cut(lambda size: HEADER),
    "cut-mid-chunk": cut(lambda size: size // 2),
    "cut-before-trailer": cut(lambda size: size - TRAILER),
    "cut-last-byte": cut(lambda size: size - 1),
    "flip-magic": flip(lambda size: 0),
    "flip-seq": flip(lambda size: 12, 3),
    "flip-header-crc": flip(lambda size: HEADER - 1),
    "flip-chunk-length": flip(lambda size: HEADER, 2),
    "flip-chunk-crc": flip(lambda size: HEADER + 5),
    "flip-payload": flip(lambda size: size // 2, 7),
    "flip-trailer-count": flip(lambda size: size - TRAILER + 4),
    "flip-digest": flip(lambda size: size - 20, 5),
    "flip-last-byte": flip(lambda size: size - 1),
    "zeroed": zero,
    "deleted": Path.unlink,
}


@pytest.mark.parametrize("damage", DAMAGE.values(), ids=list(DAMAGE))
def test_a_damaged_newest_snapshot_falls_back_to_the_previous_one(
    kept: Pristine, tmp_path: Path, damage: Callable[[Path], None]
):
    path = kept.copy(tmp_path / "store")
    damage(kept.snapshot_file(path, kept.newest))
    assert_reopens_from(kept, path, kept.older)


def test_every_damaged_byte_of_the_newest_snapshot_falls_back(kept: Pristine, tmp_path: Path):
    path = kept.copy(tmp_path / "store")
    snapshot = kept.snapshot_file(path, kept.newest)
    data = snapshot.read_bytes()
    offsets = range(len(data)) if LONG_MODE else range(0, len(data), max(1, len(data) // 40))
    for offset in offsets:
        for bit in (0, 7) if LONG_MODE else (offset % 8,):
            work = kept.copy(tmp_path / f"at-{offset}-{bit}")
            flip_bit(kept.snapshot_file(work, kept.newest), offset, bit)
            assert_reopens_from(kept, work, kept.older)
            shutil.rmtree(work)


def test_a_fallback_is_found_again_on_every_open_until_a_new_snapshot(
    kept: Pristine, tmp_path: Path
):
    path = kept.copy(tmp_path / "store")
    damaged = kept.snapshot_file(path, kept.newest)
    flip_bit(damaged, HEADER + 40)
    assert_reopens_from(kept, path, kept.older)
    last_seq = kept.last_seq + AFTER
    with Store.open(path, clock=FakeClock(START + TTL), **kept.options) as store:
        ks = store.keyspace("ks")
        stats = ks.stats()
        assert (stats.snapshot_seq, stats.records_replayed) == (kept.older, last_seq - kept.older)
        assert ks.snapshot().seq == last_seq
        after = {key: ks.get_entry(key) for key in ks}
    assert read_manifest(keyspace_dir(path, "ks")).snapshots[0].seq == last_seq
    with Store.open(path, clock=FakeClock(START + TTL), **kept.options) as store:
        ks = store.keyspace("ks")
        assert (ks.stats().snapshot_seq, ks.stats().records_replayed) == (last_seq, 0)
        assert ks.last_seq == last_seq
        assert {key: ks.get_entry(key) for key in ks} == after
        assert "ttl" not in after


def test_both_snapshots_damaged_replays_the_whole_kept_log(kept: Pristine, tmp_path: Path):
    path = kept.copy(tmp_path / "store")
    flip_bit(kept.snapshot_file(path, kept.newest), HEADER + 9)
    truncate(kept.snapshot_file(path, kept.older), HEADER + 3)
    assert_reopens_from(kept, path, 0)


def test_a_damaged_older_snapshot_is_never_read(kept: Pristine, tmp_path: Path):
    path = kept.copy(tmp_path / "store")
    zero(kept.snapshot_file(path, kept.older))
    assert_reopens_from(kept, path, kept.newest)


@pytest.mark.parametrize("damage", DAMAGE.values(), ids=list(DAMAGE))
def test_a_damaged_newest_snapshot_without_the_history_before_it_is_corrupt_log(
    dropped: Pristine, tmp_path: Path, damage: Callable[[Path], None]
):
    path = dropped.copy(tmp_path / "store")
    directory = keyspace_dir(path, "ks")
    damage(dropped.snapshot_file(path, dropped.newest))
    before = log_bytes(path, "ks")
    with Store.open(path, clock=FakeClock(), **dropped.options) as store:
        with pytest.raises(CorruptLog) as raised:
            store.keyspace("ks")
        assert raised.value.path == directory
        assert snapshot_name(dropped.newest) in raised.value.reason
        assert snapshot_name(dropped.older) in raised.value.reason
        with pytest.raises(CorruptLog):  # asked again: still no empty key space
            store.keyspace("ks")
    after = log_bytes(path, "ks")
    after.pop("LOCK", None)
    before.pop("LOCK", None)
    assert after == before  # the refusal changed nothing: every file is as it was


def test_the_history_kept_by_retention_zero_is_only_what_the_newest_snapshot_needs(
    dropped: Pristine, tmp_path: Path
):
    path = dropped.copy(tmp_path / "store")
    assert_reopens_from(dropped, path, dropped.newest)
    with Store.open(path, clock=FakeClock(), **dropped.options) as store:
        assert store.keyspace("ks").stats().history_floor == dropped.newest + 1


def test_restoring_the_damaged_snapshot_brings_the_whole_state_back(
    dropped: Pristine, tmp_path: Path
):
    path = dropped.copy(tmp_path / "store")
    snapshot = dropped.snapshot_file(path, dropped.newest)
    good = snapshot.read_bytes()
    flip_bit(snapshot, len(good) // 2)
    with Store.open(path, clock=FakeClock(), **dropped.options) as store, pytest.raises(CorruptLog):
        store.keyspace("ks")
    snapshot.write_bytes(good)  # from a backup
    assert_reopens_from(dropped, path, dropped.newest)
