"""Kill -9 at a random moment under concurrent durable writers; reopen and check everything.

The child (``crash_workload.py``) reports each operation it issues and each one that was
acknowledged. After SIGKILL the parent reopens the store and rebuilds, per writer, the set of
operations present on disk; it must contain every acknowledged one, be a gap-free prefix of
what the writer issued, and the key spaces must hold exactly what that prefix implies (so
nothing appears that was never issued, and no batch is half there). Rounds reuse a store for
a few generations (recovery on top of recovered, possibly torn, logs), then start afresh.
"""

from __future__ import annotations

import os
import random
import signal
import sys
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from actors import Store
from tests.reliability import crash_workload as wl
from tests.reliability.children import reap, start_child
from tests.reliability.conftest import TIMEOUT

CHILD = Path(wl.__file__)
WRITERS = 4
ROUNDS_PER_STORE = 10
CI_ROUNDS = 24
LONG_ROUNDS = 1000


@dataclass
class Round:
    """What one child said before it died."""

    issued: dict[int, int] = field(default_factory=dict)  # writer -> highest index issued
    acked: dict[int, set[int]] = field(default_factory=lambda: defaultdict(set))
    acks: int = 0
    lines: int = 0


def run_child(store_path: Path, round_number: int, kill_after: int, stderr_path: Path) -> Round:
    """Start the child; SIGKILL it once it has printed ``kill_after`` lines after ``ready``."""
    argv = [sys.executable, str(CHILD), str(store_path), str(round_number), str(WRITERS)]
    child, watchdog = start_child(argv, stderr_path)
    seen = Round()
    try:
        assert child.stdout is not None
        killed = False
        for line in child.stdout:
            parse(line, seen)
            if not killed and seen.lines >= kill_after and (seen.lines or line == "ready\n"):
                os.kill(child.pid, signal.SIGKILL)
                killed = True
        child.wait(TIMEOUT)
    finally:
        reap(child, watchdog)
    errors = stderr_path.read_text()
    assert child.returncode == -signal.SIGKILL, errors
    assert "Traceback" not in errors, errors
    assert seen.lines >= kill_after, errors
    return seen


def parse(line: str, seen: Round) -> None:
    words = line.split()
    if len(words) == 3:
        seen.lines += 1
        writer, index = int(words[1]), int(words[2])
        if words[0] == "issued":
            assert index == seen.issued.get(writer, -1) + 1, f"issued out of order: {line}"
            seen.issued[writer] = index
        elif words[0] == "ack":
            assert index == seen.issued[writer], f"acked what was not the last issued: {line}"
            seen.acked[writer].add(index)
            seen.acks += 1


def content(store: Store, name: str) -> dict[str, Any]:
    return dict(store.keyspace(name).range())


def present_ops(store: Store, round_number: int, writer: int, limit: int) -> set[int]:
    """Indexes ``0 .. limit`` of the writer's operations whose effect is on disk."""
    batches = store.keyspace("batches")
    cas = store.keyspace("cas").get_entry(f"r{round_number}:w{writer}")
    logged = {value for _, value in store.keyspace("shared").prefix("log:")}
    journal = store.spawn("journal", wl.Journal).progress().get(timeout=TIMEOUT)
    count, _ = journal.get(f"{round_number}:{writer}", (0, -1))
    present = set()
    for index in range(limit + 1):
        name = wl.op_name(round_number, writer, index)
        kind = wl.op_kind(index)
        if kind == "put":
            found = store.keyspace(wl.plain_keyspace(index)).get(name) is not None
        elif kind == "batch":
            found = batches.get(f"{name}:a") is not None
        elif kind == "cas":
            found = cas is not None and cas.version >= wl.ordinal(index)
        elif kind == "shared":
            found = name in logged
        else:
            found = count >= wl.ordinal(index)
        if found:
            present.add(index)
    return present


def expected_round(round_number: int, present: dict[int, set[int]]) -> dict[str, dict[str, Any]]:
    """Exactly what the key spaces hold under prefix ``r{round}:`` given the present ops."""
    expected: dict[str, dict[str, Any]] = defaultdict(dict)
    for writer, ops in present.items():
        for index in ops:
            name = wl.op_name(round_number, writer, index)
            kind = wl.op_kind(index)
            if kind == "put":
                expected[wl.plain_keyspace(index)][name] = index
            elif kind == "batch":
                expected["batches"][f"{name}:a"] = index
                if index + len(wl.KINDS) not in ops:  # the next batch deletes this :b
                    expected["batches"][f"{name}:b"] = index
            elif kind == "cas":
                expected["cas"][f"r{round_number}:w{writer}"] = max(
                    expected["cas"].get(f"r{round_number}:w{writer}", 0), wl.ordinal(index)
                )
    return expected


