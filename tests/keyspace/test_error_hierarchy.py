"""Every failure a caller can meet is a specific ActorKVError that says what to do.

Bad input (values nested too deep, TTLs and limits out of range, a clock that is no clock),
the system refusing a file (a full disk, no file descriptors), stored data that no longer
fits the options or the code that reads it, and ``repair`` pointed at the wrong directory:
each raises its own leaf of the hierarchy, with the original error chained as
``__cause__`` where there is one, and never a bare Python exception. Bad input never
reaches the log: every such case checks that the log is byte-identical afterwards.
"""

from __future__ import annotations

import asyncio
import errno
import math
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec
import pytest

import storage
from actors import (
    ActorKVError,
    EventSourcedActor,
    InvalidOption,
    InvalidValue,
    KeySpace,
    NotALog,
    OpenFailed,
    ReplayFailed,
    Store,
    ValueTypeMismatch,
)
from storage import SegmentedLog
from storage.codec import MAX_VALUE_DEPTH
from tests.actors.conftest import TIMEOUT, Incremented, ProbeCounter
from tests.keyspace.conftest import keyspace_dir, log_bytes
from tests.storage.faults import FaultInjector
from tests.storage.helpers import RECORD_HEADER_SIZE, newest_segment, record_offsets


def assert_rejected(
    store_path: Path, ks: KeySpace, error: type[ActorKVError], call: Callable[[], Any]
) -> pytest.ExceptionInfo[ActorKVError]:
    """``call`` raises ``error``, the log is unchanged, and then a put works."""
    before, last_seq = log_bytes(store_path, ks.name), ks.last_seq
    with pytest.raises(error) as raised:
        call()
    assert ks.last_seq == last_seq
    assert log_bytes(store_path, ks.name) == before
    assert ks.put("ok", 1).seq == last_seq + 1
    return raised


def write_calls(ks: KeySpace, key: str, value: Any, **kw: Any) -> dict[str, Callable[[], Any]]:
    """Every way to write ``key``/``value``, each as a thunk."""

    def in_batch() -> None:
        with ks.batch() as batch:
            batch.put("fine", 1)
            batch.put(key, value, **kw)

    return {
        "put": lambda: ks.put(key, value, **kw),
        "put_async": lambda: ks.put_async(key, value, **kw).get(timeout=TIMEOUT),
        "aput": lambda: asyncio.run(ks.aput(key, value, **kw)),
        "batch": in_batch,
    }


WRITES = ["put", "put_async", "aput", "batch"]


# -- values nested too deep ------------------------------------------------------------------


def nested(depth: int, kind: str) -> Any:
    """A value that nests ``depth`` lists (or dicts) around a scalar."""
    value: Any = 0
    for _ in range(depth):
        value = [value] if kind == "list" else {"k": value}
    return value


def at_stack_depth(frames: int, call: Callable[[], Any]) -> Any:
    """Run ``call`` ``frames`` Python frames deeper than here."""
    if frames == 0:
        return call()
    return at_stack_depth(frames - 1, call)


@pytest.mark.parametrize("how", ["put", "batch"])  # a batch nests its puts deeper in its record
@pytest.mark.parametrize("kind", ["list", "dict"])
def test_a_value_nested_max_value_depth_deep_is_stored_and_read_back(
    ks: KeySpace, kind: str, how: str
):
    value = nested(MAX_VALUE_DEPTH, kind)
    write_calls(ks, "deep", value)[how]()
    assert ks.get("deep") == value
    assert ks.get_entry("deep").value == value


@pytest.mark.parametrize("how", WRITES)
@pytest.mark.parametrize("depth", [MAX_VALUE_DEPTH + 1, 1_000, 5_000])
@pytest.mark.parametrize("kind", ["list", "dict"])
def test_a_value_nested_deeper_than_max_value_depth_is_invalid_value(
    store_path: Path, ks: KeySpace, kind: str, depth: int, how: str
):
    call = write_calls(ks, "deep", nested(depth, kind))[how]
    raised = assert_rejected(store_path, ks, InvalidValue, call)
    assert "MAX_VALUE_DEPTH" in str(raised.value)
    assert "deep" not in ks


def test_the_depth_limit_does_not_depend_on_the_callers_stack(ks: KeySpace):
    def outcome(depth: int) -> str:
        value = nested(depth, "list")
        try:
            ks.put("deep", value)
        except ActorKVError as exc:
            return type(exc).__name__
        return "stored" if ks.get("deep") == value else "read back wrong"

    depths = [MAX_VALUE_DEPTH - 1, MAX_VALUE_DEPTH + 1, 400]
    shallow = {depth: outcome(depth) for depth in depths}
    deep = at_stack_depth(700, lambda: {depth: outcome(depth) for depth in depths})
    assert shallow == {
        MAX_VALUE_DEPTH - 1: "stored",
        MAX_VALUE_DEPTH + 1: "InvalidValue",
        400: "InvalidValue",
    }
    assert deep == shallow


