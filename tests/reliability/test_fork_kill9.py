"""Kill -9 while a key space and its fork of a past point are written; both must survive.

The child (``fork_kill9_workload.py``) forks the key space ``src`` at a past seq the parent
chose at random (rebuilt from a snapshot and the log: the child keeps only 5 recent changes
in memory and snapshots every few records), then writes the source and the fork from two
threads until it is SIGKILLed. After each kill the parent reopens the store and checks,
against an independent model (each operation writes one record, so a key space's last
seq tells how many landed), that:

- the source holds exactly its model after every acknowledged operation, or after those
  and the one in flight (values, versions and seqs);
- a fork the child announced exists and holds the source's model at its point followed by
  its own acknowledged operations (or those and the one in flight); a fork the kill cut
  short is either absent, leaving no temporary directory, or complete;
- forks of earlier rounds are as they were left, and writes to a fork never reach the
  source or another fork.

Rounds reuse a store for a few generations, so later forks are taken from a source that has
been killed, recovered and forked before. The second test kills the child at each step of
writing a fork (before its snapshot is renamed into place in the temporary directory,
before that directory is renamed to the fork's name, before the parent directory is
fsynced): the fork is absent and leaves nothing behind, or (once renamed) complete.
"""

from __future__ import annotations

import os
import random
import signal
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from actors import KeySpace, Store
from tests.reliability import fork_kill9_workload as fw
from tests.reliability.children import reap, start_child
from tests.reliability.conftest import TIMEOUT

CHILD = Path(fw.__file__)
ROUNDS_PER_STORE = 4
CI_ROUNDS = 8
LONG_ROUNDS = 200
PRELUDE = 40
"""The highest fork point of a store's first round (the child writes up to it first)."""


@dataclass
class Seen:
    """What one child said before it died."""

    issued: dict[str, int] = field(default_factory=dict)  # space -> highest index issued
    acked: dict[str, int] = field(default_factory=dict)  # space -> highest index acked
    forked: set[str] = field(default_factory=set)
    lines: int = 0


def parse(line: str, seen: Seen) -> None:
    words = line.split()
    if words[0] == "forked":
        seen.forked.add(words[1])
    elif words[0] in ("issued", "ack"):
        seen.lines += 1
        space, index = words[1], int(words[2])
        if words[0] == "issued":
            assert index == seen.issued.get(space, index - 1) + 1, f"out of order: {line}"
            seen.issued[space] = index
        else:
            assert index == seen.issued[space], f"acked what was not the last issued: {line}"
            seen.acked[space] = index


def run_child(
    store_path: Path, round_number: int, point: int, kill_after: int | None, *extra: str
) -> Seen:
    """Start the child; SIGKILL it once it has printed ``kill_after`` operation lines.

    ``kill_after=None``: the child kills itself (``--die-at``, in ``extra``).
    """
    argv = [sys.executable, str(CHILD), str(store_path), str(round_number), str(point), *extra]
    stderr_path = store_path.with_name(store_path.name + ".stderr")
    child, watchdog = start_child(argv, stderr_path)
    seen = Seen()
    try:
        assert child.stdout is not None
        killed = False
        for line in child.stdout:
            assert line != "survived\n", "the child never reached the step it should die at"
            parse(line, seen)
            if kill_after is not None and not killed and seen.lines >= kill_after:
                os.kill(child.pid, signal.SIGKILL)
                killed = True
        child.wait(TIMEOUT)
    finally:
        reap(child, watchdog)
    errors = stderr_path.read_text()
    assert child.returncode == -signal.SIGKILL, errors
    assert "Traceback" not in errors, errors
    return seen


def stored(ks: KeySpace) -> fw.Model:
    """Every key of ``ks`` with its value, version and seq."""
    found = {}
    for key, _ in ks.range():
        entry = ks.get_entry(key)
        assert entry is not None
        found[key] = (entry.value, entry.version, entry.seq)
    return found


