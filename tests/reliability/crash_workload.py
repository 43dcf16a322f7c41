"""Child program of the kill -9 test: durable writers on several key spaces until killed.

Run as ``python crash_workload.py STORE_DIR ROUND WRITERS`` with the repository root on
``PYTHONPATH``. Each writer ``w`` runs operations ``i = 0, 1, 2, ...`` one after another (the
next starts only after the previous is acknowledged), so what survives a crash must be, per
writer, a gap-free prefix of what it issued. Operation ``i`` is :func:`op_kind` ``(i)``:

- ``put``: ``ks{(i // 5) % 3}[f"r{round}:w{w}:{i}"] = i``;
- ``batch``: in ``batches``, put ``...:{i}:a`` and ``...:{i}:b`` (both ``i``) and delete the
  ``:b`` of this writer's previous batch, atomically;
- ``cas``: in ``cas``, ``put(f"r{round}:w{w}", n, expect_version=n - 1)`` for its n-th cas;
- ``shared``: in ``shared``, a contended compare-and-set of ``s0`` or ``s1`` (value
  ``{"v": new_version, "op": name}``) batched with ``log:{key}:{new_version} = name``,
  retried on VersionConflict;
- ``journal``: the custom :class:`Journal` actor records ``(round, w, i)``.

Output, one flushed line each: ``ready`` once everything is open, ``issued W I`` before an
operation is sent, ``ack W I`` once it is acknowledged (durable under fsync="always").
"""

from __future__ import annotations

import sys
import threading
from typing import Any

import msgspec

from actors import EventSourcedActor, Store, VersionConflict

KINDS = ("put", "batch", "cas", "shared", "journal")
PLAIN_KEYSPACES = ("ks0", "ks1", "ks2")
SHARED_KEYS = ("s0", "s1")
SEGMENT_BYTES = 4096  # small: rolls happen during the run, and so do crashes in them
TIMEOUT = 60.0


def op_kind(index: int) -> str:
    """Which kind of operation a writer's ``index``-th operation is."""
    return KINDS[index % len(KINDS)]


def op_name(round_number: int, writer: int, index: int) -> str:
    """The key (or key stem) an operation writes: ``r{round}:w{writer}:{index}``."""
    return f"r{round_number}:w{writer}:{index}"


def plain_keyspace(index: int) -> str:
    """The key space a ``put`` operation writes to."""
    return PLAIN_KEYSPACES[(index // len(KINDS)) % len(PLAIN_KEYSPACES)]


def shared_key(writer: int, index: int) -> str:
    """The contended key a ``shared`` operation compares-and-sets."""
    return SHARED_KEYS[(writer + index // len(KINDS)) % len(SHARED_KEYS)]


def ordinal(index: int) -> int:
    """1 for a writer's first operation of a kind, 2 for its second, ..."""
    return index // len(KINDS) + 1


class Recorded(msgspec.Struct, tag=True, frozen=True):
    round: int
    writer: int
    index: int


class Journal(EventSourcedActor[dict[str, tuple[int, int]]]):
    """Per ``"round:writer"``: how many records, and the index of the last one."""

    def initial_state(self) -> dict[str, tuple[int, int]]:
        return {}

    def apply(self, state: dict[str, tuple[int, int]], event: Recorded) -> dict[str, Any]:
        slot = f"{event.round}:{event.writer}"
        count, _ = state.get(slot, (0, -1))
        return {**state, slot: (count + 1, event.index)}

    def record(self, round_number: int, writer: int, index: int) -> int:
        self.emit(Recorded(round_number, writer, index))
        return self.state[f"{round_number}:{writer}"][0]

    def progress(self) -> dict[str, tuple[int, int]]:
        return self.state


def run_op(store: Store, journal: Any, round_number: int, writer: int, index: int) -> None:
    """Run one operation to its acknowledgment."""
    name = op_name(round_number, writer, index)
    kind = op_kind(index)
    if kind == "put":
        store.keyspace(plain_keyspace(index)).put(name, index)
    elif kind == "batch":
        with store.keyspace("batches").batch() as batch:
            batch.put(f"{name}:a", index)
            batch.put(f"{name}:b", index)
            if index >= len(KINDS):
                batch.delete(f"{op_name(round_number, writer, index - len(KINDS))}:b")
    elif kind == "cas":
        n = ordinal(index)
        store.keyspace("cas").put(f"r{round_number}:w{writer}", n, expect_version=n - 1)
    elif kind == "shared":
        shared = store.keyspace("shared")
        key = shared_key(writer, index)
        while True:
            entry = shared.get_entry(key)
            version = 0 if entry is None else entry.version
            try:
                with shared.batch() as batch:
                    batch.put(key, {"v": version + 1, "op": name}, expect_version=version)
                    batch.put(f"log:{key}:{version + 1}", name)
            except VersionConflict:
                continue
            break
    else:
        journal.record(round_number, writer, index).get(timeout=TIMEOUT)


def main(argv: list[str]) -> int:
    path, round_number, writers = argv[1], int(argv[2]), int(argv[3])
    store = Store.open(path, fsync="always", segment_bytes=SEGMENT_BYTES)
    journal = store.spawn("journal", Journal)
    for name in (*PLAIN_KEYSPACES, "batches", "cas", "shared"):
        store.keyspace(name)
    printing = threading.Lock()

    def say(line: str) -> None:
        with printing:
            sys.stdout.write(line + "\n")
            sys.stdout.flush()

    def writer_loop(writer: int) -> None:
        index = 0
        while True:
            say(f"issued {writer} {index}")
            run_op(store, journal, round_number, writer, index)
            say(f"ack {writer} {index}")
            index += 1

    threads = [threading.Thread(target=writer_loop, args=(w,), daemon=True) for w in range(writers)]
    say("ready")
    for thread in threads:
        thread.start()
    threading.Event().wait(TIMEOUT)  # the parent kills us long before this
    return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
