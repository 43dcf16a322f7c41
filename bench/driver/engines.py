"""Engine adapters: actorkv and its peers behind one small interface.

Every adapter opens a fresh database in a directory and offers ``put(k, v)``, ``get(k)``,
``scan(start, n) -> count``, ``put_many(items)`` (one transaction) and ``close()``. Keys and
values are bytes. Each adapter carries a ``durability`` label saying when it fsyncs, and a
``durable`` flag (is a write acknowledged only once fsynced?) used to match durability when
the report computes ratios.

YCSB records (ten 100-byte fields) go through ``put_record``/``get_record``: actorkv stores
the record as a dict of ten fields (its values are MessagePack documents); the byte-value
peers store the same dict as one MessagePack blob, encoded on write and decoded on read.

Peers are optional: :func:`engine_specs` skips one whose module is not installed with a
one-line notice on the run context.

Threads: an adapter is used by one thread at a time unless :meth:`Engine.for_another_thread`
says otherwise. The key space benchmarks (``bench/test_bench_keyspace.py``) use the durable
``SQLite("FULL")`` and ``LMDB(sync=True)`` from here, from 16 writer threads.
"""

from __future__ import annotations

import importlib
import sqlite3
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec

from .core import RunContext

Record = dict[str, bytes]

_encode_record = msgspec.msgpack.Encoder().encode
_decode_record = msgspec.msgpack.Decoder(dict[str, bytes]).decode

LMDB_MAP_BYTES = 4 << 30  # address space only: the file is sparse on Linux
SQLITE_BUSY_TIMEOUT_S = 60  # a writer on another connection waits for the write lock, not fails


class Engine:
    """The interface every adapter implements (actorkv and peers).

    Attributes:
        name: Engine name in rows (``actorkv``, ``sqlite3``, ...).
        durability: What an acknowledged write survives, in words.
        durable: Whether every acknowledged write has been fsynced.
        native_records: Whether records are stored as documents rather than blobs.
    """

    name = "engine"
    durability = ""
    durable = False
    native_records = False
    supports_scan = True

    def open(self, directory: Path) -> None:
        raise NotImplementedError

    def put(self, key: bytes, value: bytes) -> None:
        raise NotImplementedError

    def get(self, key: bytes) -> bytes | None:
        raise NotImplementedError

    def scan(self, start: bytes, n: int) -> int:
        """Read up to ``n`` entries (key and value) from ``start`` in key order; the count."""
        raise NotImplementedError

    def put_many(self, items: Sequence[tuple[bytes, bytes]]) -> None:
        """Write ``items`` in one transaction (one commit, one fsync if durable)."""
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    def for_another_thread(self) -> Engine:
        """An adapter on the same open database for another thread to use concurrently.

        By default ``self``: the adapter is thread-safe, so threads share it and it is closed
        once. Adapters whose handle belongs to one thread override this.
        """
        return self

    # Records: an encoded blob by default; actorkv overrides with a native document.
    def put_record(self, key: bytes, record: Record) -> None:
        self.put(key, _encode_record(record))

    def get_record(self, key: bytes) -> Record | None:
        blob = self.get(key)
        return None if blob is None else _decode_record(blob)

    def put_records(self, items: Sequence[tuple[bytes, Record]]) -> None:
        self.put_many([(key, _encode_record(record)) for key, record in items])


class ActorKV(Engine):
    """actorkv: one key space (``key_type=bytes``); put/get/range straight through."""

    name = "actorkv"
    native_records = True

    def __init__(self, fsync: str) -> None:
        self.fsync = fsync
        self.durable = fsync == "always"
        self.durability = (
            "fsync per commit (group commit)" if self.durable else "no fsync (OS decides)"
        )

    def open(self, directory: Path) -> None:
        from actors import Store

        self.store = Store.open(directory, fsync=self.fsync)  # type: ignore[arg-type]
        self.ks = self.store.keyspace("bench", key_type=bytes)

    def put(self, key: bytes, value: Any) -> None:
        self.ks.put(key, value)

    def get(self, key: bytes) -> Any:
        return self.ks.get(key)

    def scan(self, start: bytes, n: int) -> int:
        return sum(1 for _ in self.ks.range(start or None, None, limit=n))

    def put_many(self, items: Sequence[tuple[bytes, Any]]) -> None:
        with self.ks.batch() as batch:
            for key, value in items:
                batch.put(key, value)

    def close(self) -> None:
        self.store.close()

    def put_record(self, key: bytes, record: Record) -> None:
        self.ks.put(key, record)  # natively: a MessagePack map of ten fields

    def get_record(self, key: bytes) -> Record | None:
        record: Record | None = self.ks.get(key)
        return record

    def put_records(self, items: Sequence[tuple[bytes, Record]]) -> None:
        self.put_many(items)


