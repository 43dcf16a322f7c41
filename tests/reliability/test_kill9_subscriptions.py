"""Kill -9 while a named subscription reads and acknowledges a key space under durable writers.

The child (``subscription_workload.py``) writes key space ``mail`` from three synchronous
writers and one ``put_async`` writer (``fsync="always"``) while the subscription
``mailer`` reads every change and acknowledges records as it goes, printing each write's
receipt, each change it read and each ack before it is made and once it returned. After
SIGKILL the parent reopens the store with the same options and checks, against an
independent model of the writes (:func:`sw.op_changes`, applied in the order of the
acknowledged receipts' seqs):

- every record after the previous round's log is exactly one writer's next operation
  (acknowledged ones at the seq their receipt said, at most the in-flight ones beside
  them), and the key space holds exactly the model's state, values and versions;
- ``ks.subscribe(name="mailer")`` resumes exactly after the last ack the child printed, or
  after the one it was making when it died (never before, never further);
- the log, read by an independent reader and decoder, still holds every record after that
  position (never a gap below it that a snapshot or a segment deletion opened);
- the resumed subscription yields exactly the log's changes from there, seq, time, key,
  op, value and version, with nothing after them, and so does the model;
- what the child's subscription yielded before the kill is the model's changes from
  where it started, in order, none missing or repeated, and it started right after the
  position the previous round left.

The parent then acknowledges up to a random seq in what it read (so the next child
resumes there), and in the ``churn`` mode (``retention=0``, a tiny recovery budget:
snapshots and segment deletions all the time) snapshots and compacts, and checks that the
history floor stays at or below the durable position. Rounds reuse a store for a few
generations, so positions, versions and the model go on across kills.

The second test kills the child at each step of writing one acknowledgement (before the
new position's file is written, before its rename, before the directory's fsync).
"""

from __future__ import annotations

import os
import random
import signal
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec
import pytest

from actors import Store
from storage.codec import Batch, Delete, Expired, KVEvent, Put
from storage.positions import POSITIONS_DIR
from storage.reader import LogReader
from tests.reliability import subscription_workload as sw
from tests.reliability.children import reap, start_child
from tests.reliability.conftest import TIMEOUT

CHILD = Path(sw.__file__)
ROUNDS_PER_STORE = 10
CI_ROUNDS = 20
LONG_ROUNDS = 1000

Delivered = tuple[int, float, str, str, Any, int]
"""A change as a subscription yields it: ``(seq, time, key, op, value, version)``."""
Modelled = tuple[int, str, str, Any, int]
"""A change as the model predicts it: ``(seq, key, op, value, version)`` (no time)."""


@dataclass
class Seen:
    """What one child said before it died."""

    start: int | None = None  # the first seq its subscription delivers
    issued: dict[int, int] = field(default_factory=dict)  # writer -> operations issued
    acked: dict[int, dict[int, int]] = field(
        default_factory=lambda: {w: {} for w in range(sw.WRITERS)}
    )  # writer -> index -> its receipt's seq (0: it wrote nothing)
    got: list[Delivered] = field(default_factory=list)
    acks: list[int] = field(default_factory=list)  # acks that returned, in order
    acking: int | None = None  # the ack under way when it died
    lines: int = 0  # after "ready"
    survived: bool = False


def parse(line: str, seen: Seen) -> None:
    word, _, rest = line.rstrip("\n").partition(" ")
    if word == "ready":
        assert seen.start is None
        seen.start = int(rest)
        return
    seen.lines += 1
    if word == "issued":
        writer, index = map(int, rest.split())
        assert index == seen.issued.get(writer, 0), f"issued out of order: {line}"
        seen.issued[writer] = index + 1
    elif word == "ack":
        writer, index, seq = map(int, rest.split())
        acked = seen.acked[writer]
        assert index == len(acked) < seen.issued[writer], f"acked out of order: {line}"
        acked[index] = seq
    elif word == "got":
        seq, time, key, op, value, version = msgspec.json.decode(rest)
        seen.got.append((seq, time, key, op, value, version))
    elif word == "acking":
        assert seen.acking is None, f"two acks at once: {line}"
        seen.acking = int(rest)
    elif word == "acked":
        assert seen.acking == int(rest), f"acked what it was not acking: {line}"
        seen.acks.append(seen.acking)
        seen.acking = None
    else:
        assert word == "survived", f"unexpected line: {line}"
        seen.survived = True


