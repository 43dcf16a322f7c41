"""I/O errors, power loss and mid-log corruption at the level of a Store and its key spaces.

The log-level versions live in ``tests/storage``; these check the whole write path above it:
group commit, the key space's pending and committed layers, every caller's reply, reopen.
"""

from __future__ import annotations

import asyncio
import errno
import os
import random
import struct
import threading
from pathlib import Path
from typing import Any

import pytest

import actors._events
from actors import CorruptLog, KeySpace, Receipt, Store, WriteFailed
from storage import _fileio, repair
from tests.reliability.conftest import TIMEOUT
from tests.storage.faults import DurabilityTracker, FaultInjector, FsyncGate
from tests.storage.helpers import flip_bit, record_offsets, segment_paths

ERRNOS = pytest.mark.parametrize("error", [errno.ENOSPC, errno.EIO], ids=["ENOSPC", "EIO"])
PERSISTENCE = pytest.mark.parametrize("persistent", [False, True], ids=["transient", "persistent"])
NTH = pytest.mark.parametrize("nth", [1, 2, 3])


def assert_refuses_writes(ks: KeySpace) -> None:
    with pytest.raises(WriteFailed):
        ks.put("later", 1)
    with pytest.raises(WriteFailed), ks.batch() as batch:
        batch.put("later-batch", 1)
    with pytest.raises(WriteFailed):
        ks.delete("k0")
    with pytest.raises(WriteFailed):
        asyncio.run(asyncio.wait_for(ks.aput("later-async", 1), TIMEOUT))
    assert ks.stats().failed


def injected_errno(exc: BaseException) -> int | None:
    """The errno of the OSError somewhere in ``exc``'s cause chain."""
    cause: BaseException | None = exc
    while cause is not None and not isinstance(cause, OSError):
        cause = cause.__cause__
    return None if cause is None else cause.errno


def assert_reads(ks: KeySpace, model: dict[str, Any]) -> None:
    """Every read path shows exactly ``model``."""
    assert dict(ks.range()) == model
    assert len(ks) == len(model)
    assert ks.get_many([*model, "missing"]) == model
    for key, value in model.items():
        assert ks.get(key) == value
        assert key in ks


def assert_reopens_with(path: Path, name: str, model: dict[str, Any], **options: Any) -> None:
    """Reopened without faults: exactly ``model``, and the key space takes writes again."""
    with Store.open(path, **options) as store:
        ks = store.keyspace(name)
        assert_reads(ks, model)
        assert not ks.stats().failed
        ks.put("after-reopen", "ok")
    with Store.open(path, **options) as store:
        assert store.keyspace(name).get("after-reopen") == "ok"


@pytest.mark.parametrize(
    ("operation", "partial"),
    [("write_all", False), ("write_all", True), ("fsync", False)],
    ids=["write", "half-write", "fsync"],
)
@ERRNOS
@PERSISTENCE
@NTH
def test_the_nth_failed_write_or_fsync_fails_that_put_and_every_later_one(
    tmp_path, operation, partial, error, persistent, nth
):
    path = tmp_path / "store"
    model: dict[str, Any] = {}
    with Store.open(path) as store:
        ks, other = store.keyspace("ks"), store.keyspace("other")
        for i in range(3):
            ks.put(f"before{i}", i)
            model[f"before{i}"] = i
        with FaultInjector(operation, nth, error, persistent=persistent, partial=partial) as fault:
            for i in range(nth - 1):
                ks.put(f"k{i}", i)
                model[f"k{i}"] = i
            with pytest.raises(WriteFailed) as raised:
                ks.put(f"k{nth - 1}", nth - 1)  # puts are one group each: the nth call fails
            assert injected_errno(raised.value) == error
            assert fault.injected == 1
            assert_refuses_writes(ks)
            assert_reads(ks, model)  # reads keep working and never show the failed put
            if not persistent:  # another key space's log did not fail
                other.put("still", "writable")
    expected_other = {} if persistent else {"still": "writable"}
    assert_reopens_with(path, "ks", model)
    assert_reopens_with(path, "other", expected_other)