class SQLite(Engine):
    """sqlite3 in WAL mode: a ``WITHOUT ROWID`` table, one autocommit transaction per put.

    A connection serves one thread at a time; :meth:`for_another_thread` opens another
    connection on the same file (sqlite3 serializes writers on its write lock, and a busy
    writer waits up to ``SQLITE_BUSY_TIMEOUT_S``). ``close`` closes those connections too.
    """

    name = "sqlite3"

    def __init__(self, synchronous: str) -> None:
        self.synchronous = synchronous
        self.durable = synchronous == "FULL"
        self.durability = (
            "fsync per commit (WAL, synchronous=FULL)"
            if self.durable
            else "no fsync per commit (WAL, synchronous=NORMAL)"
        )

    def open(self, directory: Path) -> None:
        self._connect(directory / "bench.sqlite")
        self.db.execute("CREATE TABLE kv (k BLOB PRIMARY KEY, v BLOB) WITHOUT ROWID")

    def _connect(self, path: Path) -> None:
        # check_same_thread=False: a connection may be opened in one thread and used in
        # another (never by two at once); synchronous is per connection, so set on each.
        self.path = path
        self.db = sqlite3.connect(
            path, isolation_level=None, timeout=SQLITE_BUSY_TIMEOUT_S, check_same_thread=False
        )
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute(f"PRAGMA synchronous={self.synchronous}")
        self._put = "INSERT OR REPLACE INTO kv (k, v) VALUES (?, ?)"
        self._execute = self.db.execute
        self._others: list[SQLite] = []

    def for_another_thread(self) -> SQLite:
        """A new connection on the same file, at the same ``synchronous``; closed by ``close``."""
        other = SQLite(self.synchronous)
        other._connect(self.path)
        self._others.append(other)
        return other

    def put(self, key: bytes, value: bytes) -> None:
        self._execute(self._put, (key, value))

    def get(self, key: bytes) -> bytes | None:
        row = self._execute("SELECT v FROM kv WHERE k = ?", (key,)).fetchone()
        value: bytes | None = None if row is None else row[0]
        return value

    def scan(self, start: bytes, n: int) -> int:
        rows = self._execute("SELECT k, v FROM kv WHERE k >= ? ORDER BY k LIMIT ?", (start, n))
        return sum(1 for _ in rows)

    def put_many(self, items: Sequence[tuple[bytes, bytes]]) -> None:
        self.db.execute("BEGIN")
        self.db.executemany(self._put, items)
        self.db.execute("COMMIT")

    def close(self) -> None:
        for other in self._others:
            other.close()
        self.db.close()


class LMDB(Engine):
    """lmdb: one write transaction per put, one read transaction per get or scan.

    Thread-safe: LMDB forbids opening an environment twice in one process, so threads share
    this adapter (:meth:`Engine.for_another_thread` returns it). Each call opens and ends its
    own transaction in the calling thread; LMDB serializes write transactions on its writer
    lock, and a get sees the newest committed write.
    """

    name = "lmdb"

    def __init__(self, sync: bool) -> None:
        self.sync = sync
        self.durable = sync
        self.durability = "fsync per commit (sync=True)" if sync else "no fsync (OS decides)"

    def open(self, directory: Path) -> None:
        import lmdb

        self.env = lmdb.open(str(directory), map_size=LMDB_MAP_BYTES, sync=self.sync, metasync=True)
        self._begin = self.env.begin

    def put(self, key: bytes, value: bytes) -> None:
        with self._begin(write=True) as txn:
            txn.put(key, value)

    def get(self, key: bytes) -> bytes | None:
        with self._begin() as txn:
            value: bytes | None = txn.get(key)
            return value

    def scan(self, start: bytes, n: int) -> int:
        count = 0
        with self._begin() as txn, txn.cursor() as cursor:
            if not cursor.set_range(start):
                return 0
            for _key, _value in cursor:
                count += 1
                if count >= n:
                    break
        return count

    def put_many(self, items: Sequence[tuple[bytes, bytes]]) -> None:
        with self._begin(write=True) as txn, txn.cursor() as cursor:
            cursor.putmulti(items)

    def close(self) -> None:
        self.env.close()


class DiskCache(Engine):
    """diskcache ``Cache`` at its defaults (SQLite WAL, synchronous=NORMAL: not durable).

    It has no ordered range read, so it sits out the scan workloads.
    """

    name = "diskcache"
    supports_scan = False
    durability = "not fsync-durable (default: WAL, synchronous=NORMAL)"

    def open(self, directory: Path) -> None:
        import diskcache  # type: ignore[import-untyped]

        self.cache = diskcache.Cache(str(directory))

    def put(self, key: bytes, value: bytes) -> None:
        self.cache.set(key, value)

    def get(self, key: bytes) -> bytes | None:
        return self.cache.get(key)  # type: ignore[no-any-return]

    def scan(self, start: bytes, n: int) -> int:
        raise NotImplementedError("diskcache has no ordered range read")

    def put_many(self, items: Sequence[tuple[bytes, bytes]]) -> None:
        with self.cache.transact():
            for key, value in items:
                self.cache.set(key, value)

    def close(self) -> None:
        self.cache.close()


