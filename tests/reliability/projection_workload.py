"""Child program of the kill -9 projection test: writers feed a projection until SIGKILL.

Run as ``python projection_workload.py STORE_DIR ROUND WRITERS FSYNC SOURCES RETAIN KIND``
with the repository root on ``PYTHONPATH``:

- ``FSYNC``: the store's ``fsync`` policy (``always`` or ``interval``);
- ``SOURCES``: ``1`` (everything in ``orders``) or ``2`` (batches go to ``refunds``);
- ``RETAIN``: ``keep`` (default options, the whole history stays) or ``drop``
  (:data:`CHURN`: ``retention=0`` and a tiny recovery budget, so the sources and the
  projection snapshot themselves every few records and drop the segments below);
- ``KIND``: ``live`` (the projection runs while the writers write, until the kill) or
  ``catchup`` (each writer first runs :data:`BACKLOG_OPS` operations with no projection
  running, then the projection starts, :data:`SLOW_PROJECT` seconds per change, behind by
  all of them, and the parent kills it while it catches up).

Each writer ``w`` owns the keys that contain ``w{w}:`` and runs operations
``i = 0, 1, 2, ...`` one after another; the same writer of the next round goes on with the
same keys. Operation ``i`` is :func:`op_kind` ``(i)``, with ``k = (i // 4) % KEYS`` and
``a = amount(round, i)`` (unique per writer, so the parent can tell which write landed):

- ``put``: ``orders[f"w{w}:k{k}"] = a``;
- ``batch``: one record in the batch source: put ``w{w}:b{k}:0 = a``, put
  ``w{w}:b{k}:1 = a + 1``, put ``w{w}:b{k}:0 = a + 2``, delete ``w{w}:b{k}:1``;
- ``overwrite``: ``orders[f"w{w}:k{k}"] = a`` again (over the ``put`` of this cycle);
- ``delete``: delete ``orders[f"w{w}:k{k}"]`` (present: the ``overwrite`` put it).

Every operation writes exactly one record and makes a change visible in the writer's
keys, so the parent can tell from the reopened store whether the one in flight landed.
:func:`apply_op` is the model of one operation: the source keys it leaves and the changes
it makes, for the parent to check both the sources and the projection against.

Output, one flushed line each: ``ready``; ``issued W I`` before an operation is sent and
``ack W I`` once it is acknowledged; in ``catchup`` rounds also ``target SOURCE SEQ`` (each
source's last seq once the backlog is written) and ``progress SOURCE SEQ`` whenever the
projection's position in a source moves, then ``caught up`` when it reached every target.
"""

from __future__ import annotations

import sys
import threading
import time
from typing import Any, ClassVar

import msgspec

from actors import Change, Projection, Store

KINDS = ("put", "batch", "overwrite", "delete")
KEYS = 3  # few keys per writer: each is put, deleted and put again, within and across rounds
BATCH_CHANGES = 4
CHURN: dict[str, Any] = {"segment_bytes": 4096, "recovery_budget": 0.00001, "retention": 0}
"""Options of ``drop`` stores: a snapshot every ~3 records, and the segments below dropped."""
BACKLOG_OPS = 600  # per writer in a catchup round: 4 writers -> 4,200 changes, ~9 feeds
SLOW_PROJECT = 0.0002  # seconds per change in a catchup round: ~0.1 s per feed of 500
TIMEOUT = 60.0
NAME = "totals"

Sources = dict[str, dict[str, int]]
"""Source key space -> key -> value: the writers' keys as the model says they are."""
Totals = dict[str, list[int]]
"""``"source|key"`` -> ``[puts, sum of the amounts put, deletes]``, and ``"source|"`` ->
``[changes, last seq, changes seen out of order]``: the projection's state."""


def options(retain: str) -> dict[str, Any]:
    """What both the child and the parent open a store with, beside ``fsync``."""
    return dict(CHURN) if retain == "drop" else {}


def source_names(sources: int) -> tuple[str, ...]:
    return ("orders", "refunds")[:sources]


def op_kind(index: int) -> str:
    """Which kind of operation a writer's ``index``-th operation is."""
    return KINDS[index % len(KINDS)]


def amount(round_number: int, index: int) -> int:
    """What operation ``index`` of a round puts (distinct for every op of a writer)."""
    return round_number * 100_000 + index * 10 + 1


ChangeSpec = tuple[str, str, int | None]
"""``(op, key, value)``: one change an operation makes."""


