"""Shared pieces of the actor tests: the README's Counter, a store on tmp_path, log readers.

``Counter`` and ``Incremented`` are copied verbatim from the README's custom actor example;
tests that need more commands subclass it.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import msgspec
import pytest

from actors import EventSourcedActor, Store
from actors._events import OPERATION_EXT
from storage import SegmentedLog

TIMEOUT = 10.0
"""Seconds any future may take before a test calls it hung (never a timing assertion)."""


class Incremented(msgspec.Struct, tag=True, frozen=True):
    by: int


class Counter(EventSourcedActor[int]):
    def initial_state(self) -> int:
        return 0

    def apply(self, state: int, event: Incremented) -> int:  # pure fold, live and on replay
        return state + event.by

    def increment(self, by: int) -> int:  # a command
        if by <= 0:
            raise ValueError("by must be positive")  # goes to this caller only
        self.emit(Incremented(by))  # applied now, durable before reply
        return self.state


class ProbeCounter(Counter):
    """The README's counter plus commands that probe the framework's edges."""

    def value(self) -> int:
        return self.state

    def add_each(self, *amounts: int) -> int:
        self.emit(*(Incremented(by) for by in amounts))
        return self.state

    def add_then_fail(self, by: int) -> int:
        self.emit(Incremented(by))
        raise RuntimeError(f"failed after emitting {by}")

    def hold(self, gate: threading.Event) -> None:
        """Block the actor thread until ``gate`` is set, so commands pile up in the inbox."""
        gate.wait(TIMEOUT)


@pytest.fixture
def store_path(tmp_path: Path) -> Path:
    return tmp_path / "store"


@pytest.fixture
def store(store_path: Path):
    with Store.open(store_path) as opened:
        yield opened


def log_dir(store_path: Path, name: str) -> Path:
    return store_path / "actors" / name


def read_records(store_path: Path, name: str) -> list[list[Any]]:
    """Every record of a (closed) actor's log, each decoded as a raw list of event dicts.

    A record written for a caller that may retry (the Ray runtime's) ends with its
    operation id, a MessagePack extension (``actors/_events.py``): left out here.
    """
    with SegmentedLog.open(log_dir(store_path, name)) as log:
        records = [msgspec.msgpack.decode(payload) for _, payload in log.read()]
    return [
        record[:-1]
        if record
        and isinstance(record[-1], msgspec.msgpack.Ext)
        and record[-1].code == OPERATION_EXT
        else record
        for record in records
    ]


def reopened_value(store_path: Path, name: str = "counter", **options: Any) -> int:
    """Open the store again, spawn ``name`` as a ProbeCounter and return its value."""
    with Store.open(store_path, **options) as store:
        return store.spawn(name, ProbeCounter).value().get(timeout=TIMEOUT)