def run_child(
    store_path: Path, round_number: int, mode: str, kill_after: int | None, stderr_path: Path
) -> Seen:
    """Start the child; SIGKILL it once it has printed ``kill_after`` lines after ``ready``.

    ``kill_after=None``: the child kills itself, at ``--die-at DYING[round_number]``.
    """
    argv = [sys.executable, str(CHILD), str(store_path), str(round_number), mode]
    if kill_after is None:
        argv += ["--die-at", DYING[round_number]]
    child, watchdog = start_child(argv, stderr_path)
    seen = Seen()
    try:
        assert child.stdout is not None
        killed = False
        for line in child.stdout:
            parse(line, seen)
            started = seen.start is not None
            if kill_after is not None and not killed and started and seen.lines >= kill_after:
                os.kill(child.pid, signal.SIGKILL)
                killed = True
        child.wait(TIMEOUT)
    finally:
        reap(child, watchdog)
    errors = stderr_path.read_text()
    assert child.returncode == -signal.SIGKILL, errors
    assert "Traceback" not in errors, errors
    assert not seen.survived, "the child never reached the step it should die at"
    assert seen.start is not None, errors
    assert seen.lines >= (kill_after or 0), errors
    return seen


DYING = list(sw.DIE_AT)
"""``--die-at`` points, by round number (the die-at test runs one round per point)."""


# -- the log, read independently of subscriptions ------------------------------------------------

_RECORD = msgspec.msgpack.Decoder(list[KVEvent])


def event_changes(event: KVEvent) -> list[tuple[str, str, Any, int, float | None]]:
    """``(key, op, value, version, expires_at)`` of one key-value event, in its order."""
    if isinstance(event, Put):
        value = msgspec.msgpack.decode(bytes(event.value))
        return [(event.key, "put", value, event.version, event.expires_at)]
    if isinstance(event, Delete):
        return [(event.key, "delete", None, 0, None)]
    if isinstance(event, Expired):
        return [(key, "expire", None, 0, None) for key in event.keys]
    assert isinstance(event, Batch)
    return [change for inner in event.events for change in event_changes(inner)]


@dataclass
class LogContents:
    first_seq: int
    last_seq: int
    records: dict[int, tuple[float, list[tuple[str, str, Any, int, float | None]]]]


def read_log(store_path: Path, *, recovered: bool = True) -> LogContents:
    """Every record key space ``mail``'s log holds, checked, with its time and changes.

    ``recovered=False``: as a kill left it, before an open cut a torn tail (a SIGKILL can
    cut a write that spans pages short).
    """
    reader = LogReader.open(store_path / "keyspaces" / sw.KEYSPACE)
    records = {
        seq: (
            time,
            [change for event in _RECORD.decode(payload) for change in event_changes(event)],
        )
        for chunk in reader.read_timed_chunks()
        for seq, time, payload in chunk
    }
    assert reader.damage is None, reader.damage
    assert reader.torn_tail is None or not recovered, reader.torn_tail
    assert list(records) == list(range(reader.first_seq, reader.last_seq + 1))
    return LogContents(reader.first_seq, reader.last_seq, records)


# -- the model -------------------------------------------------------------------------------------


@dataclass
class Model:
    """What the store must hold: built from the children's receipts, checked every round."""

    state: sw.State = field(default_factory=dict)
    changes: dict[int, list[sw.Changed]] = field(default_factory=dict)  # seq -> its changes
    last_seq: int = 0
    position: int = 0  # the mailer's durable position: the last seq it acknowledged

    def flat(self, first: int, last: int | None = None) -> list[Modelled]:
        """Every change from seq ``first`` to ``last`` (the end), in order."""
        last = self.last_seq if last is None else last
        return [(seq, *change) for seq in range(first, last + 1) for change in self.changes[seq]]


def writer_of(changes: list[sw.Changed]) -> int:
    """The writer whose keys a record changes (each record is one writer's operation)."""
    writers = {int(key.split(":", 1)[0][1:]) for key, *_ in changes}
    assert len(writers) == 1, f"a record changes the keys of writers {writers}: {changes}"
    return writers.pop()


