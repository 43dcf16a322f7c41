"""Secondary indexes against a model that recomputes every index from scratch, every step.

The machine writes dict values through puts (with TTLs on a fake clock), deletes, batches
and record operations, sweeps, snapshots, reopens and cuts the power (``DurabilityTracker``:
what was not fsynced is lost; every acknowledged write must survive), and creates and drops
an index on the way. After every step each index's whole range, its ``count`` and a point
``get`` must equal what the model's live keys give, and a unique index must have refused
exactly the writes that would have given two live keys one value.
"""

from __future__ import annotations

import itertools
import os
from pathlib import Path
from typing import Any

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule, run_state_machine_as_test

from actors import Index, KeySpace, Store, UniqueViolation, ops
from storage.tuplekey import pack_element
from tests.keyspace.conftest import FakeClock
from tests.storage.faults import DurabilityTracker

KEYS = ["a", "b", "c", "d", "e"]
keys = st.sampled_from(KEYS)
tags = st.lists(st.sampled_from(["x", "y", "z"]), max_size=3)
values = st.fixed_dictionaries(
    {"n": st.integers(min_value=-3, max_value=3)},
    optional={"tags": tags, "u": st.integers(min_value=0, max_value=3), "m": st.just({"k": 1})},
)
ttls = st.none() | st.sampled_from([0.5, 1.5])
EXAMPLES = 300 if os.environ.get("ACTORKV_LONG") == "1" else 25


def parity(value: Any) -> Any:
    n = value.get("n")
    return None if n is None else ("even" if n % 2 == 0 else "odd")


INDEXES = {
    "by_n": Index(field="n"),
    "by_tag": Index(field="tags"),
    "by_parity": Index(key=parity),
    "by_u": Index(field="u", unique=True),
    "by_mk": Index(field="m.k"),
}
LATE = ("late", Index(field=("n",)))

Stored = tuple[dict[str, Any], float | None]  # value, expires_at


def index_values(name: str, value: dict[str, Any]) -> list[Any]:
    found = (INDEXES | dict([LATE]))[name].values_of(value)
    if found is None:
        return []
    return sorted(set(found), key=pack_element) if isinstance(found, list) else [found]


