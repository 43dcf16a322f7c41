"""Child program of the kill -9 subscription test: durable writers and a named subscriber.

Run as ``python subscription_workload.py STORE_DIR ROUND MODE`` with the repository root on
``PYTHONPATH``; ``MODE`` names the store's options in :data:`MODES` (``plain``, or
``churn``: ``retention=0`` and a tiny recovery budget, so the key space snapshots itself
every few records in the background and drops every segment that nothing holds). The
store is opened with ``fsync="always"``.

Writers ``0 .. SYNC_WRITERS - 1`` each run operations ``i = 0, 1, 2, ...`` one after
another on key space ``mail`` (the next starts once the previous is acknowledged);
writer :data:`ASYNC_WRITER` sends bursts of ``put_async`` and then waits for each. Every
key of writer ``w`` starts with ``w{w}:`` and only ``w`` writes it; the same writer of the
next round (same store) goes on with the same keys, so versions climb across rounds and a
delete finds its key there or not. :func:`op_changes` is the model of one operation. Now
and then a writer rests for a few milliseconds, so the subscriber catches up and goes
live; its live queue is bounded at :data:`LIVE_LIMIT` events here, so it falls back to
reading the log whenever it rests itself.

Meanwhile the thread ``mailer`` runs ``ks.subscribe(name="mailer")``: it resumes after the
last acknowledgement that was made durable, reads each change and, when a change of a new
record arrives (so the previous record was read whole), acknowledges the previous record
with probability :data:`ACK_CHANCE` (``ack`` returns once the position file is fsynced);
now and then it rests too, and falls behind.

Output, one flushed line each:

- ``ready START``: everything is open; START is the first seq the subscription delivers;
- ``issued W I`` before writer W sends operation I, ``ack W I SEQ`` once it is durable
  (SEQ is its receipt's seq, 0 when it wrote nothing: a delete of a missing key);
- ``got [seq, time, key, op, value, version]`` for each change the subscription yields;
- ``acking SEQ`` before ``sub.ack(SEQ)``, ``acked SEQ`` once it returned.

``python subscription_workload.py STORE_DIR ROUND MODE --die-at POINT`` runs the same
writers, but the mailer acknowledges every record, and at the first record from seq
:data:`DIE_FROM_SEQ` on it SIGKILLs the process on its own thread just before the step of
writing that acknowledgement's position that :data:`DIE_AT` names.
"""

from __future__ import annotations

import os
import random
import signal
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

import msgspec

from actors import Change, KeySpace, Store
from actors import _subscription as subscription_module
from storage import _fileio
from storage.positions import POSITIONS_DIR

KEYSPACE = "mail"
SUBSCRIBER = "mailer"
SYNC_WRITERS = 3
ASYNC_WRITER = 3
WRITERS = SYNC_WRITERS + 1
KINDS = ("put", "batch", "delete")
KEYS = 3  # few keys per writer: overwritten and deleted often, versions climb and restart
MAX_BURST = 8  # put_async calls in flight at once from the async writer
PAUSE_CHANCE, MAX_PAUSE = 0.1, 0.02  # a writer's rest after an operation: odds, seconds
MAILER_PAUSE_CHANCE = 0.005  # the mailer's rest after a change
ACK_CHANCE = 0.2  # that the mailer acknowledges a record it read whole
LIVE_LIMIT = 64
"""Events the child's subscription queues live before it reads the log instead (10,000
in the engine): small, so that it falls behind and catches up again many times a round."""
MODES: dict[str, dict[str, Any]] = {
    "plain": {"segment_bytes": 8192},
    "churn": {"segment_bytes": 4096, "recovery_budget": 0.00001, "retention": 0},
}
"""The store's options of each mode (the parent reopens with the same)."""
TIMEOUT = 60.0
DIE_FROM_SEQ = 100