def check_round(store: Store, round_number: int, seen: Round, before: dict[str, Any]) -> None:
    prefix = f"r{round_number}:"
    present: dict[int, set[int]] = {}
    for writer in range(WRITERS):
        issued = seen.issued.get(writer, -1)
        ops = present_ops(store, round_number, writer, issued + 5)  # look past what was issued
        acked = seen.acked.get(writer, set())
        assert acked <= ops, f"writer {writer} lost acknowledged ops {sorted(acked - ops)}"
        assert ops == set(range(len(ops))), f"writer {writer}: not a prefix: {sorted(ops)}"
        assert len(ops) <= issued + 1, f"writer {writer}: ops never issued are present"
        present[writer] = ops
    expected = expected_round(round_number, present)
    for name in (*wl.PLAIN_KEYSPACES, "batches", "cas"):
        actual = dict(store.keyspace(name).prefix(prefix))
        assert actual == expected.get(name, {}), f"key space {name} after round {round_number}"
    cas = store.keyspace("cas")
    for key, value in expected.get("cas", {}).items():
        entry = cas.get_entry(key)
        assert entry is not None
        assert entry.version == value  # each cas wrote its n at version n
    check_shared(store)
    journal = store.spawn("journal", wl.Journal).progress().get(timeout=TIMEOUT)
    for writer, ops in present.items():
        kinds = sorted(i for i in ops if wl.op_kind(i) == "journal")
        slot = journal.get(f"{round_number}:{writer}", (0, -1))
        assert slot == (len(kinds), kinds[-1] if kinds else -1)
    for name, items in before.items():  # earlier rounds are untouched
        now = content(store, name) if name != "journal" else journal
        assert {k: now.get(k) for k in items} == items, f"{name} changed an earlier round"


def check_shared(store: Store) -> None:
    """Each contended key's version counts its log entries, 1..v, and its value is the last."""
    shared = store.keyspace("shared")
    for key in wl.SHARED_KEYS:
        entry = shared.get_entry(key)
        versions = sorted(int(k.rsplit(":", 1)[1]) for k, _ in shared.prefix(f"log:{key}:"))
        if entry is None:
            assert versions == []
            continue
        assert versions == list(range(1, entry.version + 1))
        assert entry.value == {"v": entry.version, "op": shared.get(f"log:{key}:{entry.version}")}
    issued_names = [value for _, value in shared.prefix("log:")]
    assert len(issued_names) == len(set(issued_names)), "one cas landed twice"


def snapshot(store: Store) -> dict[str, Any]:
    """Everything that later rounds must not change (all but the contended keys)."""
    taken: dict[str, Any] = {name: content(store, name) for name in (*wl.PLAIN_KEYSPACES, "cas")}
    taken["batches"] = content(store, "batches")
    taken["shared"] = {k: v for k, v in content(store, "shared").items() if k.startswith("log:")}
    taken["journal"] = store.spawn("journal", wl.Journal).progress().get(timeout=TIMEOUT)
    return taken


def run_rounds(tmp_path: Path, rounds: int, seed: int) -> dict[str, int]:
    rng = random.Random(seed)
    totals = {"rounds": 0, "acked": 0}
    before: dict[str, Any] = {}
    for round_number in range(rounds):
        store_path = tmp_path / f"store-{round_number // ROUNDS_PER_STORE}"
        if round_number % ROUNDS_PER_STORE == 0:
            before = {}
        kill_after = rng.choice([0, rng.randint(1, 40), *[rng.randint(40, 1200)] * 3])
        seen = run_child(store_path, round_number, kill_after, tmp_path / "child.err")
        with Store.open(store_path, segment_bytes=wl.SEGMENT_BYTES) as store:
            check_round(store, round_number, seen, before)
            before = snapshot(store)
            store.keyspace("ks0").put(f"parent:{round_number}", round_number)  # writable again
            before["ks0"][f"parent:{round_number}"] = round_number
        totals["rounds"] += 1
        totals["acked"] += seen.acks
    return totals


def test_kill_9_loses_no_acknowledged_write_and_invents_none(tmp_path, long_mode):
    rounds = LONG_ROUNDS if long_mode else CI_ROUNDS
    totals = run_rounds(tmp_path, rounds, seed=6_2026)
    assert totals["rounds"] == rounds
    assert totals["acked"] > rounds  # the kills landed while writes were flowing