def frames_left() -> int:
    depth, frame = 0, sys._getframe()
    while frame is not None:
        depth, frame = depth + 1, frame.f_back
    return sys.getrecursionlimit() - depth


@pytest.mark.parametrize("spare", [300, 60])  # 60 frames: too few for msgspec's own recursion
def test_a_value_of_max_value_depth_is_stored_from_a_deep_call_stack(ks: KeySpace, spare: int):
    value = nested(MAX_VALUE_DEPTH, "dict")
    frames = frames_left() - spare
    at_stack_depth(frames, lambda: ks.put("deep", value))
    assert at_stack_depth(frames, lambda: ks.get("deep")) == value
    assert at_stack_depth(frames, lambda: ks.get_entry("deep")).value == value
    assert at_stack_depth(frames, lambda: dict(ks.range())) == {"deep": value}


class Noted(msgspec.Struct, tag=True, frozen=True):
    payload: Any


class Notebook(EventSourcedActor[int]):
    def initial_state(self) -> int:
        return 0

    def apply(self, state: int, event: Noted) -> int:
        return state + 1

    def note(self, payload: Any) -> int:
        self.emit(Noted(payload))
        return self.state

    def count(self) -> int:
        return self.state


@pytest.mark.parametrize("depth", [MAX_VALUE_DEPTH + 1, 1_000, 5_000])
def test_a_custom_actors_event_nested_too_deep_is_invalid_value(store: Store, depth: int):
    notebook = store.spawn("notes", Notebook)
    assert notebook.note("first").get(timeout=TIMEOUT) == 1
    last_seq = notebook.last_seq
    with pytest.raises(InvalidValue) as raised:
        notebook.note(nested(depth, "list")).get(timeout=TIMEOUT)
    assert "MAX_VALUE_DEPTH" in str(raised.value)  # what the limit is, and so what to do
    assert notebook.last_seq == last_seq
    assert notebook.count().get(timeout=TIMEOUT) == 1
    assert notebook.note("second").get(timeout=TIMEOUT) == 2


# -- TTLs, limits, clocks ----------------------------------------------------------------------

BAD_TTLS = {
    "2**1100": 2**1100,  # beyond any float
    "-2**1100": -(2**1100),
    "inf": math.inf,
    "-inf": -math.inf,
    "nan": math.nan,
    "0": 0,
    "-1": -1,
    "True": True,
    "'5'": "5",
}


@pytest.mark.parametrize("how", WRITES)
@pytest.mark.parametrize("ttl", list(BAD_TTLS))
def test_a_ttl_that_is_not_a_positive_finite_number_is_invalid_value(
    store_path: Path, ks: KeySpace, ttl: str, how: str
):
    call = write_calls(ks, "k", 1, ttl=BAD_TTLS[ttl])[how]
    raised = assert_rejected(store_path, ks, InvalidValue, call)
    assert "ttl" in str(raised.value)
    assert "k" not in ks


@pytest.mark.parametrize("limit", [True, False, -1, "3", 1.5], ids=repr)
def test_a_bad_scan_limit_is_invalid_option(ks: KeySpace, limit: Any):
    ks.put("k", 1)
    for scan in (lambda: ks.range(limit=limit), lambda: ks.prefix("k", limit=limit)):
        with pytest.raises(InvalidOption, match="limit") as raised:
            scan()
        assert isinstance(raised.value, ValueError)  # as before, for callers catching it
    assert list(ks.range(limit=1)) == [("k", 1)]


@pytest.mark.parametrize("from_seq", [0, -1, True, "1", 1.0], ids=repr)
def test_a_bad_read_start_is_invalid_option(tmp_path: Path, from_seq: Any):
    with SegmentedLog.open(tmp_path / "log") as log:
        log.append(b"one")
        with pytest.raises(InvalidOption, match="from_seq"):
            log.read(from_seq=from_seq)
        assert list(log.read(from_seq=1)) == [(1, b"one")]


def failing_clock() -> float:
    raise RuntimeError("no time source")


BAD_CLOCKS = {
    "not callable": "x",
    "None": None,
    "raises": failing_clock,
    "returns a string": lambda: "now",
    "returns nan": lambda: math.nan,
    "returns inf": lambda: math.inf,
    "returns a bool": lambda: True,
}


@pytest.mark.parametrize("clock", list(BAD_CLOCKS))
def test_a_bad_clock_is_invalid_option_and_creates_nothing(tmp_path: Path, clock: str):
    path = tmp_path / "store"
    with pytest.raises(InvalidOption, match="clock") as raised:
        Store.open(path, clock=BAD_CLOCKS[clock])
    if clock == "raises":
        assert isinstance(raised.value.__cause__, RuntimeError)
    assert not path.exists()
    with Store.open(path) as store:
        assert store.keyspace("ks").put("k", 1).seq == 1