class IndexMachine(RuleBasedStateMachine):
    base: Path
    runs = itertools.count()

    def __init__(self) -> None:
        super().__init__()
        self.path = self.base / f"run{next(self.runs)}"
        self.clock = FakeClock()
        self.tracker = DurabilityTracker().install()
        self.model: dict[str, Stored] = {}
        self.late = False  # whether the extra index exists
        self.store, self.ks = self._open()

    def _open(self) -> tuple[Store, KeySpace]:
        # The first open declares every index; later ones only the key-function one (the
        # manifest brings back field indexes, the late one included, but not functions).
        first = not self.path.exists()
        store = Store.open(self.path, clock=self.clock, sweep_interval=3600)
        given = {name: index for name, index in INDEXES.items() if first or index.key is not None}
        return store, store.keyspace("ks", indexes=given)

    def teardown(self) -> None:
        try:
            self.store.close()
        finally:
            self.tracker.uninstall()

    # -- model ---------------------------------------------------------------------------------

    def _live(self) -> dict[str, dict[str, Any]]:
        now = self.clock.now
        return {
            key: value
            for key, (value, expires_at) in self.model.items()
            if expires_at is None or expires_at > now
        }

    def _unique_ok(self, final: dict[str, dict[str, Any] | None]) -> bool:
        """Whether the live keys after these writes hold distinct ``u`` values."""
        live: dict[str, dict[str, Any]] = {**self._live()}
        for key, value in final.items():
            if value is None:
                live.pop(key, None)
            else:
                live[key] = value
        held = [value["u"] for value in live.values() if "u" in value]
        return len(held) == len(set(held))

    def _expires(self, ttl: float | None) -> float | None:
        return None if ttl is None else self.clock.now + ttl

    # -- steps ---------------------------------------------------------------------------------

    @rule(key=keys, value=values, ttl=ttls)
    def put(self, key: str, value: dict[str, Any], ttl: float | None) -> None:
        if self._unique_ok({key: value}):
            self.ks.put(key, value, ttl=ttl)
            self.model[key] = (value, self._expires(ttl))
        else:
            with pytest.raises(UniqueViolation, match="unique index 'by_u'"):
                self.ks.put(key, value, ttl=ttl)

    @rule(key=keys)
    def delete(self, key: str) -> None:
        self.ks.delete(key)
        self.model.pop(key, None)

    @rule(
        writes=st.lists(st.tuples(keys, st.none() | values, ttls), min_size=1, max_size=4),
    )
    def batch(self, writes: list[tuple[str, dict[str, Any] | None, float | None]]) -> None:
        final: dict[str, dict[str, Any] | None] = {}
        stored: dict[str, Stored | None] = {}
        for key, value, ttl in writes:
            final[key] = value
            stored[key] = None if value is None else (value, self._expires(ttl))
        ok = self._unique_ok(final)
        try:
            with self.ks.batch() as batch:
                for key, value, ttl in writes:
                    if value is None:
                        batch.delete(key)
                    else:
                        batch.put(key, value, ttl=ttl)
        except UniqueViolation:
            assert not ok, f"batch {writes} was refused though it keeps u unique"
            return
        assert ok, f"batch {writes} broke the unique index"
        for key, entry in stored.items():
            if entry is None:
                self.model.pop(key, None)
            else:
                self.model[key] = entry

    @rule(
        key=keys,
        by=st.integers(-2, 2),
        tag=st.sampled_from(["x", "w"]),
        u=st.none() | st.integers(0, 3),
    )
    def operate(self, key: str, by: int, tag: str, u: int | None) -> None:
        live = self._live()
        value = dict(live.get(key, {}))
        expires_at = self.model[key][1] if key in live else None
        value["n"] = value.get("n", 0) + by
        value["tags"] = [*value.get("tags", []), tag]
        operations = [ops.add("n", by), ops.append("tags", tag), ops.read("n")]
        if u is not None:
            value["u"] = u
            operations.append(ops.set("u", u))
        if not self._unique_ok({key: value}):
            try:
                self.ks.operate(key, operations)
            except UniqueViolation:
                return
            raise AssertionError("operate broke the unique index")
        results = self.ks.operate(key, operations)
        assert results[:3] == [value["n"], len(value["tags"]), value["n"]]
        self.model[key] = (value, expires_at)

    @rule(seconds=st.sampled_from([0.5, 1.0]))
    def advance_clock(self, seconds: float) -> None:
        self.clock.advance(seconds)

    @rule()
    def sweep(self) -> None:
        self.ks.sweep()
        now = self.clock.now
        self.model = {
            key: stored
            for key, stored in self.model.items()
            if stored[1] is None or stored[1] > now
        }

    @rule()
    def toggle_late_index(self) -> None:
        if self.late:
            assert self.ks.drop_index(LATE[0])
        else:
            self.ks.create_index(*LATE)
        self.late = not self.late

    @rule()
    def snapshot(self) -> None:
        self.ks.snapshot()

    @rule()
    def reopen(self) -> None:
        self.store.close()
        self.store, self.ks = self._open()

    @rule()
    def crash(self) -> None:
        self.tracker.cut_power()  # right after the last acknowledgment
        self.store.close()
        self.tracker.crash()
        self.tracker.uninstall()
        self.tracker = DurabilityTracker().install()
        self.store, self.ks = self._open()

    # -- the invariant ---------------------------------------------------------------------------

    @invariant()
    def every_index_matches_the_model(self) -> None:
        live = self._live()
        names = [*INDEXES, *([LATE[0]] if self.late else [])]
        assert sorted(self.ks.indexes()) == sorted(names)
        for name in names:
            expected = sorted(
                (
                    (found, key, value)
                    for key, value in live.items()
                    for found in index_values(name, value)
                ),
                key=lambda item: (pack_element(item[0]), item[1]),
            )
            query = self.ks.index(name)
            assert list(query.range()) == expected, name
            assert list(query.range(reverse=True)) == expected[::-1], name
            assert query.count() == len(expected), name
            if expected:
                probe = expected[len(expected) // 2][0]
                assert list(query.get(probe)) == [item for item in expected if item[0] == probe]
                assert list(query.range(limit=2)) == expected[:2]


def test_indexes_match_a_model_that_recomputes_them(tmp_path: Path) -> None:
    IndexMachine.base = tmp_path
    run_state_machine_as_test(
        IndexMachine,
        settings=settings(max_examples=EXAMPLES, stateful_step_count=30, deadline=None),
    )