def resolve(
    model: Model, round_number: int, seen: Seen, last_seq: int, found: dict[int, list[Any]]
) -> None:
    """Match each record the child wrote (``found``: seq -> changes) to its operation.

    In seq order, a record must be exactly its writer's next operation that writes
    something (an acknowledged one at its receipt's seq), given the model's state; then
    every acknowledged operation must have been matched (or have written nothing).
    """
    next_index = dict.fromkeys(range(sw.WRITERS), 0)
    for seq in range(model.last_seq + 1, last_seq + 1):
        assert seq in found, f"record {seq} is gone, and nothing read it"
        changes = found[seq]
        writer = writer_of(changes)
        index, acked = next_index[writer], seen.acked[writer]
        while True:
            assert index < seen.issued.get(writer, 0), (
                f"record {seq} {changes} is not writer {writer}'s, who issued "
                f"{seen.issued.get(writer, 0)} operations"
            )
            trial = dict(model.state)
            expected = sw.op_changes(trial, round_number, writer, index)
            if expected:
                break
            assert acked.get(index, 0) == 0, f"writer {writer}'s {index} wrote nothing"
            index += 1
        assert changes == expected, (
            f"record {seq} holds {changes}; writer {writer}'s operation {index} makes {expected}"
        )
        assert acked.get(index, seq) == seq, f"writer {writer}'s {index}: receipt {acked[index]}"
        model.state, model.changes[seq] = trial, expected
        next_index[writer] = index + 1
    for writer, acked in seen.acked.items():
        for index in range(next_index[writer], len(acked)):
            assert sw.op_changes(dict(model.state), round_number, writer, index) == [], (
                f"writer {writer}'s acknowledged operation {index} (seq {acked[index]}) is lost"
            )
            assert acked[index] == 0
    model.last_seq = last_seq


def first_difference(actual: list[Any], expected: list[Any]) -> str:
    for index, (got, wanted) in enumerate(zip(actual, expected, strict=False)):
        if got != wanted:
            return f"item {index} is {got}, not {wanted}"
    return f"{len(actual)} items, not {len(expected)}"


def keyspace_state(ks: Any) -> sw.State:
    state = {}
    for key, _ in ks.range():
        entry = ks.get_entry(key)
        state[key] = (entry.value, entry.version)
    return state


def take(sub: Any, count: int) -> list[Any]:
    items = []
    for _ in range(count):
        item = sub.next(timeout=TIMEOUT)
        assert item is not None, f"only {len(items)} of {count} changes arrived"
        items.append(item)
    return items


# -- one round -------------------------------------------------------------------------------------


def check_round(
    store_path: Path, mode: str, round_number: int, seen: Seen, model: Model, ack_to: Any
) -> dict[str, int]:
    """Check the store after the child's kill (see the module docstring); update ``model``.

    ``ack_to(position, last_seq)`` says where the parent acknowledges up to afterwards.
    Returns what happened: the durable position found, the history floor on disk after
    the kill, after the parent's compaction (``churn``) and once the store is closed.
    """
    assert seen.start == model.position + 1, "the child's subscription did not resume there"
    printed = seen.acks[-1] if seen.acks else model.position
    allowed = {printed} if seen.acking is None else {printed, seen.acking}
    on_disk = read_log(store_path, recovered=False)  # as the kill left it
    facts = {"floor after the kill": on_disk.first_seq}
    with Store.open(store_path, fsync="always", **sw.MODES[mode]) as store:
        ks = store.keyspace(sw.KEYSPACE)
        log = read_log(store_path)
        assert log.last_seq == ks.last_seq == on_disk.last_seq
        with ks.subscribe(name=sw.SUBSCRIBER) as sub:
            position = sub.acked
            assert position in allowed, (
                f"the mailer resumes after {position}; it acknowledged {printed} last"
                + (f" and was acknowledging {seen.acking}" if seen.acking else "")
            )
            assert on_disk.first_seq <= position + 1, "a record after the position was dropped"
            assert log.first_seq <= position + 1, "a record after the position was dropped"

            got = {seq: [] for seq, *_ in seen.got}
            for seq, _, *change in seen.got:
                got[seq].append(tuple(change))
            logged = {seq: [c[:4] for c in changes] for seq, (_, changes) in log.records.items()}
            resolve(model, round_number, seen, log.last_seq, {**got, **logged})
            assert keyspace_state(ks) == model.state

            # What the child's subscription yielded: the model from where it started.
            child = [(seq, key, op, value, version) for seq, _, key, op, value, version in seen.got]
            wanted = model.flat(seen.start)[: len(child)]
            assert child == wanted, f"the child's subscription: {first_difference(child, wanted)}"
            for seq, time, *_ in seen.got:
                assert seq not in log.records or log.records[seq][0] == time, f"time of {seq}"

            # What the resumed subscription yields: the log from the position, and the model.
            expected = model.flat(position + 1)
            items = take(sub, len(expected))
            assert sub.next(timeout=0.05) is None, "more changes than the log holds"
            delivered = [
                (c.seq, c.time, c.key, c.op, c.value, c.version, c.expires_at) for c in items
            ]
            replay = [
                (seq, time, *change)
                for seq in range(position + 1, log.last_seq + 1)
                for time, changes in [log.records[seq]]
                for change in changes
            ]
            assert delivered == replay, f"against the log: {first_difference(delivered, replay)}"
            modelled = [(c.seq, c.key, c.op, c.value, c.version) for c in items]
            assert modelled == expected, (
                f"against the model: {first_difference(modelled, expected)}"
            )

            target = ack_to(position, log.last_seq)
            if target > position:
                sub.ack(target)
            model.position = target
        if mode == "churn":
            ks.snapshot()
            ks.compact()
            floor = ks.stats().history_floor
            assert floor <= target + 1, f"compaction dropped {floor - 1}, acknowledged {target}"
            facts["floor after compaction"] = floor
        assert keyspace_state(ks) == model.state
    after_close = read_log(store_path)
    assert after_close.first_seq <= model.position + 1, "closing dropped unacknowledged records"
    assert after_close.last_seq == model.last_seq
    facts["position"] = position
    facts["floor after close"] = after_close.first_seq
    return facts


