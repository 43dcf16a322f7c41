"""Shared pieces of the key space tests: a fake clock, a store on tmp_path, log snapshots."""

from __future__ import annotations

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
    """A clock that moves only when told to; pass it as ``Store.open(..., clock=clock)``."""

    def __init__(self, now: float = START) -> None:
        self.now = now
        self._lock = threading.Lock()

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> float:
        with self._lock:
            self.now += seconds
            return self.now

    def set(self, now: float) -> None:
        self.now = now


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
