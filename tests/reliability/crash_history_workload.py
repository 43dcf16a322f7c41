"""Child program of the kill -9 history test: durable writers while snapshots churn.

Run as ``python crash_history_workload.py STORE_DIR ROUND WRITERS`` with the repository root
on ``PYTHONPATH``. The store is opened with a tiny recovery budget and ``retention=0``
(:data:`OPTIONS`), so every key space and the custom :class:`Counter` snapshot themselves
every few records, on their background threads, and drop the segments below each snapshot:
the kill lands in the middle of snapshot writes, manifest updates and segment deletions.

Each writer ``w`` owns the keys that start with ``w{w}:`` and runs operations
``i = 0, 1, 2, ...`` one after another (the next starts only once the previous one is
acknowledged). The same writer of the next round (same store) goes on with the same keys,
so values are overwritten, deleted and written again across rounds and versions climb
across snapshots. Operation ``i`` is :func:`op_kind` ``(i)``, with ``j = i // 5``:

- ``put``: ``plain[f"w{w}:p{j % KEYS}"] = [round, i]``;
- ``batch``: in ``batches``, atomically: put ``w{w}:x`` and ``w{w}:y{j % KEYS}`` (both
  ``[round, i]``) and delete ``w{w}:y{(j - 1) % KEYS}``;
- ``delete``: delete ``plain[f"w{w}:p{(j + 2) % KEYS}"]`` (no write if it is missing);
- ``cas``: ``plain.put(f"w{w}:c", [round, i], expect_version=v)``, ``v`` the version the
  writer last saw (read once at start, then from each receipt): a conflict is a bug;
- ``count``: the :class:`Counter` actor adds ``i + 1`` to slot ``w{w}``.

:func:`apply_op` is the model of one operation, for the parent to check against.

Output, one flushed line each: ``ready`` once everything is open, ``issued W I`` before an
operation is sent, ``ack W I`` once it is acknowledged (durable under fsync="always").

``python crash_history_workload.py STORE_DIR ROUND WRITERS --die-at POINT LOG`` instead
runs :data:`OPS_BEFORE_DYING` operations per writer (a snapshot of every log halfway, so
one is listed already), then snapshots ``LOG`` (``plain`` or ``counter``) and SIGKILLs
itself on the snapshot's thread just before the step :data:`DIE_AT` names.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec

from actors import EventSourcedActor, Store
from storage import _fileio
from storage._format import MANIFEST_FILE, SEGMENT_SUFFIX, TMP_SUFFIX
from storage.snapshot import SNAPSHOT_SUFFIX

KINDS = ("put", "batch", "delete", "cas", "count")
KEYS = 4  # few keys per writer: each is overwritten often, so replay differs from the state
KEYSPACES = ("plain", "batches")
SEGMENT_BYTES = 8192
RECOVERY_BUDGET = 0.00001  # x the assumed ~300,000 records/s: a snapshot every 3 records
OPTIONS: dict[str, Any] = {
    "segment_bytes": SEGMENT_BYTES,
    "recovery_budget": RECOVERY_BUDGET,
    "retention": 0,
}
"""What both the child and the parent open the store with."""
TIMEOUT = 60.0

Model = dict[str, dict[str, tuple[Any, int]]]
"""Key space (or ``"counter"``) -> key (or slot) -> ``(value, version)``; a counter slot's
value is ``(count, total, last index)`` and its version is its count."""


def op_kind(index: int) -> str:
    """Which kind of operation a writer's ``index``-th operation is."""
    return KINDS[index % len(KINDS)]


def writer_prefix(writer: int) -> str:
    """What every key of a writer starts with (and its counter slot's name)."""
    return f"w{writer}:"


def apply_op(model: Model, round_number: int, writer: int, index: int) -> None:
    """Apply operation ``index`` of ``writer`` in ``round_number`` to ``model``, in place."""
    stem, j, value = writer_prefix(writer), index // len(KINDS), [round_number, index]
    plain, batches = model.setdefault("plain", {}), model.setdefault("batches", {})

    def put(space: dict[str, tuple[Any, int]], key: str) -> None:
        previous = space.get(key)
        space[key] = (value, 1 if previous is None else previous[1] + 1)

    kind = op_kind(index)
    if kind == "put":
        put(plain, f"{stem}p{j % KEYS}")
    elif kind == "batch":
        put(batches, f"{stem}x")
        put(batches, f"{stem}y{j % KEYS}")
        batches.pop(f"{stem}y{(j - 1) % KEYS}", None)
    elif kind == "delete":
        plain.pop(f"{stem}p{(j + 2) % KEYS}", None)
    elif kind == "cas":
        put(plain, f"{stem}c")
    else:
        counter = model.setdefault("counter", {})
        (count, total, _), _ = counter.get(stem, ((0, 0, -1), 0))
        counter[stem] = ((count + 1, total + index + 1, index), count + 1)


class Tally:
    """Per slot ``(count, total, last index)``: a plain class msgspec cannot encode, so the
    counter snapshots it through ``snapshot_state`` / ``restore_state``."""

    __slots__ = ("slots",)

    def __init__(self, slots: dict[str, tuple[int, int, int]]) -> None:
        self.slots = slots


class Added(msgspec.Struct, tag=True, frozen=True):
    slot: str
    index: int
    amount: int


