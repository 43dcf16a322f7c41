"""The directory lock: one open handle per log, across threads and processes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest

from storage import SegmentedLog, StoreLocked

CHILD = """
import os, sys
from storage import SegmentedLog, StoreLocked
try:
    log = SegmentedLog.open(sys.argv[1])
except StoreLocked as exc:
    print("locked", exc.pid, flush=True)
else:
    log.append(b"from the child")
    print("opened", os.getpid(), flush=True)
    if sys.argv[2] == "hold":
        sys.stdin.read()
    log.close()
"""


def run_child(path, mode="release"):
    return subprocess.run(
        [sys.executable, "-c", CHILD, str(path), mode],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout.split()


def test_second_open_in_the_same_process_raises_store_locked_with_our_pid(tmp_path):
    with SegmentedLog.open(tmp_path) as log:
        with pytest.raises(StoreLocked) as raised:
            SegmentedLog.open(tmp_path)
        assert raised.value.pid == os.getpid()
        assert raised.value.path == tmp_path
        assert str(os.getpid()) in str(raised.value)
        assert log.append(b"still mine") == 1


def test_lock_file_holds_the_owner_pid(tmp_path):
    with SegmentedLog.open(tmp_path):
        assert (tmp_path / "LOCK").read_text().strip() == str(os.getpid())


def test_open_from_another_process_raises_store_locked_naming_our_pid(tmp_path):
    with SegmentedLog.open(tmp_path) as log:
        assert run_child(tmp_path) == ["locked", str(os.getpid())]
        assert log.last_seq == 0


def test_after_close_the_lock_is_free_for_this_process(tmp_path):
    log = SegmentedLog.open(tmp_path)
    log.append(b"one")
    log.close()
    with SegmentedLog.open(tmp_path) as again:
        assert again.last_seq == 1


def test_after_close_the_lock_is_free_for_another_process(tmp_path):
    with SegmentedLog.open(tmp_path) as log:
        log.append(b"one")
    outcome = run_child(tmp_path)
    assert outcome[0] == "opened"
    assert outcome[1] != str(os.getpid())
    with SegmentedLog.open(tmp_path) as log:
        assert list(log.read()) == [(1, b"one"), (2, b"from the child")]


def test_the_lock_of_a_child_killed_with_sigkill_is_dropped_by_the_kernel(tmp_path):
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(tmp_path), "hold"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout is not None
        assert child.stdout.readline().split() == ["opened", str(child.pid)]
        with pytest.raises(StoreLocked) as raised:
            SegmentedLog.open(tmp_path)
        assert raised.value.pid == child.pid
    finally:
        child.send_signal(signal.SIGKILL)
        child.communicate(timeout=120)
    assert child.returncode == -signal.SIGKILL
    # The stale LOCK file still names the dead child, yet it does not block the restart.
    assert (tmp_path / "LOCK").read_text().strip() == str(child.pid)
    with SegmentedLog.open(tmp_path) as log:
        assert list(log.read()) == [(1, b"from the child")]
        assert (tmp_path / "LOCK").read_text().strip() == str(os.getpid())


def test_a_failed_second_open_does_not_release_the_first_handle_lock(tmp_path):
    with SegmentedLog.open(tmp_path):
        for _ in range(3):
            with pytest.raises(StoreLocked):
                SegmentedLog.open(tmp_path)
        assert run_child(tmp_path) == ["locked", str(os.getpid())]
