"""Per-key linearizability: the checker on hand-made histories, then on a real key space."""

from __future__ import annotations

import asyncio
import random
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from actors import KeySpace, Store, VersionConflict
from tests.reliability.conftest import TIMEOUT
from tests.reliability.linearizability import INITIAL, Op, Recorder, State, check, step


def op(kind: str, arg: Any, result: Any, call: int, ret: int | None, process: int = 0) -> Op:
    return Op(process, kind, arg, result, call, ret)


# -- the checker on hand-made histories ------------------------------------------------------


def test_an_empty_history_is_linearizable():
    assert check([]).ok


def test_a_sequential_history_that_follows_the_model_is_linearizable():
    history = [
        op("get", None, None, 0, 1),
        op("put", "a", 1, 2, 3),
        op("get", None, ("a", 1), 4, 5),
        op("cas", (1, "b"), ("ok", 2), 6, 7),
        op("cas", (1, "c"), ("conflict", 2), 8, 9),
        op("delete", None, "deleted", 10, 11),
        op("delete", None, "absent", 12, 13),
        op("put", "d", 1, 14, 15),
    ]
    assert check(history).ok


def test_a_read_of_a_value_never_written_is_not_linearizable():
    history = [op("put", "a", 1, 0, 1), op("get", None, ("zzz", 1), 2, 3, process=1)]
    assert not check(history).ok


def test_a_stale_read_after_a_newer_write_completed_is_not_linearizable():
    history = [
        op("put", "a", 1, 0, 1),
        op("put", "b", 2, 2, 3),
        op("get", None, ("a", 1), 4, 5, process=1),  # began after "b" was acknowledged
    ]
    verdict = check(history)
    assert not verdict.ok
    assert "get" in verdict.explain()


def test_a_read_that_sees_a_write_then_misses_it_is_not_linearizable():
    history = [
        op("put", "a", 1, 0, 100),  # still running while both reads happen
        op("get", None, ("a", 1), 10, 20, process=1),
        op("get", None, None, 30, 40, process=2),  # after a read that saw "a"
    ]
    assert not check(history).ok


@pytest.mark.parametrize("seen", [None, ("a", 1)], ids=["old", "new"])
def test_a_read_overlapping_a_write_may_see_either_value(seen):
    history = [op("put", "a", 1, 0, 100), op("get", None, seen, 10, 20, process=1)]
    assert check(history).ok


def test_overlapping_writes_are_fine_in_the_order_their_versions_tell():
    history = [
        op("put", "a", 2, 0, 50),  # got version 2: it went second
        op("put", "b", 1, 10, 60, process=1),
        op("get", None, ("a", 2), 70, 80, process=2),
    ]
    assert check(history).ok
    wrong_read = [*history[:2], op("get", None, ("b", 1), 70, 80, process=2)]
    assert not check(wrong_read).ok


def test_two_compare_and_sets_on_the_same_version_cannot_both_succeed():
    both = [
        op("put", "a", 1, 0, 1),
        op("cas", (1, "x"), ("ok", 2), 2, 10, process=1),
        op("cas", (1, "y"), ("ok", 2), 3, 11, process=2),
    ]
    assert not check(both).ok
    one_loses = [*both[:2], op("cas", (1, "y"), ("conflict", 2), 3, 11, process=2)]
    assert check(one_loses).ok


def test_a_receipt_with_the_wrong_version_is_not_linearizable():
    assert not check([op("put", "a", 1, 0, 1), op("put", "b", 3, 2, 3)]).ok


def test_a_conflict_must_report_the_actual_version():
    assert not check([op("put", "a", 1, 0, 1), op("cas", (0, "b"), ("conflict", 7), 2, 3)]).ok


def test_an_unanswered_write_may_take_effect_late_or_never():
    pending = op("put", "a", None, 10, None)
    assert check([pending, op("get", None, None, 20, 30, process=1)]).ok
    assert check([pending, op("get", None, ("a", 1), 20, 30, process=1)]).ok
    assert not check([op("get", None, ("a", 1), 0, 5, process=1), pending]).ok  # not before it


def test_a_response_before_the_invocation_is_rejected():
    with pytest.raises(ValueError, match="before it is invoked"):
        check([op("get", None, None, 10, 5)])


def sequential_run(rng: random.Random, length: int) -> list[tuple[str, Any, Any]]:
    """A random run of the model itself: (kind, arg, result) in linearization order."""
    state: State = INITIAL
    run = []
    for index in range(length):
        kind = rng.choice(["put", "get", "cas", "delete"])
        arg: Any = None
        if kind == "put":
            arg = f"v{index}"
        elif kind == "cas":
            arg = (rng.choice([state[1], rng.randint(0, 3)]), f"v{index}")
        probe = Op(0, kind, arg, None, 0, None)  # unanswered: step gives the real outcomes
        after = step(state, probe)[0]
        result = {
            "put": after[1],
            "get": None if state[1] == 0 else state,
            "cas": ("ok", after[1]) if after != state else ("conflict", state[1]),
            "delete": "absent" if state[1] == 0 else "deleted",
        }[kind]
        run.append((kind, arg, result))
        state = after
    return run


