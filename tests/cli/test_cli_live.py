"""The command line as a real program, beside a writer in another process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

TIMEOUT = 60

WRITER = """
import sys, time
from actors import Store
path, count, pause = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
with Store.open(path, fsync="always") as store:
    users = store.keyspace("users")
    for i in range(count):
        users.put(f"u{i:04d}", {"n": i})
        time.sleep(pause)
    print("written", flush=True)
    sys.stdin.readline()  # stays open until told
"""


def actorkv() -> str:
    found = Path(sys.executable).with_name("actorkv")
    if not found.exists():
        pytest.skip("the actorkv script is not installed beside this Python")
    return str(found)


def start_writer(path: Path, count: int, pause: float) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", WRITER, str(path), str(count), str(pause)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).parents[2],
    )


def test_reads_work_while_another_process_has_the_store_open(tmp_path: Path) -> None:
    writer = start_writer(tmp_path / "store", 50, 0)
    try:
        assert writer.stdout is not None
        assert writer.stdout.readline().strip() == "written"
        got = subprocess.run(
            [actorkv(), "get", str(tmp_path / "store"), "users", "u0049", "--json"],
            capture_output=True,
            text=True,
            timeout=TIMEOUT,
            check=True,
        )
        assert json.loads(got.stdout) == {
            "key": "u0049",
            "value": {"n": 49},
            "version": 1,
            "seq": 50,
        }
        inspected = subprocess.run(
            [actorkv(), "inspect", str(tmp_path / "store"), "--json"],
            capture_output=True,
            text=True,
            timeout=TIMEOUT,
            check=True,
        )
        assert json.loads(inspected.stdout)["logs"][0]["last_seq"] == 50
        verified = subprocess.run(
            [actorkv(), "verify", str(tmp_path / "store")],
            capture_output=True,
            timeout=TIMEOUT,
            check=False,
        )
        assert verified.returncode == 0
        assert not verified.stderr  # no progress bar when stderr is not a terminal
    finally:
        writer.communicate("\n", timeout=TIMEOUT)
    assert writer.returncode == 0


def test_tail_follow_prints_every_record_of_a_live_writer_once_in_order(tmp_path: Path) -> None:
    count = 300
    path = tmp_path / "store"
    writer = start_writer(path, count, 0.002)
    tail = None
    try:
        deadline = time.monotonic() + TIMEOUT
        while not (path / "keyspaces" / "users").is_dir() or not any(
            (path / "keyspaces" / "users").glob("*.seg")
        ):
            assert time.monotonic() < deadline
            time.sleep(0.01)
        tail = subprocess.Popen(
            [actorkv(), "tail", str(path), "users", "--from", "1", "-f"],
            stdout=subprocess.PIPE,
            text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        assert tail.stdout is not None
        seen = []
        while len(seen) < count:
            assert time.monotonic() < deadline, f"tail printed {len(seen)} of {count} records"
            line = tail.stdout.readline()
            assert line, "tail -f ended"
            seen.append(json.loads(line))
        assert [record["seq"] for record in seen] == list(range(1, count + 1))
        assert [record["events"][0]["value"]["n"] for record in seen] == list(range(count))
    finally:
        if tail is not None:
            tail.kill()
            tail.wait(TIMEOUT)
        writer.communicate("\n", timeout=TIMEOUT)
    assert writer.returncode == 0