class RocksDict(Engine):
    """RocksDB through rocksdict in raw (bytes) mode; ``sync`` is the write option."""

    name = "rocksdict"

    def __init__(self, sync: bool) -> None:
        self.sync = sync
        self.durable = sync
        self.durability = (
            "fsync per commit (WAL, sync=True)" if sync else "no fsync (WAL, sync=False)"
        )

    def open(self, directory: Path) -> None:
        from rocksdict import Options, Rdict, WriteOptions

        self.db = Rdict(str(directory), Options(raw_mode=True))
        options = WriteOptions()
        options.sync = self.sync
        self.db.set_write_options(options)

    def put(self, key: bytes, value: bytes) -> None:
        self.db.put(key, value)

    def get(self, key: bytes) -> bytes | None:
        value: bytes | None = self.db.get(key)
        return value

    def scan(self, start: bytes, n: int) -> int:
        it = self.db.iter()
        it.seek(start)
        count = 0
        while count < n and it.valid():
            it.key()
            it.value()
            count += 1
            it.next()
        return count

    def put_many(self, items: Sequence[tuple[bytes, bytes]]) -> None:
        from rocksdict import WriteBatch

        batch = WriteBatch(raw_mode=True)
        for key, value in items:
            batch.put(key, value)
        self.db.write(batch)

    def close(self) -> None:
        self.db.close()


@dataclass(frozen=True)
class EngineSpec:
    """How to build one engine at one durability setting.

    Attributes:
        name: Engine name (what ``--engines`` selects).
        durable: Whether this setting fsyncs every acknowledged write.
        make: Builds an unopened adapter.
        module: The import the engine needs (None: always available).
    """

    name: str
    durable: bool
    make: Callable[[], Engine]
    module: str | None = None

    @property
    def durability(self) -> str:
        """The adapter's durability label."""
        return self.make().durability


SPECS: tuple[EngineSpec, ...] = (
    EngineSpec("actorkv", durable=True, make=lambda: ActorKV("always")),
    EngineSpec("actorkv", durable=False, make=lambda: ActorKV("never")),
    EngineSpec("sqlite3", durable=True, make=lambda: SQLite("FULL")),
    EngineSpec("sqlite3", durable=False, make=lambda: SQLite("NORMAL")),
    EngineSpec("lmdb", durable=True, make=lambda: LMDB(sync=True), module="lmdb"),
    EngineSpec("lmdb", durable=False, make=lambda: LMDB(sync=False), module="lmdb"),
    EngineSpec("diskcache", durable=False, make=DiskCache, module="diskcache"),
    EngineSpec("rocksdict", durable=True, make=lambda: RocksDict(sync=True), module="rocksdict"),
    EngineSpec("rocksdict", durable=False, make=lambda: RocksDict(sync=False), module="rocksdict"),
)
ENGINE_NAMES = tuple(dict.fromkeys(spec.name for spec in SPECS))


def _importable(module: str) -> bool:
    try:
        importlib.import_module(module)
    except ImportError:
        return False
    return True


def engine_specs(ctx: RunContext, *, durable: bool | None = None) -> list[EngineSpec]:
    """The engines to run: installed, selected by ``--engines``, at the asked durability.

    Args:
        ctx: The run; ``ctx.engines`` (if set) names the selected engines.
        durable: Only durable (True) or only non-durable (False) settings; None: both.
    """
    selected = ctx.engines
    specs = []
    for spec in SPECS:
        if selected and spec.name not in selected:
            continue
        if spec.module is not None and not _importable(spec.module):
            ctx.notice(f"{spec.name}: cannot import {spec.module!r} (pip install it); skipped")
            continue
        if durable is None or spec.durable == durable:
            specs.append(spec)
    return specs


LOAD_CHUNK = 1000
"""Entries per transaction when loading a database before a timed phase."""


@contextmanager
def fresh_engine(
    ctx: RunContext,
    spec: EngineSpec,
    load: Sequence[tuple[bytes, Any]] = (),
    *,
    records: bool = False,
) -> Iterator[Engine]:
    """Open ``spec`` on a new empty directory, load ``load`` untimed, close it afterwards.

    Args:
        ctx: The run (owner of the scratch space).
        spec: The engine and setting.
        load: Entries written first, ``LOAD_CHUNK`` per transaction.
        records: Whether ``load`` holds YCSB records (dicts) rather than byte values.
    """
    with ctx.fresh_dir(spec.name) as directory:
        engine = spec.make()
        engine.open(directory)
        try:
            write = engine.put_records if records else engine.put_many
            for start in range(0, len(load), LOAD_CHUNK):
                write(load[start : start + LOAD_CHUNK])
            yield engine
        finally:
            engine.close()