# -- the system refuses a file: OpenFailed -----------------------------------------------------


def assert_open_failed(
    raised: pytest.ExceptionInfo[OpenFailed], error: int, path: Path | None = None
) -> None:
    failure = raised.value
    assert failure.errno == error
    assert isinstance(failure.__cause__, OSError)
    assert failure.__cause__.errno == error
    if path is not None:
        assert failure.path == path
    advice = {errno.ENOSPC: "free disk space", errno.EMFILE: "ulimit"}[error]
    assert advice in str(failure)


def test_a_full_disk_while_creating_a_store_is_open_failed(tmp_path: Path):
    path = tmp_path / "store"
    with FaultInjector("make_dir", error=errno.ENOSPC), pytest.raises(OpenFailed) as raised:
        Store.open(path)
    assert_open_failed(raised, errno.ENOSPC, path)
    assert not path.exists()
    with Store.open(path) as store:
        assert store.keyspace("ks").put("k", 1).seq == 1


@pytest.mark.parametrize("nth", [1, 2], ids=["keyspaces folder", "key space folder"])
def test_a_full_disk_while_creating_a_keyspace_folder_is_open_failed(
    store: Store, store_path: Path, nth: int
):
    with FaultInjector("make_dir", nth, errno.ENOSPC), pytest.raises(OpenFailed) as raised:
        store.keyspace("ks")
    assert_open_failed(raised, errno.ENOSPC, keyspace_dir(store_path, "ks"))
    ks = store.keyspace("ks")
    assert ks.put("k", 1).seq == 1
    assert store.keyspaces() == ["ks"]


@pytest.mark.parametrize(
    ("operation", "nth", "error"),
    [
        ("create", 1, errno.EMFILE),  # the first segment
        ("write_all", 1, errno.ENOSPC),  # the first segment's header
        ("write_all", 2, errno.ENOSPC),  # the manifest
    ],
    ids=["segment file", "segment header", "manifest"],
)
def test_a_refused_file_while_creating_a_keyspace_is_open_failed(
    store: Store, store_path: Path, operation: str, nth: int, error: int
):
    store.keyspace("other").put("k", 1)
    with FaultInjector(operation, nth, error), pytest.raises(OpenFailed) as raised:
        store.keyspace("ks")
    assert_open_failed(raised, error)
    assert keyspace_dir(store_path, "ks") in (raised.value.path, *raised.value.path.parents)

    ks = store.keyspace("ks")
    assert ks.put("k", 1).seq == 1
    assert sorted(log_bytes(store_path, "ks")) == ["00000000000000000001.seg", "LOCK", "MANIFEST"]
    assert store.keyspace("other")["k"] == 1


@pytest.fixture
def lock_files_refused(monkeypatch: pytest.MonkeyPatch) -> Callable[[], None]:
    """Make every ``os.open`` of a file named LOCK fail with EMFILE; returns the undo."""
    real_open = os.open

    def refusing_open(path: Any, *args: Any, **kwargs: Any) -> int:
        if Path(path).name == "LOCK":
            raise OSError(errno.EMFILE, os.strerror(errno.EMFILE), str(path))
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(os, "open", refusing_open)
    return monkeypatch.undo


def test_no_descriptor_for_the_store_lock_is_open_failed(
    store_path: Path, lock_files_refused: Callable[[], None]
):
    with pytest.raises(OpenFailed) as raised:
        Store.open(store_path)
    assert_open_failed(raised, errno.EMFILE, store_path / "LOCK")
    lock_files_refused()
    with Store.open(store_path) as store:
        assert store.keyspace("ks").put("k", 1).seq == 1


def test_no_descriptor_for_a_keyspace_lock_is_open_failed(store_path: Path):
    with Store.open(store_path) as store:
        store.keyspace("ks").put("k", 1)
    with Store.open(store_path) as store:
        real_open = os.open
        lock = keyspace_dir(store_path, "ks") / "LOCK"

        def refusing_open(path: Any, *args: Any, **kwargs: Any) -> int:
            if Path(path) == lock:
                raise OSError(errno.EMFILE, os.strerror(errno.EMFILE), str(path))
            return real_open(path, *args, **kwargs)

        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(os, "open", refusing_open)
            with pytest.raises(OpenFailed) as raised:
                store.keyspace("ks")
        assert_open_failed(raised, errno.EMFILE, lock)
        assert store.keyspace("ks")["k"] == 1