class Counter(EventSourcedActor[Tally]):
    """Sums per slot; its snapshots churn like the key spaces' (the store's budget)."""

    def initial_state(self) -> Tally:
        return Tally({})

    def apply(self, state: Tally, event: Added) -> Tally:
        count, total, _ = state.slots.get(event.slot, (0, 0, -1))
        return Tally({**state.slots, event.slot: (count + 1, total + event.amount, event.index)})

    def snapshot_state(self, state: Tally) -> dict[str, tuple[int, int, int]]:
        return state.slots

    def restore_state(self, data: dict[str, list[int]]) -> Tally:
        return Tally({slot: (count, total, last) for slot, (count, total, last) in data.items()})

    def add(self, slot: str, index: int, amount: int) -> int:
        self.emit(Added(slot, index, amount))
        return self.state.slots[slot][0]

    def progress(self) -> dict[str, tuple[int, int, int]]:
        return self.state.slots


class Writer:
    """One writer thread's operations (it remembers the version its cas expects)."""

    def __init__(self, store: Store, counter: Any, round_number: int, writer: int) -> None:
        self.store, self.counter = store, counter
        self.round, self.writer, self.stem = round_number, writer, writer_prefix(writer)
        entry = store.keyspace("plain").get_entry(f"{self.stem}c")
        self.cas_version = 0 if entry is None else entry.version

    def run(self, index: int) -> None:
        """Run one operation to its acknowledgment."""
        stem, j, value = self.stem, index // len(KINDS), [self.round, index]
        kind = op_kind(index)
        plain = self.store.keyspace("plain")
        if kind == "put":
            plain.put(f"{stem}p{j % KEYS}", value)
        elif kind == "batch":
            with self.store.keyspace("batches").batch() as batch:
                batch.put(f"{stem}x", value)
                batch.put(f"{stem}y{j % KEYS}", value)
                batch.delete(f"{stem}y{(j - 1) % KEYS}")
        elif kind == "delete":
            plain.delete(f"{stem}p{(j + 2) % KEYS}")
        elif kind == "cas":
            receipt = plain.put(f"{stem}c", value, expect_version=self.cas_version)
            self.cas_version = receipt.version
        else:
            self.counter.add(stem, index, index + 1).get(timeout=TIMEOUT)


def _fd_name(fd: int) -> str:
    return Path(f"/proc/self/fd/{fd}").readlink().name


DIE_AT: dict[str, tuple[str, Callable[..., bool]]] = {
    "snapshot fsync": ("fsync", lambda fd: _fd_name(fd).endswith(SNAPSHOT_SUFFIX + TMP_SUFFIX)),
    "snapshot rename": ("rename", lambda src, dst: dst.name.endswith(SNAPSHOT_SUFFIX)),
    "manifest rename": ("rename", lambda src, dst: dst.name == MANIFEST_FILE),
    "second segment deletion": ("remove", lambda path: path.name.endswith(SEGMENT_SUFFIX)),
}
"""Where ``--die-at`` dies: the ``_fileio`` operation, and which of its calls (the second
matching one for the segment deletion, so that one segment is gone already)."""
OPS_BEFORE_DYING = 200


def die_at(point: str, thread: str) -> None:
    """SIGKILL this process on ``thread`` just before the step named ``point``."""
    operation, matches = DIE_AT[point]
    original = getattr(_fileio, operation)
    seen = [0]
    needed = 2 if point == "second segment deletion" else 1

    def deadly(*args: Any) -> Any:
        if threading.current_thread().name == thread and matches(*args):
            seen[0] += 1
            if seen[0] == needed:
                os.kill(os.getpid(), signal.SIGKILL)
        return original(*args)

    setattr(_fileio, operation, deadly)


_printing = threading.Lock()


def say(line: str) -> None:
    """Print one line, whole, flushed (writers print from their own threads)."""
    with _printing:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()


def main(argv: list[str]) -> int:
    path, round_number, writers = argv[1], int(argv[2]), int(argv[3])
    if argv[4:5] == ["--die-at"]:
        return main_dying(path, round_number, writers, argv[5], argv[6])
    store = Store.open(path, fsync="always", **OPTIONS)
    counter = store.spawn("counter", Counter)
    for name in KEYSPACES:
        store.keyspace(name)

    def writer_loop(writer: Writer) -> None:
        index = 0
        while True:
            say(f"issued {writer.writer} {index}")
            writer.run(index)
            say(f"ack {writer.writer} {index}")
            index += 1

    loops = [Writer(store, counter, round_number, w) for w in range(writers)]
    threads = [threading.Thread(target=writer_loop, args=(w,), daemon=True) for w in loops]
    say("ready")
    for thread in threads:
        thread.start()
    threading.Event().wait(TIMEOUT)  # the parent kills us long before this
    return 1


def main_dying(path: str, round_number: int, writers: int, point: str, log: str) -> int:
    options = {**OPTIONS, "recovery_budget": None, "segment_bytes": 4096}  # snapshots: ours
    store = Store.open(path, fsync="always", **options)
    counter = store.spawn("counter", Counter)
    loops = [Writer(store, counter, round_number, w) for w in range(writers)]

    def write(first: int, last: int) -> None:
        def run(writer: Writer) -> None:
            for index in range(first, last):
                say(f"issued {writer.writer} {index}")
                writer.run(index)
                say(f"ack {writer.writer} {index}")

        threads = [threading.Thread(target=run, args=(w,)) for w in loops]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(TIMEOUT)

    say("ready")
    write(0, OPS_BEFORE_DYING // 2)
    for name in KEYSPACES:
        store.keyspace(name).snapshot()
    counter.snapshot().get(timeout=TIMEOUT)
    write(OPS_BEFORE_DYING // 2, OPS_BEFORE_DYING)
    die_at(point, f"actorkv-snapshot:{log}")
    if log == "counter":
        counter.snapshot().get(timeout=TIMEOUT)
    else:
        store.keyspace(log).snapshot()
    say("survived")  # the step never came: the parent fails
    return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
