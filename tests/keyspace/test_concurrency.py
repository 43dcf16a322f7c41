"""Concurrent use: writer and scanner threads, fsync visibility, and asyncio callers.

Each writer thread owns a disjoint set of keys, so it can keep an exact model of them from
its own acknowledged writes; the final state must equal the union of those models. The
asyncio tests check that awaiting a write never blocks the event loop.
"""

from __future__ import annotations

import asyncio
import itertools
import random
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from actors import KeySpace, Receipt, Store, VersionConflict
from storage import _fileio
from tests.keyspace.conftest import TIMEOUT, wait_until
from tests.storage.faults import FsyncGate

RUN_SECONDS = 1.5
GROUP = [f"g:{i}" for i in range(10)]
WRITERS = 3
KEYS_PER_WRITER = 20


class Workers:
    """Threads that run a step function until told to stop; errors are collected."""

    def __init__(self) -> None:
        self.stop = threading.Event()
        self.errors: list[BaseException] = []
        self.threads: list[threading.Thread] = []

    def start(self, name: str, step: Callable[[], None]) -> None:
        def loop() -> None:
            try:
                while not self.stop.is_set():
                    step()
            except BaseException as exc:
                self.errors.append(exc)
                self.stop.set()

        thread = threading.Thread(target=loop, name=name, daemon=True)
        self.threads.append(thread)
        thread.start()

    def run_for(self, seconds: float) -> None:
        self.stop.wait(seconds)
        self.stop.set()
        for thread in self.threads:
            thread.join(TIMEOUT)
        assert not [t.name for t in self.threads if t.is_alive()], "a worker hung"
        assert not self.errors, self.errors


class Writer:
    """Random put / compare-and-set / delete / batch on its own keys, modelled exactly."""

    def __init__(self, ks: KeySpace, name: str, seed: int) -> None:
        self.ks = ks
        self.keys = [f"{name}:{i:02}" for i in range(KEYS_PER_WRITER)]
        self.model: dict[str, tuple[Any, int]] = {}
        self.random = random.Random(seed)
        self.counter = 0

    def put(self, key: str, value: Any, expect: int | None = None) -> None:
        receipt = self.ks.put_async(key, value, expect_version=expect).get(timeout=TIMEOUT)
        version = self.model.get(key, (None, 0))[1] + 1
        assert receipt.version == version
        self.model[key] = (value, version)
        assert self.ks.get(key) == value  # read your writes
        assert self.ks.get_entry(key).version == version

    def step(self) -> None:
        rnd, key = self.random, self.random.choice(self.keys)
        self.counter += 1
        value = [key, self.counter]
        action = rnd.choice(["put", "cas", "bad_cas", "delete", "batch"])
        if action == "put":
            self.put(key, value)
        elif action == "cas":
            self.put(key, value, expect=self.model.get(key, (None, 0))[1])
        elif action == "bad_cas":
            wrong = self.model.get(key, (None, 0))[1] + 1
            with pytest.raises(VersionConflict):
                self.ks.put_async(key, value, expect_version=wrong).get(timeout=TIMEOUT)
            assert self.ks.get(key) == self.model.get(key, (None, 0))[0]
        elif action == "delete":
            receipt = self.ks.delete_async(key).get(timeout=TIMEOUT)
            assert (receipt is None) == (key not in self.model)
            self.model.pop(key, None)
            assert key not in self.ks
        else:
            chosen = rnd.sample(self.keys, 4)
            with self.ks.batch() as b:
                for i, k in enumerate(chosen):
                    if i % 2:
                        b.delete(k)
                    else:
                        b.put(k, value)
            for i, k in enumerate(chosen):
                if i % 2:
                    self.model.pop(k, None)
                else:
                    self.model[k] = (value, self.model.get(k, (None, 0))[1] + 1)
            assert self.ks.get_many(chosen) == {k: self.model[k][0] for k in chosen[::2]}


def check_sorted(keys: list[Any], *, reverse: bool = False) -> None:
    ordered = keys[::-1] if reverse else keys
    assert all(a < b for a, b in itertools.pairwise(ordered)), keys


def check_group(seen: dict[str, Any]) -> None:
    assert len(seen) in (0, len(GROUP)), seen
    assert len(set(seen.values())) <= 1, f"half a batch: {seen}"


def scan_step(ks: KeySpace) -> None:
    check_sorted([k for k, _ in ks.range()])
    check_sorted([k for k, _ in ks.range("w", reverse=True)], reverse=True)
    check_sorted([k for k, _ in ks.prefix("w0:", limit=7)])
    check_group(dict(ks.prefix("g:")))
    check_group(dict(ks.range("g:0", "g:;")))
    check_group(dict(ks.range(GROUP[0], "g:~", reverse=True)))
    group = ks.get_many(GROUP)
    check_group(group)
    # The group's keys are never deleted once written; writers own 20 keys each.
    assert len(group) <= len(ks) <= len(GROUP) + WRITERS * KEYS_PER_WRITER


