"""Scans are one consistent snapshot as of their start, however many writes land meanwhile.

A scan resolves 512 keys at a time under the state lock and pins its point between chunks,
so writes committed while it runs must not show: not a new value, not a new key, not a
deletion, whichever chunk (ahead of the cursor or behind it) they touch. The tests write in
the loop body of the scan (deterministic: every write lands between two items) over 3,000
keys, about six chunks, and compare the result with the dict at the start exactly; with
``recent_versions=0`` only the scan's pin keeps the changes it needs. A thread test writes
continuously while scans run and checks each scan is exactly the model at one point
between what was acknowledged before it began and what was issued by its end.
"""

from __future__ import annotations

import gc
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from actors import KeySpace, Store
from tests.keyspace.conftest import TIMEOUT

COUNT = 3_000
"""Keys at the start: about six chunks of 512."""


def key_of(i: int) -> str:
    return f"k{i:05d}"


def initial() -> dict[str, Any]:
    return {key_of(i): i for i in range(COUNT)}


@pytest.fixture(params=[0, None], ids=["recent=0", "recent=default"])
def filled(request, tmp_path: Path) -> Iterator[KeySpace]:
    options = {} if request.param is None else {"recent_versions": request.param}
    with Store.open(tmp_path / "store", fsync="never", **options) as store:
        ks = store.keyspace("ks")
        with ks.batch() as batch:
            for key, value in initial().items():
                batch.put(key, value)
        yield ks


class Churn:
    """Writes between the items of a scan: overwrites, deletions and new keys, everywhere.

    Step ``n`` (one write) overwrites a key, deletes one, creates a key between two existing
    ones or re-creates one it deleted, in turn, spread over the whole key range (ahead of
    the cursor and behind it, in either direction); the first step also deletes a run of
    700 consecutive keys and creates 700 new ones among them in one batch, so some chunk
    ahead is made of removed keys and new keys only.
    """

    def __init__(self, ks: KeySpace) -> None:
        self.ks = ks
        self.steps = 0
        self.deleted: list[str] = []

    def step(self) -> None:
        n, ks = self.steps, self.ks
        self.steps += 1
        spread = key_of(n * 7919 % COUNT)
        if n == 0:
            with ks.batch() as batch:
                for i in range(1200, 1900):
                    batch.delete(key_of(i))
                    batch.put(key_of(i) + "+", "new")
        elif n % 4 == 1:
            ks.put(spread, ("overwritten", n))
        elif n % 4 == 2:
            if ks.delete(spread) is not None:
                self.deleted.append(spread)
        elif n % 4 == 3:
            ks.put(spread + "-", "created")
        elif self.deleted:
            ks.put(self.deleted.pop(0), ("re-created", n))


SCANS: dict[str, Callable[[KeySpace], tuple[Iterator[Any], Callable[[dict[str, Any]], Any]]]] = {
    # name: (the scan, what it must yield given the dict at its start)
    "range": lambda ks: (ks.range(), lambda d: list(d.items())),
    "range reverse": lambda ks: (ks.range(reverse=True), lambda d: list(reversed(d.items()))),
    "range bounded": lambda ks: (
        ks.range(key_of(300), key_of(2700)),
        lambda d: [(k, v) for k, v in d.items() if key_of(300) <= k < key_of(2700)],
    ),
    "range bounded reverse": lambda ks: (
        ks.range(key_of(300), key_of(2700), reverse=True),
        lambda d: [(k, v) for k, v in reversed(d.items()) if key_of(300) <= k < key_of(2700)],
    ),
    "range limit": lambda ks: (ks.range(limit=2_100), lambda d: list(d.items())[:2_100]),
    "prefix": lambda ks: (
        ks.prefix("k0"),
        lambda d: [(k, v) for k, v in d.items() if k.startswith("k0")],
    ),
    "iteration": lambda ks: (iter(ks), list),
    "keys()": lambda ks: (iter(ks.keys()), list),
    "items()": lambda ks: (iter(ks.items()), lambda d: list(d.items())),
    "values()": lambda ks: (iter(ks.values()), lambda d: list(d.values())),
    "view items": lambda ks: (ks.at().items(), lambda d: list(d.items())),
    "view range reverse": lambda ks: (
        ks.at().range(reverse=True),
        lambda d: list(reversed(d.items())),
    ),
    "view keys": lambda ks: (ks.at().keys(), list),
    "view values": lambda ks: (ks.at().values(), lambda d: list(d.values())),
    "view prefix reverse": lambda ks: (
        ks.at().prefix("k0", reverse=True),
        lambda d: [(k, v) for k, v in reversed(d.items()) if k.startswith("k0")],
    ),
}


@pytest.mark.parametrize("scan", list(SCANS))
def test_a_scan_is_the_dict_at_its_start_while_writes_land_between_its_items(
    filled: KeySpace, scan: str
) -> None:
    start = initial()
    iterator, expect = SCANS[scan](filled)
    churn = Churn(filled)
    seen = []
    for item in iterator:
        seen.append(item)
        churn.step()
    assert churn.steps > 2_000  # writes landed inside every chunk
    assert seen == expect(start)