def overlapped(run: list[tuple[str, Any, Any]], rng: random.Random, width: int) -> list[Op]:
    """Give each step an interval around its linearization point ``10 * i`` (may overlap)."""
    ops = []
    for index, (kind, arg, result) in enumerate(run):
        point = 10 * index
        ops.append(Op(index % 4, kind, arg, result, point - rng.randint(0, width), point + 1))
    return ops


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**32), length=st.integers(1, 60), width=st.integers(0, 40))
def test_any_overlapped_run_of_the_model_is_linearizable(seed, length, width):
    rng = random.Random(seed)
    assert check(overlapped(sequential_run(rng, length), rng, width)).ok


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**32), length=st.integers(1, 60), width=st.integers(0, 40))
def test_a_run_with_one_read_of_an_unwritten_value_is_not(seed, length, width):
    rng = random.Random(seed)
    run = sequential_run(rng, length)
    index = rng.randrange(len(run))
    run[index] = ("get", None, ("never written", 1))
    assert not check(overlapped(run, rng, width)).ok


# -- a real key space ------------------------------------------------------------------------

KEYS = ("k0", "k1", "k2")


def run_op(ks: KeySpace, recorder: Recorder, process: int, rng: random.Random, n: int) -> None:
    key = rng.choice(KEYS)
    kind = rng.choices(["put", "get", "cas", "delete"], weights=[3, 4, 4, 1])[0]
    value = f"p{process}n{n}"
    if kind == "put":
        recorder.call(process, key, "put", value, lambda: ks.put(key, value).version)
    elif kind == "get":
        recorder.call(process, key, "get", None, lambda: entry_of(ks, key))
    elif kind == "delete":
        recorder.call(process, key, "delete", None, lambda: deleted(ks, key))
    else:
        seen = entry_of(ks, key)
        expect = (0 if seen is None else seen[1]) + rng.choice([0, 0, 0, 1])
        recorder.call(process, key, "cas", (expect, value), lambda: cas(ks, key, value, expect))


def entry_of(ks: KeySpace, key: str) -> tuple[Any, int] | None:
    entry = ks.get_entry(key)
    return None if entry is None else (entry.value, entry.version)


def deleted(ks: KeySpace, key: str) -> str:
    return "absent" if ks.delete(key) is None else "deleted"


def cas(ks: KeySpace, key: str, value: str, expect: int) -> tuple[str, int]:
    try:
        return ("ok", ks.put(key, value, expect_version=expect).version)
    except VersionConflict as conflict:
        return ("conflict", conflict.actual)


async def async_ops(ks: KeySpace, recorder: Recorder, process: int, count: int) -> None:
    """put/get through aput/aget, timed in the event loop thread."""
    rng = random.Random(process)
    for n in range(count):
        key = rng.choice(KEYS)
        if rng.random() < 0.5:
            value = f"p{process}n{n}"
            call = time.monotonic_ns()
            receipt = await asyncio.wait_for(ks.aput(key, value), TIMEOUT)
            recorder.add(key, Op(process, "put", value, receipt.version, call, time.monotonic_ns()))
        else:
            call = time.monotonic_ns()
            await ks.aget(key)
            result = entry_of(ks, key)  # aget has no version: read the entry in the same step
            recorder.add(key, Op(process, "get", None, result, call, time.monotonic_ns()))


@pytest.mark.parametrize("fsync", ["always", "never"])
def test_concurrent_put_get_cas_delete_on_a_few_keys_are_linearizable(
    tmp_path: Path, long_mode: bool, fsync: str
):
    threads_count, per_thread = 4, (1000 if long_mode else 250)
    recorder = Recorder()
    errors: list[BaseException] = []
    with Store.open(tmp_path / "store", fsync=fsync) as store:
        ks = store.keyspace("lin")
        start = threading.Barrier(threads_count + 1)

        def worker(process: int) -> None:
            try:
                start.wait(TIMEOUT)
                rng = random.Random(process * 7919)
                for n in range(per_thread):
                    run_op(ks, recorder, process, rng, n)
            except BaseException as exc:
                errors.append(exc)

        def loop_thread() -> None:
            try:
                start.wait(TIMEOUT)
                asyncio.run(async_ops(ks, recorder, threads_count, per_thread))
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=worker, args=(p,)) for p in range(threads_count)]
        threads.append(threading.Thread(target=loop_thread))
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(TIMEOUT * 4)
        assert not any(thread.is_alive() for thread in threads), "a caller hung"
        final = {key: entry_of(ks, key) for key in KEYS}
    assert errors == []
    histories = recorder.by_key()
    assert sum(map(len, histories.values())) == (threads_count + 1) * per_thread
    with Store.open(tmp_path / "store") as store:
        reopened = {key: entry_of(store.keyspace("lin"), key) for key in KEYS}
    assert reopened == final
    for key, history in histories.items():
        # The reopened store's entry ends the history: a last read after everything else.
        after = reopened[key]
        end = max(o.end for o in history)
        closing = Op(-1, "get", None, after, end + 1, end + 2)
        verdict = check([*history, closing])
        assert verdict.ok, f"key {key}: {verdict.explain()}"
    assert overlapping_pairs(recorder) > 0  # the history was concurrent, not a sequence


def overlapping_pairs(recorder: Recorder) -> int:
    """How many operations on the same key, from different threads, overlapped in time."""
    count = 0
    for history in recorder.by_key().values():
        ops = sorted(history, key=lambda o: o.call)
        for index, first in enumerate(ops):
            for later in ops[index + 1 :]:
                if later.call > first.end:
                    break
                count += later.process != first.process
    return count
