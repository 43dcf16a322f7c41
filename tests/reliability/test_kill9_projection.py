"""Kill -9 of a process running a projection under load: every change counted exactly once.

The child (``projection_workload.py``) runs a projection that counts, per source key space
and key, the puts, the sum of the amounts put and the deletes, while writer threads put,
overwrite, batch and delete in one or two sources; it is SIGKILLed at a random point. The
parent reopens the store, finds out for each writer whether the write in flight landed (the
sources must hold exactly the model after its acknowledged writes, or after those and the
one in flight), restarts the projection, waits until its positions reach every source's
last seq and checks its totals:

- against the model of the writes that landed, counts and sums per key and the number of
  changes per source (so no change is missing and none is counted twice);
- against a fold of the sources' logs read from seq 1 with a subscription (stores that keep
  their history), exactly, seqs included;
- and that the projection never saw a change with a lower seq than one before it.

Stores vary: ``fsync="always"`` and ``"interval"`` (under kill -9 what was acknowledged,
i.e. handed to the kernel, survives either way), one source or two, and ``drop`` stores
opened with ``retention=0`` and a tiny recovery budget, so the sources and the projection
snapshot themselves every few records and drop the segments below while the kill lands.
Catch-up rounds write a backlog with no projection running, then restart the projection
(slowed down) and kill it while it catches up. Rounds reuse a store for a few generations,
so totals go on across kills, reopens and snapshots.
"""

from __future__ import annotations

import copy
import os
import random
import signal
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from actors import Store
from tests.reliability import projection_workload as pw
from tests.reliability.children import reap, start_child
from tests.reliability.conftest import TIMEOUT

CHILD = Path(pw.__file__)
WRITERS = 4
ROUNDS_PER_STORE = 4
CI_ROUNDS = 4  # per kind of store: 16 in all
LONG_ROUNDS = 125  # 500 in all
CONFIGS = {
    "always-two-sources": ("always", 2, "keep"),
    "interval-one-source": ("interval", 1, "keep"),
    "always-two-sources-dropping-history": ("always", 2, "drop"),
    "interval-one-source-dropping-history": ("interval", 1, "drop"),
}
"""``(fsync, sources, retain)`` of the stores of each test."""


@dataclass
class Round:
    """What one child said before it died."""

    issued: dict[int, int] = field(default_factory=dict)  # writer -> highest index issued
    acked: dict[int, int] = field(default_factory=dict)  # writer -> highest index acked
    acks: int = 0
    lines: int = 0
    targets: dict[str, int] = field(default_factory=dict)
    behind: int = 0  # progress lines short of the targets
    caught_up: bool = False


def parse(line: str, seen: Round) -> None:
    words = line.split()
    if words[0] in ("issued", "ack"):
        seen.lines += 1
        writer, index = int(words[1]), int(words[2])
        if words[0] == "issued":
            assert index == seen.issued.get(writer, -1) + 1, f"issued out of order: {line}"
            seen.issued[writer] = index
        else:
            assert index == seen.issued[writer], f"acked what was not the last issued: {line}"
            seen.acked[writer] = index
            seen.acks += 1
    elif words[0] == "target":
        seen.targets[words[1]] = int(words[2])
    elif words[0] == "progress":
        seen.behind += int(words[2]) < seen.targets[words[1]]
    elif words == ["caught", "up"]:
        seen.caught_up = True


def run_child(store_path: Path, argv: list[str], kill: int, catchup: bool, err: Path) -> Round:
    """Start the child; SIGKILL it after ``kill`` write lines (a live round) or at the
    ``kill``-th position it reports short of the backlog's end (a catch-up round)."""
    command = [sys.executable, str(CHILD), str(store_path), *argv]
    child, watchdog = start_child(command, err)
    seen = Round()
    try:
        assert child.stdout is not None
        killed = False
        for line in child.stdout:
            parse(line, seen)
            if killed:
                continue
            if catchup:
                due = seen.behind >= kill or seen.caught_up
            else:
                due = seen.lines >= kill and (seen.lines > 0 or line == "ready\n")
            if due:
                os.kill(child.pid, signal.SIGKILL)
                killed = True
        child.wait(TIMEOUT)
    finally:
        reap(child, watchdog)
    errors = err.read_text()
    assert child.returncode == -signal.SIGKILL, errors
    assert "Traceback" not in errors, errors
    if catchup:
        assert not seen.caught_up, f"the projection caught up before the kill: {errors}"
    else:
        assert seen.lines >= kill, errors
    return seen


