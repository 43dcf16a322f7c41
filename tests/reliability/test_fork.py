"""A fork is a process boundary: a child never uses, writes, closes or unlocks its parent's store.

Each scenario runs in ``fork_scenario.py``, a separate Python process that this test drives
line by line: it opens a store (or a lock, or a log), forks a child that tries every use of
it and then exits normally, and reports what the child saw. This process plays the third
party that tries to open or drop what the parent still uses. ``flock`` locks are shared by
the child's inherited descriptor, so a child that unlocked on exit used to hand the parent's
store to anyone.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from actors import Store
from storage import DirectoryLock, SegmentedLog, StoreLocked
from tests.actors.conftest import reopened_value
from tests.reliability.conftest import TIMEOUT

if TYPE_CHECKING:  # Python 3.10 has no typing.Self
    from typing_extensions import Self

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = Path(__file__).with_name("fork_scenario.py")
SCENARIO_TIMEOUT = 2 * TIMEOUT
"""Seconds a whole scenario may run before it is killed (longer than its own guards)."""

STORE_USES = ("put", "get", "keyspace", "spawn", "increment")


class Scenario:
    """One run of ``fork_scenario.py``, driven one command line at a time; use ``with``."""

    def __init__(self, tmp_path: Path, kind: str, directory: Path, leave: str = "exit") -> None:
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
        }
        self.stderr_path = tmp_path / f"{kind}-scenario.stderr"
        with self.stderr_path.open("w") as stderr:
            self.process = subprocess.Popen(
                [sys.executable, str(SCRIPT), kind, str(directory), leave],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=stderr,
                text=True,
                env=env,
                cwd=ROOT,
            )
        # A hung scenario is killed, so every read below ends (at worst with EOF).
        self.watchdog = threading.Timer(SCENARIO_TIMEOUT, self.process.kill)
        self.watchdog.daemon = True
        self.watchdog.start()

    def __enter__(self) -> Self:
        self.pid = int(self.expect("ready")[0])
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.watchdog.cancel()
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(SCENARIO_TIMEOUT)
        for pipe in (self.process.stdin, self.process.stdout):
            if pipe is not None:
                pipe.close()

    def line(self) -> str:
        assert self.process.stdout is not None
        return self.process.stdout.readline()

    def send(self, command: str) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(f"{command}\n")
        self.process.stdin.flush()

    def expect(self, word: str) -> list[str]:
        """The words after ``word`` on the next output line, which must start with it."""
        line = self.line()
        assert line.split()[:1] == [word], (line, self.stderr_path.read_text())
        return line.split()[1:]

    def run(self, command: str) -> list[str]:
        """Send ``command``; returns the words of its answer."""
        self.send(command)
        return self.expect(command)

    def fork(self) -> tuple[dict[str, list[str]], str]:
        """Fork a child; returns what each use of the inherited object did, and its exit."""
        self.send("fork")
        line = self.line()
        assert line.startswith("child "), (line, self.stderr_path.read_text())
        (exited,) = self.expect("exited")
        return json.loads(line.removeprefix("child ")), exited

    def finish(self) -> None:
        """End the scenario (stdin closed) and check that it exited cleanly."""
        assert self.process.stdin is not None
        self.process.stdin.close()
        self.process.wait(SCENARIO_TIMEOUT)
        errors = self.stderr_path.read_text()
        assert self.process.returncode == 0, errors
        assert "Traceback" not in errors, errors


def files(root: Path) -> dict[str, bytes]:
    """Every file under ``root``, by relative path, as bytes."""
    return {
        p.relative_to(root).as_posix(): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def test_a_forked_child_gets_store_forked_from_every_inherited_handle_and_exits_at_once(tmp_path):
    with Scenario(tmp_path, "store", tmp_path / "store") as scenario:
        uses, exited = scenario.fork()
        scenario.run("close")
        scenario.finish()
    assert {use: kind for use, (kind, _) in uses.items()} == dict.fromkeys(
        STORE_USES, "StoreForked"
    )
    fragment = f"belongs to process {scenario.pid}"
    assert [use for use, (_, message) in uses.items() if fragment not in message] == []
    assert exited == "0"  # not "hung": nothing in the child waits for the parent's actors


@pytest.mark.parametrize("leave", ["exit", "close"], ids=["child-exits", "child-closes-store"])
def test_a_forked_child_leaves_the_parent_store_locked_and_its_files_untouched(tmp_path, leave):
    path = tmp_path / "store"
    with Scenario(tmp_path, "store", path, leave) as scenario:
        before = files(path)
        uses, exited = scenario.fork()
        after = files(path)
        with pytest.raises(StoreLocked) as raised:
            Store.open(path).close()
        scenario.run("close")
        scenario.finish()
    assert exited == "0"
    if leave == "close":
        assert uses["close"] == ["returned", "None"]  # a no-op in the child
    assert raised.value.pid == scenario.pid
    assert after == before


def test_a_third_process_cannot_drop_a_keyspace_the_parent_writes_after_a_forked_child_exits(
    tmp_path,
):
    path = tmp_path / "store"
    with Scenario(tmp_path, "store", path) as scenario:
        _, exited = scenario.fork()
        try:
            with Store.open(path) as third:
                third.drop_keyspace("data")
        except StoreLocked as exc:
            dropped = f"refused: locked by {exc.pid}"
        else:
            dropped = "dropped"
        acknowledged = scenario.run("put")  # the put's seq and the counter's new value
        scenario.run("close")
        scenario.finish()
    with Store.open(path) as reopened:
        data = dict(reopened.keyspace("data").items())
    assert (exited, dropped) == ("0", f"refused: locked by {scenario.pid}")
    assert acknowledged == ["3", "3"]
    assert data == {"a": "one", "b": "two", "after": "the fork"}
    assert reopened_value(path) == 3


def test_a_directory_lock_released_in_a_forked_child_stays_with_its_owner(tmp_path):
    folder = tmp_path / "locked"
    folder.mkdir()
    with Scenario(tmp_path, "lock", folder) as scenario:
        uses, exited = scenario.fork()
        with pytest.raises(StoreLocked) as raised:
            DirectoryLock.acquire(folder).release()
        scenario.run("release")
        DirectoryLock.acquire(folder).release()
        scenario.finish()
    assert (uses, exited) == ({"release": ["returned", "None"]}, "0")
    assert raised.value.pid == scenario.pid


def test_a_forked_child_cannot_append_to_read_or_sync_an_inherited_log(tmp_path):
    folder = tmp_path / "log"
    with Scenario(tmp_path, "log", folder) as scenario:
        before = files(folder)
        uses, exited = scenario.fork()
        after = files(folder)
        with pytest.raises(StoreLocked) as raised:
            SegmentedLog.open(folder).close()
        acknowledged = scenario.run("append")
        scenario.run("close")
        scenario.finish()
    assert exited == "0"
    assert {use: kind for use, (kind, _) in uses.items()} == {
        "append": "StoreForked",
        "read": "StoreForked",
        "sync": "StoreForked",
        "close": "returned",
        "closed": "returned",
    }
    assert f"belongs to process {scenario.pid}" in uses["append"][1]
    assert uses["closed"] == ["returned", "True"]  # marked closed in the child only
    assert after == before
    assert raised.value.pid == scenario.pid
    assert acknowledged == ["3"]
    with SegmentedLog.open(folder) as log:
        assert list(log.read()) == [(1, b"one"), (2, b"two"), (3, b"three")]


def test_drop_keyspace_refuses_a_keyspace_whose_log_is_open_elsewhere_and_deletes_nothing(
    tmp_path,
):
    path = tmp_path / "store"
    with Store.open(path) as store:
        store.keyspace("data").put("a", "one")
    folder = path / "keyspaces" / "data"
    with Store.open(path) as store, SegmentedLog.open(folder) as holder:
        before = files(folder)
        with pytest.raises(StoreLocked) as raised:
            store.drop_keyspace("data")
        assert store.keyspaces() == ["data"]
        assert files(folder) == before
        assert holder.last_seq == 1
    assert raised.value.path == folder
    assert raised.value.pid == os.getpid()
    with Store.open(path) as store:
        assert dict(store.keyspace("data").items()) == {"a": "one"}
