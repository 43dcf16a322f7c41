"""Writers, scanners and asyncio callers on several key spaces at once, and close() under load.

Each writer owns its keys, so the final state must equal the model it built from its own
acknowledged operations. Values only grow (a writer's op counter), so a scanner may check
that, per key, what it sees never goes back; and pair keys written by one batch must look
equal in every scan. Every wait has a timeout: a hang fails the test instead of stalling it.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec
import pytest

from actors import ActorStopped, EventSourcedActor, KeySpace, KeyspaceClosed, Store
from storage import _fileio
from tests.reliability.conftest import TIMEOUT
from tests.storage.faults import FsyncGate

NAMES = ("a", "b", "c")
Model = dict[str, dict[str, tuple[Any, int]]]  # key space -> key -> (value, version)


class Errors:
    """Exceptions from worker threads, to fail the test in the main thread."""

    def __init__(self) -> None:
        self.seen: list[BaseException] = []

    def run(self, body: Callable[[], None]) -> Callable[[], None]:
        def guarded() -> None:
            try:
                body()
            except BaseException as exc:
                self.seen.append(exc)

        return guarded


def apply_put(model: Model, name: str, key: str, value: Any) -> int:
    _, version = model[name].get(key, (None, 0))
    model[name][key] = (value, version + 1)
    return version + 1


def writer(spaces: dict[str, KeySpace], w: int, model: Model, stop: threading.Event) -> None:
    """Random puts, deletes, CAS, batches and pipelined put_async on the writer's own keys."""
    rng = random.Random(w)
    counter = 0
    while not stop.is_set():
        counter += 1
        name = rng.choice(NAMES)
        ks = spaces[name]
        key = f"w{w}:k{rng.randrange(12)}"
        roll = rng.random()
        if roll < 0.35:
            receipt = ks.put(key, counter)
            assert receipt.version == apply_put(model, name, key, counter)
            assert ks.get(key) == counter  # read your acknowledged write, from any thread
        elif roll < 0.45:
            existed = key in model[name]
            assert (ks.delete(key) is not None) == existed
            model[name].pop(key, None)
            assert ks.get(key) is None
        elif roll < 0.6:
            _, version = model[name].get(key, (None, 0))
            receipt = ks.put(key, counter, expect_version=version)
            assert receipt.version == apply_put(model, name, key, counter)
        elif roll < 0.8:
            with ks.batch() as batch:
                batch.put(f"pair:w{w}:x", counter)
                batch.put(f"pair:w{w}:y", counter)
                batch.put(key, counter)
            for written in (f"pair:w{w}:x", f"pair:w{w}:y", key):
                apply_put(model, name, written, counter)
        else:
            futures = []
            for _ in range(rng.randint(2, 20)):
                counter += 1
                futures.append((ks.put_async(key, counter), counter))
            for future, value in futures:
                assert future.get(timeout=TIMEOUT).version == apply_put(model, name, key, value)


def scanner(spaces: dict[str, KeySpace], stop: threading.Event, scans: list[int]) -> None:
    """Check each snapshot: sorted, pairs equal, and no key's value ever going back."""
    highest: dict[tuple[str, str], int] = {}
    while not stop.is_set():
        for name, ks in spaces.items():
            items = list(ks.range())
            keys = [key for key, _ in items]
            assert keys == sorted(set(keys))
            snapshot = dict(items)
            for key, value in items:
                assert value >= highest.get((name, key), 0), f"{name}/{key} went back"
                highest[name, key] = value
            for w in range(8):
                pair = (snapshot.get(f"pair:w{w}:x"), snapshot.get(f"pair:w{w}:y"))
                assert pair[0] == pair[1], f"half a batch in {name}: {pair}"
            for w in range(8):  # get_many is one snapshot too
                got = ks.get_many([f"pair:w{w}:x", f"pair:w{w}:y"])
                assert got.get(f"pair:w{w}:x") == got.get(f"pair:w{w}:y")
            assert len(list(ks.range(reverse=True, limit=5))) <= 5
            assert len(list(ks.prefix("pair:"))) % 2 == 0
            scans[0] += 1