@dataclass
class Model:
    """The writers' keys in the sources, and the totals the projection must hold."""

    sources: pw.Sources = field(default_factory=dict)
    totals: pw.Totals = field(default_factory=dict)


def mine(space: dict[str, Any], writer: int) -> dict[str, Any]:
    stem = f"w{writer}:"
    return {key: value for key, value in space.items() if key.startswith(stem)}


def writer_view(sources: pw.Sources, writer: int) -> dict[str, dict[str, Any]]:
    return {name: mine(space, writer) for name, space in sources.items() if mine(space, writer)}


def check_sources(
    store: Store, names: tuple[str, ...], round_number: int, seen: Round, model: Model
) -> Model:
    """The sources hold, per writer, the model after its acknowledged writes or after those
    and the one in flight; returns the model with what landed."""
    actual: pw.Sources = {name: dict(store.keyspace(name).range()) for name in names}
    assert all(key.startswith("w") for space in actual.values() for key in space), actual
    after = copy.deepcopy(model)
    for writer in range(WRITERS):
        done = seen.acked.get(writer, -1) + 1
        issued = seen.issued.get(writer, -1) + 1
        assert issued - done in (0, 1), f"writer {writer}: {issued} issued, {done} acked"
        for index in range(done):
            pw.apply_op(after.sources, after.totals, round_number, writer, index, len(names))
        holds = writer_view(actual, writer)
        if writer_view(after.sources, writer) == holds:
            continue
        landed = copy.deepcopy(after)
        if issued > done:  # the one in flight may have landed, whole
            pw.apply_op(landed.sources, landed.totals, round_number, writer, done, len(names))
        assert writer_view(landed.sources, writer) == holds, (
            f"round {round_number}, writer {writer} ({done} acknowledged, {issued} issued): "
            f"the sources hold {holds}, expected {writer_view(after.sources, writer)}"
            + (f" or {writer_view(landed.sources, writer)}" if issued > done else "")
        )
        after = landed
    assert {name: space for name, space in after.sources.items() if space} == {
        name: space for name, space in actual.items() if space
    }
    return after


def caught_up(handle: Any, keyspaces: dict[str, Any]) -> tuple[dict[str, Any], pw.Totals]:
    """The projection's positions and totals once it has applied every source's last seq."""
    targets = {name: ks.last_seq for name, ks in keyspaces.items()}
    deadline = time.monotonic() + TIMEOUT  # a hang guard, not a timing assertion
    while True:
        positions, totals = handle.blocking.progress()
        reached = {name: positions.get(name, (0, -1))[0] for name in keyspaces}
        if reached == targets or time.monotonic() > deadline:
            break
        time.sleep(0.01)
    assert reached == targets, f"the projection stopped at {positions}, the sources at {targets}"
    return positions, totals


def fold_logs(keyspaces: dict[str, Any]) -> pw.Totals:
    """The totals a fold of every source's log from seq 1 gives (nothing writes meanwhile)."""
    totals: pw.Totals = {}
    for name, keyspace in keyspaces.items():
        last = keyspace.last_seq
        if last == 0:
            continue
        with keyspace.subscribe(from_seq=1) as subscription:
            change = subscription.next(timeout=TIMEOUT)
            while change is not None:
                pw.fold(totals, name, change.seq, change.op, change.key, change.value)
                # the changes of one record arrive together: once the last record's first
                # is here, the rest are buffered and then nothing more comes
                change = subscription.next(timeout=0 if change.seq == last else TIMEOUT)
        assert totals[f"{name}|"][1] == last, f"{name}: the log read ended early"
    return totals


