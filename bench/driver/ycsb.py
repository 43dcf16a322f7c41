"""YCSB core workloads A-F, one client thread, on every selected engine.

==  =======================================================  ======================
A   50% read, 50% update                                     scrambled zipfian keys
B   95% read, 5% update                                      scrambled zipfian keys
C   100% read                                                scrambled zipfian keys
D   95% read, 5% insert                                      "latest" keys
E   95% scan (length uniform in 1..100), 5% insert           scrambled zipfian keys
F   50% read, 50% read-modify-write                          scrambled zipfian keys
==  =======================================================  ======================

As in YCSB's CoreWorkload: :func:`record_count` records are loaded first (untimed, a
fresh database per run; a fifth of ``ctx.records``, as a YCSB record is ~9x the size of a
db_bench entry and loading dominates the run time otherwise), keys are
``"user" + fnvhash64(n)`` (``insertorder=hashed``), a record is ten fields of 100 bytes,
reads read every field, and the request distribution is the
scrambled zipfian with constant 0.99 over ``records + 2 * expected inserts`` items
(values past the last inserted key are redrawn). Unlike YCSB's default (one field),
updates write all ten fields (``writeallfields=true``), so an update is one put.

actorkv stores each record as a dict of ten fields; byte-value peers store the same dict
as one MessagePack blob (encoded on write, decoded on read; see ``engines.py``).

Every engine runs at both settings: its durable one (updates and inserts fsynced) and its
non-durable one. The operation sequence is generated before timing from the run seed, so
every engine and repeat sees the same requests.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from random import Random

from .core import Latencies, Row, RunContext, measure
from .engines import Engine, EngineSpec, Record, engine_specs, fresh_engine

FIELDS = 10
FIELD_BYTES = 100
MAX_SCAN = 100
RECORD_POOL = 256
"""Distinct records cycled through for loads, updates and inserts."""

# -- key choosers (YCSB's generators, site.ycsb.generator) -----------------------------------

ZIPFIAN_CONSTANT = 0.99
# ScrambledZipfianGenerator draws from a zipfian over ITEM_COUNT = 10**10 items whose zeta it
# does not compute (that would take 10**10 terms) but hard-codes: ZETAN below is YCSB's
# precomputed zeta(10**10, 0.99). The draw is then FNV-hashed and taken modulo the real
# item count, which spreads the hot keys over the key space.
SCRAMBLED_ITEM_COUNT = 10_000_000_000
SCRAMBLED_ZETAN = 26.46902820178302

# FNV-1a 64-bit constants (Fowler-Noll-Vo), as in YCSB's Utils.fnvhash64.
FNV_OFFSET_BASIS_64 = 0xCBF29CE484222325
FNV_PRIME_64 = 1099511628211
MASK_64 = (1 << 64) - 1


def fnvhash64(value: int) -> int:
    """YCSB's ``Utils.fnvhash64``: FNV over the 8 little-endian bytes, then Java's abs()."""
    hashed = FNV_OFFSET_BASIS_64
    for _ in range(8):
        hashed = ((hashed ^ (value & 0xFF)) * FNV_PRIME_64) & MASK_64
        value >>= 8
    signed = hashed - (1 << 64) if hashed >= 1 << 63 else hashed
    return abs(signed)


def zeta(start: int, stop: int, theta: float, initial: float = 0.0) -> float:
    """``initial + sum(1 / i**theta for i in start+1 .. stop)``: zeta grown incrementally."""
    return initial + sum(1.0 / math.pow(i + 1, theta) for i in range(start, stop))


class Zipfian:
    """YCSB's ZipfianGenerator over ``[0, items)``: item 0 most popular (Gray et al. 1994).

    ``next(items)`` may be called with a growing count (the "latest" chooser); zeta is then
    extended incrementally, as YCSB does.
    """

    def __init__(self, rng: Random, items: int, zetan: float | None = None) -> None:
        self.rng = rng
        self.theta = ZIPFIAN_CONSTANT
        self.alpha = 1.0 / (1.0 - self.theta)
        self.zeta2 = zeta(0, 2, self.theta)
        self.items = items
        self.zetan = zeta(0, items, self.theta) if zetan is None else zetan
        self._set_eta()

    def _set_eta(self) -> None:
        self.eta = (1 - (2.0 / self.items) ** (1 - self.theta)) / (1 - self.zeta2 / self.zetan)

    def next(self, items: int | None = None) -> int:
        """A draw in ``[0, items)``; item ``i`` has weight ``1 / (i + 1) ** 0.99``."""
        if items is not None and items > self.items:
            self.zetan = zeta(self.items, items, self.theta, self.zetan)
            self.items = items
            self._set_eta()
        u = self.rng.random()
        uz = u * self.zetan
        if uz < 1.0:
            return 0
        if uz < 1.0 + 0.5**self.theta:
            return 1
        return int(self.items * (self.eta * u - self.eta + 1) ** self.alpha)


class ScrambledZipfian:
    """YCSB's ScrambledZipfianGenerator: zipfian popularity, hot items scattered by FNV."""

    def __init__(self, rng: Random, items: int) -> None:
        self.items = items
        self.zipfian = Zipfian(rng, SCRAMBLED_ITEM_COUNT, SCRAMBLED_ZETAN)

    def next(self) -> int:
        return fnvhash64(self.zipfian.next()) % self.items


class Latest:
    """YCSB's SkewedLatestGenerator: the newest inserted items are the most popular."""

    def __init__(self, rng: Random, items: int) -> None:
        self.zipfian = Zipfian(rng, items)

    def next(self, inserted: int) -> int:
        return inserted - 1 - self.zipfian.next(inserted)