async def async_callers(spaces: dict[str, KeySpace], model: Model, stop: threading.Event) -> None:
    async def caller(t: int) -> None:
        rng = random.Random(100 + t)
        counter = 0
        while not stop.is_set():
            counter += 1
            name = rng.choice(NAMES)
            key = f"aio{t}:k{rng.randrange(6)}"
            if rng.random() < 0.8:
                receipt = await asyncio.wait_for(spaces[name].aput(key, counter), TIMEOUT)
                assert receipt.version == apply_put(model, name, key, counter)
                assert await spaces[name].aget(key) == counter
            else:
                existed = key in model[name]
                deleted = await asyncio.wait_for(spaces[name].adelete(key), TIMEOUT)
                assert (deleted is not None) == existed
                model[name].pop(key, None)

    await asyncio.gather(*(caller(t) for t in range(4)))


def state_of(store: Store) -> Model:
    found: Model = {}
    for name in NAMES:
        ks = store.keyspace(name)
        found[name] = {}
        for key, value in ks.range():
            entry = ks.get_entry(key)
            assert entry is not None
            found[name][key] = (value, entry.version)
    return found


def test_writers_scanners_and_asyncio_callers_end_in_the_model_state(tmp_path, long_mode):
    duration = 20.0 if long_mode else 2.0
    path = tmp_path / "store"
    writers, scanners = 3, 2
    models: list[Model] = [{name: {} for name in NAMES} for _ in range(writers + 1)]
    scans = [0]
    stop = threading.Event()
    errors = Errors()
    with Store.open(path) as store:
        spaces = {name: store.keyspace(name) for name in NAMES}
        threads = [
            threading.Thread(target=errors.run(lambda w=w: writer(spaces, w, models[w], stop)))
            for w in range(writers)
        ]
        threads += [
            threading.Thread(target=errors.run(lambda: scanner(spaces, stop, scans)))
            for _ in range(scanners)
        ]
        aio = models[writers]
        threads.append(
            threading.Thread(
                target=errors.run(lambda: asyncio.run(async_callers(spaces, aio, stop)))
            )
        )
        for thread in threads:
            thread.start()
        stop.wait(duration)
        stop.set()
        for thread in threads:
            thread.join(TIMEOUT)
        assert not [t for t in threads if t.is_alive()], "a worker hung"
        assert errors.seen == []
        expected: Model = {name: {} for name in NAMES}
        for model in models:
            for name in NAMES:
                expected[name].update(model[name])
        assert sum(map(len, expected.values())) > 10
        assert scans[0] > 0
        assert state_of(store) == expected
        for ks in spaces.values():
            ks._state._check()
    with Store.open(path) as store:
        assert state_of(store) == expected


# -- close() under load ----------------------------------------------------------------------


class Added(msgspec.Struct, tag=True, frozen=True):
    by: int


class Tally(EventSourcedActor[int]):
    def initial_state(self) -> int:
        return 0

    def apply(self, state: int, event: Added) -> int:
        return state + event.by

    def add(self, by: int) -> int:
        self.emit(Added(by))
        return self.state

    def value(self) -> int:
        return self.state


STOPPED = (ActorStopped, KeyspaceClosed)


def test_close_under_load_answers_every_caller_and_keeps_exactly_what_was_acknowledged(
    tmp_path: Path, long_mode: bool
):
    path = tmp_path / "store"
    rounds = 20 if long_mode else 5
    for round_number in range(rounds):
        close_under_load(path, round_number)


