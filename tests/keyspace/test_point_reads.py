"""Point reads never go back in time: a reader that saw one write of a group sees all of it.

A commit publishes a group key by key, in the order the batch wrote them, while readers read
without a round trip to the actor. So each reader here reads a batch's first key and then
its last key: if the first already shows batch n, the last must show batch n too (or a later
one), never an older value, and a key the batch created must exist.

Two things make the readers land in the middle of a publication, on a quiet machine and a
loaded one alike:

* the actor thread is traced (``threading.settrace``), and every step a commit takes
  (each call ``KVState.commit`` makes, such as storing one key) sleeps 0.1 ms first, so
  other threads run between two keys of a group while the commit holds the state's lock;
* the switch interval is cut to a microsecond while the threads race.

The state is filled with other keys first, so that each batch is well under a tenth of it:
such a group is published one key at a time (a larger one is merged in bulk).
"""

from __future__ import annotations

import contextlib
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import FrameType
from typing import Any

import pytest

from actors import KeySpace, Store
from storage.kvstate import KVState
from tests.keyspace.conftest import TIMEOUT

pytestmark = pytest.mark.usefixtures("runtime")

BATCH_KEYS = 20
"""Keys written by each batch."""

FILLER_KEYS = 400
"""Other keys, so that a batch is under a tenth of the state (published key by key)."""

BATCHES = 20

KEYS = [f"key-{i:02d}" for i in range(BATCH_KEYS)]

_COMMIT = KVState.commit.__code__


def _pause_between_publication_steps(frame: FrameType, event: str, _arg: Any) -> None:
    """Trace function: sleep before each call made by ``KVState.commit`` (other threads run)."""
    caller = frame.f_back
    if event == "call" and caller is not None and caller.f_code is _COMMIT:
        time.sleep(1e-4)


@contextlib.contextmanager
def threads_switch_often() -> Iterator[None]:
    """Make the interpreter switch threads every microsecond (the default is 5 ms)."""
    before = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        yield
    finally:
        sys.setswitchinterval(before)


@pytest.fixture
def ks(tmp_path: Path) -> Iterator[KeySpace]:
    """A key space of FILLER_KEYS keys whose actor pauses between publication steps."""
    # fsync="never": the race is in publishing, and more batches a second make more of it.
    with Store.open(tmp_path / "store", fsync="never") as store:
        threading.settrace(_pause_between_publication_steps)  # for the actor's thread
        try:
            keyspace = store.keyspace("ks")
            with keyspace.batch() as batch:  # a round trip: the actor thread is running
                for i in range(FILLER_KEYS):
                    batch.put(f"filler-{i:03d}", i)
        finally:
            threading.settrace(None)  # type: ignore[arg-type]  # readers start untraced
        yield keyspace


def race(readers: list[Callable[[threading.Event], None]], write: Callable[[], None]) -> None:
    """Run every reader in its own thread while ``write`` runs here; re-raise their errors."""
    done = threading.Event()
    errors: list[BaseException] = []

    def guarded(reader: Callable[[threading.Event], None]) -> None:
        try:
            reader(done)
        except BaseException as exc:  # handed to the test thread
            errors.append(exc)

    threads = [threading.Thread(target=guarded, args=(reader,)) for reader in readers]
    with threads_switch_often():
        for thread in threads:
            thread.start()
        try:
            write()
        finally:
            done.set()
            for thread in threads:
                thread.join(TIMEOUT)
    assert not any(thread.is_alive() for thread in threads), "a reader hung"
    if errors:
        raise errors[0]


READ_VALUE: dict[str, Callable[[KeySpace, str], int]] = {
    "get": lambda ks, key: ks.get(key),
    "get_entry": lambda ks, key: ks.get_entry(key).value,
}


def test_a_reader_that_saw_a_batch_in_its_first_key_sees_it_in_its_last(ks: KeySpace):
    with ks.batch() as batch:
        for key in KEYS:
            batch.put(key, 0)
    went_back: dict[str, list[tuple[int, int]]] = {how: [] for how in READ_VALUE}
    reads = dict.fromkeys(READ_VALUE, 0)

    def reader_of_last_key_by(how: str) -> Callable[[threading.Event], None]:
        read = READ_VALUE[how]

        def reader(done: threading.Event) -> None:
            first_key, last_key = KEYS[0], KEYS[-1]
            while not done.is_set():
                first = ks.get(first_key)
                last = read(ks, last_key)
                reads[how] += 1
                if last < first:
                    went_back[how].append((first, last))

        return reader

    def write() -> None:
        for n in range(1, BATCHES + 1):
            with ks.batch() as batch:
                for key in KEYS:
                    batch.put(key, n)

    race([reader_of_last_key_by(how) for how in READ_VALUE], write)

    assert all(reads.values()), f"a reader never ran: {reads}"
    assert went_back == {how: [] for how in READ_VALUE}, (
        f"reads of the first key of a batch, then of an older last key (first, last), "
        f"out of {reads} reads: { {how: pairs[:3] for how, pairs in went_back.items()} }"
    )
    assert [ks[key] for key in KEYS] == [BATCHES] * BATCH_KEYS


CHECK_EXISTS: dict[str, Callable[[KeySpace, str], bool]] = {
    "get": lambda ks, key: ks.get(key) is not None,
    "get_entry": lambda ks, key: ks.get_entry(key) is not None,
    "in": lambda ks, key: key in ks,
}


def created_key(batch: int, index: int) -> str:
    return f"new-{batch:03d}-{index:02d}"


def test_a_reader_that_saw_a_key_created_by_a_batch_sees_every_key_it_created(ks: KeySpace):
    writing = [1]  # the batch being written, so that readers watch the newest one
    missing: dict[str, list[int]] = {how: [] for how in CHECK_EXISTS}
    watched = dict.fromkeys(CHECK_EXISTS, 0)

    def reader_of_last_key_by(how: str) -> Callable[[threading.Event], None]:
        exists = CHECK_EXISTS[how]

        def reader(done: threading.Event) -> None:
            batch = 1
            while not done.is_set():
                if ks.get(created_key(batch, 0)) is None:
                    continue
                if not exists(ks, created_key(batch, BATCH_KEYS - 1)):
                    missing[how].append(batch)
                watched[how] += 1
                batch = max(batch + 1, writing[0])

        return reader

    written = [0]

    def write() -> None:
        # At least BATCHES; more (bounded) until every reader has watched one: on a loaded
        # machine a reader thread may not run at all while the first few are written.
        while written[0] < BATCHES or (not all(watched.values()) and written[0] < BATCHES * 50):
            n = written[0] = written[0] + 1
            writing[0] = n
            with ks.batch() as batch:
                for i in range(BATCH_KEYS):
                    batch.put(created_key(n, i), n)

    race([reader_of_last_key_by(how) for how in CHECK_EXISTS], write)

    assert all(watched.values()), f"a reader never saw a batch: {watched}"
    assert missing == {how: [] for how in CHECK_EXISTS}, (
        f"batches whose first key a reader saw and then found their last key missing, "
        f"out of {watched} watched: { {how: batches[:5] for how, batches in missing.items()} }"
    )
    assert len(ks) == FILLER_KEYS + written[0] * BATCH_KEYS