def op_changes(
    round_number: int, writer: int, index: int, sources: int
) -> tuple[str, list[ChangeSpec]]:
    """The source operation ``index`` writes to and its changes ``(op, key, value)``."""
    stem, k, a = f"w{writer}:", (index // len(KINDS)) % KEYS, amount(round_number, index)
    kind = op_kind(index)
    if kind in ("put", "overwrite"):
        return "orders", [("put", f"{stem}k{k}", a)]
    if kind == "delete":
        return "orders", [("delete", f"{stem}k{k}", None)]
    first, second = f"{stem}b{k}:0", f"{stem}b{k}:1"
    changes = [("put", first, a), ("put", second, a + 1), ("put", first, a + 2)]
    return source_names(sources)[-1], [*changes, ("delete", second, None)]


def fold(totals: Totals, source: str, seq: int, op: str, key: str, value: Any) -> None:
    """Count one change into ``totals``, in place: the projection's and the parent's fold."""
    meta = totals.setdefault(f"{source}|", [0, 0, 0])
    meta[0] += 1
    meta[2] += seq < meta[1]
    meta[1] = max(meta[1], seq)
    entry = totals.setdefault(f"{source}|{key}", [0, 0, 0])
    if op == "put":
        entry[0] += 1
        entry[1] += value
    else:
        entry[2] += 1


def apply_op(
    sources: Sources, totals: Totals, round_number: int, writer: int, index: int, n: int
) -> None:
    """Apply operation ``index`` of ``writer`` to the model of the sources and the totals.

    The totals' seqs are not modelled (the parent checks them from the log): only counts.
    """
    source, changes = op_changes(round_number, writer, index, n)
    space = sources.setdefault(source, {})
    for op, key, value in changes:
        if op == "put":
            space[key] = value
        else:
            del space[key]
        fold(totals, source, 0, op, key, value)


class Seen(msgspec.Struct, tag="seen", frozen=True):
    source: str
    seq: int
    op: str
    key: str
    value: int | None


class TotalsProjection(Projection[dict[str, list[int]]]):
    """Per source and key: puts, the sum of their amounts and deletes; per source: changes,
    the last seq and how many changes came with a lower seq than one before them."""

    delay: ClassVar[float] = 0.0

    def initial_state(self) -> dict[str, list[int]]:
        return {}

    def apply(self, state: dict[str, list[int]], event: Seen) -> dict[str, list[int]]:
        touched = (f"{event.source}|", f"{event.source}|{event.key}")
        new = {**state, **{name: list(state.get(name, (0, 0, 0))) for name in touched}}
        fold(new, event.source, event.seq, event.op, event.key, event.value)
        return new

    def project(self, source: str, change: Change) -> None:
        if self.delay:
            time.sleep(self.delay)
        self.emit(Seen(source, change.seq, change.op, change.key, change.value))

    def progress(self) -> tuple[dict[str, tuple[int, int]], dict[str, list[int]]]:
        """The positions and the totals, together (as of the last command)."""
        return self.positions(), self.state


class Writer:
    """One writer's operations."""

    def __init__(self, store: Store, round_number: int, writer: int, sources: int) -> None:
        self.store, self.round, self.writer, self.sources = store, round_number, writer, sources

    def run(self, index: int) -> None:
        """Run one operation to its acknowledgment."""
        source, changes = op_changes(self.round, self.writer, index, self.sources)
        keyspace = self.store.keyspace(source)
        if len(changes) == 1:
            op, key, value = changes[0]
            if op == "put":
                keyspace.put(key, value)
            else:
                assert keyspace.delete(key), f"{key} was not there to delete"
            return
        with keyspace.batch() as batch:
            for op, key, value in changes:
                if op == "put":
                    batch.put(key, value)
                else:
                    batch.delete(key)


_printing = threading.Lock()


def say(line: str) -> None:
    """Print one line, whole, flushed (writers print from their own threads)."""
    with _printing:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()


def start_writers(writers: list[Writer], ops: int | None) -> list[threading.Thread]:
    """Each writer runs ``ops`` operations (None: until the kill) in its own thread."""

    def loop(writer: Writer) -> None:
        index = 0
        while ops is None or index < ops:
            say(f"issued {writer.writer} {index}")
            writer.run(index)
            say(f"ack {writer.writer} {index}")
            index += 1

    threads = [threading.Thread(target=loop, args=(w,), daemon=True) for w in writers]
    for thread in threads:
        thread.start()
    return threads


def watch_catchup(handle: Any, targets: dict[str, int]) -> None:
    """Print each move of the projection's positions until it reached ``targets``."""
    last: dict[str, int] = {}
    deadline = time.monotonic() + TIMEOUT
    while time.monotonic() < deadline:
        positions = handle.blocking.positions()
        for source, (seq, _) in sorted(positions.items()):
            if last.get(source) != seq:
                last[source] = seq
                say(f"progress {source} {seq}")
        if all(last.get(source, 0) >= target for source, target in targets.items()):
            say("caught up")
            return
        time.sleep(0.005)


def main(argv: list[str]) -> int:
    path, round_number, count = argv[1], int(argv[2]), int(argv[3])
    fsync, sources, retain, kind = argv[4], int(argv[5]), argv[6], argv[7]
    store = Store.open(path, fsync=fsync, **options(retain))
    names = list(source_names(sources))
    for name in names:
        store.keyspace(name)
    writers = [Writer(store, round_number, w, sources) for w in range(count)]
    if kind == "live":
        store.projection(NAME, TotalsProjection, sources=names)
        say("ready")
        start_writers(writers, None)
    else:
        say("ready")
        for thread in start_writers(writers, BACKLOG_OPS):
            thread.join(TIMEOUT)
        for name in names:
            say(f"target {name} {store.keyspace(name).last_seq}")
        TotalsProjection.delay = SLOW_PROJECT
        handle = store.projection(NAME, TotalsProjection, sources=names)
        watch_catchup(handle, {name: store.keyspace(name).last_seq for name in names})
    threading.Event().wait(TIMEOUT)  # the parent kills us long before this
    return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