State = dict[str, tuple[Any, int]]
"""The model of key space ``mail``: key -> ``(value, version)``."""
Changed = tuple[str, str, Any, int]
"""One change as the model predicts it: ``(key, op, value, version)``."""


def writer_prefix(writer: int) -> str:
    """What every key of ``writer`` starts with."""
    return f"w{writer}:"


def op_kind(writer: int, index: int) -> str:
    """Which kind of operation ``writer``'s ``index``-th operation is."""
    return "put" if writer == ASYNC_WRITER else KINDS[index % len(KINDS)]


def op_changes(state: State, round_number: int, writer: int, index: int) -> list[Changed]:
    """The changes operation ``index`` of ``writer`` makes to ``state`` (applied in place).

    ``[]`` means it writes no record (a delete of a missing key).

    - async writer: put ``w{w}:a{i % KEYS}``;
    - ``put``: put ``w{w}:k{j % KEYS}`` (``j = i // 3``);
    - ``batch``: atomically put ``w{w}:x`` and ``w{w}:b{j % KEYS}``, delete
      ``w{w}:b{(j - 1) % KEYS}`` (skipped if missing);
    - ``delete``: delete ``w{w}:k{(j + 1) % KEYS}`` (no record if missing).

    Every value put is ``[round, i]``.
    """
    stem, j, value = writer_prefix(writer), index // len(KINDS), [round_number, index]
    changes: list[Changed] = []

    def put(key: str) -> None:
        previous = state.get(key)
        version = 1 if previous is None else previous[1] + 1
        state[key] = (value, version)
        changes.append((key, "put", value, version))

    def delete(key: str) -> None:
        if state.pop(key, None) is not None:
            changes.append((key, "delete", None, 0))

    kind = op_kind(writer, index)
    if writer == ASYNC_WRITER:
        put(f"{stem}a{index % KEYS}")
    elif kind == "put":
        put(f"{stem}k{j % KEYS}")
    elif kind == "batch":
        put(f"{stem}x")
        put(f"{stem}b{j % KEYS}")
        delete(f"{stem}b{(j - 1) % KEYS}")
    else:
        delete(f"{stem}k{(j + 1) % KEYS}")
    return changes


def run_op(ks: KeySpace, round_number: int, writer: int, index: int) -> int:
    """Run one operation of a synchronous writer to its acknowledgment; its record's seq."""
    stem, j, value = writer_prefix(writer), index // len(KINDS), [round_number, index]
    kind = op_kind(writer, index)
    if kind == "put":
        return ks.put(f"{stem}k{j % KEYS}", value).seq
    if kind == "batch":
        with ks.batch() as batch:
            batch.put(f"{stem}x", value)
            batch.put(f"{stem}b{j % KEYS}", value)
            batch.delete(f"{stem}b{(j - 1) % KEYS}")
        assert batch.receipt is not None  # its puts always write
        return batch.receipt.seq
    receipt = ks.delete(f"{stem}k{(j + 1) % KEYS}")
    return 0 if receipt is None else receipt.seq


_printing = threading.Lock()
_ENCODER = msgspec.json.Encoder()


def say(line: str) -> None:
    """Print one line, whole, flushed (every thread prints)."""
    with _printing:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()


def got_line(change: Change) -> str:
    fields = [change.seq, change.time, change.key, change.op, change.value, change.version]
    return "got " + _ENCODER.encode(fields).decode()


def pause(rng: random.Random) -> None:
    """Now and then let the mailer catch up (and go live), so that it switches often."""
    if rng.random() < PAUSE_CHANCE:
        time.sleep(rng.uniform(0, MAX_PAUSE))


def sync_writer(ks: KeySpace, round_number: int, writer: int) -> None:
    index, rng = 0, random.Random(f"{round_number}:{writer}")
    while True:
        say(f"issued {writer} {index}")
        seq = run_op(ks, round_number, writer, index)
        say(f"ack {writer} {index} {seq}")
        index += 1
        pause(rng)


