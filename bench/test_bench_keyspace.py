"""Benchmarks of the key space against sqlite3 and LMDB at matched durability.

Keys are 16-character ``str`` (``key0000000000042``), values 100 random bytes. Peers run in
the same session through the workload driver's adapters (``bench/driver/engines.py``), set
as durable as ``fsync="always"``: ``SQLite("FULL")`` (WAL, synchronous=FULL, a commit per
put) and ``LMDB(sync=True)`` (sync and metasync, a write transaction per put). They take the
same keys as ASCII ``bytes``, encoded before the clock starts.

Goals (reported in ``extra_info``, never asserted):

1. 16 threads of durable puts, each on its own keys: >= 5x sqlite3 and >= 5x LMDB;
2. one thread pipelining 10,000 ``put_async``, durable: >= 40,000 puts/s;
3. a batch of 1,000 puts, durable: >= 1.0x sqlite3's ``executemany`` in one transaction;
4. ``get`` of 100,000 keys in random order: >= 2,000,000/s, >= 1.0x LMDB, >= 5x sqlite3;
5. ``range`` over 100,000 items: >= 2,000,000 items/s;
6. reopening a key space of 1,000,000 keys: >= 300,000 events/s;
7. memory of 1,000,000 keys: <= 1.6x a plain ``dict`` of the same items.
"""

from __future__ import annotations

import gc
import os
import random
import threading
import tracemalloc
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, Protocol

import pytest

from actors import Store
from bench.conftest import bench_size
from bench.driver import engines
from storage.log import FsyncPolicy

ACTORKV = "actorkv"
SQLITE = "sqlite3-wal-full"
LMDB = "lmdb-sync"
DATABASES = (ACTORKV, SQLITE, LMDB)
THREADS = 16
CHUNK = 10_000  # futures in flight while filling a large key space


def key_of(i: int) -> str:
    return f"key{i:013d}"


def stored_key(name: str, key: str) -> Any:
    """The key as ``name`` takes it: ``str`` for the key space, ASCII ``bytes`` for peers."""
    return key if name == ACTORKV else key.encode()


def values_of(count: int) -> list[bytes]:
    return [os.urandom(100) for _ in range(count)]


class Database(Protocol):
    """The calls of :class:`bench.driver.engines.Engine` the benchmarks use."""

    durability: str

    def put(self, key: Any, value: bytes) -> object: ...
    def get(self, key: Any) -> bytes | None: ...
    def scan(self, start: Any, n: int) -> int: ...
    def put_many(self, items: Sequence[tuple[Any, bytes]]) -> None: ...
    def close(self) -> None: ...
    def for_another_thread(self) -> Database: ...


class ActorKV:
    """A ``str`` key space behind the peers' calls (``put``/``get`` are the key space's own)."""

    durability = 'actorkv fsync="always": every group of writes is fsynced before replying'

    def __init__(self, directory: Path, fsync: FsyncPolicy = "always") -> None:
        self.store = Store.open(directory, fsync=fsync)
        self.keyspace = self.store.keyspace("bench")
        self.put = self.keyspace.put
        self.get = self.keyspace.get

    def scan(self, start: str, n: int) -> int:
        return sum(1 for _ in self.keyspace.range(start, limit=n))

    def put_many(self, items: Sequence[tuple[str, bytes]]) -> None:
        with self.keyspace.batch() as batch:
            for key, value in items:
                batch.put(key, value)

    def close(self) -> None:
        self.store.close()

    def for_another_thread(self) -> ActorKV:
        return self  # a key space is shared by every thread; its actor is the one writer


PEERS: dict[str, Callable[[], engines.Engine]] = {
    SQLITE: lambda: engines.SQLite("FULL"),
    LMDB: lambda: engines.LMDB(sync=True),
}


def open_database(name: str, directory: Path, fsync: FsyncPolicy = "always") -> Database:
    """``name`` on ``directory``; ``fsync`` applies to actorkv (the peers are always durable)."""
    if name == ACTORKV:
        return ActorKV(directory, fsync)
    peer = PEERS[name]()
    peer.open(directory)
    return peer


def stored_keys(name: str, db: Any) -> int:
    if name == ACTORKV:
        return len(db.keyspace)
    if name == SQLITE:
        return int(db.db.execute("SELECT count(*) FROM kv").fetchone()[0])
    return int(db.env.stat()["entries"])


class Opened:
    """Every database a benchmark opened, closed at the end (teardown is skipped when
    timing is disabled, so closing cannot be left to it)."""

    def __init__(self) -> None:
        self.handles: list[Database] = []

    def add(self, db: Database) -> Database:
        self.handles.append(db)
        return db

    def close_all(self) -> None:
        for db in self.handles:
            db.close()
        self.handles.clear()