def close_under_load(path: Path, round_number: int) -> None:
    store = Store.open(path)
    spaces = {name: store.keyspace(name) for name in NAMES}
    tally = store.spawn("tally", Tally)
    acked: dict[str, dict[str, int]] = {name: {} for name in NAMES}
    tally_before = tally.value().get(timeout=TIMEOUT)
    tally_acked = [0]
    oks = [0]
    heard_stop: set[str] = set()
    errors = Errors()

    def note(caller: str) -> None:
        if caller == "ok":
            oks[0] += 1
        else:
            heard_stop.add(caller)

    def sync_writer(w: int) -> None:
        ks = spaces[NAMES[w % 3]]
        for i in range(1_000_000):
            key = f"r{round_number}:sync{w}"
            try:
                ks.put(key, i)
            except STOPPED:
                note(f"sync{w}")
                return
            acked[ks.name][key] = i
            note("ok")

    def pipelined(w: int) -> None:
        ks = spaces[NAMES[w % 3]]
        for i in range(0, 1_000_000, 10):
            futures = []
            key = f"r{round_number}:pipe{w}"
            try:
                for j in range(i, i + 10):
                    futures.append((ks.put_async(key, j), j))  # noqa: PERF401  keep those sent
            except STOPPED:
                note(f"pipe{w}")
            for future, j in futures:
                try:
                    future.get(timeout=TIMEOUT)
                except STOPPED:
                    note(f"pipe{w}")
                    return
                acked[ks.name][key] = j  # answered in order: the last ack is the value
                note("ok")
            if len(futures) < 10:
                return

    def tally_adder() -> None:
        while True:
            try:
                tally.add(1).get(timeout=TIMEOUT)
            except STOPPED:
                note("tally")
                return
            tally_acked[0] += 1
            note("ok")

    async def aio(t: int) -> None:
        ks = spaces[NAMES[t % 3]]
        key = f"r{round_number}:aio{t}"
        for i in range(1_000_000):
            try:
                await asyncio.wait_for(ks.aput(key, i), TIMEOUT)
            except STOPPED:
                note(f"aio{t}")
                return
            acked[ks.name][key] = i
            note("ok")

    async def aio_all() -> None:
        await asyncio.gather(*(aio(t) for t in range(3)))

    bodies: list[Callable[[], None]] = [lambda w=w: sync_writer(w) for w in range(3)]
    bodies += [lambda w=w: pipelined(w) for w in range(3)]
    bodies += [tally_adder, lambda: asyncio.run(aio_all())]
    threads = [threading.Thread(target=errors.run(body)) for body in bodies]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + TIMEOUT
    while oks[0] < 300 and time.monotonic() < deadline and not errors.seen:
        time.sleep(0.002)
    closer = threading.Thread(target=store.close)
    closer.start()
    closer.join(TIMEOUT)
    assert not closer.is_alive(), "close() hung"
    for thread in threads:
        thread.join(TIMEOUT)
    assert not [t for t in threads if t.is_alive()], "a caller was never answered"
    assert errors.seen == [], [repr(e) for e in errors.seen]
    callers = {f"{kind}{n}" for kind in ("sync", "pipe", "aio") for n in range(3)} | {"tally"}
    assert heard_stop == callers  # every caller was answered, the last answer a refusal
    with Store.open(path) as reopened:
        for name in NAMES:
            ks = reopened.keyspace(name)
            assert dict(ks.prefix(f"r{round_number}:")) == acked[name]
        tally_after = reopened.spawn("tally", Tally).value().get(timeout=TIMEOUT)
        assert tally_after == tally_before + tally_acked[0]


def test_an_asyncio_caller_whose_loop_closed_does_not_strand_the_rest_of_its_group(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    """Regression: _LoopFuture.set used to raise on a closed loop inside ActorHost._flush."""
    with Store.open(tmp_path / "store") as store:
        ks = store.keyspace("a")
        gate = FsyncGate(TIMEOUT)
        monkeypatch.setattr(_fileio, "fsync", gate)
        first = ks.put_async("first", 1)  # its fsync holds the actor; the rest queue up
        assert gate.entered.wait(TIMEOUT)

        async def impatient() -> None:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(ks.aput("from-a-loop", 1), 0.01)

        asyncio.run(impatient())  # gives up, and its loop is closed; the command is queued
        other = ks.put_async("other", 2)  # same group, after the closed loop's command
        gate.release.set()
        assert first.get(timeout=TIMEOUT).version == 1
        try:
            assert other.get(timeout=3).version == 1  # a hang guard, not a timing check
        finally:
            monkeypatch.undo()