def without_seqs(totals: pw.Totals) -> pw.Totals:
    """``totals`` with each source's last seq zeroed (the model does not know seqs)."""
    return {
        name: [counts[0], 0, counts[2]] if name.endswith("|") else counts
        for name, counts in totals.items()
    }


def check_projection(
    store: Store, names: tuple[str, ...], retain: str, model: Model, round_number: int
) -> dict[str, Any]:
    """Restart the projection, let it catch up and check its totals; returns its positions."""
    keyspaces = {name: store.keyspace(name) for name in names}
    handle = store.projection(pw.NAME, pw.TotalsProjection, sources=list(names))
    positions, totals = caught_up(handle, keyspaces)
    for name in names:
        _, last, disorder = totals.get(f"{name}|", (0, 0, 0))
        assert disorder == 0, f"round {round_number}: {name}'s changes came out of order"
        assert last == keyspaces[name].last_seq
    assert without_seqs(totals) == model.totals, (
        f"round {round_number}: the projection counted "
        f"{diff(without_seqs(totals), model.totals)} (projection, model)"
    )
    if retain == "keep":  # the whole history is there to fold again
        assert totals == fold_logs(keyspaces), f"round {round_number}: not the logs' totals"
    return positions


def diff(actual: pw.Totals, expected: pw.Totals) -> dict[str, tuple[Any, Any]]:
    return {
        name: (actual.get(name), expected.get(name))
        for name in sorted(actual.keys() | expected.keys())
        if actual.get(name) != expected.get(name)
    }


def run_rounds(
    tmp_path: Path, config: tuple[str, int, str], rounds: int, seed: int
) -> Counter[str]:
    rng = random.Random(seed)
    counts: Counter[str] = Counter()
    model = Model()
    fsync, sources, retain = config
    for round_number in range(rounds):
        generation = round_number // ROUNDS_PER_STORE
        names = pw.source_names(sources)
        store_path = tmp_path / f"store-{generation}"
        if round_number % ROUNDS_PER_STORE == 0:
            model = Model()
        # A store's first round starts the projection before any write: a projection first
        # started over a source that already dropped its history cannot read it from seq 1
        # (HistoryUnavailable, as documented), so only later rounds build a backlog first.
        first_of_store = round_number % ROUNDS_PER_STORE == 0
        catchup = not first_of_store and (
            round_number % ROUNDS_PER_STORE == 2 or rng.random() < 0.1
        )
        if catchup:
            kill = rng.randint(1, 3)
        else:
            kill = rng.choice([0, rng.randint(1, 40), *[rng.randint(40, 1500)] * 3])
        kind = "catchup" if catchup else "live"
        argv = [str(round_number), str(WRITERS), fsync, str(sources), retain, kind]
        seen = run_child(store_path, argv, kill, catchup, tmp_path / "child.err")
        with Store.open(store_path, fsync=fsync, **pw.options(retain)) as store:
            model = check_sources(store, names, round_number, seen, model)
            floors = [store.keyspace(name).stats().history_floor for name in names]
            check_projection(store, names, retain, model, round_number)
            stats = store.spawn(pw.NAME, pw.TotalsProjection).stats()
        counts["rounds"] += 1
        counts[f"{kind} rounds"] += 1
        counts["acknowledged writes"] += seen.acks
        counts["source segments dropped"] += any(floor > 1 for floor in floors)
        counts["projection snapshotted"] += stats.snapshot_seq > 0
    return counts


@pytest.mark.parametrize("config", list(CONFIGS))
def test_kill_9_of_a_running_projection_leaves_every_change_counted_exactly_once(
    tmp_path, long_mode, config
):
    rounds = LONG_ROUNDS if long_mode else CI_ROUNDS
    retain = CONFIGS[config][2]
    counts = run_rounds(tmp_path, CONFIGS[config], rounds, seed=13_2026 + len(config))
    assert counts["rounds"] == rounds
    assert counts["catchup rounds"] >= rounds // ROUNDS_PER_STORE
    assert counts["acknowledged writes"] > rounds  # the kills landed while writes flowed
    if retain == "drop":  # the sources dropped history and the projection snapshotted
        assert counts["source segments dropped"] > 0
        assert counts["projection snapshotted"] > 0