@pytest.mark.parametrize(
    ("operation", "error", "partial"),
    [
        ("write_all", errno.ENOSPC, True),
        ("write_all", errno.EIO, False),
        ("fsync", errno.EIO, False),
    ],
    ids=["ENOSPC-half-written", "EIO-write", "EIO-fsync"],
)
def test_a_failed_group_of_many_concurrent_callers_fails_every_one_and_leaves_nothing(
    tmp_path, monkeypatch, operation, error, partial
):
    path = tmp_path / "store"
    callers, per_caller = 8, 12
    with Store.open(path) as store:
        ks = store.keyspace("ks")
        ks.put("k0", "durable")
        gate = FsyncGate(TIMEOUT)
        monkeypatch.setattr(_fileio, "fsync", gate)
        with FaultInjector(operation, nth=2, error=error, partial=partial) as fault:
            first = ks.put_async("first", 1)  # its fsync holds the actor: the rest queue up
            assert gate.entered.wait(TIMEOUT)
            futures: list[Any] = []
            lock = threading.Lock()

            def caller(c: int) -> None:
                mine = [ks.put_async(f"c{c}:{i}", i) for i in range(per_caller)]
                mine.append(ks.delete_async("k0"))
                mine.append(ks.put_async("k0", c, expect_version=1))  # CAS in the group
                with lock:
                    futures.extend(mine)

            threads = [threading.Thread(target=caller, args=(c,)) for c in range(callers)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(TIMEOUT)
            batch_done: list[BaseException] = []
            batcher = threading.Thread(target=write_batch, args=(ks, batch_done))
            batcher.start()
            for _ in range(int(TIMEOUT * 1000)):  # until the batch is queued with the rest
                if ks.stats().queued >= len(futures) + 1:
                    break
                gate.entered.wait(0.001)
            assert ks.stats().queued == len(futures) + 1
            gate.release.set()
            assert isinstance(first.get(timeout=TIMEOUT), Receipt)
            for future in futures:
                with pytest.raises(WriteFailed) as raised:
                    future.get(timeout=TIMEOUT)
                assert injected_errno(raised.value) == error
            batcher.join(TIMEOUT)
            assert len(batch_done) == 1
            assert isinstance(batch_done[0], WriteFailed)
            assert fault.calls == 2  # the first put's, then ONE for all the queued callers
            assert fault.injected == 1
            assert_refuses_writes(ks)
            model = {"k0": "durable", "first": 1}
            assert_reads(ks, model)
    monkeypatch.undo()
    assert_reopens_with(path, "ks", model)


def write_batch(ks: KeySpace, outcome: list[BaseException]) -> None:
    try:
        with ks.batch() as batch:
            batch.put("batched-a", 1)
            batch.put("batched-b", 2)
    except BaseException as exc:
        outcome.append(exc)
    else:
        outcome.append(AssertionError("the batch of the failed group was acknowledged"))


@pytest.mark.parametrize("operation", ["create", "fsync_dir", "rename", "open_append"])
def test_a_failed_segment_roll_fails_the_put_and_reopening_keeps_what_was_acknowledged(
    tmp_path, operation
):
    path = tmp_path / "store"
    model: dict[str, Any] = {}
    with Store.open(path, segment_bytes=4096) as store:
        ks = store.keyspace("ks")
        log_dir = path / "keyspaces" / "ks"
        with FaultInjector(operation, nth=1, error=errno.ENOSPC, persistent=True) as fault:
            for i in range(200):
                key, value = f"k{i:03d}", "v" * 100
                rolls = len(segment_paths(log_dir))
                try:
                    ks.put(key, value)
                except WriteFailed:
                    break
                model[key] = value
                assert len(segment_paths(log_dir)) == rolls  # no roll could have succeeded
            assert fault.injected >= 1
            assert len(model) < 200
            assert_refuses_writes(ks)
            assert_reads(ks, model)
    assert_reopens_with(path, "ks", model, segment_bytes=4096)


@ERRNOS
def test_a_failed_background_fsync_under_fsync_interval_makes_later_puts_fail(tmp_path, error):
    path = tmp_path / "store"
    model: dict[str, Any] = {}
    with Store.open(path, fsync="interval", fsync_interval=0.005) as store:
        ks = store.keyspace("ks")
        with FaultInjector("fsync", nth=1, error=error, persistent=True) as fault:
            with pytest.raises(WriteFailed) as raised:  # noqa: PT012  the loop is the wait
                for i in range(int(TIMEOUT / 0.001)):
                    ks.put(f"k{i}", i)
                    model[f"k{i}"] = i
                    threading.Event().wait(0.001)
            assert os.strerror(error) in str(raised.value)  # the cause is named
            assert fault.injected >= 1
            assert_refuses_writes(ks)
            assert_reads(ks, model)
    assert_reopens_with(path, "ks", model)  # no power was lost: every acked put is there


# -- power loss ------------------------------------------------------------------------------


@pytest.mark.parametrize("tail", ["synced-only", "torn", "zero-filled"])
def test_a_power_loss_keeps_every_put_acknowledged_before_it(tmp_path, tail):
    path = tmp_path / "store"
    rng = random.Random(tail)
    writers, names = 4, ("a", "b", "c")
    acked_before_cut: list[set[tuple[int, int]]] = [set() for _ in range(writers)]
    issued = [0] * writers
    cut = threading.Event()
    with DurabilityTracker() as tracker:
        store = Store.open(path, segment_bytes=4096)
        spaces = [store.keyspace(name) for name in names]

        def writer(w: int) -> None:
            after_cut = 0
            for i in range(400):
                if cut.is_set():
                    after_cut += 1
                    if after_cut > 3 * w:  # some writers go on a little after the power is out
                        return
                issued[w] = i + 1
                space = spaces[i % len(spaces)]
                if i % 7 == 3:
                    with space.batch() as batch:
                        batch.put(f"w{w}:{i}", i)
                        batch.put(f"w{w}:{i}:twin", i)
                else:
                    space.put(f"w{w}:{i}", i)
                if not cut.is_set():
                    acked_before_cut[w].add((w, i))

        threads = [threading.Thread(target=writer, args=(w,)) for w in range(writers)]
        for thread in threads:
            thread.start()
        while sum(map(len, acked_before_cut)) < 300 and any(t.is_alive() for t in threads):
            cut.wait(0.001)
        tracker.cut_power()
        cut.set()
        for thread in threads:
            thread.join(TIMEOUT)
        store.close()
        survivors = tracker.crash(
            keep=(lambda _p, low, size: rng.randint(low, size)) if tail == "torn" else None,
            zero_fill=tail == "zero-filled",
        )
    assert survivors
    with Store.open(path, segment_bytes=4096) as store:
        contents = {name: dict(store.keyspace(name).range()) for name in names}
    expected: dict[str, set[str]] = {name: set() for name in names}
    survived = 0
    for w in range(writers):
        present = set()
        for i in range(issued[w] + 10):
            name = names[i % len(names)]
            found = contents[name].get(f"w{w}:{i}")
            if found is None:
                continue
            assert found == i
            present.add(i)
            expected[name].add(f"w{w}:{i}")
            if i % 7 == 3:  # a batch is all or nothing
                expected[name].add(f"w{w}:{i}:twin")
        assert {i for _, i in acked_before_cut[w]} <= present, f"writer {w} lost acked puts"
        for n in range(len(names)):  # each log is a prefix of what it was sent
            mine = sorted(i for i in present if i % len(names) == n)
            assert mine == list(range(n, n + 3 * len(mine), 3)), f"writer {w}: gap in {n}"
        if tail != "torn":
            # Torn tails keep unsynced bytes of each file independently, so writes made
            # after the cut (which a real power loss would never have let happen) may
            # survive in one log and not another; otherwise all of them are gone.
            assert present == set(range(len(present))), f"writer {w}: not a prefix"
        assert len(present) <= issued[w]
        survived += len(present)
    assert {name: set(c) for name, c in contents.items()} == expected
    if tail == "synced-only":  # writes acknowledged after the cut were really lost
        assert survived < sum(issued)


# -- mid-log corruption ----------------------------------------------------------------------

RECORD_LENGTH = struct.Struct("<I")


def fill_and_close(path: Path) -> dict[str, int]:
    """A key space over several 4 KiB segments; returns each key's receipt seq."""
    seqs = {}
    with Store.open(path, segment_bytes=4096) as store:
        ks = store.keyspace("users")
        store.keyspace("other").put("untouched", True)
        for i in range(120):
            seqs[f"user{i:03d}"] = ks.put(f"user{i:03d}", {"n": i, "pad": "x" * 60}).seq
    return seqs


@pytest.mark.parametrize("damage", ["bit flip", "bad length", "missing segment"])
def test_mid_log_damage_fails_closed_and_repair_keeps_a_backup_and_the_records_before(
    tmp_path, damage
):
    path = tmp_path / "store"
    seqs = fill_and_close(path)
    log_dir = path / "keyspaces" / "users"
    segments = segment_paths(log_dir)
    assert len(segments) >= 4
    victim = segments[1]  # sealed: records follow it in later segments
    records = record_offsets(victim)
    target = records[len(records) // 2]
    if damage == "bit flip":
        flip_bit(victim, target.offset + 24, bit=5)
    elif damage == "bad length":
        with victim.open("r+b") as file:
            file.seek(target.offset + 4)
            file.write(RECORD_LENGTH.pack(0x7FFF_FFF0))
    else:
        victim.unlink()
    with Store.open(path, segment_bytes=4096) as store:
        with pytest.raises(CorruptLog) as raised:
            store.keyspace("users")
        assert store.keyspace("other").get("untouched") is True  # the damage stays local
    if damage == "missing segment":
        assert raised.value.path == segments[2]  # it names the segment after the hole
    else:
        assert raised.value.path == victim
        assert raised.value.offset == target.offset
    assert str(raised.value.path) in str(raised.value)
    report = repair(log_dir)
    assert report.changed
    assert report.backups
    assert all(backup.exists() for backup in report.backups)
    kept = report.last_seq
    assert kept == (records[0].seq if damage == "missing segment" else target.seq) - 1
    assert kept < max(seqs.values())
    expected = {k: {"n": int(k[4:]), "pad": "x" * 60} for k, seq in seqs.items() if seq <= kept}
    assert expected
    assert_reopens_with(path, "users", expected, segment_bytes=4096)


# -- a refused command must not leak into the committed state --------------------------------


def test_a_batch_refused_as_too_large_never_becomes_visible(tmp_path, monkeypatch):
    """Regression: the refused batch used to stay staged in KVState.pending and be published
    by the next group (and vanish on reopen)."""
    monkeypatch.setattr(actors._events, "MAX_RECORD_BYTES", 2048)
    with Store.open(tmp_path / "store") as store:
        ks = store.keyspace("ks")

        def write_big_batch() -> None:
            with ks.batch() as batch:
                for i in range(40):
                    batch.put(f"big{i}", "x" * 100)

        with pytest.raises(ValueError, match=r"limit of one log record|record limit"):
            write_big_batch()
        ks.put("small", 1)  # the next group commits whatever is pending
        assert dict(ks.range()) == {"small": 1}
        assert ks.get_entry("small").version == 1
    with Store.open(tmp_path / "store") as store:
        assert dict(store.keyspace("ks").range()) == {"small": 1}
