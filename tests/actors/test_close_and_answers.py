"""Closing a store or an actor never hangs, and every command's caller is answered.

``Store.close(timeout)`` stops every actor at once: the ones that stop are flushed and
synced, the ones still inside a command after ``timeout`` are named in ``StopTimeout`` and
keep the directory locked until they return. A close (or stop) that would wait for the
calling command itself raises ``InvalidOperation`` at once. And a command that raises a
``BaseException`` (``sys.exit()``, ``KeyboardInterrupt``, ...) answers its own caller with it,
while the actor rolls back and goes on serving everyone else.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import NoReturn

import pytest

import actors
from actors import ActorHandle, ActorStopped, KeyspaceClosed, Store, StoreLocked
from storage.errors import InvalidOperation, StopTimeout
from tests.actors.conftest import TIMEOUT, Incremented, ProbeCounter, read_records
from tests.keyspace.conftest import wait_until
from tests.storage.faults import DurabilityTracker

CLOSE_TIMEOUT = 1.0
"""How long a close waits for a stuck actor: every other actor stops well within it."""


class Waiter(ProbeCounter):
    def wait_for(self, condition: Callable[[], bool]) -> None:
        """Block the actor thread until ``condition()`` holds (bounded by the hang guard)."""
        if not wait_until(condition):
            raise AssertionError("the condition never held")


class Closer(ProbeCounter):
    def close_store(self, store: Store) -> None:
        store.close()

    def stop_itself(self, handle: ActorHandle[Closer]) -> None:
        handle.stop()


class Escape(BaseException):
    """Not an Exception: like KeyboardInterrupt, it gets past every ``except Exception``."""


class Escaper(ProbeCounter):
    def add_then_escape(self, by: int, escape: Callable[[], NoReturn]) -> int:
        self.emit(Incremented(by))
        escape()
        return self.state


def _exit() -> NoReturn:
    sys.exit("exit from inside a command")


def _interrupt() -> NoReturn:
    raise KeyboardInterrupt("interrupted inside a command")


def _escape() -> NoReturn:
    raise Escape("escaped from inside a command")


ESCAPES = [
    pytest.param(_exit, SystemExit, "exit from inside a command", id="sys.exit"),
    pytest.param(_interrupt, KeyboardInterrupt, "interrupted inside a command", id="interrupt"),
    pytest.param(_escape, Escape, "escaped from inside a command", id="custom"),
]


def _opens(path: Path) -> bool:
    """Whether the store at ``path`` can be opened now (it is closed again at once)."""
    try:
        Store.open(path).close()
    except StoreLocked:
        return False
    return True


def test_the_errors_of_close_and_batches_are_exported_by_actors():
    # `from actors import ...` is all an application needs (actors/__init__.py).
    assert getattr(actors, "InvalidOperation", None) is InvalidOperation
    assert getattr(actors, "StopTimeout", None) is StopTimeout
    assert {"InvalidOperation", "StopTimeout"} <= set(actors.__all__)


def test_close_with_a_stuck_actor_stops_and_syncs_the_rest_and_stays_locked_until_it_returns(
    tmp_path: Path,
):
    path = tmp_path / "store"
    tracker = DurabilityTracker(tmp_path).install()
    try:
        # fsync_interval=3600: the background syncer never runs, so only the final sync of
        # close makes the key space's acknowledged puts durable.
        store = Store.open(path, fsync="interval", fsync_interval=3600)
        stuck = store.spawn("stuck", ProbeCounter)  # first: the first one a close stops
        busy = store.spawn("busy", Waiter)
        ks = store.keyspace("ks")
        assert stuck.increment(1).get(timeout=TIMEOUT) == 1
        written = {f"key-{i:03}": i for i in range(50)}
        for key, value in written.items():
            ks.put(key, value)
        assert ks.stats().fsyncs == 0  # acknowledged, not yet durable

        gate = threading.Event()
        held = stuck.hold(gate)
        behind = stuck.increment(2)  # queued behind the stuck command
        # busy runs its queued increments only once the close has begun (it refuses new
        # commands first), so they are still in the inbox when the close asks it to stop.
        waiting = busy.wait_for(lambda: not busy.alive)
        queued = [busy.increment(1) for _ in range(20)]

        with pytest.raises(StopTimeout) as timed_out:
            store.close(timeout=CLOSE_TIMEOUT)
        assert timed_out.value.names == ["stuck"]
        assert "stuck" in str(timed_out.value)
        # Every other actor was stopped: its queued commands were answered before close
        # returned (a zero timeout: no waiting).
        assert waiting.get(timeout=0) is None
        assert [future.get(timeout=0) for future in queued] == list(range(1, 21))
        assert not busy.alive
        assert not held.done()
        assert not behind.done()
        with pytest.raises(StoreLocked):
            Store.open(path)  # the stuck actor still owns its log: the directory stays locked
        with pytest.raises(ActorStopped):
            stuck.increment(1)
        with pytest.raises(KeyspaceClosed):
            ks.put("late", 0)

        gate.set()
        assert held.get(timeout=TIMEOUT) is None  # the stuck command's caller got its answer
        assert behind.get(timeout=TIMEOUT) == 3  # and so did the one queued behind it
        assert wait_until(lambda: _opens(path))  # then the directory was unlocked
        tracker.cut_power()  # every log is closed: nothing from here on is made durable
        tracker.crash()
    finally:
        tracker.uninstall()

    with Store.open(path) as reopened:
        assert dict(reopened.keyspace("ks").items()) == written
        assert reopened.spawn("busy", Waiter).value().get(timeout=TIMEOUT) == 20
        assert reopened.spawn("stuck", ProbeCounter).value().get(timeout=TIMEOUT) == 3


def test_close_from_inside_a_command_raises_invalid_operation_and_the_store_closes_later(
    store_path: Path,
):
    store = Store.open(store_path)
    closer = store.spawn("closer", Closer)
    ks = store.keyspace("ks")
    assert closer.increment(1).get(timeout=TIMEOUT) == 1
    with pytest.raises(InvalidOperation, match="from inside a command of 'closer'"):
        closer.close_store(store).get(timeout=TIMEOUT)
    # Nothing was closed: the store and its actors go on serving.
    assert closer.increment(2).get(timeout=TIMEOUT) == 3
    assert ks.put("k", 1).seq == 1
    store.close()  # from outside: closes normally
    assert not closer.alive
    with Store.open(store_path) as reopened:
        assert reopened.spawn("closer", Closer).value().get(timeout=TIMEOUT) == 3
        assert dict(reopened.keyspace("ks").items()) == {"k": 1}


def test_stop_from_inside_the_actors_own_command_raises_invalid_operation(store_path: Path):
    with Store.open(store_path) as store:
        closer = store.spawn("closer", Closer)
        with pytest.raises(InvalidOperation, match="cannot be stopped from inside its own"):
            closer.stop_itself(closer).get(timeout=TIMEOUT)
        assert closer.alive
        assert closer.increment(4).get(timeout=TIMEOUT) == 4
        closer.stop(timeout=TIMEOUT)  # from outside: stops normally
        assert not closer.alive
    assert read_records(store_path, "closer") == [[{"type": "Incremented", "by": 4}]]


def test_stop_with_a_timeout_raises_stop_timeout_and_the_actor_stops_once_its_command_returns(
    store_path: Path,
):
    with Store.open(store_path) as store:
        counter = store.spawn("counter", ProbeCounter)
        assert counter.increment(5).get(timeout=TIMEOUT) == 5
        gate = threading.Event()
        held = counter.hold(gate)
        with pytest.raises(StopTimeout) as timed_out:
            counter.stop(timeout=0.1)
        assert timed_out.value.names == ["counter"]
        assert not counter.alive
        gate.set()
        assert held.get(timeout=TIMEOUT) is None
        # It stopped (and closed its log) once the command returned: it can be spawned again.
        assert wait_until(lambda: _spawns_with(store, "counter", 5))
    assert read_records(store_path, "counter") == [[{"type": "Incremented", "by": 5}]]


def _spawns_with(store: Store, name: str, value: int) -> bool:
    """Whether ``name`` can be spawned again now (its log was closed) and holds ``value``."""
    try:
        again = store.spawn(name, ProbeCounter)
    except StoreLocked:
        return False
    return bool(again.value().get(timeout=TIMEOUT) == value)


@pytest.mark.parametrize(("escape", "kind", "message"), ESCAPES)
def test_a_base_exception_answers_its_caller_rolls_back_and_the_actor_goes_on(
    store_path: Path, escape: Callable[[], NoReturn], kind: type[BaseException], message: str
):
    with Store.open(store_path) as store:
        counter = store.spawn("counter", Escaper)
        assert counter.increment(1).get(timeout=TIMEOUT) == 1
        with pytest.raises(kind) as escaped:
            counter.add_then_escape(10, escape).get(timeout=TIMEOUT)
        assert escaped.type is kind
        assert str(escaped.value) == message
        assert counter.value().get(timeout=TIMEOUT) == 1  # the emitted event was rolled back

        # Three commands queued behind a held one run as one group; the middle one escapes.
        gate = threading.Event()
        held = counter.hold(gate)
        before = counter.increment(2)
        escaping = counter.add_then_escape(20, escape)
        after = counter.increment(3)
        gate.set()
        assert held.get(timeout=TIMEOUT) is None
        assert before.get(timeout=TIMEOUT) == 3
        with pytest.raises(kind) as escaped_in_group:
            escaping.get(timeout=TIMEOUT)
        assert escaped_in_group.type is kind
        assert after.get(timeout=TIMEOUT) == 6
        stats = counter.stats()
        assert (stats.groups, stats.largest_group, stats.records) == (2, 3, 3)
        assert counter.value().get(timeout=TIMEOUT) == 6
    assert read_records(store_path, "counter") == [
        [{"type": "Incremented", "by": 1}],
        [{"type": "Incremented", "by": 2}],
        [{"type": "Incremented", "by": 3}],
    ]
    with Store.open(store_path) as store:
        assert store.spawn("counter", Escaper).value().get(timeout=TIMEOUT) == 6