def landed(space: str, seen: Seen, before: int, on_disk: int) -> int:
    """How many operations of ``space`` landed this round, checked against what was said.

    ``before`` operations were on disk when the round began, ``on_disk`` are now: every
    acknowledged one, and at most the one in flight besides.
    """
    acked = seen.acked.get(space, before - 1) + 1
    issued = seen.issued.get(space, before - 1) + 1
    assert acked <= on_disk <= issued, (
        f"{space}: {on_disk} operations on disk, {acked} acknowledged, {issued} issued"
    )
    return on_disk


@dataclass
class Fork:
    name: str
    point: int
    operations: int = 0


def check_store(store: Store, source_ops: int, forks: dict[str, Fork]) -> None:
    """The source and every fork hold exactly their models."""
    src = store.keyspace("src")
    assert src.last_seq == source_ops
    assert stored(src) == fw.source_model(source_ops)
    for fork in forks.values():
        ks = store.keyspace(fork.name)
        assert ks.last_seq == fork.point + fork.operations
        assert stored(ks) == fw.fork_model(fork.name, fork.point, fork.operations), fork


def leftovers(store_path: Path) -> list[str]:
    folder = store_path / "keyspaces"
    return sorted(p.name for p in folder.iterdir() if p.name.startswith(".forking-"))


def run_rounds(tmp_path: Path, rounds: int, seed: int) -> dict[str, int]:
    rng = random.Random(seed)
    totals = {"rounds": 0, "forked": 0, "fork acks": 0, "lines": 0, "cut short": 0}
    source_ops = 0
    forks: dict[str, Fork] = {}
    for round_number in range(rounds):
        store_path = tmp_path / f"store-{round_number // ROUNDS_PER_STORE}"
        if round_number % ROUNDS_PER_STORE == 0:
            source_ops, forks = 0, {}
        point = rng.randint(1, max(source_ops, PRELUDE))
        prelude = max(0, point - source_ops)  # source operations before the fork
        kill_after = prelude * 2 + rng.choice([0, rng.randint(1, 30), *[rng.randint(30, 400)] * 3])
        seen = run_child(store_path, round_number, point, kill_after)
        name = f"fork{round_number}"
        with Store.open(store_path, **fw.OPTIONS) as store:
            assert leftovers(store_path) == [], "a fork cut short left its temporary directory"
            src = store.keyspace("src")
            source_ops = landed("src", seen, source_ops, src.last_seq)
            exists = name in store.keyspaces()
            if name in seen.forked:
                assert exists, f"{name} was announced but is gone"
            if exists:
                fork = forks[name] = Fork(name, point)
                fork.operations = landed(name, seen, 0, store.keyspace(name).last_seq - point)
                totals["fork acks"] += seen.acked.get(name, -1) + 1
            totals["forked"] += exists
            totals["cut short"] += not exists
            check_store(store, source_ops, forks)
        totals["rounds"] += 1
        totals["lines"] += seen.lines
    return totals


def test_kill_9_while_a_source_and_its_fork_are_written_loses_no_acknowledged_write(
    tmp_path, long_mode
) -> None:
    rounds = LONG_ROUNDS if long_mode else CI_ROUNDS
    totals = run_rounds(tmp_path, rounds, seed=12_2026)
    assert totals["rounds"] == rounds
    assert totals["forked"] > 0  # forks were taken ...
    assert totals["fork acks"] > 0  # ... and written before the kills


@pytest.mark.parametrize("step", list(fw.DIE_AT))
def test_kill_9_at_each_step_of_writing_a_fork_leaves_no_fork_or_a_whole_one(
    tmp_path, step
) -> None:
    store_path = tmp_path / "store"
    point = 25
    seen = run_child(store_path, 0, point, None, "--die-at", step)
    assert seen.acked["src"] == point - 1  # the source was written up to the point
    assert seen.forked == set()
    with Store.open(store_path, **fw.OPTIONS) as store:
        assert leftovers(store_path) == []
        renamed = step == "directory fsync"  # a kill -9 keeps a rename the kernel made
        assert ("fork0" in store.keyspaces()) is renamed
        forks = {"fork0": Fork("fork0", point)} if renamed else {}
        check_store(store, point, forks)
        if renamed:  # the fork takes writes after the crash
            fork = store.keyspace("fork0")
            receipt = fork.put("k0", "after")
            assert receipt.seq == point + 1
            assert stored(store.keyspace("src")) == fw.source_model(point)