def async_writer(ks: KeySpace, round_number: int, rng: random.Random) -> None:
    stem, index = writer_prefix(ASYNC_WRITER), 0
    while True:
        burst = []
        for _ in range(rng.randint(1, MAX_BURST)):
            say(f"issued {ASYNC_WRITER} {index}")
            future = ks.put_async(f"{stem}a{index % KEYS}", [round_number, index])
            burst.append((index, future))
            index += 1
        for sent, future in burst:
            say(f"ack {ASYNC_WRITER} {sent} {future.get(timeout=TIMEOUT).seq}")
        pause(rng)


def mailer(
    ks: KeySpace,
    rng: random.Random,
    subscribed: threading.Event,
    dying: tuple[str, int] | None = None,
) -> None:
    """Read and acknowledge (see the module docstring); set ``subscribed`` once subscribed.

    ``dying=(point, seq)``: acknowledge every record, and arm :func:`die_at` ``(point)``
    before acknowledging the first record at ``seq`` or after.
    """
    with ks.subscribe(name=SUBSCRIBER) as sub:
        say(f"ready {sub.acked + 1}")
        subscribed.set()
        reading = None  # the seq of the record being read
        while True:
            change = sub.next(timeout=TIMEOUT)
            assert change is not None, "no change came"
            if reading is not None and change.seq != reading:  # `reading` was read whole
                if dying is not None and reading >= dying[1]:
                    die_at(dying[0])
                if dying is not None or rng.random() < ACK_CHANCE:
                    say(f"acking {reading}")
                    sub.ack(reading)
                    say(f"acked {reading}")
                if dying is not None and reading >= dying[1]:
                    return
            reading = change.seq
            say(got_line(change))
            if rng.random() < MAILER_PAUSE_CHANCE:  # fall behind: the writers go on
                time.sleep(rng.uniform(0, MAX_PAUSE))


DIE_AT: dict[str, tuple[str, Callable[..., bool]]] = {
    "position write": ("write_file", lambda path, _: path.parent.name == POSITIONS_DIR),
    "position rename": ("rename", lambda _, dst: dst.parent.name == POSITIONS_DIR),
    "position directory fsync": ("fsync_dir", lambda path: path.name == POSITIONS_DIR),
}
"""Where ``--die-at`` dies: the ``_fileio`` call of ``Positions.set`` it dies before."""


def die_at(point: str) -> None:
    """SIGKILL this process on the mailer's thread just before the step ``point``."""
    operation, matches = DIE_AT[point]
    original = getattr(_fileio, operation)

    def deadly(*args: Any) -> Any:
        if threading.current_thread().name == SUBSCRIBER and matches(*args):
            os.kill(os.getpid(), signal.SIGKILL)
        return original(*args)

    setattr(_fileio, operation, deadly)


def main(argv: list[str]) -> int:
    path, round_number, mode = argv[1], int(argv[2]), argv[3]
    dying = (argv[5], DIE_FROM_SEQ) if argv[4:5] == ["--die-at"] else None
    subscription_module.LIVE_LIMIT = LIVE_LIMIT
    store = Store.open(path, fsync="always", **MODES[mode])
    ks = store.keyspace(KEYSPACE)
    acks, subscribed = random.Random(-round_number - 1), threading.Event()
    reader = threading.Thread(
        target=mailer, args=(ks, acks, subscribed, dying), name=SUBSCRIBER, daemon=True
    )
    reader.start()
    subscribed.wait(TIMEOUT)  # so that every write of this round comes after START
    for writer in range(SYNC_WRITERS):
        args = (ks, round_number, writer)
        threading.Thread(target=sync_writer, args=args, daemon=True).start()
    args = (ks, round_number, random.Random(round_number))
    threading.Thread(target=async_writer, args=args, daemon=True).start()
    reader.join(TIMEOUT)  # the parent kills us long before this; or --die-at does
    say("survived")  # only --die-at's mailer ends, and it should have died
    return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