@pytest.mark.parametrize("recent", [0, 3, None], ids=["recent=0", "recent=3", "recent=default"])
def test_a_view_of_a_past_point_scans_as_that_point_while_writes_land(tmp_path, recent) -> None:
    options = {} if recent is None else {"recent_versions": recent}
    with Store.open(tmp_path / "store", fsync="never", **options) as store:
        ks = store.keyspace("ks")
        with ks.batch() as batch:
            for key, value in initial().items():
                batch.put(key, value)
        point = ks.last_seq
        then = initial()
        churn = Churn(ks)
        for _ in range(50):  # the point is now past the memory of recent=0 and 3
            churn.step()
        view = ks.at(point)
        seen = []
        for item in view.items():
            seen.append(item)
            churn.step()
        assert seen == list(then.items())
        assert dict(view.range(reverse=True)) == then
        assert len(view) == COUNT


def test_a_scan_keeps_in_memory_only_what_it_needs_and_only_while_it_runs(tmp_path) -> None:
    with Store.open(tmp_path / "store", fsync="never", recent_versions=0) as store:
        ks = store.keyspace("ks")
        with ks.batch() as batch:
            for key, value in initial().items():
                batch.put(key, value)
        versions = ks._state.versions
        assert len(versions) == 0  # nothing is kept beyond recent_versions=0
        scan = ks.range()
        next(scan)  # started: its point is pinned
        for i in range(100):
            ks.put(key_of(i), -i)
        assert len(versions) == 100  # every change since the pinned point
        rest = list(scan)  # finished: the pin is released
        assert len(rest) == COUNT - 1
        ks.put("after", 1)
        assert len(versions) == 0
        abandoned = ks.range()
        next(abandoned)
        ks.put("during", 1)
        assert len(versions) == 1
        del abandoned  # dropped half way: the pin goes with it
        gc.collect()
        ks.put("after abandoning", 1)
        assert len(versions) == 0
        assert versions.pins == []


def test_scans_while_a_writer_commits_are_each_exactly_one_committed_point(tmp_path) -> None:
    """A writer thread commits batches nonstop; every concurrent scan is one model state.

    A scan's point lies between the last write acknowledged before it was called and the
    last one issued by the time it ended; the scan must equal the model at one of those.
    A view's point is known exactly (``view.seq``), and its scan must equal the model there.
    """
    with Store.open(tmp_path / "store", fsync="never") as store:
        ks = store.keyspace("ks")
        with ks.batch() as batch:
            for key, value in initial().items():
                batch.put(key, value)
        first = ks.last_seq
        records: list[tuple[int, list[tuple[str, Any]]]] = []  # seq, puts (None: delete)
        acked = [first]
        issued = [first]
        stop = threading.Event()
        failure: list[BaseException] = []

        def write() -> None:
            n = 0
            try:
                while not stop.is_set():
                    n += 1
                    changes = [
                        (key_of(n * 7919 % COUNT), n),
                        (key_of(n * 104_729 % COUNT), None),
                        (key_of(n * 6007 % COUNT) + "-", n),
                        (key_of(n * 31 % COUNT), n),
                    ]
                    issued[0] = issued[0] + 1
                    with ks.batch() as batch:
                        for key, value in changes:
                            if value is None:
                                batch.delete(key)
                            else:
                                batch.put(key, value)
                    assert batch.receipt is not None
                    assert batch.receipt.seq == issued[0]
                    records.append((batch.receipt.seq, changes))
                    acked[0] = batch.receipt.seq
            except BaseException as exc:  # reported by the main thread
                failure.append(exc)

        writer = threading.Thread(target=write, daemon=True)
        writer.start()
        scans: list[tuple[int, int, dict[str, Any]]] = []
        views: list[tuple[int, dict[str, Any]]] = []
        try:
            for _ in range(8):
                low = acked[0]
                result = dict(ks.range())
                scans.append((low, issued[0], result))
                view = ks.at()
                assert view.seq >= low
                views.append((view.seq, dict(view.items())))
        finally:
            stop.set()
            writer.join(TIMEOUT)
        assert not writer.is_alive()
        assert not failure, failure
        assert any(high > low for low, high, _ in scans)  # writes landed during scans

        # Replay the writer's records; each scan must match the model at some seq of its window.
        model = initial()
        matched = [False] * len(scans)
        by_seq = dict(records)
        for seq in range(first, acked[0] + 1):
            if seq > first:
                for key, value in by_seq[seq]:
                    if value is None:
                        model.pop(key, None)
                    else:
                        model[key] = value
            for index, (low, high, result) in enumerate(scans):
                if not matched[index] and low <= seq <= high and result == model:
                    matched[index] = True
            for point, result in views:
                if point == seq:
                    assert result == model, f"the view of {point} is not the state at {point}"
        unmatched = [window[:2] for window, ok in zip(scans, matched, strict=True) if not ok]
        assert not unmatched, f"scans that are no committed point in their window: {unmatched}"