def test_writers_and_scanners_never_see_errors_disorder_or_half_batches(tmp_path: Path):
    with Store.open(tmp_path / "store") as store:
        ks = store.keyspace("ks")
        writers = [Writer(ks, f"w{i}", seed=i) for i in range(WRITERS)]
        batches = {"last": 0}

        def group_step() -> None:
            counter = batches["last"] + 1
            with ks.batch() as b:
                for key in GROUP:
                    b.put(key, counter)
            batches["last"] = counter
            assert ks.get_many(GROUP) == dict.fromkeys(GROUP, counter)

        workers = Workers()
        for writer in writers:
            workers.start(writer.keys[0], writer.step)
        workers.start("group", group_step)
        for i in range(3):
            workers.start(f"scanner{i}", lambda: scan_step(ks))
        workers.run_for(RUN_SECONDS)

        expected = {k: v for w in writers for k, (v, _) in w.model.items()}
        expected.update(dict.fromkeys(GROUP, batches["last"]))
        assert batches["last"] > 0
        assert all(w.counter > 0 for w in writers)
        assert dict(ks.items()) == expected
        versions = {k: ver for w in writers for k, (_, ver) in w.model.items()}
        assert {k: ks.get_entry(k).version for k in versions} == versions
    with Store.open(tmp_path / "store") as store:
        assert dict(store.keyspace("ks").items()) == expected


def test_a_cas_race_has_exactly_one_winner_per_version(ks: KeySpace):
    ks.put("counter", 0)
    wins: list[int] = []
    lock = threading.Lock()

    def try_increment() -> None:
        entry = ks.get_entry("counter")
        future = ks.put_async("counter", entry.value + 1, expect_version=entry.version)
        try:
            future.get(timeout=TIMEOUT)
        except VersionConflict:
            return
        with lock:
            wins.append(entry.value + 1)

    workers = Workers()
    for i in range(4):
        workers.start(f"cas{i}", try_increment)
    workers.run_for(RUN_SECONDS / 2)
    assert wins
    assert sorted(wins) == list(range(1, len(wins) + 1))  # no lost update, no double win
    assert ks["counter"] == len(wins)
    assert ks.get_entry("counter").version == len(wins) + 1


def test_a_write_is_invisible_to_every_read_until_its_fsync_returns(
    ks: KeySpace, monkeypatch: pytest.MonkeyPatch
):
    ks.put("before", 0)
    gate = FsyncGate(TIMEOUT)
    monkeypatch.setattr(_fileio, "fsync", gate)
    single = ks.put_async("k", 1)
    try:
        assert gate.entered.wait(TIMEOUT), "the put never reached fsync"
        assert ks.get("k") is None
        assert "k" not in ks
        assert ks.get_entry("k") is None
        assert ks.get_many(["k"]) == {}
        assert list(ks.range()) == [("before", 0)]
        assert len(ks) == 1
    finally:
        gate.release.set()
    assert single.get(timeout=TIMEOUT).version == 1
    assert ks.get("k") == 1


def test_aput_adelete_and_aget_work_under_asyncio(ks: KeySpace):
    async def main() -> tuple[Receipt, object, Receipt | None, Receipt | None, object]:
        put = await ks.aput("k", {"v": 1})
        got = await ks.aget("k")
        deleted = await ks.adelete("k")
        again = await ks.adelete("k")
        return put, got, deleted, again, await ks.aget("k", "gone")

    put, got, deleted, again, after = asyncio.run(main())
    assert put.version == 1
    assert got == {"v": 1}
    assert deleted == Receipt(put.seq + 1, 0)
    assert again is None
    assert after == "gone"


def test_aput_raises_version_conflict_into_the_awaiting_task(ks: KeySpace):
    ks.put("k", 1)

    async def main() -> VersionConflict:
        with pytest.raises(VersionConflict) as conflict:
            await ks.aput("k", 2, expect_version=5)
        return conflict.value

    assert asyncio.run(main()).actual == 1
    assert ks["k"] == 1


def test_an_abandoned_aput_does_not_strand_other_writers_in_its_group(
    ks: KeySpace, monkeypatch: pytest.MonkeyPatch
):
    gate = FsyncGate(TIMEOUT)
    monkeypatch.setattr(_fileio, "fsync", gate)
    first = ks.put_async("x", 0)  # holds the actor in fsync while the next group queues
    assert gate.entered.wait(TIMEOUT)

    async def abandon_an_aput() -> None:
        task = asyncio.ensure_future(ks.aput("a", 1))
        await asyncio.sleep(0)  # the aput is queued; asyncio.run then closes the loop
        assert not task.done()

    asyncio.run(abandon_an_aput())
    other = ks.put_async("b", 2)  # same group as the abandoned aput
    gate.release.set()
    assert first.get(timeout=TIMEOUT).version == 1
    assert wait_until(lambda: ks.get("b") == 2)  # durable and visible...
    assert other.get(timeout=2.0) == Receipt(ks.last_seq, 1)  # ...so it must be answered


def test_the_event_loop_keeps_running_while_aput_waits_for_fsync(
    ks: KeySpace, monkeypatch: pytest.MonkeyPatch
):
    real_fsync = _fileio.fsync

    def slow_fsync(fd: int) -> None:
        time.sleep(0.2)
        real_fsync(fd)

    monkeypatch.setattr(_fileio, "fsync", slow_fsync)
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0.005)

    async def main() -> tuple[int, Receipt]:
        task = asyncio.create_task(ticker())
        await asyncio.sleep(0)
        seen = ticks
        receipt = await asyncio.wait_for(ks.aput("k", 1), TIMEOUT)
        during = ticks - seen
        task.cancel()
        return during, receipt

    during, receipt = asyncio.run(main())
    assert during > 1
    assert receipt.version == 1