# -- workloads -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Mix:
    """One YCSB core workload: operation proportions and request distribution."""

    name: str
    read: float = 0.0
    update: float = 0.0
    insert: float = 0.0
    scan: float = 0.0
    rmw: float = 0.0
    latest: bool = False


MIXES = (
    Mix("ycsb-A", read=0.5, update=0.5),
    Mix("ycsb-B", read=0.95, update=0.05),
    Mix("ycsb-C", read=1.0),
    Mix("ycsb-D", read=0.95, insert=0.05, latest=True),
    Mix("ycsb-E", scan=0.95, insert=0.05),
    Mix("ycsb-F", read=0.5, rmw=0.5),
)

READ, UPDATE, INSERT, SCAN, RMW = range(5)

Op = tuple[int, bytes, int]
"""(operation, key, scan length or record index)."""


def record_count(ctx: RunContext) -> int:
    """Records loaded before each workload: ``ctx.records // 5``, at least 1,000."""
    return min(ctx.records, max(ctx.records // 5, 1_000))


def user_key(number: int) -> bytes:
    """YCSB's key for record ``number`` (hashed insert order)."""
    return b"user%d" % fnvhash64(number)


def make_records(ctx: RunContext) -> list[Record]:
    """``RECORD_POOL`` random records of ten 100-byte fields (seeded)."""
    rng = ctx.rng("ycsb:records")
    return [
        {f"field{i}": rng.randbytes(FIELD_BYTES) for i in range(FIELDS)} for _ in range(RECORD_POOL)
    ]


def plan(ctx: RunContext, mix: Mix) -> list[Op]:
    """The ``ctx.ops`` requests of ``mix``, drawn from the run seed."""
    rng = ctx.rng(f"ycsb:{mix.name}")
    inserted = loaded = record_count(ctx)
    expected_inserts = int(ctx.ops * mix.insert * 2.0)
    scrambled = ScrambledZipfian(rng, loaded + expected_inserts)
    latest = Latest(rng, loaded) if mix.latest else None
    cumulative = []
    total = 0.0
    for op, share in ((READ, mix.read), (UPDATE, mix.update), (INSERT, mix.insert)):
        total += share
        cumulative.append((total, op))
    cumulative += [(total + mix.scan, SCAN), (total + mix.scan + mix.rmw, RMW)]

    def choose() -> int:
        if latest is not None:
            return latest.next(inserted)
        number = scrambled.next()
        while number >= inserted:  # not inserted yet: redraw, as CoreWorkload.nextKeynum
            number = scrambled.next()
        return number

    ops: list[Op] = []
    for index in range(ctx.ops):
        draw = rng.random() * cumulative[-1][0]
        op = next(op for bound, op in cumulative if draw < bound)
        if op == INSERT:
            ops.append((INSERT, user_key(inserted), index % RECORD_POOL))
            inserted += 1
        elif op == SCAN:
            ops.append((SCAN, user_key(choose()), rng.randint(1, MAX_SCAN)))
        else:
            ops.append((op, user_key(choose()), index % RECORD_POOL))
    return ops


def _execute(engine: Engine, ops: list[Op], records: list[Record], latencies: Latencies) -> None:
    """Run ``ops`` on ``engine``, timing each one."""
    get, put, scan = engine.get_record, engine.put_record, engine.scan
    clock, record = time.perf_counter_ns, latencies.samples.append
    for op, key, arg in ops:
        began = clock()
        if op == READ:
            if get(key) is None:
                raise AssertionError(f"{engine.name}: record {key!r} missing")
        elif op == SCAN:
            scan(key, arg)
        elif op == RMW:
            current = get(key)
            if current is None:
                raise AssertionError(f"{engine.name}: record {key!r} missing")
            put(key, {**current, "field0": records[arg]["field0"]})
        else:  # UPDATE (all fields) or INSERT
            put(key, records[arg])
        record(clock() - began)


def run_mix(ctx: RunContext, spec: EngineSpec, mix: Mix, ops: list[Op]) -> Row | None:
    """Measure one workload on one engine setting: load untimed, then run ``ops``."""
    engine_doc = spec.make()
    if mix.scan and not engine_doc.supports_scan:
        ctx.notice(f"{spec.name}: no ordered range read; skipped in readseq and YCSB E")
        return None
    records = make_records(ctx)
    loaded = record_count(ctx)
    load = [(user_key(n), records[n % RECORD_POOL]) for n in range(loaded)]

    @contextmanager
    def trial() -> Iterator[Callable[[Latencies], None]]:
        with fresh_engine(ctx, spec, load, records=True) as engine:
            yield lambda latencies: _execute(engine, ops, records, latencies)

    storage = "dict of 10 fields" if engine_doc.native_records else "MessagePack blob"
    row = measure(
        ctx,
        engine=spec.name,
        workload=mix.name,
        durability=spec.durability,
        ops=len(ops),
        trial=trial,
        notes=f"record stored as {storage}",
    )
    row.extra.update(durable=spec.durable, records=loaded)
    return row


def run_ycsb(ctx: RunContext) -> list[Row]:
    """YCSB A-F on every selected engine at its durable and non-durable settings."""
    rows = []
    for mix in MIXES:
        ops = plan(ctx, mix)
        for spec in engine_specs(ctx):
            row = run_mix(ctx, spec, mix, ops)
            if row is not None:
                rows.append(row)
    return rows