def run_rounds(tmp_path: Path, mode: str, rounds: int, seed: int) -> Counter[str]:
    rng = random.Random(seed)
    totals: Counter[str] = Counter()
    model = Model()
    floor = 1
    for round_number in range(rounds):
        store_path = tmp_path / f"store-{round_number // ROUNDS_PER_STORE}"
        if round_number % ROUNDS_PER_STORE == 0:
            model, floor = Model(), 1
        kill_after = rng.choice([0, rng.randint(1, 60), *[rng.randint(60, 3000)] * 3])
        seen = run_child(store_path, round_number, mode, kill_after, tmp_path / "child.err")

        def ack_to(position: int, last: int) -> int:
            return rng.choice([position, last, rng.randint(position, last)])

        facts = check_round(store_path, mode, round_number, seen, model, ack_to)
        totals["rounds"] += 1
        totals["writes acknowledged"] += sum(len(acked) for acked in seen.acked.values())
        totals["changes the child read"] += len(seen.got)
        totals["acks"] += len(seen.acks)
        totals["killed acknowledging"] += seen.acking is not None
        totals["resumed after the unprinted ack"] += facts["position"] == seen.acking
        totals["child dropped segments"] += facts["floor after the kill"] > floor
        if "floor after compaction" in facts:
            totals["parent dropped segments"] += facts["floor after compaction"] > floor
        floor = facts["floor after close"]
    return totals


@pytest.mark.parametrize("mode", list(sw.MODES))
def test_kill_9_a_named_subscription_resumes_exactly_after_its_durable_ack(
    tmp_path, long_mode, mode
):
    rounds = LONG_ROUNDS if long_mode else CI_ROUNDS
    totals = run_rounds(tmp_path, mode, rounds, seed=13_2026)
    print(dict(totals))
    assert totals["rounds"] == rounds
    assert totals["writes acknowledged"] > rounds  # the kills landed while writes flowed
    assert totals["changes the child read"] > rounds  # ... and while the mailer read
    if mode == "churn":
        assert totals["parent dropped segments"] > 0  # retention ran, up to the position
    if long_mode:  # where 20 random kills land depends on the load; 1,000 cover it all
        assert totals["acks"] > rounds
        assert totals["killed acknowledging"] > 0
        assert totals["resumed after the unprinted ack"] > 0
        if mode == "churn":
            assert totals["child dropped segments"] > 0


@pytest.mark.parametrize("point", DYING)
def test_kill_9_at_each_step_of_an_ack_resumes_after_the_last_durable_one(tmp_path, point):
    store_path = tmp_path / "store"
    round_number = DYING.index(point)
    seen = run_child(store_path, round_number, "plain", None, tmp_path / "child.err")
    assert seen.acking is not None
    assert seen.acking >= sw.DIE_FROM_SEQ
    assert seen.acks[-1] < seen.acking  # every record was acknowledged before it
    model = Model()  # a fresh store, whatever `round_number` says
    facts = check_round(store_path, "plain", round_number, seen, model, lambda p, _: p)
    renamed = point == "position directory fsync"  # the rename had happened
    assert facts["position"] == (seen.acking if renamed else seen.acks[-1])
    leftovers = list((store_path / "keyspaces" / sw.KEYSPACE / POSITIONS_DIR).iterdir())
    assert [path.name for path in leftovers] == [f"{sw.SUBSCRIBER}.pos"]