@pytest.fixture
def opened() -> Iterator[Opened]:
    handles = Opened()
    yield handles
    handles.close_all()


# -- 1. durable puts from 16 threads ------------------------------------------------------------


def put_from_threads(writers: list[Database], keys: list[list[Any]], values: list[bytes]) -> None:
    """Thread ``t`` puts ``keys[t]`` one by one through ``writers[t]``; wait for all."""
    start = threading.Barrier(len(writers))

    def work(db: Database, own: list[Any]) -> None:
        put = db.put
        start.wait()
        for key, value in zip(own, values, strict=False):
            put(key, value)

    threads = [
        threading.Thread(target=work, args=(db, own)) for db, own in zip(writers, keys, strict=True)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


@pytest.mark.parametrize("name", DATABASES)
def test_durable_puts_from_16_threads(
    benchmark, tmp_path_factory, record_rate, opened: Opened, name: str
) -> None:
    per_thread = bench_size(250, 3)
    keys = [
        [stored_key(name, key_of(t * per_thread + i)) for i in range(per_thread)]
        for t in range(THREADS)
    ]
    values = values_of(per_thread)
    fresh: list[Database] = []

    def setup() -> tuple[tuple[Any, ...], dict[str, Any]]:
        first = opened.add(open_database(name, tmp_path_factory.mktemp(f"threads-{name}")))
        # sqlite3: a connection per thread on one file (closed with the first); actorkv and
        # LMDB: one handle shared by every thread.
        writers = [first] + [first.for_another_thread() for _ in range(THREADS - 1)]
        fresh[:] = [first]
        return (writers, keys, values), {}

    benchmark.pedantic(
        put_from_threads, setup=setup, rounds=bench_size(3, 1), warmup_rounds=bench_size(1, 0)
    )
    assert stored_keys(name, fresh[0]) == THREADS * per_thread
    benchmark.extra_info["durability"] = fresh[0].durability
    benchmark.extra_info["threads"] = THREADS
    record_rate(THREADS * per_thread)


# -- 2. pipelined put_async ---------------------------------------------------------------------


def test_durable_put_async_pipelined(benchmark, tmp_path_factory, record_rate, opened) -> None:
    count = bench_size(10_000, 50)
    keys = [key_of(i) for i in range(count)]
    values = values_of(count)

    def setup() -> tuple[tuple[Any, ...], dict[str, Any]]:
        db = opened.add(ActorKV(tmp_path_factory.mktemp("pipelined")))
        return (db,), {}

    def pipeline(db: ActorKV) -> int:
        put_async = db.keyspace.put_async
        futures = [put_async(key, value) for key, value in zip(keys, values, strict=True)]
        return max(future.get(timeout=60).seq for future in futures)

    last_seq = benchmark.pedantic(
        pipeline, setup=setup, rounds=bench_size(5, 1), warmup_rounds=bench_size(1, 0)
    )
    assert last_seq == count
    record_rate(count)


# -- 3. one batch of 1,000 puts -----------------------------------------------------------------


@pytest.mark.parametrize("name", DATABASES)
def test_durable_batch_of_1000(
    benchmark, tmp_path_factory, record_rate, opened: Opened, name: str
) -> None:
    count = bench_size(1_000, 10)
    keys = [stored_key(name, key_of(i)) for i in range(count)]
    items = list(zip(keys, values_of(count), strict=True))
    fresh: list[Database] = []

    def setup() -> tuple[tuple[Any, ...], dict[str, Any]]:
        db = opened.add(open_database(name, tmp_path_factory.mktemp(f"batch-{name}")))
        fresh[:] = [db]
        return (db,), {}

    def write_batch(db: Database) -> None:
        db.put_many(items)

    benchmark.pedantic(
        write_batch, setup=setup, rounds=bench_size(20, 1), warmup_rounds=bench_size(2, 0)
    )
    assert stored_keys(name, fresh[0]) == count
    benchmark.extra_info["durability"] = fresh[0].durability
    record_rate(count)


# -- 4 and 5. reads of 100,000 keys -------------------------------------------------------------


@pytest.fixture(scope="module")
def filled(tmp_path_factory) -> Iterator[tuple[dict[str, Database], dict[str, bytes]]]:
    """The same 100,000 items in each database (written in large transactions)."""
    count = bench_size(100_000, 1_000)
    items = dict(zip([key_of(i) for i in range(count)], values_of(count), strict=True))
    databases = {
        name: open_database(name, tmp_path_factory.mktemp(f"reads-{name}"), fsync="never")
        for name in DATABASES
    }
    for name, db in databases.items():
        pairs = [(stored_key(name, key), value) for key, value in items.items()]
        for start in range(0, count, CHUNK):
            db.put_many(pairs[start : start + CHUNK])
    yield databases, items
    for db in databases.values():
        db.close()


GET_CASES = [*DATABASES, "lmdb-sync-one-read-txn"]


@pytest.mark.parametrize("name", GET_CASES)
def test_get_in_random_order(benchmark, record_rate, filled, name: str) -> None:
    """From the caller's thread; ``lmdb-sync-one-read-txn`` reads every key in one snapshot."""
    databases, items = filled
    db_name = LMDB if name.startswith(LMDB) else name
    shuffled = list(items)
    random.Random(7).shuffle(shuffled)
    keys = [stored_key(db_name, key) for key in shuffled]

    def get_each(get: Callable[[Any], bytes | None]) -> int:
        found = 0
        for key in keys:
            if get(key) is not None:
                found += 1
        return found

    def get_all() -> int:
        if name != "lmdb-sync-one-read-txn":
            return get_each(databases[name].get)
        lmdb_peer: Any = databases[LMDB]
        with lmdb_peer.env.begin() as txn:
            return get_each(txn.get)

    found = benchmark.pedantic(get_all, rounds=bench_size(5, 1), warmup_rounds=bench_size(1, 0))
    assert found == len(keys)
    probe = shuffled[len(shuffled) // 2]
    assert databases[db_name].get(stored_key(db_name, probe)) == items[probe]
    record_rate(len(keys))


@pytest.mark.parametrize("name", DATABASES)
def test_range_scan(benchmark, record_rate, filled, name: str) -> None:
    """Every key and value from the first key on, counted (``Engine.scan``)."""
    databases, items = filled
    db = databases[name]
    first = stored_key(name, min(items))

    def scan_all() -> int:
        return db.scan(first, len(items))

    count = benchmark.pedantic(scan_all, rounds=bench_size(5, 1), warmup_rounds=bench_size(1, 0))
    assert count == len(items)
    record_rate(count)


# -- 6 and 7. a key space of 1,000,000 keys -----------------------------------------------------


@pytest.fixture(scope="module")
def million(tmp_path_factory) -> tuple[Path, int, int]:
    """A store whose key space ``bench`` holds 1,000,000 keys, one put per log record.

    Filled with ``put_async`` (``fsync="never"``) while tracemalloc counts what the fill
    leaves allocated: the committed state (SortedDict, entries, values) and anything else
    the key space keeps. Returns the directory, the key count and those bytes.
    """
    count = bench_size(1_000_000, 2_000)
    directory = tmp_path_factory.mktemp("million")
    with Store.open(directory, fsync="never") as store:
        keyspace = store.keyspace("bench")
        put_async = keyspace.put_async
        tracemalloc.start()
        try:
            before = traced_bytes()
            for start in range(0, count, CHUNK):
                futures = [
                    put_async(key_of(i), os.urandom(100))
                    for i in range(start, min(start + CHUNK, count))
                ]
                for future in futures:
                    future.get(timeout=60)
                del futures
            filled = traced_bytes() - before
        finally:
            tracemalloc.stop()
        assert len(keyspace) == count
    return directory, count, filled


def traced_bytes() -> int:
    gc.collect()
    return tracemalloc.get_traced_memory()[0]


def test_reopen_a_million_keys(benchmark, record_rate, million) -> None:
    """``Store.open`` + ``store.keyspace`` (replaying the whole log) + ``close``."""
    directory, count, _ = million

    def reopen() -> int:
        with Store.open(directory) as store:
            keyspace = store.keyspace("bench")
            return len(keyspace)

    keys = benchmark.pedantic(reopen, rounds=bench_size(3, 1))
    assert keys == count
    record_rate(count)


def test_memory_of_a_million_keys_against_a_dict(benchmark, million) -> None:
    """tracemalloc: what filling the key space kept vs a plain ``{key: value}`` dict."""
    _, count, keyspace_bytes = million
    tracemalloc.start()
    try:
        before = traced_bytes()
        plain = {key_of(i): os.urandom(100) for i in range(count)}
        dict_bytes = traced_bytes() - before
    finally:
        tracemalloc.stop()
    assert len(plain) == count
    del plain
    ratio = keyspace_bytes / dict_bytes
    benchmark.pedantic(lambda: None, rounds=1)  # only to carry the figures into the JSON
    benchmark.extra_info["keyspace_bytes_per_key"] = round(keyspace_bytes / count, 1)
    benchmark.extra_info["dict_bytes_per_key"] = round(dict_bytes / count, 1)
    benchmark.extra_info["ratio_to_dict"] = round(ratio, 3)
    print(
        f"\n{count:,} keys: key space {keyspace_bytes / count:.0f} B/key, "
        f"dict {dict_bytes / count:.0f} B/key, ratio {ratio:.2f}x (goal <= 1.6x)"
    )
