"""Shared pieces of the key space tests: a fake clock, a store on tmp_path, log snapshots."""

from __future__ import annotations

import mmap
import os
import struct
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from actors import KeySpace, Store

TIMEOUT = 10.0
"""Seconds any wait may take before a test calls it hung (never a timing assertion)."""

START = 1_700_000_000.0
"""The fake clock's first reading (seconds since the epoch)."""


class FakeClock:
    """A clock that moves only when told to; pass it as ``Store.open(..., clock=clock)``.

    Its reading lives in a small shared file, mapped into memory: a copy of the clock in
    another process (a Ray-hosted key space's) reads the same time as the test advances.
    """

    _READING = struct.Struct("<d")

    def __init__(self, now: float = START) -> None:
        handle, name = tempfile.mkstemp(prefix="actorkv-clock-")
        os.write(handle, self._READING.pack(now))
        os.close(handle)
        self._path = name
        self._map = self._mapped(name)
        self._lock = threading.Lock()

    @staticmethod
    def _mapped(path: str) -> mmap.mmap:
        with Path(path).open("r+b") as file:
            return mmap.mmap(file.fileno(), 8)

    def __call__(self) -> float:
        reading: float = self._READING.unpack_from(self._map)[0]
        return reading

    @property
    def now(self) -> float:
        return self()

    @now.setter
    def now(self, value: float) -> None:
        self._READING.pack_into(self._map, 0, value)

    def advance(self, seconds: float) -> float:
        with self._lock:
            self.now = self.now + seconds
            return self.now

    def set(self, now: float) -> None:
        self.now = now

    def __getstate__(self) -> dict[str, Any]:
        return {"path": self._path}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self._path = state["path"]
        self._map = self._mapped(self._path)
        self._lock = threading.Lock()


@pytest.fixture
def store_path(tmp_path: Path) -> Path:
    return tmp_path / "store"


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def store(store_path: Path, clock: FakeClock) -> Iterator[Store]:
    with Store.open(store_path, clock=clock) as opened:
        yield opened


@pytest.fixture
def ks(store: Store) -> KeySpace:
    return store.keyspace("ks")


def keyspace_dir(store_path: Path, name: str) -> Path:
    return store_path / "keyspaces" / name


def log_bytes(store_path: Path, name: str) -> dict[str, bytes]:
    """Every file of a key space's log directory, by name, as bytes."""
    folder = keyspace_dir(store_path, name)
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


def wait_until(predicate: Callable[[], Any], timeout: float = TIMEOUT) -> bool:
    """Poll ``predicate`` until it is true or ``timeout`` passes; returns its last verdict."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True