def test_a_torn_tail_that_a_full_disk_keeps_from_being_cut_is_open_failed(store_path: Path):
    with Store.open(store_path) as store:
        ks = store.keyspace("ks")
        for i in range(5):
            ks.put(f"k{i}", i)
    segment = newest_segment(keyspace_dir(store_path, "ks"))
    last = record_offsets(segment)[-1]
    os.truncate(segment, last.offset + RECORD_HEADER_SIZE + last.length // 2)  # torn
    before = log_bytes(store_path, "ks")

    with Store.open(store_path) as store:
        full_disk = FaultInjector("write_all", error=errno.ENOSPC, partial=True)
        with full_disk, pytest.raises(OpenFailed) as raised:
            store.keyspace("ks")  # the side file keeping the tail cannot be written
        assert full_disk.injected == 1
        assert_open_failed(raised, errno.ENOSPC)
        assert log_bytes(store_path, "ks") == before  # no side file, segment untouched

        ks = store.keyspace("ks")
        assert ks.last_seq == 4
        assert [ks.get(f"k{i}") for i in range(5)] == [0, 1, 2, 3, None]
        side_files = [name for name in log_bytes(store_path, "ks") if ".cut-" in name]
        assert side_files == [f"{segment.name}.cut-{last.offset}"]
        assert ks.put("k4", 4).seq == 5


# -- stored data that no longer fits ------------------------------------------------------------


def test_a_stored_value_that_does_not_decode_as_the_value_type_is_value_type_mismatch(
    store_path: Path,
):
    with Store.open(store_path) as store:
        ks = store.keyspace("ks")
        ks.put("count", 5)
        ks.put("name", "text")

    with Store.open(store_path) as store:
        typed = store.keyspace("ks", value_type=int)
        assert typed.get("count") == 5
        reads = {
            "get": lambda: typed.get("name"),
            "getitem": lambda: typed["name"],
            "get_entry": lambda: typed.get_entry("name"),
            "get_many": lambda: typed.get_many(["count", "name"]),
            "range": lambda: list(typed.range()),
            "prefix": lambda: list(typed.prefix("na")),
        }
        for read in reads.values():
            with pytest.raises(ValueTypeMismatch) as raised:
                read()
            assert raised.value.key == "name"
            assert raised.value.value_type is int
            assert "'name'" in str(raised.value)
            assert isinstance(raised.value.__cause__, msgspec.ValidationError)

    with Store.open(store_path) as store:  # nothing was lost: untyped reads see it all
        assert dict(store.keyspace("ks").items()) == {"count": 5, "name": "text"}


class SuperstitiousCounter(ProbeCounter):
    """A later version of ProbeCounter whose apply no longer accepts every event in the log."""

    def apply(self, state: int, event: Incremented) -> int:
        if event.by == 13:
            raise ValueError("13 is unlucky")
        return state + event.by


def test_an_apply_that_raises_during_replay_is_replay_failed(store_path: Path):
    with Store.open(store_path) as store:
        tally = store.spawn("tally", ProbeCounter)
        for by in (1, 13, 2):
            tally.increment(by).get(timeout=TIMEOUT)

    with Store.open(store_path) as store:
        with pytest.raises(ReplayFailed) as raised:
            store.spawn("tally", SuperstitiousCounter)
        failure = raised.value
        assert (failure.name, failure.seq, failure.event) == ("tally", 2, Incremented(13))
        assert isinstance(failure.__cause__, ValueError)
        assert "13 is unlucky" in str(failure)
        assert "fix it" in str(failure)
        assert store.spawn("tally", ProbeCounter).value().get(timeout=TIMEOUT) == 16


# -- repair pointed at something that is not a log -------------------------------------------------


def test_repairing_a_missing_directory_is_not_a_log(tmp_path: Path):
    missing = tmp_path / "missing"
    with pytest.raises(NotALog, match="no such directory") as raised:
        storage.repair(missing)
    assert raised.value.path == missing
    assert not missing.exists()


def test_repairing_an_empty_directory_is_not_a_log(tmp_path: Path):
    with pytest.raises(NotALog, match="no segment files"):
        storage.repair(tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_repairing_a_store_root_is_not_a_log_and_lists_its_logs(store_path: Path):
    with Store.open(store_path) as store:
        store.keyspace("a").put("k", 1)
        store.keyspace("b").put("k", 2)
        store.spawn("tally", ProbeCounter).increment(1).get(timeout=TIMEOUT)
    before = sorted(p.relative_to(store_path) for p in store_path.rglob("*"))

    with pytest.raises(NotALog) as raised:
        storage.repair(store_path)
    for log in ("keyspaces/a", "keyspaces/b", "actors/tally"):
        assert str(store_path / log) in str(raised.value)
    assert sorted(p.relative_to(store_path) for p in store_path.rglob("*")) == before
    assert storage.repair(store_path / "keyspaces" / "a").changed is False
